"""QUIP's ``angle_3b``: every triplet of a centre atom i and two neighbours j, k within the cutoff.

Instances (QUIP ``angle_3b_calc``): for each centre atom i in index order (of species ``Z``,
0 = any), each neighbour slot j in QUIP's neighbour order and each *other* slot k of the same
atom (so every pair {j, k} appears twice, as (j, k) and (k, j), with identical vectors), both at
r < cutoff and with {Z(j), Z(k)} matching {Z1, Z2} (0 = any).  Periodic images are separate
neighbours.  The vector is

    x = (r_ij + r_ik, (r_ij − r_ik)², r_jk),

its covariance cutoff f_c(r_ij) f_c(r_ik), and all of its energy goes to the centre atom.
Gradient rows: i, j, k (at their images), each column summing to zero.  ``r_jk`` is summed in
QUIP's order, so the values agree with quippy bit for bit.
"""

from __future__ import annotations

from typing import List

import numpy as np

from ..errors import ConfigError
from ..options.schema import Param, Schema, non_negative, to_bool, to_float, to_int
from .base import Descriptor, DescriptorValues, coordination_function, d_coordination_function


def _norm3(v: np.ndarray) -> np.ndarray:
    """|v| summed as QUIP's norm(): (v1² + v2²) + v3²."""
    return np.sqrt(v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1] + v[:, 2] * v[:, 2])


