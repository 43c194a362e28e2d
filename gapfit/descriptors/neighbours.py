"""Periodic neighbour lists in QUIP's order (``Connection_module``, ``calc_connect``).

A :class:`NeighbourList` holds, for every atom ``i``, all atoms and periodic
images ``j`` with ``|r_j + shift.cell - r_i| < cutoff``, excluding ``j = i`` with
zero shift (images of ``i`` itself are included), grouped by ``i`` in ascending
order (CSR layout).

The pairs, their order within each atom's block and the distances reproduce
QUIP's ``calc_connect`` + ``atoms_neighbour`` exactly, because gap_fit's
descriptor instances (and hence sparse-point choices) follow that order:

* the (effective) cell is divided into ``divide_cell(lat_eff, cutoff)`` link
  cells; non-periodic directions use QUIP's ``calc_lat_eff`` rescaled lattice
  vector (including its single-precision ``1.1`` and ``0.05`` literals);
* every atom is mapped into the cell by ``map_shift = -floor(lat_pos + 0.5)``
  (0 in non-periodic directions) and put in the head of its cell's linked list,
  so a cell's atoms are visited in descending index order;
* the main loop visits cells (c outermost, then b, then a), atom1 in the cell,
  image-cell offsets (c, b, a; range from ``fit_box_in_cell`` /
  ``get_min_max_images``) and atom2 in the target cell, keeping
  ``atom1 <= atom2``; a bond ``(ii <= jj, shift)`` is appended to
  ``neighbour1(ii)`` and, if ``ii != jj``, referenced from ``neighbour2(jj)``;
* atom ``i``'s neighbours are its ``neighbour2`` entries (``j < i``, shift
  negated) followed by its ``neighbour1`` entries (``j >= i``).

The distance is QUIP's ``test_form_bond`` value, computed once per bond from the
lower-index atom as ``dd = r_jj - r_ii; dd += lattice(:,m)*shift(m)`` for
``m = 1..3``, ``d = sqrt(dd1*dd1 + dd2*dd2 + dd3*dd3)``; both atoms see the same
``d``.  ``diff`` is the vector from ``i``'s side (``-dd`` for the partner, which
is bitwise what QUIP's ``atoms_neighbour`` recomputes).

QUIP's quirks are reproduced too.  If every atom has exactly the same fractional
coordinate along a non-periodic direction (a flat sheet with pbc T T F), the
effective lattice is singular: QUIP then uses a single link cell and does not map
atoms into the cell, so with atoms outside the cell some pairs within the cutoff
are missing -- here as in QUIP.  Whether the coordinates are "exactly equal" is
decided by QUIP's dgemm, emulated with FMA (see ``DGEMM_USES_FMA``).

Everything is vectorised: candidate pairs are generated directly in QUIP's
traversal order, so a single stable sort on (centre, neighbour2-before-
neighbour1) gives the final order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

_INT_MIN = -(2**31)
_CHUNK = 1 << 21  # candidate pairs processed at once
#: QUIP's calc_lat_eff computes fractional coordinates with BLAS dgemm; the OpenBLAS
#: kernels on FMA-capable CPUs (any x86-64 since Haswell, all aarch64) fuse the
#: multiply-adds.  This only matters for non-periodic directions in which all atoms
#: have (almost) the same fractional coordinate, e.g. a flat sheet with pbc T T F.
DGEMM_USES_FMA = True
# QUIP's calc_lat_eff uses default-kind (single precision) literals 1.1 and 0.05.
_F32_1_1 = float(np.float32(1.1))
_F32_0_05 = float(np.float32(0.05))


@dataclass
class NeighbourList:
    """Pairs (i, j, shift) in CSR layout over the centre atom ``i``, in QUIP's order.

    Within atom ``i``'s block the order is QUIP's ``atoms_neighbour(at, i, n)``
    order for ``n = 1..n_neighbours(i)`` (see the module docstring).

    Attributes
    ----------
    i, j : (n_pairs,) int
        Centre atom and neighbour atom (0-based).
    shift : (n_pairs, 3) int
        Lattice shift of ``j``'s image: its position is ``r_j + shift @ cell``.
    distance : (n_pairs,) float
        QUIP's stored bond length (bitwise identical for both directions of a bond).
    diff : (n_pairs, 3) float
        ``r_j + shift @ cell - r_i`` in Å, accumulated in QUIP's order.
    offsets : (n_atoms + 1,) int
        Pairs of atom ``i`` are ``offsets[i]:offsets[i+1]``.
    cutoff : float
        The cutoff the list was built with (QUIP's ``at%cutoff``; it also sets the
        link-cell division and therefore the order).
    """

    i: np.ndarray
    j: np.ndarray
    shift: np.ndarray
    distance: np.ndarray
    diff: np.ndarray
    offsets: np.ndarray
    cutoff: float

    @property
    def n_pairs(self) -> int:
        return int(self.i.shape[0])


# ----------------------------------------------------------------------------
# Small helpers reproducing QUIP's floating-point operation order.
# Vectors are 3-element arrays; "cell" rows are QUIP's lattice columns.


def _cross(x, y):
    return np.array([+(x[1] * y[2] - x[2] * y[1]),
                     -(x[0] * y[2] - x[2] * y[0]),
                     +(x[0] * y[1] - x[1] * y[0])])


def _triple(x, y, z):
    return (x[0] * (y[1] * z[2] - y[2] * z[1])
            - x[1] * (y[0] * z[2] - y[2] * z[0])
            + x[2] * (y[0] * z[1] - y[1] * z[0]))


def _norm(v):
    return float(np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))


def _inverse(cell):
    """QUIP's matrix3x3_inverse of the lattice whose columns are ``cell`` rows; returns g (rows)."""
    a, b, c = cell
    stp = _triple(a, b, c)
    return np.array([_cross(b, c) / stp, _cross(c, a) / stp, _cross(a, b) / stp])


