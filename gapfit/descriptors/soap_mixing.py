"""QUIP's SOAP compression: the channel-mixing matrices ``W1``, ``W2`` and the coupled channel pairs.

Everything here follows docs/dev/soap_compression.md (written from GAP ``descriptors.F90`` at
480fc2d, whose line numbers are cited) and was checked against quippy-ase 0.10.3.

The expansion coefficients ``X_l[m, c]`` of an environment (channel ``c = s·n + a``: species
``s`` outer, radial ``a`` inner) become two densities ``Y_i,l = X_l · W_i`` (``(2l+1) × K_i``),
and the descriptor holds, for every pair ``(a, b)`` of :attr:`Compression.first`/``second``
and every ``l`` (``l`` fastest)::

    p = tlpo_l · f · Σ_m Y1_l[m, a] · Y2_l[m, b]

``W`` comes from one of (``form_W``, :7823-7875):

* ``R_mix``/``Z_mix`` (``form_mix_W``, :7631-7739): random normals of QUIP's generator
  (:class:`gapfit.runtime.quip_random.ParkMiller`), re-seeded per element with
  ``species_Z(s) + mix_shift + 200·j`` (``Z_mix``) or once with ``n_max + mix_shift + 200·j``
  (``R_mix`` alone), ``j`` = 1, 2 the density; ``sym_mix`` uses ``W2 = W1`` (spec §2.2);
* ``Z_map`` (``form_Zmap_W``, :7742-7821): 0/1 sums of element groups (spec §3.4);
* ``nu_R``/``nu_S`` (``form_nu_W``, :7557-7629): 0/1 sums over the radial channels and/or the
  species (spec §3.3); ``nu_R = nu_S = 2`` is the identity: the plain power spectrum, which
  :class:`gapfit.descriptors.soap_power.PowerSpectrum` computes.

Pairs (spec §3.2): ``coupling=T``: all ``(a, b)``, or ``b ≤ a`` with a double-precision √2 off
the diagonal when the two densities are the same (QUIP's ``sym_desc``); ``coupling=F``
(``form_coupling_inds``, :7480-7554): per mixed channel, with QUIP's **single-precision** √2
(``real :: sym_facs``, :7488).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..runtime.quip_random import INT32, WARM_UP, ParkMiller, seed_problem

#: QUIP's coupling=F √2 is stored in a default (4-byte) real: 1.41421353816986083984375
SQRT2_SINGLE = float(np.float32(math.sqrt(2.0)))
#: the characters form_Zmap_W reads as intended: digits end at one of "{} ,:" (others are misread)
_Z_MAP_CHARS = re.compile(r"[0-9 ,:{}]*")


@dataclass(frozen=True)
class Compression:
    """The mixing matrices and the coupled pairs of one compressed soap.

    ``w2 is w1`` exactly when QUIP's two densities are the same (``sym_desc``, or ``sym_mix``
    with ``coupling=F``): then ``Y2 = Y1`` is not computed again.
    """

    w1: np.ndarray  # (S·n, K1)
    w2: np.ndarray  # (S·n, K2)
    first: np.ndarray  # (n_pairs,) channel of Y1 (0-based)
    second: np.ndarray  # (n_pairs,) channel of Y2
    factor: np.ndarray  # (n_pairs,) √2 / float32 √2 / 1
    full_product: bool  # coupling=T: the pairs are read from the Gram matrices Y1ᵀY2
    #: draws of QUIP's global random stream that one form_W call consumes (spec §2.4)
    rng_draws: int

    @property
    def same_densities(self) -> bool:
        return self.w2 is self.w1


def random_matrices(r_mix: bool, z_mix: bool, sym_mix: bool, K: int, mix_shift: int, species, n_max: int):
    """``form_mix_W`` (:7631-7739): ``(W1, W2)`` with QUIP's random normals (spec §2.2).

    * ``R_mix`` and ``Z_mix``: ``W_j[s·n + a, k]`` = the (a·K + k)-th normal after
      ``reseed(species_Z(s) + mix_shift + 200·j)``; ``K`` columns;
    * ``Z_mix``: ``R[s, k]`` after the same per-element reseed, ``W_j[s·n + a, k·n + a] = R[s, k]``;
    * ``R_mix``: ``R[a, k]`` after ``reseed(n_max + mix_shift + 200·j)``,
      ``W_j[s·n + a, s·K + k] = R[a, k]`` (one block per species).
    """
    S, n = len(species), n_max
    rng = ParkMiller(1)
    out = []
    for j in (1, 2):
        if sym_mix and j == 2:
            out.append(out[0])
            break
        if r_mix and z_mix:
            blocks = []
            for z in species:
                rng.reseed(z + mix_shift + 200 * j)
                blocks.append(rng.quip_normal(n * K).reshape(n, K))
            w = np.concatenate(blocks, axis=0)
        elif z_mix:
            R = np.empty((S, K))
            for s, z in enumerate(species):
                rng.reseed(z + mix_shift + 200 * j)
                R[s] = rng.quip_normal(K)
            w = np.einsum("sk,ab->sakb", R, np.eye(n)).reshape(S * n, K * n)
        else:
            rng.reseed(n_max + mix_shift + 200 * j)
            R = rng.quip_normal(n * K).reshape(n, K)
            w = np.einsum("st,ak->satk", np.eye(S), R).reshape(S * n, S * K)
        out.append(w)
    return out[0], out[1]


def mixing_seeds(r_mix: bool, z_mix: bool, sym_mix: bool, mix_shift: int, species, n_max: int):
    """The seeds form_mix_W passes to system_reseed_rng, with the element (or None) each is for."""
    base = [(z, z) for z in species] if z_mix else [(None, n_max)]
    return [(who, value + mix_shift + 200 * j, j) for j in ((1,) if sym_mix else (1, 2)) for who, value in base]


def nu_matrices(nu_R: int, nu_S: int, n_max: int, n_species: int):
    """``form_nu_W`` (:7557-7629): each density takes one unit of ``nu_R`` and of ``nu_S`` while any is
    left; a density that keeps no radial (species) resolution sums over the radial channels (species).

    Columns ``(s2, n2)``, ``s2`` outer; ``W[s·n + a, col(s2, n2)] = 1`` iff the kept indices agree.
    Returns ``(W1, W2, sym)``, ``sym = not (nu_R == 1 or nu_S == 1)`` (then ``W1 = W2``).
    """
    left_r, left_s = nu_R, nu_S
    out = []
    for _ in range(2):
        keep_n, keep_s = left_r > 0, left_s > 0
        left_r -= keep_n
        left_s -= keep_s
        e_s = np.eye(n_species) if keep_s else np.ones((n_species, 1))
        e_n = np.eye(n_max) if keep_n else np.ones((n_max, 1))
        out.append(np.einsum("st,ab->satb", e_s, e_n).reshape(n_species * n_max, -1))
    sym = not (nu_R == 1 or nu_S == 1)
    return out[0], (out[0] if sym else out[1]), sym


def parse_z_map(text: str, species, where: str):
    """The element groups of each density of a ``Z_map`` (:7742-7821, spec §3.4).

    ``,`` separates groups, ``:`` density 1 from density 2, blanks the elements of a group;
    ``{`` and ``}`` only end numbers.  The cases QUIP reads out of bounds or misreads are refused
    (elements outside ``species``: unless ``species`` is None, not known yet).
    """
    shown = f"Z_map='{text}' {where}"
    if not _Z_MAP_CHARS.fullmatch(text):
        raise ConfigError(f"{shown} may only hold atomic numbers, blanks, ',', ':', '{{' and '}}' "
                          f"(QUIP misreads anything else)")
    if text.count(":") > 1:
        raise ConfigError(f"{shown} has more than one ':' (QUIP's Z_map has two densities at most)")
    densities = [[[int(z) for z in re.findall(r"[0-9]+", group)] for group in part.split(",")]
                 for part in text.split(":")]
    for d, groups in enumerate(densities):
        missing = [z for group in groups for z in group if species is not None and z not in species]
        if missing:
            raise ConfigError(f"{shown}: element {missing[0]} is not in species_Z={{{' '.join(map(str, species))}}} "
                              f"(QUIP would write outside its matrices)")
        if not any(groups):
            raise ConfigError(f"{shown}: density {d + 1} has no element (every component would be zero: QUIP "
                              f"returns NaN)")
    return densities


def z_map_matrices(densities, species, n_max: int):
    """``W_d[s(Z)·n + a, g·n + a] = 1`` for every element Z of group g of density d; ``(W1, W2, sym)``."""
    S, n = len(species), n_max
    out = []
    for groups in densities:
        w = np.zeros((S, n, len(groups), n))
        for g, elements in enumerate(groups):
            for z in elements:
                w[species.index(z), :, g, :] = np.eye(n)
        out.append(w.reshape(S * n, len(groups) * n))
    sym = len(densities) == 1
    return out[0], (out[0] if sym else out[1]), sym


def coupled_pairs(coupling: bool, sym: bool, r_mix: bool, z_mix: bool, sym_mix: bool, K: int, n_max: int,
                  n_species: int, k1: int, k2: int):
    """The pairs ``(first, second, factor)`` in QUIP's order (spec §3.2)."""
    if coupling:
        if sym:  # a outer, b ≤ a inner, √2 (double) off the diagonal
            first, second = np.tril_indices(k1)
            return first, second, np.where(first != second, math.sqrt(2.0), 1.0)
        return np.repeat(np.arange(k1), k2), np.tile(np.arange(k2), k1), np.ones(k1 * k2)
    if z_mix and not r_mix:  # per mixed species channel k, its radial pairs (k·n + a, k·n + b)
        a, b = np.tril_indices(n_max) if sym_mix else np.divmod(np.arange(n_max * n_max), n_max)
        off = np.repeat(np.arange(K) * n_max, a.size)
        first, second = off + np.tile(a, K), off + np.tile(b, K)
        factor = np.tile(np.where((a != b) & sym_mix, SQRT2_SINGLE, 1.0), K)
        return first, second, factor
    if r_mix and not z_mix:  # per species pair (s, s'), the mixed radial channel k: (s·K + k, s'·K + k)
        s, t = np.tril_indices(n_species) if sym_mix else np.divmod(np.arange(n_species ** 2), n_species)
        k = np.arange(K)
        first = (s[:, None] * K + k[None, :]).reshape(-1)
        second = (t[:, None] * K + k[None, :]).reshape(-1)
        factor = np.repeat(np.where((s != t) & sym_mix, SQRT2_SINGLE, 1.0), K)
        return first, second, factor
    return np.arange(k1), np.arange(k1), np.ones(k1)


