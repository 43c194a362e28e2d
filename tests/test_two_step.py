"""The two-step workflow: sparsify_only_no_fit=T, then the fit from the written sparse points.

* gapfit's own first step writes the .input files and gp.xml.fit.cfg; the second step under
  mpirun -n 2 gives the one-step serial fit (α within 1e-6 relative), multi-species included.
* gap_fit's first step, converted by scripts/gap_prepare_sparsex_input.py, gives gapfit the
  sparse points gap_fit chose; the result equals gap_fit's own one-step fit (|Δα| < 1e-5).
"""

import shutil
import subprocess
import sys

import numpy as np

from gapfit.model.gap_xml import read_model

from conftest import QUIP_TESTS, ROOT, mpi_env, run_gapfit

GAP = ("{distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0 theta_uniform=0.5 n_sparse=10 "
       "sparse_method=uniform : soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=3.5 covariance_type=dot_product "
       "delta=0.5 zeta=2 n_sparse=20 sparse_method=cur_points}")
OPTIONS = ["energy_parameter_name=dft_energy", "force_parameter_name=dft_force", "virial_parameter_name=dft_virial",
           "default_sigma={0.01 1.0 0.5 0.0}", "sparse_jitter=1e-5", "rnd_seed=3", "gap=" + GAP]


def test_gapfit_two_step_under_mpi(tmp_path):
    shutil.copy(QUIP_TESTS / "SiC.np1.xyz", tmp_path / "train.xyz")
    proc = run_gapfit(["at_file=train.xyz", "gp_file=one_step.xml", *OPTIONS], tmp_path)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "sparse").mkdir()
    proc = run_gapfit(["at_file=train.xyz", "gp_file=sparse/gp.xml", "sparsify_only_no_fit=T", *OPTIONS], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "gapfit config_file=sparse/gp.xml.fit.cfg" in proc.stdout
    cfg = (tmp_path / "sparse" / "gp.xml.fit.cfg").read_text()
    assert cfg.count("sparse_method=file") == 5 and "sparsify_only_no_fit" not in cfg  # 3 pairs + 2 soap
    proc = run_gapfit(["config_file=sparse/gp.xml.fit.cfg", "gp_file=two_step.xml"], tmp_path, mpi_ranks=2)
    assert proc.returncode == 0, proc.stderr
    one, two = read_model(str(tmp_path / "one_step.xml")), read_model(str(tmp_path / "two_step.xml"))
    assert len(one.coordinates) == len(two.coordinates) == 5
    for a, b in zip(one.coordinates, two.coordinates):
        assert np.abs(a.sparse_x - b.sparse_x).max() < 1e-15
        assert np.abs(a.alpha - b.alpha).max() <= 1e-6 * np.abs(a.alpha).max()
        assert "add_species=F" in b.descriptor


def test_gap_fit_first_step_gapfit_second(tmp_path, gap_fit):
    shutil.copy(QUIP_TESTS / "Si.np1.xyz", tmp_path / "train.xyz")
    common = ["at_file=train.xyz", "do_copy_at_file=F", *OPTIONS]
    for extra in (["gp_file=gap_fit.xml"], ["gp_file=sparse.xml", "sparsify_only_no_fit=T"]):
        proc = subprocess.run([gap_fit, *common, *extra], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gap_prepare_sparsex_input.py"), "sparse.xml"],
                          cwd=tmp_path, capture_output=True, text=True, env=mpi_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = run_gapfit(["config_file=sparse.xml.fit.cfg", "gp_file=gapfit.xml"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    ref, ours = read_model(str(tmp_path / "gap_fit.xml")), read_model(str(tmp_path / "gapfit.xml"))
    for k, (a, b) in enumerate(zip(ref.coordinates, ours.coordinates)):
        dx, da = np.abs(a.sparse_x - b.sparse_x).max(), np.abs(a.alpha - b.alpha).max()
        print(f"coordinate {k + 1}: gap_fit one-step vs gap_fit sparsify + gapfit fit: max|ΔsparseX| {dx:.1e}, "
              f"max|Δα| {da:.1e}")
        assert dx < 1e-8 and da < 1e-5
