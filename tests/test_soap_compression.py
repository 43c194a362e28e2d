"""QUIP's compressed soap (``nu_R``, ``nu_S``, ``R_mix``, ``Z_mix``, ``sym_mix``, ``K``, ``mix_shift``,
``coupling``, ``Z_map``) against QUIP: docs/dev/soap_compression.md.

* QUIP's random stream bit for bit: the reference draws of spec §2.3, quippy's ``ran_normal`` after
  ``system_reseed_rng``, and the 100 draws every mixing ``form_W`` call takes from the global stream
  (spec §2.4);
* values and gradients against quippy's ``Descriptor`` to 1e-10 over the mixing, ``nu`` and ``Z_map``
  settings, one, two and three species, local and ``average=T``; the stored numbers of spec §5.2
  (no quippy needed); the dimensions of spec §5.1;
* finite differences of the gradients;
* the refusals of spec §1.2: one line, naming the key;
* a fit with a compressed soap against gap_fit: the same cur_points sparse points (gapfit skips the
  draws of QUIP's form_W calls), the same predictions, and quippy's ``Potential`` loading gapfit's XML.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ase_io = pytest.importorskip("ase.io")
import ase  # noqa: E402

from gapfit.descriptors.soap_mixing import SQRT2_SINGLE  # noqa: E402
from gapfit.errors import ConfigError  # noqa: E402
from gapfit.fit.sparse_phase import gap_fit_stream_skip  # noqa: E402
from gapfit.model.gap_xml import read_model  # noqa: E402
from gapfit.runtime.quip_random import ParkMiller  # noqa: E402

from conftest import (QUIP_TESTS, calculator_differences, clear_of_kinks, evaluation_rounding_floor,  # noqa: E402
                      every_nth_frame, prediction_differences, run_gapfit)
from test_soap import (calc, compare_with_quippy, dense_gradient, finite_difference_gradient, make,  # noqa: E402
                       run_seed)

SOAP_DATA = Path(__file__).resolve().parent / "data" / "soap"
# spec §5: sic7_cluster (Si4C3, open), base string of §5.1/§5.2
BASE = "soap cutoff=3.0 n_max=4 l_max=3 atom_sigma=0.5 n_species=2 species_Z={6 14} n_Z=2 Z={6 14} "
SI8 = "soap cutoff=3.5 n_max=4 l_max=3 atom_sigma=0.5 "


def sic7():
    return ase_io.read(SOAP_DATA / "sic7_cluster.extxyz")


# ------------------------------------------------------------------------------------------
# 1. QUIP's random stream


def test_reference_draws_of_the_spec():
    """spec §2.3: idum after reseed and the first normals (quippy-ase 0.10.3), compared bit for bit."""
    table = {
        206: (1226837669, [1.5846859944184575, -0.7333060589712779, 0.7448457139463494, -0.60389854481666]),
        406: (1396323768, [1.6347323717039004, -0.181813775305313, 1.426306431530123, 0.2644733252850499]),
        214: (1920811880, [-0.13366967382513972, 0.7197130004203605, 0.19285978155507683, -1.0799311966927307]),
        204: (1590215028, [2.2201386997210815, 1.3147400863397969, -1.5376115116507947, 0.8570981179103186]),
        404: (1759701127, [-1.05040153527051, 0.7317097139232667, -0.25118780218480546, 0.06309898419188431]),
    }
    for seed, (idum, normals) in table.items():
        rng = ParkMiller(seed)
        assert rng.idum == idum
        assert rng.quip_normal(4).tolist() == normals, seed
    w1 = make(BASE + "R_mix=T Z_mix=T K=4").compression.w1  # spec §2.3: W1 rows 0 and 1
    assert w1[0].tolist() == table[206][1]
    assert w1[1].tolist() == [-0.6222393024017155, 0.35204586371312263, -1.6362516062928083, 1.770333409806338]
    assert SQRT2_SINGLE == 1.41421353816986083984375


@pytest.mark.oracle
def test_stream_bit_for_bit_against_quippy():
    """ran_normal after system_reseed_rng, zero and negative seeds included, and the draws a descriptor's
    creation (one form_W) and calc (two) take from QUIP's global stream: 100 each with mixing, none else."""
    sm = pytest.importorskip("quippy.system_module")
    from quippy.descriptors import Descriptor
    for seed in (206, 406, 7, -5, 200, -2 ** 31, -2 ** 31 + 2, 2 ** 31 - 2):
        sm.system_reseed_rng(seed)
        theirs = [sm.ran_normal() for _ in range(300)]
        assert ParkMiller(seed).quip_normal(300).tolist() == theirs, seed
    at = sic7()
    for extra in ("R_mix=T Z_mix=T K=2", "Z_mix=T K=2 sym_mix=T", "nu_S=0", "Z_map={6, 14}"):
        text = "soap cutoff=3.0 n_max=3 l_max=2 atom_sigma=0.5 n_species=2 species_Z={6 14} " + extra
        draws = make(text).rng_draws_per_form_w
        assert draws == (100 if "mix" in extra else 0)
        sm.system_reseed_rng(7)
        d = Descriptor(text)
        after_init = sm.ran_uniform()
        d.calc(at, grad=True)
        after_calc = sm.ran_uniform()
        rng = ParkMiller(7)
        rng.quip_skip(draws)
        assert rng.quip_uniform() == after_init, extra
        rng.quip_skip(2 * draws)
        assert rng.quip_uniform() == after_calc, extra


