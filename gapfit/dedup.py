"""gap_fit's duplicate filter, run on every coordinate's candidates before sparse points are chosen.

Instances are ordered by the L1 norm of their vector with QUIP's heap sort (its tie order
decides which of two equal instances survives), and of two neighbours in that order whose
norms differ by less than ``unique_hash_tolerance`` and whose components differ by less than
``unique_descriptor_tolerance``, the earlier one is dropped.  Which member of a group of
equivalent environments survives is therefore decided by the last bits of their norms.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .spill import drop_pages


def _heap_sort(a, idx, sift_down):
    """QUIP's heap_sort of ``a[1:]`` carrying ``idx`` (1-based arrays, slot 0 unused), in place."""
    n = len(a) - 1
    for start in range(n // 2, 0, -1):
        sift_down(a, idx, start, n)
    for bottom in range(n, 1, -1):
        a[1], a[bottom] = a[bottom], a[1]
        idx[1], idx[bottom] = idx[bottom], idx[1]
        sift_down(a, idx, 1, bottom - 1)


def _sift_down(a, idx, root, bottom):
    """One sift-down; between equal children the right one wins (that decides the order of ties)."""
    while root * 2 <= bottom:
        c = root * 2
        if c != bottom and not (a[c] > a[c + 1]):
            c += 1
        if a[root] < a[c]:
            a[root], a[c] = a[c], a[root]
            idx[root], idx[c] = idx[c], idx[root]
            root = c
        else:
            return


try:  # the sort is sequential by nature: compiled it takes ~0.1 µs an element, in Python ~10 µs
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; pure Python gives the same order
    numba = None
if numba is not None:
    # the same two functions, compiled (the sift-down is passed in as a compiled function).  The sort
    # is not cached on disk: numba cannot always pickle the type of a function argument, and then
    # fails saving its cache ("underlying object has vanished", seen in a fresh checkout); it
    # compiles in about a second, once per process, and only for ≥ COMPILED_FROM keys.
    _sift_down_compiled = numba.njit(cache=True, nogil=True)(_sift_down)
    _heap_sort_jit = numba.njit(nogil=True)(_heap_sort)

    def _heap_sort_compiled(a, idx):
        _heap_sort_jit(a, idx, _sift_down_compiled)

#: values compared at a time by the duplicate filter (two such blocks of rows are held, 4 MiB each)
PAIR_BLOCK_ELEMENTS = 1 << 19

#: below this many keys the pure-Python sort is quicker than loading the compiled one
COMPILED_FROM = 20000


def quip_heap_sort(keys_into, n: int, compiled: Optional[bool] = None):
    """QUIP's ``heap_sort`` (ascending, QUIP's tie order) of the keys written by ``keys_into(buffer)``
    into an n-long buffer: (sorted keys, permutation), views of the sort's own arrays (no copies)."""
    a = np.empty(n + 1)
    a[0] = 0.0
    keys_into(a[1:])
    idx = np.arange(-1, n, dtype=np.int64)
    if compiled is None:
        compiled = numba is not None and n >= COMPILED_FROM
    if compiled:
        _heap_sort_compiled(a, idx)
        return a[1:], idx[1:]
    values, order = a.tolist(), idx.tolist()  # Python lists: ~3x quicker than arrays element by element
    _heap_sort(values, order, _sift_down)
    return np.array(values[1:]), np.array(order[1:], dtype=np.int64)


def quip_heap_sort_order(keys: np.ndarray, compiled: Optional[bool] = None) -> np.ndarray:
    """The permutation QUIP's ``heap_sort`` applies to ``keys`` (ascending, QUIP's tie order)."""
    def copy(buffer):
        buffer[:] = keys
    return quip_heap_sort(copy, len(keys), compiled)[1].copy()


def _l1_norms(x: np.ndarray, idx: Optional[np.ndarray], out: np.ndarray, block: int = 1 << 20) -> None:
    """``out`` = Σ_k |x_ik| of the rows ``idx`` (all rows if None), a block at a time (never a copy of x)."""
    step = max(1, block // max(x.shape[1], 1))
    for start in range(0, out.size, step):
        rows = x[start:start + step] if idx is None else x[idx[start:start + step]]
        out[start:start + step] = np.abs(rows).sum(axis=1)
        drop_pages(x)


def unique_mask(x: np.ndarray, candidate: np.ndarray, hash_tolerance: float, descriptor_tolerance: float) -> np.ndarray:
    """``candidate`` with gap_fit's duplicates removed (see module docstring).

    Memory: the sort's keys and permutation (16 bytes a candidate), x is read a block at a time.
    """
    keep = candidate.copy()
    idx = None if candidate.all() else np.nonzero(candidate)[0]  # None: every row (no index array)
    n = x.shape[0] if idx is None else idx.size
    if n < 2:
        return keep
    h, order = quip_heap_sort(lambda out: _l1_norms(x, idx, out), n)
    if idx is not None:
        order = idx[order]
    close = []  # i where keys i and i+1 are within the tolerance, found a block at a time
    for start in range(0, n - 1, 1 << 20):
        stop = min(start + (1 << 20), n - 1)
        close.append(start + np.nonzero(np.abs(h[start + 1:stop + 1] - h[start:stop]) < hash_tolerance)[0])
    pairs = np.concatenate(close)
    del h, close
    step = max(1, PAIR_BLOCK_ELEMENTS // max(x.shape[1], 1))
    for start in range(0, pairs.size, step):  # neighbours in hash order, compared a block at a time
        block = pairs[start:start + step]
        diff = x[order[block + 1]]
        diff -= x[order[block]]
        drop_pages(x)  # the rows gathered from all over a file-backed x
        np.abs(diff, out=diff)
        keep[order[block[diff.max(axis=1) < descriptor_tolerance]]] = False
    return keep
