"""The sparse-point phase: candidates on the ranks that own the frames, the choice on rank 0.

Every rank computes the descriptor values (no gradients) of its own frames; the candidates
are gathered to rank 0 in data order (so an MPI run chooses what a serial run chooses; gap_fit's
rank order with ``mpi_candidate_order=rank``), chosen there by :mod:`gapfit.sparsify` and
broadcast.  ARD_SE length scales θ come from the options or from all the data.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from .errors import ConfigError
from .neighbours import neighbour_list
from .options import split_fields
from .parallel import rank0_call
from .sparsify import SparseChoice, choose_sparse_points
from .spill import RowSpill

# sparse methods that choose among the data's descriptor instances (not file)
CANDIDATE_METHODS = ("random", "uniform", "none", "index_file", "cur_points", "cur_covariance", "pivot",
                     "kmeans", "fuzzy", "cluster", "covariance")


def config_type_index(label_ct: str, names: List[str]) -> int:
    if label_ct in names:
        return names.index(label_ct)
    return names.index("default")


#: descriptors with more dimensions than this get a pass over the data of their own, so that the
#: candidates of one such coordinate (n × d doubles) are held at a time
OWN_PASS_DIMENSIONS = 64


def candidate_passes(coords, need) -> List[List[int]]:
    """Coordinates in order, grouped into passes over the data: runs of low-dimensional ones
    together, each high-dimensional one (soap) alone."""
    passes: List[List[int]] = []
    for k, c in enumerate(coords):
        if not need[k]:
            continue
        small = c.descriptor.dimensions <= OWN_PASS_DIMENSIONS
        if small and passes and passes[-1][-1] == k - 1 and coords[k - 1].descriptor.dimensions <= OWN_PASS_DIMENSIONS:
            passes[-1].append(k)
        else:
            passes.append([k])
    return passes


def _stack(parts: list, width: Optional[int], dtype=float) -> np.ndarray:
    """np.concatenate of ``parts``, releasing each part once copied (peak: the result plus one part)."""
    n = sum(len(p) for p in parts)
    out = np.empty((n, width) if width is not None else n, dtype=dtype)
    start = 0
    for i, part in enumerate(parts):
        out[start:start + len(part)] = part
        start += len(part)
        parts[i] = None
    parts.clear()
    return out


def _compute_candidates(comm, log, source, entries, labels, my_frames, coords, group, config_type_names,
                        max_cutoff, note):
    """This rank's candidates of the coordinates in ``group``: {k: (x, cutoff, config type, [(frame, count)])}."""
    # a high-dimensional coordinate's values go to a temporary file as they come (gapfit.spill)
    parts = {k: (RowSpill(coords[k].descriptor.dimensions) if coords[k].descriptor.dimensions > OWN_PASS_DIMENSIONS
                 else [], [], [], []) for k in group}
    progress = log.progress(f"candidate descriptors{note}", max(len(my_frames), 1), unit="frames",
                            note=" (rank 0's share)" if comm.size > 1 else "")
    for done, frame in enumerate(source.read([entries[f] for f in my_frames])):
        progress.update(done)
        nl = neighbour_list(frame.positions, frame.cell, frame.pbc, max_cutoff)
        ct = config_type_index(labels[frame.index].config_type, config_type_names)
        for k in group:
            vals = coords[k].descriptor.calc(frame, nl, grad=False)
            parts[k][0].append(vals.x)  # a list, or a RowSpill
            parts[k][1].append(vals.cutoff)
            parts[k][2].append(np.full(vals.n_desc, ct, dtype=np.int64))
            parts[k][3].append((frame.index, vals.n_desc))
    progress.close()
    return {k: (xs.array() if isinstance(xs, RowSpill) else _stack(xs, coords[k].descriptor.dimensions),
                _stack(cs, None), _stack(ts, None, np.int64), fc)
            for k, (xs, cs, ts, fc) in parts.items()}


def _gather_in_data_order(comm, local, mpi_candidate_order):
    """Rank 0: every rank's candidates, ordered by frame (gap_fit's rank order with ``mpi_candidate_order=rank``)."""
    x_loc, c_loc, t_loc, fc = local
    if comm.size == 1:
        return x_loc, c_loc, t_loc  # already in data order
    x_all, c_all, t_all = comm.gather_rows(x_loc), comm.gather_rows(c_loc), comm.gather_rows(t_loc)
    fc_all = comm.gather(fc, root=0)
    if comm.rank != 0:
        return None, None, None
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
    return x_all[order], c_all[order], t_all[order]