def _matvec(g, v):
    """``g .mult. v`` for v of shape (n, 3): ((g1*x + g2*y) + g3*z) per row of g."""
    return (v[:, 0:1] * g[:, 0] + v[:, 1:2] * g[:, 1]) + v[:, 2:3] * g[:, 2]


def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _two_prod(a, b):
    p = a * b
    ca = 134217729.0 * a
    ah = ca - (ca - a)
    al = a - ah
    cb = 134217729.0 * b
    bh = cb - (cb - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _fma(a, b, c):
    """Correctly rounded ``a*b + c`` (vectorised error-free transformations, exact fallback)."""
    a, b, c = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float), np.asarray(c, float))
    p, e = _two_prod(a, b)
    s, t = _two_sum(p, c)
    u, ue = _two_sum(t, e)
    r, re = _two_sum(s, u)
    # r = fl(s + u) while the exact value is s + u + ue: r can only be wrong when
    # s + u lies within |ue| of a rounding midpoint (both half-spacings checked).
    half = np.spacing(np.abs(r)) / 2
    dist = np.minimum(np.abs(np.abs(re) - half), np.abs(np.abs(re) - half / 2))
    unsure = (dist <= np.abs(ue)) & (ue != 0) & np.isfinite(r)  # ue = 0: s + u is exact, r correctly rounded
    naive = ~np.isfinite(r) | ~np.isfinite(e)
    r = np.where(naive, a * b + c, r)
    if unsure.any():
        from fractions import Fraction  # lazy: the rare exact fallback
        r = np.array(r, copy=True)
        for k in zip(*np.nonzero(unsure & ~naive)):
            r[k] = float(Fraction(float(a[k])) * Fraction(float(b[k])) + Fraction(float(c[k])))
    return r


def _dgemm_matvec(g, v):
    """``g .mult. pos`` for a matrix of positions: QUIP calls BLAS dgemm, whose
    OpenBLAS kernels (x86-64 with FMA, as in the quippy wheels) accumulate
    ``fma(g3, z, fma(g2, y, g1*x))``; without FMA it is :func:`_matvec`."""
    if not DGEMM_USES_FMA:
        return _matvec(g, v)
    return _fma(v[:, 2:3], g[:, 2], _fma(v[:, 1:2], g[:, 1], v[:, 0:1] * g[:, 0]))


