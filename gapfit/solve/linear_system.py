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

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config.fit_config import FitConfig
from ..config.targets import SigmaTable, TargetNames
from ..data.distribute import distribute
from ..data.e0 import SpeciesOffsets
from ..data.extxyz import FrameIndex
from ..errors import DataError, NumericalError
from ..kernels.covariance import Coordinate, k_mm
from ..linalg.triangular import TriangularFactor, reduce_factors
from ..runtime.parallel import rank0_call, rank0_only
from ..data.core import GluePotential
from ..runtime.report import Reporter, human_bytes
from .rows import CHUNK_BYTES, DenseRows, kernel_row_chunks

#: auto: the dense path only while A takes less than this share of the memory available
DENSE_MEMORY_SHARE = 0.5
#: auto: the dense path while A takes at most this much per rank.  benchmarks/streaming_vs_dense.py
#: (N = 20 M, 2 BLAS threads, 2-core EPYC, idle machine): streaming/dense time 0.77 at M = 500,
#: 0.83 at 1000, 1.00 at 2000, 1.07 at 3000, 0.94 at 4000 -- the same within the noise, at a tenth
#: of the memory or less.  But on a loaded machine the fold's many small LAPACK calls lose more
#: than one big QR (the example fit, M = 430, N = 15k, beside two other jobs: fold 10 s against
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


