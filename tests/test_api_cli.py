"""The Python API (in-memory structures, Python values) and CLI conveniences."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read

from gapfit import GapFit
from gapfit.calculator import GapCalculator
from gapfit.gap_xml import read_model

from conftest import QUIP_TESTS, mpi_env, run_gapfit

GAP = "distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0 theta_uniform=0.5 n_sparse=12 sparse_method=uniform"
OPTS = ["energy_parameter_name=dft_energy", "force_parameter_name=dft_force", "virial_parameter_name=dft_virial",
        "default_sigma={0.01 1.0 0.5 0.0}", "sparse_jitter=1e-4", "rnd_seed=1"]


def test_api_atoms_equals_cli_file(tmp_path):
    shutil.copy(QUIP_TESTS / "Si.np1.xyz", tmp_path)
    proc = run_gapfit(["at_file=Si.np1.xyz", "gap={" + GAP + "}", "gp_file=cli.xml", *OPTS], tmp_path)
    assert proc.returncode == 0, proc.stderr
    frames = read(str(QUIP_TESTS / "Si.np1.xyz"), ":")
    fit = GapFit(gap=GAP, energy_parameter_name="dft_energy", force_parameter_name="dft_force",
                 virial_parameter_name="dft_virial", default_sigma=[0.01, 1.0, 0.5, 0.0], sparse_jitter=1e-4,
                 rnd_seed=1, quiet=True).fit(frames)
    assert not list(tmp_path.glob("gap_new.xml"))  # the API writes only when asked
    cli = read_model(str(tmp_path / "cli.xml"))
    assert np.allclose(cli.coordinates[0].alpha, fit.alpha_[0], rtol=1e-10, atol=1e-12)
    assert np.array_equal(cli.coordinates[0].sparse_x, fit.sparse_x_[0])
    calc = fit.calculator()
    at = frames[5].copy()
    at.calc = calc
    ref = frames[5].copy()
    ref.calc = GapCalculator(str(tmp_path / "cli.xml"))
    assert at.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-12)
    written = fit.write_xml(str(tmp_path / "api.xml"))
    assert str(tmp_path / "api.xml") in written
    assert np.array_equal(read_model(str(tmp_path / "api.xml")).coordinates[0].alpha, fit.alpha_[0])


def test_api_option_string_and_dict():
    text = " ".join(["gap={" + GAP + "}", *OPTS])
    a = GapFit(text, quiet=True).fit(str(QUIP_TESTS / "Si.np1.xyz"))
    b = GapFit({"gap": GAP, "energy_parameter_name": "dft_energy", "force_parameter_name": "dft_force",
                "virial_parameter_name": "dft_virial", "default_sigma": [0.01, 1.0, 0.5, 0.0],
                "sparse_jitter": 1e-4, "rnd_seed": 1}, quiet=True).fit(str(QUIP_TESTS / "Si.np1.xyz"))
    assert np.array_equal(a.alpha_[0], b.alpha_[0])


def test_config_file_run(tmp_path):
    shutil.copy(QUIP_TESTS / "Si.np1.xyz", tmp_path)
    (tmp_path / "fit.cfg").write_text("# Si two-body fit\nat_file=Si.np1.xyz\n"
                                      "gap={" + GAP + "}  # one descriptor\n" + "\n".join(OPTS) + "\ngp_file=cfg.xml\n")
    proc = run_gapfit(["config_file=fit.cfg"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    model = read_model(str(tmp_path / "cfg.xml"))
    assert "#" not in model.command_line and "at_file=Si.np1.xyz" in model.command_line


def test_help_and_version():
    env = mpi_env()
    out = subprocess.run([sys.executable, "-m", "gapfit", "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "default_kernel_regularisation / default_sigma" in out.stdout
    out = subprocess.run([sys.executable, "-m", "gapfit"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "mandatory" in out.stderr


def test_export_covariance_and_condition_number(tmp_path):
    shutil.copy(QUIP_TESTS / "Si.np1.xyz", tmp_path)
    proc = run_gapfit(["at_file=Si.np1.xyz", "gap={" + GAP + "}", "gp_file=gp.xml", "export_covariance=T",
                       "condition_number_norm=I", *OPTS], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Condition number (log10)" in proc.stdout
    r_file = list(tmp_path.glob("gp.xml.R.*"))
    assert len(r_file) == 1
    r = np.loadtxt(r_file[0]).reshape(12, 12, order="F")
    assert np.allclose(np.tril(r, -1), 0) and np.all(np.diag(r) != 0)


def test_large_frames_in_pieces_give_the_same_model(monkeypatch):
    """A frame bigger than the chunk budget is processed centre-atom group by group."""
    import gapfit.api as api
    kw = dict(gap=[GAP, "soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=3.5 covariance_type=dot_product delta=0.5 "
                        "zeta=2 n_sparse=20 sparse_method=cur_points"],
              energy_parameter_name="dft_energy", force_parameter_name="dft_force",
              virial_parameter_name="dft_virial", default_sigma=[0.01, 1, 0.5, 0], sparse_jitter=1e-5, rnd_seed=3,
              quiet=True)
    whole = GapFit(**kw).fit(str(QUIP_TESTS / "SiC.np1.xyz"))
    monkeypatch.setattr(api, "CHUNK_BYTES", 200_000)  # every 64-atom frame is split
    pieces = GapFit(**kw).fit(str(QUIP_TESTS / "SiC.np1.xyz"))
    for a, b in zip(whole.alpha_, pieces.alpha_):
        assert np.abs(a - b).max() <= 1e-8 * np.abs(a).max()


def test_dryrun_estimates_memory_and_writes_nothing(tmp_path):
    shutil.copy(QUIP_TESTS / "SiC.np1.xyz", tmp_path)
    proc = run_gapfit(["at_file=SiC.np1.xyz", "gap={" + GAP + " : soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=3.5 "
                       "covariance_type=dot_product delta=0.5 zeta=2 n_sparse=20 sparse_method=cur_points}",
                       "gp_file=gp.xml", "dryrun=T", *OPTS], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Memory estimate" in out and "descriptor gradients of the whole data set" in out
    assert "smallest P that fits this machine: 1" in out
    assert not list(tmp_path.glob("gp.xml*"))