def test_gap_fit_stream_skip():
    """100 draws × (3 + 2·n_frames) per mixing coordinate, one more call with sparse files (spec §2.4)."""
    def coord(extra, method="cur_points"):
        return SimpleNamespace(descriptor=make(SI8 + extra), spec=SimpleNamespace(gp=SimpleNamespace(
            sparse_method=method)))
    coords = [coord("R_mix=T Z_mix=T K=3"), coord(""), coord("nu_S=0"), coord("Z_mix=T K=2", "file")]
    assert gap_fit_stream_skip(coords, 5) == 100 * 13 + 100 * 14
    assert gap_fit_stream_skip(coords[1:3], 5) == 0


# ------------------------------------------------------------------------------------------
# 2. values and gradients


MIXING = ["R_mix=T Z_mix=T K=4", "R_mix=T Z_mix=T K=4 sym_mix=T", "R_mix=T Z_mix=T K=4 coupling=F",
          "R_mix=T Z_mix=T K=4 sym_mix=T coupling=F", "Z_mix=T K=4", "Z_mix=T K=3 sym_mix=T", "Z_mix=T K=3 coupling=F",
          "Z_mix=T K=4 sym_mix=T coupling=F", "R_mix=T K=4", "R_mix=T K=3 sym_mix=T", "R_mix=T K=4 coupling=F",
          "R_mix=T K=4 sym_mix=T coupling=F", "R_mix=T Z_mix=T K=3 mix_shift=11", "Z_mix=T K=2 mix_shift=-7",
          "R_mix=T Z_mix=T K=4 nu_S=1", "R_mix=T Z_mix=T K=4 normalise=F covariance_sigma0=0.3",
          "R_mix=T Z_mix=T K=4 average=T", "Z_mix=T K=3 sym_mix=T coupling=F average=T"]
NU = [f"nu_R={r} nu_S={s}" for r in (0, 1, 2) for s in (0, 1, 2) if (r, s) != (2, 2)]
NU += ["coupling=F", "nu_R=0 coupling=F", "nu_S=0 coupling=F", "nu_R=0 nu_S=0 coupling=F", "nu_S=1 average=T"]
Z_MAP = ["Z_map={6 14}", "Z_map={6, 14}", "Z_map={6:14}", "Z_map={6 14:6, 14}", "Z_map={6,,14}",
         "Z_map={14, 6} coupling=F", "Z_map={6 14:6 14} average=T"]


