"""The GAP covariance functions (QUIP ``gp_predict.F90``): ARD_SE, dot product and pp.

A kernel holds one coordinate's hyperparameters and sparse points and evaluates,
for many descriptor vectors at once,

* ``prepare(x)``: k̃(x_n, s_m) as an (n, M) matrix (without cutoff weights),
  plus what the gradients need;
* ``contract(block, desc, grad_x, factor)``: the directional derivatives
  ∇_x k̃(x_desc[r], s_m) · grad_x[r, k] for gradient rows r and directions k,
  as an (n_rows, 3, M) array, computed with one matrix product of the stacked
  gradients with the sparse points.

Cutoff weights c(x)·c_s are applied by the caller (covariance assembly).
"""

from __future__ import annotations

import numpy as np

#: QUIP's integer codes of the kernels, written to the XML's covariance_type (gp_predict.F90)
ARD_SE, DOT_PRODUCT, BOND_REAL_SPACE, PP = 1, 2, 3, 4
#: the kernels with length scales θ (and permutations), by code
THETA_KERNELS = (ARD_SE, PP)
#: gapfit's name of each kernel it implements, by code
KERNEL_NAMES = {ARD_SE: "ard_se", DOT_PRODUCT: "dot_product", PP: "pp"}


class KernelBlock:
    """Kernel values of a block of descriptor vectors, plus what their gradients need."""

    __slots__ = ("k", "aux", "x")

    def __init__(self, k, aux=None, x=None):
        self.k = k
        self.aux = aux
        self.x = x


class Kernel:
    covariance_type = 0  # QUIP's integer code written to the XML (ARD_SE, DOT_PRODUCT, PP)

    def __init__(self, delta: float, sparse_x: np.ndarray):
        self.delta = float(delta)
        self.sparse_x = np.ascontiguousarray(sparse_x, dtype=float)

    @property
    def n_sparse(self) -> int:
        return int(self.sparse_x.shape[0])

    def values(self, x: np.ndarray) -> np.ndarray:
        """k̃(x_n, s_m) as an (n, M) matrix."""
        return self.prepare(x).k

    def prepare(self, x: np.ndarray) -> KernelBlock:
        raise NotImplementedError

    def gradient_factor(self, block: KernelBlock) -> np.ndarray:
        """The (n, M) per-instance factor of ∇k̃ that :meth:`contract` multiplies in."""
        return block.aux

    def contract(self, block: KernelBlock, desc: np.ndarray, grad_x: np.ndarray, factor: np.ndarray) -> np.ndarray:
        """∇_x k̃(x_desc[r], s_m) · grad_x[r, k] for gradient rows r, directions k: (n_rows, 3, M).

        One matrix product of the stacked gradients with the sparse points, times
        ``factor[desc]``: :meth:`gradient_factor`, into which callers fold their cutoff
        weights to save passes over the large result.
        """
        raise NotImplementedError

    def gradient_of_sum(self, block: KernelBlock, weights: np.ndarray) -> np.ndarray:
        """Σ_m w_m ∇_x k̃(x_n, s_m) for every block vector: (n, d).  Used for prediction."""
        raise NotImplementedError

    def sparse_covariance(self) -> np.ndarray:
        """k̃(s_i, s_j) for the sparse points (without cutoffs or jitter)."""
        return self.values(self.sparse_x)


