"""The soap descriptor against QUIP: stored references, live quippy, finite differences.

* every soap case of the reference set (quippy-ase 0.10.3 outputs in tests/data/soap) to 1e-12;
* random structures and parameters against quippy's ``Descriptor`` on every run (the seed is
  printed in the assertion messages; set GAPFIT_TEST_SEED to replay one);
* finite differences of the gradients, independent of quippy.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

ase_io = pytest.importorskip("ase.io")
import ase  # noqa: E402

from gapfit.descriptors.soap import Soap  # noqa: E402
from gapfit.errors import ConfigError  # noqa: E402
from gapfit.descriptors.neighbours import neighbour_list  # noqa: E402
from gapfit.options.schema import apply_schema
from gapfit.config.gaps import expand_species, parse_gap_piece
from gapfit.options.syntax import key_values  # noqa: E402

from conftest import central_differences, clear_of_kinks  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "soap"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
CASES = {c["case"]: c for c in MANIFEST["cases"]}


def make(text: str) -> Soap:
    values, given = apply_schema(Soap.schema, key_values(text), "in the test")
    return Soap(values, piece=text, given=given)


def calc(desc: Soap, atoms, grad=True):
    nl = neighbour_list(atoms.positions, atoms.cell[:], atoms.pbc, desc.cutoff)
    return desc.calc(atoms, nl, grad=grad)


def run_seed() -> int:
    env = os.environ.get("GAPFIT_TEST_SEED")
    return int(env) if env else int(np.random.SeedSequence().entropy % (2 ** 31))


def match_rows(mine, theirs, what):
    """Pair gradient rows by (descriptor, atom, image position); returns index arrays."""
    md, ma, mp = mine
    td, ta, tp = theirs
    assert len(md) == len(td), f"{what}: {len(md)} gradient rows, the reference has {len(td)}"
    groups = defaultdict(list)
    for r in range(len(td)):
        groups[(int(td[r]), int(ta[r]))].append(r)
    im, it = [], []
    for r in range(len(md)):
        cand = groups.get((int(md[r]), int(ma[r])))
        assert cand, f"{what}: no reference row for descriptor {md[r]}, atom {ma[r]}"
        dist = [np.abs(tp[c] - mp[r]).max() for c in cand]
        k = int(np.argmin(dist))
        assert dist[k] < 1e-8, f"{what}: no reference row at image position {mp[r]} of atom {ma[r]}"
        im.append(r)
        it.append(cand.pop(k))
    return np.array(im, dtype=int), np.array(it, dtype=int)


def check_layout(v, desc: Soap, atoms):
    """Our own conventions: centre row first, equal to minus the other rows; positions; cutoffs."""
    d = desc.dimensions
    assert v.x.shape[1] == d and np.all(v.cutoff == 1.0)
    if not v.has_grad:
        return
    assert v.grad_x.shape == (len(v.grad_desc), 3, d) and np.all(v.grad_cutoff == 0.0)
    assert np.all(np.diff(v.grad_desc) >= 0)
    assert np.all(v.grad_x[:, :, -1] == 0.0)
    if desc.params["average"]:
        return
    first = np.flatnonzero(np.r_[True, v.grad_desc[1:] != v.grad_desc[:-1]])
    assert np.array_equal(v.grad_atom[first], v.centres[:, 0])
    assert np.allclose(v.grad_pos[first], atoms.positions[v.centres[:, 0]])
    sums = np.add.reduceat(v.grad_x, first, axis=0)
    assert np.abs(sums).max(initial=0.0) < 1e-12 * max(1.0, np.abs(v.grad_x).max(initial=0.0))


# ------------------------------------------------------------------------------------------
# 1. the stored reference set


@pytest.mark.parametrize("name", list(CASES))
def test_reference_case(name):
    case = CASES[name]
    atoms = ase_io.read(DATA / case["structure"])
    ref = np.load(DATA / case["file"])
    text = case["descriptor"] + (" " + case["calc_args_str"] if case["calc_args_str"] else "")
    desc = make(text)
    assert desc.dimensions == case["dim"]
    v = calc(desc, atoms, grad=case["grad"])
    check_layout(v, desc, atoms)
    tol = 1e-12
    assert v.x.shape == ref["data"].shape
    err = np.abs(v.x - ref["data"]).max()
    assert err < tol, f"{name}: values differ by {err:.2e}"
    assert np.array_equal(v.centres.reshape(ref["ci_0based"].shape), ref["ci_0based"])
    assert np.array_equal(v.cutoff, ref["covariance_cutoff"])
    if not case["grad"]:
        return
    ok = ref["grad_atom_index_0based"] >= 0  # rows of skipped species hold garbage
    im, it = match_rows((v.grad_desc, v.grad_atom, v.grad_pos),
                        (ref["grad_desc_index"][ok], ref["grad_atom_index_0based"][ok], ref["grad_pos"][ok]), name)
    gerr = np.abs(v.grad_x[im] - ref["grad_data"][ok][it]).max()
    assert gerr < tol, f"{name}: gradients differ by {gerr:.2e}"
    assert np.array_equal(v.grad_cutoff[im], ref["grad_covariance_cutoff"][ok][it])


def test_values_without_gradients_are_the_same():
    atoms = ase_io.read(DATA / "sic8.extxyz")
    desc = make(CASES["sic8_soap_2sp"]["descriptor"])
    assert np.array_equal(calc(desc, atoms, grad=False).x, calc(desc, atoms, grad=True).x)


def test_longer_neighbour_list_and_plain_structure():
    """gap_fit builds one neighbour list with the largest cutoff; any object with numbers,
    positions, cell and pbc is a structure."""
    from types import SimpleNamespace

    atoms = ase_io.read(DATA / "sic8.extxyz")
    desc = make(CASES["sic8_soap_2sp"]["descriptor"])
    ref = calc(desc, atoms)
    plain = SimpleNamespace(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(),
                            cell=np.array(atoms.cell[:]), pbc=atoms.pbc.copy())
    nl = neighbour_list(plain.positions, plain.cell, plain.pbc, desc.cutoff + 1.7)
    v = desc.calc(plain, nl, grad=True)
    assert np.abs(v.x - ref.x).max() < 1e-15 and np.array_equal(v.centres, ref.centres)
    # the neighbour order may depend on the list's cutoff: match the rows
    im, it = match_rows((v.grad_desc, v.grad_atom, v.grad_pos), (ref.grad_desc, ref.grad_atom, ref.grad_pos),
                        "longer neighbour list")
    assert np.abs(v.grad_x[im] - ref.grad_x[it]).max() < 1e-15


# ------------------------------------------------------------------------------------------
# 2. live oracle: random structures and parameters against quippy

ELEMENTS = [1, 6, 8, 14]


def random_structure(rng):
    kind = rng.choice(["bulk", "bulk", "cluster", "slab"])
    n = int(rng.integers(1, 11))
    species = rng.choice(ELEMENTS, size=int(rng.integers(1, 4)), replace=False)
    if kind == "cluster":
        cell = np.eye(3) * ((n * 10.0) ** (1 / 3) * 1.5)
        pbc = [False] * 3
    else:
        cell = np.eye(3) + rng.uniform(-0.35, 0.35, (3, 3))  # non-orthogonal
        cell *= (n * rng.uniform(9.0, 18.0) / abs(np.linalg.det(cell))) ** (1 / 3)
        pbc = [True, True, kind != "slab"]
    periodic = np.array(pbc)
    positions = []
    for _ in range(5000):
        if len(positions) == n:
            break
        p = rng.random(3) @ cell
        ok = True
        for q in positions:
            f = np.linalg.solve(cell.T, p - q)
            f[periodic] -= np.round(f[periodic])
            if np.linalg.norm(f @ cell) < 0.8:
                ok = False
                break
        if ok:
            positions.append(p)
    numbers = rng.choice(species, size=len(positions))
    atoms = ase.Atoms(numbers=numbers, positions=np.array(positions), cell=cell if kind != "cluster" else None,
                      pbc=pbc)
    if len(atoms) >= 2 and rng.random() < 0.5:  # a close contact
        u = rng.normal(size=3)
        atoms.positions[1] = atoms.positions[0] + u / np.linalg.norm(u) * rng.uniform(0.78, 0.9)
    return atoms


def random_soap(rng, atoms):
    present = sorted(set(atoms.numbers.tolist()))
    rc = rng.uniform(2.5, 5.5)
    s = (f"soap l_max={int(rng.integers(0, 9))} n_max={int(rng.integers(1, 9))} "
         f"atom_sigma={rng.uniform(0.3, 1.0):.4f} cutoff={rc:.4f} "
         f"cutoff_transition_width={rng.uniform(0.1, min(rc, 2.0)):.4f} central_weight={rng.uniform(0, 1.5):.3f}")
    if rng.random() > 0.25:  # otherwise: one wildcard channel
        sp = list(present)
        if len(sp) > 1 and rng.random() < 0.3:  # a species without a channel
            sp = [int(z) for z in rng.choice(sp, size=len(sp) - 1, replace=False)]
        if rng.random() < 0.3:  # a channel without atoms
            sp.append(int(rng.choice([z for z in (1, 6, 8, 14, 26) if z not in sp])))
        rng.shuffle(sp)
        s += f" n_species={len(sp)} species_Z={{{' '.join(map(str, sp))}}}"
    r = rng.random()
    if r < 0.2:
        s += f" Z={int(rng.choice(present))}"
    elif r < 0.3 and len(present) > 1:
        a, b = rng.choice(present, size=2, replace=False)
        s += f" n_Z=2 Z={{{a} {b}}}"
    if rng.random() < 0.15:
        s += " central_reference_all_species=" + str(rng.choice(["T", "F"]))
    if rng.random() < 0.1:
        s += " diagonal_radial=T"
    if rng.random() < 0.1:
        s += " normalise=F"
    if rng.random() < 0.1:
        s += f" covariance_sigma0={rng.uniform(0, 1):.3f}"
    if rng.random() < 0.1:
        s += (f" cutoff_dexp={int(rng.integers(1, 4))} cutoff_scale={rng.uniform(0.5, 3):.3f}"
              f" cutoff_rate={rng.choice([0.0, 1.5])}")
    if rng.random() < 0.15:
        s += " radial_basis=GTO"
    if rng.random() < 0.08:
        s += " average=T"
    return s


def compare_with_quippy(atoms, text, what, tol=1e-10):
    from quippy.descriptors import Descriptor as QuippyDescriptor

    desc = make(text)
    v = calc(desc, atoms, grad=True)
    check_layout(v, desc, atoms)
    q = QuippyDescriptor(text).calc(atoms, grad=True)
    d = desc.dimensions
    data = np.asarray(q["data"], dtype=float).reshape(-1, d) if len(q["data"]) else np.zeros((0, d))
    assert v.x.shape == data.shape, f"{what}: {v.x.shape[0]} descriptors, quippy {data.shape[0]}"
    # QUIP divides by a zero norm (no neighbour, central_weight=0): NaN there, zeros here
    nan = np.isnan(data).any(axis=1)
    assert np.all(v.x[nan, :-1] == 0.0), what
    err = np.abs(v.x[~nan] - data[~nan]).max(initial=0.0)
    assert err < tol, f"{what}: values differ by {err:.2e}"
    ci = np.atleast_1d(np.asarray(q["ci"])).reshape(-1) - 1
    assert np.array_equal(v.centres.reshape(-1), ci), what
    if v.n_desc == 0:
        return err, 0.0
    ii = [np.atleast_1d(a) for a in q["ii"]]
    q_desc = np.repeat(np.arange(len(ii)), [len(a) for a in ii])
    q_atom = np.concatenate(ii).astype(int) - 1  # -1: a neighbour without a channel (garbage row)
    q_grad = np.asarray(q["grad_data"]).reshape(len(q_atom), 3, d)
    q_pos = np.asarray(q["pos"]).reshape(len(q_atom), 3)
    good = (q_atom >= 0) & ~nan[q_desc]
    if desc.params["average"]:
        # quippy's positions are bond vectors here: compare the total derivative per atom
        mine = np.zeros((len(atoms), 3, d))
        theirs = np.zeros_like(mine)
        np.add.at(mine, v.grad_atom, v.grad_x)
        np.add.at(theirs, q_atom[good], q_grad[good])
        gerr = np.abs(mine - theirs).max()
    else:
        keep = ~nan[v.grad_desc]
        im, it = match_rows((v.grad_desc[keep], v.grad_atom[keep], v.grad_pos[keep]),
                            (q_desc[good], q_atom[good], q_pos[good]), what)
        gerr = np.abs(v.grad_x[keep][im] - q_grad[good][it]).max(initial=0.0)
    assert gerr < tol, f"{what}: gradients differ by {gerr:.2e}"
    return err, gerr


@pytest.mark.oracle
def test_random_structures_against_quippy():
    pytest.importorskip("quippy")
    seed = run_seed()
    rng = np.random.default_rng(seed)
    for case in range(70):
        atoms = random_structure(rng)
        text = random_soap(rng, atoms)
        what = f"seed {seed} (GAPFIT_TEST_SEED), case {case}: '{text}' on {len(atoms)} atoms, pbc {atoms.pbc}"
        compare_with_quippy(atoms, text, what)


@pytest.mark.oracle
def test_compression_defaults_and_xml_version_against_quippy():
    """Explicit default values of the compression keys, and xml_version below both thresholds."""
    pytest.importorskip("quippy")
    atoms = ase_io.read(DATA / "sic8.extxyz")
    base = "soap cutoff=3.5 l_max=3 n_max=3 atom_sigma=0.5 n_species=2 species_Z={14 6}"
    compare_with_quippy(atoms, base + " nu_R=2 nu_S=2 Z_mix=F R_mix=F sym_mix=F coupling=T K=0 mix_shift=0", "defaults")
    # quippy applies xml_version at init only; ours drives both switches (as IPModel_GAP does)
    desc = make(base + " xml_version=1423143770")  # forces central_reference_all_species only
    cras = make(base + " central_reference_all_species=T")
    assert np.array_equal(calc(desc, atoms, False).x, calc(cras, atoms, False).x)


# ------------------------------------------------------------------------------------------
# 3. finite differences


def finite_difference_gradient(desc, atoms, h):
    """Central differences of the descriptor values, laid out as :func:`dense_gradient`."""
    return np.moveaxis(central_differences(lambda a: calc(desc, a, False).x, atoms, h), 1, 3)


def dense_gradient(v, n_atoms):
    g = np.zeros((v.n_desc, n_atoms, 3, v.x.shape[1]))
    np.add.at(g, (v.grad_desc, v.grad_atom), v.grad_x)
    return g


@pytest.mark.parametrize("extra", [
    "n_species=2 species_Z={6 14}",
    "n_species=2 species_Z={14 8} Z=14 central_weight=0.4",  # C has no channel; Si centres only
    "radial_basis=GTO normalise=F cutoff_dexp=2 cutoff_scale=2.0 cutoff_rate=0.5",
    "n_species=3 species_Z={8 6 14} average=T diagonal_radial=T covariance_sigma0=0.3",
])
def test_gradients_by_finite_differences(extra):
    seed = run_seed()
    rng = np.random.default_rng(seed)
    cell = (np.eye(3) + rng.uniform(-0.2, 0.2, (3, 3))) * 3.6
    numbers = rng.permutation([6, 8, 14, 14, 6])
    atoms = ase.Atoms(numbers=numbers, positions=rng.random((5, 3)) @ cell, cell=cell, pbc=True)
    while not clear_of_kinks(atoms, (2.4, 3.2)):  # no distance at the cutoff function's kinks
        atoms.positions = rng.random((5, 3)) @ cell
    text = "soap cutoff=3.2 cutoff_transition_width=0.8 l_max=5 n_max=5 atom_sigma=0.55 " + extra
    desc = make(text)
    v = calc(desc, atoms, grad=True)
    analytic = dense_gradient(v, len(atoms))
    scale = max(1.0, np.abs(analytic).max())
    # Central differences: truncation error ~h², rounding noise ~1/h.  The GTO fit leaves ~1e-12
    # of noise in the values, so h = 1e-5 alone reached 1.4e-7 (seed 1004) where h = 1e-4 gives
    # 1.4e-8; over 40 seeds the better of the two steps stayed below 1.4e-8.
    errors = []
    for h in (1e-4, 1e-5):
        numeric = finite_difference_gradient(desc, atoms, h)
        errors.append(np.abs(analytic - numeric).max() / scale)
    err = min(errors)
    assert err < 1e-7, (f"seed {seed} (GAPFIT_TEST_SEED), '{text}': finite differences differ by {err:.2e} "
                        f"(h = 1e-4: {errors[0]:.2e}, h = 1e-5: {errors[1]:.2e})")


# ------------------------------------------------------------------------------------------
# parameters


def test_schema_is_quips_key_set():
    quip_keys = {"cutoff", "cutoff_transition_width", "cutoff_dexp", "cutoff_scale", "cutoff_rate", "l_max",
                 "n_max", "atom_gaussian_width", "atom_sigma", "central_weight", "central_reference_all_species",
                 "average", "diagonal_radial", "covariance_sigma0", "normalise", "normalize",
                 "basis_error_exponent", "n_Z", "Z", "n_species", "species_Z", "xml_version", "nu_R", "nu_S",
                 "Z_mix", "R_mix", "sym_mix", "coupling", "K", "mix_shift", "Z_map", "radial_basis"}
    assert set(Soap.schema.names()) == quip_keys | {"soap"}


def test_aliases_and_defaults():
    a = make("soap cutoff=3 l_max=2 n_max=2 atom_gaussian_width=0.5 normalize=F")
    b = make("soap cutoff=3 l_max=2 n_max=2 atom_sigma=0.5 normalise=F")
    assert a.params == b.params
    assert a.radial_basis == "EQUISPACED_GAUSS" and a.central_reference_all_species
    assert make("soap cutoff=3 l_max=2 n_max=2 atom_sigma=0.5 radial_basis=").radial_basis == "EQUISPACED_GAUSS"
    two = make("soap cutoff=3 l_max=2 n_max=2 atom_sigma=0.5 n_species=2 species_Z={14 6}")
    assert not two.central_reference_all_species and two.two_l_plus_one
    old = make("soap cutoff=3 l_max=2 n_max=2 atom_sigma=0.5 n_species=2 species_Z={14 6} xml_version=0")
    assert old.central_reference_all_species and not old.two_l_plus_one
    assert two.dimensions == 3 * 4 * 5 // 2 + 1
    assert make("soap cutoff=3 l_max=4 n_max=4 atom_sigma=0.5").dimensions == 51


@pytest.mark.parametrize("extra, culprit", [
    ("species_Z={14}", "n_species"),
    ("n_species=2", "species_Z"),
    ("n_species=2 species_Z={14}", "species_Z"),
    ("n_species=2 species_Z={14 14}", "twice"),
    ("n_species=2 species_Z={0 14}", "wildcard"),
    ("n_Z=2", "Z="),
    ("n_Z=2 Z={14}", "'Z'"),
    ("radial_basis=gto", "radial_basis"),
    ("cutoff_transition_width=0", "cutoff_transition_width"),
    ("cutoff_dexp=-1", "cutoff_dexp"),
    ("cutoff_scale=0", "cutoff_scale"),
    ("cutoff_rate=-1", "cutoff_rate"),
])
def test_bad_parameters(extra, culprit):
    with pytest.raises(ConfigError) as err:
        make("soap cutoff=3 l_max=2 n_max=2 atom_sigma=0.5 " + extra)
    assert culprit in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text, culprit", [
    ("soap l_max=2 n_max=2 atom_sigma=0.5", "cutoff"),
    ("soap cutoff=3 n_max=2 atom_sigma=0.5", "l_max"),
    ("soap cutoff=3 l_max=2 atom_sigma=0.5", "n_max"),
    ("soap cutoff=3 l_max=2 n_max=2", "atom_sigma"),
    ("soap cutoff=0 l_max=2 n_max=2 atom_sigma=0.5", "cutoff"),
    ("soap cutoff=3 l_max=-1 n_max=2 atom_sigma=0.5", "l_max"),
    ("soap cutoff=3 l_max=2 n_max=0 atom_sigma=0.5", "n_max"),
    ("soap cutoff=3 l_max=2 n_max=2 atom_sigma=0", "atom_sigma"),
])
def test_mandatory_and_ranges(text, culprit):
    with pytest.raises(ConfigError, match=culprit):
        make(text)


def test_expand_species_matches_gap_fit():
    # the <descriptor> strings of a gap_fit XML (shared/reference/example_model/example_gp.xml)
    piece = (" soap l_max=2 n_max=2 atom_sigma=0.5 cutoff=3.5 cutoff_transition_width=0.5 delta=0.3 "
             "covariance_type=dot_product zeta=2 n_sparse=5 sparse_method=cur_points")
    expected = [piece + " n_species=2 Z=14 species_Z={14 6 }", piece + " n_species=2 Z=6 species_Z={14 6 }"]
    assert Soap.expand_species(piece + "   ", [14, 6]) == expected
    spec = parse_gap_piece(piece, 1)
    expanded = expand_species([spec], [14, 6])
    assert [s.piece for s in expanded] == expected
    descs = [s.make_descriptor() for s in expanded]
    assert [d.species_selector() for d in descs] == [[14], [6]]
    assert all(d.species_Z == [14, 6] and d.dimensions == 3 * 4 * 5 // 2 + 1 for d in descs)


def test_no_centres_and_isolated_atoms():
    atoms = ase_io.read(DATA / "sic8.extxyz")
    v = calc(make("soap cutoff=3 l_max=2 n_max=2 atom_sigma=0.5 Z=8"), atoms)
    assert v.x.shape == (0, 10) and v.grad_x.shape == (0, 3, 10) and v.centres.shape == (0, 1)
    lone = ase.Atoms("Si", positions=[[0, 0, 0]], cell=[20, 20, 20], pbc=True)
    v = calc(make("soap cutoff=3 l_max=2 n_max=2 atom_sigma=0.5"), lone)
    assert v.x.shape == (1, 10) and v.x[0, 0] == 1.0 and np.all(v.x[0, 1:] == 0.0)
    assert v.grad_x.shape == (1, 3, 10) and np.all(v.grad_x == 0.0)
    # no neighbour and no centre weight: QUIP gives NaN, we give zeros
    v = calc(make("soap cutoff=3 l_max=2 n_max=2 atom_sigma=0.5 central_weight=0"), lone)
    assert np.all(v.x == 0.0) and np.all(v.grad_x == 0.0)


def test_gap_model_with_soap_matches_quip():
    """A GAP XML with soap and distance_2b coordinates, evaluated by GapCalculator, against
    quippy's Potential (energy, forces, stress, local energies)."""
    from gapfit.model.calculator import GapCalculator

    atoms = ase_io.read(DATA / "sic8.extxyz")
    expected = np.load(DATA / "gap_model_sic_expected.npz")
    atoms.calc = GapCalculator(str(DATA / "gap_model_sic.xml"))
    assert abs(atoms.get_potential_energy() - expected["energy"]) < 1e-10
    assert np.abs(atoms.get_forces() - expected["forces"]).max() < 1e-12
    assert np.abs(atoms.get_stress(voigt=False) - expected["stress_3x3"]).max() < 1e-12
    assert np.abs(atoms.calc.results["energies"] - expected["local_energies"]).max() < 1e-10
