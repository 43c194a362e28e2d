"""Covariance assembly: rows of K_NM from descriptor gradients, chunk by chunk, and K_MM.

For one coordinate with kernel k̃, sparse points s (cutoffs c_s) and instances x
(cutoffs c(x)) of a chunk of frames (interface notes §3.3):

* energy row of a frame: Σ_x k̃(x, s) c(x) c_s;
* derivative rows: every gradient row r (instance x, atom a, direction k)
  contributes C_r,k = [∇k̃(x, s)·∂x/∂r_a,k] c(x) c_s + k̃(x, s) ∂c/∂r_a,k c_s;
  the force row (a, k) sums C_r,k over the rows of atom a, and the virial row
  (l, k) sums C_r,k · pos_r,l over the frame.

The C rows come from one matrix product of the stacked gradients with the sparse
points per block (:meth:`gapfit.kernels.functions.Kernel.contract`) and are summed into
output rows with a sparse 0/1 (and position-weighted) matrix.  Gradients are
never stored beyond one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp

from ..config.gaps import GapSpec
from ..data.targets import VIRIAL_COMPONENTS, FrameRows
from ..descriptors.base import Descriptor, DescriptorValues
from .functions import Kernel


@dataclass(frozen=True)
class Coordinate:
    """One fitted coordinate (gpCoordinates): descriptor, kernel and its columns in A.  Before the
    sparse-point phase it has no kernel; the phase makes a new one with them."""

    spec: GapSpec
    descriptor: Descriptor
    kernel: Optional[Kernel] = None
    sparse_cutoff: Optional[np.ndarray] = None
    sparse_index: Optional[np.ndarray] = None  # the sparse points' candidate indices (None: from a file)
    column: int = 0  # first column of this coordinate in K_NM

    @property
    def n_sparse(self) -> int:
        return 0 if self.kernel is None else self.kernel.n_sparse


# Bytes allowed for one block of gradient contributions C (n_rows × 3 × M doubles).
DEFAULT_BLOCK_BYTES = 16 * 1024 ** 2


def row_layout(rows: Sequence[FrameRows]):
    """Row offsets of each frame's energy, force and virial rows within a chunk."""
    n = len(rows)
    energy_row = np.full(n, -1, dtype=np.int64)
    force_start = np.zeros(n, dtype=np.int64)
    virial_start = np.full(n, -1, dtype=np.int64)
    offset = 0
    for f, r in enumerate(rows):  # per frame, not per atom
        if r.has_energy:
            energy_row[f] = offset
            offset += 1
        force_start[f] = offset
        offset += 3 * r.force_atoms.size
        if r.has_virial:
            virial_start[f] = offset
            offset += 6
    return energy_row, force_start, virial_start, offset


def k_nm_rows(coordinates: Sequence[Coordinate], frames_values: Sequence[Sequence[DescriptorValues]],
              rows: Sequence[FrameRows], atom_counts: Sequence[int], n_columns: int,
              block_bytes: int = DEFAULT_BLOCK_BYTES, stats: Optional[dict] = None) -> np.ndarray:
    """K_NM rows (not yet scaled by 1/σ) of a chunk of frames.

    ``frames_values[f][c]`` are coordinate c's descriptor values (with gradients
    where the frame has derivative targets) of chunk frame f; ``rows[f]`` its
    targets; ``atom_counts[f]`` its number of atoms.  ``stats`` (optional) accumulates
    the floating-point operations of the kernel matrix products (``gemm_flops``).
    """
    energy_row, force_start, virial_start, n_rows = row_layout(rows)
    out = np.zeros((n_rows, n_columns))
    n_frames = len(rows)
    # force row of every atom in the chunk (-1: masked or no forces)
    atom_base = np.concatenate([[0], np.cumsum(atom_counts)]).astype(np.int64)
    force_row_of_atom = np.full(int(atom_base[-1]), -1, dtype=np.int64)
    for f, r in enumerate(rows):
        if r.force_atoms.size:
            force_row_of_atom[atom_base[f] + r.force_atoms] = force_start[f] + 3 * np.arange(r.force_atoms.size)

    for c, coord in enumerate(coordinates):
        vals = [frames_values[f][c] for f in range(n_frames)]
        n_inst = np.array([v.n_desc for v in vals], dtype=np.int64)
        if n_inst.sum() == 0:
            continue
        x = np.concatenate([v.x for v in vals])
        cut = np.concatenate([v.cutoff for v in vals])
        inst_frame = np.repeat(np.arange(n_frames), n_inst)
        kernel = coord.kernel
        sc = coord.sparse_cutoff
        cols = slice(coord.column, coord.column + kernel.n_sparse)
        block = kernel.prepare(x)
        if stats is not None:
            stats["gemm_flops"] = stats.get("gemm_flops", 0.0) + 2.0 * x.shape[0] * x.shape[1] * kernel.n_sparse
        k_sc = block.k * sc[None, :]  # k̃(x, s) c_s

        # energy rows: Σ_x k̃(x, s) c(x) c_s
        has_e = energy_row[inst_frame] >= 0
        if np.any(has_e):
            n_e = int(has_e.sum())
            e_rows = energy_row[inst_frame[has_e]]
            lo_row, hi_row = int(e_rows.min()), int(e_rows.max()) + 1
            pe = sp.csr_matrix((cut[has_e], (e_rows - lo_row, np.arange(n_e))), shape=(hi_row - lo_row, n_e))
            out[lo_row:hi_row, cols] += pe @ k_sc[has_e]

        # derivative rows
        grads = [(f, v) for f, v in enumerate(vals) if v.has_grad and v.grad_desc.size
                 and (rows[f].force_atoms.size or rows[f].has_virial)]
        if grads:
            inst_base = np.concatenate([[0], np.cumsum(n_inst)]).astype(np.int64)
            _derivative_rows(out, cols, coord, block, k_sc, cut, grads, inst_base, atom_base, force_row_of_atom,
                             virial_start, block_bytes, stats)
    return out


