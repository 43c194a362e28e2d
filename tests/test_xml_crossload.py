"""GAP XML: format facts QUIP relies on, and cross-loading with quippy in both directions.

Tolerances: energies, forces and virials agree to 1e-8 relative (of the largest
magnitude in each comparison); in practice the agreement is ~1e-13.
"""

import hashlib
import io
import re
import shutil

import numpy as np
import pytest
from ase.io import read, write

from gapfit import GapFit
from gapfit.calculator import GapCalculator
from gapfit.gap_xml import read_model

from conftest import QUIP_TESTS, run_gapfit

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
    worst = {"energy": 0.0, "forces": 0.0, "virial": 0.0}
    for atoms in frames:
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = calc_a, calc_b
        ea, eb = a.get_potential_energy(), b.get_potential_energy()
        fa, fb = a.get_forces(), b.get_forces()
        va, vb = -a.get_stress(voigt=False) * a.get_volume(), -b.get_stress(voigt=False) * b.get_volume()
        worst["energy"] = max(worst["energy"], abs(ea - eb) / max(abs(ea), 1e-300))
        worst["forces"] = max(worst["forces"], np.abs(fa - fb).max() / max(np.abs(fa).max(), 1e-300))
        worst["virial"] = max(worst["virial"], np.abs(va - vb).max() / max(np.abs(va).max(), 1e-300))
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
