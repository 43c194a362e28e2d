"""gap_fit's CUR sparse-point selection: ``cur_points`` and ``cur_covariance`` (see :mod:`gapfit.sparse.clustering`).

Leverage scores from the singular vectors (of the descriptor matrix, folded into its triangular
factor, or of the normalised kernel matrix) and QUIP's heap-sort choice of the smallest keys.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.linalg

from ..errors import ConfigError
from ..linalg.triangular import TriangularFactor
from ..runtime.spill import drop_pages
from .dedup import quip_heap_sort_order
from .selection import (SVD_NOISE_EPS, TOL_SVD, SelectionContext, _block_rows, _ctx, _NormalisedKernel, _prepare,
                        _silent, _symmetrise, check_memory)


# --- CUR --------------------------------------------------------------------------------
def cur_rank(s: np.ndarray, log=_silent, method: str = "cur_points", noise: float = 0.0) -> int:
    """gap_fit's number of singular vectors in the leverage: #(s > TOL_SVD) // 2 (at least 1).

    gapfit also leaves out the singular values below ``noise`` (:func:`svd_noise`): gap_fit's
    absolute 1e-13 is reached by rounding-level singular values once the candidates are many
    (s_max grows as √n), and then whether one is counted depends on the last bits.  Below ~800
    unit-norm candidates (s_max ≲ 28) the two rules are the same.
    """
    threshold = max(TOL_SVD, noise)
    count = int(np.count_nonzero(s > threshold))
    if count == 0:
        what = "descriptor" if method == "cur_points" else "normalised kernel"
        raise ConfigError(f"sparse_method={method}: the candidates' {what} matrix has no singular value "
                          f"above {threshold:g}")
    rank = count // 2
    if rank == 0:
        log(f"  warning: {method}: only {count} singular value above {threshold:g}; gap_fit would divide by a "
            f"zero rank here, using rank 1")
        rank = 1
    return rank


def svd_noise(s_max: float, scale: float = 1.0) -> float:
    """The size below which a singular value is rounding: SVD_NOISE_EPS · ε · s_max (· ``scale``)."""
    return SVD_NOISE_EPS * np.finfo(float).eps * float(s_max) * scale


def cur_leverage(v: np.ndarray, s: np.ndarray, m: int, log=_silent, method: str = "cur_points",
                 noise: float = 0.0) -> np.ndarray:
    """p_j = min(1, m/r Σ_{k<r} v_jk²), r = :func:`cur_rank`, for singular vectors in columns of v."""
    rank = cur_rank(s, log, method, noise)
    p = np.einsum("nk,nk->n", v[:, :rank], v[:, :rank])
    p *= m
    p /= rank
    np.minimum(p, 1.0, out=p)
    return p


def cur_keys_select(p: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """The m smallest keys u_j − p_j (u uniform [0, 1)) in QUIP's heap-sort order."""
    # QUIP's own stream when available (gapfit.sparse.sparsify.QuipRandom): then the keys are gap_fit's
    uniform = getattr(rng, "quip_uniform", None)
    keys = (uniform(p.size) if uniform is not None else rng.random(p.size)) - p
    return quip_heap_sort_order(keys)[:m].astype(np.int64)


def cur_reconstruction_error(a_rows: np.ndarray, chosen: np.ndarray) -> float:
    """‖A − C C⁺ A‖²_F for A = a_rowsᵀ and C = A[:, chosen] (C⁺ with singular values ≤ 1e-13 dropped).

    Rows of ``a_rows`` are the columns of A; computed block by block of rows, O(rows × d) memory.
    """
    c = a_rows[chosen].T  # (d, m)
    if c.size == 0:
        return float(np.einsum("nd,nd->", a_rows, a_rows))
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    q = u[:, s > TOL_SVD]
    err = 0.0
    step = _block_rows(a_rows.shape[1])
    for start in range(0, a_rows.shape[0], step):
        blk = a_rows[start:start + step]
        r = blk - (blk @ q) @ q.T
        err += float(np.einsum("nd,nd->", r, r))
    return err