class Angle3b(Descriptor):
    name = "angle_3b"
    n_index = 1
    summary = "triplets of a centre and two neighbours: (r_ij + r_ik, (r_ij − r_ik)², r_jk)"
    same_bits_everywhere = True  # elementwise: r = √(Σ d²) in QUIP's order, sums and squares
    sparse_methods = ("uniform", "random", "cur_points", "cur_covariance", "pivot", "kmeans", "fuzzy", "cluster",
                      "covariance", "none", "file", "index_file")
    schema = Schema([
        Param("angle_3b", to_bool, True, help="the descriptor keyword"),
        Param("cutoff", to_float, 0.0, help="cutoff radius of both bonds i-j and i-k (Å); required"),
        Param("cutoff_transition_width", to_float, 0.5, check=non_negative,
              help="width of the cosine taper below the cutoff (Å)"),
        Param("Z_center", to_int, 0, aliases=("Z",),
              help="atomic number of the centre atom (0: any); set by add_species"),
        Param("Z1", to_int, 0, help="atomic number of one neighbour (0: any); set by add_species"),
        Param("Z2", to_int, 0, help="atomic number of the other neighbour (0: any); set by add_species"),
    ])

    def __init__(self, params, piece="", given=()):
        super().__init__(params, piece, given)
        p = self.params
        where = f"in descriptor '{' '.join(piece.split())}'" if piece else "in angle_3b"
        if p["cutoff"] <= 0:
            raise ConfigError(f"the 'cutoff' key {where} must be greater than 0; got {p['cutoff']}")
        if p["cutoff_transition_width"] > p["cutoff"]:
            raise ConfigError(f"the 'cutoff_transition_width' key {where} must be at most the cutoff "
                              f"({p['cutoff']}); got {p['cutoff_transition_width']}")

    @property
    def dimensions(self) -> int:
        return 3

    def species_selector(self):
        return None if self.params["Z_center"] == 0 else [self.params["Z_center"]]

    @classmethod
    def expand_species(cls, piece: str, species: List[int]) -> List[str]:
        """gap_fit: every centre species, then neighbour pairs in the order of the species list."""
        base = piece.rstrip()
        return [f"{base} Z={a} Z1={b} Z2={c}" for a in species
                for jb, b in enumerate(species) for c in species[jb:]]

    def _slots(self, structure, neighbours, atoms=None):
        """Neighbour slots within the cutoff of the selected centre atoms, and their count per atom."""
        numbers = np.asarray(structure.numbers)
        keep = neighbours.distance < self.params["cutoff"]
        if self.params["Z_center"]:
            keep &= numbers[neighbours.i] == self.params["Z_center"]
        if atoms is not None:
            keep &= np.asarray(atoms, dtype=bool)[neighbours.i]
        slots = np.nonzero(keep)[0]
        count = np.bincount(neighbours.i[slots], minlength=len(numbers))
        return slots, count

    def _triplets(self, structure, neighbours, atoms=None):
        """Slot pairs (j-slot, k-slot) of every instance, in QUIP's order."""
        numbers = np.asarray(structure.numbers)
        slots, count = self._slots(structure, neighbours, atoms)
        centre = neighbours.i[slots]
        start = np.cumsum(count) - count  # first position in ``slots`` of each atom's block
        reps = count[centre]  # each slot j pairs with every slot k of its atom's block
        a = np.repeat(np.arange(slots.size), reps)
        offset = np.arange(a.size) - np.repeat(np.cumsum(reps) - reps, reps)
        b = start[centre[a]] + offset
        different = a != b
        sj, sk = slots[a[different]], slots[b[different]]
        z1, z2 = self.params["Z1"], self.params["Z2"]
        zj, zk = numbers[neighbours.j[sj]], numbers[neighbours.j[sk]]
        j1, j2 = (z1 == 0) | (zj == z1), (z2 == 0) | (zj == z2)
        k1, k2 = (z1 == 0) | (zk == z1), (z2 == 0) | (zk == z2)
        match = (k1 & j2) | (k2 & j1)
        return sj[match], sk[match]

    @property
    def rows_per_instance(self) -> int:
        return 3

    def gradient_rows(self, structure, neighbours):
        sj, _ = self._triplets(structure, neighbours)
        return 3 * np.bincount(neighbours.i[sj], minlength=len(structure.numbers))

    def calc(self, structure, neighbours, grad=False, atoms=None) -> DescriptorValues:
        sj, sk = self._triplets(structure, neighbours, atoms)
        rc, w = self.params["cutoff"], self.params["cutoff_transition_width"]
        i = neighbours.i[sj]
        r_ij, r_ik = neighbours.distance[sj], neighbours.distance[sk]
        d_ij, d_ik = neighbours.diff[sj], neighbours.diff[sk]
        d_jk = d_ij - d_ik
        r_jk = _norm3(d_jk)
        x = np.stack([r_ij + r_ik, (r_ij - r_ik) ** 2, r_jk], axis=1)
        f_j, f_k = coordination_function(r_ij, rc, w), coordination_function(r_ik, rc, w)
        values = DescriptorValues(x=x, cutoff=f_j * f_k, centres=i[:, None])
        if not grad:
            return values
        n = x.shape[0]
        u_ij = d_ij / _norm3(d_ij)[:, None]
        u_ik = d_ik / _norm3(d_ik)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            u_jk = np.where(r_jk[:, None] > 0, d_jk / r_jk[:, None], 0.0)
        dr = 2.0 * (r_ij - r_ik)[:, None]
        g = np.empty((n, 3, 3, 3))  # instance, row (i, j, k), Cartesian, component
        g[:, 0, :, 0] = -u_ij - u_ik
        g[:, 0, :, 1] = dr * (u_ik - u_ij)
        g[:, 0, :, 2] = 0.0
        g[:, 1, :, 0] = u_ij
        g[:, 1, :, 1] = dr * u_ij
        g[:, 1, :, 2] = u_jk
        g[:, 2, :, 0] = u_ik
        g[:, 2, :, 1] = -dr * u_ik
        g[:, 2, :, 2] = -u_jk
        dc_j = (d_coordination_function(r_ij, rc, w) * f_k)[:, None] * u_ij
        dc_k = (d_coordination_function(r_ik, rc, w) * f_j)[:, None] * u_ik
        positions = np.asarray(structure.positions, dtype=float)
        pos_i = positions[i]
        values.grad_desc = np.repeat(np.arange(n), 3)
        values.grad_atom = np.stack([i, neighbours.j[sj], neighbours.j[sk]], axis=1).reshape(-1)
        values.grad_x = g.reshape(3 * n, 3, 3)
        values.grad_cutoff = np.stack([-dc_j - dc_k, dc_j, dc_k], axis=1).reshape(3 * n, 3)
        values.grad_pos = np.stack([pos_i, pos_i + d_ij, pos_i + d_ik], axis=1).reshape(3 * n, 3)
        return values