def _f2i(x):
    """Fortran (gfortran, x86) real -> default integer: non-finite / out of range -> INT_MIN."""
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x) & (np.abs(x) < 2.0**31)
    return np.where(ok, np.where(ok, x, 0.0).astype(np.int64), _INT_MIN)


def _lat_eff(cell, pbc, positions):
    """QUIP's calc_lat_eff: (lat_eff rows, lat_eff_inv, lat_offset)."""
    lat_eff = cell.copy()
    offset = np.zeros(3)
    if not pbc.all():
        lat_pos = _dgemm_matvec(_inverse(cell), positions)
        for d in np.flatnonzero(~pbc):
            lo, hi = lat_pos[:, d].min(), lat_pos[:, d].max()
            # the QUIP condition (min <= 0.5 .or. max >= 0.5) is always true unless NaN
            if lo <= 0.5 or hi >= 0.5:
                extent = (hi - lo) * _F32_1_1
                lat_eff[d] = lat_eff[d] / _norm(lat_eff[d]) * extent
                offset[d] = lo - _F32_0_05
    return lat_eff, _inverse(lat_eff), offset


def _divide_cell(lat, cutoff):
    a, b, c = lat
    vol = abs(_triple(a, b, c))
    n = [vol / (cutoff * _norm(_cross(b, c))),
         vol / (cutoff * _norm(_cross(c, a))),
         vol / (cutoff * _norm(_cross(a, b)))]
    return np.maximum(1, _f2i(n))


def _fit_box_in_cell(r, cell):
    g = _inverse(cell)
    corners = np.array([[i * r, j * r, k * r] for k in (-1, 1) for j in (-1, 1) for i in (-1, 1)])
    maxabs = np.max(np.abs(_matvec(g, corners)), axis=0)
    return _f2i(np.ceil(2.0 * maxabs))


def _wrap32(x):
    return ((x - _INT_MIN) % 2**32) + _INT_MIN


# ----------------------------------------------------------------------------


def _empty(n_atoms, cutoff):
    e = np.zeros(0, dtype=np.int64)
    return NeighbourList(e, e.copy(), np.zeros((0, 3), dtype=np.int64), np.zeros(0), np.zeros((0, 3)),
                         np.zeros(n_atoms + 1, dtype=np.int64), float(cutoff))


def _bonds(positions, cell, cutoff, order, map_shift, a1, o, img, start, cnt):
    """Expand (atom1, image offset) visits into atom2 candidates and apply test_form_bond."""
    total = int(cnt.sum())
    rep = np.repeat(np.arange(len(cnt)), cnt)
    local = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    ii = a1[rep]
    jj = order[start[rep] + local]
    o_r, img_r = o[rep], img[rep]
    # omit self in the same cell without shift
    keep = ~((ii == jj) & np.all(img_r == 0, axis=1) & np.all(o_r == 0, axis=1))
    ii, jj, img_r = ii[keep], jj[keep], img_r[keep]
    shift = _wrap32(img_r - map_shift[ii] + map_shift[jj])
    # test_form_bond: dd = pos(jj) - pos(ii); dd += lattice(:,m)*shift(m), m = 1..3
    dd = positions[jj] - positions[ii]
    sf = shift.astype(float)
    for m in range(3):
        dd = dd + cell[m] * sf[:, m:m + 1]
    d = np.sqrt(dd[:, 0] * dd[:, 0] + dd[:, 1] * dd[:, 1] + dd[:, 2] * dd[:, 2])
    bond = d < cutoff
    return ii[bond], jj[bond], shift[bond], dd[bond], d[bond]


