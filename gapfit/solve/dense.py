"""The dense path of the least-squares phase (see :mod:`gapfit.solve.linear_system`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.distribute import distribute
from ..errors import DataError, NumericalError
from ..linalg.scalapack import qr_solve as sl_qr_solve
from ..linalg.scalapack import scalapack_info
from ..linalg.serial import qr_flops, qr_solve, sampled_qr_rate
from ..runtime.parallel import rank0_call, rank0_only
from ..runtime.report import human_bytes
from .fold import log_u_diag
from .linear_system import (FitContext, Solution, cholesky_of_kmm, log_condition_number, log_evidence, log_rates,
                            produce_rows)
from .sinks import SINKS


def block_sizes(unified_rows: int, n_sparse: int, mb: int, nb: int):
    """gap_fit's ScaLAPACK blocks: mb (0 → all local rows), nb (0 → M); local rows padded to a multiple of mb."""
    mb = mb or max(unified_rows, 1)
    nb = nb or n_sparse
    n_local = -(-max(unified_rows, 1) // mb) * mb
    return mb, nb, n_local


def solve_dense(ctx: FitContext, stats) -> Solution:
    """This rank's rows of A = [Σ^-1/2 K_NM ; U] (U's rows scattered into the gaps), then QR by LAPACK
    (one process) or ScaLAPACK (a P×1 grid)."""
    comm, log, n_sparse = ctx.comm, ctx.log, ctx.n_sparse
    layout = _layout(ctx)
    a_local, b_local = _allocate(layout.n_local, n_sparse)
    with log.phase("Covariance K_NM (descriptors and kernel rows)"):
        sink = SINKS["dense"](a_local, b_local)
        produce_rows(ctx, sink, stats, ctx.my_frames(), layout.n_data_local)
    log_rates(ctx, stats)
    if sink.rows != layout.n_data_local:
        raise DataError(f"internal inconsistency: {sink.rows} rows built, {layout.n_data_local} expected")
    if ctx.config.outputs.dump_prefix:
        prefix = ctx.config.outputs.dump_prefix
        np.savetxt(f"{prefix}.A.{comm.rank}", a_local[:sink.rows])
        np.savetxt(f"{prefix}.b.{comm.rank}", b_local[:sink.rows])
    with log.phase("K_MM and its Cholesky factor"):
        log_u = _u_rows(ctx, a_local, sink.rows, layout.u_count)
    with log.phase("Solving by QR" + (" (ScaLAPACK)" if comm.size > 1 else " (LAPACK)")):
        with log.heartbeat("QR", rank0_call(comm, _qr_estimate, int(ctx.frame_rows.sum()) + n_sparse, n_sparse,
                                            comm.size)):
            extras = {}
            alpha, r, r_factor = _dense_qr(ctx, a_local, b_local, layout.mb, layout.nb, extras)
    del a_local
    data_stats = comm.allreduce_sum(sink.data_stats) if comm.size > 1 else sink.data_stats
    log_u = comm.bcast(log_u, root=0) if comm.size > 1 else log_u
    evidence = log_evidence(ctx, extras["residual_sq"], extras["log_abs_r_diag"], log_u, data_stats)
    table = {"target rows": float(layout.n_data_local), "local rows of A": float(layout.n_local),
             "A bytes": 8.0 * layout.n_local * n_sparse}
    report = {"linear_solver": "dense", "block_sizes": {"mb": layout.mb, "nb": layout.nb, "local_rows": layout.n_local},
              "residual": float(np.sqrt(extras["residual_sq"]))}
    if evidence is not None:
        report["log_marginal_likelihood"] = evidence
    return Solution(alpha=alpha, r=r, table=table, report=report, r_factor=r_factor, log_likelihood=evidence)


@dataclass(frozen=True)
class _Layout:
    """This rank's rows of A: its data rows, its share of U's rows, ScaLAPACK's blocks and the padded total."""

    n_data_local: int
    u_count: np.ndarray  # U's rows on every rank
    mb: int
    nb: int
    n_local: int


def _layout(ctx: FitContext) -> _Layout:
    comm, log, n_sparse, solver = ctx.comm, ctx.log, ctx.n_sparse, ctx.config.solver
    dist = distribute(ctx.frame_rows, comm.size, n_sparse, owner=ctx.owner)
    if comm.size == 1:
        n_local = int(ctx.frame_rows.sum()) + n_sparse
        mb = nb = 0
    else:
        mb, nb, n_local = block_sizes(dist.unified_rows, n_sparse, solver.blocksize_rows, solver.blocksize_cols)
        log(scalapack_info(comm, mb, nb)["text"])
        log(f"  rows per rank: {', '.join(str(int(r)) for r in dist.data_rows)} data + "
            f"{', '.join(str(int(u)) for u in dist.u_count)} of U, padded to {n_local}")
    log(f"Linear system (dense): {int(ctx.frame_rows.sum())} target rows + {n_sparse} rows of U, {n_sparse} columns; "
        f"A needs {human_bytes(8.0 * n_local * n_sparse)} per rank")
    return _Layout(n_data_local=int(dist.data_rows[comm.rank]), u_count=dist.u_count, mb=mb, nb=nb, n_local=n_local)


def _allocate(n_local: int, n_sparse: int):
    try:
        return np.zeros((n_local, n_sparse), order="F"), np.zeros(n_local)
    except MemoryError:
        raise NumericalError(f"cannot allocate A ({n_local}x{n_sparse}, {human_bytes(8.0 * n_local * n_sparse)}): "
                             f"use linear_solver=streaming, more MPI ranks or fewer sparse points") from None


def _u_rows(ctx: FitContext, a_local: np.ndarray, filled: int, u_count: np.ndarray) -> float:
    """Collective: U (K_MM = UᵀU, rank 0) into the rows after this rank's data; Σ log U_ii (rank 0)."""
    comm, log = ctx.comm, ctx.log
    u = rank0_only(comm, cholesky_of_kmm, ctx.coords, ctx.config.solver.sparse_jitter, ctx.offsets, log.warn)
    log_u = log_u_diag(u) if comm.rank == 0 else 0.0
    if comm.size == 1:
        a_local[filled:filled + ctx.n_sparse] = u
    else:
        rows = comm.scatter_rows(u if comm.rank == 0 else None, u_count, root=0)
        a_local[filled:filled + rows.shape[0]] = rows
    return log_u


def _qr_estimate(n_rows, n_cols, n_ranks):
    """(seconds, how) the QR should take, from a small dgeqrt sample; None for a short QR."""
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
        alpha, r = qr_solve(a_local, b_local, extras=extras)
        log_condition_number(log, norm, r)
        return alpha, (r if export else None), r
    if norm:
        log("warning: condition_number_norm is not computed with MPI (as in gap_fit)")
    out = sl_qr_solve(comm, a_local, b_local, ctx.n_sparse, mb, nb, return_r=export, extras=extras)
    if export:
        return out[0], out[1], out[1]
    return out, None, None
