"""Distributed least squares by ScaLAPACK QR: our own ctypes binding (no scalapy etc.).

This is gap_fit's MPI solve (``ScaLAPACK_matrix_QR_solve``; Klawohn et al., JCP 159,
174108 (2023), §III B) on a P×1 BLACS process grid:

* every rank holds the same number ``n_local_rows`` of rows of the tall matrix A
  (its own rows, padded with zero rows to a common multiple of the row block ``mb``)
  and of b; the global matrix is (P·n_local_rows) × n_cols, block-cyclic by rows in
  blocks of ``mb`` — with one process column a rank's local storage is exactly its
  own rows, and row order does not matter for least squares;
* ``pdgeqrf`` → ``pdormqr('L','T')`` (Qᵀb) → ``pdtrtrs('U','N','N')`` on the leading
  n_cols × n_cols triangle.  pdtrtrs demands square blocks (MB = NB, else
  ``info = -904``); with a single process column the local storage does not depend
  on NB, so the same buffer is re-described with NB = MB for that call (the paper's
  "trick", gap_fit's "cheat").

Public API::

    load_scalapack(comm) -> ScalapackLibrary          # cached
    scalapack_info(comm, mb=None, nb=None) -> dict    # for the banner
    limit_blas_threads(comm, n=None)                  # threadpoolctl cap (1 per rank under MPI)
    blacs_selftest(comm, timeout=30.0) -> float       # seconds; raises on a broken stack
    BlacsGrid(comm)                                   # P×1 grid; numroc, descinit, exit
    check_int32_sizes(n_procs, n_local_rows, n_cols, mb, nb, ...)
    qr_solve(comm, a_local, b_local, n_cols, mb, nb=100, return_r=False) -> x | (x, R)

Finding and loading the library is :mod:`gapfit.linalg.scalapack_library` (its names are
re-exported here).  Thread pinning is the caller's job: call :func:`limit_blas_threads` once after
start-up (it loads ScaLAPACK first, so that the BLAS it pulls in is capped too).

Only :mod:`gapfit.runtime.parallel` imports mpi4py.  Here the communicator object is used
for its collectives and its ``library`` string; which libmpi is loaded is read from
``/proc/self/maps``.  The BLACS grid is built on the system context
(``blacs_get(-1, 0)``, i.e. MPI_COMM_WORLD), so the communicator must be the world.

Every check that could fail on one rank only is agreed on by all ranks first (one
``allgather``), so an error is raised on every rank instead of leaving the others
blocked inside ScaLAPACK.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from ctypes import byref, c_char_p, c_int, c_size_t, c_void_p

import numpy as np

from .scalapack_library import (ENV_OVERRIDE, ScalapackError, ScalapackLibrary, ScalapackLoadError,  # noqa: F401
                                ScalapackSizeError, limit_blas_threads, load_scalapack, scalapack_info)
from .scalapack_sizes import (SINGULAR_ADVICE, check_int32_sizes, owned_global_rows, translate_info,
                              workspace_estimates)
from .serial import qr_solve as lapack_qr_solve

DEFAULT_NB = 32  # gapfit's mpi_blocksize_cols default (gap_fit: 100)
_CHECK_DIAG = True  # our own zero-diagonal test before pdtrtrs (tests switch it off to exercise pdtrtrs's info)

__all__ = [
    "ScalapackLoadError", "ScalapackError", "ScalapackSizeError", "ScalapackLibrary", "BlacsGrid",
    "load_scalapack", "scalapack_info", "limit_blas_threads", "blacs_selftest", "check_int32_sizes",
    "qr_solve", "owned_global_rows",
]


# --------------------------------------------------------------------------------------------
# Collective agreement on errors


_ERROR_KINDS = {"TypeError": TypeError, "ValueError": ValueError, "ScalapackError": ScalapackError,
                "ScalapackSizeError": ScalapackSizeError, "ScalapackLoadError": ScalapackLoadError}


def _agree(comm, local_error):
    """Raise on every rank if any rank has an error ((kind, message) or None); the first rank's wins."""
    _agree_seen(comm, comm.allgather(local_error) if comm.size > 1 else [local_error])


def _agree_seen(comm, errors):
    for rank, err in enumerate(errors):
        if err is not None:
            kind, msg = err
            if comm.size > 1 and any(e != err for e in errors):
                msg = f"rank {rank}: {msg}"
            exc = _ERROR_KINDS[kind](msg)
            exc.collective = True  # every rank raises it: the CLI prints it once, from rank 0
            raise exc


