"""The streaming path of the least-squares phase (see :mod:`gapfit.solve.linear_system`)."""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from ..config.fit_config import FitConfig
from ..data.distribute import assign_frames
from ..errors import DataError
from ..linalg.triangular import TriangularFactor
from ..runtime.report import human_bytes
from .fold import FoldAndSolve
from .linear_system import (FitContext, Solution, cholesky_of_kmm, log_condition_number, log_evidence, log_rates,
                            produce_rows, streaming_bytes)
from .sinks import SINKS


def remaining_frames(ctx: FitContext, done: np.ndarray) -> np.ndarray:
    """This rank's share of the frames with targets that are not yet folded (greedy balance)."""
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
    frames = _frames_to_fold(ctx, run)
    n_rows_local = int(ctx.frame_rows[frames].sum())
    log(f"Linear system (streaming): {int(ctx.frame_rows.sum())} target rows + {n_sparse} rows of U folded into "
        f"the {n_sparse + 1}x{n_sparse + 1} triangular factor ({human_bytes(streaming_bytes(n_sparse))} per rank)")
    system = FoldAndSolve(comm, n_sparse)
    with log.phase("K_MM and its Cholesky factor"):
        system.fold_k_mm(lambda: cholesky_of_kmm(ctx.coords, ctx.config.solver.sparse_jitter, ctx.offsets, log.warn),
                         fold=not (run is not None and run.u_folded))
    _fold_rows(ctx, system.factor, stats, frames, n_rows_local, run)
    with log.phase("Combining the ranks' factors and solving" if comm.size > 1 else "Solving"):
        solved = system.solve(lambda total: _r_of(total, ctx.config, log))
    log(f"Residual ‖Aα − b‖ = {solved.residual:.6g}")
    evidence = log_evidence(ctx, solved.residual ** 2, solved.log_abs_r_diag, solved.log_u, solved.data_stats)
    total = solved.factor
    if run is not None:
        run.finish(total, np.nonzero(ctx.frame_rows > 0)[0])
    table = {"target rows": float(n_rows_local), "factor bytes": float(system.factor.nbytes),
             "fold s": stats["fold_seconds"]}
    report = {"linear_solver": "streaming", "residual": solved.residual}
    if evidence is not None:
        report["log_marginal_likelihood"] = evidence
    return Solution(alpha=solved.alpha, r=solved.extra, table=table, report=report, factor=total,
                    r_factor=total.r_factor() if comm.rank == 0 else None, log_likelihood=evidence)


def _frames_to_fold(ctx: FitContext, run) -> np.ndarray:
    """This rank's frames still to fold: all its own, or those a checkpoint's run has not folded."""
    done = run.done if run is not None else np.zeros(0, dtype=np.int64)
    if run is not None and run.adopt:  # each rank goes on with its own frames, as if never stopped
        return ctx.my_frames()[~np.isin(ctx.my_frames(), run.my_saved_frames())]
    if done.size:  # the frames left, shared among this run's ranks
        return remaining_frames(ctx, done)
    return ctx.my_frames()


def _fold_rows(ctx: FitContext, factor: TriangularFactor, stats, frames, n_rows_local: int, run) -> None:
    """Collective: this rank's rows folded into ``factor``, the checkpoint saved as they go."""
    comm, log = ctx.comm, ctx.log
    if run is not None:
        run.begin(factor, common_arrays(ctx), has_u=comm.rank == 0)
        if run.done.size:
            to_go = comm.allreduce_sum(frames.size) if comm.size > 1 else frames.size
            log(f"  {run.done.size} frames were folded before; {to_go} to go")
    with log.phase("Covariance K_NM, folded (descriptors, kernel rows, QR updates)"):
        t0 = time.perf_counter()
        after = (lambda ids: run.after_chunk(factor, ids)) if run is not None else None
        produce_rows(ctx, SINKS["streaming"](factor), stats, frames, n_rows_local, after)
        if run is not None:  # a stopped run saves its buffered rows unfolded: resuming rounds as without the stop
            run.end(factor, int(np.count_nonzero(ctx.frame_rows > 0)))
        factor.flush()
        stats["fold_seconds"] = time.perf_counter() - t0 - stats["descriptor_seconds"] - stats["kernel_seconds"]
    log_rates(ctx, stats)
    if factor.rows != n_rows_local:
        raise DataError(f"internal inconsistency: {factor.rows} rows built, {n_rows_local} expected")


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


def _r_of(factor: TriangularFactor, config: FitConfig, log) -> Optional[np.ndarray]:
    """Rank 0, after the solve: R for export_covariance (else None); its condition number logged if asked."""
    norm, export = config.solver.condition_number_norm, config.outputs.export_covariance
    r = factor.r_factor() if (export or norm) else None
    if r is not None:
        log_condition_number(log, norm, r)
    return r if export else None