@pytest.mark.oracle
@pytest.mark.parametrize("extra", MIXING + NU + Z_MAP)
def test_two_species_against_quippy(extra):
    pytest.importorskip("quippy")
    err, gerr = compare_with_quippy(sic7(), BASE + extra, extra, tol=1e-10)
    print(f"{extra}: max |Δ value| {err:.1e}, max |Δ gradient| {gerr:.1e}")


@pytest.mark.oracle
@pytest.mark.parametrize("extra", [
    "R_mix=T Z_mix=T K=3",  # the wildcard channel: seeds 0 + mix_shift + 200 j
    "n_species=1 species_Z=14 Z_mix=T K=2 mix_shift=-205",  # seed 9 + 200 j
    "n_species=1 species_Z=14 R_mix=T K=3 coupling=F",
    "nu_S=0 nu_R=1",
    "n_species=3 species_Z={14 6 8} R_mix=T Z_mix=T K=3 mix_shift=-1000000",
    "n_species=3 species_Z={14 6 8} R_mix=T K=2 sym_mix=T coupling=F",
    "n_species=3 species_Z={8 14 6} Z_mix=T K=2 sym_mix=T",
    "n_species=3 species_Z={14 6 8} Z_map={14 8:6, 8}",
])
def test_one_and_three_species_against_quippy(extra):
    """si8 (periodic Si8: no C or O) with one channel, and with three channels two of them empty."""
    pytest.importorskip("quippy")
    err, gerr = compare_with_quippy(ase_io.read(SOAP_DATA / "si8.extxyz"), SI8 + extra, extra, tol=1e-10)
    print(f"{extra}: max |Δ value| {err:.1e}, max |Δ gradient| {gerr:.1e}")


def _random_compression(rng, species):
    """One random compressed-soap setting: the mixing keys (R_mix, Z_mix, sym_mix, K, mix_shift) or the
    body-order keys (nu_R, nu_S), each with coupling T or F."""
    coupling = f"coupling={'TF'[int(rng.integers(0, 2))]}"
    if rng.random() < 0.6:
        flags = ["R_mix=T Z_mix=T", "R_mix=T", "Z_mix=T"][int(rng.integers(0, 3))]
        return (f"{flags} K={rng.integers(1, 5)} mix_shift={rng.integers(-50, 50)} "
                f"sym_mix={'TF'[int(rng.integers(0, 2))]} {coupling}")
    return f"nu_R={rng.integers(0, 3)} nu_S={rng.integers(0, 3)} {coupling}"


def _random_structure(rng, elements):
    """4-8 atoms in a skewed cell (periodic or not) with one close contact (0.7-1.0 Å)."""
    n = int(rng.integers(4, 9))
    cell = (np.eye(3) + np.triu(rng.uniform(-0.4, 0.4, (3, 3)), 1) + np.diag(rng.uniform(-0.2, 0.2, 3))) * 4.0
    pos = rng.random((n, 3)) @ cell
    direction = rng.normal(size=3)
    pos[1] = pos[0] + rng.uniform(0.7, 1.0) * direction / np.linalg.norm(direction)
    return ase.Atoms(numbers=rng.choice(elements, n), positions=pos, cell=cell, pbc=bool(rng.integers(0, 2)))


@pytest.mark.oracle
def test_random_structures_against_quippy():
    """Random settings (one to three species, mixing or body-order keys, either coupling) on random
    structures (skewed cells, close contacts), drawn on every run; GAPFIT_TEST_SEED replays one."""
    pytest.importorskip("quippy")
    seed = run_seed()
    rng = np.random.default_rng(seed)
    case = 0
    while case < 8:
        species = [int(z) for z in rng.permutation([14, 1, 6])[:int(rng.integers(1, 4))]]
        text = (f"soap cutoff={rng.uniform(2.5, 4.0):.3f} n_max={rng.integers(2, 6)} l_max={rng.integers(0, 5)} "
                f"atom_sigma={rng.uniform(0.3, 0.6):.3f} n_species={len(species)} "
                f"species_Z={{{' '.join(map(str, species))}}} {_random_compression(rng, species)}")
        try:
            make(text)
        except ConfigError:  # a combination QUIP refuses too (coupling=F with unequal densities, say)
            continue
        atoms = _random_structure(rng, species)
        compare_with_quippy(atoms, text, f"seed {seed} (GAPFIT_TEST_SEED), case {case}: '{text}'")
        case += 1


