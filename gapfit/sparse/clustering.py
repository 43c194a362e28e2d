"""gap_fit's clustering and CUR sparse-point selection methods (GAP ``clustering.F90``, ``gp_fit.F90``).

Every method is a pure function ``select_<name>(x, m, rng, context) -> indices``:

* ``x`` (n, d): the candidate descriptor vectors (duplicates already removed), in data order;
* ``m``: the number of sparse points, 0 ≤ m ≤ n;
* ``rng``: a :class:`numpy.random.Generator`, the only source of randomness;
* ``context``: a :class:`SelectionContext` (kernel, θ, ζ, δ, f0, ``sparse_use_actual_gpcov``, log).

They return m distinct 0-based row indices of ``x`` (int64) in the order the method chose them
(the caller sorts them).  :data:`SELECTORS` maps gap_fit's ``sparse_method`` names to them.

What each method computes, as gap_fit does (``gpCoordinates_sparsify_config_type``):

``cur_points``
    CUR (Mahoney & Drineas 2009) on the d×n matrix whose columns are the candidates:
    leverage p_j = min(1, m/r · Σ_{k<r} v_jk²) from the right singular vectors, with
    r = #(s > 1e-13) // 2; keys u_j − p_j with u_j uniform in [0, 1); the m smallest keys in
    QUIP's heap-sort order.  gap_fit's single "iteration" prints the reconstruction error
    ‖A − C C⁺ A‖²_F, which is logged here too.
``cur_covariance``
    The same CUR on the n×n kernel matrix of ``kernel_distance_matrix(covariance_only)``:
    k(x_i, x_j)/√(k_ii k_jj) with the real kernel without normalisation over permutations
    (ARD_SE: δ² exp(−½Σ((x_i−x_j)/θ)²) + f0²; dot product: δ² (x_i·x_j)^ζ).  gap_fit sets the
    diagonal of that matrix to **zero** (it is the "distance to itself" of the kernel-distance
    branch); this is reproduced (``context.cur_covariance_unit_diagonal`` restores the 1s).
``pivot``
    Pivoted Cholesky of exp(−½ D) where D is the (not squared) scaled distance matrix of
    ``distance_matrix`` plus its random jitter (uniform in [0, 1e-7) per pair); the first m
    pivots (the first one is always candidate 0, all diagonals being 1).  Computed column by
    column (left-looking), which gives the same pivots as gap_fit's right-looking n×n
    factorisation but needs O(n m) memory instead of O(n²).  The per-pair jitter is a hash of
    the pair and one random seed drawn from ``rng``, so it is symmetric and reproducible
    without storing it.
``kmeans``
    Lloyd's k-means on the scaled vectors from m distinct random candidates; stops when no
    assignment changes or the total squared distance changes by less than 1e-6 of itself;
    then the candidate nearest each centre.  gap_fit's uniform random start often ends in a
    local minimum (two centres in one cluster); ``context.kmeans_init='kmeans++'`` (not gap_fit)
    seeds by D² sampling instead, for kmeans and fuzzy.
``fuzzy``
    Fuzzy c-means (fuzziness 2) from m distinct random candidates plus a jitter in
    [−0.5e-7, 0.5e-7) per component; same stopping rules; then the candidate nearest each centre.
``cluster``
    Bisecting k-medoids: repeatedly bisect the cluster of largest SSE (10 random trial splits,
    each refined by 2-medoid iterations, keep the smallest SSE), then refine all medoids with
    k-medoid iterations; the m medoids.  Distances: the scaled distance matrix with jitter, or
    with ``sparse_use_actual_gpcov`` the kernel distance √(2 − 2 k̂) (no jitter).
``covariance``
    Greedy: start from candidate 0; repeatedly add the candidate with the smallest
    k_iᵀ K_mm⁻¹ k_i (normalised kernel, K_mm with 1 + 1e-6 on its diagonal), i.e. the one
    worst explained by the points chosen so far.  The kernel is a crude one, exp(−½|x_i−x_j|²/16)
    for ARD_SE and (x_i·x_j)^ζ normalised for dot product, or the real one normalised with
    ``sparse_use_actual_gpcov``.  Done with a growing Cholesky factor: O(n m) memory.

Scaled distances: ARD_SE divides each dimension by θ_d (one θ broadcast to all dimensions);
dot product (which has no θ) divides by each dimension's range over the candidates, a zero
range counting as 1 (``distance_matrix`` and ``cluster_kmeans`` without ``theta``).

Deviations from gap_fit, all in degenerate cases where gap_fit hangs, crashes or returns
duplicates:

* kmeans/fuzzy may map two centres to the same nearest candidate; here centres are taken in
  order and a centre whose nearest candidate is already taken gets its nearest *unused*
  candidate instead, so the m indices are always distinct.
* cur_points/cur_covariance with fewer than two singular values above 1e-13 (e.g. a
  1-dimensional descriptor) divide by a zero rank in gap_fit (NaN keys); here the rank is
  raised to 1 and a warning is logged.  No non-zero singular value at all is an error.
* cur_points/cur_covariance also leave out singular values below 16 ε s_max (cur_covariance: 16 ε n
  |λ|_max), which are rounding: gap_fit counts them once s_max ≳ 28 (~800 unit-norm candidates)
  puts them above 1e-13, and then its rank depends on the last bits (issue 18).
* cluster: gap_fit loops forever if the cluster of largest SSE is a singleton, and crashes on
  an empty sub-cluster; here only clusters of two or more are bisected, an empty side is
  given its medoid, and an emptied cluster keeps its medoid.
* kmeans, fuzzy and the k-medoid refinements stop after :data:`MAX_ITERATIONS` (with a warning).
* pivot: a non-positive residual diagonal (numerically exhausted) is logged and its column
  left zero instead of taking the square root of a negative number.
* fuzzy: a candidate at zero distance from a centre belongs to it alone, and a centre with no
  weight at all stays put (gap_fit: division by zero, NaN).

covariance (no randomness in gap_fit) and pivot (only the 1e-7 jitter) reproduce gap_fit's
choices exactly; tests/test_clustering.py checks this against the gap_fit binary.

Memory: methods on an n×n matrix (cur_covariance, cluster) and the O(n m) factor methods
(pivot, covariance) check :func:`required_bytes` against ``context.max_bytes``
(:data:`MAX_DENSE_BYTES`, 4 GiB) first and raise :class:`~gapfit.errors.ConfigError` instead of
allocating.  All methods are vectorised NumPy: loops run over iterations, steps, clusters or
blocks of rows, never over single candidates.

The methods live in :mod:`gapfit.sparse.cur` (cur_points, cur_covariance), :mod:`gapfit.sparse.greedy` (pivot,
covariance) and :mod:`gapfit.sparse.kmeans` (kmeans, fuzzy, cluster), their shared helpers in
:mod:`gapfit.sparse.selection`; this module re-exports them and builds :data:`SELECTORS`.
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from .cur import (cur_covariance_matrix, cur_keys_select, cur_leverage, cur_rank, cur_reconstruction_error,
                  descriptor_leverage, select_cur_covariance, select_cur_points)
from .greedy import pivoted_cholesky_order, select_covariance, select_pivot

# private helpers, re-exported for the tests (redundant aliases mark them as re-exports)
from .kmeans import _distinct_nearest as _distinct_nearest
from .kmeans import _fuzzy_weights as _fuzzy_weights
from .kmeans import _nearest_candidates as _nearest_candidates
from .kmeans import bisect_kmedoids, cluster_distance_matrix, select_cluster, select_fuzzy, select_kmeans
from .selection import (CLUSTER_JITTER, COVARIANCE_DIAGONAL, CRUDE_THETA, FUZZINESS, KMEANS_THRESHOLD, MAX_DENSE_BYTES,
                        MAX_ITERATIONS, N_TRIAL, N_TRIAL_K_MED, NUMERICAL_ZERO, TOL_SVD, SelectionContext, check_memory,
                        required_bytes)
from .selection import _pair_uniform as _pair_uniform

__all__ = [
    "SELECTORS", "SelectionContext", "check_memory", "required_bytes",
    "select_cur_points", "select_cur_covariance", "select_pivot", "select_kmeans", "select_fuzzy",
    "select_cluster", "select_covariance",
    "cur_rank", "cur_leverage", "cur_keys_select", "cur_reconstruction_error", "descriptor_leverage",
    "cur_covariance_matrix", "pivoted_cholesky_order", "cluster_distance_matrix", "bisect_kmedoids",
    "TOL_SVD", "CLUSTER_JITTER", "KMEANS_THRESHOLD", "N_TRIAL", "N_TRIAL_K_MED", "COVARIANCE_DIAGONAL",
    "CRUDE_THETA", "NUMERICAL_ZERO", "FUZZINESS", "MAX_DENSE_BYTES", "MAX_ITERATIONS",
]

SELECTORS: Dict[str, Callable[..., np.ndarray]] = {
    "cur_points": select_cur_points,
    "cur_covariance": select_cur_covariance,
    "pivot": select_pivot,
    "kmeans": select_kmeans,
    "fuzzy": select_fuzzy,
    "cluster": select_cluster,
    "covariance": select_covariance,
}
"""``sparse_method`` name → ``select_<name>(x, m, rng, context)``."""
