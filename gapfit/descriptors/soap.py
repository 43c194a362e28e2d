"""QUIP's ``soap`` descriptor (the original SOAP power spectrum, not ``soap_turbo``).

The mathematics and QUIP's conventions are in descriptors.md §1 (verified
against quippy to machine precision).  In short, for a central atom ``i``:

* every neighbour image ``j`` with ``r_ij < cutoff`` whose element is in
  ``species_Z`` is a Gaussian of width ``atom_sigma``, weighted by the cosine
  cutoff (times the optional ``cutoff_dexp`` decay), in its species channel;
  the centre's own Gaussian (weight ``central_weight``, never cut off) goes into
  its own channel, or into every channel with ``central_reference_all_species``;
* the density is expanded in ``n_max`` radial functions (EQUISPACED_GAUSS: the
  interpolation + Cholesky transform ``C⁻¹L``; GTO and POLY: a least-squares fit
  on a fine grid) times spherical harmonics up to ``l_max``.  The radial
  integrals use QUIP's upward recurrence for the modified spherical Bessel
  functions, fed by an exp rounded as the C library's, so close contacts and
  high l agree with QUIP to rounding in practice (pitfall P9);
* the power spectrum ``P_l = X_lᵀ X_l / √(2l+1)`` is packed over the channel
  pairs ``k ≥ k'`` (``k`` outer), ``l`` fastest, with √2 on ``k ≠ k'``; the
  vector is normalised and its last element is ``covariance_sigma0``.

We use real spherical harmonics: they are a unitary change of the ``m`` basis
per ``l``, so the power spectrum and its gradients are the same as QUIP's
complex ones to rounding.

Instances and gradient rows (:class:`DescriptorValues`):

* one instance per central atom (``Z`` filter) in index order, ``centres`` =
  ``(i,)``; its gradient rows are the centre (atom ``i`` at ``r_i``; minus the
  sum of the other rows) followed by one row per neighbour image within the
  cutoff whose element has a channel, in neighbour-list order, ``grad_pos`` =
  the image's absolute position ``r_j + shift·cell``.  Neighbours without a
  channel get no row (QUIP keeps an uninitialised one with ``ii = 0``);
* ``average=T``: one instance, ``centres`` = ``(all selected centres,)`` (shape
  ``(1, n_centres)``, so the local energy is shared equally, as QUIP's ``ci``);
  gradient rows are, for each centre in index order, the centre row followed by
  its neighbour rows, as QUIP's, but ``grad_pos`` holds absolute positions
  (QUIP stores 0 and the bond vectors ``d_ij``; virials are the same because
  the rows of each centre sum to zero);
* the covariance cutoff is 1 and its gradient 0.

An environment whose power spectrum vanishes (no neighbour and
``central_weight=0``) gives a zero vector instead of QUIP's NaN in local mode
(QUIP's average mode does the same with ``tiny``).

Parameters: every key of QUIP's ``soap_initialise``.  The compression and mixing
variants (``nu_R``, ``nu_S``, ``Z_mix``, ``R_mix``, ``sym_mix``, ``coupling``,
``K``, ``mix_shift``, ``Z_map``) are refused unless they have their default
value; so are a ``species_Z`` wildcard 0 with ``n_species > 1`` and repeated
elements in ``species_Z`` (QUIP's gradients are inconsistent there).
``xml_version`` drives both of QUIP's switches (centre Gaussian in every channel
below 1426512068, no 1/√(2l+1) below 1423143769), as QUIP does when it loads a
GAP XML with that ``gap_version``.

Agreement with quippy: ~1e-15 for the default basis (1e-11 for l_max = n_max = 12
with atom_sigma = 1, where the basis solve is ill-conditioned).  GTO and POLY are
least-squares fits through an overlap matrix whose conditioning worsens with n_max
and, for GTO, with l (condition 1e11 at l = 8): GTO agrees to ~1e-11 up to
n_max = l_max = 8, ~1e-8 at n_max = l_max = 12; POLY to 1e-13 at n_max = 4 but only ~1e-6 at
n_max = 8 (QUIP's own values are dominated by rounding there).

Cost: everything is vectorised over neighbours and centres (centres are processed
in groups of bounded memory).  The gradient, whose size (n_rows, 3, d) dominates,
is built block by block of ``k`` channel pairs with the neighbours on the fast
axis; the terms that vanish because a neighbour only touches its own channel are
skipped.
"""

from __future__ import annotations

import math
from typing import List, Optional

import numpy as np
import scipy.linalg
from scipy.special import erf, gammainc, gamma as gamma_function

from ..errors import ConfigError
from ..schema import Param, Schema, at_least_one, int_list, non_negative, positive, to_bool, to_float, to_int, to_str
from .base import Descriptor, DescriptorValues, coordination_function, d_coordination_function

#: gap_version from which the centre Gaussian goes only into the centre's own channel by default
VERSION_CENTRAL_REFERENCE = 1426512068
#: gap_version from which P_l carries the 1/√(2l+1) factor
VERSION_TWO_L_PLUS_ONE = 1423143769

_RADIAL_BASES = ("EQUISPACED_GAUSS", "GTO", "POLY")

# Compression and mixing keys of soap_initialise: registered, only their defaults are implemented.
_NOT_IMPLEMENTED = {"nu_R": 2, "nu_S": 2, "Z_mix": False, "R_mix": False, "sym_mix": False,
                    "coupling": True, "K": 0, "mix_shift": 0, "Z_map": ""}

# Bytes of per-pair work arrays processed at once (neighbour terms, power-spectrum gradients).
_PAIR_CHUNK_BYTES = 48 << 20
_GRAD_BLOCK_BYTES = 2 << 20
_STORE_WIDTH = 1024  # elements per piece when the gradients are transposed into their rows


def _radial_basis_choice(value):
    v = "" if value is None else value.strip()
    if v == "":
        return "EQUISPACED_GAUSS"  # QUIP's default (pitfall P7)
    if v in _RADIAL_BASES:
        return v
    raise ValueError("one of EQUISPACED_GAUSS, GTO, POLY (upper case, as QUIP)")