def test_stored_numbers_of_the_spec():
    """spec §5.2 (quippy-ase 0.10.3): descriptor 0 (atom 0), its first entries and ∂/∂r(atom 6)."""
    cases = {
        "R_mix=T Z_mix=T K=4": (65, [0.1054302252748729, 0.01977861650774284, 0.018943496900086048,
                                     0.019053608294778562, -0.19415977194927708, -0.014933167469731407],
                                [0.0018622237397187273, -0.0002425082700483824, 0.003664392463691026]),
        "Z_mix=T K=4 sym_mix=T coupling=F": (161, [0.0009086487281877229, 0.004099126443241042,
                                                   0.0033359057289953165, 0.004617989619912215,
                                                   0.02594486901953018, 0.04031231475753241],
                                             [0.00023953817599668627, 0.0002701019184729387, 0.0005573652941952681]),
        "R_mix=T K=4 sym_mix=T coupling=F": (49, [0.07833531831349144, 0.035858482631717044, 0.029722927488913635,
                                                  0.03731445608862888, 0.00983573266778996, 0.005960932163105885],
                                             [-0.0010183991098488391, -0.00295814416811255, 0.00506993106648723]),
        "nu_S=0": (41, [0.6064261807620325, 0.002148105762307829, 0.003441646704790221, 0.0009392113946630399,
                        0.6708151820322821, 0.02112994695033687],
                   [-0.014360780037667803, 0.0003055843883513516, 0.00018467848477827538]),
        "Z_map={6 14:6, 14}": (129, [0.0724176120745105, 0.0016424378903556489, 0.0024618570764353776,
                                     0.0014093665675961127, 0.3813747688482915, 0.011500601608502888],
                               [0.0010269344073871884, 0.0002994614525061636, 0.00028331484279344913]),
    }
    at = sic7()
    for extra, (dim, data, grad_x) in cases.items():
        desc = make(BASE + extra)
        assert desc.dimensions == dim, extra
        v = calc(desc, at)
        assert np.abs(v.x[0, :6] - data).max() < 1e-14, extra
        row = np.flatnonzero((v.grad_desc == 0) & (v.grad_atom == 6))
        assert np.abs(v.grad_x[row[0], 0, :3] - grad_x).max() < 1e-14, extra


def test_dimensions_of_the_spec():
    """spec §5.1 (n_max=4, l_max=3, species_Z={6 14})."""
    dims = {"R_mix=T K=4": 257, "Z_mix=T K=4": 1025, "R_mix=T Z_mix=T K=4": 65, "R_mix=T sym_mix=T K=4": 145,
            "Z_mix=T sym_mix=T K=4": 545, "R_mix=T Z_mix=T sym_mix=T K=4": 41, "R_mix=T K=4 coupling=F": 65,
            "Z_mix=T K=4 coupling=F": 257, "R_mix=T Z_mix=T K=4 coupling=F": 17,
            "R_mix=T sym_mix=T K=4 coupling=F": 49, "Z_mix=T sym_mix=T K=4 coupling=F": 161,
            "R_mix=T Z_mix=T sym_mix=T K=4 coupling=F": 17, "R_mix=T K=7": 785, "Z_mix=T K=2 mix_shift=5": 257,
            "nu_R=1": 65, "nu_R=0": 13, "nu_S=1": 129, "nu_S=0": 41, "nu_R=1 nu_S=1": 33, "nu_R=0 nu_S=0": 5,
            "nu_R=1 nu_S=0": 17, "nu_R=0 nu_S=1": 9, "coupling=F": 33, "nu_R=0 coupling=F": 9,
            "nu_S=0 coupling=F": 17, "nu_R=0 nu_S=0 coupling=F": 5, "Z_map={6 14}": 41, "Z_map={6, 14}": 145,
            "Z_map={6:14}": 65, "Z_map={6 14:6, 14}": 129, "Z_map={6,,14}": 313, "K=3 mix_shift=4": 145}
    for extra, dim in dims.items():
        assert make(BASE + extra).dimensions == dim, extra
    assert make(BASE + "K=3 mix_shift=4").compression is None  # ignored without R_mix/Z_mix: the plain spectrum


