"""gap_fit's top-level options (``gap_fit_module.F90``, ``gap_fit_parse_command_line``): the table,
and parsing the command line or a ``config_file`` into values and the keys given."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ..errors import ConfigError
from .schema import (  # noqa: F401
    GivenKeys,
    Param,
    Schema,
    apply_schema,
    choice,
    float_list,
    non_negative,
    positive,
    to_bool,
    to_float,
    to_int,
    to_str,
)
from .gp import GP_KEYS
from .syntax import join_argv, key_values, split_gap_string, strip_comments


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
          help="read the options from this file (gap_fit syntax, '#' comments; command-line options override it)",
          fingerprint=False),
    Param("atoms_filename", to_str, None, aliases=("at_file",), mandatory=True,
          help="extended XYZ file of training configurations (energies eV, forces eV/Å, virials eV)",
          fingerprint=False, extension=True),
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
          help="copy the training data into the XML", fingerprint=False),
    Param("sparse_separate_file", to_bool, True,
          help="write the sparse points to <gp_file>.sparseX.<label> files instead of inside the XML",
          fingerprint=False),
    Param("sparse_use_actual_gpcov", to_bool, False,
          help="cluster, covariance and cur_covariance sparsification use the real kernel"),
    Param("gap_file", to_str, "gap_new.xml", aliases=("gp_file",), check=_gp_file_check,
          help="the GAP XML model written", fingerprint=False, extension=True),
    Param("verbosity", choice("NORMAL", "VERBOSE", "NERD", "ANALYSIS", case_sensitive=True), "NORMAL",
          help="NORMAL, or VERBOSE (and above) for tracebacks with errors", fingerprint=False),
    Param("rnd_seed", to_int, -1,
          help="seed of the random sparse-point choices; -1 draws one, which the model's command line and "
               "report_file record"),
    Param("openmp_chunk_size", to_int, 0, check=non_negative,
          help="gap_fit's OpenMP chunk size (accepted; gapfit's threads are BLAS's)", fingerprint=False),
    Param("do_ip_timing", to_bool, False, help="gap_fit's timers (accepted; gapfit always reports timings)",
          fingerprint=False),
    Param("template_file", to_str, "template.xyz",
          help="atoms template for descriptors that need one (none of gapfit's)"),
    Param("sparsify_only_no_fit", to_bool, False,
          help="choose and write the sparse points, then stop: the first step of the two-step workflow"),
    Param("dryrun", to_bool, False, help="stop after printing the memory needed per rank and the smallest P",
          fingerprint=False),
    Param("condition_number_norm", choice(" ", "O", "I", case_sensitive=False), " ",
          help="O or I: print log10 of the condition number of R in that norm (serial runs)", fingerprint=False),
    Param("linear_system_dump_file", to_str, "",
          help="prefix of text dumps of each rank's rows of A and b (<prefix>.A.<rank>, <prefix>.b.<rank>)",
          fingerprint=False),
    Param("mpi_blocksize_rows", to_int, 0, check=non_negative,
          help="ScaLAPACK row block size; 0: all of a rank's rows", fingerprint=False),
    # gap_fit's default is 100; 32 halves ScaLAPACK's QR time and its nb×rows workspace here
    # (InP, 368k×1060 on 2 ranks: 14.9 s vs 25.4 s) and only affects speed and memory
    Param("mpi_blocksize_cols", to_int, 32, check=non_negative,
          help="ScaLAPACK column block size (gap_fit: 100); 0: M", fingerprint=False),
    Param("mpi_print_all", to_bool, False, help="every rank prints its progress, prefixed by its rank",
          fingerprint=False),
    Param("export_covariance", to_bool, False,
          help="write the triangular factor R of the QR to <gp_file>.R.<label> (for posterior committees)",
          fingerprint=False),
    # gapfit extension: the order of sparse-point candidates gathered from the ranks.
    # "data" (default): file order, so an MPI run chooses exactly what a serial run chooses;
    # "rank": rank 0's frames, then rank 1's, ... as gap_fit's MPI runs (to reproduce them).
    Param("mpi_candidate_order", choice("data", "rank"), "data",
          help="gapfit: MPI sparse-point candidates in file order (data, = serial) or rank order (rank, = gap_fit)",
          fingerprint=False),
    # gapfit extension: a machine-readable JSON report (timings, per-rank rows and peak memory)
    Param("report_file", to_str, "",
          help="gapfit: write a JSON report (per-rank timings, rows, peak memory, warnings) to this file",
          fingerprint=False),
    Param("linear_solver", choice("auto", "dense", "streaming"), "auto",
          help="gapfit: the least-squares path: dense A (QR of all rows at once), streaming (rows folded into an "
               "(M+1)² triangular factor as they are made: memory independent of the data), or auto",
          fingerprint=False),
    Param("checkpoint_file", to_str, "",
          help="gapfit: save the streaming solve here as it goes, and resume from it when the same fit is rerun "
               "(SIGTERM/SIGUSR1 save and stop: exit status 75)", fingerprint=False, extension=True),
    Param("extend_checkpoint", to_str, "",
          help="gapfit: extend the finished fit saved in this checkpoint with the frames of at_file (its sparse "
               "points, θ, e0 and σ rules are kept; a fit on all the data, for the cost of the new frames)",
          fingerprint=False, extension=True),
    Param("checkpoint_interval", to_float, 900.0, check=positive,
          help="gapfit: seconds between a rank's saves to checkpoint_file", fingerprint=False, extension=True),
    Param("allow_unfitted_targets", to_bool, False,
          help="gapfit: fit even when no frame has the key a *_parameter_name option names while frames carry "
               "those targets under another key (ASE's 'forces'): they are left out, as gap_fit leaves them; "
               "by default the fit stops and names the option to set", fingerprint=False),
    Param("training_errors", to_bool, True,
          help="gapfit: after the fit, report the model's errors on the training data per config_type (a second "
               "pass over the data: descriptors with gradients and predictions, not kernel rows)", fingerprint=False),
    Param("training_errors_atoms", to_int, 25000, check=non_negative,
          help="gapfit: score about this many atoms of the training data for training_errors, in frames spread "
               "evenly through each config_type (every frame of a config_type with fewer than 5; the table says "
               "how many); 0 scores every frame", fingerprint=False),
    Param("test_file", to_str, "",
          help="gapfit: extended XYZ file(s) of held-out frames (separated by commas or spaces in braces): "
               "report the model's errors on them per config_type", fingerprint=False),
    Param("row_chunk_mb", to_float, 16.0, check=positive,
          help="gapfit: MiB of descriptor gradients and kernel rows per chunk of K_NM rows (the producer's step)",
          fingerprint=False),
    Param("progress_interval", to_float, 10.0, check=non_negative,
          help="gapfit: seconds between progress reports within a long phase (each also waits for 5% more work)",
          fingerprint=False),
])

# Keys that gap_fit registers but whose features gapfit does not implement: giving
# them a non-default value is refused, never silently ignored.
_UNSUPPORTED_TOP_LEVEL = {
    "template_file": "template_file is only used by descriptors gapfit does not implement",
    "local_property0": "local-property fits are not supported",
}


@dataclass(frozen=True)
class TopLevelOptions:
    """The parsed top-level options (canonical names) and where they came from."""

    values: Dict[str, Any]
    given: GivenKeys
    option_string: str  # the string stored in the XML <command_line>
    gap_pieces: Tuple[str, ...] = ()

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
        _check_misplaced(file_pairs, f"in config_file '{config_file}'")
        _check_misplaced(other, "on the command line")
        values, given = apply_schema(TOP_LEVEL, file_pairs + other, f"in config_file '{config_file}'",
                                     optional=_optional(file_pairs + other))
        option_string = file_text + ((" " + join_argv([f"{k}={v}" if v is not None else k for k, v in other]))
                                     if other else "")
    else:
        _check_misplaced(pairs, "on the command line")
        values, given = apply_schema(TOP_LEVEL, pairs, "on the command line", optional=_optional(pairs))
        option_string = text
    for key, reason in _UNSUPPORTED_TOP_LEVEL.items():
        if key in given:
            raise ConfigError(f"the '{given.key(key)}' key is not supported by gapfit: {reason}")
    pieces = tuple(split_gap_string(values["gap"])) if values["gap"] is not None else ()
    return TopLevelOptions(values=values, given=given, option_string=option_string, gap_pieces=pieces)


def _check_misplaced(pairs, where: str) -> None:
    """The two slips whose plain "unknown key" would not name the fix: a per-descriptor key given at
    the top level (``n_sparse=300``), and a value with spaces given without braces
    (``default_sigma=0.001 0.05 0.05 0``, whose later numbers read as keys)."""
    for k, (key, value) in enumerate(pairs):
        if key in TOP_LEVEL:
            continue
        if key in GP_KEYS:
            raise ConfigError(f"'{key}' {where} is a key of one descriptor: put it inside gap={{...}}, e.g. "
                              f"gap={{soap ... {key}={value if value is not None else '...'}}}")
        if value is None and _is_number(key) and k > 0 and pairs[k - 1][1] is not None:
            start = k
            while start > 0 and pairs[start - 1][1] is None and _is_number(pairs[start - 1][0]):
                start -= 1
            name, first = pairs[start - 1]
            end = k
            while end + 1 < len(pairs) and pairs[end + 1][1] is None and _is_number(pairs[end + 1][0]):
                end += 1
            numbers = " ".join([first] + [w for w, _ in pairs[start:end + 1]])
            raise ConfigError(f"'{key}' {where} is not a key: a value with spaces needs braces, e.g. "
                              f"{name}={{{numbers}}}")


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _optional(pairs) -> tuple:
    """An extension (extend_checkpoint=) takes the descriptors and σ of its base fit."""
    if any(key == "extend_checkpoint" for key, _ in pairs):
        return ("gap", "default_kernel_regularisation")
    return ()
