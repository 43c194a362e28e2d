"""GAP XML: format facts QUIP relies on, and cross-loading with quippy in both directions.

Tolerances: energies, forces and virials agree to 1e-8 relative (of the largest
magnitude in each comparison); in practice the agreement is ~1e-13.
"""

import hashlib
import re
import shutil

import numpy as np
import pytest
from ase.io import read, write

from gapfit import GapFit
from gapfit.model.calculator import GapCalculator
from gapfit.model.gap_xml import read_model

from conftest import QUIP_TESTS

SIC_2B = ("distance_2b cutoff=4.0 cutoff_transition_width=0.8 covariance_type=ard_se delta=1.0 theta_uniform=0.4 "
          "n_sparse=15 sparse_method=uniform")
SIC_OPTIONS = dict(energy_parameter_name="dft_energy", force_parameter_name="dft_force",
                   virial_parameter_name="dft_virial", default_sigma=[0.01, 0.3, 0.1, 0.0], sparse_jitter=1e-6,
                   rnd_seed=3)


@pytest.fixture(scope="module")
def sic_split(tmp_path_factory):
    """Training frames (every other frame, isolated atoms included) and held-out frames of SiC."""
    frames = read(str(QUIP_TESTS / "SiC.np1.xyz"), ":")
    train = [f for i, f in enumerate(frames) if i % 2 == 0 or len(f) == 1]
    test = [f for i, f in enumerate(frames) if i % 2 == 1 and len(f) > 1]
    d = tmp_path_factory.mktemp("sic")
    write(str(d / "train.xyz"), train, format="extxyz")
    return d, train, test


def _compare(calc_a, calc_b, frames, tol=1e-8):
    """Max differences relative to the largest magnitude of each quantity over the frames."""
    diff = {"energy": 0.0, "forces": 0.0, "virial": 0.0}
    scale = {"energy": 0.0, "forces": 0.0, "virial": 0.0}
    for atoms in frames:
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = calc_a, calc_b
        got = {"energy": (np.array(a.get_potential_energy()), np.array(b.get_potential_energy())),
               "forces": (a.get_forces(), b.get_forces()),
               "virial": (-a.get_stress(voigt=False) * a.get_volume(), -b.get_stress(voigt=False) * b.get_volume())}
        for key, (va, vb) in got.items():
            diff[key] = max(diff[key], float(np.abs(va - vb).max()))
            scale[key] = max(scale[key], float(np.abs(va).max()))
    worst = {k: diff[k] / max(scale[k], 1e-300) for k in diff}
    assert all(v < tol for v in worst.values()), worst
    return worst


@pytest.mark.parametrize("separate", [True, False])
def test_quippy_loads_our_multispecies_model(quippy, sic_split, separate):
    from quippy.potential import Potential
    d, train, test = sic_split
    gp = d / f"gp_{separate}.xml"
    fit = GapFit(gap=SIC_2B, gp_file=str(gp), sparse_separate_file=separate, quiet=True, **SIC_OPTIONS)
    fit.fit(str(d / "train.xyz"))
    assert len(fit.alpha_) == 3  # Si-Si, Si-C, C-C
    worst = _compare(Potential(param_filename=str(gp)), GapCalculator(str(gp)), test)
    print("quippy vs gapfit on held-out SiC frames (max relative difference):", worst)


def test_xml_format(sic_split):
    d, train, _ = sic_split
    gp = d / "fmt.xml"
    GapFit(gap=SIC_2B, gp_file=str(gp), quiet=True, **SIC_OPTIONS).fit(str(d / "train.xyz"))
    text = gp.read_text()
    lines = text.splitlines()
    label = re.fullmatch(r"<(GAP_\d+_\d+_\d+_-?\d+_\d+_\d+_\d+_\d+)>", lines[0]).group(1)
    assert lines[1] == f'<Potential label="{label}" init_args="IP GAP label={label}"/>'
    assert lines[-1] == f"</{label}>"
    assert "<?xml" not in text
    assert max(len(l) for l in lines) < 1024
    assert text.count("<e0 Z=") == 118
    assert 'gap_version="' in lines[2] and 'fitted="T"' in text
    for fname, md5 in re.findall(r'sparseX_filename="([^"]+)" sparseX_md5sum="([0-9a-f]{32})"', text):
        data = (d / fname).read_bytes()
        assert hashlib.md5(data).hexdigest() == md5
        assert all(re.fullmatch(r"-?\d\.\d{20}e[+-]\d\d", v) for v in data.decode().split())
    # XYZ_data keeps every line of the training file, long lines included
    model_text = re.search(r"<XYZ_data>(.*)</XYZ_data>", text, re.S).group(1)
    copied = re.findall(r"<!\[CDATA\[(.*?)\]\]>(?:<!--\n-->)?", model_text)
    joined = "".join(c if not c.endswith("\n") else c for c in copied)
    assert (d / "train.xyz").read_text().splitlines()[1][:100] in joined