def spread_structure(rng, min_distance=1.2, kinks=(2.4, 3.2)):
    """Five atoms (C, O, Si) in a random periodic cell, no two closer than ``min_distance`` (Å): close contacts
    make the higher derivatives, and so the finite differences' truncation error, large; and no distance
    within 1e-3 Å of the cutoff function's ``kinks`` (conftest.clear_of_kinks)."""
    cell = (np.eye(3) + rng.uniform(-0.2, 0.2, (3, 3))) * 3.6
    while True:
        atoms = ase.Atoms(numbers=rng.permutation([6, 8, 14, 14, 6]), positions=rng.random((5, 3)) @ cell, cell=cell,
                          pbc=True)
        d = atoms.get_all_distances(mic=True)
        if d[np.triu_indices(5, 1)].min() >= min_distance and clear_of_kinks(atoms, kinks):
            return atoms


@pytest.mark.parametrize("extra", [
    "R_mix=T Z_mix=T K=3",
    "Z_mix=T K=2 sym_mix=T coupling=F",
    "R_mix=T K=2 coupling=F mix_shift=3",
    "nu_R=1 nu_S=0",
    "Z_map={8 14:6, 14} normalise=F",
    "R_mix=T Z_mix=T K=2 sym_mix=T average=T covariance_sigma0=0.2",
])
def test_gradients_by_finite_differences(extra):
    seed = run_seed()
    rng = np.random.default_rng(seed)
    atoms = spread_structure(rng)
    text = "soap cutoff=3.2 cutoff_transition_width=0.8 l_max=3 n_max=3 atom_sigma=0.55 n_species=3 " \
           "species_Z={6 8 14} " + extra
    desc = make(text)
    analytic = dense_gradient(calc(desc, atoms), len(atoms))
    # Richardson's extrapolation of two central differences: truncation O(h⁴), rounding ~1e-16/h
    numeric = (4.0 * finite_difference_gradient(desc, atoms, 1e-4)
               - finite_difference_gradient(desc, atoms, 2e-4)) / 3.0
    err = np.abs(analytic - numeric).max() / max(1.0, np.abs(analytic).max())
    assert err < 1e-9, f"seed {seed} (GAPFIT_TEST_SEED), '{text}': finite differences differ by {err:.2e}"


# ------------------------------------------------------------------------------------------
# 3. refusals (spec §1.2)