def _load_agreed(comm):
    """load_scalapack, but a failure on any rank raises on every rank."""
    lib, err = None, None
    try:
        lib = load_scalapack(comm)
    except ScalapackLoadError as exc:
        err = ("ScalapackLoadError", str(exc))
    _agree(comm, err)
    return lib


# --------------------------------------------------------------------------------------------
# BLACS grid


def _i(v):
    return c_int(int(v))


class BlacsGrid:
    """A P×1 BLACS process grid (row-major, ``nprow = P``, ``npcol = 1``) on the world.

    Use as a context manager, or call :meth:`exit` (``blacs_gridexit``; collective).
    Never calls ``blacs_exit`` (MPI belongs to mpi4py).
    """

    def __init__(self, comm, lib=None):
        self.comm = comm
        self.lib = lib or _load_agreed(comm)
        lib = self.lib
        mypnum, nprocs = c_int(-1), c_int(-1)
        lib.blacs_pinfo_(byref(mypnum), byref(nprocs))
        err = None
        if nprocs.value != comm.size or mypnum.value != comm.rank:
            err = ("ValueError",
                   f"BLACS sees process {mypnum.value} of {nprocs.value} but the communicator has rank "
                   f"{comm.rank} of {comm.size}: the ScaLAPACK grid is built on MPI_COMM_WORLD, so pass the "
                   f"world communicator")
        _agree(comm, err)
        ctxt = c_int(-1)
        lib.blacs_get_(byref(_i(-1)), byref(_i(0)), byref(ctxt))
        lib.blacs_gridinit_(byref(ctxt), c_char_p(b"R"), byref(_i(comm.size)), byref(_i(1)), c_size_t(1))
        self.ctxt = ctxt
        self._alive = True
        nprow, npcol, myrow, mycol = c_int(-1), c_int(-1), c_int(-1), c_int(-1)
        lib.blacs_gridinfo_(byref(ctxt), byref(nprow), byref(npcol), byref(myrow), byref(mycol))
        self.nprow, self.npcol, self.myrow, self.mycol = nprow.value, npcol.value, myrow.value, mycol.value
        err = None
        if (self.nprow, self.npcol, self.myrow, self.mycol) != (comm.size, 1, comm.rank, 0):
            err = ("ScalapackError",
                   f"BLACS grid is broken: gridinfo gave {self.nprow}x{self.npcol} at ({self.myrow},{self.mycol}), "
                   f"expected {comm.size}x1 at ({comm.rank},0); the library {self.lib.path} does not match "
                   f"the MPI in use ({self.lib.mpi_flavour})")
        try:
            _agree(comm, err)
        except Exception:
            self.exit()
            raise

    @property
    def shape(self):
        return (self.nprow, self.npcol)

    def numroc(self, n, nb, iproc=None, isrcproc=0, nprocs=None):
        """Local count of a dimension of length ``n`` in blocks ``nb`` (ScaLAPACK NUMROC)."""
        iproc = self.myrow if iproc is None else iproc
        nprocs = self.nprow if nprocs is None else nprocs
        return self.lib.numroc_(byref(_i(n)), byref(_i(nb)), byref(_i(iproc)), byref(_i(isrcproc)),
                                byref(_i(nprocs)))

    def descinit(self, m, n, mb, nb, lld, irsrc=0, icsrc=0):
        """An array descriptor ``(c_int*9)`` (raises ScalapackError with the translated info)."""
        desc = (c_int * 9)()
        info = c_int(0)
        self.lib.descinit_(desc, byref(_i(m)), byref(_i(n)), byref(_i(mb)), byref(_i(nb)), byref(_i(irsrc)),
                           byref(_i(icsrc)), byref(self.ctxt), byref(_i(lld)), byref(info))
        if info.value != 0:
            raise ScalapackError(translate_info("descinit", info.value), "descinit", info.value)
        return desc

    def exit(self):
        """Release the grid (``blacs_gridexit``); idempotent."""
        if getattr(self, "_alive", False):
            self._alive = False
            self.lib.blacs_gridexit_(byref(self.ctxt))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.exit()
        return False


# --------------------------------------------------------------------------------------------
# info codes


