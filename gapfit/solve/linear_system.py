"""The least-squares phase of a fit: K_NM rows from the producer into a solver sink, then α.

Two paths, chosen by ``linear_solver``:

* ``dense``: each rank holds its rows of A = [Σ^-1/2 K_NM ; U] (the paper's layout) and the QR
  runs through LAPACK (one process) or ScaLAPACK (P×1 grid);
* ``streaming``: each rank folds its rows into an (M+1)×(M+1) triangular factor as they are
  produced (:mod:`gapfit.linalg.triangular`); the factors are combined by a binary tree.  Memory
  depends on M only, and the factor is what checkpoints and extensions keep.

``auto`` takes streaming unless A fits comfortably in memory and the dense QR is the faster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.linalg import lapack

from ..config.fit_config import FitConfig
from ..config.targets import SigmaTable, TargetNames
from ..data.core import GluePotential
from ..data.e0 import SpeciesOffsets
from ..data.extxyz import FrameIndex
from ..kernels.covariance import Coordinate, k_mm
from ..linalg.serial import cholesky_upper
from ..linalg.triangular import GEQRT_BLOCK, TriangularFactor, default_block_rows
from ..runtime.memory import available_memory
from ..runtime.report import Reporter, human_bytes
from .evidence import log_marginal_likelihood
from .rows import CHUNK_BYTES, RowPlan, produce
from .sinks import Tee

#: auto: the dense path only while A takes less than this share of the memory available
DENSE_MEMORY_SHARE = 0.5
#: auto: the dense path while A takes at most this much per rank.  On a whole fit the streaming path
#: is the quicker (InP-small, N = 367,900, M = 1,060, 2 cores: 64.9 s at 394 MiB against 83.2 s at
#: 3.19 GiB dense, whose rows are first written into A; the fold alone runs at 3/4 of the dense
#: dgeqrt's rate, benchmarks/fold_rate.py).  On a loaded machine the fold's small LAPACK calls lose
#: more than one big QR (the example fit, M = 430, N = 15k, beside two other jobs: fold 10 s against
#: QR 2.9 s), so a small A, whose memory does not matter, stays dense.
DENSE_AUTO_BYTES = 256 * 2 ** 20


@dataclass(frozen=True)
class FitContext:
    """What the least-squares phase needs of a fit once its sparse points are known."""

    comm: Any
    log: Reporter
    config: FitConfig
    source: Any  # a gapfit.data.extxyz frame source
    entries: Sequence[FrameIndex]
    owner: np.ndarray  # rank of every frame
    frame_rows: np.ndarray  # target rows of every frame
    coords: Tuple[Coordinate, ...]
    e0: np.ndarray
    max_cutoff: float
    core: Optional[GluePotential] = None
    species: Tuple[int, ...] = ()  # in order of first appearance
    row_cache: Optional[Any] = None  # a gapfit.model.refit.KernelRowCache that keeps the unscaled rows
    offsets: Optional[SpeciesOffsets] = None  # e0_method=joint: columns after the sparse points
    rnd_seed: int = 0  # the seed the sparse points were drawn with (a checkpoint keeps it)

    @property
    def names(self) -> TargetNames:
        return self.config.targets.names

    @property
    def sigmas(self) -> SigmaTable:
        return self.config.targets.sigmas

    @property
    def n_sparse(self) -> int:
        """Columns of the problem: the sparse points, and the e0 offsets if they are fitted."""
        return sum(c.n_sparse for c in self.coords) + (self.offsets.n_columns if self.offsets is not None else 0)

    def my_frames(self) -> np.ndarray:
        return np.nonzero(self.owner == self.comm.rank)[0]

    @property
    def plan(self) -> RowPlan:
        """What the producer needs to make this fit's rows (any frames of its data)."""
        return RowPlan(source=self.source, entries=self.entries, coords=self.coords, names=self.names,
                       sigmas=self.sigmas, e0=self.e0, sigma_per_atom=self.config.targets.sigma_per_atom,
                       max_cutoff=self.max_cutoff, n_columns=self.n_sparse, core=self.core, offsets=self.offsets,
                       chunk_bytes=self.config.solver.chunk_bytes)


