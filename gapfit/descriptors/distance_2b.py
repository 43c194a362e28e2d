"""QUIP's ``distance_2b`` descriptor: pair distances raised to integer exponents.

Conventions (descriptors.md §2, GAP ``descriptors.F90``): every atom ``i`` and
every neighbour image ``j`` with ``r_ij < cutoff`` whose species match (Z1, Z2)
in either order gives one instance, so each unordered pair appears twice, as
``(i, j)`` and ``(j, i)``; periodic self-images count.  The covariance cutoff is
the cosine taper times an optional ``(erf(τr)/r)^p`` tail.
"""

from __future__ import annotations

from typing import List

import numpy as np
from scipy.special import erf

from ..errors import ConfigError
from ..options.schema import Param, Schema, int_list, to_bool, to_float, to_int, to_str
from .base import Descriptor, DescriptorValues, coordination_function, d_coordination_function


class Distance2b(Descriptor):
    name = "distance_2b"
    n_index = 2
    summary = "the distance r_ij of every pair of atoms within the cutoff (a pair potential)"
    sparse_methods = ("uniform", "random", "cur_points", "cur_covariance", "pivot", "kmeans", "fuzzy", "cluster",
                      "covariance", "none", "file", "index_file")
    schema = Schema([
        Param("distance_2b", to_bool, True, help="the descriptor keyword"),
        Param("cutoff", to_float, 0.0, help="cutoff radius (Å); required"),
        Param("cutoff_transition_width", to_float, 0.5, help="width of the cosine taper below the cutoff (Å)"),
        Param("Z1", to_int, 0, help="atomic number of one atom of the pair (0: any); set by add_species"),
        Param("Z2", to_int, 0, help="atomic number of the other atom (0: any); set by add_species"),
        Param("resid_name", to_str, "", help="per-atom integer column of residue numbers, for only_intra and only_inter"),
        Param("only_intra", to_bool, False, help="only pairs within one residue"),
        Param("only_inter", to_bool, False, help="only pairs between residues"),
        Param("n_exponents", to_int, 1, help="number of components r^e (with exponents)"),
        Param("exponents", int_list(), None, help="the exponents e of the components (default {1}, or -1..-n)"),
        Param("tail_range", to_float, 1.0, help="range of the erf(r/range)/r tail factor (Å)"),
        Param("tail_exponent", to_int, 0, help="exponent of the tail factor (0: no tail)"),
    ])

    def __init__(self, params, piece="", given=()):
        super().__init__(params, piece, given)
        p = self.params
        where = f"in descriptor '{' '.join(piece.split())}'" if piece else "in distance_2b"
        if p["cutoff"] <= 0:
            raise ConfigError(f"the 'cutoff' key {where} must be greater than 0; got {p['cutoff']}")
        if p["cutoff_transition_width"] <= 0 or p["cutoff_transition_width"] > p["cutoff"]:
            raise ConfigError(f"the 'cutoff_transition_width' key {where} must be in (0, cutoff]; "
                              f"got {p['cutoff_transition_width']}")
        if p["n_exponents"] < 1:
            raise ConfigError(f"the 'n_exponents' key {where} must be 1 or more; got {p['n_exponents']}")
        if p["exponents"] is None:
            # QUIP: the default is 1 for one exponent, -1, -2, ... otherwise
            exps = [1] if p["n_exponents"] == 1 else [-(k + 1) for k in range(p["n_exponents"])]
        else:
            exps = list(p["exponents"])
            if len(exps) != p["n_exponents"]:
                raise ConfigError(f"the 'exponents' key {where} must have n_exponents={p['n_exponents']} "
                                  f"values; got {len(exps)}")
        self.exponents = np.array(exps, dtype=np.int64)
        if p["only_intra"] and p["only_inter"]:
            raise ConfigError(f"only_intra and only_inter cannot both be set {where}")
        if (p["only_intra"] or p["only_inter"]) and not p["resid_name"]:
            raise ConfigError(f"only_intra and only_inter need resid_name {where}")
        self.has_tail = "tail_exponent" in self.given and p["tail_exponent"] != 0

    @property
    def dimensions(self) -> int:
        return int(self.exponents.shape[0])

    @property
    def same_bits_everywhere(self) -> bool:
        """x = r (exponents 1) is elementwise and exact; other powers go through NumPy's vectorised pow,
        whose last bits differ between CPUs (SVML on AVX-512)."""
        return bool(np.all(self.exponents == 1))

    @classmethod
    def expand_species(cls, piece: str, species: List[int]) -> List[str]:
        base = piece.rstrip()
        return [f"{base} Z1={species[a]} Z2={species[b]}"
                for a in range(len(species)) for b in range(a, len(species))]

    def _pair_mask(self, structure, neighbours):
        numbers = np.asarray(structure.numbers)
        z1, z2 = self.params["Z1"], self.params["Z2"]
        zi, zj = numbers[neighbours.i], numbers[neighbours.j]
        i1 = (z1 == 0) | (zi == z1)
        i2 = (z2 == 0) | (zi == z2)
        j1 = (z1 == 0) | (zj == z1)
        j2 = (z2 == 0) | (zj == z2)
        mask = (neighbours.distance < self.params["cutoff"]) & ((i1 & j2) | (i2 & j1))
        if self.params["only_intra"] or self.params["only_inter"]:
            resid = _per_atom(structure, self.params["resid_name"])
            same = resid[neighbours.i] == resid[neighbours.j]
            mask &= same if self.params["only_intra"] else ~same
        return mask

    @property
    def rows_per_instance(self) -> int:
        return 2

    def gradient_rows(self, structure, neighbours):
        mask = self._pair_mask(structure, neighbours)
        return 2 * np.bincount(neighbours.i[mask], minlength=len(structure.numbers))

    def calc(self, structure, neighbours, grad=False, atoms=None) -> DescriptorValues:
        mask = self._pair_mask(structure, neighbours)
        if atoms is not None:
            mask &= np.asarray(atoms, dtype=bool)[neighbours.i]
        r = neighbours.distance[mask]
        i = neighbours.i[mask]
        j = neighbours.j[mask]
        e = self.exponents
        x = r[:, None] ** e[None, :]
        rc, w = self.params["cutoff"], self.params["cutoff_transition_width"]
        fc = coordination_function(r, rc, w)
        if self.has_tail:
            tau, p = self.params["tail_range"], self.params["tail_exponent"]
            tail = (erf(tau * r) / r) ** p
        else:
            tail = np.ones_like(r)
        values = DescriptorValues(x=x, cutoff=fc * tail, centres=np.stack([i, j], axis=1))
        if not grad:
            return values
        diff = neighbours.diff[mask]
        norm = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        with np.errstate(invalid="ignore", divide="ignore"):
            u = np.where(norm[:, None] > 0, diff / norm[:, None], 0.0)
        dfc = d_coordination_function(r, rc, w)
        if self.has_tail:
            dtail = tail * p * (2.0 * tau * np.exp(-tau ** 2 * r ** 2) / np.sqrt(np.pi) / erf(tau * r) - 1.0 / r)
        else:
            dtail = np.zeros_like(r)
        n = r.shape[0]
        # row 0: atom i at its own position; row 1: atom j's image (the negative)
        dx_i = -(e[None, :] * r[:, None] ** (e[None, :] - 1))  # (n, d)
        g0 = u[:, :, None] * dx_i[:, None, :]  # (n, 3, d)
        dc0 = -(dfc * tail + fc * dtail)[:, None] * u
        positions = np.asarray(structure.positions, dtype=float)
        pos_i = positions[i]
        pos_j = pos_i + diff
        values.grad_desc = np.repeat(np.arange(n), 2)
        values.grad_atom = np.stack([i, j], axis=1).reshape(-1)
        values.grad_x = np.stack([g0, -g0], axis=1).reshape(2 * n, 3, self.dimensions)
        values.grad_cutoff = np.stack([dc0, -dc0], axis=1).reshape(2 * n, 3)
        values.grad_pos = np.stack([pos_i, pos_j], axis=1).reshape(2 * n, 3)
        return values


def _per_atom(structure, name):
    arrays = getattr(structure, "arrays", None) or {}
    for key, value in arrays.items():
        if key.lower() == name.lower():
            return np.asarray(value)
    raise ConfigError(f"distance_2b resid_name='{name}' is not a per-atom property of the structure")
