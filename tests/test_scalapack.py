"""The ScaLAPACK QR solve (gapfit.linalg.scalapack), run for real under mpirun.

The mpirun tests launch tests/mpi_scripts/scalapack_check.py, which compares qr_solve
with numpy.linalg.lstsq on rank 0.  They skip when mpirun or a ScaLAPACK library is
missing; every launch has a timeout so that nothing can hang the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gapfit.runtime.parallel import SerialComm
from gapfit.linalg import scalapack

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "tests" / "mpi_scripts" / "scalapack_check.py"
TIMEOUT = 60


def _env(**extra):
    env = dict(os.environ)
    env.update({
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    env.update(extra)
    return env


def run_check(n_procs, *args, env=None):
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("mpirun is not installed")
    over = ["--oversubscribe"] if n_procs > (os.cpu_count() or 1) else []
    cmd = [mpirun, "-n", str(n_procs), *over, sys.executable, str(CHECK), *map(str, args)]
    try:
        return subprocess.run(cmd, cwd=str(ROOT), env=env or _env(), capture_output=True, text=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mpirun timed out after {TIMEOUT} s: {' '.join(cmd)}\n{exc.stdout}\n{exc.stderr}")


@pytest.fixture(scope="module")
def mpi_scalapack():
    """Skip unless mpirun works and a ScaLAPACK loads; runs the start-up self-test on 2 ranks."""
    proc = run_check(2, "--selftest", "--rows", 40, "--cols", 5, "--mb", 4, "--nb", 2)
    if "ScalapackLoadError" in proc.stderr:
        pytest.skip("no ScaLAPACK library: " + proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SELFTEST ok" in proc.stdout and "ScaLAPACK: " in proc.stdout, proc.stdout
    return proc.stdout


def _assert_ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RESULT OK" in proc.stdout, proc.stdout + proc.stderr


# (ranks, rows, cols, mb, nb, extra): mb < cols puts R's rows on several ranks; nb > mb;
# nb = 0 -> n_cols; cols not a multiple of nb; mb = 0 -> the whole local block; nearly square.
CASES = [
    (2, 700, 60, 16, 100, ()),
    (2, 700, 60, 8, 32, ()),
    (2, 700, 61, 0, 0, ()),
    (2, 700, 61, 4, 7, ("--return-r",)),
    (3, 700, 60, 8, 32, ()),
    (3, 500, 61, 5, 0, ()),
    (3, 700, 61, 0, 100, ("--return-r",)),
    (3, 80, 61, 4, 100, ()),
    (3, 300, 45, 2, 9, ()),
]


@pytest.mark.mpi
@pytest.mark.parametrize("n_procs,rows,cols,mb,nb,extra", CASES)
def test_qr_solve_matches_lstsq(mpi_scalapack, n_procs, rows, cols, mb, nb, extra):
    proc = run_check(n_procs, "--rows", rows, "--cols", cols, "--mb", mb, "--nb", nb, *extra)
    _assert_ok(proc)


@pytest.mark.mpi
def test_selftest_banner(mpi_scalapack):
    line = [ln for ln in mpi_scalapack.splitlines() if ln.startswith("SELFTEST")][0]
    assert "grid 2x1" in line


@pytest.mark.mpi
@pytest.mark.parametrize("n_procs,column,extra", [
    (2, 5, ()),                       # inside a 16-row block: netlib pdtrtrs misses it, our check does not
    (3, 18, ()),                      # R(18,18) on the second rank
    (2, 2, ("--no-diag-check",)),     # left to pdtrtrs's own info > 0
])
def test_singular_r_is_reported(mpi_scalapack, n_procs, column, extra):
    proc = run_check(n_procs, "--mb", 16, "--nb", 8, "--singular", column, *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SINGULAR ok" in proc.stdout, proc.stdout
    assert f"diagonal element {column} of 60" in proc.stdout
    assert "sparse_jitter" in proc.stdout


@pytest.mark.mpi
def test_bad_argument_on_one_rank_raises_everywhere(mpi_scalapack):
    proc = run_check(3, "--bad-rank", 1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BADARG ok" in proc.stdout, proc.stdout


@pytest.mark.mpi
def test_loader_override_error_is_one_line(mpi_scalapack):
    proc = run_check(1, env=_env(GAPFIT_SCALAPACK_LIB="/nonexistent/libscalapack.so"))
    assert proc.returncode != 0
    last = [ln for ln in proc.stderr.splitlines() if "ScalapackLoadError" in ln]
    assert last and "/nonexistent/libscalapack.so" in last[-1] and "GAPFIT_SCALAPACK_LIB" in last[-1], proc.stderr


# ---------------------------------------------------------------------------------------------
# In-process tests (no MPI, no ScaLAPACK library needed)


def test_overflow_check_huge_local_block():
    with pytest.raises(scalapack.ScalapackSizeError, match="more MPI ranks") as exc:
        scalapack.check_int32_sizes(n_procs=4, n_local_rows=3_000_000, n_cols=1000, mb=1000, nb=100)
    assert isinstance(exc.value, OverflowError)
    assert "2^31-1" in str(exc.value)


def test_overflow_check_global_rows_and_workspace():
    with pytest.raises(scalapack.ScalapackSizeError, match="global row count"):
        scalapack.check_int32_sizes(n_procs=2000, n_local_rows=2_000_000, n_cols=10, mb=1000, nb=10)
    with pytest.raises(scalapack.ScalapackSizeError, match="pdgeqrf workspace"):
        scalapack.check_int32_sizes(n_procs=2, n_local_rows=1000, n_cols=1000, mb=10, nb=50_000)
    with pytest.raises(scalapack.ScalapackSizeError, match="query"):
        scalapack.check_int32_sizes(2, 1000, 100, 10, 10, lwork={"pdormqr workspace (query)": 2**31})
    with pytest.raises(scalapack.ScalapackSizeError, match="R gathered"):
        scalapack.check_int32_sizes(64, 40_000, 50_000, 1000, 100, return_r=True)


def test_overflow_check_passes_realistic_sizes():
    scalapack.check_int32_sizes(n_procs=64, n_local_rows=200_000, n_cols=10_000, mb=1000, nb=100, return_r=True)


def test_info_translation():
    msg = scalapack.translate_info("pdtrtrs", 7, 50)
    assert "diagonal element 7 of 50" in msg and "sparse_jitter" in msg and "duplicate sparse points" in msg
    assert "square blocks" in scalapack.translate_info("pdtrtrs", -904)
    assert "entry 9 (LLD) of argument 6 (DESCA)" in scalapack.translate_info("pdgeqrf", -609)
    assert "argument 16 (LWORK)" in scalapack.translate_info("pdormqr", -16)


def test_serial_comm_falls_back_to_lapack():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 20))
    b = rng.standard_normal(200)
    ref = np.linalg.lstsq(a, b, rcond=None)[0]
    x, r = scalapack.qr_solve(SerialComm(), np.asfortranarray(a), b.copy(), 20, 0, return_r=True)
    assert np.max(np.abs(x - ref)) / np.max(np.abs(ref)) < 1e-12
    assert np.allclose(r.T @ r, a.T @ a)


def test_serial_rejects_c_order():
    with pytest.raises(TypeError, match="Fortran"):
        scalapack.qr_solve(SerialComm(), np.zeros((10, 3)), np.zeros(10), 3, 0)


def test_load_needs_mpi():
    with pytest.raises(scalapack.ScalapackLoadError, match="MPI"):
        scalapack.load_scalapack(SerialComm())
    assert scalapack.scalapack_info(SerialComm())["library"] is None


def test_owned_global_rows_partition():
    P, nl, mb = 3, 12, 4
    rows = np.concatenate([scalapack.owned_global_rows(nl, mb, r, P) for r in range(P)])
    assert sorted(rows.tolist()) == list(range(P * nl))
    assert scalapack.owned_global_rows(nl, mb, 1, P)[:5].tolist() == [4, 5, 6, 7, 16]
