"""gap_fit's option syntax, option tables and validation.

The syntax follows QUIP's ParamReader (``param_read_args``/``param_read_line``)
and ``split_string``:

* argv words are joined into one string; a word containing a space and of the
  form ``key=value`` is quoted as ``key="value"`` unless the value already starts
  with a quote or brace;
* fields are separated by spaces and commas; ``''``, ``""`` and ``{}`` group
  (nested groups must match) and only the outermost pair is removed;
* spaces around ``=`` are allowed;
* ``T``/``F``/``true``/``false`` (any case) are the logicals, a bare key is True;
* the last occurrence of a key (or of its alias) wins.

Unlike gap_fit we are strict: an unknown key, at top level or inside ``gap={}``,
is an error with a "did you mean" suggestion, and so is an invalid value.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import ConfigError

# --------------------------------------------------------------------------------------
# Tokenising
# --------------------------------------------------------------------------------------

_QUOTES = {"'": "'", '"': '"', "{": "}"}


def quote_value(value: str) -> str:
    """``value`` as a key=value string must carry it: in braces if it is empty or holds a
    separator, unless it is already one brace or quote group."""
    if value == "" or (any(ch in value for ch in " ,\t\n") and value[:1] + value[-1:] not in ("{}", "''", '""')):
        return "{" + value + "}"
    return value


def join_argv(argv: Sequence[str]) -> str:
    """Join command-line words into one option string, as gap_fit does."""
    parts = []
    for word in argv:
        word = " ".join(word.split("\n")).strip()  # a quoted value may span lines
        if not word:
            continue
        if " " in word:
            if "=" in word:
                key, value = word.split("=", 1)
                if value[:1] not in ("'", '"', "{"):
                    word = f'{key}="{value}"'
            elif word[:1] not in ("'", '"', "{"):
                word = f'"{word}"'
        parts.append(word)
    return " ".join(parts)


def _closing_position(text: str, start: int, quotes: Dict[str, str]) -> int:
    """Index of the delimiter closing the group opened at ``text[start]`` (nested groups match)."""
    stack = [quotes[text[start]]]
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == stack[-1]:
            stack.pop()
            if not stack:
                return i
        elif c in quotes and not (quotes[c] == c and c == stack[-1]):
            stack.append(quotes[c])
        i += 1
    return -1


def split_fields(text: str, separators: str = " ,\t\n\r", quotes: Optional[Dict[str, str]] = None,
                 what: str = "option string") -> List[str]:
    """Split ``text`` into fields, stripping the outermost quote pairs (QUIP ``split_string``).

    A separator run followed by ``=`` is absorbed, so ``key = value`` is one field.
    """
    quotes = _QUOTES if quotes is None else quotes
    fields: List[str] = []
    current: List[str] = []
    in_token = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in quotes:
            end = _closing_position(text, i, quotes)
            if end < 0:
                raise ConfigError(f"unbalanced {c!r} in {what}: {_excerpt(text, i)}")
            current.append(text[i + 1:end])
            in_token = True
            i = end + 1
        elif c in separators:
            j = i
            while j < n and text[j] in separators:
                j += 1
            if j < n and text[j] == "=":
                current.append("=")
                in_token = True
                i = j + 1
                while i < n and text[i] in separators:
                    i += 1
            else:
                if in_token:
                    fields.append("".join(current))
                    current = []
                in_token = False
                i = j
        else:
            if c in "}":
                raise ConfigError(f"unbalanced '}}' in {what}: {_excerpt(text, i)}")
            current.append(c)
            in_token = True
            i += 1
    if in_token:
        fields.append("".join(current))
    return fields


def _excerpt(text: str, pos: int, width: int = 40) -> str:
    lo = max(0, pos - width)
    return ("..." if lo else "") + text[lo:pos + width] + ("..." if pos + width < len(text) else "")


def key_values(text: str, what: str = "option string") -> List[Tuple[str, Optional[str]]]:
    """Parse ``text`` into ``(key, value)`` pairs; a bare key has value None."""
    pairs = []
    for f in split_fields(text, what=what):
        if "=" not in f:
            pairs.append((f, None))
            continue
        key, value = f.split("=", 1)
        if not key:
            raise ConfigError(f"malformed field {f!r} in {what}: nothing before '='")
        pairs.append((key, value))
    return pairs


def split_gap_string(value: str) -> List[str]:
    """Split the ``gap`` value into descriptor pieces on top-level ``:`` or ``;``.

    Brace groups at the top level of a piece lose their braces, as in gap_fit
    (``gap={{A}:{B}}`` and ``gap={A : B}`` are equivalent), except a group that is a
    key's value (``species_Z={14 6}``), which keeps them so the descriptor parser
    sees one field; gap_fit would split such a value and fail.
    """
    pieces: List[str] = []
    current: List[str] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "{":
            end = _closing_position(value, i, {"{": "}"})
            if end < 0:
                raise ConfigError(f"unbalanced '{{' in gap: {_excerpt(value, i)}")
            inner = value[i + 1:end]
            before = "".join(current).rstrip(" ")
            if before.endswith("="):
                current.append("{" + inner + "}")
            else:
                current.append(inner)
            i = end + 1
        elif c == "}":
            raise ConfigError(f"unbalanced '}}' in gap: {_excerpt(value, i)}")
        elif c in ":;":
            pieces.append("".join(current))
            current = []
            i += 1
        else:
            current.append(c)
            i += 1
    pieces.append("".join(current))
    pieces = [p.rstrip() for p in pieces]
    if any(not p.strip() for p in pieces):
        raise ConfigError(f"empty descriptor in gap={{{value}}}: check for a stray ':' or ';'")
    return pieces


def strip_comments(text: str) -> str:
    """Remove ``#`` comments (to end of line) outside quotes; gapfit's config_file extension."""
    out: List[str] = []
    depth_stack: List[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if depth_stack:
            if c == depth_stack[-1]:
                depth_stack.pop()
            elif c in _QUOTES and not (_QUOTES[c] == c):
                depth_stack.append(_QUOTES[c])
            out.append(c)
        elif c == "#" and (i == 0 or text[i - 1].isspace()):
            while i < n and text[i] != "\n":
                i += 1
            continue
        else:
            if c in _QUOTES:
                depth_stack.append(_QUOTES[c])
            out.append(c)
        i += 1
    return "".join(out)


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


def apply_schema(schema: Schema, pairs: Sequence[Tuple[str, Optional[str]]], where: str,
                 extra_known: Sequence[str] = ()) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Convert ``pairs`` with ``schema``; unknown keys are errors.

    Returns ``(values, raw)``: typed values for every parameter (defaults
    included) keyed by canonical name, and the raw text of the keys that were
    given (last occurrence wins, aliases share the canonical name).
    """
    raw: Dict[str, Optional[str]] = {}
    for key, value in pairs:
        param = schema.by_name.get(key)
        if param is None:
            if key in extra_known:
                continue
            hint = did_you_mean(key, list(schema.names()) + list(extra_known))
            raise ConfigError(f"unknown key '{key}' {where}{hint}")
        raw[param.name] = value
    values: Dict[str, Any] = {}
    for param in schema.params:
        if param.name in raw:
            text = raw[param.name]
            try:
                value = param.convert(text)
            except ValueError as exc:
                shown = "nothing" if text is None else repr(text)
                raise ConfigError(f"the '{param.name}' key {where} must be {exc}; got {shown}") from None
            if param.check is not None:
                problem = param.check(value)
                if problem:
                    raise ConfigError(f"the '{param.name}' key {where} must be {problem}; got {text!r}")
            values[param.name] = value
        else:
            if param.mandatory:
                alias = f" (or '{param.aliases[0]}')" if param.aliases else ""
                raise ConfigError(f"missing mandatory key '{param.name}'{alias} {where}")
            values[param.name] = param.default
    return values, {k: v for k, v in raw.items()}


# --------------------------------------------------------------------------------------
# Top-level options of gap_fit (gap_fit_module.F90, gap_fit_parse_command_line)
# --------------------------------------------------------------------------------------

def _gp_file_check(name):
    base = os.path.basename(name)
    if not base:
        return "a file name, not a directory"
    # gap_fit limits the name to 216 characters so that the sparseX file name
    # (39 characters longer) stays within the usual 255-character file-name limit.
    if len(base) > 216:
        return "at most 216 characters long (the sparseX file names add 39)"
    return None


TOP_LEVEL = Schema([
    Param("config_file", to_str, "", help="read all options from this file"),
    Param("atoms_filename", to_str, None, aliases=("at_file",), mandatory=True,
          help="extended XYZ file with the training configurations"),
    Param("gap", to_str, None, mandatory=True, help="descriptor and GP specifications, {d1 ... : d2 ...}"),
    Param("e0", to_str, "0.0", help="isolated-atom energy: one number or {Si:-158.5:O:-432.1}"),
    Param("local_property0", to_str, "0.0"),
    Param("e0_offset", to_float, 0.0),
    Param("e0_method", choice("isolated", "average"), "isolated"),
    Param("default_kernel_regularisation", float_list(4), None, aliases=("default_sigma",), mandatory=True,
          help="sigma for energies, forces, virials, Hessians"),
    Param("default_kernel_regularisation_local_property", to_float, 0.001, aliases=("default_local_property_sigma",)),
    Param("sparse_jitter", to_float, 1.0e-10, check=non_negative),
    Param("hessian_displacement", to_float, 1.0e-2, aliases=("hessian_delta",)),
    Param("baseline_param_filename", to_str, "quip_params.xml", aliases=("core_param_file",)),
    Param("baseline_ip_args", to_str, "", aliases=("core_ip_args",)),
    Param("energy_parameter_name", to_str, "energy"),
    Param("local_property_parameter_name", to_str, "local_property"),
    Param("force_parameter_name", to_str, "force"),
    Param("virial_parameter_name", to_str, "virial"),
    Param("stress_parameter_name", to_str, "stress"),
    Param("hessian_parameter_name", to_str, "hessian"),
    Param("config_type_parameter_name", to_str, "config_type"),
    Param("kernel_regularisation_parameter_name", to_str, "sigma", aliases=("sigma_parameter_name",)),
    Param("force_mask_parameter_name", to_str, "force_mask"),
    Param("local_property_mask_parameter_name", to_str, "local_property_mask"),
    Param("parameter_name_prefix", to_str, ""),
    Param("config_type_kernel_regularisation", to_str, "", aliases=("config_type_sigma",)),
    Param("kernel_regularisation_is_per_atom", to_bool, True, aliases=("sigma_per_atom",)),
    Param("do_copy_atoms_file", to_bool, True, aliases=("do_copy_at_file",)),
    Param("sparse_separate_file", to_bool, True),
    Param("sparse_use_actual_gpcov", to_bool, False),
    Param("gap_file", to_str, "gap_new.xml", aliases=("gp_file",), check=_gp_file_check),
    Param("verbosity", choice("NORMAL", "VERBOSE", "NERD", "ANALYSIS", case_sensitive=True), "NORMAL"),
    Param("rnd_seed", to_int, -1),
    Param("openmp_chunk_size", to_int, 0, check=non_negative),
    Param("do_ip_timing", to_bool, False),
    Param("template_file", to_str, "template.xyz"),
    Param("sparsify_only_no_fit", to_bool, False),
    Param("dryrun", to_bool, False),
    Param("condition_number_norm", choice(" ", "O", "I", case_sensitive=False), " "),
    Param("linear_system_dump_file", to_str, ""),
    Param("mpi_blocksize_rows", to_int, 0, check=non_negative),
    # gap_fit's default is 100; 32 halves ScaLAPACK's QR time and its nb×rows workspace here
    # (InP, 368k×1060 on 2 ranks: 14.9 s vs 25.4 s) and only affects speed and memory
    Param("mpi_blocksize_cols", to_int, 32, check=non_negative),
    Param("mpi_print_all", to_bool, False),
    Param("export_covariance", to_bool, False),
    # gapfit extension: the order of sparse-point candidates gathered from the ranks.
    # "data" (default): file order, so an MPI run chooses exactly what a serial run chooses;
    # "rank": rank 0's frames, then rank 1's, ... as gap_fit's MPI runs (to reproduce them).
    Param("mpi_candidate_order", choice("data", "rank"), "data"),
    # gapfit extension: a machine-readable JSON report (timings, per-rank rows and peak memory)
    Param("report_file", to_str, ""),
])

# Keys that gap_fit registers but whose features gapfit does not implement: giving
# them a non-default value is refused, never silently ignored.
_UNSUPPORTED_TOP_LEVEL = {
    "baseline_ip_args": "a baseline potential (core_ip_args) needs QUIP's potentials; subtract it from the data beforehand",
    "template_file": "template_file is only used by descriptors gapfit does not implement",
    "local_property0": "local-property fits are not supported",
}


@dataclass
class TopLevelOptions:
    """The parsed top-level options (canonical names) and where they came from."""

    values: Dict[str, Any]
    given: Dict[str, Optional[str]]
    option_string: str  # the string stored in the XML <command_line>
    gap_pieces: List[str] = field(default_factory=list)

    def __getitem__(self, name):
        return self.values[TOP_LEVEL.by_name[name].name]

    def has(self, name) -> bool:
        return TOP_LEVEL.by_name[name].name in self.given


def parse_option_string(text: str, where: str = "on the command line") -> Tuple[Dict[str, Any], Dict[str, Optional[str]]]:
    pairs = key_values(text, what=f"the options {where}")
    return apply_schema(TOP_LEVEL, pairs, where)


def read_config_file(path: str) -> str:
    """Contents of a ``config_file``: newlines become spaces, ``#`` comments are dropped."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"config_file '{path}' does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config_file '{path}' cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config_file '{path}' is not a text file") from None
    return " ".join(strip_comments(text).split())


def parse_top_level(argv: Sequence[str] = (), option_string: Optional[str] = None,
                    read_file: Callable[[str], str] = read_config_file) -> TopLevelOptions:
    """Parse gap_fit's top-level options from argv words (or a prepared string).

    With ``config_file=F`` the options come from F; options given on the command
    line next to it override the file's (gap_fit would ignore them).
    """
    text = join_argv(argv) if option_string is None else option_string
    pairs = key_values(text, what="the command line")
    config_file = None
    for key, value in pairs:
        if key == "config_file":
            config_file = value
    if config_file:
        file_text = read_file(config_file)
        file_pairs = key_values(file_text, what=f"config_file '{config_file}'")
        for key, _ in file_pairs:
            if key == "config_file":
                raise ConfigError(f"config_file '{config_file}' must not itself contain config_file=")
        other = [(k, v) for k, v in pairs if k != "config_file"]
        values, given = apply_schema(TOP_LEVEL, file_pairs + other, f"in config_file '{config_file}'")
        option_string = file_text + ((" " + join_argv([f"{k}={v}" if v is not None else k for k, v in other]))
                                     if other else "")
    else:
        values, given = apply_schema(TOP_LEVEL, pairs, "on the command line")
        option_string = text
    for key, reason in _UNSUPPORTED_TOP_LEVEL.items():
        if key in given:
            raise ConfigError(f"the '{key}' key is not supported by gapfit: {reason}")
    opts = TopLevelOptions(values=values, given=given, option_string=option_string)
    opts.gap_pieces = split_gap_string(values["gap"])
    return opts


# --------------------------------------------------------------------------------------
# Per-GAP keys (gap_fit_module.F90, gap_fit_parse_gap_str)
# --------------------------------------------------------------------------------------

SPARSE_METHODS = ("random", "pivot", "cluster", "uniform", "kmeans", "covariance", "fuzzy", "file",
                  "index_file", "cur_covariance", "cur_points", "none")


def _sparse_method(value):
    v = (value or "").strip().lower()
    if v == "uniq":
        raise ValueError("one of " + ", ".join(SPARSE_METHODS) + " (uniq is no longer in use: use none)")
    if v not in SPARSE_METHODS:
        raise ValueError("one of " + ", ".join(SPARSE_METHODS))
    return v


def _covariance_type(value):
    v = (value or "").strip().lower()
    mapping = {"gaussian": "ard_se", "ard_se": "ard_se", "dot_product": "dot_product",
               "bond_real_space": "bond_real_space", "pp": "pp"}
    if v not in mapping:
        raise ValueError("one of ard_se (gaussian), dot_product, pp, bond_real_space")
    return mapping[v]


GP_KEYS = Schema([
    Param("energy_scale", to_float, None, aliases=("delta",), mandatory=True, check=positive),
    Param("f0", to_float, 0.0),
    Param("n_sparse", to_int, 0),
    Param("config_type_n_sparse", to_str, ""),
    Param("sparse_method", _sparse_method, "random"),
    Param("lengthscale_factor", to_str, "1.0", aliases=("theta_fac",)),
    Param("lengthscale_uniform", to_float, 0.0, aliases=("theta_uniform",)),
    Param("lengthscale_file", to_str, "", aliases=("theta_file",)),
    Param("sparse_file", to_str, ""),
    Param("mark_sparse_atoms", to_bool, False),
    Param("add_species", to_bool, True),
    Param("covariance_type", _covariance_type, None, mandatory=True),
    Param("soap_exponent", to_float, 1.0, aliases=("zeta",)),
    Param("print_sparse_index", to_str, ""),
    Param("unique_hash_tolerance", to_float, 1.0e-10, check=non_negative),
    Param("unique_descriptor_tolerance", to_float, 1.0e-10, check=non_negative),
])


@dataclass
class GapSpec:
    """One descriptor + GP specification (one ``gpCoordinates`` after species expansion)."""

    piece: str  # the full gap-string piece, written verbatim to <descriptor>
    index: int  # 1-based position among the pieces (for messages)
    descriptor_type: str
    gp: Dict[str, Any]
    gp_given: Dict[str, Optional[str]]
    descriptor_params: Dict[str, Any]
    descriptor_given: Dict[str, Optional[str]]

    @property
    def where(self) -> str:
        return f"in gap descriptor {self.index} ({self.descriptor_type})"

    def make_descriptor(self):
        from .descriptors import descriptor_class
        cls = descriptor_class(self.descriptor_type)
        return cls(self.descriptor_params, piece=self.piece, given=self.descriptor_given)


def parse_gap_piece(piece: str, index: int) -> GapSpec:
    """Parse and validate one gap piece: GP keys and the descriptor's own keys."""
    from .descriptors import descriptor_class, find_type

    short = " ".join(piece.split())
    where0 = f"in gap descriptor {index} ('{short[:60]}{'...' if len(short) > 60 else ''}')"
    pairs = key_values(piece, what=f"gap descriptor {index}")
    bare = [k for k, v in pairs if v is None]
    dtype = find_type(bare, where0)
    where = f"in gap descriptor {index} ({dtype})"
    dcls = descriptor_class(dtype)
    gp_pairs = [(k, v) for k, v in pairs if k in GP_KEYS]
    d_pairs = [(k, v) for k, v in pairs if k not in GP_KEYS]
    for key, _ in d_pairs:
        if key not in dcls.schema:
            hint = did_you_mean(key, list(GP_KEYS.names()) + list(dcls.schema.names()))
            raise ConfigError(f"unknown key '{key}' {where}{hint}")
    gp, gp_given = apply_schema(GP_KEYS, gp_pairs, where)
    dparams, d_given = apply_schema(dcls.schema, d_pairs, where)
    spec = GapSpec(piece=piece, index=index, descriptor_type=dtype, gp=gp, gp_given=gp_given,
                   descriptor_params=dparams, descriptor_given=d_given)
    _validate_gp(spec)
    return spec


def _validate_gp(spec: GapSpec) -> None:
    gp, given, where = spec.gp, spec.gp_given, spec.where
    cov = gp["covariance_type"]
    if cov in ("bond_real_space", "pp"):
        raise ConfigError(f"covariance_type={cov} {where} is not implemented in gapfit (use ard_se or dot_product)")
    hyper = [k for k in ("lengthscale_file", "lengthscale_uniform", "lengthscale_factor", "soap_exponent") if k in given]
    if len(hyper) != 1:
        raise ConfigError(f"exactly one of theta_file, theta_uniform, theta_fac or zeta must be given {where}; "
                          f"got {len(hyper)}" + (f" ({', '.join(hyper)})" if hyper else ""))
    if cov == "dot_product" and "soap_exponent" not in given:
        raise ConfigError(f"covariance_type=dot_product needs zeta {where}")
    if cov == "ard_se" and "soap_exponent" in given:
        raise ConfigError(f"covariance_type=ard_se needs theta_uniform, theta_fac or theta_file, not zeta, {where}")
    if "lengthscale_uniform" in given and gp["lengthscale_uniform"] <= 0:
        raise ConfigError(f"the 'theta_uniform' key {where} must be greater than 0; got {given['lengthscale_uniform']}")
    if cov == "dot_product" and gp["soap_exponent"] < 0:
        raise ConfigError(f"the 'zeta' key {where} must be 0 or greater; got {given['soap_exponent']}")
    method = gp["sparse_method"]
    file_method = method in ("file", "index_file")
    if gp["sparse_file"] and not file_method:
        raise ConfigError(f"sparse_file is given {where} but sparse_method is {method}, not file or index_file")
    if file_method and not gp["sparse_file"]:
        raise ConfigError(f"sparse_method={method} needs sparse_file {where}")
    if "n_sparse" in given and gp["n_sparse"] <= 0 and not (file_method or method == "none"):
        raise ConfigError(f"the 'n_sparse' key {where} must be greater than 0; got {given['n_sparse']}")
    if gp["n_sparse"] < 0:
        raise ConfigError(f"the 'n_sparse' key {where} must not be negative; got {given['n_sparse']}")
    if gp["n_sparse"] > 0 and gp["config_type_n_sparse"] and not file_method:
        raise ConfigError(f"n_sparse and config_type_n_sparse cannot both be given {where}")
    if gp["n_sparse"] == 0 and not gp["config_type_n_sparse"] and not file_method and method != "none":
        raise ConfigError(f"n_sparse (or config_type_n_sparse) is required {where}")
    if gp["mark_sparse_atoms"]:
        raise ConfigError(f"mark_sparse_atoms is not supported {where} (it does nothing in gap_fit either)")


def expand_species(specs: List[GapSpec], species: List[int]) -> List[GapSpec]:
    """gap_fit's ``add_species=T`` expansion, in the order of the pieces."""
    from .descriptors import descriptor_class

    out: List[GapSpec] = []
    for spec in specs:
        if not spec.gp["add_species"]:
            out.append(spec)
            continue
        cls = descriptor_class(spec.descriptor_type)
        for new_piece in cls.expand_species(_blank_add_species(spec.piece), species):
            new = parse_gap_piece(new_piece, spec.index)
            out.append(new)
    return out


def _blank_add_species(piece: str) -> str:
    """gap_fit blanks an ``add_species...`` token with spaces before expanding."""
    pos = piece.find("add_species")
    if pos < 0:
        return piece
    end = pos
    while end < len(piece) and piece[end] != " ":
        end += 1
    return piece[:pos] + " " * (end - pos) + piece[end:]
