"""Refits without recomputation: the kernel-row cache (a solver sink) and re-solves with other σ,
δ or sparse_jitter.

A fit asked to keep its rows (``GapFit.fit(..., keep_kernel_rows=True)``) tees every chunk of
unscaled K_NM rows, with the targets and the rule that set each row's σ, into a
:class:`KernelRowCache` (in memory, or in a temporary file when it would not fit).  A refit then
costs one QR: the cached rows are scaled by the new σ (and the columns of a descriptor by
(δ'/δ)², since every kernel is δ² times a δ-free function when f0 = 0) and folded into a fresh
triangular factor (:mod:`gapfit.linalg.triangular`) after the rows of the new K_MM's Cholesky
factor.  The descriptors and kernel rows are never recomputed, and the result equals a fit from
scratch with the new options, to rounding.

Held-out frames get a cache of their own (:meth:`RefitProblem.rows_of`), so that the validation
errors of every refit are one matrix-vector product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from ..data.distribute import assign_frames
from ..data.targets import entry_labels
from ..errors import ConfigError
from ..kernels.covariance import k_mm
from ..linalg.serial import cholesky_upper
from ..solve.fold import FoldAndSolve
from ..solve.linear_system import produce_rows
from ..solve.sinks import Discard, KernelRowCache

QUANTITY_NAMES = ("energy", "forces", "virial")


@dataclass
class Solved:
    """One re-solve: α (every rank), R of A (rank 0), the log marginal likelihood and the column scales."""

    alpha: np.ndarray
    r: Optional[np.ndarray]
    log_likelihood: float
    column_scale: np.ndarray  # (δ'/δ)² per column: K' = K · diag(column_scale)


class RefitProblem:
    """What a refit needs of a finished fit: its context (coordinates, σ rules, e0, data) and its rows."""

    def __init__(self, ctx, cache: KernelRowCache):
        self.ctx = ctx
        self.cache = cache
        self.comm = ctx.comm
        self.k_mm_unit = k_mm(ctx.coords, 0.0, ctx.offsets) if ctx.comm.rank == 0 else None  # δ as fitted, no jitter
        self.deltas = [float(c.spec.gp.delta) for c in ctx.coords]
        self.per_atom = bool(ctx.config.targets.sigma_per_atom)

    # --- the σ of every row ----------------------------------------------------------------
    def sigma(self, cache: KernelRowCache, table, rows: slice) -> np.ndarray:
        """σ of the rows under the σ rules ``table`` (a :class:`gapfit.data.targets.SigmaTable`)."""
        sigma = cache.sigma[rows].copy()
        kind = cache.kind[rows]
        groups = np.array([table(name)[:3] for name in cache.config_types] or np.zeros((0, 3)))
        root = np.sqrt(cache.n_atoms[rows].astype(float)) if self.per_atom else np.ones(sigma.size)
        for quantity in range(3):
            mask = kind == quantity
            if mask.any():
                sigma[mask] = groups[cache.group[rows][mask], quantity] * (root[mask] if quantity != 1 else 1.0)
        bad = ~(sigma > 0)
        if bad.any():
            k = int(np.argmax(bad))
            name = cache.config_types[cache.group[rows][k]]
            raise ConfigError(f"refit: the {QUANTITY_NAMES[kind[k] % 3]} σ of config_type '{name}' is "
                              f"{sigma[k]:g}; it must be greater than 0")
        return sigma

    def column_scale(self, deltas: Sequence[float]) -> np.ndarray:
        scale = np.ones(self.ctx.n_sparse)  # the e0 offsets' columns (e0_method=joint) keep theirs
        for c, old, new in zip(self.ctx.coords, self.deltas, deltas):
            scale[c.column:c.column + c.n_sparse] = (new / old) ** 2
        return scale

    def check_deltas(self, deltas: Sequence[float]) -> None:
        for c, old, new in zip(self.ctx.coords, self.deltas, deltas):
            if not (new > 0 and math.isfinite(new)):
                raise ConfigError(f"refit: delta of descriptor '{' '.join(c.spec.piece.split())}' must be positive "
                                  f"(got {new})")
            if new != old and float(c.spec.gp.f0) != 0.0:
                raise ConfigError(f"refit: delta of '{' '.join(c.spec.piece.split())}' cannot change with f0 != 0 "
                                  f"(its kernel is not δ² times a fixed function): fit from scratch")

    # --- the solve ---------------------------------------------------------------------------
    def solve(self, table, deltas: Sequence[float], jitter: float, exclude_frames=None) -> Solved:
        """Collective: fold the new K_MM factor and the cached rows (less ``exclude_frames``) and solve
        (:class:`gapfit.solve.fold.FoldAndSolve`, as the streaming fit)."""
        m = self.ctx.n_sparse
        scale = self.column_scale(deltas)
        system = FoldAndSolve(self.comm, m)

        def cholesky():
            root = np.sqrt(scale)
            k_mm = self.k_mm_unit * root[:, None] * root[None, :]
            k_mm[np.diag_indices(m)] += jitter
            return cholesky_upper(k_mm, jitter)

        system.fold_k_mm(cholesky)
        cache = self.cache
        keep = None if exclude_frames is None else ~np.isin(cache.frame, exclude_frames)
        for rows in cache.blocks():
            sigma = self.sigma(cache, table, rows)
            k = cache.k[rows] * scale
            y = cache.y[rows]
            if keep is not None:
                mask = keep[rows]
                k, y, sigma = k[mask], y[mask], sigma[mask]
            if y.size:
                system.factor.add(k, y, sigma)
        solved = system.solve()
        return Solved(alpha=solved.alpha, r=solved.factor.r_factor() if self.comm.rank == 0 else None,
                      log_likelihood=float(solved.log_likelihood), column_scale=scale)

    # --- errors from cached rows -------------------------------------------------------------
    def rows_of(self, source, log=None) -> KernelRowCache:
        """Collective: a cache of the unscaled K rows of another data set (held-out frames)."""
        entries, _ = source.index()
        rows = np.array([entry_labels(e, self.ctx.names, f"frame {e.index + 1}").n_rows for e in entries],
                        dtype=np.int64)
        owner = assign_frames(rows, self.comm.size)
        mine = np.nonzero(owner == self.comm.rank)[0]
        cache = KernelRowCache(self.ctx.n_sparse, int(rows[mine].sum()))
        ctx = replace(self.ctx, source=source, entries=entries, row_cache=cache, log=log or self.ctx.log)
        produce_rows(ctx, Discard(), {}, mine, int(rows[mine].sum()))
        return cache

    def errors(self, cache: KernelRowCache, solved: Solved, exclude=None, only_frames=None) -> dict:
        """Collective: RMSE and MAE of energy/atom, force components and virial/atom, per config_type and
        overall, of the rows of ``cache`` (or of its rows in ``only_frames``), as :mod:`gapfit.model.scores` defines them."""
        weights = solved.alpha * solved.column_scale
        names = list(cache.config_types)
        if self.comm.size > 1:  # one list of names on every rank, in the same order
            for name in [n for names_k in self.comm.allgather(names) for n in names_k]:
                if name not in names:
                    names.append(name)
        remap = np.array([names.index(n) for n in cache.config_types], dtype=np.int64)
        g = len(names) + 1
        sums = np.zeros((3, 3, g))  # quantity × (n, Σe², Σ|e|) × group (last: overall)
        keep = None if only_frames is None else np.isin(cache.frame, only_frames)
        for rows in cache.blocks():
            error = cache.k[rows] @ weights - cache.y[rows]
            quantity = cache.kind[rows] % 3
            n_atoms = cache.n_atoms[rows].astype(float)
            error = np.where(quantity == 1, error, error / n_atoms)
            group = remap[cache.group[rows]] if remap.size else np.zeros(error.size, dtype=np.int64)
            mask = np.ones(error.size, dtype=bool) if keep is None else keep[rows]
            for q in range(3):
                sel = mask & (quantity == q)
                for j, w in enumerate((np.ones(error.size), error ** 2, np.abs(error))):
                    per_group = np.bincount(group[sel], weights=w[sel], minlength=g - 1)
                    sums[q, j, :g - 1] += per_group
                    sums[q, j, g - 1] += per_group.sum()
        if self.comm.size > 1:
            sums = self.comm.allreduce_sum(sums)
        out = {}
        for k, name in enumerate(names + ["overall"]):
            entry = {}
            for q, quantity in enumerate(QUANTITY_NAMES):
                n = sums[q, 0, k]
                entry[quantity] = {"n": int(n), "rmse": float(np.sqrt(sums[q, 1, k] / n)) if n else None,
                                   "mae": float(sums[q, 2, k] / n) if n else None}
            out[name] = entry
        return out
