"""QUIP's ``distance_Nb``: clusters of ``order`` atoms, described by their pair distances.

Clusters (QUIP ``distance_Nb_calc_get_clusters``), built level by level from single atoms:

* ``compact_clusters=T`` (the default): a centre atom with ``order − 1`` of its neighbour images
  (r ≤ cutoff from the centre; two neighbours need not be close to each other).  Each pair of
  order 2 appears twice, once from each end.
* ``compact_clusters=F``: every connected set of ``order`` atom images (each linked to another by
  r ≤ cutoff), up to a common lattice translation, once.

With a species list ``Z`` (sorted; a 0 anywhere turns the filter off) a cluster's species must be
that multiset.  Inside a cluster the entries are sorted by (Z, index, shift), the centre first for
compact clusters, and shifts are made relative to the first entry; the instances are ordered by
(index, shift) of entry 1, then entry 2, ...  The vector holds the distances of the pairs
(1,2), (1,3), ..., (2,3), ...; its covariance cutoff is the product of the centre pairs' cutoff
functions (compact) or the probability that the cluster's graph is connected, each edge present
with probability f_c(r) (not compact).  The kernel sums over the permutations of equal species.
"""

from __future__ import annotations

import itertools
import re
from typing import List

import numpy as np

from ..errors import ConfigError
from ..options.schema import Param, Schema, int_list, to_bool, to_float, to_int
from .base import Descriptor, DescriptorValues, coordination_function, d_coordination_function
from .neighbours import _fma

#: gap_version from which compact_clusters defaults to T (older models: F)
COMPACT_CLUSTERS_VERSION = 1596837814
MAX_ORDER = 3


