"""The duplicate filter, run on every coordinate's candidates before sparse points are chosen.

gap_fit's test of two instances: their L1 norms differ by less than ``unique_hash_tolerance`` and
every component by less than ``unique_descriptor_tolerance`` (both 1e-10 by default).

gap_fit applies the test only to neighbours in QUIP's heap-sorted order of the L1 norms, and drops
the earlier of two, so which instances survive is decided by the last bits of the norms.  Where
those bits are the same on every machine (descriptors computed by elementwise arithmetic in
QUIP's order: distance_2b, angle_3b, distance_Nb; ``Descriptor.same_bits_everywhere``) gapfit
applies gap_fit's rule exactly (``gap_fit_order``) and reproduces gap_fit's sparse points.

soap's values come from BLAS, and their last bits differ between CPUs, BLAS kernels and programs.
Symmetric structures have *different* environments with equal norms (InP's In and P sites), and
how copies of the two interleave in the sorted order decides how many copies survive gap_fit's
rule, and which (issue 18: with OpenBLAS's Haswell and SkylakeX kernels, 1390 and 1386 of InP's
1382 distinct soap environments survived, and cur_points then shared only 113 of 200 points).
For those descriptors the norms only group the instances into runs (consecutive sorted norms
closer than the hash tolerance), and within a run every instance is compared with the first of
the run in data order, then the rest with the next first, and so on: exactly one instance of
each environment survives, the first in data order, on every machine.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..runtime.spill import drop_pages


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


def unique_mask(x: np.ndarray, candidate: np.ndarray, hash_tolerance: float, descriptor_tolerance: float,
                gap_fit_order: bool = False) -> np.ndarray:
    """``candidate`` with the duplicates removed: the first in data order of each group survives
    (see the module docstring); with ``gap_fit_order``, gap_fit's own rule (for descriptors whose
    values are the same bits on every machine: :attr:`gapfit.descriptors.base.Descriptor.same_bits_everywhere`).

    Memory: the norms and their order (16 bytes a candidate); x is read a block at a time.
    """
    if gap_fit_order:
        return _gap_fit_unique_mask(x, candidate, hash_tolerance, descriptor_tolerance)
    keep = candidate.copy()
    idx = None if candidate.all() else np.nonzero(candidate)[0]  # None: every row (no index array)
    n = x.shape[0] if idx is None else idx.size
    if n < 2:
        return keep
    norms = np.empty(n)
    _l1_norms(x, idx, norms)
    order = np.argsort(norms, kind="stable")
    linked = np.abs(np.diff(norms[order])) < hash_tolerance  # sorted neighbours in one run
    del norms
    run = np.cumsum(np.concatenate([[True], ~linked]))  # run number of each sorted position
    in_run = np.concatenate([linked, [False]]) | np.concatenate([[False], linked])
    member, run = order[in_run], run[in_run]  # positions in the candidate list (data order)
    del order, linked, in_run
    while member.size:
        o = np.lexsort((member, run))
        member, run = member[o], run[o]
        first = np.concatenate([[True], run[1:] != run[:-1]])
        reference = member[np.flatnonzero(first)[np.cumsum(first) - 1]]  # each run's first in data order
        same = np.zeros(member.size, dtype=bool)
        others = np.flatnonzero(~first)
        step = max(1, PAIR_BLOCK_ELEMENTS // max(x.shape[1], 1))
        for start in range(0, others.size, step):  # compared a block of pairs at a time
            block = others[start:start + step]
            a, b = member[block], reference[block]
            diff = x[a if idx is None else idx[a]]
            diff -= x[b if idx is None else idx[b]]
            drop_pages(x)  # the rows gathered from all over a file-backed x
            np.abs(diff, out=diff)
            same[block] = diff.max(axis=1) < descriptor_tolerance
        dropped = member[same]
        keep[dropped if idx is None else idx[dropped]] = False
        rest = ~first & ~same  # other environments in the run: compared among themselves next
        member, run = member[rest], run[rest]
    return keep


def _gap_fit_unique_mask(x: np.ndarray, candidate: np.ndarray, hash_tolerance: float,
                         descriptor_tolerance: float) -> np.ndarray:
    """gap_fit's own rule: of two neighbours in QUIP's heap-sort order of the L1 norms that pass the
    test, the earlier is dropped.

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