def _ptr(a):
    return c_void_p(a.ctypes.data)


def _check_info(comm, routine, info, n_cols=None):
    infos = comm.allgather(int(info)) if comm.size > 1 else [int(info)]
    nonzero = [v for v in infos if v != 0]
    if nonzero:
        neg = [v for v in nonzero if v < 0]
        code = neg[0] if neg else min(nonzero)
        raise ScalapackError(translate_info(routine, code, n_cols), routine, code)


def _lwork_from(work):
    """The workspace size a query returned, as a Python int (huge if garbage; checked collectively)."""
    value = float(work[0])
    if not np.isfinite(value) or value < 0:
        return 2**63
    return max(int(value), 1)


def _validate(comm, a_local, b_local, n_cols, mb, nb):
    """Local argument checks; returns (error or None, n_local_rows, mb, nb)."""
    if not isinstance(a_local, np.ndarray) or not isinstance(b_local, np.ndarray):
        return ("TypeError", "a_local and b_local must be numpy arrays"), 0, mb, nb
    if a_local.dtype != np.float64 or b_local.dtype != np.float64:
        return ("TypeError", f"a_local and b_local must be float64 (got {a_local.dtype}, {b_local.dtype})"), 0, mb, nb
    if a_local.ndim != 2 or b_local.ndim != 1:
        return ("TypeError", f"a_local must be 2-D and b_local 1-D (got shapes {a_local.shape}, {b_local.shape})"), \
            0, mb, nb
    if not a_local.flags.f_contiguous or not b_local.flags.f_contiguous:
        return ("TypeError", "a_local and b_local must be Fortran-contiguous (np.asfortranarray); "
                             "they are factorised in place, never copied"), 0, mb, nb
    if not a_local.flags.writeable or not b_local.flags.writeable:
        return ("TypeError", "a_local and b_local must be writeable (they are overwritten)"), 0, mb, nb
    nl = a_local.shape[0]
    if b_local.shape[0] != nl:
        return ("ValueError", f"a_local has {nl} rows but b_local has {b_local.shape[0]}"), nl, mb, nb
    if a_local.shape[1] != n_cols:
        return ("ValueError", f"a_local has {a_local.shape[1]} columns, n_cols is {n_cols}"), nl, mb, nb
    return None, nl, mb, nb


