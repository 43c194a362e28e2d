"""The sparse-point phase: candidates on the ranks that own the frames, the choice on rank 0.

Every rank computes the descriptor values (no gradients) of its own frames; the candidates
are gathered to rank 0 in data order (so an MPI run chooses what a serial run chooses; gap_fit's
rank order with ``mpi_candidate_order=rank``), chosen there by :mod:`gapfit.sparse.sparsify` and
broadcast.  ARD_SE length scales θ come from the options or from all the data.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..config.fit_config import SparseConfig
from ..descriptors.neighbours import neighbour_list
from ..errors import ConfigError
from ..options.syntax import split_fields
from ..runtime.parallel import rank0_call
from ..runtime.spill import RowSpill, drop_pages, take_rows
from .sparsify import SparseChoice, choose_sparse_points

# sparse methods that choose among the data's descriptor instances (not file)
CANDIDATE_METHODS = ("random", "uniform", "none", "index_file", "cur_points", "cur_covariance", "pivot",
                     "kmeans", "fuzzy", "cluster", "covariance")


def config_type_index(label_ct: str, names: List[str]) -> int:
    if label_ct in names:
        return names.index(label_ct)
    return names.index("default")


#: descriptors with more dimensions than this get a pass over the data of their own (their
#: candidates are large even on disk) unless they fit in PASS_BYTES together; runs of smaller ones share a pass
OWN_PASS_DIMENSIONS = 64

#: consecutive high-dimensional coordinates share a pass while their candidates (at most one per atom
#: each: n_atoms × d doubles, in $TMPDIR) take no more than this together.  Each pass reads the data and
#: builds every neighbour list again: on a quarter of InP (inp_small options) the three passes of
#: 3 distance_2b + 2 soap took 5.2 s, 2.9 s of it neighbour lists.  W–Be's soap (263k W atoms, d = 660:
#: 1.4 GB) still gets its own.
PASS_BYTES = 1024 ** 3


def candidate_passes(coords, need, n_atoms: Optional[int] = None) -> List[List[int]]:
    """Coordinates in order, grouped into passes over the data: runs of low-dimensional ones together,
    and high-dimensional ones (soap) together while ``n_atoms`` × their dimensions fit PASS_BYTES
    (each alone when ``n_atoms`` is not given)."""
    passes: List[List[int]] = []
    pass_bytes = 0.0
    for k, c in enumerate(coords):
        if not need[k]:
            continue
        d = c.descriptor.dimensions
        size = 0.0 if d <= OWN_PASS_DIMENSIONS else (8.0 * d * n_atoms if n_atoms is not None else float("inf"))
        follows = passes and passes[-1][-1] == k - 1
        if follows and pass_bytes + size <= PASS_BYTES:
            passes[-1].append(k)
            pass_bytes += size
        else:
            passes.append([k])
            pass_bytes = size
    return passes


class _Candidates:
    """One coordinate's candidates as they come: values and cutoffs in temporary files
    (:mod:`gapfit.runtime.spill`), config types (int16) and (frame, count) pairs in memory."""

    def __init__(self, d: int):
        self.x, self.cutoff = RowSpill(d), RowSpill(1)
        self.config_type: list = []
        self.frame_counts: list = []

    def append(self, frame_index: int, vals, ct: int) -> None:
        self.x.append(vals.x)
        self.cutoff.append(vals.cutoff)
        self.config_type.append(np.full(vals.n_desc, ct, dtype=np.int16))
        self.frame_counts.append((frame_index, vals.n_desc))

    def arrays(self):
        """(x, cutoff, config type, [(frame, count)]); x and cutoff file-backed."""
        ct = np.concatenate(self.config_type) if self.config_type else np.zeros(0, dtype=np.int16)
        self.config_type = []
        return self.x.array(), self.cutoff.array()[:, 0], ct, self.frame_counts


def _compute_candidates(comm, log, source, entries, labels, my_frames, coords, group, config_type_names,
                        max_cutoff, note):
    """This rank's candidates of the coordinates in ``group``: {k: (x, cutoff, config type, [(frame, count)])}."""
    parts = {k: _Candidates(coords[k].descriptor.dimensions) for k in group}
    progress = log.progress(f"candidate descriptors{note}", max(len(my_frames), 1), unit="frames",
                            note=" (rank 0's share)" if comm.size > 1 else "")
    for done, frame in enumerate(source.read([entries[f] for f in my_frames])):
        progress.update(done)
        nl = neighbour_list(frame.positions, frame.cell, frame.pbc, max_cutoff)
        ct = config_type_index(labels[frame.index].config_type, config_type_names)
        for k in group:
            parts[k].append(frame.index, coords[k].descriptor.calc(frame, nl, grad=False), ct)
    progress.close()
    return {k: part.arrays() for k, part in parts.items()}


def _gather_to_spill(comm, local: np.ndarray):
    """Rank 0: every rank's rows of ``local`` (file-backed) in rank order, in a temporary file."""
    spill = RowSpill(local.shape[1]) if comm.rank == 0 else None

    def append(rows):
        spill.append(rows)
        drop_pages(local)
    comm.gather_rows_into(local, append)
    return spill.array() if spill is not None else None


