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

# sparse methods that choose among the data's descriptor instances (not file)
CANDIDATE_METHODS = ("random", "uniform", "none", "index_file", "cur_points", "cur_covariance", "pivot",
                     "kmeans", "fuzzy", "cluster", "covariance")


def config_type_index(label_ct: str, names: List[str]) -> int:
    if label_ct in names:
        return names.index(label_ct)
    return names.index("default")


def sparse_points(comm, log, source, entries, labels, my_frames, coords, config_type_names, max_cutoff, rng, v):
    """Candidates on the owning ranks, gathered to rank 0 in data order; selection there; broadcast."""
    need = [c.spec.gp["sparse_method"] in CANDIDATE_METHODS or "lengthscale_factor" in c.spec.gp_given
            for c in coords]
    local = [([], [], [], []) for _ in coords]  # x, cutoff, config type, frame ids/counts
    if any(need):
        share = " (rank 0's share)" if comm.size > 1 else ""
        progress = log.progress("candidate descriptors", max(len(my_frames), 1), unit="frames", note=share)
        for done, frame in enumerate(source.read([entries[f] for f in my_frames])):
            progress.update(done)
            nl = neighbour_list(frame.positions, frame.cell, frame.pbc, max_cutoff)
            ct = config_type_index(labels[frame.index].config_type, config_type_names)
            for k, c in enumerate(coords):
                if not need[k]:
                    continue
                vals = c.descriptor.calc(frame, nl, grad=False)
                local[k][0].append(vals.x)
                local[k][1].append(vals.cutoff)
                local[k][2].append(np.full(vals.n_desc, ct, dtype=np.int64))
                local[k][3].append((frame.index, vals.n_desc))
        progress.close()
    choices: List[Optional[SparseChoice]] = []
    thetas = []
    for k, c in enumerate(coords):
        d = c.descriptor.dimensions
        x = cut = ct = None
        if need[k]:
            xs, cs, ts, fc = local[k]
            x_loc = np.concatenate(xs) if xs else np.zeros((0, d))
            c_loc = np.concatenate(cs) if cs else np.zeros(0)
            t_loc = np.concatenate(ts) if ts else np.zeros(0, dtype=np.int64)
            x_all = comm.gather_rows(x_loc)
            c_all = comm.gather_rows(c_loc)
            t_all = comm.gather_rows(t_loc)
            fc_all = comm.gather(fc, root=0)
            if comm.rank == 0:
                # reorder the gathered blocks by frame: global data order, as in serial
                # (gap_fit's MPI runs keep rank order instead: mpi_candidate_order=rank)
                blocks, start = [], 0
                for rank, rank_list in enumerate(fc_all):
                    for frame_id, count in rank_list:
                        key = (rank, frame_id) if v["mpi_candidate_order"] == "rank" else (frame_id,)
                        blocks.append((key, start, count))
                        start += count
                blocks.sort()
                order = np.concatenate([np.arange(s, s + n) for _, s, n in blocks]) if blocks else np.zeros(0, int)
                x, cut, ct = x_all[order], c_all[order], t_all[order]
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
