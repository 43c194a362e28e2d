"""The sparse-point phase of a fit: a checkpoint to resume from, the random seed, the sparse points of
every coordinate (:mod:`gapfit.sparse.candidates`, or the checkpoint's), and the coordinates' kernels
and columns in A, which do not change after this phase."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np

from ..config.fit_config import FitConfig
from ..errors import ConfigError, DataError
from ..kernels.covariance import Coordinate
from ..kernels.functions import make_kernel
from ..runtime.heap import release_freed_memory
from ..runtime.parallel import rank0_call
from ..runtime.report import Reporter
from ..solve.checkpoint import CheckpointRun, StopRequest
from ..sparse.candidates import sparse_points
from ..sparse.sparsify import QuipRandom, SparseChoice, choose_seed
from .preflight import FitSetup
from .training_data import TrainingData


@dataclass(frozen=True)
class SparsePoints:
    """The fitted coordinates (kernels with their sparse points, columns in A), and how they were drawn."""

    coords: Tuple[Coordinate, ...]
    seed: int
    command_line: str  # the one the model records (a drawn seed appended)
    e0: np.ndarray  # the data's, or a resumed checkpoint's

    @property
    def n_sparse(self) -> int:
        return sum(c.n_sparse for c in self.coords)


def open_checkpoint(config: FitConfig, setup: FitSetup, data: TrainingData, comm, log: Reporter, stop: StopRequest,
                    extends: Optional[dict] = None) -> Optional[CheckpointRun]:
    """The checkpoint this fit resumes from or writes (checkpoint_file), or the fit it extends."""
    if not config.checkpoint.file and extends is None:
        return None
    data_path = getattr(data.source, "path", None)
    run = None
    if config.checkpoint.file:
        run = CheckpointRun.open(comm, config, data_path, setup.core_text, stop)
    if extends is not None and (run is None or not run.resuming):
        run = CheckpointRun.extension(comm, config, extends, data_path, setup.core_text, stop)
    if run.resuming:
        log(run.describe())
    return run


def choose_sparse(config: FitConfig, data: TrainingData, run: Optional[CheckpointRun], comm,
                  log: Reporter) -> SparsePoints:
    """Collective: the sparse points of every coordinate, and its kernel."""
    resuming = run is not None and run.resuming
    e0 = np.asarray(run.common["e0"], dtype=float) if resuming else data.e0
    seed, command_line = _random_seed(comm, config, run)
    log(f"Random seed = {seed}" + ("" if command_line == config.command_line else
                                   " (drawn: the model's command line records it as rnd_seed)"))
    if resuming:
        coords, choices, thetas = _saved_sparse_points(data.coords, run.common, config.checkpoint.file)
    else:
        with log.phase("Sparse points"):
            rng = QuipRandom(seed)
            rng.quip_skip(gap_fit_stream_skip(data.coords, len(data.entries)))
            choices, thetas = sparse_points(comm, log, data.source, data.entries, data.labels, data.my_frames,
                                            data.coords, list(data.config_type_names), data.max_cutoff,
                                            rng, config.sparse)
        coords, choices, thetas = _without_empty(log, data.coords, choices, thetas)
    coords = _with_kernels(coords, choices, thetas)
    log(f"Sparse points: {', '.join(str(c.n_sparse) for c in coords)} (total M = {sum(c.n_sparse for c in coords)})")
    release_freed_memory()  # the candidates were many small arrays: hand their pages back before A
    return SparsePoints(coords=coords, seed=seed, command_line=command_line, e0=e0)


def gap_fit_stream_skip(coords, n_frames: int) -> int:
    """The draws gap_fit's random stream has made before its first sparse choice.

    A soap with R_mix/Z_mix re-seeds QUIP's stream with its own state in every form_W call, which
    advances it by ``rng_draws_per_form_w`` (100) draws; gap_fit calls form_W 3 + 2·n_frames times per
    such coordinate before gp_sparsify (memory estimate, fit_data_from_xyz, permutations, and two per
    frame's calc; docs/dev/soap_compression.md §2.4), and once more for sparse_method=file or index_file
    (get_n_sparseX_for_files, gap_fit_module.F90:1778).  Skipping them keeps cur_points and uniform
    making gap_fit's choices."""
    total = 0
    for c in coords:
        draws = getattr(c.descriptor, "rng_draws_per_form_w", 0)
        if draws:
            total += draws * (3 + 2 * n_frames + int(c.spec.gp.sparse_method in ("file", "index_file")))
    return total


def _random_seed(comm, config: FitConfig, run):
    """The seed of the sparse points' random choices (the same on every rank), and the command line the
    model records: a drawn seed (rnd_seed not positive) is appended to it as ``rnd_seed=``, so that the
    model's own command line fits it again.  A resumed checkpoint keeps its first run's seed."""
    seed = config.sparse.rnd_seed
    if run is not None and run.resuming and "rnd_seed" in run.common:
        seed = int(run.common["rnd_seed"])
    seed = rank0_call(comm, choose_seed, seed)
    drawn = config.sparse.rnd_seed <= 0
    return seed, (f"{config.command_line} rnd_seed={seed}" if drawn else config.command_line)


def _with_kernels(coords, choices, thetas) -> Tuple[Coordinate, ...]:
    """Each coordinate with its kernel (over its sparse points), their cutoffs and indices, and its columns."""
    out, column = [], 0
    for c, choice, theta in zip(coords, choices, thetas):
        gp = c.spec.gp
        try:
            kernel = make_kernel(gp.covariance_type, gp.delta, choice.x, theta=theta, zeta=gp.zeta, f0=gp.f0,
                                 permutations=c.descriptor.permutations)
        except ValueError as exc:  # a θ the permutations do not leave alone (gap_fit: K_MM fails to factorise)
            raise ConfigError(f"{c.spec.where}: {exc}: give theta_uniform or a single theta_fac value") from None
        c = replace(c, kernel=kernel, sparse_cutoff=np.asarray(choice.cutoff, dtype=float),
                    sparse_index=choice.index, column=column)
        out.append(c)
        column += c.n_sparse
    return tuple(out)


def _saved_sparse_points(coords, common, path):
    """The sparse points, cutoffs, indices and θ a checkpoint saved, matched to the coordinates by descriptor."""
    pieces = [str(p) for p in common["pieces"]]
    by_piece = {" ".join(c.spec.piece.split()): c for c in coords}
    missing = [p for p in pieces if p not in by_piece]
    if missing:
        raise ConfigError(f"checkpoint_file '{path}' has sparse points of a descriptor this fit does not have: "
                          f"'{missing[0]}'")
    kept, choices, thetas = [], [], []
    for k, piece in enumerate(pieces):
        index = common[f"index{k}"]
        choices.append(SparseChoice(common[f"x{k}"], common[f"cutoff{k}"], index if index.size else None))
        thetas.append(common[f"theta{k}"] if common[f"theta{k}"].size else None)
        kept.append(by_piece[piece])
    return kept, choices, thetas


def _without_empty(log, coords, choices, thetas):
    """Leave out the coordinates that found no environments in the data.

    A descriptor as given with none is an error; one of several that add_species made (an
    angle_3b triplet of species that never meet, say) is left out with a warning: it would
    contribute nothing (gap_fit fails on it).
    """
    empty = [ch.index is not None and ch.x.shape[0] == 0 for ch in choices]
    found = {}
    for c, e in zip(coords, empty):
        found[c.spec.index] = found.get(c.spec.index, False) or not e
    for c, e in zip(coords, empty):
        text = " ".join(c.spec.piece.split())
        if e and not found[c.spec.index]:
            raise DataError(f"descriptor {c.spec.index} ({text}) found no environments in the data: check its cutoff "
                            f"and species (Z, Z1, Z2)")
        if e:
            log.warn(f"descriptor {c.spec.index} with add_species: '{text}' found no environments in the data and "
                     f"is left out of the model")
    keep = [k for k, e in enumerate(empty) if not e]
    return [coords[k] for k in keep], [choices[k] for k in keep], [thetas[k] for k in keep]
