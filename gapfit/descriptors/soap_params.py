"""The checks of the soap descriptor's parameters beyond the ranges of single keys (which the schema
checks): central elements, species channels, and the compression keys.

Compression (docs/dev/soap_compression.md §1.2): QUIP's own errors are refused with QUIP's meaning,
and so are the cases where QUIP misbehaves (undefined memory access, NaN, abort).  As in QUIP,
``nu_S`` is ignored with mixing or ``Z_map`` (QUIP's ``nu_R /= 2 .OR. nu_R /= 2`` typo,
``descriptors.F90:7847``): a model gap_fit wrote may carry it, and QUIP evaluates it that way.
``K`` and ``mix_shift`` without ``R_mix``/``Z_mix`` are ignored too.
"""

from __future__ import annotations

from ..errors import ConfigError
from .soap_mixing import check_seeds, parse_z_map


def centre_elements(p, where: str):
    """The central elements ``Z`` (``n_Z`` of them; ``[0]``: every element)."""
    if p["Z"] is None:
        if p["n_Z"] > 1:
            raise ConfigError(f"n_Z={p['n_Z']} {where} needs Z={{...}} with {p['n_Z']} atomic numbers")
        z_list = [0]
    else:
        z_list = list(p["Z"])
        if len(z_list) != p["n_Z"]:
            raise ConfigError(f"the 'Z' key {where} must have n_Z={p['n_Z']} value(s); got {len(z_list)}")
    if any(z < 0 for z in z_list):
        raise ConfigError(f"the 'Z' key {where} must be atomic numbers (0 for any element); got {z_list}")
    return z_list


def species_channels(p, given, where: str):
    """The density channels ``species_Z`` (``n_species`` of them; ``[0]``: one channel for every element)."""
    n_species = p["n_species"]
    if "species_Z" in given and "n_species" not in given:
        raise ConfigError(f"species_Z is given {where} without n_species (QUIP requires both)")
    if p["species_Z"] is None:
        if n_species > 1:
            raise ConfigError(f"n_species={n_species} {where} needs species_Z={{...}} with {n_species} "
                              f"atomic numbers")
        return [0]
    species = list(p["species_Z"])
    if len(species) != n_species:
        raise ConfigError(f"the 'species_Z' key {where} must have n_species={n_species} value(s); "
                          f"got {len(species)}")
    if any(z < 0 for z in species):
        raise ConfigError(f"the 'species_Z' key {where} must be atomic numbers; got {species}")
    if n_species > 1 and 0 in species:
        raise ConfigError(f"species_Z={{{' '.join(map(str, species))}}} {where}: the wildcard 0 is only "
                          f"supported with n_species=1 (QUIP's gradients are inconsistent otherwise)")
    if len(set(species)) != len(species):
        raise ConfigError(f"species_Z={{{' '.join(map(str, species))}}} {where} lists an element twice")
    return species


def check_compression(p, species, where: str) -> None:
    """QUIP's errors 1–8 of spec §1.2 (form_W :7846-7860, form_mix_W :7733, soap_dimensions :11157,
    soap_calc :7968-7974; the K1 = K2 check of coupling=F is made with the matrices), and refusals of
    what QUIP cannot evaluate: ``K < 1`` with mixing, unusable seeds, bad ``Z_map`` strings.

    ``species`` None: not known yet (add_species will set them); the checks that need them wait."""
    for key in ("nu_R", "nu_S"):
        if p[key] not in (0, 1, 2):
            raise ConfigError(f"the '{key}' key {where} must be 0, 1 or 2; got {p[key]}")
    flags = [key for key in ("R_mix", "Z_mix", "sym_mix") if p[key]]
    z_map = p["Z_map"].strip()
    if p["nu_R"] != 2:
        other = next((f"{k}=T" for k in flags + (["diagonal_radial"] if p["diagonal_radial"] else [])), None)
        if other is None and z_map:
            other = "Z_map"
        if other:
            raise ConfigError(f"nu_R={p['nu_R']} {where} cannot be combined with {other} (QUIP: '(nu_R, nu_S) = "
                              f"(2,2) required')")
    if flags and z_map:
        raise ConfigError(f"Z_map {where} cannot be combined with {flags[0]}=T (QUIP: 'cant' using mixing and "
                          f"Zmap at the same time')")
    if p["sym_mix"] and not (p["R_mix"] or p["Z_mix"]):
        raise ConfigError(f"sym_mix=T {where} needs R_mix=T or Z_mix=T (QUIP: 'form_mix_W: not mixing anything')")
    if p["diagonal_radial"]:
        other = [f"{k}=T" for k in flags] + [f"{k}={p[k]}" for k in ("nu_S",) if p[k] != 2]
        other += ["coupling=F"] if not p["coupling"] else []
        other += ["Z_map"] if z_map else []
        if other:
            raise ConfigError(f"diagonal_radial=T {where} cannot be combined with {other[0]} (QUIP: 'can't combine "
                              f"diagonal radial with any other compression strategies')")
    if p["R_mix"] or p["Z_mix"]:
        if p["K"] < 1:
            raise ConfigError(f"the 'K' key {where} must be at least 1 with R_mix/Z_mix; got {p['K']} (QUIP "
                              f"would keep only covariance_sigma0)")
        check_seeds(p, species or [0], where, check_elements=species is not None)
    elif z_map:
        parse_z_map(z_map, species, where)