def build_compression(p, species, where: str):
    """The :class:`Compression` of a soap's parameters ``p`` (checked by soap_params), or None for
    QUIP's original power spectrum (coupling=T, nu_R = nu_S = 2, no mixing, no Z_map: :7977-7980)."""
    r_mix, z_mix, sym_mix = p["R_mix"], p["Z_mix"], p["sym_mix"]
    mixing = r_mix or z_mix
    z_map = p["Z_map"].strip()
    if p["coupling"] and p["nu_R"] == 2 and p["nu_S"] == 2 and not (mixing or sym_mix) and not z_map:
        return None
    n, S, K = p["n_max"], len(species), p["K"]
    if mixing:
        w1, w2 = random_matrices(r_mix, z_mix, sym_mix, K, p["mix_shift"], species, n)
        sym = sym_mix
    elif z_map:
        w1, w2, sym = z_map_matrices(parse_z_map(z_map, species, where), species, n)
    else:
        w1, w2, sym = nu_matrices(p["nu_R"], p["nu_S"], n, S)
    k1, k2 = w1.shape[1], w2.shape[1]
    if not p["coupling"] and k1 != k2:
        raise ConfigError(f"coupling=F {where} needs two densities with as many channels; these have {k1} and "
                          f"{k2} (QUIP: 'require K1=K2 to use elementwise coupling')")
    first, second, factor = coupled_pairs(p["coupling"], sym, r_mix, z_mix, sym_mix, K, n, S, k1, k2)
    return Compression(w1=w1, w2=w2, first=first.astype(np.int64), second=second.astype(np.int64),
                       factor=np.asarray(factor, dtype=float), full_product=bool(p["coupling"]),
                       rng_draws=WARM_UP if mixing else 0)


def check_seeds(p, species, where: str, check_elements: bool = True) -> None:
    """The mixing seeds QUIP can use: 32-bit, not ≡ 0 mod 2³¹−1 (QUIP aborts or overflows otherwise).

    ``check_elements=False``: only ``mix_shift`` itself and the seeds of ``R_mix`` alone (which do not
    depend on the species)."""
    if not INT32[0] <= p["mix_shift"] <= INT32[1]:
        raise ConfigError(f"the 'mix_shift' key {where} must be a 32-bit integer (as QUIP reads it); "
                          f"got {p['mix_shift']}")
    if p["Z_mix"] and not check_elements:
        return
    for who, seed, j in mixing_seeds(p["R_mix"], p["Z_mix"], p["sym_mix"], p["mix_shift"], species, p["n_max"]):
        problem = seed_problem(seed)
        if problem:
            of = f"element {who}" if who is not None else f"n_max={p['n_max']}"
            raise ConfigError(f"mix_shift={p['mix_shift']} {where} makes the mixing seed of {of}, density {j}, "
                              f"{seed}: {problem}")