@pytest.mark.parametrize("extra, culprit", [
    ("nu_R=1 R_mix=T K=2", "nu_R"), ("nu_R=0 Z_mix=T K=2", "nu_R"), ("nu_R=1 diagonal_radial=T", "nu_R"),
    ("nu_R=0 Z_map={6, 14}", "nu_R"), ("R_mix=T K=2 Z_map={6, 14}", "Z_map"), ("sym_mix=T", "sym_mix"),
    ("nu_R=3", "nu_R"), ("nu_S=-1", "nu_S"), ("nu_S=3 Z_mix=T K=2", "nu_S"),
    ("diagonal_radial=T Z_mix=T K=2", "diagonal_radial"), ("diagonal_radial=T coupling=F", "diagonal_radial"),
    ("diagonal_radial=T nu_S=1", "diagonal_radial"), ("diagonal_radial=T Z_map={6, 14}", "diagonal_radial"),
    ("nu_R=1 coupling=F", "coupling"), ("nu_S=1 coupling=F", "coupling"), ("R_mix=T K=0", "K"),
    ("Z_mix=T", "K"), ("Z_mix=T K=2 mix_shift=-206", "mix_shift"), ("R_mix=T K=2 mix_shift=3000000000", "mix_shift"),
    ("R_mix=T K=2 mix_shift=2147483647", "mix_shift"), ("Z_map={6:14:6}", "Z_map"), ("Z_map={6a, 14}", "Z_map"),
    ("Z_map={6, 8}", "Z_map"), ("Z_map={:6}", "Z_map"), ("Z_map={6 14:}", "Z_map"),
])
def test_refusals(extra, culprit):
    text = "soap cutoff=3 l_max=2 n_max=2 atom_sigma=0.5 n_species=2 species_Z={6 14} " + extra
    with pytest.raises(ConfigError) as err:
        make(text)
    message = str(err.value)
    assert "\n" not in message
    outside = re.sub(r"in descriptor '[^']*'", "", message)  # the key must be named outside the quoted piece
    assert culprit in outside, message


def test_quips_silent_acceptances():
    """nu_S is ignored with mixing or Z_map (QUIP's nu_R /= 2 .OR. nu_R /= 2); K, mix_shift without mixing."""
    at = sic7()
    for a, b in [("R_mix=T Z_mix=T K=3", "R_mix=T Z_mix=T K=3 nu_S=0"), ("Z_map={6 14:6, 14}", "Z_map={6 14:6, 14} nu_S=1"),
                 ("", "K=4 mix_shift=9")]:
        assert np.array_equal(calc(make(BASE + a), at).x, calc(make(BASE + b), at).x)


# ------------------------------------------------------------------------------------------
# 4. a fit against gap_fit


MIXED_FIT = ("soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=3.5 cutoff_transition_width=0.5 R_mix=T Z_mix=T K=5 "
             "delta=0.2 covariance_type=dot_product zeta=2 n_sparse=20 sparse_method=cur_points")