class Soap(Descriptor):
    name = "soap"
    n_index = 1
    summary = "Smooth Overlap of Atomic Positions: the power spectrum of each atom's smeared neighbour density"
    #: uniform grids each dimension: soap's hundreds of dimensions cannot be gridded
    sparse_methods = ("cur_points", "cur_covariance", "random", "pivot", "kmeans", "fuzzy", "cluster",
                      "covariance", "none", "file", "index_file")
    legacy_keys = {
        # C GAP-20's command line (2020) has radial_decay=-0.5; gap_fit 0.10.3 registers no such key and
        # ignores it (the same model with and without it, bit for bit); cutoff_rate/_scale/_dexp are today's
        "radial_decay": "gap_fit 0.10.3 ignores it too (today's radial scaling keys are cutoff_dexp, cutoff_scale "
                        "and cutoff_rate)",
    }
    schema = Schema([
        Param("soap", to_bool, True, help="the descriptor keyword"),
        Param("cutoff", to_float, None, mandatory=True, check=positive,
              help="cutoff radius (Å): neighbours at r < cutoff"),
        Param("cutoff_transition_width", to_float, 0.5, check=positive,
              help="width of the cosine taper of neighbour weights below the cutoff (Å)"),
        Param("cutoff_dexp", to_int, 0, check=non_negative,
              help="exponent of the optional extra radial decay of neighbour weights (0: none)"),
        Param("cutoff_scale", to_float, 1.0, check=positive, help="length scale of that decay (Å)"),
        Param("cutoff_rate", to_float, 1.0, check=non_negative, help="rate of that decay"),
        Param("l_max", to_int, None, mandatory=True, check=non_negative,
              help="largest angular momentum of the expansion"),
        Param("n_max", to_int, None, mandatory=True, check=at_least_one, help="number of radial basis functions"),
        Param("atom_sigma", to_float, None, aliases=("atom_gaussian_width",), mandatory=True, check=positive,
              help="width of the Gaussian smearing each neighbour (Å)"),
        Param("central_weight", to_float, 1.0, help="weight of the central atom's own Gaussian"),
        Param("central_reference_all_species", to_bool, False,
              help="put the central Gaussian in every species channel (default T with one species)"),
        Param("average", to_bool, False, help="one descriptor per structure, the average over its atoms"),
        Param("diagonal_radial", to_bool, False, help="keep only n = n' terms of the power spectrum"),
        Param("covariance_sigma0", to_float, 0.0, help="value of the extra last component of the vector"),
        Param("normalise", to_bool, True, aliases=("normalize",), help="normalise each vector to unit length"),
        Param("basis_error_exponent", to_float, 10.0, check=non_negative,
              help="sets the extent of the radial basis (QUIP's 10^-x accuracy target)"),
        Param("n_Z", to_int, 1, check=at_least_one, help="number of central species in Z"),
        Param("Z", int_list(), None, help="atomic numbers of the central atoms ({0}: all); set by add_species"),
        Param("n_species", to_int, 1, check=at_least_one, help="number of neighbour species channels"),
        Param("species_Z", int_list(), None, help="atomic numbers of the neighbour channels; set by add_species"),
        Param("xml_version", to_int, VERSION_CENTRAL_REFERENCE, help="QUIP compatibility switches of old models"),
        Param("nu_R", to_int, 2, help="compression: radial body order (only the default 2 is supported)"),
        Param("nu_S", to_int, 2, help="compression: species body order (only the default 2 is supported)"),
        Param("Z_mix", to_bool, False, help="compression: mix species channels (not supported)"),
        Param("R_mix", to_bool, False, help="compression: mix radial channels (not supported)"),
        Param("sym_mix", to_bool, False, help="compression: symmetric mixing (not supported)"),
        Param("coupling", to_bool, True, help="compression: coupled power spectrum (only T is supported)"),
        Param("K", to_int, 0, help="compression: number of mixed channels (not supported)"),
        Param("mix_shift", to_int, 0, help="compression: mixing seed shift (not supported)"),
        Param("Z_map", to_str, "", help="compression: species map (not supported)"),
        Param("radial_basis", _radial_basis_choice, "EQUISPACED_GAUSS",
              help="radial basis: EQUISPACED_GAUSS (QUIP's default), GTO or POLY"),
    ])

    def __init__(self, params, piece="", given=()):
        super().__init__(params, piece, given)
        p = self.params
        where = f"in descriptor '{' '.join(piece.split())}'" if piece else "in soap"
        self._where = where

        def bad(key, must, got=None):
            got = p[key] if got is None else got
            return ConfigError(f"the '{key}' key {where} must be {must}; got {got}")

        for key, default in _NOT_IMPLEMENTED.items():
            if p[key] != default:
                raise ConfigError(f"soap '{key}={p[key]}' {where} is not implemented in gapfit "
                                  f"(only the default {key}={_fmt(default)}: the original power spectrum)")
        # ranges of single keys are checked by the schema (Param.check)

        # central atoms: n_Z / Z (0 = any element)
        if p["Z"] is None:
            if p["n_Z"] > 1:
                raise ConfigError(f"n_Z={p['n_Z']} {where} needs Z={{...}} with {p['n_Z']} atomic numbers")
            z_list = [0]
        else:
            z_list = list(p["Z"])
            if len(z_list) != p["n_Z"]:
                raise ConfigError(f"the 'Z' key {where} must have n_Z={p['n_Z']} value(s); got {len(z_list)}")
        if any(z < 0 for z in z_list):
            raise bad("Z", "atomic numbers (0 for any element)", z_list)
        self.centre_Z = z_list

        # density channels: n_species / species_Z
        n_species = p["n_species"]
        if "species_Z" in self.given and "n_species" not in self.given:
            raise ConfigError(f"species_Z is given {where} without n_species (QUIP requires both)")
        if p["species_Z"] is None:
            if n_species > 1:
                raise ConfigError(f"n_species={n_species} {where} needs species_Z={{...}} with {n_species} "
                                  f"atomic numbers")
            species = [0]
        else:
            species = list(p["species_Z"])
            if len(species) != n_species:
                raise ConfigError(f"the 'species_Z' key {where} must have n_species={n_species} value(s); "
                                  f"got {len(species)}")
        if any(z < 0 for z in species):
            raise bad("species_Z", "atomic numbers", species)
        if n_species > 1 and 0 in species:
            raise ConfigError(f"species_Z={{{' '.join(map(str, species))}}} {where}: the wildcard 0 is only "
                              f"supported with n_species=1 (QUIP's gradients are inconsistent otherwise)")
        if len(set(species)) != len(species):
            raise ConfigError(f"species_Z={{{' '.join(map(str, species))}}} {where} lists an element twice")
        self.species_Z = species

        version = p["xml_version"]
        cras = p["central_reference_all_species"]
        if "central_reference_all_species" not in self.given and n_species == 1:
            cras = True
        if version < VERSION_CENTRAL_REFERENCE:
            cras = True
        self.central_reference_all_species = cras
        self.two_l_plus_one = version >= VERSION_TWO_L_PLUS_ONE

        self.l_max = p["l_max"]
        self.n_max = p["n_max"]
        self.n_species = n_species
        self.alpha = 0.5 / p["atom_sigma"] ** 2
        self.radial_basis = p["radial_basis"]
        self._setup_radial()
        self._setup_packing()

    # ------------------------------------------------------------------------------------------
    # set-up

    def _setup_radial(self):
        """Radial grid, transforms (grid values -> coefficients) and the centre coefficients."""
        p = self.params
        n, lmax, alpha = self.n_max, self.l_max, self.alpha
        sigma = p["atom_sigma"]
        cutoff_basis = p["cutoff"] + sigma * math.sqrt(2.0 * p["basis_error_exponent"] * math.log(10.0))
        try:
            if self.radial_basis == "EQUISPACED_GAUSS":
                r_basis = _accumulate(cutoff_basis / n, n)
                ri, rj = r_basis[None, :], r_basis[:, None]
                # C[j, i] = g_i(r_j); S[j, i] = ∫ g_i g_j r² dr (descriptors.md §1.4)
                cov = np.exp(-alpha * (ri - rj) ** 2)
                s = ri + rj
                overlap = (np.exp(-alpha * (ri ** 2 + rj ** 2)) * math.sqrt(2.0) * alpha ** 1.5 * s
                           + alpha * np.exp(-0.5 * alpha * (ri - rj) ** 2) * math.sqrt(math.pi)
                           * (1.0 + alpha * s ** 2) * (1.0 + erf(math.sqrt(alpha / 2.0) * s)))
                overlap = overlap / math.sqrt(128.0 * alpha ** 5)
                chol = scipy.linalg.cholesky(overlap, lower=True)
                transform = scipy.linalg.cho_solve(scipy.linalg.cho_factor(cov, lower=False), chol)
                self._transform = np.broadcast_to(transform, (lmax + 1, n, n))
                self.centre_coefficients = chol[0].copy()
            else:
                n_grid = 3 * n
                r_basis = _accumulate(cutoff_basis / n_grid, n_grid)
                maps = []
                if self.radial_basis == "GTO":
                    rg = (cutoff_basis / n) * np.arange(1, n + 1)
                    for l in range(lmax + 1):
                        a_ln = -rg ** (-2.0) * (math.log(0.001) - l * np.log(rg))
                        a = a_ln[:, None] + a_ln[None, :]
                        t = l + 1.5
                        u = a * cutoff_basis ** 2
                        overlap = 0.5 * cutoff_basis ** (2 * t) * u ** (-t) * gammainc(t, u) * gamma_function(t)
                        basis = r_basis[:, None] ** l * np.exp(-a_ln[None, :] * r_basis[:, None] ** 2)
                        maps.append(_least_squares_map(basis, overlap))
                else:  # POLY
                    i = np.arange(1, n + 1, dtype=float)
                    norm = np.sqrt(cutoff_basis ** (2 * i + 7) / ((i + 3) * (2 * i + 5) * (2 * i + 7)))
                    ij = i[:, None] + i[None, :]
                    overlap = (2 * cutoff_basis ** (ij + 7) / ((5 + ij) * (6 + ij) * (7 + ij))) / np.outer(norm, norm)
                    basis = (cutoff_basis - r_basis[:, None]) ** (i[None, :] + 2) / norm[None, :]
                    maps = [_least_squares_map(basis, overlap)] * (lmax + 1)
                # maps[l] is (n, n_grid): coefficients = maps[l] @ grid values
                self._transform = np.stack([m.T for m in maps])  # (l, n_grid, n)
                self.centre_coefficients = maps[0] @ np.exp(-alpha * r_basis ** 2)
        except np.linalg.LinAlgError as exc:
            raise ConfigError(f"the {self.radial_basis} radial basis {self._where} cannot be built "
                              f"(n_max={n} too large for this basis?): {exc}") from None
        self.r_basis = r_basis
        self._zero_column = np.flatnonzero(r_basis == 0.0)
        self._nonzero_column = np.flatnonzero(r_basis != 0.0)

    def _setup_packing(self):
        """Element order: channel pairs k ≥ k' (k outer, k' inner), l fastest; √2 off the diagonal.

        The elements of one k form a contiguous block (k' runs over a slice of
        the channels: all k' ≤ k, or with diagonal_radial those with the same n).
        """
        n, S, lmax = self.n_max, self.n_species, self.l_max
        K = n * S
        L1 = lmax + 1
        diagonal = self.params["diagonal_radial"]
        step = n if diagonal else 1
        # per neighbour channel s, what the block of each k needs (only channel s of dX is non-zero):
        #   "zero":  k in a channel below s, so every k' <= k is too: the gradient is zero;
        #   "own":   k in channel s: k' in lower channels (the R̃_k terms) and k' in channel s (all);
        #   "other": k in a higher channel: only k' in channel s contributes (the R̃_k' terms)
        plans = [[] for _ in range(S)]
        k1_list, k2_list = [], []
        e = 0
        for k1 in range(K):
            k2 = np.arange(k1 % n if diagonal else 0, k1 + 1, step)
            e0, e1, nk2 = e, e + k2.size * L1, k2.size
            e = e1
            k1_list.append(np.full(nk2, k1))
            k2_list.append(k2)
            s1 = k1 // n
            for sp in range(S):
                i0 = int(np.searchsorted(k2, sp * n))
                i1 = int(np.searchsorted(k2, (sp + 1) * n))
                if sp > s1:
                    plans[sp].append(("zero", e0, e1, nk2))
                elif sp == s1:
                    lower = slice(int(k2[0]), int(k2[i0 - 1]) + 1, step) if i0 > 0 else None
                    plans[sp].append(("own", e0, e1, nk2, k1, k1 - sp * n, i0, lower,
                                      slice(int(k2[i0]) - sp * n, k1 - sp * n + 1, step),
                                      slice(int(k2[i0]), k1 + 1, step)))
                else:
                    plans[sp].append(("other", e0, e1, nk2, k1, i0, i1,
                                      slice(int(k2[i0]) - sp * n, int(k2[i1 - 1]) - sp * n + 1, step)))
        k1, k2 = np.concatenate(k1_list), np.concatenate(k2_list)
        l = np.arange(L1)
        self._tlpo = 1.0 / np.sqrt(2.0 * l + 1.0) if self.two_l_plus_one else np.ones(L1)
        Lr = np.tile(l, k1.size)
        K1 = np.repeat(k1, L1)
        K2 = np.repeat(k2, L1)
        self._fac = self._tlpo[Lr] * np.where(K1 != K2, math.sqrt(2.0), 1.0)
        self._gram_index = (Lr * K + K1) * K + K2  # into (l, k, k') Gram matrices
        self._plans = plans
        self._n_elements = e

    # ------------------------------------------------------------------------------------------
    # interface

    @property
    def dimensions(self) -> int:
        return self._n_elements + 1

    def species_selector(self) -> Optional[List[int]]:
        return None if 0 in self.centre_Z else list(self.centre_Z)

    @classmethod
    def expand_species(cls, piece: str, species: List[int]) -> List[str]:
        # descriptor_str_add_species: trim(this)//" n_species="//n//" Z="//z//" species_Z={"//species//"}",
        # where an integer array is written as "14 6 " (each value followed by a space)
        listed = "".join(f"{s} " for s in species)
        base = piece.rstrip()
        return [f"{base} n_species={len(species)} Z={z} species_Z={{{listed}}}" for z in species]

    @property
    def splittable(self) -> bool:
        return not self.params["average"]  # one global instance: cannot be computed in pieces

    def _centre_mask(self, numbers):
        if 0 in self.centre_Z:
            return np.ones(numbers.size, dtype=bool)
        return np.isin(numbers, self.centre_Z)

    def gradient_rows(self, structure, neighbours):
        numbers = np.asarray(structure.numbers, dtype=np.int64).reshape(-1)
        is_centre = self._centre_mask(numbers)
        channel_of_z = self._channel_map(numbers)
        nl = neighbours
        keep = (nl.distance < self.params["cutoff"]) & is_centre[nl.i] & (channel_of_z[numbers[nl.j]] >= 0)
        return np.bincount(nl.i[keep], minlength=numbers.size) + is_centre

    def calc(self, structure, neighbours, grad: bool = False, atoms=None) -> DescriptorValues:
        numbers = np.asarray(structure.numbers, dtype=np.int64).reshape(-1)
        positions = np.asarray(structure.positions, dtype=float).reshape(-1, 3)
        cell = np.asarray(structure.cell, dtype=float).reshape(3, 3)
        n_atoms = numbers.size
        d = self.dimensions

        # centres (Z filter, and the optional atom subset) and the pairs that enter the density
        is_centre = self._centre_mask(numbers)
        if atoms is not None and not self.params["average"]:
            is_centre = is_centre & np.asarray(atoms, dtype=bool)
        centres = np.flatnonzero(is_centre)
        n_centres = centres.size
        rank = np.full(n_atoms, -1, dtype=np.int64)
        rank[centres] = np.arange(n_centres)
        channel_of_z = self._channel_map(numbers)
        nl = neighbours
        keep = (nl.distance < self.params["cutoff"]) & is_centre[nl.i] & (channel_of_z[numbers[nl.j]] >= 0)
        pair_i = nl.i[keep]
        order = np.argsort(rank[pair_i], kind="stable")  # CSR already: identity in practice
        sel = np.flatnonzero(keep)[order]
        pair_i, pair_j = nl.i[sel], nl.j[sel]
        pair_c = rank[pair_i]
        pairs = _Pairs(c=pair_c, r=np.asarray(nl.distance[sel], dtype=float),
                       diff=np.asarray(nl.diff[sel], dtype=float), ch=channel_of_z[numbers[pair_j]])
        counts = np.bincount(pair_c, minlength=n_centres)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

        # centre term channels: own element's channel, wildcard channel, or all
        sz = np.asarray(self.species_Z)
        if self.central_reference_all_species:
            centre_channels = np.ones((n_centres, self.n_species), dtype=bool)
        else:
            zc = numbers[centres]
            centre_channels = (sz[None, :] == zc[:, None]) | (sz[None, :] == 0)

        if self.params["average"]:
            return self._calc_average(positions, cell, centres, centre_channels, pairs, counts, starts,
                                      nl, sel, grad)

        x = np.empty((n_centres, d))
        values = DescriptorValues(x=x, cutoff=np.ones(n_centres), centres=centres[:, None].astype(np.int64))
        if grad:
            row0, pair_rows = _gradient_layout(values, d, centres, counts, pairs.c, positions,
                                               pair_j, positions[pair_j] + nl.shift[sel] @ cell)
            values.grad_desc = np.repeat(np.arange(n_centres), counts + 1)
            grad_x = values.grad_x

        for cc in self._centre_chunks(counts, grad):
            idx = _ranges(starts[cc], counts[cc])
            sub = pairs.take(idx)
            local_c = np.repeat(np.arange(cc.size), counts[cc])
            slot = np.arange(idx.size) - np.repeat(np.cumsum(counts[cc]) - counts[cc], counts[cc])
            terms = self._pair_terms(sub, grad)
            X = self._expansion(terms, sub.ch, local_c, slot, cc.size, centre_channels[cc])
            q, norm = self._power_spectrum(X)
            x[cc, :-1] = q / norm[:, None] if self.params["normalise"] else q
            if grad:
                A, B = self._projections(terms, X, local_c, slot)
                scale = 1.0 / norm if self.params["normalise"] else np.ones_like(norm)
                qhat = q * scale[:, None] if self.params["normalise"] else None
                rows = pair_rows[idx]
                centre_sum = np.zeros((cc.size, 3, d - 1))
                self._gradient_rows(terms, sub.ch, A, B, local_c, scale, qhat, grad_x, rows, centre_sum)
                grad_x[row0[cc], :, :-1] = -centre_sum
        x[:, -1] = self.params["covariance_sigma0"]
        return values

    # ------------------------------------------------------------------------------------------
    # average=T

    def _calc_average(self, positions, cell, centres, centre_channels, pairs, counts, starts, nl, sel, grad):
        d = self.dimensions
        lmax, K = self.l_max, self.n_max * self.n_species
        X = [np.zeros((1, 2 * l + 1, K)) for l in range(lmax + 1)]
        for cc in self._centre_chunks(counts, False):
            idx = _ranges(starts[cc], counts[cc])
            sub = pairs.take(idx)
            local_c = np.repeat(np.arange(cc.size), counts[cc])
            slot = np.arange(idx.size) - np.repeat(np.cumsum(counts[cc]) - counts[cc], counts[cc])
            terms = self._pair_terms(sub, False)
            Xc = self._expansion(terms, sub.ch, local_c, slot, cc.size, centre_channels[cc])
            for l in range(lmax + 1):
                X[l] += Xc[l].sum(axis=0, keepdims=True)
        q, norm = self._power_spectrum(X)
        if norm[0] == 0.0:
            norm[0] = np.finfo(float).tiny
        x = np.empty((1, d))
        x[0, :-1] = q[0] / norm[0] if self.params["normalise"] else q[0]
        x[0, -1] = self.params["covariance_sigma0"]
        values = DescriptorValues(x=x, cutoff=np.ones(1), centres=centres[None, :].astype(np.int64))
        if not grad:
            return values
        pair_j = nl.j[sel]
        row0, pair_rows = _gradient_layout(values, d, centres, counts, pairs.c, positions,
                                           pair_j, positions[pair_j] + nl.shift[sel] @ cell)
        values.grad_desc = np.zeros(values.grad_atom.size, dtype=np.int64)
        grad_x = values.grad_x
        normalise = self.params["normalise"]
        scale = np.array([1.0 / norm[0] if normalise else 1.0])
        qhat = q * scale[:, None] if normalise else None
        for cc in self._centre_chunks(counts, True):
            idx = _ranges(starts[cc], counts[cc])
            sub = pairs.take(idx)
            local_c = np.repeat(np.arange(cc.size), counts[cc])
            terms = self._pair_terms(sub, True)
            zeros = np.zeros(idx.size, dtype=np.int64)
            A, B = self._projections(terms, X, zeros, np.arange(idx.size))
            centre_sum = np.zeros((cc.size, 3, d - 1))
            self._gradient_rows(terms, sub.ch, A, B, zeros, scale, qhat, grad_x, pair_rows[idx], centre_sum,
                                sum_index=local_c)
            grad_x[row0[cc], :, :-1] = -centre_sum
        return values

    # ------------------------------------------------------------------------------------------
    # building blocks

    def _channel_map(self, numbers):
        """Channel (0-based) of every element present, -1 when it has none."""
        top = max(int(numbers.max(initial=0)), max(self.species_Z)) + 1
        out = np.full(top, -1, dtype=np.int64)
        for s, z in enumerate(self.species_Z):
            if z == 0:
                out[:] = s
            else:
                out[z] = s
        return out

    def _centre_chunks(self, counts, grad):
        """Groups of centres (sorted by neighbour count, to limit padding) of bounded work size."""
        n_centres = counts.size
        if n_centres == 0:
            return []
        lmax, n, K = self.l_max, self.n_max, self.n_max * self.n_species
        m2 = (lmax + 1) ** 2
        per_pair = m2 * 2 + self.r_basis.size * (lmax + 2) * 3 + (lmax + 1) * (n + K) * 2
        if grad:
            per_pair += m2 * 8 + (lmax + 1) * (n * 4 + K * 8)
        per_pair *= 8
        budget = max(1, _PAIR_CHUNK_BYTES // per_pair)
        order = np.argsort(counts, kind="stable")
        cost = np.cumsum(counts[order] + 1)
        cuts = np.searchsorted(cost, np.arange(budget, int(cost[-1]), budget), side="right")
        cuts = np.unique(np.concatenate([[0], cuts, [n_centres]]))
        return [order[a:b] for a, b in zip(cuts[:-1], cuts[1:]) if b > a]

    def _pair_terms(self, pairs, grad):
        """Spherical harmonics and weighted radial coefficients of each neighbour."""
        r = pairs.r
        u = pairs.diff / r[:, None]
        Y, dY = _real_spherical_harmonics(u, self.l_max, grad)
        R, dR = self._radial(r, grad)
        if grad:
            dY /= r[:, None, None]
        return _Terms(u=u, Y=Y, dY=dY, R=R, dR=dR)

    def _radial(self, r, grad):
        """R[p, l, n] = Σ_a G_l(r, r_a) T_a n · f(r) and its r-derivative (descriptors.md §1.5)."""
        p = self.params
        alpha, lmax = self.alpha, self.l_max
        rb = self.r_basis
        n_p, n_a = r.size, rb.size
        top = lmax + 1 if grad else lmax
        G = np.zeros((top + 1, n_p, n_a))
        nz = self._nonzero_column
        if nz.size:
            rr = r[:, None]
            ra = rb[None, nz]
            arg = 2.0 * alpha * rr * ra
            exp_p = _exp_as_libm(-alpha * (rr + ra) ** 2)
            exp_m = _exp_as_libm(-alpha * (rr - ra) ** 2)
            g_lm = 0.5 * (exp_m + exp_p) / arg  # G_{-1}
            g_l = 0.5 * (exp_m - exp_p) / arg  # G_0
            G[0][:, nz] = g_l
            for l in range(1, top + 1):  # QUIP's upward recurrence (pitfall P9)
                g_lm, g_l = g_l, g_lm - (2 * l - 1) * g_l / arg
                G[l][:, nz] = g_l
        for a in self._zero_column:
            G[0][:, a] = np.exp(-alpha * (rb[a] ** 2 + r ** 2))
        rc, w = p["cutoff"], p["cutoff_transition_width"]
        f = coordination_function(r, rc, w)
        df = d_coordination_function(r, rc, w) if grad else None
        if p["cutoff_dexp"] > 0:
            m, scale, rate = p["cutoff_dexp"], p["cutoff_scale"], p["cutoff_rate"]
            norm_decay = 1.0 if rate == 0.0 else rate / (1.0 + rate)
            x_m = (r / scale) ** m
            decay = norm_decay * (1.0 + rate) / (rate + x_m)
            if grad:
                d_decay = norm_decay * (-m * (1.0 + rate) * x_m / (r * (rate + x_m) ** 2))
                df = df * decay + f * d_decay
            f = f * decay
        T = self._transform
        R = np.matmul(G[:lmax + 1], T)  # (l, p, n)
        dR = None
        if grad:
            l_col = np.arange(lmax + 1)[:, None, None]
            dG = (-2.0 * alpha) * r[None, :, None] * G[:lmax + 1] + l_col * G[:lmax + 1] / r[None, :, None] \
                + G[1:lmax + 2] * (2.0 * alpha * rb)[None, None, :]
            dR = np.matmul(dG, T) * f[None, :, None] + R * df[None, :, None]
            dR = dR.transpose(1, 0, 2)
        R = (R * f[None, :, None]).transpose(1, 0, 2)  # (p, l, n)
        return R, dR

    def _expansion(self, terms, ch, local_c, slot, n_c, centre_channels):
        """X_l[c] (n_c, 2l+1, K) for a group of centres, including the centre's own Gaussian."""
        lmax, n, S = self.l_max, self.n_max, self.n_species
        K = n * S
        j_max = int(slot.max()) + 1 if slot.size else 1
        Yp = np.zeros((n_c, j_max, (lmax + 1) ** 2))
        Yp[local_c, slot] = terms.Y
        Rp = np.zeros((n_c, j_max, lmax + 1, S, n))
        Rp[local_c, slot, :, ch, :] = terms.R
        Rp = Rp.reshape(n_c, j_max, lmax + 1, K)
        X = []
        for l in range(lmax + 1):
            Yl = Yp[:, :, l * l:(l + 1) * (l + 1)]
            X.append(np.matmul(Yl.transpose(0, 2, 1), Rp[:, :, l, :]))
        # centre Gaussian: l = 0, Y_00 = 1/√(4π), coefficients of a Gaussian at r = 0
        c0 = self.params["central_weight"] * self.centre_coefficients * (0.5 / math.sqrt(math.pi))
        X[0][:, 0, :] += (centre_channels[:, :, None] * c0[None, None, :]).reshape(n_c, K)
        return X

    def _power_spectrum(self, X):
        """Packed (unnormalised) power spectra q (n_c, d-1) and their norms."""
        n_c = X[0].shape[0]
        K = X[0].shape[2]
        gram = np.empty((n_c, self.l_max + 1, K, K))
        for l, Xl in enumerate(X):
            gram[:, l] = np.matmul(Xl.transpose(0, 2, 1), Xl)
        q = gram.reshape(n_c, -1)[:, self._gram_index] * self._fac[None, :]
        norm = np.sqrt(np.einsum("ij,ij->i", q, q))
        if self.params["normalise"]:
            norm = np.where(norm == 0.0, np.finfo(float).tiny, norm)
        return q, norm

    def _projections(self, terms, X, group, slot):
        """A[p, l, k] = Σ_m Y_lm X_l[m, k] and B[p, x, l, k] = Σ_m ∂_x Y_lm X_l[m, k] per neighbour."""
        lmax = self.l_max
        K = X[0].shape[2]
        n_g = X[0].shape[0]
        n_p = terms.Y.shape[0]
        j_max = int(slot.max()) + 1 if slot.size else 1
        Yall = np.zeros((n_g, j_max, 4, (lmax + 1) ** 2))
        Yall[group, slot, 0] = terms.Y
        Yall[group, slot, 1:] = terms.dY
        A = np.empty((n_p, lmax + 1, K))
        B = np.empty((n_p, 3, lmax + 1, K))
        for l in range(lmax + 1):
            Yl = Yall[:, :, :, l * l:(l + 1) * (l + 1)].reshape(n_g, j_max * 4, 2 * l + 1)
            proj = np.matmul(Yl, X[l]).reshape(n_g, j_max, 4, K)[group, slot]  # (p, 4, K)
            A[:, l] = proj[:, 0]
            B[:, :, l] = proj[:, 1:]
        return A, B

    def _gradient_rows(self, terms, ch, A, B, centre_of_pair, scale, qhat, grad_x, rows, centre_sum,
                       sum_index=None):
        """Write the (normalised) power-spectrum gradient of every neighbour row.

        Neighbour p in channel s only changes the channels (s, a): dX_l[m, (s, a)] =
        dR_la û Y_lm + R_la ∇Y_lm.  With A_k = Σ_m Y_lm X_l[m, k] and B_k = Σ_m ∇Y_lm X_l[m, k],
        dP_l[k, k'] = Z̃[k, k'] + Z̃[k', k], Z̃[k, k'] = û dR̃_k A_k' + R̃_k B_k', where R̃ is R
        in channel s and zero elsewhere; the neighbours are processed per channel, so the
        zero terms are skipped.  The arrays are laid out with the neighbours last (long inner
        loops); ``scale`` (1/|q|) and 1/√(2l+1) are folded into A and B.  ``centre_sum``
        accumulates the rows of each centre (``sum_index``, sorted).
        """
        lmax = self.l_max
        L1, E = lmax + 1, self._n_elements
        if sum_index is None:
            sum_index = centre_of_pair
        block = max(1, _GRAD_BLOCK_BYTES // (8 * 3 * E))
        sqrt2 = math.sqrt(2.0)
        tlpo = self._tlpo
        for s in range(self.n_species):
            ps = np.flatnonzero(ch == s)
            for lo in range(0, ps.size, block):
                p = ps[lo:lo + block]
                nb_p = p.size
                cp = centre_of_pair[p]
                w = scale[cp][None, :] * tlpo[:, None]  # (l, p)
                Rs = np.ascontiguousarray(terms.R[p].transpose(2, 1, 0))  # (a, l, p), channel s
                dRs = np.ascontiguousarray(terms.dR[p].transpose(2, 1, 0))
                At = A[p].transpose(2, 1, 0) * w  # (K, l, p)
                Bt = B[p].transpose(1, 3, 2, 0) * w  # (3, K, l, p)
                u = terms.u[p].T[:, None, None, :]  # (3, 1, 1, p)
                g = np.empty((3, E, nb_p))
                for plan in self._plans[s]:
                    kind, e0, e1, nk2 = plan[:4]
                    blk = g[:, e0:e1].reshape(3, nk2, L1, nb_p)
                    if kind == "zero":
                        blk[...] = 0.0
                        continue
                    if kind == "other":  # only R̃_k' B_k + û dR̃_k' A_k, k' in channel s
                        k1, i0, i1, a2 = plan[4:]
                        blk[:, :i0] = 0.0
                        blk[:, i1:] = 0.0
                        part = blk[:, i0:i1]
                        np.multiply(Rs[a2], Bt[:, k1, None] * sqrt2, out=part)
                        part += u * (dRs[a2] * (At[k1] * sqrt2))
                        continue
                    k1, a1, i0, lower, a2, k2s = plan[4:]
                    # every term has one factor of channel k1: scaling those by √2 gives the
                    # off-diagonal factor; the diagonal element (k' = k1, last) is scaled back
                    f = sqrt2 if nk2 > 1 else 1.0
                    r1, dr1 = Rs[a1] * f, dRs[a1] * f
                    if lower is not None:  # k' in a lower channel: R̃_k B_k' + û dR̃_k A_k'
                        part = blk[:, :i0]
                        np.multiply(Bt[:, lower], r1, out=part)
                        part += u * (dr1 * At[lower])
                    part = blk[:, i0:]
                    np.multiply(Bt[:, k2s], r1, out=part)  # R̃_k B_k'
                    part += Rs[a2] * (Bt[:, k1, None] * f)  # R̃_k' B_k
                    t = dr1 * At[k2s]  # û (dR̃_k A_k' + dR̃_k' A_k)
                    t += dRs[a2] * (At[k1] * f)
                    part += u * t
                    if nk2 > 1:
                        blk[:, -1] *= 1.0 / sqrt2
                if qhat is not None:  # remove the component along q: d(q/|q|)
                    if qhat.shape[0] > 1:
                        qh = np.ascontiguousarray(qhat[cp].T)  # (E, p)
                        c = np.einsum("xep,ep->xp", g, qh)
                    else:
                        qh = qhat[0][:, None]
                        c = np.einsum("xep,e->xp", g, qhat[0])
                    g -= c[:, None, :] * qh
                r = rows[p]
                for e0 in range(0, E, _STORE_WIDTH):  # transpose into the rows in cache-sized pieces
                    e1 = min(E, e0 + _STORE_WIDTH)
                    grad_x[r, :, e0:e1] = g[:, e0:e1].transpose(2, 0, 1)
                _segment_add(centre_sum, sum_index[p], g)


# ----------------------------------------------------------------------------------------------


def _gradient_layout(values, d, centres, counts, pair_c, positions, pair_j, pair_pos):
    """Allocate the gradient arrays: per centre, its own row then its neighbours' rows.

    Returns the row of every centre and of every pair.
    """
    n_centres = centres.size
    n_grad = n_centres + pair_c.size
    starts = np.cumsum(counts) - counts
    row0 = starts + np.arange(n_centres)
    pair_rows = np.arange(pair_c.size) + pair_c + 1
    values.grad_x = np.empty((n_grad, 3, d))
    values.grad_x[:, :, -1] = 0.0  # the covariance_sigma0 slot
    values.grad_atom = np.empty(n_grad, dtype=np.int64)
    values.grad_atom[row0] = centres
    values.grad_atom[pair_rows] = pair_j
    values.grad_pos = np.empty((n_grad, 3))
    values.grad_pos[row0] = positions[centres]
    values.grad_pos[pair_rows] = pair_pos
    values.grad_cutoff = np.zeros((n_grad, 3))
    return row0, pair_rows


class _Pairs:
    """Neighbour pairs entering the density: centre rank, distance, bond vector, channel."""

    __slots__ = ("c", "r", "diff", "ch")

    def __init__(self, c, r, diff, ch):
        self.c, self.r, self.diff, self.ch = c, r, diff, ch

    def take(self, idx):
        return _Pairs(self.c[idx], self.r[idx], self.diff[idx], self.ch[idx])


class _Terms:
    __slots__ = ("u", "Y", "dY", "R", "dR")

    def __init__(self, u, Y, dY, R, dR):
        self.u, self.Y, self.dY, self.R, self.dR = u, Y, dY, R, dR


def _fmt(value):
    if isinstance(value, bool):
        return "T" if value else "F"
    return repr(value) if isinstance(value, str) else str(value)


def _accumulate(spacing, count):
    """QUIP's grid r_1 = 0, r_a = r_{a-1} + h (repeated addition, not (a-1)·h)."""
    out = np.zeros(count)
    for a in range(1, count):
        out[a] = out[a - 1] + spacing
    return out


def _exp_as_libm(x):
    """exp(x) rounded as the C library's exp (which QUIP's Fortran calls) in all but ~0.1% of cases.

    NumPy's SIMD exp is 1 ulp off glibc's in ~5% of arguments.  That is harmless except
    here: the upward Bessel recurrence amplifies the rounding of ``exp_m - exp_p`` at
    small arguments, and with the GTO basis at l = 8 a 1-ulp difference became a 1e-10
    difference in the gradients.  Evaluated in extended precision and rounded once, the
    same case agrees to 4e-14 (cost: +2% of soap time with the default basis, +13% with GTO)."""
    if np.finfo(np.longdouble).nmant <= np.finfo(np.float64).nmant:
        return np.exp(x)
    return np.exp(np.asarray(x, dtype=np.longdouble)).astype(np.float64)


def _least_squares_map(basis, overlap):
    """The linear map (n, n_grid) from grid values to coefficients: min ‖B L⁻ᵀ c − g‖ (QR), as QUIP."""
    chol = scipy.linalg.cholesky(overlap, lower=True)
    linv_t = scipy.linalg.solve_triangular(chol.T, np.eye(chol.shape[0]), lower=False)
    bl = basis @ linv_t
    q, r = scipy.linalg.qr(bl, mode="economic")
    return scipy.linalg.solve_triangular(r, q.T, lower=False)


def _ranges(starts, lengths):
    """Concatenation of arange(s, s + n) for each (s, n)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total)


def _segment_add(out, index, values):
    """out[index[p]] += values[:, :, p]; out is (c, 3, E), values (3, E, p) (a 0/1 matrix product)."""
    if index.size == 0:
        return
    groups, inverse = np.unique(index, return_inverse=True)
    member = np.zeros((index.size, groups.size))
    member[np.arange(index.size), inverse] = 1.0
    sums = values.reshape(-1, index.size) @ member  # (3 E, groups)
    out[groups] += sums.T.reshape(groups.size, *values.shape[:2])


def _real_spherical_harmonics(u, lmax, grad):
    """Real orthonormal Y_lm(û) (p, (l_max+1)²), index l² + l + m, and ∇ with respect to d times |d|.

    Built from solid harmonics: Y = N Q_l^m(z, r²) Re/Im (x + iy)^m, where Q follows the
    associated-Legendre recurrence; the gradient is that of the homogeneous polynomial
    projected on the sphere, (∇S − l S û) (divide by r for ∇_d).
    """
    n_p = u.shape[0]
    x, y, z = u[:, 0], u[:, 1], u[:, 2]
    m2 = (lmax + 1) ** 2
    Y = np.empty((n_p, m2))
    dS = np.empty((n_p, 3, m2)) if grad else None
    C = [np.ones(n_p)]
    Sn = [np.zeros(n_p)]
    for m in range(1, lmax + 1):
        C.append(x * C[m - 1] - y * Sn[m - 1])
        Sn.append(x * Sn[m - 1] + y * C[m - 1])
    inv4pi = 1.0 / (4.0 * math.pi)
    for m in range(lmax + 1):
        qmm = (-1.0) ** m * float(_double_factorial(2 * m - 1))
        Q1 = Q2 = Qz1 = Qz2 = Qr1 = Qr2 = None
        for l in range(m, lmax + 1):
            if l == m:
                Q = np.full(n_p, qmm)
                Qz = Qr = None
            elif l == m + 1:
                Q = (2 * m + 1) * z * qmm
                Qz = np.full(n_p, (2 * m + 1) * qmm)
                Qr = None
            else:
                a, b, c = 2 * l - 1, l + m - 1, 1.0 / (l - m)
                Q = (a * z * Q1 - b * Q2) * c  # r² = 1 on the sphere
                if grad:
                    Qz = (a * (Q1 + z * Qz1) - b * (Qz2 if Qz2 is not None else 0.0)) * c
                    Qr = (a * z * (Qr1 if Qr1 is not None else 0.0)
                          - b * (Q2 + (Qr2 if Qr2 is not None else 0.0))) * c
            norm = math.sqrt((2 * l + 1) * inv4pi * math.factorial(l - m) / math.factorial(l + m))
            if m > 0:
                norm *= math.sqrt(2.0)
            NQ = norm * Q
            i0 = l * l + l
            if m == 0:
                Y[:, i0] = NQ
            else:
                Y[:, i0 + m] = NQ * C[m]
                Y[:, i0 - m] = NQ * Sn[m]
            if grad:
                # ∂/∂x_k of N Q(z, r²) with r² = x² + y² + z²
                dQr2 = 2.0 * norm * Qr if Qr is not None else None
                dQz = norm * Qz if Qz is not None else None
                if m == 0:
                    dS[:, 0, i0] = dQr2 * x if dQr2 is not None else 0.0
                    dS[:, 1, i0] = dQr2 * y if dQr2 is not None else 0.0
                    gz = (dQz if dQz is not None else 0.0) + (dQr2 * z if dQr2 is not None else 0.0)
                    dS[:, 2, i0] = gz
                else:
                    gx = dQr2 * x if dQr2 is not None else 0.0
                    gy = dQr2 * y if dQr2 is not None else 0.0
                    gz = (dQz if dQz is not None else 0.0) + (dQr2 * z if dQr2 is not None else 0.0)
                    mNQ = m * NQ
                    dS[:, 0, i0 + m] = gx * C[m] + mNQ * C[m - 1]
                    dS[:, 1, i0 + m] = gy * C[m] - mNQ * Sn[m - 1]
                    dS[:, 2, i0 + m] = gz * C[m]
                    dS[:, 0, i0 - m] = gx * Sn[m] + mNQ * Sn[m - 1]
                    dS[:, 1, i0 - m] = gy * Sn[m] + mNQ * C[m - 1]
                    dS[:, 2, i0 - m] = gz * Sn[m]
            Q2, Q1 = Q1, Q
            Qz2, Qz1 = Qz1, Qz
            Qr2, Qr1 = Qr1, Qr
    if grad:
        lvec = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1).astype(float)
        dS -= u[:, :, None] * (Y * lvec[None, :])[:, None, :]
    return Y, dS


def _double_factorial(k):
    out = 1
    while k > 1:
        out *= k
        k -= 2
    return out
