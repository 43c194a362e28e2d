"""The options of an extension (``extend_checkpoint=``): the base fit's, with this run's data and outputs.

Keys that shape the model (descriptors, σ, e0, ...) come from the base fit and must not be given
differently: the sparse points, θ, e0 and σ rules are the base fit's.  Which keys an extension may
give itself is the option table's ``extension`` flag; those that change neither the sparse points
nor the rows (``fingerprint=False``) may be given too.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..options.syntax import quote_value
from ..options.top_level import TOP_LEVEL, TopLevelOptions, parse_top_level


def extension_path(opts: TopLevelOptions) -> str:
    """The checkpoint an extension extends ("" for an ordinary fit)."""
    return opts.values["extend_checkpoint"]


def _free(name: str) -> bool:
    """An extension may give this key (canonical name) itself."""
    param = TOP_LEVEL.by_name[name]
    return param.extension or not param.fingerprint


def extension_options(opts: TopLevelOptions, manifest: dict) -> TopLevelOptions:
    """This run's options over the base fit's (``manifest``: the base checkpoint's, with its ``path``)."""
    path = manifest["path"]
    base = manifest["fingerprint"]["options"]
    by_name = {TOP_LEVEL.by_name[k].name: (k, v) for k, v in base.items() if k in TOP_LEVEL}
    for name, value in opts.given.items():
        if _free(name):
            continue
        text = " ".join(str(value).split()) if value is not None else None
        if name not in by_name or by_name[name][1] != text:
            was = f"{by_name[name][0]}={by_name[name][1]}" if name in by_name else "not given"
            raise ConfigError(f"extend_checkpoint '{path}': {opts.given.key(name)} comes from the base fit ({was}); "
                              f"leave it out to extend")
    words = [f"{k}={quote_value(v)}" if v is not None else k for k, v in base.items()
             if k not in ("at_file", "atoms_filename")]
    for param in TOP_LEVEL.params:
        name = param.name
        if _free(name) and name in opts.given and name != "config_file":
            value = opts.given[name]
            words.append(f"{opts.given.key(name)}={quote_value(value)}" if value is not None else opts.given.key(name))
    return parse_top_level(option_string=" ".join(words))