class ArdSeKernel(Kernel):
    """δ² exp(−½ Σ_d ((x_d − s_d)/θ_d)²) + f0²  (covariance_type 1; one permutation)."""

    covariance_type = ARD_SE

    def __init__(self, delta, sparse_x, theta, f0=0.0):
        super().__init__(delta, sparse_x)
        self.theta = np.asarray(theta, dtype=float).reshape(-1)
        self.f0 = float(f0)
        self._inv_theta2 = 1.0 / self.theta ** 2
        self._s_scaled = self.sparse_x * self._inv_theta2  # s/θ²
        self._s_norm = np.einsum("md,md->m", self._s_scaled, self.sparse_x)  # Σ s²/θ²

    def _exp_part(self, x):
        x = np.asarray(x, dtype=float)
        if x.shape[1] == 1:  # exact differences for 1-D descriptors (distance_2b)
            d2 = (x[:, :1] - self.sparse_x[None, :, 0]) ** 2 * self._inv_theta2[0]
        else:  # ½Σ(x−s)²/θ² expanded into one matrix product; clipped against rounding
            x_norm = np.einsum("nd,nd->n", x * self._inv_theta2, x)
            d2 = x_norm[:, None] + self._s_norm[None, :] - 2.0 * (x @ self._s_scaled.T)
            np.maximum(d2, 0.0, out=d2)
        return self.delta ** 2 * np.exp(-0.5 * d2)

    def prepare(self, x):
        e = self._exp_part(x)
        k = e + self.f0 ** 2 if self.f0 else e.copy()
        return KernelBlock(k, aux=e, x=np.asarray(x, dtype=float))

    def contract(self, block, desc, grad_x, factor):
        # ∇_x k̃ = δ² e (s − x)/θ²  ⇒  ∇k̃·v = e ((v/θ²)·s − (v/θ²)·x)
        n, _, d = grad_x.shape
        v = grad_x * self._inv_theta2
        proj = (v.reshape(-1, d) @ self.sparse_x.T).reshape(n, 3, -1)
        proj -= np.einsum("nkd,nd->nk", v, block.x[desc])[:, :, None]
        proj *= factor[desc][:, None, :]
        return proj

    def gradient_of_sum(self, block, weights):
        ew = block.aux * np.atleast_2d(weights)  # weights: (M,), or (n, M) per vector
        return (ew @ self.sparse_x - ew.sum(axis=1)[:, None] * block.x) * self._inv_theta2

    def self_terms(self, q):
        """exp(−q/2) and its derivative with respect to q = Σ((x−y)/θ)² (no δ², for :class:`PermutationKernel`)."""
        e = np.exp(-0.5 * q)
        return e, -0.5 * e


class PpKernel(Kernel):
    """δ² pp(r) + f0², the compact piecewise polynomial of QUIP's covariance_type 4 (q = 1).

    r² = Σ_d ((x_d − s_d)/θ_d)² and pp(r) = (1 − r)^(j+1) ((j+1) r + 1) for r < 1, 0 beyond, with
    j = ⌊D/2⌋ + 2 for a D-dimensional descriptor; f0² is added everywhere.  pp′(r)/r =
    −(j+1)(j+2)(1 − r)^j is finite at r = 0, so the gradient needs no special case there.
    """

    covariance_type = PP

    def __init__(self, delta, sparse_x, theta, f0=0.0):
        super().__init__(delta, sparse_x)
        d = self.sparse_x.shape[1]
        self.theta = np.broadcast_to(np.asarray(theta, dtype=float).reshape(-1), (d,)).copy()
        self.f0 = float(f0)
        self.j = d // 2 + 2
        self._inv_theta2 = 1.0 / self.theta ** 2
        self._s_scaled = self.sparse_x * self._inv_theta2
        self._s_norm = np.einsum("md,md->m", self._s_scaled, self.sparse_x)

    def _distance(self, x):
        if x.shape[1] == 1:
            d2 = (x[:, :1] - self.sparse_x[None, :, 0]) ** 2 * self._inv_theta2[0]
        else:
            x_norm = np.einsum("nd,nd->n", x * self._inv_theta2, x)
            d2 = x_norm[:, None] + self._s_norm[None, :] - 2.0 * (x @ self._s_scaled.T)
            np.maximum(d2, 0.0, out=d2)
        return np.sqrt(d2)

    def prepare(self, x):
        x = np.asarray(x, dtype=float)
        r = self._distance(x)
        s = np.clip(1.0 - r, 0.0, None)  # 0 beyond the support
        j = self.j
        s_j = s ** j
        k = self.delta ** 2 * (s_j * s) * ((j + 1) * r + 1.0)
        if self.f0:
            k += self.f0 ** 2
        slope = (-self.delta ** 2 * (j + 1) * (j + 2)) * s_j  # pp′(r)/r, times δ²
        return KernelBlock(k, aux=slope, x=x)

    def contract(self, block, desc, grad_x, factor):
        # ∇_x k̃ = (pp′/r) (x − s)/θ²  ⇒  ∇k̃·v = aux ((v/θ²)·x − (v/θ²)·s)
        n, _, d = grad_x.shape
        v = grad_x * self._inv_theta2
        proj = -(v.reshape(-1, d) @ self.sparse_x.T).reshape(n, 3, -1)
        proj += np.einsum("nkd,nd->nk", v, block.x[desc])[:, :, None]
        proj *= factor[desc][:, None, :]
        return proj

    def gradient_of_sum(self, block, weights):
        aw = block.aux * np.atleast_2d(weights)  # weights: (M,), or (n, M) per vector
        return (aw.sum(axis=1)[:, None] * block.x - aw @ self.sparse_x) * self._inv_theta2

    def self_terms(self, q):
        """pp(√q) and its derivative with respect to q (no δ², for :class:`PermutationKernel`)."""
        r = np.sqrt(q)
        s = np.clip(1.0 - r, 0.0, None)
        s_j = s ** self.j
        return s_j * s * ((self.j + 1) * r + 1.0), -0.5 * (self.j + 1) * (self.j + 2) * s_j


