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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np

from .dedup import quip_heap_sort_order
from .errors import ConfigError, DataError

# --- constants (values from GAP clustering.F90 / gp_fit.F90 / libAtoms) ---------------------
TOL_SVD = 1.0e-13  # libAtoms linearalgebra TOL_SVD: singular values counted by CUR
CLUSTER_JITTER = 1.0e-7  # clustering.F90 cluster_jitter
KMEANS_THRESHOLD = 1.0e-6  # clustering.F90 KMEANS_THRESHOLD (relative change of d_total)
N_TRIAL = 10  # bisect_kmedoids: random trial bisections per split
N_TRIAL_K_MED = 100  # bisect_kmedoids: 2-medoid iterations per trial
COVARIANCE_DIAGONAL = 1.0 + 1.0e-6  # sparse_covariance: diagonal of K_mm
CRUDE_THETA = 4.0  # sparse_covariance: θ of the crude ARD_SE kernel
NUMERICAL_ZERO = 1.0e-14  # libAtoms .feq. tolerance
FUZZINESS = 2.0  # gp_fit.F90 calls cluster_fuzzy_cmeans with fuzziness=2

MAX_DENSE_BYTES = 4 * 2 ** 30  # refuse methods whose big matrices would exceed this
MAX_ITERATIONS = 10000  # guard for kmeans / fuzzy / k-medoid refinement (gap_fit has none)
_BLOCK_ELEMENTS = 1 << 22  # rows × columns of a temporary block (32 MiB of float64)


def _silent(*_args, **_kwargs):
    return None


@dataclass
class SelectionContext:
    """What the clustering methods need to know about the coordinate's GP.

    ``covariance_type``: 'ard_se' or 'dot_product'.  ``theta``: the ARD_SE length scales
    (length d, or one value for all dimensions; unused for dot_product).  ``zeta``, ``delta``
    (energy_scale), ``f0``: the kernel.  ``use_actual_gpcov``: gap_fit's
    ``sparse_use_actual_gpcov`` (cluster, covariance).  ``log``: progress messages.
    ``jitter``: the random per-pair distance jitter of pivot/cluster (gap_fit: 1e-7; 0 turns
    it off, for tests).  ``max_bytes``: the memory limit of :func:`check_memory`.
    ``cur_report_error``: compute and log CUR's reconstruction error (cost ~2·n·d·m flops).
    ``kmeans_init``: 'random' (gap_fit: m distinct random candidates) or 'kmeans++'
    (D² sampling; not in gap_fit, avoids most local minima) for kmeans and fuzzy.
    ``cur_covariance_unit_diagonal``: give cur_covariance's normalised kernel matrix its true
    unit diagonal instead of gap_fit's zero diagonal.
    """

    covariance_type: str = "dot_product"
    theta: Optional[np.ndarray] = None
    zeta: float = 1.0
    delta: float = 1.0
    f0: float = 0.0
    use_actual_gpcov: bool = False
    log: Callable[..., None] = field(default=_silent, repr=False)
    jitter: float = CLUSTER_JITTER
    max_bytes: int = MAX_DENSE_BYTES
    cur_report_error: bool = False
    kmeans_init: str = "random"
    cur_covariance_unit_diagonal: bool = False
    permutations: Optional[np.ndarray] = None  # (n_perm, d), 1-based (distance_Nb)

    @classmethod
    def from_gp(cls, gp, theta=None, use_actual_gpcov: bool = False, log=_silent, **overrides):
        """From a GapSpec's ``gp`` dict (covariance_type, energy_scale, f0, soap_exponent)."""
        return cls(covariance_type=gp["covariance_type"], theta=theta, zeta=float(gp["soap_exponent"]),
                   delta=float(gp["energy_scale"]), f0=float(gp["f0"]), use_actual_gpcov=bool(use_actual_gpcov),
                   log=log, **overrides)


# --- checks -------------------------------------------------------------------------------
_GIB = float(2 ** 30)


def required_bytes(method: str, n: int, m: int) -> int:
    """Bytes of the big arrays a method allocates for n candidates and m sparse points.

    cur_covariance: the n×n kernel matrix, LAPACK's copy of it and its n×n eigenvectors;
    cluster: the n×n distance matrix plus (at worst) a copy of its largest sub-block; pivot,
    covariance: an n×m factor.
    Other methods need O(n·d) (a scaled copy of x, or the n×min(n,d) SVD factor) and are not
    checked.
    """
    n, m = int(n), int(m)
    if method == "cur_covariance":
        return 3 * n * n * 8
    if method == "cluster":
        return 2 * n * n * 8
    if method in ("pivot", "covariance"):
        return n * max(m, 1) * 8
    return 0