def neighbour_list(positions, cell, pbc, cutoff) -> NeighbourList:
    """QUIP's neighbour list: all pairs with distance < ``cutoff``, including periodic self-images.

    ``cell`` rows are the lattice vectors, ``pbc`` three booleans; positions may lie
    outside the cell.  The ``cutoff`` plays the role of QUIP's ``at%cutoff`` (gap_fit
    uses the largest descriptor cutoff) and determines the link cells, hence the order.
    """
    positions = np.ascontiguousarray(positions, dtype=float).reshape(-1, 3)
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    cutoff = float(cutoff)
    n_atoms = positions.shape[0]
    if not cutoff > 0 or n_atoms == 0:
        return _empty(n_atoms, cutoff)

    ncell, n_img, map_shift, cidx = _partition_atoms(positions, cell, pbc, cutoff)
    na, nb, nc = (int(x) for x in ncell)
    cell_id = (cidx[:, 2] * nb + cidx[:, 1]) * na + cidx[:, 0]

    # cell lists: cells in ascending id, atoms within a cell in descending index
    atom_idx = np.arange(n_atoms, dtype=np.int64)
    order = np.lexsort((-atom_idx, cell_id))                        # traversal order of atom1
    cells_occ, cell_start, cell_count = np.unique(cell_id[order], return_index=True, return_counts=True)
    # ascending (cell, index) key for counting atoms with index >= atom1 in a cell
    key_asc = np.sort(cell_id * n_atoms + atom_idx)

    # image-cell offsets, c outermost, a innermost
    ranges = []
    for d in range(3):
        m = int(n_img[d]) if pbc[d] else min(int(n_img[d]), int(ncell[d]) - 1)
        ranges.append(np.arange(-m, m + 1, dtype=np.int64))
    oc, ob, oa = np.meshgrid(ranges[2], ranges[1], ranges[0], indexing="ij")
    off = np.stack([oa.ravel(), ob.ravel(), oc.ravel()], axis=1)    # (n_off, 3) as (a, b, c)
    n_off = off.shape[0]

    # (atom1, offset) combinations in traversal order
    a1 = np.repeat(order, n_off)
    o = np.tile(off, (n_atoms, 1))
    c1 = cidx[a1]
    raw = c1 + o                                                    # 0-based target cell before wrapping
    valid = np.all(pbc | ((raw >= 0) & (raw < ncell)), axis=1)
    c3 = raw % ncell
    img = (raw - c3) // ncell                                       # QUIP's (i4, j4, k4)
    a1, o, c1, c3, img = a1[valid], o[valid], c1[valid], c3[valid], img[valid]
    tcell = (c3[:, 2] * nb + c3[:, 1]) * na + c3[:, 0]
    pos_occ = np.searchsorted(cells_occ, tcell)
    pos_occ_c = np.minimum(pos_occ, len(cells_occ) - 1)
    occupied = cells_occ[pos_occ_c] == tcell
    start = cell_start[pos_occ_c]
    end = start + cell_count[pos_occ_c]
    # atoms of the target cell with index >= atom1 are the first ones of its (descending) list
    first_lt = np.searchsorted(key_asc, tcell * n_atoms + a1, side="left")
    cnt = np.where(occupied, np.minimum(end - first_lt, cell_count[pos_occ_c]), 0)
    cnt = np.maximum(cnt, 0)

    # expand to candidate (atom1, atom2) pairs, still in traversal order, in chunks
    # of bounded size (QUIP's single link cell for clusters is O(N^2))
    csum = np.cumsum(cnt)
    bounds = np.searchsorted(csum, np.arange(_CHUNK, int(csum[-1]) if len(csum) else 0, _CHUNK), side="left")
    bounds = np.unique(np.concatenate([[0], bounds, [len(cnt)]]))
    parts = [_bonds(positions, cell, cutoff, order, map_shift, a1[lo:hi], o[lo:hi], img[lo:hi], start[lo:hi], cnt[lo:hi])
             for lo, hi in zip(bounds[:-1], bounds[1:])]
    return _in_quip_order(n_atoms, cutoff, *(np.concatenate([q[k] for q in parts]) for k in range(5)))