def sparse_points(comm, log, source, entries, labels, my_frames, coords, config_type_names, max_cutoff, rng, v):
    """Candidates on the owning ranks, gathered to rank 0 in data order; selection there; broadcast.

    The candidates of one high-dimensional coordinate are held at a time (:func:`candidate_passes`):
    its choice is made, and its candidates dropped, before the next pass over the data.
    """
    need = [c.spec.gp["sparse_method"] in CANDIDATE_METHODS or "lengthscale_factor" in c.spec.gp_given
            for c in coords]
    passes = candidate_passes(coords, need)
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
            x, cut, ct = _gather_in_data_order(comm, held.pop(k), v["mpi_candidate_order"])
        theta = length_scales(comm, c, x)
        thetas.append(theta)
        with log.heartbeat(f"choosing the sparse points of coordinate {k + 1} ({c.spec.gp['sparse_method']})"):
            choice = rank0_call(comm, choose_sparse_points, c.spec, x, cut, ct, config_type_names, d, rng,
                                log if comm.rank == 0 else (lambda *a: None), theta=theta,
                                use_actual_gpcov=v["sparse_use_actual_gpcov"],
                                permutations=c.descriptor.permutations)
        if comm.rank == 0 and choice.index is not None and c.spec.gp["print_sparse_index"]:
            with open(c.spec.gp["print_sparse_index"], "a") as fh:
                fh.write(" ".join(str(i + 1) for i in choice.index) + "\n")
        if choice.x.shape[1] != d:
            raise ConfigError(f"sparse points of descriptor {c.spec.index} have {choice.x.shape[1]} dimensions, "
                              f"the descriptor has {d}")
        choices.append(choice)
        n_cand = "" if x is None else f" from {x.shape[0]} instances"
        del x, cut, ct
        log(f"  coordinate {k + 1}: {choice.x.shape[0]} sparse points ({c.spec.gp['sparse_method']}){n_cand}")
    return choices, thetas


def length_scales(comm, coord, x_all):
    """θ for ARD_SE and pp: uniform, from a file, or the data range times theta_fac (over all data)."""
    gp, given = coord.spec.gp, coord.spec.gp_given
    d = coord.descriptor.dimensions
    if gp["covariance_type"] not in ("ard_se", "pp"):
        return None
    if "lengthscale_uniform" in given:
        return np.full(d, gp["lengthscale_uniform"])
    if "lengthscale_file" in given:
        path = gp["lengthscale_file"]
        try:
            with open(path) as fh:
                fields = split_fields(fh.readline(), separators=" :;\t", what=f"theta_file '{path}'")
            theta = np.array([float(f) for f in fields])
        except (OSError, ValueError):
            raise ConfigError(f"theta_file '{path}' {coord.spec.where} cannot be read as {d} numbers") from None
        if theta.size != d:
            raise ConfigError(f"theta_file '{path}' {coord.spec.where} has {theta.size} values, the descriptor has {d}")
        return theta
    fields = split_fields(gp["lengthscale_factor"], separators=" :;", what="theta_fac")
    try:
        fac = np.array([float(f) for f in fields])
    except ValueError:
        raise ConfigError(f"theta_fac {coord.spec.where} must be numbers; got {gp['lengthscale_factor']!r}") from None
    if fac.size not in (1, d):
        raise ConfigError(f"theta_fac {coord.spec.where} must have 1 or {d} values; got {fac.size}")

    perms = np.asarray(coord.descriptor.permutations) - 1

    def compute():
        # each component's range widened to those of the components its permutations exchange
        high = np.max(x_all[:, perms], axis=(0, 1)) if x_all.shape[0] else np.zeros(d)
        low = np.min(x_all[:, perms], axis=(0, 1)) if x_all.shape[0] else np.zeros(d)
        theta = (high - low) * fac
        theta[theta < 1e-8] = 1.0
        return theta
    # unlike gap_fit under MPI, θ comes from all the data (rank 0), not each rank's share
    return rank0_call(comm, compute)
