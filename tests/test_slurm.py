"""The SLURM batch example, submitted to a single-node SLURM started on localhost.

Starts munged, slurmctld and slurmd (scripts/local_slurm.sh), submits
examples/slurm/gapfit_job.sbatch (2 ranks, srun --mpi=pmix) with another options file,
checks that the XML it wrote equals a serial fit's, and stops the daemons.
"""

import subprocess
import sys
import time

import numpy as np
import pytest

from gapfit import GapFit
from gapfit.model.gap_xml import read_model

from conftest import QUIP_TESTS, ROOT, mpi_env, wait_for_slurm_job

pytestmark = pytest.mark.mpi

CONFIG = """# options for the SLURM test
at_file={xyz}
energy_parameter_name=dft_energy force_parameter_name=dft_force virial_parameter_name=dft_virial
default_sigma={{0.01 1.0 0.5 0.0}}
sparse_jitter=1e-4
gap={{distance_2b cutoff=5.0 cutoff_transition_width=1.0 covariance_type=ard_se delta=1.0 theta_uniform=0.5
     n_sparse=20 sparse_method=uniform}}
rnd_seed=1
do_copy_at_file=F
gp_file=slurm.xml
"""


def test_sbatch_example_matches_serial(tmp_path, local_slurm, monkeypatch):
    work = tmp_path / "job"
    work.mkdir()
    (work / "fit.cfg").write_text(CONFIG.format(xyz=QUIP_TESTS / "SiC.np1.xyz"))
    env = mpi_env()
    env["SLURM_CONF"] = str(local_slurm)
    env["GAPFIT"] = f"{sys.executable} -m gapfit"
    cmd = ["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", f"--chdir={work}", "--export=ALL",
           str(ROOT / "examples" / "slurm" / "gapfit_job.sbatch")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = proc.stdout.strip().split(";")[0]
    state, reason = wait_for_slurm_job(job, env, local_slurm.parent)
    out = "".join(p.read_text(errors="replace") for p in work.glob("gapfit-*.out"))
    assert state == "COMPLETED", f"job {job} ended {state} ({reason})\n{out}"
    assert "2 ranks on 1 node(s)" in out and "grid 2x1" in out
    model = read_model(str(work / "slurm.xml"))
    (work / "serial").mkdir()
    monkeypatch.chdir(work / "serial")
    serial = GapFit(config_file=str(work / "fit.cfg"), gp_file="serial.xml", quiet=True)
    serial.fit()
    for c, a, x in zip(model.coordinates, serial.alpha_, serial.sparse_x_):
        assert np.array_equal(c.sparse_x, x)
        assert np.abs(c.alpha - a).max() <= 1e-6 * np.abs(a).max()


CHECKPOINT_CONFIG = """# a fit that checkpoints: the job script requeues it when SLURM signals the time limit
at_file={xyz}
e0_method=average default_sigma={{0.002 0.1 0.05 0.0}} sparse_jitter=1e-8 force_parameter_name=forces
gap={{distance_2b cutoff=5.0 covariance_type=ard_se delta=1.0 theta_uniform=0.75 n_sparse=15 sparse_method=uniform}}
rnd_seed=1 do_copy_at_file=F
linear_solver=streaming row_chunk_mb=0.1
checkpoint_file=fit.ckpt
gp_file=slurm.xml
"""


def test_sbatch_checkpoint_and_requeue(tmp_path, local_slurm):
    """The time-limit signal (here sent at once with scancel --signal=USR1 --batch, the way
    --signal=B:USR1@300 delivers it) makes the job save a checkpoint and requeue itself; the
    requeued job resumes and writes the model of an uninterrupted run with as many ranks."""
    from ase.io import read, write
    from conftest import TA_XYZ, run_gapfit
    work = tmp_path / "job"
    work.mkdir()
    write(str(work / "train.xyz"), read(str(TA_XYZ), "::6"))
    (work / "fit.cfg").write_text(CHECKPOINT_CONFIG.format(xyz="train.xyz"))
    env = mpi_env()
    env["SLURM_CONF"] = str(local_slurm)
    env["GAPFIT"] = f"{sys.executable} -m gapfit"
    env["GAPFIT_TEST_CHUNK_DELAY"] = "0.3"  # a fold of several seconds, to signal in the middle of
    cmd = ["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", f"--chdir={work}", "--export=ALL",
           str(ROOT / "examples" / "slurm" / "gapfit_job.sbatch")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = proc.stdout.strip().split(";")[0]
    out_file = work / f"gapfit-{job}.out"
    deadline = time.monotonic() + 120
    while "Covariance K_NM, folded" not in (out_file.read_text(errors="replace") if out_file.exists() else ""):
        assert time.monotonic() < deadline, "the job never reached the folding phase"
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=env, check=True, timeout=30)
    state, reason = wait_for_slurm_job(job, env, local_slurm.parent, requeue_release=True)
    out = out_file.read_text(errors="replace")
    assert state == "COMPLETED", f"job {job} ended {state} ({reason})\n{out}"
    assert "asking gapfit to save its checkpoint and stop" in out
    assert "gapfit: stopped by SIGUSR1 (rank " in out and "requeueing the job" in out, out
    assert "(start 2)" in out and "Resuming from checkpoint 'fit.ckpt'" in out, out
    # the same fit, uninterrupted, on two ranks
    proc = run_gapfit(["config_file=fit.cfg", "checkpoint_file=ref.ckpt", "gp_file=ref.xml"], work, mpi_ranks=2)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    a, b = read_model(str(work / "slurm.xml")), read_model(str(work / "ref.xml"))
    for ca, cb in zip(a.coordinates, b.coordinates):
        assert np.array_equal(ca.sparse_x, cb.sparse_x)
        assert np.array_equal(ca.alpha, cb.alpha)
