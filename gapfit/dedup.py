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
    # the same two functions, compiled (the sift-down is passed in as a compiled function)
    _sift_down_compiled = numba.njit(cache=True, nogil=True)(_sift_down)
    _heap_sort_jit = numba.njit(cache=True, nogil=True)(_heap_sort)

    def _heap_sort_compiled(a, idx):
        _heap_sort_jit(a, idx, _sift_down_compiled)

#: below this many keys the pure-Python sort is quicker than loading the compiled one
COMPILED_FROM = 20000


def quip_heap_sort_order(keys: np.ndarray, compiled: Optional[bool] = None) -> np.ndarray:
    """The permutation QUIP's ``heap_sort`` applies to ``keys`` (ascending, QUIP's tie order)."""
    n = len(keys)
    a = np.empty(n + 1)
    a[0] = 0.0
    a[1:] = keys
    idx = np.arange(-1, n, dtype=np.int64)
    if compiled is None:
        compiled = numba is not None and n >= COMPILED_FROM
    if compiled:
        _heap_sort_compiled(a, idx)
    else:
        values, order = a.tolist(), idx.tolist()  # Python lists: ~3x quicker than arrays element by element
        _heap_sort(values, order, _sift_down)
        return np.array(order[1:], dtype=np.int64)
    return idx[1:].copy()


def _l1_norms(x: np.ndarray, idx: np.ndarray, block: int = 1 << 20) -> np.ndarray:
    """Σ_k |x_ik| of the rows ``idx``, a block at a time (never a copy of x)."""
    out = np.empty(idx.size)
    step = max(1, block // max(x.shape[1], 1))
    every = idx.size == x.shape[0]  # idx = 0..n-1: slices, not gathers
    for start in range(0, idx.size, step):
        rows = x[start:start + step] if every else x[idx[start:start + step]]
        out[start:start + step] = np.abs(rows).sum(axis=1)
        drop_pages(x)
    return out


def unique_mask(x: np.ndarray, candidate: np.ndarray, hash_tolerance: float, descriptor_tolerance: float) -> np.ndarray:
    """``candidate`` with gap_fit's duplicates removed (see module docstring)."""
    keep = candidate.copy()
    idx = np.nonzero(candidate)[0]
    if idx.size < 2:
        return keep
    hashes = _l1_norms(x, idx)
    perm = quip_heap_sort_order(hashes)
    order, h = idx[perm], hashes[perm]
    close = np.abs(h[:-1] - h[1:]) < hash_tolerance
    pairs = np.nonzero(close)[0]
    step = max(1, (1 << 22) // max(x.shape[1], 1))
    for start in range(0, pairs.size, step):  # neighbours in hash order, compared a block at a time
        block = pairs[start:start + step]
        diff = np.abs(x[order[block + 1]] - x[order[block]]).max(axis=1)
        keep[order[block[diff < descriptor_tolerance]]] = False
        drop_pages(x)
    return keep
