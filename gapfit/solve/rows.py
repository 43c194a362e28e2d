"""The rows of the least-squares problem: a producer of K_NM rows and the sinks that take them.

:func:`kernel_row_chunks` reads a rank's frames and yields, chunk by chunk, the unscaled
kernel rows K_NM of their targets with the targets y and their σ.  A chunk holds the
descriptor gradients of a few MB of frames only; they are never kept for the whole data set.
A frame too big for one chunk is split by centre atom (the rows are sums over instances).

A sink takes the chunks (:mod:`gapfit.solve.sinks`); :func:`produce` puts a rank's frames into one.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Iterator, List, Sequence, Tuple

import numpy as np

from ..config.targets import SigmaTable, TargetNames
from ..data.targets import frame_rows
from ..descriptors.neighbours import neighbour_list
from ..errors import DataError
from ..kernels.covariance import k_nm_rows, row_layout
from ..runtime.heap import release_freed_memory

# Bytes of descriptor gradients accumulated before a chunk's K rows are built.
CHUNK_BYTES = 16 * 1024 ** 2


@dataclass
class ChunkLabels:
    """What each row of a chunk is, for sinks that keep rows (:mod:`gapfit.model.refit`): the σ rule
    (``FrameRows.sigma_kind``), and the frame (position in the chunk's ``frames``) it belongs to."""

    sigma_kind: np.ndarray  # int8 per row
    frame_position: np.ndarray  # int32 per row: index into frames / n_atoms / config_types
    frames: List[int]
    n_atoms: List[int]
    config_types: List[str]

    @classmethod
    def of(cls, frame_rows_list, frames, n_atoms) -> "ChunkLabels":
        sizes = [fr.y.size for fr in frame_rows_list]
        return cls(sigma_kind=np.concatenate([fr.sigma_kind for fr in frame_rows_list]),
                   frame_position=np.repeat(np.arange(len(sizes), dtype=np.int32), sizes),
                   frames=list(frames), n_atoms=list(n_atoms), config_types=[fr.config_type for fr in frame_rows_list])


@dataclass(frozen=True)
class RowPlan:
    """What the producer needs to make the K_NM rows of any frames of a data set: where the frames are,
    their targets' names and σ rules, e0 and the core, the coordinates (M columns, and the e0 offsets'
    of e0_method=joint), and the chunk size."""

    source: Any  # a gapfit.data.extxyz frame source
    entries: Sequence[Any]  # its frames' index entries
    coords: Sequence[Any]  # gapfit.kernels.covariance.Coordinate, with their sparse points
    names: TargetNames
    sigmas: SigmaTable
    e0: np.ndarray
    sigma_per_atom: bool
    max_cutoff: float
    n_columns: int
    core: Any = None  # gapfit.data.core.GluePotential
    offsets: Any = None  # gapfit.data.e0.SpeciesOffsets
    chunk_bytes: float = CHUNK_BYTES


def kernel_row_chunks(plan: RowPlan, my_frames, log, stats,
                      n_rows) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray, ChunkLabels]]:
    """Yield ``(k, y, sigma, labels)`` for consecutive frames of ``my_frames``: K_NM rows (unscaled), targets,
    σ, and what the rows are (:class:`ChunkLabels`: their frames' indices in ``labels.frames``).  A chunk
    ends at a frame boundary once its descriptor gradients and K rows take ``plan.chunk_bytes`` (a bigger
    frame is split by centre atom).

    The targets are net of the core potential, if any.  With e0 offsets (e0_method=joint), each energy
    row also holds its frame's atom count of each species, in the offsets' columns.  ``stats`` collects
    descriptor and kernel seconds and GEMM flops; rank 0's progress over its ``n_rows`` rows goes to ``log``.
    """
    if os.environ.get("GAPFIT_INJECT_FAILURE_RANK", "") == str(getattr(log, "rank", 0)):
        # test hook: a failure on one rank only (tests/test_mpi.py checks the job aborts cleanly)
        raise DataError("injected failure on this rank (GAPFIT_INJECT_FAILURE_RANK)")
    stats.update(gemm_flops=0.0, descriptor_seconds=0.0, kernel_seconds=0.0)
    chunk = _Chunk(plan, stats)
    share = " (rank 0's share)" if getattr(log, "size", 1) > 1 else ""
    with log.progress("K_NM rows", max(n_rows, 1), note=share) as progress:
        for frame in plan.source.read([plan.entries[f] for f in my_frames]):
            progress.update(chunk.done_rows + chunk.pending_rows)  # rows built, and queued in this chunk
            fr = frame_rows(frame, plan.names, plan.sigmas, plan.e0, plan.sigma_per_atom, plan.core)
            grad = bool(fr.force_atoms.size) or fr.has_virial
            nl = neighbour_list(frame.positions, frame.cell, frame.pbc, plan.max_cutoff)
            per_atom = _bytes_per_atom(plan.coords, frame, nl, grad)
            counts = plan.offsets.counts(frame.numbers) if plan.offsets is not None else None
            if per_atom is not None and per_atom.sum() > plan.chunk_bytes:
                if chunk.pending:
                    yield chunk.take()
                yield chunk.in_pieces(frame, fr, nl, grad, per_atom, counts)
                continue
            chunk.queue(frame, fr, chunk.describe(frame, nl, grad), per_atom, counts)
            if chunk.pending_bytes > plan.chunk_bytes:
                yield chunk.take()
        if chunk.pending:
            yield chunk.take()


