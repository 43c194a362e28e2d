"""Candidate descriptors on disk instead of in memory, so that the sparse-point phase's memory does
not grow with the data.

The candidates of a high-dimensional descriptor (soap: n instances × d doubles, 1.4 GB for the
263k W atoms of the W–Be set) are appended to an unlinked temporary file (in ``$TMPDIR``) as they
are computed and read back through a read-only memory map.  The selection reads them a block at a
time and calls :func:`drop_pages` after each block, so that the pages read leave the process's
resident set (they stay in the page cache, which the kernel reclaims as it likes).
"""

from __future__ import annotations

import mmap
import tempfile

import numpy as np


class RowSpill:
    """Rows of ``d`` doubles appended to a temporary file; :meth:`array` maps them back."""

    def __init__(self, d: int):
        self.d = int(d)
        self.n = 0
        self._file = tempfile.TemporaryFile(prefix="gapfit-candidates-")  # unlinked at once

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float64).reshape(-1, self.d)
        rows.tofile(self._file)
        self.n += rows.shape[0]

    def __len__(self) -> int:
        return self.n

    def array(self) -> np.ndarray:
        """The rows as an (n, d) read-only array backed by the file (which goes when it is dropped)."""
        self._file.flush()
        if self.n == 0 or self.d == 0:
            return np.zeros((self.n, self.d))
        return np.memmap(self._file, dtype=np.float64, mode="r", shape=(self.n, self.d))


def _mapping(x):
    obj = x
    while obj is not None:
        if isinstance(obj, mmap.mmap):
            return obj
        obj = getattr(obj, "base", None)
    return None


def file_backed(x) -> bool:
    return _mapping(x) is not None


def drop_pages(x) -> None:
    """Let the pages of a file-backed array read so far leave the resident set (no-op otherwise)."""
    mapping = _mapping(x)
    if mapping is not None:
        mapping.madvise(mmap.MADV_DONTNEED)


def take_rows(x: np.ndarray, index: np.ndarray, block_bytes: int = 1 << 23) -> np.ndarray:
    """``x[index]``; for a file-backed x, into another temporary file, a block at a time."""
    if not file_backed(x):
        return x[index]
    out = RowSpill(x.shape[1])
    step = max(1, block_bytes // (8 * max(x.shape[1], 1)))
    for start in range(0, index.size, step):
        out.append(x[index[start:start + step]])
        drop_pages(x)
    return out.array()