class DotProductKernel(Kernel):
    """δ² (x·s)^ζ  (covariance_type 2); no normalisation, no f0."""

    covariance_type = DOT_PRODUCT

    def __init__(self, delta, sparse_x, zeta):
        super().__init__(delta, sparse_x)
        self.zeta = float(zeta)
        z_int = int(round(self.zeta))
        self._integer_zeta = z_int if z_int == self.zeta else None

    def _power(self, dot, exponent):
        # QUIP multiplies for small integer ζ and uses ** otherwise (rounding-level differences only)
        if self._integer_zeta is not None:
            e = int(round(exponent))
            if e == 0:
                return np.ones_like(dot)
            if e == 1:
                return dot.copy()
            if e == 2:
                return dot * dot
            if e == 3:
                return dot * dot * dot
            if e == 4:
                d2 = dot * dot
                return d2 * d2
            return dot ** e
        return np.power(dot, exponent)

    def prepare(self, x):
        dot = np.asarray(x, dtype=float) @ self.sparse_x.T
        k = self.delta ** 2 * self._power(dot, self.zeta)
        slope = self.delta ** 2 * self.zeta * self._power(dot, self.zeta - 1.0)
        return KernelBlock(k, aux=slope)

    def contract(self, block, desc, grad_x, factor):
        # ∇k̃ = δ²ζ(x·s)^(ζ−1) s  ⇒  ∇k̃·v = slope · (v·s)
        n, _, d = grad_x.shape
        out = (grad_x.reshape(-1, d) @ self.sparse_x.T).reshape(n, 3, -1)
        out *= factor[desc][:, None, :]
        return out

    def gradient_of_sum(self, block, weights):
        return (block.aux * weights[None, :]) @ self.sparse_x