def test_our_calculator_on_gap_fit_model(quippy, gap_fit, tmp_path):
    from quippy.potential import Potential
    shutil.copy(QUIP_TESTS / "SiC.np1.xyz", tmp_path / "train.xyz")
    import subprocess
    cmd = [gap_fit, "at_file=train.xyz", "gap={" + SIC_2B + "}", "energy_parameter_name=dft_energy",
           "force_parameter_name=dft_force", "virial_parameter_name=dft_virial", "default_sigma={0.01 0.3 0.1 0.0}",
           "sparse_jitter=1e-6", "do_copy_at_file=F", "gp_file=gap_fit.xml", "rnd_seed=1"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    frames = [f for f in read(str(tmp_path / "train.xyz"), ":") if len(f) > 1][::4]
    worst = _compare(Potential(param_filename=str(tmp_path / "gap_fit.xml")),
                     GapCalculator(str(tmp_path / "gap_fit.xml")), frames)
    print("quippy vs gapfit's calculator on gap_fit's model:", worst)


def test_model_round_trip(sic_split):
    d, train, _ = sic_split
    gp = d / "rt.xml"
    fit = GapFit(gap=SIC_2B, gp_file=str(gp), quiet=True, **SIC_OPTIONS).fit(str(d / "train.xyz"))
    model = read_model(str(gp))
    for c, a, x in zip(model.coordinates, fit.alpha_, fit.sparse_x_):
        assert np.array_equal(c.alpha, a) and np.array_equal(c.sparse_x, x)
    assert np.array_equal(model.e0, fit.e0_)


SOAP = ("soap l_max=4 n_max=4 atom_sigma=0.5 cutoff=4.0 cutoff_transition_width=0.5 central_weight=1.0 "
        "delta=0.2 covariance_type=dot_product zeta=2 n_sparse=40 sparse_method=cur_points")


@pytest.mark.parametrize("system", ["SiC", "InP"])
def test_quippy_loads_multispecies_soap_models(quippy, tmp_path, system):
    """soap + distance_2b, add_species (one soap per species); quippy and gapfit agree on held-out frames."""
    from quippy.potential import Potential
    if system == "SiC":
        frames = read(str(QUIP_TESTS / "SiC.np1.xyz"), ":")
        opts = dict(SIC_OPTIONS)
    else:
        from conftest import DATA
        frames = read(str(DATA / "inp_snap" / "InP_subset.xyz"), ":")
        opts = dict(energy_parameter_name="energy", force_parameter_name="forces", virial_parameter_name="virial",
                    e0_method="average", default_sigma=[0.002, 0.1, 0.05, 0.0], sparse_jitter=1e-8, rnd_seed=1)
    train = [f for i, f in enumerate(frames) if i % 3 != 1 or len(f) == 1]
    test = [f for i, f in enumerate(frames) if i % 3 == 1 and len(f) > 1][:8]
    write(str(tmp_path / "train.xyz"), train, format="extxyz")
    gp = tmp_path / "gp.xml"
    fit = GapFit(gap=[SIC_2B, SOAP], gp_file=str(gp), quiet=True, **opts).fit(str(tmp_path / "train.xyz"))
    assert len(fit.alpha_) == 3 + 2  # three pairs, two soap species
    text = gp.read_text()
    assert "n_species=2" in text and "species_Z={" in text
    worst = _compare(Potential(param_filename=str(gp)), GapCalculator(str(gp)), test)
    print(f"{system} soap+2b model, quippy vs gapfit on held-out frames:", worst)
