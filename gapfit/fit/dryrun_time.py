"""``dryrun=T``: the wall time each phase of the fit should take, measured on a sample of the data.

Rank 0 runs the fit's own code on frames spread through its share (about SAMPLE_ATOMS atoms), with
stand-in sparse points (its sample's own descriptors, as many per coordinate as the fit will have):

* the sparse-point phase: descriptor values of every frame (the sample's time per atom, times the
  rank's atoms), plus CUR's QR of each cur_points coordinate's candidates (2nd² flops at the rate of
  a sampled dgeqrt);
* the covariance phase: descriptors with gradients and K_NM rows (the producer, timed on the sample's
  rows and scaled by the rank's rows), plus the fold (2NM² flops at the rate of one block folded
  into an (M+1)² factor) or the dense QR (at a sampled dgeqrt's rate);
* the training-error pass: descriptors with gradients of the atoms it scores (training_errors_atoms),
  at the sample's rate per atom, and one kernel evaluation per environment.

Frames are balanced over the ranks by rows, so rank 0's share stands for every rank's.  What is not
estimated (reading the data, sparse methods other than CUR, MPI communication) is small in the fits
this was checked on (``benchmarks/dryrun_prediction.py`` prints predicted against measured times).
"""

from __future__ import annotations

import time
from typing import List

import numpy as np

from ..descriptors.neighbours import neighbour_list
from ..kernels.covariance import Coordinate
from ..kernels.functions import make_kernel
from ..linalg.serial import qr_flops, sampled_qr_rate
from ..linalg.triangular import TriangularFactor
from ..runtime.parallel import SerialComm
from ..runtime.report import Reporter
from ..solve.rows import RowPlan, kernel_row_chunks

#: atoms of rank 0's frames the estimate runs the fit's code on
SAMPLE_ATOMS = 1500


def _sample(data, atoms: int) -> np.ndarray:
    """Frames spread evenly through rank 0's share, about ``atoms`` atoms in all (one at least)."""
    mine = np.asarray(data.my_frames)
    sizes = np.array([data.entries[f].n_atoms for f in mine], dtype=np.int64)
    if not mine.size or sizes.sum() <= atoms:
        return mine
    n = max(1, int(round(mine.size * atoms / sizes.sum())))
    return mine[((np.arange(n) + 0.5) * mine.size / n).astype(np.int64)]


def _stand_in_coordinates(data, frames, m_per_coordinate) -> tuple:
    """Coordinates with kernels over stand-in sparse points (the sample's own descriptor values), and
    the seconds the sample's descriptor values took."""
    values: List[list] = [[] for _ in data.coords]
    start = time.perf_counter()
    for frame in data.source.read([data.entries[f] for f in frames]):
        nl = neighbour_list(frame.positions, frame.cell, frame.pbc, data.max_cutoff)
        for k, c in enumerate(data.coords):
            values[k].append(c.descriptor.calc(frame, nl, grad=False).x)
    seconds = time.perf_counter() - start
    out, column = [], 0
    for c, xs, m in zip(data.coords, values, m_per_coordinate):
        x = np.vstack(xs) if xs else np.zeros((0, c.descriptor.dimensions))
        d = c.descriptor.dimensions
        x = x[np.arange(m) % x.shape[0]] if x.shape[0] else np.ones((m, d))
        gp = c.spec.gp
        theta = np.ones(d) if gp.covariance_type in ("ard_se", "pp") else None
        kernel = make_kernel(gp.covariance_type, gp.delta, x, theta=theta, zeta=gp.zeta, f0=gp.f0,
                             permutations=c.descriptor.permutations)
        out.append(Coordinate(spec=c.spec, descriptor=c.descriptor, kernel=kernel, sparse_cutoff=np.ones(m), column=column))
        column += m
    return tuple(out), seconds


def _fold_rate(n_columns: int) -> float:
    """FLOP/s of folding one full block of random rows into an (M+1)² factor, as the fit folds."""
    factor = TriangularFactor(n_columns)
    rows = np.random.default_rng(0).standard_normal((factor.block_rows, n_columns + 1))
    factor.add_rows(rows[: n_columns + 1])  # a first block makes R non-zero
    factor.flush()
    start = time.perf_counter()
    factor.add_rows(rows)
    factor.flush()
    return 2.0 * rows.shape[0] * (n_columns + 1) ** 2 / max(time.perf_counter() - start, 1e-6)


