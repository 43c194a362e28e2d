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

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import ConfigError
from .schema import (GivenKeys, Param, Schema, apply_schema, choice, did_you_mean, float_list,  # noqa: F401
                     non_negative, positive, to_bool, to_float, to_int, to_str)

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
    Param("config_file", to_str, "",
          help="read the options from this file (gap_fit syntax, '#' comments; command-line options override it)"),
    Param("atoms_filename", to_str, None, aliases=("at_file",), mandatory=True,
          help="extended XYZ file of training configurations (energies eV, forces eV/Å, virials eV)"),
    Param("gap", to_str, None, mandatory=True,
          help="descriptors and their GP settings, {d1 ... : d2 ...}; 'gapfit --help soap' lists a descriptor's keys"),
    Param("e0", to_str, "0.0",
          help="energy of an isolated atom (eV): one number for every element or {Si:-158.5:O:-432.1}; "
               "given, it replaces e0_method"),
    Param("local_property0", to_str, "0.0", help="baseline of local-property fits (not supported by gapfit)"),
    Param("e0_offset", to_float, 0.0, help="added to every e0 (eV)"),
    Param("e0_method", choice("isolated", "average", "least_squares", "joint"), "isolated",
          help="e0 from single-atom frames without neighbours (isolated), the mean energy per atom (average), or "
               "(gapfit only) one e0 per species fitted to the energies per atom over composition (least_squares), "
               "or that e0 plus one offset per species fitted together with the GP (joint)"),
    Param("default_kernel_regularisation", float_list(4), None, aliases=("default_sigma",), mandatory=True,
          help="σ of energies (eV), forces (eV/Å), virials (eV), Hessians (eV/Å²): {E F V H}"),
    Param("default_kernel_regularisation_local_property", to_float, 0.001, aliases=("default_local_property_sigma",),
          help="σ of local properties (not supported by gapfit)"),
    Param("sparse_jitter", to_float, 1.0e-10, check=non_negative,
          help="added to the diagonal of K_MM for numerical stability (eV²)"),
    Param("hessian_displacement", to_float, 1.0e-2, aliases=("hessian_delta",),
          help="finite-difference step of Hessian data (Å; gapfit fits no Hessians: no effect)"),
    Param("baseline_param_filename", to_str, "quip_params.xml", aliases=("core_param_file",),
          help="QUIP XML file of the core (baseline) potential"),
    Param("baseline_ip_args", to_str, "", aliases=("core_ip_args",),
          help="QUIP init string of the core potential, e.g. {IP Glue}; giving it turns the core on"),
    Param("energy_parameter_name", to_str, "energy", help="comment-line key of the total energy (eV)"),
    Param("local_property_parameter_name", to_str, "local_property",
          help="per-atom column of a local property (not supported by gapfit)"),
    Param("force_parameter_name", to_str, "force",
          help="per-atom column of the forces (eV/Å); ASE writes 'forces'"),
    Param("virial_parameter_name", to_str, "virial", help="comment-line key of the virial, 9 numbers (eV)"),
    Param("stress_parameter_name", to_str, "stress",
          help="comment-line key of the stress, 6 or 9 numbers (eV/Å³), used where a frame has no virial"),
    Param("hessian_parameter_name", to_str, "hessian", help="Hessian data (not supported by gapfit)"),
    Param("config_type_parameter_name", to_str, "config_type",
          help="comment-line key naming a frame's group, for config_type_sigma and config_type_n_sparse"),
    Param("kernel_regularisation_parameter_name", to_str, "sigma", aliases=("sigma_parameter_name",),
          help="suffix of per-frame σ overrides: energy_sigma, force_sigma, virial_sigma, force_atom_sigma, ..."),
    Param("force_mask_parameter_name", to_str, "force_mask",
          help="per-atom logical column: T excludes that atom's forces from the fit"),
    Param("local_property_mask_parameter_name", to_str, "local_property_mask",
          help="per-atom logical column of local-property fits (not supported by gapfit)"),
    Param("parameter_name_prefix", to_str, "", help="prefix of every *_parameter_name above"),
    Param("config_type_kernel_regularisation", to_str, "", aliases=("config_type_sigma",),
          help="σ per config_type: {type:E:F:V:H:type2:E:F:V:H}, units as default_sigma"),
    Param("kernel_regularisation_is_per_atom", to_bool, True, aliases=("sigma_per_atom",),
          help="scale the energy and virial σ by √(number of atoms)"),
    Param("do_copy_atoms_file", to_bool, True, aliases=("do_copy_at_file",),
          help="copy the training data into the XML"),
    Param("sparse_separate_file", to_bool, True,
          help="write the sparse points to <gp_file>.sparseX.<label> files instead of inside the XML"),
    Param("sparse_use_actual_gpcov", to_bool, False,
          help="cluster, covariance and cur_covariance sparsification use the real kernel"),
    Param("gap_file", to_str, "gap_new.xml", aliases=("gp_file",), check=_gp_file_check,
          help="the GAP XML model written"),
    Param("verbosity", choice("NORMAL", "VERBOSE", "NERD", "ANALYSIS", case_sensitive=True), "NORMAL",
          help="NORMAL, or VERBOSE (and above) for tracebacks with errors"),
    Param("rnd_seed", to_int, -1,
          help="seed of the random sparse-point choices; -1 draws one, which the model's command line and "
               "report_file record"),
    Param("openmp_chunk_size", to_int, 0, check=non_negative,
          help="gap_fit's OpenMP chunk size (accepted; gapfit's threads are BLAS's)"),
    Param("do_ip_timing", to_bool, False, help="gap_fit's timers (accepted; gapfit always reports timings)"),
    Param("template_file", to_str, "template.xyz",
          help="atoms template for descriptors that need one (none of gapfit's)"),
    Param("sparsify_only_no_fit", to_bool, False,
          help="choose and write the sparse points, then stop: the first step of the two-step workflow"),
    Param("dryrun", to_bool, False, help="stop after printing the memory needed per rank and the smallest P"),
    Param("condition_number_norm", choice(" ", "O", "I", case_sensitive=False), " ",
          help="O or I: print log10 of the condition number of R in that norm (serial runs)"),
    Param("linear_system_dump_file", to_str, "",
          help="prefix of text dumps of each rank's rows of A and b (<prefix>.A.<rank>, <prefix>.b.<rank>)"),
    Param("mpi_blocksize_rows", to_int, 0, check=non_negative,
          help="ScaLAPACK row block size; 0: all of a rank's rows"),
    # gap_fit's default is 100; 32 halves ScaLAPACK's QR time and its nb×rows workspace here
    # (InP, 368k×1060 on 2 ranks: 14.9 s vs 25.4 s) and only affects speed and memory
    Param("mpi_blocksize_cols", to_int, 32, check=non_negative,
          help="ScaLAPACK column block size (gap_fit: 100); 0: M"),
    Param("mpi_print_all", to_bool, False, help="every rank prints its progress, prefixed by its rank"),
    Param("export_covariance", to_bool, False,
          help="write the triangular factor R of the QR to <gp_file>.R.<label> (for posterior committees)"),
    # gapfit extension: the order of sparse-point candidates gathered from the ranks.
    # "data" (default): file order, so an MPI run chooses exactly what a serial run chooses;
    # "rank": rank 0's frames, then rank 1's, ... as gap_fit's MPI runs (to reproduce them).
    Param("mpi_candidate_order", choice("data", "rank"), "data",
          help="gapfit: MPI sparse-point candidates in file order (data, = serial) or rank order (rank, = gap_fit)"),
    # gapfit extension: a machine-readable JSON report (timings, per-rank rows and peak memory)
    Param("report_file", to_str, "",
          help="gapfit: write a JSON report (per-rank timings, rows, peak memory, warnings) to this file"),
    Param("linear_solver", choice("auto", "dense", "streaming"), "auto",
          help="gapfit: the least-squares path: dense A (QR of all rows at once), streaming (rows folded into an "
               "(M+1)² triangular factor as they are made: memory independent of the data), or auto"),
    Param("checkpoint_file", to_str, "",
          help="gapfit: save the streaming solve here as it goes, and resume from it when the same fit is rerun "
               "(SIGTERM/SIGUSR1 save and stop: exit status 75)"),
    Param("extend_checkpoint", to_str, "",
          help="gapfit: extend the finished fit saved in this checkpoint with the frames of at_file (its sparse "
               "points, θ, e0 and σ rules are kept; a fit on all the data, for the cost of the new frames)"),
    Param("checkpoint_interval", to_float, 900.0, check=positive,
          help="gapfit: seconds between a rank's saves to checkpoint_file"),
    Param("training_errors", to_bool, True,
          help="gapfit: after the fit, report the model's errors on the training data per config_type (a second "
               "pass over the data: descriptors with gradients and predictions, not kernel rows)"),
    Param("test_file", to_str, "",
          help="gapfit: extended XYZ file(s) of held-out frames (separated by commas or spaces in braces): "
               "report the model's errors on them per config_type"),
    Param("row_chunk_mb", to_float, 16.0, check=positive,
          help="gapfit: MiB of descriptor gradients and kernel rows per chunk of K_NM rows (the producer's step)"),
    Param("progress_interval", to_float, 10.0, check=non_negative,
          help="gapfit: seconds between progress reports within a long phase (each also waits for 5% more work)"),
])