def check_memory(method: str, n: int, m: int, max_bytes: int = MAX_DENSE_BYTES) -> None:
    """Raise ConfigError when ``method`` would need more than ``max_bytes`` (never allocates)."""
    need = required_bytes(method, n, m)
    if need > max_bytes:
        what = (f"a {n} x {n} matrix" if method in ("cur_covariance", "cluster")
                else f"a {n} x {m} factor")
        raise ConfigError(f"sparse_method={method} with {n} candidates needs {what} "
                          f"({need / _GIB:.1f} GiB, over the {max_bytes / _GIB:.1f} GiB limit); "
                          f"use sparse_method=cur_points (or fewer candidates, e.g. config_type_n_sparse)")


def _prepare(method: str, x, m) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"{method}: x must be (n, d); got shape {x.shape}")
    n = x.shape[0]
    if int(m) != m or m < 0:
        raise ConfigError(f"sparse_method={method}: the number of sparse points must be a non-negative "
                          f"integer; got {m}")
    if m > n:
        raise ConfigError(f"sparse_method={method}: {int(m)} sparse points requested but there are only "
                          f"{n} distinct candidates")
    step = _block_rows(x.shape[1])
    for start in range(0, n, step):  # a block at a time: no n×d temporary
        finite = np.isfinite(x[start:start + step]).all(axis=1)
        if not finite.all():
            bad = start + int(np.nonzero(~finite)[0][0])
            raise DataError(f"sparse_method={method}: candidate descriptor {bad} is not finite")
    return x


def _ctx(context: Optional[SelectionContext]) -> SelectionContext:
    return SelectionContext() if context is None else context


def _scale(method: str, x: np.ndarray, ctx: SelectionContext) -> np.ndarray:
    """Per-dimension length scale of the distances: θ (ARD_SE) or the candidates' range (dot product)."""
    d = x.shape[1]
    if ctx.covariance_type in ("ard_se", "pp"):
        if ctx.theta is None:
            raise ConfigError(f"sparse_method={method} with covariance_type={ctx.covariance_type} needs theta")
        theta = np.asarray(ctx.theta, dtype=float).reshape(-1)
        if theta.size not in (1, d):
            raise ConfigError(f"sparse_method={method}: theta has {theta.size} values, the descriptor has {d}")
        theta = np.broadcast_to(theta if theta.size == d else theta[:1], (d,)).copy()
        if not np.all(np.isfinite(theta)) or np.any(theta <= 0):
            raise ConfigError(f"sparse_method={method}: theta must be positive and finite")
        return theta
    if ctx.covariance_type == "dot_product":
        rng_ = x.max(axis=0) - x.min(axis=0) if x.shape[0] else np.ones(d)
        rng_[np.abs(rng_) <= NUMERICAL_ZERO] = 1.0  # gap_fit: range .feq. 0 → 1
        return rng_
    raise ConfigError(f"sparse_method={method} is not available for covariance_type={ctx.covariance_type} "
                      f"(only ard_se, pp and dot_product)")


def _block_rows(n_cols: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(int(n_cols), 1))


def _sq_dist_block(a: np.ndarray, a_norm: np.ndarray, b: np.ndarray, b_norm: np.ndarray) -> np.ndarray:
    """|a_i − b_j|² by one matrix product, clipped at 0 against rounding."""
    d2 = a_norm[:, None] + b_norm[None, :] - 2.0 * (a @ b.T)
    np.maximum(d2, 0.0, out=d2)
    return d2