def available_memory() -> float:
    """Bytes the kernel says a new allocation can have (MemAvailable; 0 if unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        return float(info.get("MemAvailable", info.get("MemTotal", 0)))
    except OSError:  # pragma: no cover
        return 0.0


def streaming_bytes(n_sparse: int) -> float:
    """Per-rank memory of the streaming path: the factor, its row buffer and one chunk."""
    n = n_sparse + 1
    return 8.0 * n * n + 8.0 * max(n, 256) * n + 2.0 * CHUNK_BYTES


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
        f"{human_bytes(a_bytes)} for A, as fast)")
    return "streaming"


def solve(ctx: FitContext, path: str, stats: Dict[str, float], run=None) -> Solution:
    if path == "dense":
        return solve_dense(ctx, stats)
    return solve_streaming(ctx, stats, run)


def _produce(ctx: FitContext, sink, stats, frames, n_rows, after_chunk=None):
    """Every chunk of K_NM rows of ``frames`` into ``sink``; ``after_chunk(frame_ids)`` may stop early (True)."""
    for k, y, sigma, labels in kernel_row_chunks(ctx.source, ctx.entries, frames, ctx.coords, ctx.names, ctx.sigmas,
                                                 ctx.e0, ctx.config.targets.sigma_per_atom, ctx.max_cutoff,
                                                 ctx.n_sparse, ctx.log, stats, n_rows, ctx.core,
                                                 chunk_bytes=ctx.config.solver.chunk_bytes, offsets=ctx.offsets):
        if ctx.row_cache is not None:  # before the sink scales k in place
            ctx.row_cache.add(k, y, sigma, labels)
        sink.add(k, y, sigma)
        if after_chunk is not None and after_chunk(labels.frames):
            return False
    return True


def _log_rates(ctx, stats):
    ctx.log(f"   of which descriptors {stats['descriptor_seconds']:.2f} s, kernel rows "
            f"{stats['kernel_seconds']:.2f} s ({stats['gemm_flops'] / 1e9:.1f} GFLOP in matrix products, "
            f"{stats['gemm_flops'] / 1e9 / max(stats['kernel_seconds'], 1e-9):.1f} GFLOP/s) on rank {ctx.comm.rank}")


def cholesky_of_kmm(coords, jitter, offsets=None, warn=None):
    from ..linalg.serial import cholesky_upper
    return cholesky_upper(k_mm(coords, jitter, offsets), jitter, warn)


def log_u_diag(u: np.ndarray) -> float:
    """Σ log U_ii of K_MM = UᵀU (half of log|K_MM|)."""
    return float(np.sum(np.log(np.abs(np.diag(u)))))


def _evidence(ctx: FitContext, residual_sq, log_abs_r_diag, log_u, data_stats) -> Optional[float]:
    """The log marginal likelihood, logged by rank 0 (None if a part is unknown, e.g. an old checkpoint)."""
    from .evidence import log_marginal_likelihood
    value = log_marginal_likelihood(residual_sq, log_abs_r_diag, log_u, data_stats[0], data_stats[1])
    if not np.isfinite(value):
        return None
    ctx.log(f"Log marginal likelihood: {value:.10g} ({int(data_stats[0])} target rows, "
            f"{value / max(data_stats[0], 1):.6g} per row)")
    return float(value)


# --- the dense path ------------------------------------------------------------------------
def block_sizes(unified_rows: int, n_sparse: int, mb: int, nb: int):
    """gap_fit's ScaLAPACK blocks: mb (0 → all local rows), nb (0 → M); local rows padded to a multiple of mb."""
    mb = mb or max(unified_rows, 1)
    nb = nb or n_sparse
    n_local = -(-max(unified_rows, 1) // mb) * mb
    return mb, nb, n_local


def solve_dense(ctx: FitContext, stats) -> Solution:
    comm, log, n_sparse = ctx.comm, ctx.log, ctx.n_sparse
    solver, outputs = ctx.config.solver, ctx.config.outputs
    dist = distribute(ctx.frame_rows, comm.size, n_sparse, owner=ctx.owner)
    if comm.size == 1:
        n_local = int(ctx.frame_rows.sum()) + n_sparse
        mb = nb = 0
    else:
        mb, nb, n_local = block_sizes(dist.unified_rows, n_sparse, solver.blocksize_rows, solver.blocksize_cols)
    n_data_local = int(dist.data_rows[comm.rank])
    if comm.size > 1:
        from ..linalg.scalapack import scalapack_info
        log(scalapack_info(comm, mb, nb)["text"])
        log(f"  rows per rank: {', '.join(str(int(r)) for r in dist.data_rows)} data + "
            f"{', '.join(str(int(u)) for u in dist.u_count)} of U, padded to {n_local}")
    log(f"Linear system (dense): {int(ctx.frame_rows.sum())} target rows + {n_sparse} rows of U, {n_sparse} columns; "
        f"A needs {human_bytes(8.0 * n_local * n_sparse)} per rank")
    try:
        a_local = np.zeros((n_local, n_sparse), order="F")
    except MemoryError:
        raise NumericalError(f"cannot allocate A ({n_local}x{n_sparse}, {human_bytes(8.0 * n_local * n_sparse)}): "
                             f"use linear_solver=streaming, more MPI ranks or fewer sparse points") from None
    b_local = np.zeros(n_local)
    with log.phase("Covariance K_NM (descriptors and kernel rows)"):
        sink = DenseRows(a_local, b_local)
        _produce(ctx, sink, stats, ctx.my_frames(), n_data_local)
        filled = sink.rows
    _log_rates(ctx, stats)
    if filled != n_data_local:
        raise DataError(f"internal inconsistency: {filled} rows built, {n_data_local} expected")
    if outputs.dump_prefix:
        prefix = outputs.dump_prefix
        np.savetxt(f"{prefix}.A.{comm.rank}", a_local[:filled])
        np.savetxt(f"{prefix}.b.{comm.rank}", b_local[:filled])
    with log.phase("K_MM and its Cholesky factor"):
        u = rank0_only(comm, cholesky_of_kmm, ctx.coords, solver.sparse_jitter, ctx.offsets, log.warn)
        log_u = log_u_diag(u) if comm.rank == 0 else 0.0
        if comm.size == 1:
            a_local[filled:filled + n_sparse] = u
        else:
            rows = comm.scatter_rows(u if comm.rank == 0 else None, dist.u_count, root=0)
            a_local[filled:filled + rows.shape[0]] = rows
        del u
    with log.phase("Solving by QR" + (" (ScaLAPACK)" if comm.size > 1 else " (LAPACK)")):
        with log.heartbeat("QR", rank0_call(comm, _qr_estimate, int(ctx.frame_rows.sum()) + n_sparse, n_sparse,
                                            comm.size)):
            extras = {}
            alpha, r, r_factor = _dense_qr(ctx, a_local, b_local, mb, nb, extras)
    del a_local
    data_stats = comm.allreduce_sum(sink.data_stats) if comm.size > 1 else sink.data_stats
    log_u = comm.bcast(log_u, root=0) if comm.size > 1 else log_u
    evidence = _evidence(ctx, extras["residual_sq"], extras["log_abs_r_diag"], log_u, data_stats)
    table = {"target rows": float(n_data_local), "local rows of A": float(n_local),
             "A bytes": 8.0 * n_local * n_sparse}
    report = {"linear_solver": "dense", "block_sizes": {"mb": mb, "nb": nb, "local_rows": n_local},
              "residual": float(np.sqrt(extras["residual_sq"]))}
    if evidence is not None:
        report["log_marginal_likelihood"] = evidence
    return Solution(alpha=alpha, r=r, table=table, report=report, r_factor=r_factor, log_likelihood=evidence)


def _qr_estimate(n_rows, n_cols, n_ranks):
    """(seconds, how) the QR should take, from a small dgeqrf sample; None for a short QR."""
    from ..linalg.serial import qr_flops, sampled_qr_rate
    flops = qr_flops(n_rows, n_cols)
    if flops < 2e10:  # a few seconds at most: no heartbeat will print
        return None
    rate = sampled_qr_rate(n_cols)
    per_rank = " per rank" if n_ranks > 1 else ""
    return flops / (rate * n_ranks), f"estimated: {flops:.2g} flops at {rate / 1e9:.0f} GFLOP/s{per_rank}"


def _dense_qr(ctx, a_local, b_local, mb, nb, extras):
    """α, R for export_covariance (or None), and R where the solve has it on rank 0 (or None)."""
    comm, log = ctx.comm, ctx.log
    norm, export = ctx.config.solver.condition_number_norm, ctx.config.outputs.export_covariance
    if comm.size == 1:
        from ..linalg.serial import qr_solve
        alpha, r = qr_solve(a_local, b_local, extras=extras)
        _log_condition_number(log, norm, r)
        return alpha, (r if export else None), r
    from ..linalg.scalapack import qr_solve as sl_qr_solve
    if norm:
        log("warning: condition_number_norm is not computed with MPI (as in gap_fit)")
    out = sl_qr_solve(comm, a_local, b_local, ctx.n_sparse, mb, nb, return_r=export, extras=extras)
    if export:
        return out[0], out[1], out[1]
    return out, None, None


def _log_condition_number(log, norm: str, r):
    if norm:
        from scipy.linalg import lapack
        rcond, _ = lapack.dtrcon(r, norm=norm, uplo="U")
        log(f"Condition number (log10) of the triangular factor R (norm {norm}): {-np.log10(rcond):.4f}")


# --- the streaming path --------------------------------------------------------------------
def remaining_frames(ctx: FitContext, done: np.ndarray) -> np.ndarray:
    """This rank's share of the frames with targets that are not yet folded (greedy balance)."""
    from ..data.distribute import assign_frames
    todo = np.setdiff1d(np.nonzero(ctx.frame_rows > 0)[0], done)
    owner = assign_frames(ctx.frame_rows[todo], ctx.comm.size)
    return todo[owner == ctx.comm.rank]


def solve_streaming(ctx: FitContext, stats, run=None) -> Solution:
    """Fold this rank's frames into a triangular factor, combine the ranks' factors and solve.

    With a checkpoint ``run`` (:class:`gapfit.solve.checkpoint.CheckpointRun`), the frames a previous run
    folded are skipped (rank 0 folds the saved factors instead), parts are saved as the folding
    goes, a signal stops every rank with a checkpoint, and the finished factor is saved.
    """
    comm, log, n_sparse = ctx.comm, ctx.log, ctx.n_sparse
    done = run.done if run is not None else np.zeros(0, dtype=np.int64)
    if run is not None and run.adopt:  # each rank goes on with its own frames, as if never stopped
        frames = ctx.my_frames()[~np.isin(ctx.my_frames(), run.my_saved_frames())]
    elif done.size:  # the frames left, shared among this run's ranks
        frames = remaining_frames(ctx, done)
    else:
        frames = ctx.my_frames()
    n_rows_local = int(ctx.frame_rows[frames].sum())
    log(f"Linear system (streaming): {int(ctx.frame_rows.sum())} target rows + {n_sparse} rows of U folded into "
        f"the {n_sparse + 1}x{n_sparse + 1} triangular factor ({human_bytes(streaming_bytes(n_sparse))} per rank)")
    factor = TriangularFactor(n_sparse)
    fold_u = not (run is not None and run.u_folded)
    with log.phase("K_MM and its Cholesky factor"):
        u = rank0_only(comm, cholesky_of_kmm, ctx.coords, ctx.config.solver.sparse_jitter, ctx.offsets, log.warn)
        log_u = log_u_diag(u) if comm.rank == 0 else 0.0
        if fold_u and comm.rank == 0:
            factor.add_rows(np.hstack([u, np.zeros((n_sparse, 1))]))
        del u
    if run is not None:
        run.begin(factor, common_arrays(ctx), has_u=comm.rank == 0)
        if done.size:
            log(f"  {done.size} frames were folded before; {comm.allreduce_sum(frames.size) if comm.size > 1 else frames.size} "
                f"to go")
    with log.phase("Covariance K_NM, folded (descriptors, kernel rows, QR updates)"):
        t0 = time.perf_counter()
        after = (lambda ids: run.after_chunk(factor, ids)) if run is not None else None
        _produce(ctx, factor, stats, frames, n_rows_local, after)
        if run is not None:  # a stopped run saves its buffered rows unfolded: resuming rounds as without the stop
            run.end(factor, int(np.count_nonzero(ctx.frame_rows > 0)))
        factor.flush()
        stats["fold_seconds"] = time.perf_counter() - t0 - stats["descriptor_seconds"] - stats["kernel_seconds"]
    _log_rates(ctx, stats)
    if factor.rows != n_rows_local:
        raise DataError(f"internal inconsistency: {factor.rows} rows built, {n_rows_local} expected")
    with log.phase("Combining the ranks' factors and solving" if comm.size > 1 else "Solving"):
        total = reduce_factors(comm, factor) if comm.size > 1 else factor
        alpha, residual, r = rank0_call(comm, _solve_factor, total, ctx.config, log)
    log(f"Residual ‖Aα − b‖ = {residual:.6g}")
    log_r, data_stats, log_u = rank0_call(comm, lambda: (total.log_abs_r_diag(), total.data_stats.tolist(), log_u))
    evidence = _evidence(ctx, residual ** 2, log_r, log_u, data_stats)
    if run is not None:
        run.finish(total, np.nonzero(ctx.frame_rows > 0)[0])
    table = {"target rows": float(n_rows_local), "factor bytes": float(factor.nbytes),
             "fold s": stats["fold_seconds"]}
    report = {"linear_solver": "streaming", "residual": residual}
    if evidence is not None:
        report["log_marginal_likelihood"] = evidence
    return Solution(alpha=alpha, r=r, table=table, report=report, factor=total if comm.rank == 0 else None,
                    r_factor=total.r_factor() if comm.rank == 0 else None, log_likelihood=evidence)


def common_arrays(ctx: FitContext) -> dict:
    """What a checkpoint keeps of the sparse-point phase: the points, their cutoffs, θ, e0 and the seed."""
    arrays = {"e0": np.asarray(ctx.e0, dtype=float), "species": np.asarray(ctx.species, dtype=np.int64),
              "rnd_seed": np.int64(ctx.rnd_seed),
              "pieces": np.array([" ".join(c.spec.piece.split()) for c in ctx.coords])}
    for k, c in enumerate(ctx.coords):
        arrays[f"x{k}"] = c.kernel.sparse_x
        arrays[f"cutoff{k}"] = c.sparse_cutoff
        theta = getattr(c.kernel, "theta", None)
        arrays[f"theta{k}"] = np.zeros(0) if theta is None else np.asarray(theta, dtype=float)
        arrays[f"index{k}"] = np.asarray(c.sparse_index if c.sparse_index is not None else [], dtype=np.int64)
    return arrays


def _solve_factor(factor: TriangularFactor, config: FitConfig, log):
    norm, export = config.solver.condition_number_norm, config.outputs.export_covariance
    alpha, residual = factor.solve()
    r = factor.r_factor() if (export or norm) else None
    if r is not None:
        _log_condition_number(log, norm, r)
    return alpha, residual, (r if export else None)


def memory_paths(n_rows: int, n_sparse: int, n_ranks: int) -> List[tuple]:
    """(path, bytes per rank) of both solvers, for dryrun=T."""
    dense = 8.0 * (n_rows / max(n_ranks, 1) + n_sparse) * n_sparse
    return [("dense", dense), ("streaming", streaming_bytes(n_sparse))]