# Keys that gap_fit registers but whose features gapfit does not implement: giving
# them a non-default value is refused, never silently ignored.
_UNSUPPORTED_TOP_LEVEL = {
    "template_file": "template_file is only used by descriptors gapfit does not implement",
    "local_property0": "local-property fits are not supported",
}


@dataclass
class TopLevelOptions:
    """The parsed top-level options (canonical names) and where they came from."""

    values: Dict[str, Any]
    given: GivenKeys
    option_string: str  # the string stored in the XML <command_line>
    gap_pieces: List[str] = field(default_factory=list)

    def __getitem__(self, name):
        return self.values[TOP_LEVEL.by_name[name].name]

    def has(self, name) -> bool:
        return TOP_LEVEL.by_name[name].name in self.given

    def key(self, name) -> str:
        """The key as the user typed it (an alias, or the canonical name)."""
        return self.given.key(TOP_LEVEL.by_name[name].name)


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
        values, given = apply_schema(TOP_LEVEL, file_pairs + other, f"in config_file '{config_file}'",
                                     optional=_optional(file_pairs + other))
        option_string = file_text + ((" " + join_argv([f"{k}={v}" if v is not None else k for k, v in other]))
                                     if other else "")
    else:
        values, given = apply_schema(TOP_LEVEL, pairs, "on the command line", optional=_optional(pairs))
        option_string = text
    for key, reason in _UNSUPPORTED_TOP_LEVEL.items():
        if key in given:
            raise ConfigError(f"the '{given.key(key)}' key is not supported by gapfit: {reason}")
    opts = TopLevelOptions(values=values, given=given, option_string=option_string)
    opts.gap_pieces = split_gap_string(values["gap"]) if values["gap"] is not None else []
    return opts