def _derivative_rows(out, cols, coord, block, k_sc, cut, grads, inst_base, atom_base, force_row_of_atom,
                     virial_start, block_bytes, stats) -> None:
    """Add one coordinate's force and virial rows to ``out`` (columns ``cols``), a block of gradient rows
    at a time: C_r,k = [∇k̃(x, s)·∂x/∂r_a,k] c(x) c_s + k̃(x, s) ∂c/∂r_a,k c_s, summed per atom (forces)
    and weighted by the positions per frame (virials)."""
    kernel, sc = coord.kernel, coord.sparse_cutoff
    # the cutoffs c(x) c_s folded into the gradient factor: one pass over each block less
    factor = kernel.gradient_factor(block) * cut[:, None] * sc[None, :]
    block_rows = max(1, int(block_bytes // (3 * kernel.n_sparse * 8 * 2)))
    for parts in _gradient_blocks(grads, block_rows):
        # one block of gradient rows: a view into one frame's arrays, or a few small frames joined
        desc = _join([inst_base[f] + v.grad_desc[lo:hi] for f, v, lo, hi in parts])
        g_x = _join([v.grad_x[lo:hi] for _, v, lo, hi in parts])
        g_cut = _join([v.grad_cutoff[lo:hi] for _, v, lo, hi in parts])
        g_pos = _join([v.grad_pos[lo:hi] for _, v, lo, hi in parts])
        g_atom = _join([atom_base[f] + v.grad_atom[lo:hi] for f, v, lo, hi in parts])
        contrib = kernel.contract(block, desc, g_x, factor)  # (nb, 3, M): [∇k̃·∂x] c(x) c_s
        if stats is not None:
            stats["gemm_flops"] += 2.0 * 3 * desc.size * g_x.shape[2] * kernel.n_sparse
        if np.any(g_cut):  # + k̃ ∂c c_s (soap's covariance cutoff is constant)
            contrib += k_sc[desc][:, None, :] * g_cut[:, :, None]
        # forces: each gradient row adds to its atom's row (a sparse 0/1 map onto the rows it touches)
        force_rows = force_row_of_atom[g_atom]
        touched = force_rows[force_rows >= 0]
        if touched.size:
            lo_row, hi_row = int(touched.min()), int(touched.max()) + 3
            out[lo_row:hi_row, cols] += (_force_map(force_rows - lo_row, hi_row - lo_row)
                                         @ contrib.reshape(-1, kernel.n_sparse))
        # virials: W_lk = Σ_r pos_r,l C_r,k per frame, one small matrix product per frame
        start = 0
        for f, v, lo, hi in parts:
            n = hi - lo
            v0 = virial_start[f]
            if v0 >= 0:
                w = (g_pos[start:start + n].T @ contrib[start:start + n].reshape(n, -1)).reshape(3, 3, -1)
                for v_index, (l, k) in enumerate(VIRIAL_COMPONENTS):
                    out[v0 + v_index, cols] += w[l, k]
            start += n


def _join(arrays):
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _gradient_blocks(grads, block_rows):
    """Blocks of about ``block_rows`` gradient rows as lists of (frame, values, lo, hi) slices.

    A frame's rows are split into whole blocks (views, no copy); small frames are grouped.
    """
    parts, size = [], 0
    for f, v in grads:
        n = v.grad_desc.size
        lo = 0
        while lo < n:
            hi = min(n, lo + block_rows - size)
            parts.append((f, v, lo, hi))
            size += hi - lo
            lo = hi
            if size >= block_rows:
                yield parts
                parts, size = [], 0
    if parts:
        yield parts


def _force_map(force_row: np.ndarray, n_rows: int) -> sp.csc_matrix:
    """Sparse 0/1 map from gradient rows (r, k), flattened as 3r+k, to force rows (-1: none).

    Built directly in CSC form (one entry at most per column: no sorting).
    """
    has_f = np.repeat(force_row >= 0, 3)
    rows = (force_row[:, None] + np.arange(3)[None, :]).reshape(-1)[has_f]
    indptr = np.concatenate([[0], np.cumsum(has_f)])
    return sp.csc_matrix((np.ones(rows.size), rows, indptr), shape=(n_rows, has_f.size))


def k_mm(coordinates: Sequence[Coordinate], sparse_jitter: float, offsets=None) -> np.ndarray:
    """Block-diagonal K_MM with cutoff weights c_i c_j, plus ``sparse_jitter`` on the diagonal; with
    ``offsets`` (:class:`gapfit.data.e0.SpeciesOffsets`, e0_method=joint) their block last."""
    m = sum(c.n_sparse for c in coordinates) + (offsets.n_columns if offsets is not None else 0)
    out = np.zeros((m, m))
    for c in coordinates:
        sl = slice(c.column, c.column + c.n_sparse)
        sc = c.sparse_cutoff
        out[sl, sl] = c.kernel.sparse_covariance() * sc[:, None] * sc[None, :]
    if offsets is not None:
        out[offsets.columns, offsets.columns] = offsets.k_mm_block()
    out[np.diag_indices(m)] += sparse_jitter
    return out
