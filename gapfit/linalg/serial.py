"""Serial solve: Cholesky of K_MM and Householder QR of A = [Λ^-1/2 K_NM ; U] through LAPACK.

Never the normal equations: they lose several digits (interface notes §3.4).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg as sla
from scipy.linalg import lapack

from ..errors import NumericalError
from ..runtime.threads import lapack_threads

#: narrower A always factorises with one BLAS thread (gapfit.runtime.threads); wider ones keep
#: their threads unless the cores are busy
SMALL_QR = 256


def rounding_level(k_mm: np.ndarray) -> float:
    """M ε max K_ii: the size of K_MM's rounding errors, below which an eigenvalue is noise."""
    return k_mm.shape[0] * np.finfo(float).eps * float(np.max(np.diag(k_mm))) if k_mm.size else 0.0


def cholesky_upper(k_mm: np.ndarray, sparse_jitter: float, warn=None) -> np.ndarray:
    """Upper factor U with K_MM = UᵀU (LAPACK dpotrf on the lower triangle, as gap_fit).

    gap_fit stops when K_MM does not factorise, and so does gapfit.  When sparse_jitter is below
    K_MM's rounding level (:func:`rounding_level`), K_MM is positive definite or not by rounding,
    and the answer differs between machines (issue 18: InP soap with sparse_jitter 1e-10 and δ ≈ 47
    factorised under one BLAS kernel family and not under another): the error says so, and so does a
    warning (``warn``) when the factorisation succeeds with a pivot at that level.
    """
    m = k_mm.shape[0]
    level = rounding_level(k_mm)
    fix = (f"; sparse_jitter={sparse_jitter:g} is below K_MM's rounding level ({level:.1e} = M·ε·max K_ii), where "
           f"whether it factorises depends on the machine's last bits: give sparse_jitter ≥ {10 * level:.0e}"
           if sparse_jitter < 10 * level else "")
    lower, info = lapack.dpotrf(k_mm, lower=1, clean=1)
    if info != 0:
        where = f"leading minor of order {info}" if info > 0 else f"argument {-info}"
        raise NumericalError(
            f"K_MM ({m}x{m}) is not positive definite ({where}): increase sparse_jitter (now {sparse_jitter:g}), "
            f"or check for duplicate sparse points and a descriptor whose values are all equal" + fix)
    if warn is not None and fix and m and float(np.min(np.diag(lower))) ** 2 < 100 * level:
        warn(f"K_MM ({m}x{m}) factorised with a pivot of {float(np.min(np.diag(lower))) ** 2:.1e}, at its rounding "
             f"level{fix}")
    return np.ascontiguousarray(lower.T)


#: dgeqrt's block size: its recursive panels make the whole QR BLAS-3 (77 GFLOP/s on 2 cores for
#: 40,000 × 1,000, where dgeqrf's BLAS-2 panels ran at 14; ``benchmarks/fold_rate.py``)
QR_BLOCK = 128


def qr_solve(a: np.ndarray, b: np.ndarray, overwrite: bool = True, extras=None):
    """Least-squares solution of min ‖a·x − b‖ by Householder QR (dgeqrt, dgemqrt, trtrs).

    ``a`` should be Fortran-ordered (it is factorised in place when
    ``overwrite``).  Returns ``(x, r)`` with the upper-triangular R.  A dict ``extras`` gets
    ``residual_sq`` = ‖a·x − b‖² (the tail of Qᵀb) and ``log_abs_r_diag`` = Σ log|R_ii|, which
    the log marginal likelihood needs.
    """
    n_rows, n_cols = a.shape
    if n_rows < n_cols:
        raise NumericalError(f"the linear system has {n_rows} rows for {n_cols} unknowns")
    a = np.asfortranarray(a)
    with lapack_threads(n_cols, small=SMALL_QR):
        qr, t, info = lapack.dgeqrt(max(1, min(QR_BLOCK, n_cols)), a, overwrite_a=int(overwrite))
        if info != 0:
            raise NumericalError(f"LAPACK dgeqrt failed (info={info}) on a {n_rows}x{n_cols} matrix")
        c = np.asfortranarray(np.asarray(b, dtype=float).reshape(-1, 1).copy())
        c, info = lapack.dgemqrt(qr, t, c, side="L", trans="T", overwrite_c=1)
    if info != 0:
        raise NumericalError(f"LAPACK dgemqrt failed (info={info})")
    r = np.triu(qr[:n_cols, :n_cols])
    diag = np.abs(np.diag(r))
    if diag.size and (diag.min() == 0.0 or not np.all(np.isfinite(diag))):
        k = int(np.argmin(diag)) + 1
        raise NumericalError(f"the QR factor R is singular at diagonal element {k} of {n_cols}: "
                             f"increase sparse_jitter or check for duplicate sparse points")
    if extras is not None:
        extras["residual_sq"] = float(np.dot(c[n_cols:, 0], c[n_cols:, 0]))
        extras["log_abs_r_diag"] = float(np.sum(np.log(diag)))
    x = sla.solve_triangular(r, c[:n_cols, 0], lower=False)
    if not np.all(np.isfinite(x)):
        raise NumericalError("the solution contains NaN or infinity: check the data for extreme values")
    return x, r


def qr_flops(n_rows: int, n_cols: int) -> float:
    """Floating-point operations of a Householder QR of an n_rows × n_cols matrix."""
    return 2.0 * n_rows * n_cols ** 2 - 2.0 / 3.0 * n_cols ** 3


def sampled_qr_rate(n_cols: int) -> float:
    """FLOP/s of this process's dgeqrt (as :func:`qr_solve` runs it) on a small tall sample (~0.1 s),
    for time estimates.

    A narrower sample than the real matrix runs at a lower rate, so estimates err long.
    """
    width = max(1, min(int(n_cols), 512))
    a = np.asfortranarray(np.random.default_rng(0).standard_normal((8 * width, width)))
    lapack.dgeqrt(min(QR_BLOCK, width), a[:width].copy(order="F"), overwrite_a=1)  # wakes BLAS's threads
    start = time.perf_counter()
    lapack.dgeqrt(min(QR_BLOCK, width), a, overwrite_a=1)
    return qr_flops(*a.shape) / max(time.perf_counter() - start, 1e-6)
