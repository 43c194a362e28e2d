"""The GAP covariance functions (QUIP ``gp_predict.F90``, descriptors.md §3).

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


class KernelBlock:
    """Kernel values of a block of descriptor vectors, plus what their gradients need."""

    __slots__ = ("k", "aux", "x")

    def __init__(self, k, aux=None, x=None):
        self.k = k
        self.aux = aux
        self.x = x


class Kernel:
    covariance_type = 0  # QUIP's integer code written to the XML

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

    covariance_type = 1

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
        ew = block.aux * weights[None, :]
        return (ew @ self.sparse_x - ew.sum(axis=1)[:, None] * block.x) * self._inv_theta2


class DotProductKernel(Kernel):
    """δ² (x·s)^ζ  (covariance_type 2); no normalisation, no f0."""

    covariance_type = 2

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


def make_kernel(covariance_type: str, delta: float, sparse_x, *, theta=None, zeta=None, f0=0.0) -> Kernel:
    if covariance_type == "ard_se":
        return ArdSeKernel(delta, sparse_x, theta, f0)
    if covariance_type == "dot_product":
        return DotProductKernel(delta, sparse_x, zeta)
    raise ValueError(f"covariance_type {covariance_type!r} is not implemented")
