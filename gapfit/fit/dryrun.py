"""``dryrun=T``: count instances and gradient rows, estimate the peak memory per rank, then the wall time
(:mod:`.dryrun_time`)."""

from __future__ import annotations

import numpy as np

from ..data.distribute import assign_frames
from ..descriptors.neighbours import neighbour_list
from ..kernels.covariance import DEFAULT_BLOCK_BYTES
from ..runtime.memory import available_memory
from ..runtime.report import human_bytes, peak_rss_bytes
from ..solve.linear_system import choose_path, streaming_bytes
from ..solve.rows import CHUNK_BYTES
from ..sparse.candidates import CANDIDATE_METHODS, candidate_passes
from .dryrun_time import wall_time_estimate
from .finish import FitResult


def dry_run(config, setup, data, comm, log):
    """dryrun=T: the memory and wall-time estimates, and no fit (a FitResult without a model)."""
    sizes = memory_estimate(log, comm, data.source, data.entries, data.my_frames, data.coords, data.frame_rows,
                            data.owner, data.max_cutoff)
    m_per_coordinate, instances = comm.bcast(sizes, root=0)
    n_rows = int(data.frame_rows.sum())
    path = choose_path(config.solver.path, n_rows, sum(m_per_coordinate), comm.size, lambda text: None)
    wall_time_estimate(config, setup, data, comm, log, m_per_coordinate, instances, path)
    log("dryrun=T: stopping before the fit")
    return FitResult(model=None, alpha=[], sparse_x=[], sparse_cutoff=[], sparse_index=[], e0=data.e0)


def memory_estimate(log, comm, source, entries, my_frames, coords, frame_rows_count, owner, max_cutoff):
    """dryrun=T: count instances and gradient rows, then estimate the peak memory per rank.  Returns
    (sparse points, instances) per coordinate on rank 0, None elsewhere."""
    n_coord = len(coords)
    counts = np.zeros((n_coord, 2), dtype=np.int64)  # instances, gradient rows
    biggest_frame = 0.0
    for frame in source.read([entries[f] for f in my_frames]):
        nl = neighbour_list(frame.positions, frame.cell, frame.pbc, max_cutoff)
        frame_bytes = 0.0
        for k, c in enumerate(coords):
            rows = c.descriptor.gradient_rows(frame, nl)
            if rows is None:
                rows = np.zeros(len(frame))
            n_inst = c.descriptor.count_instances(rows) if c.descriptor.splittable else 1
            counts[k] += (n_inst, int(rows.sum()))
            frame_bytes += rows.sum() * 3 * c.descriptor.dimensions * 8
        biggest_frame = max(biggest_frame, frame_bytes)
    counts = comm.allreduce_sum(counts)
    biggest_frame = comm.allreduce_max(biggest_frame)
    if comm.rank != 0:
        return None
    log.title("Memory estimate (dryrun=T)")
    m_total, cand_bytes = 0, 0.0
    rows, m_per_coordinate = [], []
    for k, c in enumerate(coords):
        gp, d = c.spec.gp, c.descriptor.dimensions
        n_inst, n_grad = (int(v) for v in counts[k])
        m = gp.n_sparse if gp.n_sparse > 0 else n_inst
        m = min(m, n_inst) if gp.sparse_method not in ("file", "index_file") else m
        m_total += m
        m_per_coordinate.append(int(m))
        rows.append([k + 1, c.descriptor.name, d, n_inst, n_grad, m, human_bytes(3.0 * n_grad * d * 8)])
    log.table(["coordinate", "descriptor", "d", "instances", "gradient rows", "M", "all gradients"], rows)
    # rank 0 holds the candidates of one pass at a time (values, cutoff, config type and the
    # selection's per-candidate temporaries); under MPI also the gathered copy it reorders
    need = [c.spec.gp.sparse_method in CANDIDATE_METHODS for c in coords]
    cand_bytes = max((sum(counts[k, 0] * (coords[k].descriptor.dimensions + 6) * 8.0 for k in group)
                      for group in candidate_passes(coords, need, int(sum(e.n_atoms for e in entries)))), default=0.0) * (2 if comm.size > 1 else 1)
    n_rows = int(frame_rows_count.sum())
    a_total = 8.0 * (n_rows + m_total) * m_total
    baseline = float(peak_rss_bytes())
    chunk = CHUNK_BYTES + 4.0 * DEFAULT_BLOCK_BYTES + min(biggest_frame, CHUNK_BYTES)
    root_extra = cand_bytes + 2 * 8.0 * m_total ** 2
    available = available_memory()

    def per_rank(p):
        load = np.bincount(owner if p == comm.size else assign_frames(frame_rows_count, p),
                           weights=frame_rows_count, minlength=p)
        local_rows = load.max() + -(-m_total // p)
        return baseline + 8.0 * local_rows * m_total + chunk, root_extra

    gradients_all = sum(3.0 * counts[k, 1] * c.descriptor.dimensions * 8 for k, c in enumerate(coords))
    log(f"  A: {n_rows} target rows + {m_total} rows of U, {m_total} columns = {human_bytes(a_total)} in all")
    log(f"  descriptor gradients of the whole data set: {human_bytes(gradients_all)} (gapfit keeps one chunk: "
        f"about {human_bytes(chunk)} with the kernel blocks)")
    log(f"  gap_fit would hold all of them plus two copies of A: about "
        f"{human_bytes(gradients_all + 2 * a_total + 8.0 * sum(counts[:, 0]))} per process")
    streaming = baseline + chunk + streaming_bytes(m_total)
    table, smallest = [], None
    for p in sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, comm.size}):
        rank_bytes, extra = per_rank(p)
        total = p * rank_bytes + extra
        fits = available > 0 and total <= available
        if fits and smallest is None:
            smallest = p
        table.append([p, human_bytes(rank_bytes), human_bytes(rank_bytes + extra), human_bytes(total),
                      "yes" if fits else "no", human_bytes(streaming), human_bytes(streaming + extra),
                      human_bytes(p * streaming + extra)])
    log("  per rank with the dense path (A) and with the streaming path (an (M+1)² factor), linear_solver=dense|streaming:")
    log.table(["ranks P", "dense: per rank", "rank 0", "all ranks", f"fits here ({human_bytes(available)} free)",
               "streaming: per rank", "rank 0", "all ranks"], table)
    if smallest is not None:
        log(f"  smallest P for the dense path on this machine: {smallest}")
    else:
        nodes = -(-int(a_total + root_extra) // int(max(available - baseline, 1)))
        log(f"  the dense path does not fit this machine with any P: use about {nodes} node(s) like this one, "
            f"one rank per core, or linear_solver=streaming")
    if available and streaming + extra <= available:
        log(f"  the streaming path fits this machine on one process ({human_bytes(streaming + extra)})")
    return m_per_coordinate, [int(v) for v in counts[:, 0]]