def _error_pass_seconds_per_atom(coords, data, frames) -> float:
    """Seconds per atom of the training-error pass's own code (a model over the stand-in sparse points)."""
    from ..model.calculator import GapPotential  # lazy, as the fit's error pass imports it
    from ..model.gap_xml import CoordinateModel, GapModel
    models = [CoordinateModel(descriptor=c.spec.piece, covariance_type=c.kernel.covariance_type, delta=c.spec.gp.delta,
                              f0=c.spec.gp.f0, sparse_x=c.kernel.sparse_x, alpha=np.zeros(c.n_sparse),
                              sparse_cutoff=np.ones(c.n_sparse), theta=getattr(c.kernel, "theta", None),
                              zeta=getattr(c.kernel, "zeta", None), permutations=c.descriptor.permutations)
              for c in coords]
    potential = GapPotential(GapModel(label="dryrun", e0=data.e0, coordinates=models))
    atoms = 0
    start = time.perf_counter()
    for frame in data.source.read([data.entries[f] for f in frames]):
        potential.evaluate(frame)
        atoms += len(frame)
    return (time.perf_counter() - start) / max(atoms, 1)


def wall_time_estimate(config, setup, data, comm, log, m_per_coordinate, instances, path: str) -> None:
    """Rank 0 prints each phase's estimated wall time (module docstring); ``m_per_coordinate`` and
    ``instances`` per coordinate come from the memory estimate, ``path`` is the solver it chose."""
    if comm.rank != 0:
        return
    frames = _sample(data, SAMPLE_ATOMS)
    coords, values_seconds = _stand_in_coordinates(data, frames, m_per_coordinate)
    n_columns = sum(m_per_coordinate)
    plan = RowPlan(source=data.source, entries=data.entries, coords=coords, names=config.targets.names,
                   sigmas=config.targets.sigmas, e0=data.e0, sigma_per_atom=config.targets.sigma_per_atom,
                   max_cutoff=data.max_cutoff, n_columns=n_columns, core=setup.core,
                   chunk_bytes=config.solver.chunk_bytes)
    stats: dict = {}
    start = time.perf_counter()
    sample_rows = sum(k.shape[0] for k, *_ in kernel_row_chunks(plan, frames, Reporter(SerialComm(), quiet=True), stats, 1))
    rows_seconds = time.perf_counter() - start
    n_atoms = np.array([e.n_atoms for e in data.entries], dtype=np.int64)
    sample_atoms = max(int(n_atoms[frames].sum()), 1)
    rank_atoms, rank_rows = int(n_atoms[data.my_frames].sum()), int(data.frame_rows[data.my_frames].sum())
    all_rows = int(data.frame_rows.sum()) + n_columns
    table = []
    cur = [(k, c) for k, c in enumerate(data.coords) if c.spec.gp.sparse_method == "cur_points"]
    cur_seconds = sum(qr_flops(int(instances[k]), c.descriptor.dimensions) / sampled_qr_rate(c.descriptor.dimensions)
                      for k, c in cur)
    table.append(["sparse points", values_seconds * rank_atoms / sample_atoms + cur_seconds,
                  f"descriptor values of {rank_atoms} atoms" + (f", CUR's QR of {len(cur)} coordinate(s)' candidates"
                                                               if cur else "")])
    table.append(["descriptors and K_NM rows", rows_seconds * rank_rows / max(sample_rows, 1),
                  f"{rank_rows} rows at the sample's {sample_rows / max(rows_seconds, 1e-9):.0f} rows/s"])
    if path == "streaming":
        rate = _fold_rate(n_columns)
        table.append(["fold into the (M+1)² factor", 2.0 * rank_rows * (n_columns + 1) ** 2 / rate,
                      f"2NM² flops at {rate / 1e9:.0f} GFLOP/s"])
    else:
        rate = sampled_qr_rate(n_columns)
        table.append(["dense QR", qr_flops(all_rows, n_columns) / (rate * comm.size),
                      f"{qr_flops(all_rows, n_columns):.2g} flops at {rate / 1e9:.0f} GFLOP/s"
                      + (" per rank" if comm.size > 1 else "")])
    if config.outputs.training_errors:
        budget = config.outputs.training_errors_atoms
        scored = int(n_atoms.sum()) if budget <= 0 else min(int(n_atoms.sum()), budget)
        per_atom = _error_pass_seconds_per_atom(coords, data, frames)
        table.append(["training errors", per_atom * scored / comm.size, f"{scored} atoms scored"])
    total = sum(row[1] for row in table)
    log.title("Wall time estimate (dryrun=T)")
    log(f"  measured on {len(frames)} of rank 0's frames ({sample_atoms} atoms) with stand-in sparse points, "
        f"scaled to its share ({rank_atoms} atoms, {rank_rows} rows) on {comm.size} rank(s):")
    log.table(["phase", "seconds", "from"], [[name, f"{sec:.3g}", how] for name, sec, how in table])
    log(f"  total about {total:.3g} s ({total / 60:.1f} min), plus reading the data"
        f"{' and the ranks combining their factors' if comm.size > 1 and path == 'streaming' else ''}")