def qr_solve(comm, a_local, b_local, n_cols, mb, nb=DEFAULT_NB, return_r=False, timings=None, extras=None):
    """Least-squares solution of min ‖A x − b‖ for a tall A distributed by rows (ScaLAPACK QR).

    Parameters
    ----------
    comm : gapfit.runtime.parallel.MPIComm (or SerialComm)
        Every rank must call (collective).  With a serial communicator the solve is done by
        :func:`gapfit.linalg.serial.qr_solve` (LAPACK) on the local arrays.
    a_local : (n_local_rows, n_cols) float64, Fortran-contiguous
        This rank's rows, zero-padded; ``n_local_rows`` must be the same on every rank and a
        multiple of ``mb``.  **Overwritten** by the QR factors (never copied: a C-ordered or
        non-float64 array raises TypeError).
    b_local : (n_local_rows,) float64, contiguous
        This rank's right-hand side, zero-padded.  **Overwritten** by Qᵀb.
    n_cols : int
        Number of unknowns (M); must be ≤ P·n_local_rows.
    mb : int
        Row block size; 0 means ``n_local_rows`` (gap_fit's mpi_blocksize_rows=0).
    nb : int
        Column block size for pdgeqrf/pdormqr; 0 means ``n_cols``; default 100 (gap_fit).
        Values above n_cols are clamped to n_cols (they only cost workspace).
    return_r : bool
        Also return the upper-triangular R (n_cols × n_cols, on rank 0; None elsewhere),
        for gap_fit's export_covariance.
    timings : dict or None
        If given, filled with the seconds spent in each step.
    extras : dict or None
        If given, filled (on every rank) with ``residual_sq`` = ‖A x − b‖² (the tail of Qᵀb) and
        ``log_abs_r_diag`` = Σ log|R_ii|, for the log marginal likelihood.

    Returns
    -------
    x : (n_cols,) float64 on every rank, or ``(x, R)`` with ``return_r``.

    Raises ScalapackSizeError (32-bit overflow, before any ScaLAPACK call), ScalapackError
    (info ≠ 0, or R singular: an exactly zero diagonal element), TypeError/ValueError (bad
    arguments) — on every rank alike.
    """
    n_cols, mb, nb = int(n_cols), int(mb), int(nb)
    t_start = time.perf_counter()
    if not getattr(comm, "is_mpi", False):
        return _serial_solve(a_local, b_local, n_cols, return_r, extras)
    nl, mb, nb = _agreed_sizes(comm, a_local, b_local, n_cols, mb, nb, return_r)
    P = comm.size
    lib = _load_agreed(comm)
    t = time.perf_counter()
    with BlacsGrid(comm, lib) as grid:
        M = P * nl
        lld = max(1, nl)
        desc_a = grid.descinit(M, n_cols, mb, nb, lld)
        desc_b = grid.descinit(M, 1, mb, 1, lld)
        tau = np.zeros(max(1, grid.numroc(n_cols, nb, 0, 0, 1)), dtype=np.float64)
        calls = _Calls(lib, comm, M, n_cols, desc_a, desc_b, tau)
        lw_geqrf, lw_ormqr = _workspaces(calls, a_local, b_local, nl, mb, nb, return_r)
        work = np.zeros(max(lw_geqrf, lw_ormqr), dtype=np.float64)
        t = _lap(timings, "setup", t)
        calls.geqrf(a_local, work, lw_geqrf)
        t = _lap(timings, "pdgeqrf", t)
        calls.ormqr(a_local, b_local, work, lw_ormqr)
        del work
        t = _lap(timings, "pdormqr", t)
        # Rows of the leading triangle held here (global index g < n_cols), and R's diagonal.
        g_all = owned_global_rows(nl, mb, comm.rank, P)
        mine = np.nonzero(g_all < n_cols)[0]
        g_mine = g_all[mine]
        _check_r_diagonal(comm, a_local, mine, g_mine, n_cols)
        if extras is not None:  # before pdtrtrs overwrites the head of b: the tail of Qᵀb is the residual
            tail = b_local[g_all >= n_cols]
            head = np.abs(a_local[mine, g_mine])
            sums = comm.allreduce_sum(np.array([float(np.dot(tail, tail)), float(np.sum(np.log(head)))]))
            extras["residual_sq"], extras["log_abs_r_diag"] = float(sums[0]), float(sums[1])
        # The trick: the same local buffer, described with square MB x MB blocks (one process column).
        calls.trtrs(a_local, b_local, grid.descinit(M, n_cols, mb, mb, lld))
        t = _lap(timings, "pdtrtrs", t)
    x, r = _collect(comm, a_local, b_local, mine, g_mine, n_cols, return_r)
    _lap(timings, "collect", t)
    if timings is not None:
        timings["total"] = time.perf_counter() - t_start
    return (x, r) if return_r else x


def _agreed_sizes(comm, a_local, b_local, n_cols, mb, nb, return_r):
    """(n_local_rows, mb, nb) checked on every rank: any rank's argument error, or sizes that differ, raise
    on every rank alike; 0 block sizes resolved, nb clamped to n_cols, 32-bit sizes checked."""
    err, nl, mb, nb = _validate(comm, a_local, b_local, n_cols, mb, nb)
    # One exchange: any rank's local error, and the sizes, which must agree everywhere.
    seen = comm.allgather((err, nl, n_cols, mb, nb))
    _agree_seen(comm, [e for e, *_ in seen])
    sizes = [tuple(v) for _, *v in seen]
    if len(set(sizes)) != 1:
        raise ValueError("n_local_rows, n_cols, mb and nb must be the same on every rank (pad with zero rows); "
                         f"got (n_local_rows, n_cols, mb, nb) = {sizes}")
    P = comm.size
    # From here on every check sees identical values on every rank: plain raises are collective.
    mb = nl if mb == 0 else mb
    nb = n_cols if nb == 0 else nb
    if n_cols < 1:
        raise ValueError(f"n_cols must be at least 1 (got {n_cols})")
    if nl < 1:
        raise ValueError("every rank needs at least one (possibly zero) row: n_local_rows is 0")
    if mb < 1 or nb < 1:
        raise ValueError(f"block sizes must be positive (mb={mb}, nb={nb})")
    if nl % mb != 0:
        raise ValueError(f"the row block size mb={mb} must divide n_local_rows={nl} (pad with zero rows)")
    if n_cols > P * nl:
        raise ValueError(f"the system is underdetermined: {n_cols} unknowns but only {P}*{nl} = {P * nl} "
                         f"rows (including padding); QR least squares needs n_cols <= rows")
    nb = min(nb, n_cols)
    check_int32_sizes(P, nl, n_cols, mb, nb, return_r=return_r)
    return nl, mb, nb