# --- symmetric per-pair jitter (hash of the pair, seeded once from rng) --------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _pair_uniform(seed: np.uint64, i, j) -> np.ndarray:
    """Uniform [0, 1) numbers u(i, j) = u(j, i), a splitmix64 hash of the unordered pair."""
    i = np.asarray(i, dtype=np.uint64)
    j = np.asarray(j, dtype=np.uint64)
    lo = np.minimum(i, j)
    hi = np.maximum(i, j)
    with np.errstate(over="ignore"):  # modular arithmetic is the point
        z = np.array((hi * (hi + np.uint64(1))) // np.uint64(2) + lo, dtype=np.uint64, ndmin=1)
        z = z * _GOLDEN + np.uint64(seed)
        z ^= z >> np.uint64(30)
        z *= _MIX1
        z ^= z >> np.uint64(27)
        z *= _MIX2
        z ^= z >> np.uint64(31)
    u = (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    return u.reshape(np.broadcast(i, j).shape)


def _jitter_seed(rng: np.random.Generator) -> np.uint64:
    return np.uint64(int(rng.integers(0, 2 ** 63)))


# --- kernels ----------------------------------------------------------------------------
class _NormalisedKernel:
    """k(x_i, x_j)/√(k_ii k_jj) of the candidates, by columns or blocks of rows.

    ``crude=True`` is sparse_covariance's manual kernel: exp(−½|x_i−x_j|²/θ²) with θ = 4 for
    ARD_SE and pp(|x_i−x_j|/4) for pp (δ = 1, f0 = 0), and the (already scale-free) normalised
    dot product otherwise.
    """

    def __init__(self, method: str, x: np.ndarray, ctx: SelectionContext, crude: bool = False):
        self.x = x
        n, d = x.shape
        self.kind = ctx.covariance_type
        if self.kind in ("ard_se", "pp"):
            self.pp_j = d // 2 + 2  # QUIP's pp exponent for d dimensions (q = 1)
            if crude:
                theta, self.delta2, self.f02 = np.full(d, CRUDE_THETA), 1.0, 0.0
            else:
                theta = _scale(method, x, ctx)
                self.delta2, self.f02 = float(ctx.delta) ** 2, float(ctx.f0) ** 2
            self.xs = x / theta
            self.norm = np.einsum("nd,nd->n", self.xs, self.xs)
            # permutations of the components (distance_Nb): the kernel sums over them, each candidate's
            # self-covariance normalises (gp_fit.F90's kernel_distance_matrix)
            perms = None if ctx.permutations is None else np.asarray(ctx.permutations, dtype=np.int64) - 1
            self.perms = perms if perms is not None and perms.shape[0] > 1 else None
            self.self_sum = self._raw(np.arange(n), self_only=True) if self.perms is not None else None
            if not self.delta2 + self.f02 > 0:
                raise ConfigError(f"sparse_method={method}: delta and f0 are both zero, the kernel cannot be "
                                  f"normalised")
        elif self.kind == "dot_product":
            self.zeta = float(ctx.zeta)
            z_int = int(round(self.zeta))
            self.int_zeta = z_int if z_int == self.zeta else None
            dots = np.einsum("nd,nd->n", x, x)
            self.self_pow = self._power(dots)
            bad = np.nonzero(~(self.self_pow > 0) | ~np.isfinite(self.self_pow))[0]
            if bad.size:
                raise ConfigError(f"sparse_method={method}: candidate descriptor {int(bad[0])} has zero norm, so "
                                  f"the dot_product kernel cannot be normalised")
            self.inv_sqrt_self = 1.0 / np.sqrt(self.self_pow)
        else:
            raise ConfigError(f"sparse_method={method} is not available for covariance_type={self.kind} "
                              f"(only ard_se, pp and dot_product)")
        self.method = method

    def _power(self, dot):
        if self.int_zeta is not None:
            return dot ** self.int_zeta
        with np.errstate(invalid="ignore"):
            return np.power(dot, self.zeta)

    def _base(self, d2):
        if self.kind == "ard_se":
            return np.exp(-0.5 * d2)
        r = np.sqrt(d2)
        s = np.clip(1.0 - r, 0.0, None)
        return s ** (self.pp_j + 1) * ((self.pp_j + 1) * r + 1.0)

    def _raw(self, idx, self_only=False):
        """Σ_p b(x_i∘P_p, x_j) without δ², for i in ``idx`` and all j (or j = i only)."""
        total = 0.0
        for p in self.perms:
            a = self.xs[idx][:, p]
            if self_only:
                total = total + self._base(np.einsum("nd,nd->n", a - self.xs[idx], a - self.xs[idx]))
            else:
                total = total + self._base(_sq_dist_block(a, np.einsum("nd,nd->n", a, a), self.xs, self.norm))
        return total

    def rows(self, idx) -> np.ndarray:
        """k̂(x_i, x_j) for i in ``idx`` (array or slice) and all j: (len(idx), n)."""
        if self.kind in ("ard_se", "pp") and self.perms is not None:
            k = self.delta2 * self._raw(idx) + self.f02
            self_k = self.delta2 * self.self_sum + self.f02
            k /= np.sqrt(self_k[idx][:, None] * self_k[None, :])
        elif self.kind in ("ard_se", "pp"):
            d2 = _sq_dist_block(self.xs[idx], self.norm[idx], self.xs, self.norm)
            k = self._base(d2)
            if self.delta2 != 1.0:
                k *= self.delta2
            if self.f02:
                k += self.f02
            k /= self.delta2 + self.f02
        else:
            k = self._power(self.x[idx] @ self.x.T)
            k *= self.inv_sqrt_self[idx][:, None]
            k *= self.inv_sqrt_self[None, :]
        if not np.all(np.isfinite(k)):
            hint = (f" (a negative dot product to the non-integer power zeta={self.zeta:g}?)"
                    if self.kind == "dot_product" else "")
            raise ConfigError(f"sparse_method={self.method}: the normalised kernel is not finite{hint}")
        return k

    def column(self, j: int) -> np.ndarray:
        return self.rows(slice(j, j + 1))[0]


# --- CUR --------------------------------------------------------------------------------
def cur_rank(s: np.ndarray, log=_silent, method: str = "cur_points") -> int:
    """gap_fit's number of singular vectors in the leverage: #(s > TOL_SVD) // 2 (at least 1)."""
    count = int(np.count_nonzero(s > TOL_SVD))
    if count == 0:
        what = "descriptor" if method == "cur_points" else "normalised kernel"
        raise ConfigError(f"sparse_method={method}: the candidates' {what} matrix has no singular value "
                          f"above {TOL_SVD:g}")
    rank = count // 2
    if rank == 0:
        log(f"  warning: {method}: only {count} singular value above {TOL_SVD:g}; gap_fit would divide by a "
            f"zero rank here, using rank 1")
        rank = 1
    return rank


def cur_leverage(v: np.ndarray, s: np.ndarray, m: int, log=_silent, method: str = "cur_points") -> np.ndarray:
    """p_j = min(1, m/r Σ_{k<r} v_jk²), r = :func:`cur_rank`, for singular vectors in columns of v."""
    rank = cur_rank(s, log, method)
    p = np.einsum("nk,nk->n", v[:, :rank], v[:, :rank])
    p *= m
    p /= rank
    np.minimum(p, 1.0, out=p)
    return p


def cur_keys_select(p: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """The m smallest keys u_j − p_j (u uniform [0, 1)) in QUIP's heap-sort order."""
    # QUIP's own stream when available (gapfit.sparsify.QuipRandom): then the keys are gap_fit's
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
    block (:class:`gapfit.solvers.streaming.TriangularFactor`); R has x's singular values and V,
    and the rows of U needed, u_j = x_j V_r S_r⁻¹ for the r largest singular values, are formed
    block by block.
    """
    from .solvers.streaming import TriangularFactor

    n, d = x.shape
    factor = TriangularFactor(d - 1, block_rows=max(4 * d, 1024))  # d columns in all
    step = factor.block_rows
    for start in range(0, n, step):
        factor.add_rows(x[start:start + step])
    factor.flush()
    _, s, vt = np.linalg.svd(factor.r)
    del factor
    rank = cur_rank(s, log, "cur_points")
    v_scaled = vt[:rank].T / s[:rank]
    p = np.empty(n)
    step = _block_rows(max(d, rank))
    for start in range(0, n, step):
        u = x[start:start + step] @ v_scaled
        p[start:start + step] = np.einsum("nk,nk->n", u, u)
    p *= m
    p /= rank
    np.minimum(p, 1.0, out=p)
    return p


def select_cur_points(x, m, rng, context: Optional[SelectionContext] = None) -> np.ndarray:
    """gap_fit's ``cur_points``: CUR on the d×n descriptor matrix (see module docstring).

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


def _symmetrise(a: np.ndarray) -> np.ndarray:
    """Copy the upper triangle onto the lower one in place (gap_fit computes one triangle)."""
    n = a.shape[0]
    step = _block_rows(n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        rows = np.arange(start, stop)
        blk = a[start:stop]
        lower = np.arange(n)[None, :] < rows[:, None]
        blk[lower] = a[:, start:stop].T[lower]
    return a


def select_cur_covariance(x, m, rng, context: Optional[SelectionContext] = None) -> np.ndarray:
    """gap_fit's ``cur_covariance``: CUR on the n×n normalised kernel matrix (zero diagonal).

    Memory 3 n² floats (matrix, LAPACK's copy, eigenvectors; refused above ``context.max_bytes``);
    time O(n³).
    The matrix is symmetric, so its singular vectors are its eigenvectors (singular values |λ|).
    """
    import scipy.linalg
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
    p = cur_leverage(w[:, order], np.abs(lam[order]), m, ctx.log, "cur_covariance")
    del w
    chosen = cur_keys_select(p, m, rng)
    if ctx.cur_report_error:
        ctx.log(f"  cur_decomposition: iteration: 1, error: {cur_reconstruction_error(a, chosen):.17g}")
    return chosen


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
    """gap_fit's ``pivot``: first m pivots of the pivoted Cholesky of exp(−½ D) (see module docstring).

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
    """gap_fit's ``kmeans`` (``cluster_kmeans``), with distinct results (see module docstring).

    Memory: a scaled copy of x plus blocks; time O(n m d) per iteration.
    """
    import scipy.sparse
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
    """The n×n distance matrix bisect_kmedoids works on (see module docstring)."""
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
    """gap_fit's ``cluster``: medoids of bisecting k-medoids (see module docstring).

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


# --- covariance (greedy variance) -------------------------------------------------------
def select_covariance(x, m, rng, context: Optional[SelectionContext] = None) -> np.ndarray:
    """gap_fit's ``covariance`` (``sparse_covariance``): greedy, from candidate 0 (see module docstring).

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