class PermutationKernel(Kernel):
    """ARD_SE or pp summed over permutations of the components, normalised (QUIP, n_permutations > 1):

        k̃(x, s) = Σ_p b(x, s∘P_p) / √(S(x) S(s)) + f0²,   S(v) = Σ_p b(v, v∘P_p) / δ²

    with b the base kernel without f0 (distance_Nb of equal species: atoms that may trade places).
    θ must be the same for components that a permutation swaps; repeated permutations change
    nothing and are dropped.  ∇k̃ = [Σ_p ∇b_p − ½ Σ_p b_p ∇S(x)/S(x)] / √(S(x) S(s)).
    """

    def __init__(self, base_type: str, delta, sparse_x, theta, f0, permutations):
        super().__init__(delta, sparse_x)
        m, d = self.sparse_x.shape
        perms = np.unique(np.asarray(permutations, dtype=np.int64).reshape(-1, d) - 1, axis=0)
        theta = np.broadcast_to(np.asarray(theta, dtype=float).reshape(-1), (d,))
        if any(not np.array_equal(theta[p], theta) for p in perms):
            raise ValueError("theta must be equal for the components the descriptor's permutations exchange")
        self.perms, self.f0 = perms, float(f0)
        self.covariance_type = ARD_SE if base_type == "ard_se" else PP
        stacked = np.concatenate([self.sparse_x[:, p] for p in perms])  # (P·M, d): s∘P_p, block by block
        self.base = make_kernel(base_type, delta, stacked, theta=theta, f0=0.0)
        self.theta = self.base.theta
        self.s_self, _ = self._self_sum(self.sparse_x)

    def _self_sum(self, x):
        """S(x) and ∇S(x) for each row of x."""
        inv_theta2 = 1.0 / self.theta ** 2
        total, grad = np.zeros(x.shape[0]), np.zeros(x.shape)
        for p in self.perms:
            v = (x[:, p] - x) * inv_theta2  # (x∘P − x)/θ²
            value, slope = self.base.self_terms(np.einsum("nd,nd->n", v, x[:, p] - x))
            moved = np.empty_like(v)
            moved[:, p] = v  # Σ_{k: P(k)=m} v_k
            total += value
            grad += (2.0 * slope)[:, None] * (moved - v)
        return total, grad

    def _sum_blocks(self, a):
        """Sum the P permutation blocks of the last axis: (..., P·M) → (..., M)."""
        return a.reshape(a.shape[:-1] + (len(self.perms), self.n_sparse)).sum(axis=-2)

    def prepare(self, x):
        x = np.asarray(x, dtype=float)
        inner = self.base.prepare(x)
        raw = self._sum_blocks(inner.k)
        s_x, ds_x = self._self_sum(x)
        norm = np.sqrt(s_x[:, None] * self.s_self[None, :])
        k = raw / norm
        if self.f0:
            k += self.f0 ** 2
        return KernelBlock(k, aux=(inner, raw, norm, s_x, ds_x), x=x)

    def gradient_factor(self, block):
        return 1.0 / block.aux[2]

    def contract(self, block, desc, grad_x, factor):
        inner, raw, _, s_x, ds_x = block.aux
        out = self._sum_blocks(self.base.contract(inner, desc, grad_x, self.base.gradient_factor(inner)))
        d_self = np.einsum("nkd,nd->nk", grad_x, ds_x[desc]) * (0.5 / s_x[desc])[:, None]
        out -= d_self[:, :, None] * raw[desc][:, None, :]
        out *= factor[desc][:, None, :]
        return out

    def gradient_of_sum(self, block, weights):
        inner, raw, norm, s_x, ds_x = block.aux
        w = np.atleast_2d(weights) / norm  # (n, M)
        out = self.base.gradient_of_sum(inner, np.tile(w, (1, len(self.perms))))
        out -= ((0.5 * np.einsum("nm,nm->n", w, raw)) / s_x)[:, None] * ds_x
        return out


def make_kernel(covariance_type: str, delta: float, sparse_x, *, theta=None, zeta=None, f0=0.0,
                permutations=None) -> Kernel:
    """A coordinate's kernel; ``permutations`` (n_perm, d), 1-based, for ARD_SE and pp."""
    if covariance_type in ("ard_se", "pp") and permutations is not None:
        d = np.asarray(sparse_x).shape[1]
        if np.unique(np.asarray(permutations).reshape(-1, d), axis=0).shape[0] > 1:
            return PermutationKernel(covariance_type, delta, sparse_x, theta, f0, permutations)
    if covariance_type == "ard_se":
        return ArdSeKernel(delta, sparse_x, theta, f0)
    if covariance_type == "dot_product":
        return DotProductKernel(delta, sparse_x, zeta)
    if covariance_type == "pp":
        return PpKernel(delta, sparse_x, theta, f0)
    raise ValueError(f"covariance_type {covariance_type!r} is not implemented")
