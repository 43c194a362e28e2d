"""Descriptor registry: the gap-string keyword maps to the implementing class.

Modules are imported lazily (as ASE's io format registry does), so adding a
descriptor never touches the parser.
"""

from __future__ import annotations

import importlib
from typing import Dict, Tuple

from ..errors import ConfigError
from ..options.schema import did_you_mean
from .base import Descriptor, DescriptorValues  # noqa: F401

# keyword -> (module, class)
REGISTRY: Dict[str, Tuple[str, str]] = {
    "distance_2b": ("gapfit.descriptors.distance_2b", "Distance2b"),
    "soap": ("gapfit.descriptors.soap", "Soap"),
    "angle_3b": ("gapfit.descriptors.angle_3b", "Angle3b"),
    "distance_Nb": ("gapfit.descriptors.distance_nb", "DistanceNb"),
    "soap_turbo": ("gapfit.descriptors.soap_turbo", "SoapTurbo"),
}

# QUIP descriptor keywords gapfit recognises but does not implement (clear refusal).
QUIP_ONLY = (
    "bispectrum_so4", "bispectrum_so3", "behler", "distance_3b", "coordination",
    "co_angle_3b", "co_distance_2b", "cosnx", "trihis", "water_monomer", "water_dimer", "a2_dimer",
    "ab_dimer", "atom_real_space", "power_so3", "power_so4", "soap_express",
    "rdf", "as_distance_2b", "molecule_lo_d", "alex", "com_dimer",
    "general_monomer", "general_dimer", "general_trimer", "water_trimer", "bond_real_space",
    "an_monomer", "transfer",
)


def descriptor_class(name: str):
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def find_type(keys, where: str) -> str:
    """The descriptor keyword among the bare keys of a gap piece."""
    found = [k for k in keys if k in REGISTRY]
    if len(found) > 1:
        raise ConfigError(f"{where} names two descriptor types: {', '.join(found)}")
    if found:
        return found[0]
    unsupported = [k for k in keys if k.lower() in QUIP_ONLY]
    if unsupported:
        raise ConfigError(f"descriptor '{unsupported[0]}' {where} is not implemented in gapfit "
                          f"(available: {', '.join(REGISTRY)})")
    hint = ""
    for key in keys:
        hint = did_you_mean(key, list(REGISTRY) + list(QUIP_ONLY))
        if hint:
            hint = f" ('{key}' is not one{hint})"
            break
    raise ConfigError(f"no descriptor type {where}: it must start with one of {', '.join(REGISTRY)}{hint}")