def _gather_in_data_order(comm, local, mpi_candidate_order):
    """Rank 0: every rank's candidates, ordered by frame (gap_fit's rank order with ``mpi_candidate_order=rank``).

    Values and cutoffs are gathered into temporary files a block at a time, so that rank 0 never
    holds all the data's candidates in memory.
    """
    x_loc, c_loc, t_loc, fc = local
    if comm.size == 1:
        return x_loc, c_loc, t_loc  # already in data order
    x_all = _gather_to_spill(comm, x_loc)
    c_all = _gather_to_spill(comm, c_loc[:, None])
    t_all, fc_all = comm.gather_rows(t_loc), comm.gather(fc, root=0)
    if comm.rank != 0:
        return None, None, None
    c_all = c_all[:, 0]
    blocks, start = [], 0
    for rank, rank_list in enumerate(fc_all):
        for frame_id, count in rank_list:
            key = (rank, frame_id) if mpi_candidate_order == "rank" else (frame_id,)
            blocks.append((key, start, count))
            start += count
    blocks.sort()
    order = np.concatenate([np.arange(s, s + n) for _, s, n in blocks]) if blocks else np.zeros(0, int)
    if np.array_equal(order, np.arange(order.size)):
        return x_all, c_all, t_all
    return take_rows(x_all, order), take_rows(c_all[:, None], order)[:, 0], t_all[order]


def sparse_points(comm, log, source, entries, labels, my_frames, coords, config_type_names, max_cutoff, rng,
                  settings: SparseConfig):
    """Candidates on the owning ranks, gathered to rank 0 in data order; selection there; broadcast.

    Candidates live in temporary files (:mod:`gapfit.runtime.spill`) and are read a block at a time; one
    high-dimensional coordinate's are made at a time (:func:`candidate_passes`): its choice is
    made, and its candidates dropped, before the next pass over the data.
    """
    need = [c.spec.gp.sparse_method in CANDIDATE_METHODS or c.spec.gp.theta_rule == "factor" for c in coords]
    passes = candidate_passes(coords, need, int(sum(e.n_atoms for e in entries)))
    pass_of = {k: i for i, group in enumerate(passes) for k in group}
    choices: List[Optional[SparseChoice]] = []
    thetas = []
    held = {}
    for k, c in enumerate(coords):
        d = c.descriptor.dimensions
        x = cut = ct = None
        if need[k]:
            if k not in held:
                group = passes[pass_of[k]]
                note = "" if len(passes) == 1 else f" (pass {pass_of[k] + 1} of {len(passes)}: coordinate" \
                    f"{'s' if len(group) > 1 else ''} {', '.join(str(j + 1) for j in group)})"
                held = _compute_candidates(comm, log, source, entries, labels, my_frames, coords, group,
                                           config_type_names, max_cutoff, note)
            x, cut, ct = _gather_in_data_order(comm, held.pop(k), settings.candidate_order)
        theta = length_scales(comm, c, x)
        thetas.append(theta)
        with log.heartbeat(f"choosing the sparse points of coordinate {k + 1} ({c.spec.gp.sparse_method})"):
            choice = rank0_call(comm, choose_sparse_points, c.spec, x, cut, ct, config_type_names, d, rng,
                                log if comm.rank == 0 else (lambda *a: None), theta=theta,
                                use_actual_gpcov=settings.use_actual_gpcov,
                                permutations=c.descriptor.permutations,
                                gap_fit_order=c.descriptor.same_bits_everywhere)
        if comm.rank == 0 and choice.index is not None and c.spec.gp.print_sparse_index:
            with open(c.spec.gp.print_sparse_index, "a") as fh:
                fh.write(" ".join(str(i + 1) for i in choice.index) + "\n")
        if choice.x.shape[1] != d:
            raise ConfigError(f"sparse points of descriptor {c.spec.index} have {choice.x.shape[1]} dimensions, "
                              f"the descriptor has {d}")
        choices.append(choice)
        n_cand = "" if x is None else f" from {x.shape[0]} instances"
        del x, cut, ct
        log(f"  coordinate {k + 1}: {choice.x.shape[0]} sparse points ({c.spec.gp.sparse_method}){n_cand}")
    return choices, thetas


def length_scales(comm, coord, x_all):
    """θ for ARD_SE and pp: uniform, from a file, or the data range times theta_fac (over all data)."""
    gp = coord.spec.gp
    d = coord.descriptor.dimensions
    if gp.covariance_type not in ("ard_se", "pp"):
        return None
    if gp.theta_rule == "uniform":
        return np.full(d, gp.theta_uniform)
    if gp.theta_rule == "file":
        path = gp.theta_file
        try:
            with open(path) as fh:
                fields = split_fields(fh.readline(), separators=" :;\t", what=f"theta_file '{path}'")
            theta = np.array([float(f) for f in fields])
        except (OSError, ValueError):
            raise ConfigError(f"theta_file '{path}' {coord.spec.where} cannot be read as {d} numbers") from None
        if theta.size != d:
            raise ConfigError(f"theta_file '{path}' {coord.spec.where} has {theta.size} values, the descriptor has {d}")
        return theta
    fac = np.array([float(f) for f in split_fields(gp.theta_factor, separators=" :;", what="theta_fac")])
    if fac.size not in (1, d):
        raise ConfigError(f"theta_fac {coord.spec.where} must have 1 or {d} values; got {fac.size}")

    perms = np.asarray(coord.descriptor.permutations) - 1

    def compute():
        # each component's range widened to those of the components its permutations exchange
        if not x_all.shape[0]:
            return np.ones(d)  # a zero range, as for a constant component
        low, high = np.full(d, np.inf), np.full(d, -np.inf)
        for start in range(0, x_all.shape[0], 1 << 14):  # a block of rows at a time (x may be on disk)
            rows = np.asarray(x_all[start:start + (1 << 14)])[:, perms]
            low, high = np.minimum(low, rows.min(axis=(0, 1))), np.maximum(high, rows.max(axis=(0, 1)))
            drop_pages(x_all)
        theta = (high - low) * fac
        theta[theta < 1e-8] = 1.0
        return theta
    # unlike gap_fit under MPI, θ comes from all the data (rank 0), not each rank's share
    return rank0_call(comm, compute)
