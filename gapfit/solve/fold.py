"""Fold and solve: the one least-squares solve of the streaming fit, refits, scans and committees.

Every rank folds rows into its own (M+1)×(M+1) triangular factor R̃ of [A | b]
(:class:`gapfit.linalg.triangular.TriangularFactor`); rank 0 also folds U, the Cholesky factor of
K_MM (K_MM = UᵀU).  The ranks' factors are combined by a binary tree (⌈log2 P⌉ rounds), and rank 0
solves R α = Qᵀb.  The same factors give the log marginal likelihood (:mod:`.evidence`): the
residual ρ, Σ log|R_ii|, Σ log U_ii and the data rows' Σ log σ.

The steps are methods, so that the fit can log each as a phase and a checkpoint can save the
factor between them; a refit calls them in the same order on rows from its cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..linalg.triangular import TriangularFactor, reduce_factors
from ..runtime.parallel import rank0_call, rank0_only
from .evidence import log_marginal_likelihood


def log_u_diag(u: np.ndarray) -> float:
    """Σ log U_ii of K_MM = UᵀU (half of log|K_MM|)."""
    return float(np.sum(np.log(np.abs(np.diag(u)))))


@dataclass(frozen=True)
class Folded:
    """A solve's result: α and the residual (every rank), the parts of the log marginal likelihood,
    the combined factor (rank 0) and what ``extra`` computed of it there."""

    alpha: np.ndarray
    residual: float
    log_abs_r_diag: float
    log_u: float
    data_stats: tuple  # (data rows, Σ log σ)
    factor: Optional[TriangularFactor]
    extra: object = None

    @property
    def log_likelihood(self) -> float:
        return log_marginal_likelihood(self.residual ** 2, self.log_abs_r_diag, self.log_u, *self.data_stats)


class FoldAndSolve:
    """One rank's triangular factor, K_MM's factor on rank 0, and the collective solve."""

    def __init__(self, comm, n_columns: int):
        self.comm = comm
        self.factor = TriangularFactor(n_columns)
        self.log_u = 0.0

    def fold_k_mm(self, cholesky: Callable[[], np.ndarray], fold: bool = True) -> None:
        """Collective: U = ``cholesky()`` on rank 0 (errors reach every rank), folded into rank 0's factor
        (not when a checkpoint's factor already holds it)."""
        n = self.factor.n_columns

        def factor_u():
            u = cholesky()
            if fold:
                self.factor.add_rows(np.hstack([u, np.zeros((n, 1))]))
            return log_u_diag(u)
        log_u = rank0_only(self.comm, factor_u)
        self.log_u = log_u if self.comm.rank == 0 else 0.0

    def solve(self, extra: Optional[Callable[[TriangularFactor], object]] = None) -> Folded:
        """Collective: combine the ranks' factors, solve on rank 0 (``extra(factor)`` too), broadcast."""
        comm = self.comm
        total = reduce_factors(comm, self.factor) if comm.size > 1 else self.factor

        def on_root():
            alpha, residual = total.solve()
            return (alpha, residual, total.log_abs_r_diag(), tuple(total.data_stats.tolist()), self.log_u,
                    extra(total) if extra is not None else None)
        alpha, residual, log_r, data_stats, log_u, out = rank0_call(comm, on_root)
        return Folded(alpha=alpha, residual=residual, log_abs_r_diag=log_r, log_u=log_u, data_stats=data_stats,
                      factor=total if comm.rank == 0 else None, extra=out)
