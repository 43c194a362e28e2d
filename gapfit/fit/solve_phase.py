"""The least-squares phase of a fit: the context of the solve (with the e0 offsets of
``e0_method=joint`` and the kernel-row cache for refits decided before it starts), the dense or
streaming path, and α split over the coordinates (:mod:`gapfit.solve.linear_system`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from ..config.fit_config import FitConfig
from ..data.e0 import SpeciesOffsets
from ..runtime.report import Reporter, human_bytes
from ..solve.checkpoint import CheckpointRun
from ..solve.dense import solve_dense
from ..solve.linear_system import FitContext, Solution, choose_path
from ..solve.streaming import solve_streaming
from ..solve.sinks import SINKS
from .preflight import FitSetup
from .sparse_phase import SparsePoints
from .training_data import TrainingData


@dataclass(frozen=True)
class FitSolution:
    """The solve's context and result, α per coordinate, and e0 (with the fitted offsets, and before)."""

    ctx: FitContext
    solution: Solution
    stats: Dict[str, float]  # descriptor and kernel seconds, GEMM flops (gapfit.solve.rows)
    alphas: Tuple[np.ndarray, ...]
    e0: np.ndarray
    e0_base: np.ndarray


def solve_phase(config: FitConfig, setup: FitSetup, data: TrainingData, sparse: SparsePoints,
                run: Optional[CheckpointRun], comm, log: Reporter, keep_kernel_rows: bool = False,
                extends: Optional[dict] = None) -> FitSolution:
    """Collective: α of the fit."""
    n_sparse = sparse.n_sparse
    species = tuple(int(z) for z in extends["species"]) if extends is not None else data.species
    offsets = SpeciesOffsets(species, n_sparse) if config.targets.e0.fits_offsets else None
    if offsets is not None:
        log(f"e0_method=joint: {offsets.n_columns} e0 offsets fitted with the GP (columns {n_sparse + 1}"
            f"..{n_sparse + offsets.n_columns}; prior σ {offsets.prior_sigma:g} eV about the least-squares e0)")
    n_columns = n_sparse + (offsets.n_columns if offsets is not None else 0)
    n_rows = int(data.frame_rows.sum())
    path = "streaming" if run is not None else choose_path(config.solver.path, n_rows, n_columns, comm.size, log)
    cache = None
    if keep_kernel_rows:
        my_rows = int(data.frame_rows[data.my_frames].sum())
        cache = SINKS["cache"](n_columns, my_rows)
        log(f"Keeping the kernel rows for refits ({human_bytes(8.0 * my_rows * n_columns)} per rank, "
            f"{'in memory' if cache.in_memory else 'in a temporary file'})")
    ctx = FitContext(comm=comm, log=log, config=config, source=data.source, entries=data.entries, owner=data.owner,
                     frame_rows=data.frame_rows, coords=sparse.coords, e0=sparse.e0, max_cutoff=data.max_cutoff,
                     core=setup.core, species=species, row_cache=cache, offsets=offsets, rnd_seed=sparse.seed)
    stats: Dict[str, float] = {}
    solution = solve_dense(ctx, stats) if path == "dense" else solve_streaming(ctx, stats, run)
    alphas = tuple(solution.alpha[c.column:c.column + c.n_sparse] for c in sparse.coords)
    e0 = sparse.e0
    if offsets is not None:
        log(offsets.describe(sparse.e0, solution.alpha))
        e0 = offsets.e0(sparse.e0, solution.alpha)
    return FitSolution(ctx=ctx, solution=solution, stats=stats, alphas=alphas, e0=e0, e0_base=sparse.e0)
