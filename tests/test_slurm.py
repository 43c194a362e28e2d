"""The SLURM batch example, submitted to a single-node SLURM started on localhost.

Starts munged, slurmctld and slurmd (scripts/local_slurm.sh), submits
examples/slurm/gapfit_job.sbatch with ``sbatch --wait`` (2 ranks, srun --mpi=pmix),
checks that the XML it wrote equals a serial fit's, and stops the daemons.
"""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from gapfit import GapFit
from gapfit.gap_xml import read_model

from conftest import QUIP_TESTS, ROOT, mpi_env

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


@pytest.fixture
def local_slurm(tmp_path):
    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None or shutil.which("munged") is None:
        pytest.skip("SLURM is not installed (bash scripts/setup.sh installs slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM needs root")
    state = tmp_path / "slurm"
    script = ROOT / "scripts" / "local_slurm.sh"
    proc = subprocess.run(["bash", str(script), "start", str(state)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield state / "slurm.conf"
    finally:
        subprocess.run(["bash", str(script), "stop", str(state)], capture_output=True, timeout=60)


def _job_state(job, env):
    """(JobState, Reason) of a job, from scontrol (no accounting database is needed)."""
    proc = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True, timeout=30)
    fields = dict(w.split("=", 1) for w in proc.stdout.split() if "=" in w)
    return fields.get("JobState", "UNKNOWN"), fields.get("Reason", "")


def _wait_for_job(job, env, state_dir, pending_limit=30.0, run_limit=300.0):
    """Wait for a job to end; fail within seconds, with slurmctld's reason, if it cannot start.

    On an idle single-node cluster a job starts at once: one still pending after ``pending_limit``
    seconds never will (e.g. a node configured with fewer CPUs than the job asks for).
    """
    start = time.monotonic()
    while True:
        state, reason = _job_state(job, env)
        waited = time.monotonic() - start
        if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return state, reason
        if (state == "PENDING" and waited > pending_limit) or waited > run_limit:
            subprocess.run(["scancel", job], env=env, capture_output=True, timeout=30)
            log = (state_dir / "slurmctld.log").read_text(errors="replace").splitlines()[-15:]
            nodes = subprocess.run(["sinfo", "-N", "-o", "%N %T %c %E"], env=env, capture_output=True,
                                   text=True, timeout=30).stdout
            pytest.fail(f"job {job} still {state} after {waited:.0f} s, reason: {reason}\n"
                        f"sinfo:\n{nodes}slurmctld.log (end):\n" + "\n".join(log))
        time.sleep(0.5)


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
    state, reason = _wait_for_job(job, env, local_slurm.parent)
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