@dataclass
class Solution:
    """α, and what the rest of the fit reports and writes."""

    alpha: np.ndarray
    r: Optional[np.ndarray]  # R of A, when export_covariance=T
    table: Dict[str, float] = field(default_factory=dict)  # per-rank numbers for the timing table
    report: Dict[str, object] = field(default_factory=dict)  # for report_file
    factor: Optional[TriangularFactor] = None  # streaming: the combined factor (rank 0)
    r_factor: Optional[np.ndarray] = None  # R of A on rank 0 where the solve has it (committees)
    log_likelihood: Optional[float] = None  # log marginal likelihood (gapfit.solve.evidence), every rank


def streaming_bytes(n_sparse: int) -> float:
    """Per-rank memory of the streaming path: the factor, its row buffer (and the buffer's triangle and
    dgeqrt's T while it folds) and one chunk."""
    n = n_sparse + 1
    return 8.0 * n * n * 2 + 8.0 * (default_block_rows(n_sparse) + GEQRT_BLOCK) * n + 2.0 * CHUNK_BYTES


def choose_path(asked: str, n_rows: int, n_sparse: int, n_ranks: int, log) -> str:
    """'dense' or 'streaming' for linear_solver=``asked`` (auto|dense|streaming), saying why for auto."""
    if asked != "auto":
        return asked
    a_bytes = 8.0 * (n_rows / n_ranks + n_sparse) * n_sparse
    free = available_memory()
    if free and a_bytes > DENSE_MEMORY_SHARE * free:
        log(f"linear_solver=auto: streaming (A would take {human_bytes(a_bytes)} per rank, "
            f"{human_bytes(free)} is available)")
        return "streaming"
    if a_bytes <= DENSE_AUTO_BYTES:
        log(f"linear_solver=auto: dense (A takes {human_bytes(a_bytes)} per rank)")
        return "dense"
    log(f"linear_solver=auto: streaming (memory {human_bytes(streaming_bytes(n_sparse))} per rank instead of "
        f"{human_bytes(a_bytes)} for A, and no A to fill)")
    return "streaming"


def produce_rows(ctx: FitContext, sink, stats, frames, n_rows, after_chunk=None) -> bool:
    """Every chunk of K_NM rows of ``frames`` into ``sink``, teed into the fit's row cache if it keeps one."""
    if ctx.row_cache is not None:  # the cache copies the rows before the sink scales them in place
        sink = Tee(ctx.row_cache, sink)
    return produce(ctx.plan, sink, frames, ctx.log, stats, n_rows, after_chunk)


def log_rates(ctx, stats):
    ctx.log(f"   of which descriptors {stats['descriptor_seconds']:.2f} s, kernel rows "
            f"{stats['kernel_seconds']:.2f} s ({stats['gemm_flops'] / 1e9:.1f} GFLOP in matrix products, "
            f"{stats['gemm_flops'] / 1e9 / max(stats['kernel_seconds'], 1e-9):.1f} GFLOP/s) on rank {ctx.comm.rank}")


def cholesky_of_kmm(coords, jitter, offsets=None, warn=None):
    """U with K_MM = UᵀU, K_MM of ``coords`` (and the e0 offsets') with ``jitter`` on its diagonal."""
    return cholesky_upper(k_mm(coords, jitter, offsets), jitter, warn)


def log_condition_number(log, norm: str, r):
    """condition_number_norm: log10 of R's condition number in that norm (O or I; "" for none)."""
    if norm:
        rcond, _ = lapack.dtrcon(r, norm=norm, uplo="U")
        log(f"Condition number (log10) of the triangular factor R (norm {norm}): {-np.log10(rcond):.4f}")


def log_evidence(ctx: FitContext, residual_sq, log_abs_r_diag, log_u, data_stats) -> Optional[float]:
    """The log marginal likelihood, logged by rank 0 (None if a part is unknown, e.g. an old checkpoint)."""
    value = log_marginal_likelihood(residual_sq, log_abs_r_diag, log_u, data_stats[0], data_stats[1])
    if not np.isfinite(value):
        return None
    ctx.log(f"Log marginal likelihood: {value:.10g} ({int(data_stats[0])} target rows, "
            f"{value / max(data_stats[0], 1):.6g} per row)")
    return float(value)


def memory_paths(n_rows: int, n_sparse: int, n_ranks: int) -> List[tuple]:
    """(path, bytes per rank) of both solvers, for dryrun=T."""
    dense = 8.0 * (n_rows / max(n_ranks, 1) + n_sparse) * n_sparse
    return [("dense", dense), ("streaming", streaming_bytes(n_sparse))]

