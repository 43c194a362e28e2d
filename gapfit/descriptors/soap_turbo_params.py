"""The keys of QUIP's ``soap_turbo`` descriptor and how QUIP 0.10.3 resolves them (docs/dev/soap_turbo.md §1).

QUIP's ``soap_turbo_initialise`` (``descriptors.F90:3240-3575`` of GAP@480fc2d) reads the string in two
passes and decides several things by a literal substring test on the raw string: a per-species key
counts as a vector only if the text ``key={`` occurs.  This module reproduces those rules
(:func:`resolve`), refuses the settings QUIP cannot evaluate (spec §1.4, §6 item 3) with a one-line
:class:`ConfigError` that names the key as typed, and reads ``compress_file`` (spec §4.4).
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from ..options.schema import (Param, Schema, float_list, int_list, non_negative, positive, to_bool, to_float, to_int,
                              to_str)
from .soap_turbo_power import trivial_compression

#: alpha_max above which QUIP stops (RAD:99-108, RAD:430-439) and above which it warns (RAD:109-119, RAD:440-449)
ALPHA_STOP = {"poly3": 10, "poly3gauss": 11}
ALPHA_WARN = {"poly3": 7, "poly3gauss": 8}

SCHEMA = Schema([
    Param("soap_turbo", to_bool, True, help="the descriptor keyword"),
    Param("rcut_hard", to_float, None, check=positive,
          help="hard cutoff r_h (Å): neighbours at r < r_h (mandatory; 'cutoff' is read if it is absent)"),
    Param("cutoff", to_float, None, check=positive, help="read as rcut_hard when rcut_hard is not given"),
    Param("rcut_soft", to_float, None, check=positive,
          help="soft cutoff r_s (Å) where the density filter starts (default rcut_hard - cutoff_transition_width)"),
    Param("cutoff_transition_width", to_float, 0.5, help="rcut_hard - rcut_soft when rcut_soft is not given"),
    Param("l_max", to_int, None, mandatory=True, check=non_negative, help="largest angular momentum"),
    Param("n_species", to_int, 1, check=positive, help="number of neighbour species (length of the vector keys)"),
    Param("species_Z", int_list(), None, mandatory=True, help="atomic numbers of the species, {Z1 Z2 ...}"),
    Param("central_index", to_int, 1, help="the centres are the atoms of species_Z(central_index) (1-based)"),
    Param("alpha_max", int_list(), None, help="radial basis functions per species, {A1 A2 ...}"),
    Param("n_max", to_int, None, check=positive, help="alpha_max of every species when alpha_max is not given"),
    Param("atom_sigma_r", float_list(), None, help="radial Gaussian width per species (Å)"),
    Param("atom_sigma_t", float_list(), None, help="angular Gaussian width per species (Å)"),
    Param("atom_sigma", to_float, None, help="atom_sigma_r and atom_sigma_t of every species when those are absent"),
    Param("atom_sigma_r_scaling", float_list(), None, help="growth of the radial width with distance, per species"),
    Param("atom_sigma_t_scaling", float_list(), None, help="growth of the angular width with distance, per species"),
    Param("atom_sigma_scaling", to_float, 0.0, help="both scalings of every species when those are absent"),
    Param("amplitude_scaling", float_list(), None,
          help="exponent γ of the amplitude (1 + 2x³ - 3x²)^γ per species (default 1)"),
    Param("central_weight", float_list(), None,
          help="weight of the centre's own density per species; QUIP 0.10.3 reads it only as a vector "
               "with n_species > 1 (otherwise it is 1)"),
    Param("nf", to_float, 4.0, check=positive, help="width parameter of the filter beyond rcut_soft"),
    Param("radial_enhancement", to_int, 0, help="0, 1 or 2: multiply the density by a power of r (others as 0)"),
    Param("basis", to_str, "poly3", help="radial basis: poly3 or poly3gauss"),
    Param("scaling_mode", to_str, "polynomial", help="amplitude scaling mode: polynomial"),
    Param("compress_mode", to_str, "None", help="None or trivial (keep the elements involving a block's first function)"),
    Param("compress_file", to_str, "None", help="file with a compression map (wins over compress_mode)"),
])


def _vector(p, given, piece, key, n, where, kind=float):
    """A per-species key: ``key={…}`` must have n values; a bare value is one value copied (spec §1.2)."""
    values = p[key]
    typed = given.key(key)
    braced = f"{typed}={{" in piece
    if braced or (key == "alpha_max" and n > 1):
        if len(values) != n:
            raise ConfigError(f"the '{typed}' key {where} must have n_species={n} values; got {given[key]!r}")
        return [kind(v) for v in values]
    if len(values) != 1:
        raise ConfigError(f"the '{typed}' key {where} must be one value, or n_species={n} values in {{}}; "
                          f"got {given[key]!r}")
    return [kind(values[0])] * n


def _mandatory(p, key, where):
    if p[key] is None:
        raise ConfigError(f"missing mandatory key '{key}' {where}")
    return p[key]


def resolve(p: Dict, given, piece: str, where: str) -> Dict:
    """Every setting of one soap_turbo piece, per-species keys as lists in species_Z order (spec §1.1-1.4);
    ``warnings``: what the fit's log should say about the settings QUIP reads surprisingly."""
    n = p["n_species"]
    notes: List[str] = []
    out = {"warnings": notes, "l_max": p["l_max"], "n_species": n, "nf": p["nf"], "radial_enhancement": p["radial_enhancement"]}
    rh = p["rcut_hard"] if "rcut_hard" in given else p["cutoff"]
    if rh is None:
        raise ConfigError(f"missing mandatory key 'rcut_hard' {where}")
    rs = p["rcut_soft"] if "rcut_soft" in given else rh - p["cutoff_transition_width"]
    if not rs < rh:
        raise ConfigError(f"the 'rcut_soft' key {where} must be less than rcut_hard={rh} (QUIP gives NaN or "
                          f"meaningless values); got {rs}")
    if rs <= 0:
        raise ConfigError(f"the 'rcut_soft' key {where} must be greater than 0; got {rs}")
    out["rcut_hard"], out["rcut_soft"] = rh, rs
    basis = p["basis"].strip()
    if basis not in ALPHA_STOP:
        raise ConfigError(f"the '{given.key('basis')}' key {where} must be poly3 or poly3gauss (QUIP 0.10.3 gives "
                          f"all-zero vectors for others); got {basis!r}")
    out["basis"] = basis
    if p["scaling_mode"].strip() != "polynomial":
        raise ConfigError(f"the '{given.key('scaling_mode')}' key {where} must be polynomial (QUIP gives NaN "
                          f"otherwise); got {p['scaling_mode']!r}")
    species = _vector(p, given, piece, "species_Z", n, where, int) if n > 1 or len(p["species_Z"]) != 1 \
        else [int(p["species_Z"][0])]
    if len(set(species)) != len(species):
        raise ConfigError(f"the '{given.key('species_Z')}' key {where} must not repeat an element; got {species}")
    out["species_Z"] = species
    ci = p["central_index"]
    if not 1 <= ci <= n:
        raise ConfigError(f"the '{given.key('central_index')}' key {where} must be in 1..n_species={n}; got {ci}")
    out["central_index"] = ci
    out["alpha_max"] = _alpha_max(p, given, piece, n, basis, where, notes)
    out.update(_widths(p, given, piece, n, where))
    out["central_weight"] = _central_weight(p, given, piece, n, where, notes)
    out["compression"] = _compression(p, given, out["alpha_max"], out["l_max"], where)
    return out


