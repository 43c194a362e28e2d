"""Typed option tables: one :class:`Param` per key, a :class:`Schema` per table, and the
conversion and checking of ``key=value`` pairs with them (gap_fit's ParamReader semantics:
aliases, defaults, mandatory keys; unlike gap_fit, unknown keys are errors with a hint).

The tables themselves live with their owners: gap_fit's top-level and per-GAP keys in
:mod:`gapfit.options.top_level` and :mod:`gapfit.options.gp`, each descriptor's keys in its own module.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError

# --------------------------------------------------------------------------------------
# Typed values
# --------------------------------------------------------------------------------------

_TRUE = {"t", "true"}
_FALSE = {"f", "false"}


def to_bool(value: Optional[str]) -> bool:
    if value is None or value == "":
        return True
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError("a logical (T, F, true or false)")


def to_float(value: Optional[str]) -> float:
    if value is None:
        raise ValueError("a real number")
    v = value.strip()
    try:
        x = float(v.replace("d", "e").replace("D", "E"))
    except ValueError:
        raise ValueError("a real number") from None
    if not math.isfinite(x):
        raise ValueError("a finite real number")
    return x


def to_int(value: Optional[str]) -> int:
    if value is None:
        raise ValueError("an integer")
    v = value.strip()
    try:
        return int(v)
    except ValueError:
        raise ValueError("an integer") from None


def float_list(n: Optional[int] = None) -> Callable[[Optional[str]], List[float]]:
    def convert(value):
        if value is None:
            raise ValueError(f"{n} real numbers" if n else "a list of real numbers")
        parts = value.replace(",", " ").split()
        if n is not None and len(parts) != n:
            raise ValueError(f"{n} real numbers, separated by spaces")
        try:
            return [to_float(p) for p in parts]
        except ValueError:
            raise ValueError(f"{n} real numbers" if n else "a list of real numbers") from None
    convert.description = f"{n} real numbers" if n else "real numbers"
    return convert


def int_list(n: Optional[int] = None) -> Callable[[Optional[str]], List[int]]:
    def convert(value):
        if value is None:
            raise ValueError("a list of integers")
        parts = value.replace(",", " ").split()
        if n is not None and len(parts) != n:
            raise ValueError(f"{n} integers, separated by spaces")
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise ValueError("a list of integers") from None
    return convert


def to_str(value: Optional[str]) -> str:
    if value is None:
        raise ValueError("a value")
    return value


def choice(*allowed: str, case_sensitive: bool = False):
    def convert(value):
        if value is None:
            raise ValueError("one of " + ", ".join(allowed))
        v = value.strip()
        for a in allowed:
            if (v == a) if case_sensitive else (v.lower() == a.lower()):
                return a
        raise ValueError("one of " + ", ".join(allowed))
    return convert


# --------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One registered key: its type converter, default and aliases."""

    name: str
    convert: Callable[[Optional[str]], Any]
    default: Any = None
    aliases: Tuple[str, ...] = ()
    mandatory: bool = False
    help: str = ""
    check: Optional[Callable[[Any], Optional[str]]] = None  # returns an error text or None
    #: the key shapes the sparse points or the rows of the linear system: a checkpoint made with
    #: another value is not resumed (gapfit.solve.checkpoint.fingerprint)
    fingerprint: bool = True
    #: an extension of a finished fit (extend_checkpoint) may give the key itself; the others come
    #: from the base fit (or must not change it)
    extension: bool = False

    @property
    def names(self) -> Tuple[str, ...]:
        return (self.name,) + self.aliases


def positive(x):
    return None if x > 0 else "greater than 0"


def non_negative(x):
    return None if x >= 0 else "0 or greater"


def at_least_one(x):
    return None if x >= 1 else "1 or greater"


class Schema:
    """A set of :class:`Param`, keyed case-sensitively by name and alias (as QUIP)."""

    def __init__(self, params: Sequence[Param]):
        self.params = list(params)
        self.by_name: Dict[str, Param] = {}
        for p in self.params:
            for n in p.names:
                self.by_name[n] = p

    def __contains__(self, key):
        return key in self.by_name

    def names(self) -> List[str]:
        return list(self.by_name)


def did_you_mean(key: str, candidates: Sequence[str]) -> str:
    matches = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in candidates}
        if key.lower() in lowered:
            matches = [lowered[key.lower()]]
    return f"; did you mean '{matches[0]}'?" if matches else ""


class GivenKeys(dict):
    """The raw text of the keys that were given, by canonical name, remembering how the user
    spelt each one (an alias or the canonical name) so that messages can use their word."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spelling: Dict[str, str] = {}

    def key(self, name: str) -> str:
        """The key as the user typed it (``name`` itself if it was not given)."""
        return self.spelling.get(name, name)


def apply_schema(schema: Schema, pairs: Sequence[Tuple[str, Optional[str]]], where: str,
                 extra_known: Sequence[str] = (), optional: Sequence[str] = ()) -> Tuple[Dict[str, Any], GivenKeys]:
    """Convert ``pairs`` with ``schema``; unknown keys are errors.

    Returns ``(values, given)``: typed values for every parameter (defaults
    included) keyed by canonical name, and the raw text of the keys that were
    given (last occurrence wins, aliases share the canonical name; ``given.key(name)``
    is the spelling the user used, which error messages quote).
    """
    given = GivenKeys()
    for key, value in pairs:
        param = schema.by_name.get(key)
        if param is None:
            if key in extra_known:
                continue
            hint = did_you_mean(key, list(schema.names()) + list(extra_known))
            raise ConfigError(f"unknown key '{key}' {where}{hint}")
        given[param.name] = value
        given.spelling[param.name] = key
    values: Dict[str, Any] = {}
    for param in schema.params:
        if param.name in given:
            text, typed = given[param.name], given.key(param.name)
            try:
                value = param.convert(text)
            except ValueError as exc:
                shown = "nothing" if text is None else repr(text)
                raise ConfigError(f"the '{typed}' key {where} must be {exc}; got {shown}") from None
            if param.check is not None:
                problem = param.check(value)
                if problem:
                    raise ConfigError(f"the '{typed}' key {where} must be {problem}; got {text!r}")
            values[param.name] = value
        else:
            if param.mandatory and param.name not in optional:
                alias = f" (or '{param.aliases[0]}')" if param.aliases else ""
                raise ConfigError(f"missing mandatory key '{param.name}'{alias} {where}")
            values[param.name] = param.default
    return values, given
