"""The text of ``gapfit --help [topic]``, generated from the option tables.

Every key's line comes from its :class:`~gapfit.options.schema.Param` (names, default, help), so the help
cannot drift from what the parser accepts.  Topics: a descriptor (``gapfit --help soap``), any
key or alias (``gapfit --help theta_uniform``), a sparse method (``gapfit --help cur_points``).
"""

from __future__ import annotations

import textwrap
from typing import List, Optional

from ..descriptors import REGISTRY, descriptor_class
from ..errors import ConfigError
from ..options.gp import GP_KEYS, SPARSE_METHOD_HELP
from ..options.schema import Param, Schema, did_you_mean
from ..options.top_level import TOP_LEVEL

USAGE = """usage: gapfit at_file=train.xyz gap={distance_2b ... : soap ...} default_sigma={E F V H} [key=value ...]
       mpirun -n P gapfit ...        (data-parallel fit, ScaLAPACK QR)
       gapfit config_file=fit.cfg    (options from a file; '#' starts a comment)
       gapfit --help [topic]         (all options; or one descriptor, key or sparse method)"""

KERNELS = {
    "ard_se": "squared exponential with one length scale θ per dimension (alias gaussian): δ² exp(-½Σ((x-x')/θ)²) + f0²",
    "pp": "compact piecewise polynomial of r = |(x-x')/θ|: δ² (1-r)^(j+1) ((j+1)r + 1) + f0² for r < 1, "
          "j = ⌊d/2⌋ + 2",
    "dot_product": "dot product to the power ζ: δ² (x·x')^ζ",
}

_WIDTH = 100


def _default(p: Param) -> str:
    if p.mandatory:
        return "mandatory"
    value = p.default
    if isinstance(value, bool):
        return "T" if value else "F"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "{" + " ".join(map(str, value)) + "}"
    if isinstance(value, str) and (value == "" or value.strip() != value):
        return repr(value)
    return str(value)


def key_lines(p: Param) -> List[str]:
    """A key's entry: its names and default, then its description, indented."""
    head = f"  {' / '.join(p.names)} = {_default(p)}"
    body = textwrap.wrap(p.help or "(no description)", _WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return [head] + body


def _schema_lines(schema: Schema, skip=()) -> List[str]:
    lines = []
    for p in schema.params:
        if p.name not in skip:
            lines += key_lines(p)
    return lines


def _method_lines(names) -> List[str]:
    width = max(len(n) for n in names)
    return [f"  {n:<{width}}  {SPARSE_METHOD_HELP[n]}" for n in names]


def overview() -> str:
    lines = [USAGE, "", "Top-level options (gap_fit's; aliases after '/'; units in the descriptions):"]
    lines += _schema_lines(TOP_LEVEL)
    lines += ["", "Keys of every descriptor inside gap={...} (the GP and its sparse points):"]
    lines += _schema_lines(GP_KEYS)
    lines += ["", "Descriptors ('gapfit --help NAME' lists a descriptor's own keys):"]
    width = max(len(n) for n in REGISTRY)
    lines += [f"  {n:<{width}}  {descriptor_class(n).summary}" for n in REGISTRY]
    lines += ["", "Kernels (covariance_type):"]
    lines += [f"  {n:<11}  {text}" for n, text in KERNELS.items()]
    lines += ["", "Sparse methods (sparse_method):"]
    lines += _method_lines(list(SPARSE_METHOD_HELP))
    return "\n".join(lines)


def descriptor_help(name: str) -> str:
    cls = descriptor_class(name)
    lines = [f"{name}: {cls.summary}", "", f"Keys of {name} (besides the GP keys that 'gapfit --help' lists):"]
    lines += _schema_lines(cls.schema, skip=(name,))
    if cls.legacy_keys:
        lines += ["", "Legacy keys (in published command lines; accepted with a warning, no effect):"]
        lines += [f"  {k}: {text}" for k, text in cls.legacy_keys.items()]
    lines += ["", f"Sparse methods for {name}:"]
    lines += _method_lines(cls.sparse_methods or list(SPARSE_METHOD_HELP))
    return "\n".join(lines)


def help_text(topic: Optional[str] = None) -> str:
    """The help for ``topic`` (None: everything); ConfigError for an unknown topic, with a hint."""
    if topic is None:
        return overview()
    if topic in REGISTRY:
        return descriptor_help(topic)
    for schema, where in ((TOP_LEVEL, "top-level option"), (GP_KEYS, "key inside gap={...}")):
        if topic in schema:
            return "\n".join([f"{topic}: {where}"] + key_lines(schema.by_name[topic]))
    for name in REGISTRY:
        schema = descriptor_class(name).schema
        if topic in schema:
            return "\n".join([f"{topic}: key of the {name} descriptor"] + key_lines(schema.by_name[topic]))
    if topic in SPARSE_METHOD_HELP:
        return f"sparse_method={topic}: {SPARSE_METHOD_HELP[topic]}"
    if topic in KERNELS:
        return f"covariance_type={topic}: {KERNELS[topic]}"
    known = (list(REGISTRY) + TOP_LEVEL.names() + GP_KEYS.names() + list(SPARSE_METHOD_HELP) + list(KERNELS)
             + [n for d in REGISTRY for n in descriptor_class(d).schema.names()])
    raise ConfigError(f"no help on '{topic}': give a descriptor ({', '.join(REGISTRY)}), an option or a sparse "
                      f"method{did_you_mean(topic, known)}")
