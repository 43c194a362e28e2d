"""What a fit fits, as configured: the target names, the σ rules, the e0 rule and the core potential.

Each is built from the options once (:func:`gapfit.config.fit_config.build_config`), checked there,
and read by the data phase and the solver as typed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase.data import atomic_numbers

from ..errors import ConfigError
from ..options.schema import Schema, apply_schema
from ..options.syntax import key_values, split_fields
from ..options.top_level import TOP_LEVEL

N_ELEMENTS = 118
SUPPORTED_IPS = ("Glue",)


@dataclass(frozen=True)
class TargetNames:
    """The key names gap_fit looks up in each frame (``parameter_name_prefix`` applied)."""

    energy: str
    force: str
    virial: str
    stress: str
    hessian: str
    config_type: str
    sigma: str
    force_mask: str
    local_property: str

    #: the options :meth:`from_options` reads (gapfit-eval and GapFit.score take them too)
    OPTION_KEYS = ("energy_parameter_name", "force_parameter_name", "virial_parameter_name", "stress_parameter_name",
                   "hessian_parameter_name", "config_type_parameter_name", "kernel_regularisation_parameter_name",
                   "force_mask_parameter_name", "local_property_parameter_name", "parameter_name_prefix")

    @classmethod
    def from_options(cls, values: Dict) -> "TargetNames":
        p = values.get("parameter_name_prefix", "") or ""
        names = cls(
            energy=p + values["energy_parameter_name"],
            force=p + values["force_parameter_name"],
            virial=p + values["virial_parameter_name"],
            stress=p + values["stress_parameter_name"],
            hessian=p + values["hessian_parameter_name"],
            config_type=p + values["config_type_parameter_name"],
            sigma=p + values["kernel_regularisation_parameter_name"],
            force_mask=p + values["force_mask_parameter_name"],
            local_property=p + values["local_property_parameter_name"],
        )
        if values.get("sparsify_only_no_fit"):
            # gap_fit ignores everything but energies when only sparsifying
            ignore = "//IGNORE//"
            names = cls(names.energy, ignore, ignore, ignore, ignore, names.config_type, names.sigma,
                        names.force_mask, names.local_property)
        return names


class SigmaTable:
    """σ_E, σ_F, σ_V, σ_H per config_type group, with gap_fit's ``default`` fallback."""

    def __init__(self, default_sigma: Sequence[float], config_type_sigma: str = "", key: str = "config_type_sigma"):
        self.groups: Dict[str, np.ndarray] = {}
        if config_type_sigma.strip():
            fields = split_fields(config_type_sigma, separators=" :;", what=key)
            if len(fields) % 5 != 0:
                raise ConfigError(f"{key} must be groups of 5 fields (name:energy:force:virial:hessian); "
                                  f"got {len(fields)} fields")
            for g in range(0, len(fields), 5):
                name = fields[g]
                try:
                    values = [float(f.replace("d", "e").replace("D", "E")) for f in fields[g + 1:g + 5]]
                except ValueError:
                    raise ConfigError(f"{key} group '{name}' must have 4 numbers; "
                                      f"got {' '.join(fields[g + 1:g + 5])!r}") from None
                if any(v < 0 or not math.isfinite(v) for v in values):
                    raise ConfigError(f"{key} group '{name}' has a negative or non-finite σ")
                self.groups[name] = np.array(values)
        if "default" not in self.groups:
            self.groups["default"] = np.array(default_sigma, dtype=float)

    def names(self) -> List[str]:
        return list(self.groups)

    def __call__(self, config_type: str) -> np.ndarray:
        return self.groups.get(config_type, self.groups["default"])