def _alpha_max(p, given, piece, n, basis, where, notes) -> List[int]:
    if "n_max" in given and "alpha_max" not in given:
        alpha = [p["n_max"]] * n
    else:
        _mandatory(p, "alpha_max", where)
        alpha = _vector(p, given, piece, "alpha_max", n, where, int)
    key = given.key("alpha_max") if "alpha_max" in given else given.key("n_max")
    for a in alpha:
        if not 1 <= a <= ALPHA_STOP[basis]:
            raise ConfigError(f"the '{key}' key {where} must be in 1..{ALPHA_STOP[basis]} with basis={basis} "
                              f"(QUIP stops above); got {a}")
    if max(alpha) > ALPHA_WARN[basis]:
        notes.append(f"soap_turbo: alpha_max={max(alpha)} above {ALPHA_WARN[basis]} with basis={basis}: the radial "
                   f"basis is ill-conditioned (QUIP warns too; agreement with QUIP degrades as cond(S)·ε)")
    return alpha


def _widths(p, given, piece, n, where) -> Dict[str, List[float]]:
    """atom_sigma_r/_t, their scalings and amplitude_scaling with QUIP's fall-backs (spec §1.2)."""
    out = {}
    if "atom_sigma_r" in given:
        out["atom_sigma_r"] = _vector(p, given, piece, "atom_sigma_r", n, where)
    else:
        out["atom_sigma_r"] = [_mandatory(p, "atom_sigma", where)] * n
    if "atom_sigma_t" in given:
        out["atom_sigma_t"] = _vector(p, given, piece, "atom_sigma_t", n, where)
    elif "atom_sigma_r" not in given:
        out["atom_sigma_t"] = list(out["atom_sigma_r"])
    else:
        out["atom_sigma_t"] = [_mandatory(p, "atom_sigma", where)] * n
    for key in ("atom_sigma_r_scaling", "atom_sigma_t_scaling"):
        out[key] = _vector(p, given, piece, key, n, where) if key in given else [p["atom_sigma_scaling"]] * n
    out["amplitude_scaling"] = (_vector(p, given, piece, "amplitude_scaling", n, where)
                                if "amplitude_scaling" in given else [1.0] * n)
    for key in ("atom_sigma_r", "atom_sigma_t"):
        if min(out[key]) <= 0:
            raise ConfigError(f"the '{given.key(key) if key in given else 'atom_sigma'}' key {where} must be "
                              f"greater than 0; got {out[key]}")
    return out


