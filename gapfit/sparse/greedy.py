"""gap_fit's ``pivot`` and ``covariance`` sparse-point selection (see :mod:`gapfit.sparse.clustering`).

Both are greedy choices with a growing Cholesky factor (O(n m) memory): the pivots of a pivoted
Cholesky factorisation of exp(−½ D), and the candidates worst explained by the points chosen so far.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from .selection import (COVARIANCE_DIAGONAL, SelectionContext, _ctx, _jitter_seed, _NormalisedKernel, _pair_uniform,
                        _prepare, _scale, _silent, _sq_dist_block, check_memory)


# --- pivot ------------------------------------------------------------------------------
def pivoted_cholesky_order(column: Callable[[int], np.ndarray], n: int, m: int, log=_silent) -> np.ndarray:
    """The first m pivots of the pivoted Cholesky factorisation of an n×n matrix with unit diagonal.

    ``column(j)`` returns column j of the matrix.  Pivot k is the first (in the current pivoted
    order, as LAPACK/gap_fit scan it) largest residual diagonal; O(n m) memory, O(n m²) time
    plus m columns.
    """
    resid = np.ones(n)
    perm = np.arange(n)
    factor = np.zeros((n, m))
    for k in range(m):
        pos = k + int(np.argmax(resid[perm[k:]]))
        p = int(perm[pos])
        perm[k], perm[pos] = perm[pos], perm[k]
        dpp = resid[p]
        if not dpp > 0.0:
            log(f"  warning: pivot: residual diagonal {dpp:.3g} at step {k + 1}; the matrix is numerically "
                f"exhausted, later pivots are arbitrary")
            resid[p] = -np.inf
            continue
        col = column(p)
        if k:
            col = col - factor[:, :k] @ factor[p, :k]
        col /= math.sqrt(dpp)
        col[perm[:k]] = 0.0
        factor[:, k] = col
        resid -= col * col
        resid[p] = -np.inf  # chosen; gap_fit's scan starts at k+1
    return perm[:m].astype(np.int64)


def select_pivot(x, m, rng, context: Optional[SelectionContext] = None) -> np.ndarray:
    """gap_fit's ``pivot``: first m pivots of the pivoted Cholesky of exp(−½ D) (see :mod:`gapfit.sparse.clustering`).

    Memory n×m (refused above ``context.max_bytes``); time O(n m (d + m)).
    """
    ctx = _ctx(context)
    x = _prepare("pivot", x, m)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    n = x.shape[0]
    check_memory("pivot", n, m, ctx.max_bytes)
    xs = x / _scale("pivot", x, ctx)
    norm = np.einsum("nd,nd->n", xs, xs)
    seed = _jitter_seed(rng)
    all_idx = np.arange(n)
    jitter = float(ctx.jitter)

    def column(j):
        d = np.sqrt(_sq_dist_block(xs[j:j + 1], norm[j:j + 1], xs, norm)[0])
        if jitter:
            d += jitter * _pair_uniform(seed, j, all_idx)
        d[j] = 0.0
        return np.exp(-0.5 * d)

    return pivoted_cholesky_order(column, n, m, ctx.log)


# --- covariance (greedy variance) -------------------------------------------------------
def select_covariance(x, m, rng, context: Optional[SelectionContext] = None) -> np.ndarray:
    """gap_fit's ``covariance`` (``sparse_covariance``): greedy, from candidate 0 (see :mod:`gapfit.sparse.clustering`).

    With L the Cholesky factor of K_mm and V = L⁻¹ K_m,all, each step adds one row to V and the
    score k_iᵀ K_mm⁻¹ k_i = Σ V_ki² of every candidate is updated at once.  Deterministic (``rng``
    is not used, as in gap_fit).  Memory n×m (refused above ``context.max_bytes``); time
    O(n m (d + m)).
    """
    ctx = _ctx(context)
    x = _prepare("covariance", x, m)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    n = x.shape[0]
    check_memory("covariance", n, m, ctx.max_bytes)
    kern = _NormalisedKernel("covariance", x, ctx, crude=not ctx.use_actual_gpcov)
    ctx.log("  sparse_covariance using " + ("actual gpCoordinates_Covariance" if ctx.use_actual_gpcov
                                           else "manual 'covariance'"))
    chosen = np.empty(m, dtype=np.int64)
    chosen[0] = 0
    v = np.zeros((max(m - 1, 1), n))
    score = np.zeros(n)
    masked = np.zeros(n, dtype=bool)
    masked[0] = True
    for j in range(1, m):
        c = int(chosen[j - 1])
        l_new = v[:j - 1, c]
        diag = COVARIANCE_DIAGONAL - float(l_new @ l_new)
        if not diag > 0.0:
            ctx.log(f"  warning: sparse_covariance: K_mm is numerically singular at step {j}")
            diag = np.finfo(float).tiny
        row = kern.column(c)
        if j > 1:
            row -= l_new @ v[:j - 1]
        row /= math.sqrt(diag)
        v[j - 1] = row
        score += row * row
        pick = int(np.argmin(np.where(masked, np.inf, score)))
        chosen[j] = pick
        masked[pick] = True
    if m > 1 and n > m:
        ctx.log(f"  sparse_covariance: min score of the unchosen {float(np.min(score[~masked])):.6g}")
    return chosen