def _optional(pairs) -> tuple:
    """An extension (extend_checkpoint=) takes the descriptors and σ of its base fit."""
    if any(key == "extend_checkpoint" for key, _ in pairs):
        return ("gap", "default_kernel_regularisation")
    return ()


# --------------------------------------------------------------------------------------
# Per-GAP keys (gap_fit_module.F90, gap_fit_parse_gap_str)
# --------------------------------------------------------------------------------------

#: gap_fit's sparse methods, with what each does (gapfit --help)
SPARSE_METHOD_HELP = {
    "random": "M distinct candidates drawn at random",
    "pivot": "pivoted Cholesky of the candidates' kernel-like matrix: its first M pivots",
    "cluster": "bisecting k-medoids clustering into M clusters, their medoids",
    "uniform": "a grid of ceil(M^(1/d)) bins per dimension, the first candidate in each bin (low d only)",
    "kmeans": "k-means into M clusters, the candidate nearest each centre",
    "covariance": "greedy: each next point is the candidate of largest GP variance",
    "fuzzy": "fuzzy c-means into M clusters, the candidate nearest each centre",
    "file": "the sparse points themselves from sparse_file (cutoff, then d values, per point)",
    "index_file": "the 1-based indices of the chosen candidates from sparse_file",
    "cur_covariance": "CUR decomposition of the candidates' kernel matrix",
    "cur_points": "CUR decomposition of the candidates' descriptor matrix (leverage scores, randomised)",
    "none": "every distinct candidate",
}
SPARSE_METHODS = tuple(SPARSE_METHOD_HELP)


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
        raise ValueError("one of ard_se (gaussian), dot_product, pp")
    return mapping[v]


