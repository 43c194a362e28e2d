"""gap_fit's clustering sparse-point selection: ``kmeans``, ``fuzzy`` and ``cluster`` (see :mod:`gapfit.sparse.clustering`).

Lloyd's k-means and fuzzy c-means on the scaled candidates (then the distinct nearest candidates
of the centres), and bisecting k-medoids on the n×n distance matrix.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import scipy.sparse

from ..errors import ConfigError
from .selection import (CLUSTER_JITTER, FUZZINESS, KMEANS_THRESHOLD, MAX_ITERATIONS, N_TRIAL, N_TRIAL_K_MED,
                        NUMERICAL_ZERO, SelectionContext, _block_rows, _ctx, _jitter_seed, _NormalisedKernel,
                        _pair_uniform, _prepare, _scale, _silent, _sq_dist_block, _symmetrise, check_memory)


# --- kmeans / fuzzy ---------------------------------------------------------------------
def _nearest_centre(xs, xs_norm, cs):
    """Index of the nearest centre (first of equals) and its squared distance, per candidate."""
    n = xs.shape[0]
    c_norm = np.einsum("md,md->m", cs, cs)
    label = np.empty(n, dtype=np.int64)
    dmin = np.empty(n)
    step = _block_rows(cs.shape[0])
    for start in range(0, n, step):
        d2 = _sq_dist_block(xs[start:start + step], xs_norm[start:start + step], cs, c_norm)
        lab = np.argmin(d2, axis=1)
        label[start:start + step] = lab
        dmin[start:start + step] = d2[np.arange(lab.size), lab]
    return label, dmin


def _nearest_candidates(xs, xs_norm, cs):
    """Per centre, the index of the nearest candidate (first of equals)."""
    n = xs.shape[0]
    c_norm = np.einsum("md,md->m", cs, cs)
    best = np.full(cs.shape[0], np.inf)
    arg = np.zeros(cs.shape[0], dtype=np.int64)
    step = _block_rows(cs.shape[0])
    for start in range(0, n, step):
        d2 = _sq_dist_block(xs[start:start + step], xs_norm[start:start + step], cs, c_norm)
        loc = np.argmin(d2, axis=0)
        val = d2[loc, np.arange(cs.shape[0])]
        better = val < best
        best[better] = val[better]
        arg[better] = loc[better] + start
    return arg


def _distinct_nearest(xs, xs_norm, cs, nearest, log, method):
    """Centres in order; a centre whose nearest candidate is taken gets its nearest unused one."""
    out = nearest.copy()
    _, first = np.unique(nearest, return_index=True)
    dup = np.setdiff1d(np.arange(nearest.size), first)
    if dup.size == 0:
        return out
    log(f"  {method}: {dup.size} centres share their nearest candidate with an earlier centre; "
        f"taking their nearest unused candidates instead")
    used = np.zeros(xs.shape[0], dtype=bool)
    used[out[first]] = True
    for j in np.sort(dup):  # loop over the (few) clashing centres only
        d2 = _sq_dist_block(cs[j:j + 1], np.einsum("d,d->", cs[j], cs[j])[None], xs, xs_norm)[0]
        d2[used] = np.inf
        k = int(np.argmin(d2))
        out[j] = k
        used[k] = True
    return out


def _initial_centres(method, xs, xs_norm, m, rng, ctx):
    n = xs.shape[0]
    if ctx.kmeans_init == "random":
        return rng.choice(n, size=m, replace=False)
    if ctx.kmeans_init == "kmeans++":
        chosen = np.empty(m, dtype=np.int64)
        chosen[0] = rng.integers(n)
        dmin = _sq_dist_block(xs[chosen[:1]], xs_norm[chosen[:1]], xs, xs_norm)[0]
        for k in range(1, m):
            dmin[chosen[:k]] = 0.0
            total = dmin.sum()
            if total > 0:
                c = int(np.searchsorted(np.cumsum(dmin), rng.random() * total, side="right"))
                c = min(c, n - 1)
                if dmin[c] <= 0:  # rounding at the edges of the cumulative sum
                    c = int(np.nonzero(dmin > 0)[0][-1])
            else:
                free = np.setdiff1d(np.arange(n), chosen[:k])
                c = int(free[rng.integers(free.size)])
            chosen[k] = c
            np.minimum(dmin, _sq_dist_block(xs[c:c + 1], xs_norm[c:c + 1], xs, xs_norm)[0], out=dmin)
        return chosen
    raise ConfigError(f"sparse_method={method}: unknown kmeans_init {ctx.kmeans_init!r} (random or kmeans++)")


def select_kmeans(x, m, rng, context: Optional[SelectionContext] = None) -> np.ndarray:
    """gap_fit's ``kmeans`` (``cluster_kmeans``), with distinct results (see :mod:`gapfit.sparse.clustering`).

    Memory: a scaled copy of x plus blocks; time O(n m d) per iteration.
    """
    ctx = _ctx(context)
    x = _prepare("kmeans", x, m)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    n = x.shape[0]
    xs = x / _scale("kmeans", x, ctx)
    xs_norm = np.einsum("nd,nd->n", xs, xs)
    centres = xs[_initial_centres("kmeans", xs, xs_norm, m, rng, ctx)].copy()
    label_old = np.full(n, -1, dtype=np.int64)
    d_total = np.inf
    ones = np.ones(n)
    rows = np.arange(n)
    for iteration in range(1, MAX_ITERATIONS + 1):
        label, dmin = _nearest_centre(xs, xs_norm, centres)
        same = bool(np.array_equal(label, label_old))
        d_total_prev, d_total = d_total, float(dmin.sum())
        onehot = scipy.sparse.csr_matrix((ones, (label, rows)), shape=(m, n))
        counts = np.bincount(label, minlength=m)
        sums = onehot @ xs
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
        empty = np.nonzero(~filled)[0]
        if empty.size:
            centres[empty] = xs[rng.integers(n, size=empty.size)]
        label_old = label
        if same or abs(d_total - d_total_prev) < KMEANS_THRESHOLD * d_total:
            break
    else:
        ctx.log(f"  warning: kmeans did not converge in {MAX_ITERATIONS} iterations")
    ctx.log(f"  cluster_kmeans: {iteration} iterations, d_total={d_total:.10g}")
    nearest = _nearest_candidates(xs, xs_norm, centres)
    return _distinct_nearest(xs, xs_norm, centres, nearest, ctx.log, "kmeans")


def _fuzzy_weights(d2: np.ndarray, fuzziness: float) -> np.ndarray:
    """Memberships w_ij = d_ij^(−2/(f−1)) / Σ_k d_ik^(−2/(f−1)); a zero distance takes all the weight."""
    with np.errstate(divide="ignore"):
        inv = d2 ** (-1.0 / (fuzziness - 1.0))
    zero = d2 <= 0.0
    hit = zero.any(axis=1)
    if hit.any():
        inv[hit] = zero[hit].astype(float)
    return inv / inv.sum(axis=1, keepdims=True)


def select_fuzzy(x, m, rng, context: Optional[SelectionContext] = None) -> np.ndarray:
    """gap_fit's ``fuzzy`` (``cluster_fuzzy_cmeans``, fuzziness 2), with distinct results.

    gap_fit stops when no membership changes (or on its d_total rule); memberships are a
    function of the centres, so this is tested as "the centres did not change" (componentwise
    within 1e-14 relative) and the n×m membership matrix is never stored.  Memory: a scaled copy
    of x plus blocks; time O(n m d) per iteration.
    """
    ctx = _ctx(context)
    x = _prepare("fuzzy", x, m)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    n, d = x.shape
    theta = _scale("fuzzy", x, ctx)
    xs = x / theta
    xs_norm = np.einsum("nd,nd->n", xs, xs)
    start_idx = _initial_centres("fuzzy", xs, xs_norm, m, rng, ctx)
    centres = (x[start_idx] + (rng.random((m, d)) - 0.5) * CLUSTER_JITTER) / theta
    previous = None
    d_total = np.inf
    step = _block_rows(m)
    for iteration in range(1, MAX_ITERATIONS + 1):
        same = previous is not None and bool(np.all(
            (np.abs(centres - previous) <= NUMERICAL_ZERO * 0.5 * (np.abs(centres) + np.abs(previous)))
            | (np.abs(centres - previous) <= NUMERICAL_ZERO)))
        c_norm = np.einsum("md,md->m", centres, centres)
        d_total_prev, d_total = d_total, 0.0
        num = np.zeros((m, d))
        den = np.zeros(m)
        for s0 in range(0, n, step):
            d2 = _sq_dist_block(xs[s0:s0 + step], xs_norm[s0:s0 + step], centres, c_norm)
            wp = _fuzzy_weights(d2, FUZZINESS) ** FUZZINESS
            d_total += float(np.einsum("nm,nm->", d2, wp))
            num += wp.T @ xs[s0:s0 + step]
            den += wp.sum(axis=0)
        previous = centres
        centres = centres.copy()
        held = den > 0  # a centre with no weight at all (gap_fit: NaN) stays where it is
        centres[held] = num[held] / den[held, None]
        if same or abs(d_total - d_total_prev) < KMEANS_THRESHOLD * d_total:
            break
    else:
        ctx.log(f"  warning: fuzzy c-means did not converge in {MAX_ITERATIONS} iterations")
    ctx.log(f"  cluster_fuzzy_cmeans: {iteration} iterations, d_total={d_total:.10g}")
    nearest = _nearest_candidates(xs, xs_norm, centres)
    return _distinct_nearest(xs, xs_norm, centres, nearest, ctx.log, "fuzzy")


# --- cluster (bisecting k-medoids) ------------------------------------------------------
def cluster_distance_matrix(x: np.ndarray, rng: np.random.Generator, ctx: SelectionContext,
                            method: str = "cluster") -> np.ndarray:
    """The n×n distance matrix bisect_kmedoids works on (see :mod:`gapfit.sparse.clustering`)."""
    n = x.shape[0]
    dm = np.empty((n, n))
    step = _block_rows(n)
    if ctx.use_actual_gpcov:
        kern = _NormalisedKernel(method, x, ctx)
        for start in range(0, n, step):
            k = kern.rows(slice(start, start + step))
            np.subtract(1.0, k, out=k)
            np.maximum(k, 0.0, out=k)
            dm[start:start + step] = np.sqrt(2.0 * k)
    else:
        xs = x / _scale(method, x, ctx)
        norm = np.einsum("nd,nd->n", xs, xs)
        seed = _jitter_seed(rng)
        cols = np.arange(n)
        for start in range(0, n, step):
            stop = min(n, start + step)
            blk = np.sqrt(_sq_dist_block(xs[start:stop], norm[start:stop], xs, norm))
            if ctx.jitter:
                blk += ctx.jitter * _pair_uniform(seed, np.arange(start, stop)[:, None], cols[None, :])
            dm[start:stop] = blk
    dm = _symmetrise(dm)
    np.fill_diagonal(dm, 0.0)
    return dm


def _medoid(dm: np.ndarray, members: np.ndarray) -> int:
    """The member with the smallest sum of distances to the members (first of equals)."""
    if members.size == dm.shape[0]:
        return int(members[np.argmin(dm.sum(axis=0))])
    return int(members[np.argmin(dm[np.ix_(members, members)].sum(axis=0))])


def _kmedoid_refine(dm: np.ndarray, medoids: np.ndarray, log):
    """Assign every object to its nearest medoid, re-centre, until the medoids stop changing."""
    medoids = medoids.copy()
    for _ in range(MAX_ITERATIONS):
        label = np.argmin(dm[:, medoids], axis=1)
        order = np.argsort(label, kind="stable")
        bounds = np.searchsorted(label[order], np.arange(medoids.size + 1))
        groups = [order[bounds[j]:bounds[j + 1]] for j in range(medoids.size)]
        new = np.array([_medoid(dm, g) if g.size else medoids[j] for j, g in enumerate(groups)], dtype=np.int64)
        if np.array_equal(new, medoids):
            break
        medoids = new
    else:
        log(f"  warning: cluster: k-medoid refinement did not converge in {MAX_ITERATIONS} iterations")
        label = np.argmin(dm[:, medoids], axis=1)
        order = np.argsort(label, kind="stable")
        bounds = np.searchsorted(label[order], np.arange(medoids.size + 1))
        groups = [order[bounds[j]:bounds[j + 1]] for j in range(medoids.size)]
    sse = [float(dm[medoids[j], g].sum()) for j, g in enumerate(groups)]
    return groups, medoids, sse


def bisect_kmedoids(dm: np.ndarray, k: int, rng: np.random.Generator, log=_silent) -> np.ndarray:
    """gap_fit's ``bisect_kmedoids`` on a distance matrix: the k medoids."""
    n = dm.shape[0]
    clusters = [np.arange(n)]
    colsum = dm.sum(axis=0)
    medoids = [int(np.argmin(colsum))]
    sse = [float(colsum.min())]
    while len(clusters) < k:
        splittable = [j for j in range(len(clusters)) if clusters[j].size > 1]
        i = max(splittable, key=lambda j: sse[j])  # first of the largest SSE
        obj = clusters[i]
        nc = obj.size
        sub = dm if nc == n else dm[np.ix_(obj, obj)]
        best = None
        for _ in range(N_TRIAL):
            split = min(max(int(math.ceil(rng.random() * (nc - 1))), 1), nc - 1)
            lo = int(np.argmin(sub[:split, :split].sum(axis=0)))
            hi = split + int(np.argmin(sub[split:, split:].sum(axis=0)))
            lo_old = hi_old = -1
            for _ in range(N_TRIAL_K_MED):
                if lo == lo_old and hi == hi_old:
                    break
                lo_old, hi_old = lo, hi
                side = sub[lo] < sub[hi]
                side[lo], side[hi] = True, False  # gap_fit would crash on an empty side
                s1 = np.nonzero(side)[0]
                s2 = np.nonzero(~side)[0]
                lo = int(s1[np.argmin(sub[np.ix_(s1, s1)].sum(axis=0))])
                hi = int(s2[np.argmin(sub[np.ix_(s2, s2)].sum(axis=0))])
            total = float(sub[lo, s1].sum() + sub[hi, s2].sum())
            if best is None or total < best[0]:
                best = (total, s1, s2, lo, hi)
        del sub
        _, s1, s2, lo, hi = best
        clusters[i] = obj[s1]
        medoids[i] = int(obj[lo])
        clusters.append(obj[s2])
        medoids.append(int(obj[hi]))
        clusters, med_arr, sse = _kmedoid_refine(dm, np.asarray(medoids, dtype=np.int64), log)
        medoids = [int(v) for v in med_arr]
    return np.asarray(medoids, dtype=np.int64)


def select_cluster(x, m, rng, context: Optional[SelectionContext] = None) -> np.ndarray:
    """gap_fit's ``cluster``: medoids of bisecting k-medoids (see :mod:`gapfit.sparse.clustering`).

    Memory ~2 n² floats (refused above ``context.max_bytes``); time O(n² d) for the matrix plus
    O(n²) per refinement iteration.
    """
    ctx = _ctx(context)
    x = _prepare("cluster", x, m)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    n = x.shape[0]
    check_memory("cluster", n, m, ctx.max_bytes)
    dm = cluster_distance_matrix(x, rng, ctx)
    med = bisect_kmedoids(dm, m, rng, ctx.log)
    # medoids of disjoint clusters are distinct unless a refinement emptied a cluster; repair then
    _, first = np.unique(med, return_index=True)
    dup = np.setdiff1d(np.arange(med.size), first)
    if dup.size:
        ctx.log(f"  cluster: {dup.size} medoids coincide (zero distances); taking the nearest unused points")
        used = np.zeros(n, dtype=bool)
        used[med[first]] = True
        for j in np.sort(dup):
            row = dm[med[j]].copy()
            row[used] = np.inf
            med[j] = int(np.argmin(row))
            used[med[j]] = True
    return med
