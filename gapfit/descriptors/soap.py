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

Parameters: every key of QUIP's ``soap_initialise``.  A ``species_Z`` wildcard 0 with
``n_species > 1`` and repeated elements in ``species_Z`` are refused (QUIP's gradients are
inconsistent there); the checks are in :mod:`gapfit.descriptors.soap_params`.

Compression (``nu_R``, ``nu_S``, ``R_mix``, ``Z_mix``, ``sym_mix``, ``K``, ``mix_shift``,
``coupling``, ``Z_map``; docs/dev/soap_compression.md): the expansion's channels are mixed by
two matrices (:mod:`gapfit.descriptors.soap_mixing`: QUIP's random normals bit for bit, or 0/1
sums) and coupled in pairs (:mod:`gapfit.descriptors.soap_compressed`).  Without any of them
(``coupling=T``, ``nu_R = nu_S = 2``, no mixing, no ``Z_map``) the original power spectrum is
used, as QUIP does (``descriptors.F90:7977-7980``).  QUIP's errors are refused with its meaning,
as are the cases it cannot evaluate (``K < 1`` with mixing, unusable seeds, ``Z_map`` strings it
misreads); ``nu_S`` is ignored with mixing or ``Z_map``, as by QUIP.

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

The radial basis and the spherical harmonics are in :mod:`gapfit.descriptors.soap_basis`, the
power spectrum's packing and gradients in :mod:`gapfit.descriptors.soap_power`; this module
holds the descriptor class (parameters, neighbour density, expansion, orchestration).
"""

from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from ..errors import ConfigError
from ..options.schema import (Param, Schema, at_least_one, int_list, non_negative, positive, to_bool, to_float, to_int,
                              to_str)
from .base import Descriptor, DescriptorValues, coordination_function, d_coordination_function
from .soap_basis import RadialBasis, real_spherical_harmonics
from .soap_compressed import CompressedPowerSpectrum
from .soap_mixing import build_compression
from .soap_params import centre_elements, check_compression, species_channels
from .soap_power import PowerSpectrum

#: gap_version from which the centre Gaussian goes only into the centre's own channel by default
VERSION_CENTRAL_REFERENCE = 1426512068
#: gap_version from which P_l carries the 1/√(2l+1) factor
VERSION_TWO_L_PLUS_ONE = 1423143769

_RADIAL_BASES = ("EQUISPACED_GAUSS", "GTO", "POLY")

# Bytes of per-pair work arrays processed at once (neighbour terms).
_PAIR_CHUNK_BYTES = 48 << 20


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
        Param("nu_R", to_int, 2, help="compression: radially sensitive correlation order (0, 1 or 2)"),
        Param("nu_S", to_int, 2, help="compression: species sensitive correlation order (0, 1 or 2)"),
        Param("Z_mix", to_bool, False, help="compression: mix the species channels at random (K mixtures)"),
        Param("R_mix", to_bool, False, help="compression: mix the radial channels at random (K mixtures)"),
        Param("sym_mix", to_bool, False, help="compression: the same mixing for both densities"),
        Param("coupling", to_bool, True,
              help="compression: T the full product of the two densities, F channel by channel"),
        Param("K", to_int, 0, help="compression: number of mixed channels of R_mix/Z_mix"),
        Param("mix_shift", to_int, 0, help="compression: added to the seeds of the random mixing"),
        Param("Z_map", to_str, "", help="compression: element groups, e.g. {6 14:6, 14} (',' groups, ':' densities)"),
        Param("radial_basis", _radial_basis_choice, "EQUISPACED_GAUSS",
              help="radial basis: EQUISPACED_GAUSS (QUIP's default), GTO or POLY"),
    ])

    def __init__(self, params, piece="", given=(), species_known=True):
        """``species_known=False``: a template (:meth:`template`), whose species_Z add_species replaces."""
        super().__init__(params, piece, given)
        p = self.params
        where = f"in descriptor '{' '.join(piece.split())}'" if piece else "in soap"
        self._where = where

        self.centre_Z = centre_elements(p, where)
        species = species_channels(p, self.given, where)
        self.species_Z = species
        n_species = len(species)
        check_compression(p, species if species_known else None, where)

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
        #: the mixing matrices and pairs (None: QUIP's original power spectrum)
        self.compression = build_compression(p if species_known else _template_compression(p), species, where)
        if self.compression is None:
            self._spectrum = PowerSpectrum(self.n_max, n_species, self.l_max, p["diagonal_radial"],
                                           self.two_l_plus_one, p["normalise"])
        else:
            self._spectrum = CompressedPowerSpectrum(self.compression, self.n_max, n_species, self.l_max,
                                                     self.two_l_plus_one, p["normalise"])

    # ------------------------------------------------------------------------------------------
    # set-up

    def _setup_radial(self):
        """Radial grid, transforms (grid values -> coefficients) and the centre coefficients."""
        p = self.params
        sigma = p["atom_sigma"]
        cutoff_basis = p["cutoff"] + sigma * math.sqrt(2.0 * p["basis_error_exponent"] * math.log(10.0))
        try:
            self._basis = RadialBasis(self.radial_basis, self.n_max, self.l_max, self.alpha, cutoff_basis)
        except np.linalg.LinAlgError as exc:
            raise ConfigError(f"the {self.radial_basis} radial basis {self._where} cannot be built "
                              f"(n_max={self.n_max} too large for this basis?): {exc}") from None
        self.r_basis = self._basis.r_basis
        self.centre_coefficients = self._basis.centre_coefficients

    # ------------------------------------------------------------------------------------------
    # interface

    @property
    def dimensions(self) -> int:
        return self._spectrum.n_elements + 1

    @classmethod
    def template(cls, params, piece="", given=()):
        """A piece add_species will expand (it appends n_species, Z and species_Z): the elements of
        ``Z_map`` and the seeds of ``Z_mix`` are checked against the data's species after the expansion."""
        return cls(params, piece=piece, given=given, species_known=False)

    @property
    def rng_draws_per_form_w(self) -> int:
        """Draws of QUIP's global random stream that each of QUIP's ``form_W`` calls consumes: 100 with
        ``R_mix``/``Z_mix`` (form_mix_W re-seeds with the stream's own state: spec §2.4), else 0.

        gap_fit calls form_W 3 + 2·n_frames times per coordinate before it chooses sparse points
        (gapfit.fit.sparse_phase skips as many draws)."""
        return 0 if self.compression is None else self.compression.rng_draws

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
            q, norm = self._spectrum.values(X)
            x[cc, :-1] = q / norm[:, None] if self.params["normalise"] else q
            if grad:
                A, B = self._projections(terms, X, local_c, slot)
                scale = 1.0 / norm if self.params["normalise"] else np.ones_like(norm)
                qhat = q * scale[:, None] if self.params["normalise"] else None
                rows = pair_rows[idx]
                centre_sum = np.zeros((cc.size, 3, d - 1))
                self._spectrum.gradients(terms, sub.ch, A, B, local_c, scale, qhat, grad_x, rows, centre_sum)
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
        q, norm = self._spectrum.values(X)
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
            self._spectrum.gradients(terms, sub.ch, A, B, zeros, scale, qhat, grad_x, pair_rows[idx], centre_sum,
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
            per_pair += m2 * 8 + (lmax + 1) * (n * 4 + K * 8) + self._spectrum.pair_floats
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
        Y, dY = real_spherical_harmonics(u, self.l_max, grad)
        R, dR = self._radial(r, grad)
        if grad:
            dY /= r[:, None, None]
        return _Terms(u=u, Y=Y, dY=dY, R=R, dR=dR)

    def _radial(self, r, grad):
        """R[p, l, n] = Σ_a G_l(r, r_a) T_a n · f(r) and its r-derivative (descriptors.md §1.5).

        f is the neighbour weight: the cosine cutoff times the optional ``cutoff_dexp`` decay.
        """
        p = self.params
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
        return self._basis.integrals(r, f, df, grad)

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


def _template_compression(p):
    """The parameters a template builds its compression with: no ``Z_map`` (its elements need the
    species) and, with ``Z_mix``, no ``mix_shift`` (the wildcard's seeds are not the ones used)."""
    return {**p, "Z_map": "", "mix_shift": 0 if p["Z_mix"] else p["mix_shift"]}


def _ranges(starts, lengths):
    """Concatenation of arange(s, s + n) for each (s, n)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total)
