"""The streaming least-squares solve: rows of [A | b] are folded into a triangular factor as they
are produced, so a fit's memory depends on the number of sparse points M, not on the data.

For A = [Σ^-1/2 K_NM ; U] and b = [Σ^-1/2 y ; 0], the QR factorisation of the augmented
matrix [A | b] = Q R̃ has the (M+1)×(M+1) upper-triangular R̃ = [[R, c], [0, ρ]], and

    min ‖A α − b‖  ⇒  R α = c,   with the residual ‖A α − b‖ = |ρ|.

Blocks of rows are folded by Householder QR, never the normal equations.  A full block B of
``block_rows`` ≈ 8(M+1) rows is factorised on its own by ``dgeqrt`` (recursive panels: BLAS-3
throughout) and its triangle merged into R̃ by LAPACK's triangular-pentagonal QR (``dtpqrt`` with
B upper triangular); a short block goes into ``dtpqrt`` directly.  Measured on 2 cores (OpenBLAS,
DGEMM 128 GFLOP/s, M = 1000, 40,000 rows; ``benchmarks/fold_rate.py``): 70 GFLOP/s for blocks of
8(M+1) rows, 64 for 4(M+1), where ``dtpqrt`` alone on blocks of M+1 rows (the fold before issue 22)
ran at 41 and LAPACK's ``dgeqrf`` of the whole matrix at 14 (its BLAS-2 panels are memory-bound).
Two factors of disjoint row sets fold into one (``merge``), which is how the ranks' factors are
combined under MPI, and how a finished fit is extended with new data.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.linalg as sla
from scipy.linalg import lapack

from ..errors import NumericalError
from ..runtime.threads import lapack_threads

# dtpqrt's inner block size (LAPACK's usual choice for these sizes)
INNER_BLOCK = 32
#: dgeqrt's block size for a full block of rows (77 GFLOP/s at 128 against 66 at 32, M = 1000)
GEQRT_BLOCK = 128
#: a full block holds this many times M+1 rows (69 GFLOP/s at 8, 63 at 4, M = 1000) ...
BLOCK_FACTOR = 8
#: ... unless its buffer would take more than this (then at least M+1 rows)
BLOCK_BYTES = 256 * 1024 ** 2
#: factors up to this size always fold with one BLAS thread (gapfit.runtime.threads) in dtpqrt ...
SMALL_FACTOR = 1024
#: ... and in dgeqrt, whose large BLAS-3 calls keep two threads busy from here on
GEQRT_SMALL = 256


def default_block_rows(n_columns: int) -> int:
    """Rows of a full block for a factor of ``n_columns`` + 1 columns (the fit's streaming solver)."""
    n = int(n_columns) + 1
    return max(256, n, min(BLOCK_FACTOR * n, BLOCK_BYTES // (8 * n)))


class TriangularFactor:
    """R̃ of the rows [A | b] folded so far: a sink for :func:`gapfit.solve.rows.kernel_row_chunks`.

    Rows are buffered into blocks of ``block_rows`` (default :func:`default_block_rows`; at least M + 1,
    which keeps dtpqrt's updates matrix-matrix products) before they are folded; ``tall_blocks``
    folds full blocks of at least 2(M+1) rows by dgeqrt and a triangle merge (module docstring).
    """

    def __init__(self, n_columns: int, block_rows: Optional[int] = None, r: Optional[np.ndarray] = None,
                 rows_folded: int = 0, tall_blocks: bool = True):
        self.n_columns = int(n_columns)
        n = self.n_columns + 1
        self.r = np.zeros((n, n), order="F") if r is None else np.asfortranarray(r, dtype=float)
        if self.r.shape != (n, n):
            raise ValueError(f"a factor of {self.r.shape} for {n_columns} columns")
        self.rows_folded = int(rows_folded)
        self.block_rows = max(int(block_rows or default_block_rows(self.n_columns)), n, 256)
        self.tall_blocks = bool(tall_blocks)
        self._buffer = np.zeros((self.block_rows, n), order="F")
        self._buffered = 0
        self.rows = 0  # rows added through add() (the sink's count, as DenseRows.rows)
        # data rows and Σ log σ of every row added, merged or adopted (the log marginal likelihood's)
        self.data_stats = np.zeros(2)

    @property
    def nbytes(self) -> int:
        return self.r.nbytes + self._buffer.nbytes

    # --- the sink interface --------------------------------------------------------------
    def add(self, k: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> None:
        """Σ^-1/2 [K | y] rows of a chunk."""
        n = y.size
        scaled = np.empty((n, self.n_columns + 1), order="F")
        np.divide(k, sigma[:, None], out=scaled[:, :-1])
        np.divide(y, sigma, out=scaled[:, -1])
        self.add_rows(scaled)
        self.rows += n
        self.data_stats += (n, float(np.sum(np.log(sigma))))

    def add_rows(self, rows: np.ndarray) -> None:
        """Rows of [A | b] (already scaled), folded block by block."""
        start = 0
        while start < rows.shape[0]:
            take = min(rows.shape[0] - start, self.block_rows - self._buffered)
            self._buffer[self._buffered:self._buffered + take] = rows[start:start + take]
            self._buffered += take
            start += take
            if self._buffered == self.block_rows:
                self.flush()

    def flush(self) -> None:
        """Fold the buffered rows."""
        if self._buffered:
            self._fold(self._buffer[:self._buffered], triangular=False)
            self.rows_folded += self._buffered
            self._buffered = 0

    def state(self):
        """(R̃, the buffered rows not yet folded, rows folded): what a checkpoint keeps, bit for bit."""
        return self.r, self._buffer[:self._buffered], self.rows_folded

    def adopt(self, r: np.ndarray, buffered: np.ndarray, rows_folded: int, data_stats=None) -> None:
        """Continue exactly where a saved :meth:`state` stopped (the same rounding as without the stop)."""
        self.r = np.asfortranarray(r, dtype=float)
        if data_stats is not None:
            self.data_stats = np.array(data_stats, dtype=float)
        self._buffered = 0
        self.rows_folded = int(rows_folded)
        if buffered.shape[0]:
            self._buffer[:buffered.shape[0]] = buffered
            self._buffered = buffered.shape[0]

    @property
    def empty(self) -> bool:
        """Nothing folded or buffered yet."""
        return self.rows_folded == 0 and self._buffered == 0 and not self.r.any()

    def merge(self, other_r: np.ndarray, rows: int = 0, data_stats=None) -> None:
        """Fold another factor (of other rows) into this one: R̃ ← R of [R̃ ; R̃_other].

        Into an empty factor, the other is copied (folding it would change its last bits).
        """
        if data_stats is not None:
            self.data_stats = self.data_stats + np.asarray(data_stats, dtype=float)
        if self.empty:
            self.adopt(other_r, np.zeros((0, self.r.shape[0])), rows)
            return
        self.flush()
        self._fold(np.asfortranarray(other_r, dtype=float), triangular=True)
        self.rows_folded += int(rows)

    def _fold(self, block: np.ndarray, triangular: bool) -> None:
        n = self.r.shape[0]
        m = block.shape[0]
        if self.tall_blocks and not triangular and m >= 2 * n:
            # the block's own R (BLAS-3 recursive panels: worth both cores from M = 256 on, 63 against
            # 45 GFLOP/s at M = 1000), then a triangle-into-triangle merge
            with lapack_threads(self.n_columns, small=GEQRT_SMALL):
                qr, _, info = lapack.dgeqrt(min(GEQRT_BLOCK, n), np.asfortranarray(block), overwrite_a=1)
            if info != 0:
                raise NumericalError(f"LAPACK dgeqrt failed (info={info}) on a block of {m} rows")
            block, triangular, m = np.triu(qr[:n]), True, n
        with lapack_threads(self.n_columns, small=SMALL_FACTOR):
            nb = max(1, min(INNER_BLOCK, n, m))
            # l: the rows of B that are upper trapezoidal (an upper-triangular factor: all of them)
            r, _, _, info = lapack.dtpqrt(n if triangular else 0, nb, self.r, np.asfortranarray(block),
                                          overwrite_a=1, overwrite_b=1)
        if info != 0:
            raise NumericalError(f"LAPACK dtpqrt failed (info={info}) folding {m} rows into a {n}x{n} factor")
        self.r = r

    # --- the solution ------------------------------------------------------------------------
    def log_abs_r_diag(self) -> float:
        """Σ log|R_ii| over R of A (the first M diagonal elements of R̃)."""
        self.flush()
        return float(np.sum(np.log(np.abs(np.diag(self.r)[:self.n_columns]))))

    def solve(self):
        """α and the residual ‖Aα − b‖ of the rows folded so far (buffered rows are folded first)."""
        self.flush()
        m = self.n_columns
        r = self.r[:m, :m]
        diag = np.abs(np.diag(r))
        if diag.size and (diag.min() == 0.0 or not np.all(np.isfinite(diag))):
            k = int(np.argmin(diag)) + 1
            raise NumericalError(f"the QR factor R is singular at diagonal element {k} of {m}: "
                                 f"increase sparse_jitter or check for duplicate sparse points")
        alpha = sla.solve_triangular(r, self.r[:m, m], lower=False)
        if not np.all(np.isfinite(alpha)):
            raise NumericalError("the solution contains NaN or infinity: check the data for extreme values")
        return alpha, abs(float(self.r[m, m]))

    def r_factor(self) -> np.ndarray:
        """R of A (M×M, upper triangular), as the dense QR gives it up to the signs of its rows."""
        self.flush()
        return np.triu(self.r[:self.n_columns, :self.n_columns])


def reduce_factors(comm, factor: TriangularFactor) -> Optional[TriangularFactor]:
    """Combine every rank's factor into rank 0's by a binary tree of pairwise folds (None elsewhere).

    ⌈log2 P⌉ rounds; in each, half of the remaining ranks send their (M+1)² factor to a partner.
    """
    factor.flush()
    rank, size = comm.rank, comm.size
    step = 1
    while step < size:
        if rank % (2 * step) == step:
            comm.send_array(factor.r, dest=rank - step, tag=step)
            comm.send_obj((factor.rows_folded, factor.data_stats.tolist()), dest=rank - step, tag=step)
            return None
        if rank % (2 * step) == 0 and rank + step < size:
            other = comm.recv_array(factor.r.shape, source=rank + step, tag=step)
            rows, data_stats = comm.recv_obj(source=rank + step, tag=step)
            factor.merge(other, rows, data_stats)
        step *= 2
    return factor if rank == 0 else None
