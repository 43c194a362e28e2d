"""Shared fixtures: data paths, the oracle (quippy, gap_fit), and running the gapfit CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
QUIP_TESTS = DATA / "quip_gapfit_tests"
TA_XYZ = ROOT / "examples" / "data" / "Ta_snap_train.xyz"


# --- environments compared by value ---------------------------------------------------------
# Which member of a group of equivalent environments (equal to 1e-10) survives gap_fit's duplicate
# filter is decided by the last bit of their L1 norms, which differs between CPUs and between
# quippy, gap_fit and gapfit.  Tests compare such choices by value, never by position.
ENVIRONMENT_TOLERANCE = 1e-10


def same_environment(xa, xb, tol=ENVIRONMENT_TOLERANCE):
    """close[i, j]: row i of ``xa`` and row j of ``xb`` are the same environment (max |Δ| < tol)."""
    xa, xb = np.asarray(xa, float), np.asarray(xb, float)
    return cdist(xa.reshape(len(xa), -1), xb.reshape(len(xb), -1), "chebyshev") < tol


def environment_labels(x, tol=ENVIRONMENT_TOLERANCE):
    """Label each row of ``x`` by the first row that is the same environment as it."""
    return np.argmax(same_environment(x, x, tol), axis=1)


def shared_environments(xa, xb, tol=ENVIRONMENT_TOLERANCE):
    """How many rows of ``xa`` are the same environment as some row of ``xb``."""
    return int(same_environment(xa, xb, tol).any(axis=1).sum())


def mpi_env(threads: int = 1):
    """Environment for subprocesses that run gapfit under (or without) mpirun, as root too."""
    env = dict(os.environ)
    env.update({
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    return env


@pytest.fixture
def quip_data():
    return QUIP_TESTS


@pytest.fixture
def ta_xyz():
    return TA_XYZ


@pytest.fixture
def quippy():
    return pytest.importorskip("quippy", reason="quippy-ase (the oracle) is not installed")


def gap_fit_executable():
    candidates = [shutil.which("gap_fit"), os.path.join(os.path.dirname(sys.executable), "gap_fit")]
    for c in candidates:
        if c and os.path.exists(c):
            return c
    return None


@pytest.fixture
def gap_fit():
    exe = gap_fit_executable()
    if exe is None:
        pytest.skip("gap_fit (from quippy-ase) is not installed")
    return exe


def run_gapfit(args, cwd, timeout=600, env=None, mpi_ranks=None, extra_mpi=()):
    """Run ``python -m gapfit args`` (optionally under mpirun) and return the CompletedProcess."""
    cmd = [sys.executable, "-m", "gapfit", *map(str, args)]
    if mpi_ranks:
        mpirun = shutil.which("mpirun")
        if mpirun is None:
            pytest.skip("mpirun is not installed")
        over = ["--oversubscribe"] if mpi_ranks > (os.cpu_count() or 1) else []
        cmd = [mpirun, "-n", str(mpi_ranks), *over, *extra_mpi] + cmd
    return subprocess.run(cmd, cwd=str(cwd), env=env or mpi_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def gapfit_cli():
    return run_gapfit