def parse_e0(text: str) -> np.ndarray:
    """``e0=`` as one number for every element, or ``{Si:-158.5:O:-432.1}``; index = Z."""
    e0 = np.zeros(N_ELEMENTS + 1)
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    fields = split_fields(text, separators=":", quotes={"{": "}"}, what="e0")
    fields = [f.strip() for f in fields]
    if len(fields) == 1:
        try:
            e0[1:] = float(fields[0].replace("d", "e").replace("D", "E"))
        except ValueError:
            raise ConfigError(f"the 'e0' key must be a number or {{Symbol:value:...}}; got {text!r}") from None
        return e0
    if len(fields) % 2:
        raise ConfigError(f"the 'e0' key must be pairs like {{Si:-158.5:O:-432.1}}; got {len(fields)} fields in {text!r}")
    for k in range(0, len(fields), 2):
        sym, val = fields[k], fields[k + 1]
        z = atomic_numbers.get(sym.capitalize())
        if not z:
            raise ConfigError(f"the 'e0' key names an unknown element '{sym}'")
        try:
            e0[z] = float(val.replace("d", "e").replace("D", "E"))
        except ValueError:
            raise ConfigError(f"the 'e0' value of {sym} must be a number; got {val!r}") from None
    return e0


TARGET_NAME_SCHEMA = Schema([p for p in TOP_LEVEL.params if p.name in TargetNames.OPTION_KEYS])


def parse_target_names(words: Sequence[str], where: str, recorded: Sequence[Tuple[str, str]] = ()) -> TargetNames:
    """TargetNames from ``key=value`` words that may give only the target-name options (gapfit-eval);
    ``recorded``: pairs that hold unless the words give the same option (:func:`recorded_target_names`)."""
    pairs = key_values(" ".join(words), what="the command line") if words else []
    values, _ = apply_schema(TARGET_NAME_SCHEMA, list(recorded) + pairs, where)
    return TargetNames.from_options(values)


def recorded_target_names(command_line: str) -> List[Tuple[str, str]]:
    """The target-name options (``force_parameter_name=...``) of a fit's command line as a model
    records it (gapfit and gap_fit both write ``<command_line>``); none if it does not parse."""
    try:
        pairs = key_values(command_line, what="the model's command line") if command_line.strip() else []
    except ConfigError:
        return []
    return [(k, v) for k, v in pairs if k in TARGET_NAME_SCHEMA and v is not None]


@dataclass(frozen=True)
class E0Rule:
    """How e0 is set: ``e0=`` given (its table, index Z), or ``e0_method``; plus ``e0_offset``."""

    method: str  # isolated | average | least_squares | joint
    given: Optional[np.ndarray] = None  # e0=... parsed (index Z), None when not given
    text: str = ""  # e0 as typed
    offset: Optional[float] = None  # e0_offset when given

    @property
    def fits_offsets(self) -> bool:
        """e0_method=joint: one e0 offset per species fitted with the GP (an explicit e0 wins)."""
        return self.method == "joint" and self.given is None


def parse_ip_args(ip_args: str, key: str = "core_ip_args"):
    """(IP type, label) of an init string such as ``IP Glue label=x``; ConfigError otherwise."""
    words = ip_args.replace("{", " ").replace("}", " ").split()
    if len(words) < 2 or words[0] != "IP":
        raise ConfigError(f"{key}={{{ip_args}}} must be a QUIP init string such as {{IP Glue}}")
    ip, label = words[1], ""
    for w in words[2:]:
        if w.startswith("label="):
            label = w.split("=", 1)[1].strip("\"'")
    if ip not in SUPPORTED_IPS:
        raise ConfigError(f"{key}={{{ip_args}}}: the core potential IP {ip} is not implemented in gapfit "
                          f"(supported: {', '.join('IP ' + s for s in SUPPORTED_IPS)})")
    return ip, label


@dataclass(frozen=True)
class CoreConfig:
    """The core (baseline) potential: QUIP's init string and its parameter file, with the keys as typed."""

    ip_args: str
    param_file: str
    ip_args_key: str  # core_ip_args or baseline_ip_args
    param_file_key: str  # as typed, or "core_param_file (default)"
    param_file_option: str  # as typed, or baseline_param_filename

    @property
    def source(self) -> str:
        return f"{self.param_file_key} '{self.param_file}'"
