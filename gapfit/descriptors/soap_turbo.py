"""QUIP's ``soap_turbo`` descriptor (M. A. Caro, Phys. Rev. B 100, 024112 (2019)), as quippy-ase 0.10.3
computes it (GAP@480fc2d with soap_turbo@03f9d82): the spec is docs/dev/soap_turbo.md.

For a centre i of species species_Z(central_index) (spec §2.5, §5.1), every neighbour image j with
r_ij < r_h = ``rcut_hard`` whose element is in ``species_Z`` contributes, in its species block s,

    c_{lm,n} += R_n(r_ij) · g_l(r_ij) · Y_lm(r̂_ij),        n ∈ block s (alpha_max(s) functions)

with the radial coefficients R (:mod:`gapfit.descriptors.soap_turbo_radial`: the poly3 / poly3gauss
basis orthonormalised by W = S^(-1/2), a Gaussian of width σ_r + β_r·r filtered beyond r_s =
``rcut_soft``, amplitude (1 + 2x³ - 3x²)^γ/ŝ, spec §2), the angular factor g_l = 4π·r_h²/σ_t(r)²·ι_l
(:mod:`gapfit.descriptors.soap_turbo_angular`, spec §3) and real spherical harmonics Y_lm (QUIP uses
conj(Y_lm) for m ≥ 0 with weights 1, 2; the power spectrum is the same, spec §4.2).  The centre adds
its own term to c_{00} of its block (poly3: a neighbour at r = 0 with weight central_weight(s_c);
poly3gauss: the explicit term of spec §2.5).  The vector is

    p[(n, n', l)] = f_nn'·Σ_m c_{lm,n} c_{lm,n'},   n ≤ n',  f = 1 or √2,  l fastest,

optionally compressed (``trivial`` or a ``compress_file`` map, spec §4.3-4.4) and divided by its norm
(left as is below 1e-5), by :class:`gapfit.descriptors.soap_turbo_power.TurboSpectrum`.

Gradients follow QUIP's formulas (spec §5.2), which are not always the derivatives of QUIP's values
(the filter's recursion, hard switches at 4ŝ, l_max = 0): they are reproduced, not fixed.  Rows: the
centre (minus the sum of the others) then one per neighbour image in neighbour-list order, with
``grad_pos`` the image's absolute position (spec §5.1), as gapfit's ``soap``.  The covariance cutoff is
1 with zero gradient.  Neighbours of elements outside ``species_Z`` get no row.

Divergences from QUIP 0.10.3 (spec §2.7, §6): W and S are computed per descriptor (QUIP keeps them in
process-global state recomputed only when Σ alpha_max changes between soap_turbo calls, so consecutive
pieces with the same Σ alpha_max but a different split, basis or — for poly3gauss — σ_r or r_h share
one W there; pieces made by add_species never differ so; the fit's log warns about such models:
:func:`quip_shared_basis_warnings`).  A ``central_weight`` that QUIP 0.10.3 ignores (a scalar, or any
value with n_species = 1) is ignored here too, with a warning in the fit's log (``warnings``).

Agreement with quippy: ~1e-13 for alpha_max ≤ 6; the basis is ill-conditioned (cond S = 1e13 at
alpha_max = 8), so agreement degrades to ~1e-10 at alpha_max 8-9 and ~1e-9 at 10 (spec §7.4).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from ..options.schema import GivenKeys, apply_schema
from ..options.syntax import key_values
from .base import Descriptor, DescriptorValues
from .soap_basis import real_spherical_harmonics
from .soap_turbo_angular import angular_factors
from .soap_turbo_params import SCHEMA, resolve
from .soap_turbo_power import TurboSpectrum
from .soap_turbo_radial import RadialBlock

#: doubles of per-pair work arrays processed at once (bounds the memory of one chunk of centres)
_CHUNK_DOUBLES = 6 << 20


class SoapTurbo(Descriptor):
    name = "soap_turbo"
    n_index = 1
    summary = ("SOAP-turbo (Caro 2019): per-species radial bases with distance-dependent widths, "
               "the power spectrum of one central species")
    sparse_methods = ("cur_points", "cur_covariance", "random", "pivot", "kmeans", "fuzzy", "cluster",
                      "covariance", "none", "file", "index_file")
    legacy_keys = {"Z": "soap_turbo's centres are the atoms of species_Z(central_index); QUIP ignores Z"}
    schema = SCHEMA

    def __init__(self, params, piece="", given=()):
        super().__init__(params, piece, given)
        where = f"in descriptor '{' '.join(piece.split())}'" if piece else "in soap_turbo"
        self._where = where
        given_keys = given if hasattr(given, "key") else _plain_given(given, params)
        s = resolve(self.params, given_keys, piece, where)
        self.settings = s
        self.warnings = tuple(s["warnings"])
        self.l_max = s["l_max"]
        self.species_Z: List[int] = s["species_Z"]
        self.centre_species = s["central_index"] - 1
        self.centre_Z = self.species_Z[self.centre_species]
        self.rcut_hard = s["rcut_hard"]
        self.alpha_max = s["alpha_max"]
        self.block_start = np.concatenate([[0], np.cumsum(self.alpha_max)]).astype(np.int64)
        self.n_max = int(self.block_start[-1])
        self.blocks = [RadialBlock(a, s["basis"], s["atom_sigma_r"][k], s["atom_sigma_r_scaling"][k],
                                   s["amplitude_scaling"][k], s["rcut_hard"], s["rcut_soft"], s["nf"],
                                   s["radial_enhancement"]) for k, a in enumerate(self.alpha_max)]
        self.sigma_t = np.asarray(s["atom_sigma_t"], dtype=float)
        self.sigma_t_scaling = np.asarray(s["atom_sigma_t_scaling"], dtype=float)
        self._spectrum = TurboSpectrum(self.alpha_max, self.l_max, s["compression"])
        # the centre's own contribution to c_00 of its block (spec §2.5)
        self.centre_c00 = np.zeros(self.n_max)
        sc = self.centre_species
        lo, hi = self.block_start[sc], self.block_start[sc + 1]
        self.centre_c00[lo:hi] = self.blocks[sc].centre_term(s["central_weight"][sc], self.sigma_t[sc])
        L1 = self.l_max + 1
        #: l of each real harmonic index l² + l + m, and where each l starts
        self._l_of = np.repeat(np.arange(L1), 2 * np.arange(L1) + 1)
        self._l_starts = np.arange(L1) ** 2

    # ------------------------------------------------------------------------------------------
    # interface

    @property
    def cutoff(self) -> float:
        return float(self.rcut_hard)

    @property
    def dimensions(self) -> int:
        return self._spectrum.dimensions

    def species_selector(self) -> Optional[List[int]]:
        return [self.centre_Z]

    @classmethod
    def combination_warnings(cls, descriptors: Sequence[Descriptor]) -> List[str]:
        return quip_shared_basis_warnings(descriptors)

    @classmethod
    def expand_species(cls, piece: str, species: List[int]) -> List[str]:
        # descriptor_str_add_species, DT_SOAP_TURBO (descriptors.F90:3730-3737): the template followed by
        # " n_species=N species_Z={Z1 Z2 … } central_index=i", integers each followed by a space (spec §1.5)
        # gap_fit initialises the template before expanding it (gap_fit.F90:57-70): it must parse on its own,
        # e.g. per-species vectors need the template's n_species (spec §1.5)
        pairs = [(k, v) for k, v in key_values(piece, what="soap_turbo template") if k in SCHEMA]
        values, given = apply_schema(SCHEMA, pairs, f"in the add_species template '{' '.join(piece.split())}'")
        resolve(values, given, piece, f"in the add_species template '{' '.join(piece.split())}'")
        listed = "".join(f"{z} " for z in species)
        base = piece.rstrip()
        return [f"{base} n_species={len(species)} species_Z={{{listed}}} central_index={i + 1}"
                for i in range(len(species))]

    def _pairs(self, numbers, neighbours, is_centre):
        """Selected neighbour entries (CSR order = QUIP's) and their species: r < r_h, element in species_Z."""
        top = max(int(numbers.max(initial=0)), max(self.species_Z)) + 1
        species_of = np.full(top, -1, dtype=np.int64)
        species_of[self.species_Z] = np.arange(len(self.species_Z))
        nl = neighbours
        keep = is_centre[nl.i] & (nl.distance < self.rcut_hard) & (species_of[numbers[nl.j]] >= 0)
        sel = np.flatnonzero(keep)
        return sel, species_of[numbers[nl.j[sel]]]

    def gradient_rows(self, structure, neighbours):
        numbers = np.asarray(structure.numbers, dtype=np.int64).reshape(-1)
        is_centre = numbers == self.centre_Z
        sel, _ = self._pairs(numbers, neighbours, is_centre)
        return np.bincount(neighbours.i[sel], minlength=numbers.size) + is_centre

    def calc(self, structure, neighbours, grad: bool = False, atoms=None) -> DescriptorValues:
        numbers = np.asarray(structure.numbers, dtype=np.int64).reshape(-1)
        positions = np.asarray(structure.positions, dtype=float).reshape(-1, 3)
        cell = np.asarray(structure.cell, dtype=float).reshape(3, 3)
        is_centre = numbers == self.centre_Z
        if atoms is not None:
            is_centre &= np.asarray(atoms, dtype=bool)
        centres = np.flatnonzero(is_centre)
        n_c = centres.size
        rank = np.full(numbers.size, -1, dtype=np.int64)
        rank[centres] = np.arange(n_c)
        nl = neighbours
        sel, species = self._pairs(numbers, nl, is_centre)
        pair_c = rank[nl.i[sel]]  # ascending: the list is grouped by centre atom
        counts = np.bincount(pair_c, minlength=n_c)
        starts = np.cumsum(counts) - counts
        d = self.dimensions
        x = np.zeros((n_c, d))
        values = DescriptorValues(x=x, cutoff=np.ones(n_c), centres=centres[:, None].astype(np.int64))
        if grad:
            row0 = starts + np.arange(n_c)
            pair_rows = np.arange(sel.size) + pair_c + 1
            n_grad = n_c + sel.size
            values.grad_desc = np.repeat(np.arange(n_c), counts + 1)
            values.grad_atom = np.empty(n_grad, dtype=np.int64)
            values.grad_atom[row0] = centres
            values.grad_atom[pair_rows] = nl.j[sel]
            values.grad_pos = np.empty((n_grad, 3))
            values.grad_pos[row0] = positions[centres]
            values.grad_pos[pair_rows] = positions[nl.j[sel]] + nl.shift[sel] @ cell
            values.grad_cutoff = np.zeros((n_grad, 3))
            values.grad_x = np.zeros((n_grad, 3, d))
        r = np.asarray(nl.distance[sel], dtype=float)
        diff = np.asarray(nl.diff[sel], dtype=float)
        for c0, c1 in self._chunks(counts, grad):
            p0, p1 = starts[c0], starts[c1 - 1] + counts[c1 - 1]
            local = slice(p0, p1)
            group_starts = starts[c0:c1] - p0
            res = self._chunk(r[local], diff[local], species[local], pair_c[local] - c0, group_starts,
                              c1 - c0, grad)
            x[c0:c1] = res[0]
            if grad:
                values.grad_x[pair_rows[local]] = res[1]
                values.grad_x[row0[c0:c1]] = res[2]
        return values

    # ------------------------------------------------------------------------------------------
    # building blocks

    def _chunks(self, counts, grad):
        """Consecutive ranges of centres whose pairs fit in the work budget (at least one centre each)."""
        n_c = counts.size
        if n_c == 0:
            return []
        m2, N, L1 = (self.l_max + 1) ** 2, self.n_max, self.l_max + 1
        per_pair = m2 * N + 4 * L1 + 2 * N + m2
        if grad:
            per_pair += 4 * m2 * N + 10 * L1 * N + 4 * self.dimensions + 3 * m2
        budget = max(1, _CHUNK_DOUBLES // per_pair)
        cost = np.cumsum(counts + 1)
        cuts = np.searchsorted(cost, np.arange(budget, int(cost[-1]), budget), side="right")
        cuts = np.unique(np.concatenate([[0], cuts, [n_c]]))
        return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]

    def _radial(self, r, species, grad):
        """R (p, N) and dR/dr of every pair, nonzero only in the pair's species block."""
        R = np.zeros((r.size, self.n_max))
        dR = np.zeros((r.size, self.n_max)) if grad else None
        for s, block in enumerate(self.blocks):
            rows = np.flatnonzero(species == s)
            if rows.size == 0:
                continue
            lo, hi = self.block_start[s], self.block_start[s + 1]
            Rs, dRs = block.expand(r[rows], grad)
            R[rows, lo:hi] = Rs
            if grad:
                dR[rows, lo:hi] = dRs
        return R, dR

    def _chunk(self, r, diff, species, pc, group_starts, n_c, grad):
        """Values (n_c, d) of a chunk of centres and, with ``grad``, the pair rows and centre rows."""
        L1, N = self.l_max + 1, self.n_max
        u = diff / r[:, None]
        Y, dY = real_spherical_harmonics(u, self.l_max, grad)
        g, dg = angular_factors(r, self.sigma_t[species], self.sigma_t_scaling[species], self.rcut_hard,
                                self.l_max, grad)
        R, dR = self._radial(r, species, grad)
        gY = Y * g[:, self._l_of]
        C = np.zeros((n_c, Y.shape[1], N))
        nonempty = np.flatnonzero(np.append(group_starts[1:], r.size) > group_starts)
        if r.size:
            C[nonempty] = np.add.reduceat(gY[:, :, None] * R[:, None, :], group_starts[nonempty], axis=0)
        C[:, 0, :] += self.centre_c00
        q, divisor = self._spectrum.values([C[:, k * k:(k + 1) ** 2, :] for k in range(L1)])
        x = q / divisor[:, None]
        if not grad:
            return x, None, None
        inv = (1.0 / divisor)[pc]
        Cp = C[pc]
        terms = {
            "alpha": g[:, :, None] * R[:, None, :] * inv[:, None, None],
            "beta": (dg[:, :, None] * R[:, None, :] + g[:, :, None] * dR[:, None, :]) * inv[:, None, None],
            "proj": np.add.reduceat(Y[:, :, None] * Cp, self._l_starts, axis=1),
            "dproj": np.add.reduceat((dY / r[:, None, None])[:, :, :, None] * Cp[:, None], self._l_starts, axis=2),
            "u": u, "species": species,
        }
        rows = np.empty((r.size, 3, self.dimensions))
        centre_rows = np.empty((n_c, 3, self.dimensions))
        self._spectrum.gradients(terms, x[pc], group_starts, rows, centre_rows)
        return x, rows, centre_rows


def _plain_given(given, params):
    """A GivenKeys view of a plain collection of given key names (direct construction)."""
    return GivenKeys({k: str(params.get(k)) for k in given})


def quip_shared_basis_warnings(descriptors: Sequence[Descriptor]) -> List[str]:
    """Warnings for soap_turbo terms that QUIP 0.10.3 evaluates with another term's radial basis.

    QUIP keeps W and S in process-global state and recomputes them only when Σ alpha_max differs from
    the previous soap_turbo call's (spec §2.7; fixed in soap_turbo after the oracle).  gap_fit and QUIP's
    evaluation call the terms in coordinate order, frame after frame, so two soap_turbo terms that follow
    each other in that cycle (other descriptors in between do not count) with equal Σ alpha_max but a
    different split, basis or (poly3gauss) σ_r/r_h share one basis in QUIP.  gapfit computes each
    term's own, so QUIP's predictions of such a model differ from gapfit's.  Terms made by add_species
    differ only in central_index and share their basis legitimately.
    """
    terms = []
    for k, d in enumerate(descriptors, 1):
        if isinstance(d, SoapTurbo):
            s = d.settings
            widths = tuple(sr / d.rcut_hard for sr in s["atom_sigma_r"]) if s["basis"] == "poly3gauss" else ()
            terms.append((k, d.n_max, (s["basis"], tuple(d.alpha_max), widths)))
    out, named = [], set()
    for i, (k, n_max, basis) in enumerate(terms):
        k2, n_max2, basis2 = terms[(i + 1) % len(terms)]
        pair = tuple(sorted((k, k2)))
        if n_max == n_max2 and basis != basis2 and pair not in named:
            named.add(pair)
            out.append(f"soap_turbo coordinates {pair[0]} and {pair[1]} have the same sum of alpha_max ({n_max}) but "
                       f"different radial bases: QUIP 0.10.3 reuses one's basis for the other, so QUIP's predictions "
                       f"of this model will differ from gapfit's (make their sums of alpha_max differ)")
    return out