class _Calls:
    """ScaLAPACK's pdgeqrf, pdormqr and pdtrtrs on one distributed A (its descriptors and τ), info checked."""

    def __init__(self, lib, comm, m, n_cols, desc_a, desc_b, tau):
        self.lib, self.comm, self.n_cols = lib, comm, n_cols
        self.desc_a, self.desc_b, self.tau = desc_a, desc_b, tau
        self.m_, self.n_, self.one, self.info = c_int(m), c_int(n_cols), c_int(1), c_int(0)

    def geqrf(self, a_local, work, lwork: int) -> None:
        self.lib.pdgeqrf_(byref(self.m_), byref(self.n_), _ptr(a_local), byref(self.one), byref(self.one),
                          self.desc_a, _ptr(self.tau), _ptr(work), byref(c_int(lwork)), byref(self.info))
        _check_info(self.comm, "pdgeqrf", self.info.value)

    def ormqr(self, a_local, b_local, work, lwork: int) -> None:
        one = self.one
        self.lib.pdormqr_(c_char_p(b"L"), c_char_p(b"T"), byref(self.m_), byref(one), byref(self.n_),
                          _ptr(a_local), byref(one), byref(one), self.desc_a, _ptr(self.tau), _ptr(b_local),
                          byref(one), byref(one), self.desc_b, _ptr(work), byref(c_int(lwork)), byref(self.info),
                          c_size_t(1), c_size_t(1))
        _check_info(self.comm, "pdormqr", self.info.value)

    def trtrs(self, a_local, b_local, desc_r) -> None:
        one = self.one
        self.lib.pdtrtrs_(c_char_p(b"U"), c_char_p(b"N"), c_char_p(b"N"), byref(self.n_), byref(one), _ptr(a_local),
                          byref(one), byref(one), desc_r, _ptr(b_local), byref(one), byref(one), self.desc_b,
                          byref(self.info), c_size_t(1), c_size_t(1), c_size_t(1))
        _check_info(self.comm, "pdtrtrs", self.info.value, self.n_cols)


def _workspaces(calls: _Calls, a_local, b_local, nl, mb, nb, return_r):
    """The workspace sizes of pdgeqrf and pdormqr: ScaLAPACK's queries, at least the documented minima."""
    q = np.zeros(1)
    calls.geqrf(a_local, q, -1)
    lw_geqrf = _lwork_from(q)
    calls.ormqr(a_local, b_local, q, -1)
    lw_ormqr = _lwork_from(q)
    err = None
    try:
        check_int32_sizes(calls.comm.size, nl, calls.n_cols, mb, nb, return_r=return_r,
                          lwork={"pdgeqrf workspace (query)": lw_geqrf, "pdormqr workspace (query)": lw_ormqr})
    except ScalapackSizeError as exc:
        err = ("ScalapackSizeError", str(exc))
    _agree(calls.comm, err)
    est_geqrf, est_ormqr = workspace_estimates(nl, calls.n_cols, nb)  # documented minima, in case a query is low
    return max(lw_geqrf, est_geqrf), max(lw_ormqr, est_ormqr)


def _check_r_diagonal(comm, a_local, mine, g_mine, n_cols) -> None:
    """R's diagonal, checked on every rank: ScaLAPACK's own singularity test in p?trtrs only looks at the
    first two diagonal entries of each block (netlib bug)."""
    diag = a_local[mine, g_mine] if (mine.size and _CHECK_DIAG) else np.zeros(0)
    bad_local = np.nonzero((diag == 0.0) | ~np.isfinite(diag))[0]
    mine_bad = (int(g_mine[bad_local[0]]) + 1, bool(np.isfinite(diag[bad_local[0]]))) if bad_local.size else None
    bad_all = [v for v in comm.allgather(mine_bad) if v is not None]
    if bad_all:
        k, finite = min(bad_all)
        if not finite:
            raise ScalapackError(f"the QR factor R has a NaN or infinite diagonal element {k} of {n_cols}: the "
                                 f"design matrix contains NaN/inf (check the data, sigmas and sparse points)",
                                 "pdgeqrf", k)
        raise ScalapackError(translate_info("pdtrtrs", k, n_cols), "pdtrtrs", k)


