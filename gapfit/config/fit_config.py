"""The fit's configuration: the options parsed once into a frozen, validated :class:`FitConfig`.

:func:`build_config` takes the parsed top-level options (command line, ``config_file`` or API
keywords: :func:`gapfit.options.top_level.parse_top_level`) and raises every option error there,
the checks that involve several options included, before the banner and before any data is read.
It is pure: every rank builds the same FitConfig.  The rest of gapfit reads typed fields; only
this package reads options by their key names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ..errors import ConfigError
from ..options.schema import GivenKeys
from ..options.syntax import split_fields
from ..options.top_level import TOP_LEVEL, TopLevelOptions, parse_top_level
from .gaps import GapSpec, parse_gap_piece
from .targets import CoreConfig, E0Rule, SigmaTable, TargetNames, parse_e0, parse_ip_args

#: the target-name option of each kind of target, for messages that say which option to set
TARGET_NAME_OPTIONS = {"energy": "energy_parameter_name", "force": "force_parameter_name",
                       "virial": "virial_parameter_name"}


@dataclass(frozen=True)
class TargetsConfig:
    """Data and targets: where the frames are, the names of their targets, σ, e0 and the core."""

    at_file: str
    at_file_key: str  # at_file or atoms_filename, as typed
    names: TargetNames
    name_options: Dict[str, Tuple[str, bool]]  # kind → (option as typed, given?)
    prefix: str  # parameter_name_prefix
    sigmas: SigmaTable
    default_sigma: Tuple[float, ...]  # as given (E, F, V, H)
    config_type_sigma: str  # as given ("" for none)
    sigma_per_atom: bool  # kernel_regularisation_is_per_atom
    e0: E0Rule
    core: Optional[CoreConfig]
    allow_unfitted_targets: bool = False  # fit when a target's named key finds nothing but a close match does


@dataclass(frozen=True)
class SparseConfig:
    """Sparse-point selection, for every descriptor."""

    rnd_seed: int  # > 0: given; otherwise one is drawn
    use_actual_gpcov: bool  # sparse_use_actual_gpcov
    candidate_order: str  # mpi_candidate_order: data | rank
    only: bool  # sparsify_only_no_fit


@dataclass(frozen=True)
class SolverConfig:
    """The least-squares solve."""

    path: str  # linear_solver: auto | dense | streaming
    sparse_jitter: float
    blocksize_rows: int  # mpi_blocksize_rows
    blocksize_cols: int  # mpi_blocksize_cols
    chunk_bytes: float  # row_chunk_mb in bytes
    condition_number_norm: str  # "", "O" or "I"


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints of the streaming solve, and extensions of a finished fit."""

    file: str  # checkpoint_file ("" for none)
    interval: float  # checkpoint_interval (s)
    extend: str  # extend_checkpoint ("" for none)


@dataclass(frozen=True)
class OutputsConfig:
    """What a fit writes, and the error reports it prints."""

    gp_file: str
    gp_file_key: str  # gp_file or gap_file, as typed
    gp_file_given: bool
    report_file: str
    separate_sparse: bool  # sparse_separate_file
    copy_atoms_file: bool  # do_copy_atoms_file
    export_covariance: bool
    dump_prefix: str  # linear_system_dump_file
    training_errors: bool
    training_errors_atoms: int  # 0: every frame
    test_files: Tuple[str, ...]


@dataclass(frozen=True)
class RunConfig:
    """The run itself: how it reports."""

    verbose: bool  # verbosity above NORMAL: tracebacks with errors
    progress_interval: float
    print_all: bool  # mpi_print_all
    dryrun: bool


@dataclass(frozen=True)
class FitConfig:
    """Every option of a fit, validated and typed; ``options`` keeps what was given and how it was spelt
    (the command line stored in the model, the checkpoint's fingerprint, the banner)."""

    options: TopLevelOptions
    targets: TargetsConfig
    gaps: Tuple[GapSpec, ...]
    sparse: SparseConfig
    solver: SolverConfig
    checkpoint: CheckpointConfig
    outputs: OutputsConfig
    run: RunConfig

    @property
    def given(self) -> GivenKeys:
        return self.options.given

    @property
    def command_line(self) -> str:
        return self.options.option_string

    def target_name_options(self) -> Dict[str, str]:
        """The target-name options as given or defaulted (gapfit-eval and GapFit.score take them too)."""
        return {key: self.options.values[key] for key in TargetNames.OPTION_KEYS}

    @property
    def config_file(self) -> str:
        """The config_file the options came from ("" for none)."""
        return self.options.values["config_file"]


def parse_config(argv=(), option_string: Optional[str] = None) -> FitConfig:
    """The FitConfig of argv words (or a prepared option string)."""
    return build_config(parse_top_level(argv, option_string=option_string))


def build_config(opts: TopLevelOptions) -> FitConfig:
    """Check and type every option (every option error is raised here)."""
    v = opts.values
    gaps = tuple(parse_gap_piece(p, i + 1) for i, p in enumerate(opts.gap_pieces))
    for spec in gaps:
        # the descriptor's own checks (cutoffs, l_max, ...) before any work; those on the species after add_species
        descriptor = spec.make_descriptor(template=spec.gp.add_species)
        _check_theta_factor(spec, descriptor.dimensions)
    config = FitConfig(options=opts, targets=_targets(opts), gaps=gaps, sparse=_sparse(v), solver=_solver(v),
                       checkpoint=CheckpointConfig(file=v["checkpoint_file"], interval=v["checkpoint_interval"],
                                                   extend=v["extend_checkpoint"]),
                       outputs=_outputs(opts), run=_run(v))
    _check_combinations(config)
    return config