def _fit_both(tmp_path, gap_fit, gap):
    """gap_fit and gapfit on every 4th frame of SiC.np2 (26 frames), rnd_seed=7; their two models."""
    every_nth_frame(QUIP_TESTS / "SiC.np2.xyz", tmp_path / "train.xyz", 4)
    common = ["at_file=train.xyz", "gap={" + gap + "}", "energy_parameter_name=dft_energy",
              "force_parameter_name=dft_force", "virial_parameter_name=dft_virial", "default_sigma={0.01 1.0 0.5 0.0}",
              "sparse_jitter=1e-6", "rnd_seed=7", "do_copy_at_file=F", "e0_method=average"]
    proc = subprocess.run([gap_fit, *common, "gp_file=gap_fit.xml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    proc = run_gapfit(common + ["gp_file=gapfit.xml"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    ma, mb = read_model(str(tmp_path / "gap_fit.xml")), read_model(str(tmp_path / "gapfit.xml"))
    assert len(ma.coordinates) == len(mb.coordinates)
    for a, b in zip(ma.coordinates, mb.coordinates):
        assert a.sparse_x.shape == b.sparse_x.shape
        assert np.abs(a.sparse_x - b.sparse_x).max() < 1e-12  # the same points in the same order
    return ma, mb


@pytest.mark.oracle
def test_fit_against_gap_fit(tmp_path, gap_fit):
    """add_species (Si and C centres), cur_points: gap_fit's sparse points (its random stream advanced by
    100·(3 + 2·26) per coordinate), its predictions, and quippy's Potential on gapfit's model."""
    from gapfit.model.calculator import GapCalculator
    from quippy.potential import Potential
    ma, mb = _fit_both(tmp_path, gap_fit, MIXED_FIT)
    assert [c.sparse_x.shape for c in mb.coordinates] == [(20, 101)] * 2
    frames = ase_io.read(str(QUIP_TESTS / "SiC.np2.xyz"), ":")
    held_out = [f for i, f in enumerate(frames) if i % 4 == 2 and len(f) > 1]
    de, df = prediction_differences(tmp_path / "gap_fit.xml", tmp_path / "gapfit.xml", held_out)
    mine = GapCalculator(str(tmp_path / "gapfit.xml"))
    qe, qf, _, _ = calculator_differences(mine, Potential(param_filename=str(tmp_path / "gapfit.xml")), held_out)
    print(f"compressed soap fit, {len(held_out)} held-out frames: gap_fit vs gapfit max |ΔE|/atom {de:.2e} eV, "
          f"|ΔF| {df:.2e} eV/Å; quippy on gapfit's XML |ΔE| {qe:.2e} eV, |ΔF| {qf:.2e} eV/Å")
    if not (de < 1e-6 and df < 1e-5):
        floor_e, floor_f = evaluation_rounding_floor(tmp_path / "gapfit.xml", mine, held_out)
        assert de < 10 * floor_e and df < 10 * floor_f
    floor_e, floor_f = evaluation_rounding_floor(tmp_path / "gapfit.xml", mine, held_out, n=1)
    assert qe < max(1e-8, 10 * floor_e) and qf < max(1e-8, 10 * floor_f)


@pytest.mark.oracle
def test_stream_skip_with_a_sparse_file_and_two_mixings(tmp_path, gap_fit):
    """A mixing soap with sparse_method=index_file takes one more form_W call (get_n_sparseX_for_files); a second
    mixing soap with cur_points then makes gap_fit's choices only if all are skipped (spec §2.4)."""
    (tmp_path / "idx.inp").write_text("1\n5\n9\n13\n17\n")
    gap = ("soap l_max=2 n_max=3 atom_sigma=0.5 cutoff=3.0 R_mix=T Z_mix=T K=3 n_species=2 species_Z={{14 6}} "
           "add_species=F delta=0.2 covariance_type=dot_product zeta=2 sparse_method=index_file sparse_file=idx.inp : "
           "soap l_max=2 n_max=3 atom_sigma=0.5 cutoff=3.5 Z_mix=T K=2 sym_mix=T coupling=F delta=0.2 "
           "covariance_type=dot_product zeta=2 n_sparse=15 sparse_method=cur_points")
    _, mb = _fit_both(tmp_path, gap_fit, gap)
    assert [c.sparse_x.shape[0] for c in mb.coordinates] == [5, 15, 15]


@pytest.mark.parametrize("extra, good, bad", [("Z_map={{6 8}}", [8, 6, 14], [14, 6]),
                                              ("Z_mix=T K=2 mix_shift=-206", [14, 8], [14, 6])])
def test_species_checks_wait_for_add_species(extra, good, bad):
    """add_species=T (gap_fit's default) replaces species_Z with the data's elements: the elements of Z_map and
    the seeds of Z_mix are checked after the expansion; with add_species=F at once (the wildcard channel)."""
    from gapfit.config.fit_config import parse_config
    from gapfit.config.gaps import expand_species
    gap = ("gap={soap l_max=2 n_max=2 atom_sigma=0.5 cutoff=3 " + extra + " delta=1 covariance_type=dot_product "
           "zeta=2 n_sparse=5 sparse_method=uniform%s}")
    config = parse_config(["at_file=train.xyz", "default_sigma={0.01 1.0 0.5 0.0}", gap % ""])
    for spec in expand_species(list(config.gaps), good):
        spec.make_descriptor()
    with pytest.raises(ConfigError, match="Z_map|mix_shift"):
        [spec.make_descriptor() for spec in expand_species(list(config.gaps), bad)]
    if "Z_map" in extra:  # the wildcard channel 0 holds neither (Z_mix's wildcard seeds are -6 and 194: usable)
        with pytest.raises(ConfigError, match="Z_map"):
            parse_config(["at_file=train.xyz", "default_sigma={0.01 1.0 0.5 0.0}", gap % " add_species=F"])