def _collect(comm, a_local, b_local, mine, g_mine, n_cols, return_r):
    """x = the first n_cols global rows of b (every rank), and R on rank 0 (with ``return_r``)."""
    local = np.empty((g_mine.size, 2), dtype=np.float64)
    local[:, 0] = g_mine
    local[:, 1] = b_local[mine]
    gathered = comm.gather_rows(local, root=0)
    if comm.rank == 0:
        x = np.empty(n_cols, dtype=np.float64)
        x[gathered[:, 0].astype(np.int64)] = gathered[:, 1]
    else:
        x = None
    x = comm.bcast_array(x, root=0)
    if not np.all(np.isfinite(x)):  # x is identical on every rank, so is this raise
        raise ScalapackError("the solution contains NaN or infinity: R is numerically singular; " + SINGULAR_ADVICE,
                             "pdtrtrs", None)
    r = None
    if return_r:
        idx = comm.gather_rows(g_mine, root=0)
        rows = comm.gather_rows(a_local[mine, :], root=0)
        if comm.rank == 0:
            r = np.empty((n_cols, n_cols), dtype=np.float64)
            r[idx] = rows
            del rows
            r = np.triu(r)
    return x, r


def _lap(timings, name, t0):
    t1 = time.perf_counter()
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + (t1 - t0)
    return t1


def _serial_solve(a_local, b_local, n_cols, return_r, extras=None):
    """One process: LAPACK on the local arrays, with ScaLAPACK's argument checks."""
    if not isinstance(a_local, np.ndarray) or a_local.dtype != np.float64 or not a_local.flags.f_contiguous:
        raise TypeError("a_local must be a Fortran-contiguous float64 numpy array")
    if a_local.ndim != 2 or a_local.shape[1] != n_cols:
        raise ValueError(f"a_local must have n_cols={n_cols} columns (shape {a_local.shape})")
    x, r = lapack_qr_solve(a_local, b_local, overwrite=True, extras=extras)
    return (x, r) if return_r else x


# --------------------------------------------------------------------------------------------
# Start-up self-test


def blacs_selftest(comm, timeout=30.0):
    """A tiny end-to-end solve (2P × 2, nb=1 ≠ mb=2, so the pdtrtrs trick is exercised).

    Loads the library, checks the grid and solves a consistent system with known answer.
    Returns the seconds taken.  A broken library raises ScalapackLoadError/ScalapackError
    naming the file; if the test has not finished after ``timeout`` seconds (a mismatched
    MPI usually hangs) the process prints the cause to stderr and exits with status 1 (under
    mpirun the launcher then ends the job).  Serial communicators: returns 0.0.
    """
    if not getattr(comm, "is_mpi", False):
        return 0.0
    t0 = time.perf_counter()
    lib = _load_agreed(comm)
    done = threading.Event()

    def _hung():
        if not done.is_set():
            sys.stderr.write(f"gapfit: ScaLAPACK self-test did not finish within {timeout:g} s on rank {comm.rank} "
                             f"(library {lib.path}, MPI {lib.mpi_files[0] if lib.mpi_files else '?'}): the ScaLAPACK "
                             f"does not match the MPI library or the launcher; aborting\n")
            sys.stderr.flush()
            os._exit(1)

    timer = threading.Timer(timeout, _hung) if timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        x_true = np.array([0.5, -0.25])
        g = owned_global_rows(2, 2, comm.rank, comm.size).astype(np.float64)
        a = np.asfortranarray(np.column_stack([np.ones(2), g]))
        b = a @ x_true
        x = qr_solve(comm, a, b, 2, 2, 1)
        err = None
        if not np.allclose(x, x_true, rtol=1e-10, atol=1e-12):
            err = ("ScalapackError", f"ScaLAPACK self-test failed: got x={x.tolist()}, expected {x_true.tolist()} "
                                     f"(library {lib.path}, {lib.source}): the library is broken or does not "
                                     f"match the MPI library")
        _agree(comm, err)
    finally:
        done.set()
        if timer is not None:
            timer.cancel()
    return time.perf_counter() - t0
