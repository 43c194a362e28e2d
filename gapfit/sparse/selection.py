"""Shared machinery of the sparse-point selection methods (see :mod:`gapfit.sparse.clustering`).

Held apart from the methods so that every method module (:mod:`gapfit.sparse.cur`, :mod:`gapfit.sparse.greedy`,
:mod:`gapfit.sparse.kmeans`) imports it and none imports another: the constants (values from GAP
``clustering.F90`` / ``gp_fit.F90`` / libAtoms), :class:`SelectionContext`, the memory check,
input validation, per-dimension scales, blocked squared distances, the symmetric per-pair
jitter and the normalised kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import ConfigError, DataError
from ..runtime.spill import drop_pages

# --- constants (values from GAP clustering.F90 / gp_fit.F90 / libAtoms) ---------------------
TOL_SVD = 1.0e-13  # libAtoms linearalgebra TOL_SVD: singular values counted by CUR
#: CUR also leaves out singular values below this many ε times the largest (gapfit: issue 18).  Those
#: are rounding: the structurally zero singular values of a descriptor matrix come out at ~1.4 ε s_max
#: (measured: Ta's soap, replicated to 135,168 candidates, put one at 1.15e-13, above TOL_SVD)
SVD_NOISE_EPS = 16.0
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
        return cls(covariance_type=gp.covariance_type, theta=theta, zeta=float(gp.zeta),
                   delta=float(gp.delta), f0=float(gp.f0), use_actual_gpcov=bool(use_actual_gpcov),
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
        drop_pages(x)
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