def descriptor_leverage(x: np.ndarray, m: int, log=_silent) -> np.ndarray:
    """cur_points' leverage p_j of every row of x, in O(d²) memory beyond x itself.

    The right singular vectors of A = xᵀ are the left ones of x = U S Vᵀ.  Rather than U (n×d, as
    large as x), x is reduced to its d×d triangular factor R by Householder QR, folded block by
    block (:class:`gapfit.linalg.triangular.TriangularFactor`); R has x's singular values and V,
    and the rows of U needed, u_j = x_j V_r S_r⁻¹ for the r largest singular values, are formed
    block by block.
    """

    n, d = x.shape
    factor = TriangularFactor(d - 1, block_rows=max(4 * d, 1024), tall_blocks=False)  # picks as before  # d columns in all
    step = factor.block_rows
    for start in range(0, n, step):
        factor.add_rows(x[start:start + step])
        drop_pages(x)
    factor.flush()
    _, s, vt = np.linalg.svd(factor.r)
    del factor
    rank = cur_rank(s, log, "cur_points", svd_noise(s[0]) if s.size else 0.0)
    v_scaled = vt[:rank].T / s[:rank]
    p = np.empty(n)
    step = _block_rows(max(d, rank))
    for start in range(0, n, step):
        u = x[start:start + step] @ v_scaled
        p[start:start + step] = np.einsum("nk,nk->n", u, u)
        drop_pages(x)
    p *= m
    p /= rank
    np.minimum(p, 1.0, out=p)
    return p


def select_cur_points(x, m, rng, context: Optional[SelectionContext] = None) -> np.ndarray:
    """gap_fit's ``cur_points``: CUR on the d×n descriptor matrix (see :mod:`gapfit.sparse.clustering`).

    Memory: x and O(d²) (:func:`descriptor_leverage`); time O(n d²).
    """
    ctx = _ctx(context)
    x = _prepare("cur_points", x, m)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    if m == x.shape[0]:  # CUR keeps every column (gap_fit: the heap sort of all n keys)
        return np.arange(m, dtype=np.int64)
    p = descriptor_leverage(x, m, ctx.log)
    chosen = cur_keys_select(p, m, rng)
    if ctx.cur_report_error:
        ctx.log(f"  cur_decomposition: iteration: 1, error: {cur_reconstruction_error(x, chosen):.17g}")
    return chosen


def cur_covariance_matrix(x: np.ndarray, ctx: SelectionContext, method: str = "cur_covariance") -> np.ndarray:
    """gap_fit's ``kernel_distance_matrix(covariance_only=.true.)``: normalised kernel, zero diagonal."""
    kern = _NormalisedKernel(method, x, ctx)
    n = x.shape[0]
    a = np.empty((n, n))
    step = _block_rows(n)
    for start in range(0, n, step):
        a[start:start + step] = kern.rows(slice(start, start + step))
    a = _symmetrise(a)
    np.fill_diagonal(a, 1.0 if ctx.cur_covariance_unit_diagonal else 0.0)
    return a


def select_cur_covariance(x, m, rng, context: Optional[SelectionContext] = None) -> np.ndarray:
    """gap_fit's ``cur_covariance``: CUR on the n×n normalised kernel matrix (zero diagonal).

    Memory 3 n² floats (matrix, LAPACK's copy, eigenvectors; refused above ``context.max_bytes``);
    time O(n³).
    The matrix is symmetric, so its singular vectors are its eigenvectors (singular values |λ|).
    """
    ctx = _ctx(context)
    x = _prepare("cur_covariance", x, m)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    if m == x.shape[0]:  # CUR keeps every column (gap_fit: the heap sort of all n keys)
        return np.arange(m, dtype=np.int64)
    check_memory("cur_covariance", x.shape[0], m, ctx.max_bytes)
    a = cur_covariance_matrix(x, ctx)
    lam, w = scipy.linalg.eigh(a, check_finite=False)
    order = np.argsort(-np.abs(lam), kind="stable")
    magnitude = np.abs(lam[order])
    # a symmetric eigensolver's rounding is ~ n ε ‖A‖
    p = cur_leverage(w[:, order], magnitude, m, ctx.log, "cur_covariance", svd_noise(magnitude[0], a.shape[0]))
    del w
    chosen = cur_keys_select(p, m, rng)
    if ctx.cur_report_error:
        ctx.log(f"  cur_decomposition: iteration: 1, error: {cur_reconstruction_error(a, chosen):.17g}")
    return chosen