def _partition_atoms(positions, cell, pbc, cutoff):
    """QUIP's link cells (partition_atoms, cell_of_pos): the cells per lattice direction, the images to
    search, each atom's shift into the cell and its (a, b, c) cell (0-based)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lat_eff, lat_eff_inv, lat_offset = _lat_eff(cell, pbc, positions)
        ncell = _divide_cell(lat_eff, cutoff)                      # (Na, Nb, Nc)
        n_img = np.maximum(1, (_fit_box_in_cell(cutoff, cell) + 1) // 2)
        lat_pos = _matvec(lat_eff_inv, positions) - lat_offset
        map_shift = -_f2i(np.floor(lat_pos + 0.5))
        map_shift[:, ~pbc] = 0
        # non-finite lat_pos (only for a singular effective lattice) gives the same
        # garbage map_shift to every atom, which cancels in the bond shift
        map_shift[~np.isfinite(lat_pos)] = 0
        lat_pos = lat_pos + map_shift
        cidx = _f2i(np.floor(ncell * (lat_pos + 0.5))) + 1
        cidx = np.clip(cidx, 1, ncell) - 1                          # 0-based (a, b, c) cell
    return ncell, n_img, map_shift, cidx


def _in_quip_order(n_atoms, cutoff, ii, jj, shift, dd, d) -> NeighbourList:
    """Each bond as neighbour1 of ii and (another atom's) neighbour2 of jj, in QUIP's per-atom order."""
    other = ii != jj
    centre = np.concatenate([ii, jj[other]])
    part = np.concatenate([np.ones(len(ii), dtype=np.int64), np.zeros(int(other.sum()), dtype=np.int64)])
    perm = np.argsort(centre * 2 + part, kind="stable")
    i_out = centre[perm]
    j_out = np.concatenate([jj, ii[other]])[perm]
    s_out = np.concatenate([shift, -shift[other]])[perm]
    diff = np.concatenate([dd, -dd[other]])[perm]
    dist = np.concatenate([d, d[other]])[perm]
    offsets = np.zeros(n_atoms + 1, dtype=np.int64)
    np.cumsum(np.bincount(i_out, minlength=n_atoms), out=offsets[1:])
    return NeighbourList(i_out.astype(np.int64), j_out.astype(np.int64), s_out.astype(np.int64),
                         dist, diff, offsets, cutoff)


def coincident_atoms(positions, cell, pbc, tol=0.01):
    """The first pair of atoms (or an atom and a periodic image of another) closer than ``tol``.

    Returns ``(i, j, distance)`` with ``i < j``, or None.  Two atoms on one spot are corrupt
    data (a duplicated line, a bad merge), which gap_fit would fit silently.  A k-d tree on the
    wrapped positions plus the images of the atoms within ``tol`` of a periodic face.
    """
    positions = np.asarray(positions, dtype=float)
    n = positions.shape[0]
    if n < 2:
        return None
    cell = np.asarray(cell, dtype=float)
    pbc = np.asarray(pbc, dtype=bool)
    frac = positions @ np.linalg.inv(cell)
    frac[:, pbc] -= np.floor(frac[:, pbc])
    # fractional width of a slab of thickness tol next to each face (height = volume / face area)
    areas = np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    margin = np.where(pbc, tol * areas / abs(np.linalg.det(cell)), 0.0)
    points, owner = [frac @ cell], [np.arange(n)]
    shifts = np.array(np.meshgrid(*[[-1, 0, 1] if p else [0] for p in pbc], indexing="ij")).reshape(3, -1).T
    for shift in shifts[np.any(shifts != 0, axis=1)]:
        moved = frac + shift
        near = np.all((moved > -margin) & (moved < 1.0 + margin), axis=1)
        if near.any():
            points.append(moved[near] @ cell)
            owner.append(np.nonzero(near)[0])
    points, owner = np.concatenate(points), np.concatenate(owner)
    pairs = cKDTree(points).query_pairs(tol, output_type="ndarray")
    if pairs.size == 0:
        return None
    pairs = pairs[(pairs[:, 0] < n) | (pairs[:, 1] < n)]  # image-image pairs repeat an atom-image pair
    a, b = owner[pairs[:, 0]], owner[pairs[:, 1]]
    pairs, a, b = pairs[a != b], a[a != b], b[a != b]
    if pairs.size == 0:
        return None
    i, j = np.minimum(a, b), np.maximum(a, b)
    first = np.lexsort((j, i))[0]
    distance = float(np.linalg.norm(points[pairs[first, 0]] - points[pairs[first, 1]]))
    return int(i[first]), int(j[first]), distance