def _targets(opts: TopLevelOptions) -> TargetsConfig:
    v, given = opts.values, opts.given
    e0 = E0Rule(method=v["e0_method"], given=parse_e0(v["e0"]) if "e0" in given else None, text=v["e0"],
                offset=v["e0_offset"] if "e0_offset" in given else None)
    core = None
    if "baseline_ip_args" in given:  # as in gap_fit, giving core_ip_args turns the core on
        key = opts.key("baseline_ip_args")
        param_key = (opts.key("baseline_param_filename") if "baseline_param_filename" in given
                     else ("core_param_file" if key == "core_ip_args" else "baseline_param_filename") + " (default)")
        parse_ip_args(v["baseline_ip_args"], key)
        core = CoreConfig(ip_args=v["baseline_ip_args"], param_file=v["baseline_param_filename"], ip_args_key=key,
                          param_file_key=param_key, param_file_option=opts.key("baseline_param_filename"))
    return TargetsConfig(
        at_file=v["atoms_filename"], at_file_key=opts.key("atoms_filename"), names=TargetNames.from_options(v),
        name_options={kind: (opts.key(name), name in given) for kind, name in TARGET_NAME_OPTIONS.items()},
        prefix=v["parameter_name_prefix"],
        sigmas=SigmaTable(v["default_kernel_regularisation"], v["config_type_kernel_regularisation"],
                          key=opts.key("config_type_kernel_regularisation")),
        default_sigma=tuple(float(x) for x in v["default_kernel_regularisation"] or ()),
        config_type_sigma=v["config_type_kernel_regularisation"] or "",
        sigma_per_atom=v["kernel_regularisation_is_per_atom"], e0=e0, core=core,
        allow_unfitted_targets=v["allow_unfitted_targets"])


def _sparse(v) -> SparseConfig:
    return SparseConfig(rnd_seed=v["rnd_seed"], use_actual_gpcov=v["sparse_use_actual_gpcov"],
                        candidate_order=v["mpi_candidate_order"], only=v["sparsify_only_no_fit"])


def _solver(v) -> SolverConfig:
    return SolverConfig(path=v["linear_solver"], sparse_jitter=v["sparse_jitter"], blocksize_rows=v["mpi_blocksize_rows"],
                        blocksize_cols=v["mpi_blocksize_cols"], chunk_bytes=v["row_chunk_mb"] * 2.0 ** 20,
                        condition_number_norm=v["condition_number_norm"].strip().upper())


def _outputs(opts: TopLevelOptions) -> OutputsConfig:
    v = opts.values
    tests = tuple(split_fields(v["test_file"], separators=" ,", what="test_file")) if v["test_file"] else ()
    return OutputsConfig(gp_file=v["gap_file"], gp_file_key=opts.key("gap_file"), gp_file_given="gap_file" in opts.given,
                         report_file=v["report_file"], separate_sparse=v["sparse_separate_file"],
                         copy_atoms_file=v["do_copy_atoms_file"], export_covariance=v["export_covariance"],
                         dump_prefix=v["linear_system_dump_file"], training_errors=v["training_errors"],
                         training_errors_atoms=v["training_errors_atoms"], test_files=tests)


def _run(v) -> RunConfig:
    return RunConfig(verbose=v["verbosity"] != "NORMAL", progress_interval=v["progress_interval"],
                     print_all=v["mpi_print_all"], dryrun=v["dryrun"])


def _check_theta_factor(spec: GapSpec, dimensions: int) -> None:
    """theta_fac: one number, or one per dimension of the descriptor."""
    gp = spec.gp
    if gp.covariance_type not in ("ard_se", "pp") or gp.theta_rule != "factor":
        return
    fields = split_fields(gp.theta_factor, separators=" :;", what="theta_fac")
    try:
        [float(f) for f in fields]
    except ValueError:
        raise ConfigError(f"theta_fac {spec.where} must be numbers; got {gp.theta_factor!r}") from None


def _check_combinations(config: FitConfig) -> None:
    """The checks that involve several options."""
    if config.targets.e0.fits_offsets and config.outputs.export_covariance:
        raise ConfigError("export_covariance=T cannot be combined with e0_method=joint: R would hold the e0 offsets' "
                          "columns, which quippy.gap_tools does not know (GapFit.committee samples them)")
    checkpointing = config.checkpoint.file or config.checkpoint.extend
    if checkpointing and (config.solver.path == "dense" or config.sparse.only):
        raise ConfigError("checkpoint_file and extend_checkpoint need the streaming solver: give "
                          "linear_solver=streaming (or auto)" + (" and no sparsify_only_no_fit" if config.sparse.only
                                                                 else ""))


__all__ = ["FitConfig", "TargetsConfig", "SparseConfig", "SolverConfig", "CheckpointConfig", "OutputsConfig",
           "RunConfig", "build_config", "parse_config", "TOP_LEVEL"]
