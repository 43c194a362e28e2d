"""The keys of a refit (``GapFit.refit``, ``scan``, ``optimise``): the regularisation of one (re)fit
(:class:`Settings`) and the keys that change it, checked here as the options of a fit are."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List

import numpy as np

from ..errors import ConfigError
from ..options.syntax import quote_value
from .targets import SigmaTable

#: keys a refit takes; energy_sigma, force_sigma and virial_sigma set one entry of default_sigma
REFIT_KEYS = ("default_sigma", "config_type_sigma", "delta", "sparse_jitter",
              "energy_sigma", "force_sigma", "virial_sigma")
SIGMA_INDEX = {"energy_sigma": 0, "force_sigma": 1, "virial_sigma": 2}


@dataclass
class Settings:
    """The regularisation of one (re)fit."""

    default_sigma: List[float]
    config_type_sigma: str
    deltas: List[float]
    sparse_jitter: float
    given: Dict[str, object] = field(default_factory=dict)  # the keys as the user gave them

    def table(self) -> SigmaTable:
        return SigmaTable(self.default_sigma, self.config_type_sigma, key="config_type_sigma")

    def words(self) -> str:
        """The settings as gap_fit options (for the model's command line)."""
        words = [f"default_sigma={{{' '.join(f'{s:g}' for s in self.default_sigma)}}}",
                 f"sparse_jitter={self.sparse_jitter:g}"]
        if self.config_type_sigma.strip():
            words.append(f"config_type_sigma={quote_value(self.config_type_sigma)}")
        return " ".join(words)


def apply_refit_keys(base: Settings, **keys) -> Settings:
    """``base`` with the refit keys changed (ConfigError naming a bad key or value); δ is checked against the
    fit's kernels by the caller (:func:`gapfit.model.tuning.settings`)."""
    unknown = sorted(set(keys) - set(REFIT_KEYS))
    if unknown:
        raise ConfigError(f"refit: unknown key '{unknown[0]}' (the keys are {', '.join(REFIT_KEYS)})")
    out = replace(base, default_sigma=list(base.default_sigma), deltas=list(base.deltas),
                  given={**base.given, **{k: v for k, v in keys.items() if v is not None}})
    if keys.get("default_sigma") is not None:
        values = [float(s) for s in np.ravel(keys["default_sigma"])]
        if len(values) not in (3, 4):
            raise ConfigError(f"refit: default_sigma needs 3 or 4 values (energy force virial [hessian]); "
                              f"got {len(values)}")
        out.default_sigma = (values + [0.0])[:4]
    for key, k in SIGMA_INDEX.items():
        if keys.get(key) is not None:
            out.default_sigma[k] = float(keys[key])
    if any(not (s > 0) for s in out.default_sigma[:2]) or out.default_sigma[2] < 0:
        raise ConfigError(f"refit: default_sigma {out.default_sigma[:3]} must be positive")
    cts = keys.get("config_type_sigma")
    if cts is not None:
        if isinstance(cts, dict):
            cts = " ".join(f"{name}:{':'.join(f'{float(x):g}' for x in (list(np.ravel(s)) + [0.0])[:4])}"
                           for name, s in cts.items())
        out.config_type_sigma = str(cts)
    if keys.get("sparse_jitter") is not None:
        out.sparse_jitter = float(keys["sparse_jitter"])
        if not out.sparse_jitter >= 0:
            raise ConfigError(f"refit: sparse_jitter must be ≥ 0 (got {out.sparse_jitter})")
    delta = keys.get("delta")
    if delta is not None:
        n = len(out.deltas)
        if isinstance(delta, dict):
            for index, value in delta.items():
                if not (isinstance(index, (int, np.integer)) and 1 <= index <= n):
                    raise ConfigError(f"refit: delta is keyed by descriptor number 1..{n} (after add_species); "
                                      f"got {index!r}")
                out.deltas[index - 1] = float(value)
        elif np.ndim(delta) == 0:
            if n != 1:
                raise ConfigError(f"refit: the fit has {n} descriptors: give delta as a list of {n} values or a "
                                  f"dict {{descriptor number: delta}}")
            out.deltas = [float(delta)]
        else:
            values = [float(d) for d in delta]
            if len(values) != n:
                raise ConfigError(f"refit: delta has {len(values)} values for {n} descriptors")
            out.deltas = values
    out.table()  # config_type_sigma's own checks
    return out


def scalar_value(chosen: Settings, key: str) -> float:
    if key in SIGMA_INDEX:
        return chosen.default_sigma[SIGMA_INDEX[key]]
    if key == "sparse_jitter":
        return chosen.sparse_jitter
    if key == "delta" and len(chosen.deltas) == 1:
        return chosen.deltas[0]
    raise ConfigError(f"optimise: '{key}' is not a scalar refit key (energy_sigma, force_sigma, virial_sigma, "
                      f"sparse_jitter, or delta of a one-descriptor fit)")