class _Chunk:
    """The frames queued for the next chunk of :func:`kernel_row_chunks`, and the rows made so far."""

    def __init__(self, plan: RowPlan, stats):
        self.plan, self.stats = plan, stats
        self.pending = []  # (frame rows, values per coordinate, n_atoms, frame index, species counts or None)
        self.pending_bytes = 0.0
        self.done_rows = self.pending_rows = self.chunks = 0

    def describe(self, frame, nl, grad, atoms=None):
        t0 = time.perf_counter()
        values = [c.descriptor.calc(frame, nl, grad=grad, atoms=atoms) for c in self.plan.coords]
        self.stats["descriptor_seconds"] += time.perf_counter() - t0
        return values

    def kernel_rows(self, frames_values, rows, atom_counts):
        t0 = time.perf_counter()
        k = k_nm_rows(self.plan.coords, frames_values, rows, atom_counts, self.plan.n_columns, stats=self.stats)
        self.stats["kernel_seconds"] += time.perf_counter() - t0
        return k

    def add_counts(self, k, rows, species_counts):
        """The e0 offsets' columns of the energy rows: atoms of each species."""
        offsets = self.plan.offsets
        if offsets is not None:
            energy_row = row_layout(rows)[0]
            has = energy_row >= 0
            k[energy_row[has], offsets.columns] = np.asarray(species_counts)[has]

    def queue(self, frame, fr, values, per_atom, counts) -> None:
        self.pending.append((fr, values, len(frame), frame.index, counts))
        self.pending_rows += fr.y.size
        self.pending_bytes += 8.0 * fr.y.size * self.plan.n_columns  # the chunk's K rows
        if per_atom is not None:
            self.pending_bytes += per_atom.sum()
        else:  # descriptor values + the kernel matrices k(x, s) of their instances
            self.pending_bytes += sum(val.nbytes + 4 * 8 * val.n_desc * c.n_sparse
                                      for val, c in zip(values, self.plan.coords))

    def take(self):
        """The queued frames' chunk, and a fresh queue."""
        pending = self.pending
        rows = [p[0] for p in pending]
        k = self.kernel_rows([p[1] for p in pending], rows, [p[2] for p in pending])
        self.add_counts(k, rows, [p[4] for p in pending])
        chunk = (k, np.concatenate([r.y for r in rows]), np.concatenate([r.sigma for r in rows]),
                 ChunkLabels.of(rows, [p[3] for p in pending], [p[2] for p in pending]))
        pending.clear()
        self.done_rows += self.pending_rows
        self.pending_bytes, self.pending_rows = 0.0, 0
        self.chunks += 1
        if self.chunks % 4 == 0:  # the chunks' temporaries fragment the heap; keep RSS ~ A + one chunk
            release_freed_memory()
        return chunk

    def in_pieces(self, frame, fr, nl, grad, per_atom, counts):
        """A frame too big for one chunk: its instances in pieces (by centre atom); the K rows are sums over
        instances, so the pieces' rows add up to the frame's."""
        k = np.zeros((fr.y.size, self.plan.n_columns))
        for atoms in _atom_groups(per_atom, self.plan.chunk_bytes):
            k += self.kernel_rows([self.describe(frame, nl, grad, atoms)], [fr], [len(frame)])
        self.add_counts(k, [fr], [counts])
        self.done_rows += fr.y.size
        return k, fr.y, fr.sigma, ChunkLabels.of([fr], [frame.index], [len(frame)])


def produce(plan: RowPlan, sink, frames, log, stats, n_rows, after_chunk=None) -> bool:
    """Every chunk of K_NM rows of ``frames`` into ``sink`` (:mod:`gapfit.solve.sinks`); ``after_chunk(frame_ids)``
    may stop early (True): then False is returned."""
    for k, y, sigma, labels in kernel_row_chunks(plan, frames, log, stats, n_rows):
        sink.add(k, y, sigma, labels)
        if after_chunk is not None and after_chunk(labels.frames):
            return False
    return True


def _bytes_per_atom(coords, frame, nl, grad):
    """Approximate working memory of each centre atom's instances (None if a descriptor cannot split)."""
    if not all(c.descriptor.splittable for c in coords):
        return None
    total = np.zeros(len(frame))
    for c in coords:
        rows = c.descriptor.gradient_rows(frame, nl)
        if rows is None:
            return None
        d = c.descriptor.dimensions
        per_row = (3 * d + 8) * 8 if grad else 0
        total += rows * per_row + (rows > 0) * (d + 4 * c.n_sparse) * 8
    return total


def _atom_groups(per_atom_bytes, budget):
    """Boolean masks of consecutive atoms whose bytes stay within ``budget`` (one atom at least)."""
    cumulative = np.cumsum(per_atom_bytes)
    group = np.floor_divide(cumulative - per_atom_bytes, budget).astype(np.int64)
    for g in np.unique(group):
        yield group == g