GP_KEYS = Schema([
    Param("energy_scale", to_float, None, aliases=("delta",), mandatory=True, check=positive,
          help="δ, the energy scale of this term (eV): the kernel is multiplied by δ²"),
    Param("f0", to_float, 0.0, help="kernel offset (eV): ard_se and pp kernels add f0²"),
    Param("n_sparse", to_int, 0, help="number of sparse points M of this descriptor (per species after add_species)"),
    Param("config_type_n_sparse", to_str, "", help="M per config_type instead of n_sparse: {type1:50:type2:100}"),
    Param("sparse_method", _sparse_method, "random", help="how the sparse points are chosen (list below)"),
    Param("lengthscale_factor", to_str, "1.0", aliases=("theta_fac",),
          help="ard_se θ = this factor × each dimension's range over the data (one value or one per dimension)"),
    Param("lengthscale_uniform", to_float, 0.0, aliases=("theta_uniform",),
          help="ard_se θ, the same for every dimension (units of the descriptor, e.g. Å)"),
    Param("lengthscale_file", to_str, "", aliases=("theta_file",), help="ard_se θ from a file: one line, d numbers"),
    Param("sparse_file", to_str, "", help="the sparse points (sparse_method=file) or their indices (index_file)"),
    Param("mark_sparse_atoms", to_bool, False, help="does nothing in gap_fit (refused)"),
    Param("add_species", to_bool, True, help="expand into one descriptor per species (or pair) in the data"),
    Param("covariance_type", _covariance_type, None, mandatory=True,
          help="the kernel: ard_se (alias gaussian), pp (compact piecewise polynomial) or dot_product"),
    Param("soap_exponent", to_float, 1.0, aliases=("zeta",), help="ζ, the exponent of the dot_product kernel"),
    Param("print_sparse_index", to_str, "", help="append the 1-based indices of the chosen sparse points to this file"),
    Param("unique_hash_tolerance", to_float, 1.0e-10, check=non_negative,
          help="duplicate filter: candidates whose L1 norms differ by less are compared"),
    Param("unique_descriptor_tolerance", to_float, 1.0e-10, check=non_negative,
          help="duplicate filter: compared candidates closer than this in every component are one"),
])


@dataclass
class GapSpec:
    """One descriptor + GP specification (one ``gpCoordinates`` after species expansion)."""

    piece: str  # the full gap-string piece, written verbatim to <descriptor>
    index: int  # 1-based position among the pieces (for messages)
    descriptor_type: str
    gp: Dict[str, Any]
    gp_given: GivenKeys
    descriptor_params: Dict[str, Any]
    descriptor_given: GivenKeys
    warnings: List[str] = field(default_factory=list)  # legacy keys that were accepted

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
    d_pairs = [(k, v) for k, v in pairs if k not in GP_KEYS and k not in dcls.legacy_keys]
    warnings = [f"the legacy key '{k}' {where} is accepted and has no effect: {dcls.legacy_keys[k]}"
                for k, _ in pairs if k in dcls.legacy_keys and k not in GP_KEYS]
    for key, _ in d_pairs:
        if key not in dcls.schema:
            hint = did_you_mean(key, list(GP_KEYS.names()) + list(dcls.schema.names()))
            raise ConfigError(f"unknown key '{key}' {where}{hint}")
    gp, gp_given = apply_schema(GP_KEYS, gp_pairs, where)
    dparams, d_given = apply_schema(dcls.schema, d_pairs, where)
    spec = GapSpec(piece=piece, index=index, descriptor_type=dtype, gp=gp, gp_given=gp_given,
                   descriptor_params=dparams, descriptor_given=d_given, warnings=warnings)
    _validate_gp(spec)
    return spec


def _validate_gp(spec: GapSpec) -> None:
    gp, given, where = spec.gp, spec.gp_given, spec.where
    cov = gp["covariance_type"]
    if cov == "bond_real_space":
        raise ConfigError(f"covariance_type={cov} {where} is not implemented in gapfit (use ard_se, pp or "
                          f"dot_product)")
    hyper = [k for k in ("lengthscale_file", "lengthscale_uniform", "lengthscale_factor", "soap_exponent") if k in given]
    if len(hyper) != 1:
        raise ConfigError(f"exactly one of theta_file, theta_uniform, theta_fac or zeta must be given {where}; "
                          f"got {len(hyper)}" + (f" ({', '.join(given.key(k) for k in hyper)})" if hyper else ""))
    if cov == "dot_product" and "soap_exponent" not in given:
        raise ConfigError(f"covariance_type=dot_product needs zeta {where}")
    if cov in ("ard_se", "pp") and "soap_exponent" in given:
        raise ConfigError(f"covariance_type={cov} needs theta_uniform, theta_fac or theta_file, "
                          f"not {given.key('soap_exponent')}, {where}")
    if "lengthscale_uniform" in given and gp["lengthscale_uniform"] <= 0:
        raise ConfigError(f"the '{given.key('lengthscale_uniform')}' key {where} must be greater than 0; "
                          f"got {given['lengthscale_uniform']}")
    if cov == "dot_product" and gp["soap_exponent"] < 0:
        raise ConfigError(f"the '{given.key('soap_exponent')}' key {where} must be 0 or greater; "
                          f"got {given['soap_exponent']}")
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