def _lattice_times(cell: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """shift · cell as QUIP's matmul does it: L1 s1, then two FMAs (bitwise only so).

    The FMA equals the plain product-sum whenever the product is exact (|s| is 0 or a power of
    two), so only the other rows take the (slower) exact FMA.
    """
    plain = (shift[..., 0:1] * cell[0] + shift[..., 1:2] * cell[1]) + shift[..., 2:3] * cell[2]
    a = np.abs(shift[..., 1:3]).astype(np.int64)
    inexact = ((a & (a - 1)) != 0).any(axis=-1)
    if inexact.any():
        s = shift[inexact]
        acc = _fma(s[..., 1:2], cell[1], s[..., 0:1] * cell[0])
        plain[inexact] = _fma(s[..., 2:3], cell[2], acc)
    return plain


def _lex_greater(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise lexicographic a > b of integer rows."""
    differ = a != b
    first = np.argmax(differ, axis=-1)[..., None]
    return differ.any(axis=-1) & (np.take_along_axis(a, first, -1)[..., 0] > np.take_along_axis(b, first, -1)[..., 0])


def _sort_entries(t: np.ndarray, start: int) -> np.ndarray:
    """Sort each cluster's entries t[:, start:] (rows of (Z, index, shift)) lexicographically."""
    m = t.shape[1]
    for _ in range(m):  # a sorting network over at most 3 entries
        for a in range(start, m - 1):
            swap = _lex_greater(t[:, a], t[:, a + 1])
            t[swap, a], t[swap, a + 1] = t[swap, a + 1].copy(), t[swap, a].copy()
    return t


def _pairs_within_groups(group: np.ndarray):
    """All (e1 < e2) pairs of positions that share a group value; ``group`` is sorted."""
    n = group.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
    sizes = np.diff(np.r_[starts, n])
    local = np.arange(n) - np.repeat(starts, sizes)
    after = np.repeat(sizes, sizes) - 1 - local  # partners after each entry
    e1 = np.repeat(np.arange(n), after)
    first = np.repeat(np.cumsum(after) - after, after)
    return e1, e1 + 1 + (np.arange(e1.size) - first)


def _connected_graphs(order: int) -> np.ndarray:
    """Edge masks of the connected graphs on ``order`` vertices, in QUIP's (bit code) order."""
    edges = list(itertools.combinations(range(order), 2))
    out = []
    for code in range(2 ** len(edges)):
        present = [(code >> k) & 1 for k in range(len(edges))]
        reached, frontier = {0}, [0]
        while frontier:
            v = frontier.pop()
            for k, (a, b) in enumerate(edges):
                if present[k] and v in (a, b):
                    w = b if v == a else a
                    if w not in reached:
                        reached.add(w)
                        frontier.append(w)
        if len(reached) == order:
            out.append(present)
    return np.array(out, dtype=bool).reshape(-1, len(edges))


class DistanceNb(Descriptor):
    name = "distance_Nb"
    summary = "clusters of order 2 or 3 atoms, described by their pair distances"
    same_bits_everywhere = True  # elementwise: r = √(Σ d²) in QUIP's order, sums and squares
    sparse_methods = ("uniform", "random", "cur_points", "cur_covariance", "pivot", "kmeans", "fuzzy", "cluster",
                      "covariance", "none", "file", "index_file")
    schema = Schema([
        Param("distance_Nb", to_bool, True, help="the descriptor keyword"),
        Param("cutoff", to_float, None, mandatory=True, help="cutoff radius of a cluster's bonds (Å)"),
        Param("cutoff_transition_width", to_float, 0.5, help="width of the cosine taper below the cutoff (Å)"),
        Param("order", to_int, None, mandatory=True, help="atoms per cluster: 1, 2 or 3 (gapfit)"),
        Param("compact_clusters", to_bool, True,
              help="T: a centre atom and its neighbours; F: any connected cluster (each bond within the cutoff)"),
        Param("xml_version", to_int, COMPACT_CLUSTERS_VERSION,
              help="QUIP compatibility: models older than 1596837814 default to compact_clusters=F"),
        Param("Z", int_list(), None, help="the cluster's atomic numbers, order of them (0: any); set by add_species"),
    ])

    def __init__(self, params, piece="", given=()):
        super().__init__(params, piece, given)
        p = self.params
        where = f"in descriptor '{' '.join(piece.split())}'" if piece else "in distance_Nb"
        order = p["order"]
        if not 1 <= order <= MAX_ORDER:
            raise ConfigError(f"the 'order' key {where} must be 1, 2 or 3 (orders above 3 are not implemented in "
                              f"gapfit); got {order}")
        if p["cutoff"] <= 0:
            raise ConfigError(f"the 'cutoff' key {where} must be greater than 0; got {p['cutoff']}")
        z = [0] * order if p["Z"] is None else list(p["Z"])
        if len(z) != order:
            raise ConfigError(f"the 'Z' key {where} must have order={order} atomic numbers; got {len(z)}")
        self.z = np.sort(np.array(z, dtype=np.int64))  # QUIP sorts Z
        self.order = order
        self.compact = p["compact_clusters"] if ("compact_clusters" in self.given
                                                 or p["xml_version"] >= COMPACT_CLUSTERS_VERSION) else False
        self.pairs = list(itertools.combinations(range(order), 2))
        self.graphs = None if self.compact or order < 2 else _connected_graphs(order)

    @property
    def dimensions(self) -> int:
        return max(1, self.order * (self.order - 1) // 2)

    @property
    def permutations(self) -> np.ndarray:
        """(n_perm, d) 1-based component permutations: atoms permuted within equal species."""
        groups = [list(g) for _, g in itertools.groupby(range(self.order), key=lambda a: self.z[a])]
        atom_perms = [[a for part in combo for a in part]
                      for combo in itertools.product(*[list(itertools.permutations(g)) for g in groups])]
        if self.order == 1:
            return np.ones((len(atom_perms), 1), dtype=np.int64)
        index = {pair: k for k, pair in enumerate(self.pairs)}
        return np.array([[index[tuple(sorted((p[a], p[b])))] + 1 for a, b in self.pairs] for p in atom_perms],
                        dtype=np.int64)

    def species_selector(self):
        return None

    @classmethod
    def expand_species(cls, piece: str, species: List[int]) -> List[str]:
        """gap_fit: every multiset of ``order`` species, non-decreasing by atomic number, in list order."""
        found = re.search(r"(?:^|[\s,])order\s*=\s*['\"{]?\s*(\d+)", piece)
        if not found:
            return [piece]  # parse_gap_piece reports the missing key
        order = int(found.group(1))

        def tuples(prefix):
            if len(prefix) == order:
                yield prefix
                return
            for z in species:
                if prefix and z < prefix[-1]:
                    continue
                yield from tuples(prefix + [z])
        base = piece.rstrip()
        return [base + " Z={" + " ".join(map(str, t)) + " }" for t in tuples([])]

    # --- clusters -------------------------------------------------------------------------
    def _clusters(self, structure, neighbours, atoms=None):
        """Canonical clusters in QUIP's order: atom indices (n, order) and shifts (n, order, 3)."""
        numbers = np.asarray(structure.numbers, dtype=np.int64)
        order, z = self.order, self.z
        no_filter = bool((z == 0).any())
        start_ok = np.ones(numbers.size, dtype=bool) if no_filter else np.isin(numbers, z)
        if atoms is not None and self.compact:
            start_ok &= np.asarray(atoms, dtype=bool)
        if order == 1:
            idx = np.flatnonzero(start_ok)[:, None]
            return idx, np.zeros((idx.shape[0], 1, 3), dtype=np.int64)
        i, j = neighbours.i, neighbours.j
        keep = neighbours.distance <= self.params["cutoff"]
        if not no_filter:  # a pair's species must be part of the multiset Z
            pair_z = np.sort(np.stack([numbers[i], numbers[j]], axis=1), axis=1)
            ok = np.zeros(i.size, dtype=bool)
            for a, b in itertools.combinations(range(order), 2):
                ok |= (pair_z[:, 0] == z[a]) & (pair_z[:, 1] == z[b])
            keep &= ok
        if order == 2 or self.compact:
            keep &= start_ok[i]
        i, j, s = i[keep], j[keep], neighbours.shift[keep].astype(np.int64)
        by_centre = np.argsort(i, kind="stable")
        i, j, s = i[by_centre], j[by_centre], s[by_centre]

        def entries(idx, shift):  # comparison rows (Z, index, shift)
            return np.concatenate([numbers[idx][:, None], idx[:, None], shift], axis=1)

        if order == 2:
            t = np.stack([entries(i, np.zeros_like(s)), entries(j, s)], axis=1)
            if not self.compact:
                t = _sort_entries(t, 0)
        else:  # order 3: a centre (or, not compact, a middle atom) with two of its neighbours
            e1, e2 = _pairs_within_groups(i)
            t = np.stack([entries(i[e1], np.zeros_like(s[e1])), entries(j[e1], s[e1]), entries(j[e2], s[e2])], axis=1)
            if not no_filter:
                t = t[(np.sort(t[:, :, 0], axis=1) == z[None, :]).all(axis=1)]
            t = _sort_entries(t, 1 if self.compact else 0)
        duplicate = np.zeros(t.shape[0], dtype=bool)  # the same atom image twice is no cluster
        for a, b in itertools.combinations(range(order), 2):
            duplicate |= (t[:, a, 1:] == t[:, b, 1:]).all(axis=1)
        t = t[~duplicate]
        t[:, :, 2:] -= t[:, :1, 2:]
        rows = t[:, :, 1:].reshape(t.shape[0], order * 4)
        if rows.shape[0]:
            rows = np.unique(rows, axis=0)  # QUIP's sort of the rows, and its removal of repeats
        rows = rows.reshape(-1, order, 4)
        idx, shift = rows[:, :, 0], rows[:, :, 1:]
        if atoms is not None and not self.compact:  # the canonical first atom partitions the clusters
            mine = np.asarray(atoms, dtype=bool)[idx[:, 0]]
            idx, shift = idx[mine], shift[mine]
        return idx, shift

    @property
    def rows_per_instance(self) -> int:
        return self.order

    def gradient_rows(self, structure, neighbours):
        idx, _ = self._clusters(structure, neighbours)
        return self.order * np.bincount(idx[:, 0], minlength=len(structure.numbers))

    # --- values and gradients ---------------------------------------------------------------
    def calc(self, structure, neighbours, grad=False, atoms=None) -> DescriptorValues:
        idx, shift = self._clusters(structure, neighbours, atoms)
        n, order, d = idx.shape[0], self.order, self.dimensions
        positions = np.asarray(structure.positions, dtype=float)
        cell = np.asarray(structure.cell[:], dtype=float)
        if order == 1:
            values = DescriptorValues(x=np.zeros((n, 1)), cutoff=np.ones(n), centres=idx)
            if grad:
                values.grad_desc, values.grad_atom = np.arange(n), idx[:, 0]
                values.grad_x, values.grad_cutoff = np.zeros((n, 3, 1)), np.zeros((n, 3))
                values.grad_pos = positions[idx[:, 0]]
            return values
        a_of = np.array([a for a, _ in self.pairs])
        b_of = np.array([b for _, b in self.pairs])
        dvec = (positions[idx[:, b_of]] - positions[idx[:, a_of]]) + _lattice_times(
            cell, (shift[:, b_of] - shift[:, a_of]).astype(float))
        r = np.sqrt(dvec[..., 0] * dvec[..., 0] + dvec[..., 1] * dvec[..., 1] + dvec[..., 2] * dvec[..., 2])
        rc, w = self.params["cutoff"], self.params["cutoff_transition_width"]
        f = coordination_function(r, rc, w)
        centre_pairs = [k for k, (a, _) in enumerate(self.pairs) if a == 0]
        if self.compact:
            cut = np.ones(n)
            for k in centre_pairs:
                cut = cut * f[:, k]
        else:
            cut = np.zeros(n)
            for graph in self.graphs:
                term = np.ones(n)
                for k in range(d):
                    term = term * (f[:, k] if graph[k] else 1.0 - f[:, k])
                cut = cut + term
        values = DescriptorValues(x=r, cutoff=cut, centres=idx)
        if not grad:
            return values
        u = dvec / r[:, :, None]  # unit vectors a → b
        df = d_coordination_function(r, rc, w)
        g = np.zeros((n, order, 3, d))
        for k, (a, b) in enumerate(self.pairs):
            g[:, b, :, k] = u[:, k]
            g[:, a, :, k] = -u[:, k]
        gc = np.zeros((n, order, 3))
        if self.compact:
            for b in range(1, order):
                term = np.ones((n, 3))
                for bb in range(1, order):
                    k = self.pairs.index((0, bb))
                    term = (term * df[:, k][:, None]) * u[:, k] if bb == b else term * f[:, k][:, None]
                gc[:, b] = term
                gc[:, 0] = gc[:, 0] - term
        else:
            for graph in self.graphs:
                for kl, (a, b) in enumerate(self.pairs):
                    term = np.ones((n, 3))
                    for k in range(d):
                        if k == kl:
                            term = (term * df[:, k][:, None]) * (-u[:, k])
                            if not graph[k]:
                                term = -term
                        else:
                            term = term * (f[:, k] if graph[k] else 1.0 - f[:, k])[:, None]
                    gc[:, a] += term
                    gc[:, b] -= term
        values.grad_desc = np.repeat(np.arange(n), order)
        values.grad_atom = idx.reshape(-1)
        values.grad_x = g.reshape(n * order, 3, d)
        values.grad_cutoff = gc.reshape(n * order, 3)
        values.grad_pos = (positions[idx] + _lattice_times(cell, shift.astype(float))).reshape(n * order, 3)
        return values