def _central_weight(p, given, piece, n, where, notes) -> List[float]:
    """QUIP 0.10.3 reads central_weight only as ``central_weight={…}`` with n_species > 1 (spec §1.3)."""
    if "central_weight" not in given:
        return [1.0] * n
    typed = given.key("central_weight")
    if n > 1 and f"{typed}={{" in piece:
        return _vector(p, given, piece, "central_weight", n, where)
    if any(w != 1.0 for w in p["central_weight"]):
        notes.append(f"soap_turbo: {typed}={given['central_weight']} is ignored, as by QUIP 0.10.3, which reads "
                   f"central_weight only as a vector {{…}} with n_species > 1; the weight is 1")
    return [1.0] * n


def _compression(p, given, alpha_max, l_max, where) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """None, or (P_i, P_j, P_el) 1-based (spec §4.3-4.4); compress_file wins over compress_mode."""
    n_max = sum(alpha_max)
    size = (l_max + 1) * n_max * (n_max + 1) // 2
    if p["compress_file"] != "None":
        return read_compress_file(p["compress_file"], given.key("compress_file"), len(alpha_max), size, where)
    mode = p["compress_mode"].strip()
    if mode == "None":
        return None
    if mode in ("trivial", "Trivial"):
        return trivial_compression(alpha_max, l_max)
    raise ConfigError(f"the '{given.key('compress_mode')}' key {where} must be None or trivial (the ν_R_ν_S "
                      f"modes are not checked against QUIP); got {mode!r}")


def read_compress_file(path: str, typed: str, n_species: int, size: int, where: str):
    """QUIP's compress_file (``descriptors.F90:3526-3560``): line 1 holds n_species + 2 integers (alpha_max…,
    l_max, n; only n is used), then either ``P_transformation`` and lines ``P_i P_j P_el`` up to
    ``end_transformation``, or n lines of one integer P_j each (P_i = 1..n, P_el = 1)."""
    if not os.path.isfile(path):
        raise ConfigError(f"the '{typed}' file {path!r} {where} does not exist")
    try:
        with open(path) as fh:
            lines = [line.strip() for line in fh if line.strip()]
        head = lines[0].split()
        if len(head) != n_species + 2:
            raise ValueError(f"line 1 must hold n_species + 2 = {n_species + 2} integers (alpha_max..., l_max, n)")
        n = int(head[-1])
        if lines[1].startswith("P_transformation"):
            body = lines[2:lines.index("end_transformation")] if "end_transformation" in lines else lines[2:]
            rows = [line.split() for line in body]
            p_i = np.array([int(r[0]) for r in rows])
            p_j = np.array([int(r[1]) for r in rows])
            p_el = np.array([float(r[2].replace("d", "e").replace("D", "E")) for r in rows])
        else:
            p_j = np.array([int(line.split()[0]) for line in lines[1:1 + n]])
            if p_j.size != n:
                raise ValueError(f"{n} indices announced, {p_j.size} found")
            p_i, p_el = np.arange(1, n + 1), np.ones(n)
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"the '{typed}' file {path!r} {where} cannot be read as a soap_turbo compression "
                          f"map: {exc}") from None
    if p_j.size == 0 or p_i.min() < 1 or p_j.min() < 1 or p_j.max() > size:
        raise ConfigError(f"the '{typed}' file {path!r} {where} has indices outside 1..{size} (uncompressed "
                          f"dimension) or none")
    return p_i, p_j, p_el
