"""The phases of a fit, as every rank runs them (``run_fit``); :mod:`gapfit.api` is the user's API.

The fit follows gap_fit and the paper (Klawohn et al., J. Chem. Phys. 159, 174108):

1. parse the options and descriptors (every check before the banner); rank 0 indexes and
   validates the data;
2. species expansion (``add_species``), e0, targets and σ;
3. frames are assigned to ranks by the greedy balance; each rank parses its own;
4. sparse points (:mod:`gapfit.sparse.candidates`): candidates on the owning ranks, gathered to rank 0
   in data order, selected there and broadcast;
5. each rank's K_NM rows come from the producer in :mod:`gapfit.solve.rows`, chunk by chunk, into the
   sink (the rows of A = [Σ^-1/2 K_NM ; U] and b = [Σ^-1/2 y ; 0], no communication); K_MM = UᵀU
   is factorised on rank 0 and U's rows are scattered;
6. min‖Aα − b‖ by Householder QR: LAPACK on one process, ScaLAPACK on P×1;
7. rank 0 writes the GAP XML (atomically).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from ase.data import chemical_symbols

from .. import __version__
from ..config.gaps import expand_species, parse_gap_piece
from ..data.distribute import assign_frames
from ..data.e0 import SpeciesOffsets, compute_e0
from ..data.targets import SigmaTable, TargetNames, frame_labels, frame_rows, species_in_order, unused_target_warnings
from ..descriptors.neighbours import neighbour_list
from ..errors import ConfigError, DataError
from ..kernels.covariance import Coordinate
from ..kernels.functions import make_kernel
from ..model.core import load_core, parse_ip_args, read_param_file
from ..model.gap_xml import CoordinateModel, GapModel, make_label, write_model
from ..options.top_level import TOP_LEVEL, TopLevelOptions
from ..runtime.files import check_writable
from ..runtime.heap import keep_freed_blocks, release_freed_memory
from ..runtime.parallel import SerialComm, rank0_call, rank0_only
from ..runtime.report import Reporter, human_bytes
from ..solve.checkpoint import CheckpointRun, StopRequest
from ..solve.linear_system import FitContext, choose_path, solve
from ..sparse.candidates import sparse_points
from ..sparse.sparsify import QuipRandom, SparseChoice, choose_seed, parse_config_type_n_sparse
from .dryrun import memory_estimate
from .outputs import input_files, output_files, refuse_clobbering, test_files


@dataclass
class FitResult:
    """What a fit produced (also available as attributes of :class:`GapFit`)."""

    model: GapModel
    alpha: List[np.ndarray]
    sparse_x: List[np.ndarray]
    sparse_cutoff: List[np.ndarray]
    sparse_index: List[Optional[np.ndarray]]
    e0: np.ndarray
    timings: Dict[str, float] = field(default_factory=dict)
    files: List[str] = field(default_factory=list)
    errors: Dict[str, dict] = field(default_factory=dict)  # training / test errors (gapfit.model.scores)
    log_likelihood: Optional[float] = None  # log marginal likelihood (gapfit.solve.evidence)
    r: Optional[np.ndarray] = None  # R of A (rank 0, where the solve has it): committees
    refit: object = None  # a gapfit.model.refit.RefitProblem when the kernel rows were kept
    e0_offsets: object = None  # gapfit.data.e0.SpeciesOffsets (e0_method=joint): the last columns of α and R
    e0_base: Optional[np.ndarray] = None  # e0 before the fitted offsets (e0_method=joint)


def run_fit(opts: TopLevelOptions, source, comm=None, stream=None, quiet=False, write=True,
            extends: Optional[dict] = None, keep_kernel_rows: bool = False) -> FitResult:
    """Run the whole fit (every rank calls this); returns the result on every rank.

    With ``write=False`` no file is written (the model is returned in memory).  ``extends``: the
    manifest of a finished fit's checkpoint whose factor the frames of ``source`` extend (the
    options then come from :func:`gapfit.solve.checkpoint.extension_options`).  With a
    ``checkpoint_file``, SIGTERM and SIGUSR1 are caught for the whole fit (a checkpoint, then exit).
    """
    if keep_kernel_rows and (opts.values["checkpoint_file"] or extends is not None):
        raise ConfigError("keep_kernel_rows needs all the fit's rows in one run: leave out checkpoint_file and "
                          "extend_checkpoint")
    with StopRequest(active=bool(opts.values["checkpoint_file"])) as stop:
        return _run_fit(opts, source, comm, stream, quiet, write, extends, stop, keep_kernel_rows)


def _run_fit(opts, source, comm, stream, quiet, write, extends, stop, keep_kernel_rows=False) -> FitResult:
    comm = comm if comm is not None else SerialComm()
    keep_freed_blocks()  # the chunked phases reuse their large temporaries (gapfit.runtime.heap)
    v = opts.values
    log = Reporter(comm, stream=stream, quiet=quiet, print_all=v["mpi_print_all"],
                   progress_interval=v["progress_interval"])
    names = TargetNames.from_options(v)
    gp_file = v["gap_file"]
    sparsify_only = v["sparsify_only_no_fit"]

    # -- every option is checked before the banner (pure parsing: identical on every rank) --
    specs = [parse_gap_piece(p, i + 1) for i, p in enumerate(opts.gap_pieces)]
    for spec in specs:
        spec.make_descriptor()  # the descriptor's own checks (cutoffs, l_max, ...) before any work
    sigmas = SigmaTable(v["default_kernel_regularisation"], v["config_type_kernel_regularisation"],
                        key=opts.key("config_type_kernel_regularisation"))
    fit_e0_offsets = v["e0_method"] == "joint" and "e0" not in opts.given  # an explicit e0 wins
    if fit_e0_offsets and v["export_covariance"]:
        raise ConfigError("export_covariance=T cannot be combined with e0_method=joint: R would hold the e0 offsets' "
                          "columns, which quippy.gap_tools does not know (GapFit.committee samples them)")
    core = core_text = None
    if opts.has("baseline_ip_args"):  # as in gap_fit, giving core_ip_args turns the core on
        key = opts.key("baseline_ip_args")
        param_key = (opts.key("baseline_param_filename") if opts.has("baseline_param_filename")
                     else ("core_param_file" if key == "core_ip_args" else "baseline_param_filename") + " (default)")
        parse_ip_args(v["baseline_ip_args"], key)
        core_text = rank0_call(comm, read_param_file, v["baseline_param_filename"], param_key)
        core = load_core(v["baseline_ip_args"], core_text, f"{param_key} '{v['baseline_param_filename']}'", key)
    label = rank0_call(comm, make_label)
    if not v["dryrun"] and write:
        outputs, patterns = output_files(opts, specs, label, comm.size)
        refuse_clobbering(input_files(opts, specs), outputs, patterns)
        for path in test_files(v):  # before the fit, not after it
            if not os.path.isfile(path):
                raise ConfigError(f"test_file '{path}' does not exist" if not os.path.exists(path)
                                  else f"test_file '{path}' is not a file")
        rank0_call(comm, check_writable, gp_file, opts.key("gap_file"))
    _banner(log, opts, comm, _blas_info())
    log(f"Found {len(specs)} GAP descriptor(s) on the command line")
    for spec in specs:
        for text in spec.warnings:
            log.warn(text)
    if core is not None:
        log(f"Core potential: IP {core.ip} from {core.source} (elements "
            f"{' '.join(chemical_symbols[z] for z in core.species)}, cutoff {core.cutoff:g} Å); its energies, "
            f"forces and virials are subtracted from the targets")

    # -- data: rank 0 indexes and validates, and works out species and e0 --------------
    with log.phase("Reading and checking the data"):
        prep = rank0_call(comm, _prepare_data, source, specs, v, opts.given, names, sigmas, core)
    entries, species, e0, e0_how, labels, warnings = prep
    for text in warnings:
        log.warn(text)
    gaps = expand_species(specs, species) if extends is None else _base_coordinates(extends, species)
    coords = [Coordinate(spec=g, descriptor=g.make_descriptor()) for g in gaps]
    max_cutoff = max(c.descriptor.cutoff for c in coords)
    log(f"Species (order of first appearance): {' '.join(chemical_symbols[z] for z in species)}")
    for c in specs:
        if c.gp["add_species"] and len(gaps) != len(specs):
            log(f"  add_species expanded descriptor {c.index} ({c.descriptor_type})")
    log(f"{len(coords)} coordinate(s) after species expansion; neighbour cutoff {max_cutoff} Å")
    for i, c in enumerate(coords, 1):
        log(f"  {i}: {' '.join(c.spec.piece.split())}")
    log(e0_how)
    _targets_table(log, names, labels, sigmas, v)

    config_type_names = list(sigmas.names())
    for g in gaps:
        if g.gp["n_sparse"] == 0 and g.gp["config_type_n_sparse"]:
            for name in parse_config_type_n_sparse(g.gp["config_type_n_sparse"], g.where):
                if name not in config_type_names:
                    config_type_names.append(name)

    frame_rows_count = np.array([l.n_rows for l in labels], dtype=np.int64)
    owner = assign_frames(frame_rows_count, comm.size)
    my_frames = np.nonzero(owner == comm.rank)[0]
    if comm.size > 1:
        per_rank = np.bincount(owner, weights=frame_rows_count, minlength=comm.size).astype(int)
        counts = np.bincount(owner, minlength=comm.size)
        log(f"Frames per rank: {', '.join(map(str, counts))}; target rows per rank: {', '.join(map(str, per_rank))}")

    if v["dryrun"]:
        memory_estimate(log, comm, source, entries, my_frames, coords, frame_rows_count, owner, max_cutoff)
        log("dryrun=T: stopping before the fit")
        return FitResult(model=None, alpha=[], sparse_x=[], sparse_cutoff=[], sparse_index=[], e0=e0)

    # -- a checkpoint of this fit: resume from it (sparse points, θ, e0 and folded frames) --
    run = None
    if v["checkpoint_file"] or extends is not None:
        if v["linear_solver"] == "dense" or sparsify_only:
            raise ConfigError("checkpoint_file and extend_checkpoint need the streaming solver: give "
                              "linear_solver=streaming (or auto)" + (" and no sparsify_only_no_fit" if sparsify_only
                                                                     else ""))
        data_path = getattr(source, "path", None)
        if v["checkpoint_file"]:
            run = CheckpointRun.open(comm, opts, data_path, core_text, stop)
        if extends is not None and (run is None or not run.resuming):
            run = CheckpointRun.extension(comm, opts, extends, data_path, core_text, stop)
        if run.resuming:
            log(run.describe())
            e0 = np.asarray(run.common["e0"], dtype=float)

    seed, command_line = _random_seed(comm, opts, run)
    rng = QuipRandom(seed)
    log(f"Random seed = {seed}" + ("" if command_line == opts.option_string else
                                   " (drawn: the model's command line records it as rnd_seed)"))

    # -- sparse points -----------------------------------------------------------------
    if run is not None and run.resuming:
        coords, choices, thetas = _saved_sparse_points(coords, run.common, opts.values["checkpoint_file"])
    else:
        with log.phase("Sparse points"):
            choices, thetas = sparse_points(comm, log, source, entries, labels, my_frames, coords,
                                             config_type_names, max_cutoff, rng, v)
        coords, choices, thetas = _without_empty(log, coords, choices, thetas)
    column = 0
    for c, choice, theta in zip(coords, choices, thetas):
        gp = c.spec.gp
        try:
            c.kernel = make_kernel(gp["covariance_type"], gp["energy_scale"], choice.x, theta=theta,
                                   zeta=gp["soap_exponent"], f0=gp["f0"], permutations=c.descriptor.permutations)
        except ValueError as exc:  # a θ the permutations do not leave alone (gap_fit: K_MM fails to factorise)
            raise ConfigError(f"{c.spec.where}: {exc}: give theta_uniform or a single theta_fac value") from None
        c.sparse_cutoff = np.asarray(choice.cutoff, dtype=float)
        c.sparse_index = choice.index
        c.column = column
        column += c.n_sparse
    n_sparse = column
    log(f"Sparse points: {', '.join(str(c.n_sparse) for c in coords)} (total M = {n_sparse})")
    release_freed_memory()  # the candidates were many small arrays: hand their pages back before A

    xyz_lines = None
    if v["do_copy_atoms_file"]:  # only rank 0 writes the XML: the copy stays there
        xyz_lines = rank0_only(comm, source.text_lines)

    if sparsify_only:
        model = _model(label, e0, coords, [np.zeros(c.n_sparse) for c in coords], opts, command_line, xyz_lines,
                       fitted=False, core_text=core_text)
        files = rank0_call(comm, write_model, model, gp_file, v["sparse_separate_file"]) if write else []
        if write:
            from .two_step import prepare_second_run
            extra, options_path = rank0_call(comm, prepare_second_run, gp_file, None, os.getcwd())
            files += extra
            log(f"sparsify_only_no_fit=T: sparse points written; fit with them (serially or under MPI) with\n"
                f"    gapfit config_file={os.path.relpath(options_path)}")
        _report_files(log, files)
        log.rank_table()
        return FitResult(model=model, alpha=[np.zeros(c.n_sparse) for c in coords],
                         sparse_x=[c.kernel.sparse_x for c in coords], sparse_cutoff=[c.sparse_cutoff for c in coords],
                         sparse_index=[ch.index for ch in choices], e0=e0, timings=log.timing_summary(), files=files)

    # -- the linear system -------------------------------------------------------------
    ctx = FitContext(comm=comm, log=log, source=source, entries=entries, owner=owner, frame_rows=frame_rows_count,
                     coords=coords, names=names, sigmas=sigmas, e0=e0, values=v, max_cutoff=max_cutoff, core=core,
                     species=list(extends["species"]) if extends is not None else species, rnd_seed=seed)
    if fit_e0_offsets:
        ctx.offsets = SpeciesOffsets(ctx.species, n_sparse)
        n_sparse = ctx.n_sparse
        log(f"e0_method=joint: {ctx.offsets.n_columns} e0 offsets fitted with the GP (columns {n_sparse - ctx.offsets.n_columns + 1}"
            f"..{n_sparse}; prior σ {ctx.offsets.prior_sigma:g} eV about the least-squares e0)")
    path = "streaming" if run is not None else choose_path(v, int(frame_rows_count.sum()), n_sparse, comm.size, log)
    if keep_kernel_rows:
        from ..model.refit import KernelRowCache
        ctx.row_cache = KernelRowCache(n_sparse, int(frame_rows_count[my_frames].sum()))
        log(f"Keeping the kernel rows for refits ({human_bytes(8.0 * frame_rows_count[my_frames].sum() * n_sparse)} "
            f"per rank, {'in memory' if ctx.row_cache.in_memory else 'in a temporary file'})")
    stats: Dict[str, float] = {}
    solution = solve(ctx, path, stats, run)
    alpha, r = solution.alpha, solution.r

    alphas = [alpha[c.column:c.column + c.n_sparse] for c in coords]
    e0_base = e0
    if ctx.offsets is not None:
        log(ctx.offsets.describe(e0_base, alpha))
        e0 = ctx.offsets.e0(e0_base, alpha)
    model = _model(label, e0, coords, alphas, opts, command_line, xyz_lines, fitted=True, core_text=core_text)
    files = []
    if write:
        with log.phase("Writing the model"):
            files = rank0_call(comm, write_model, model, gp_file, v["sparse_separate_file"])
            if v["export_covariance"] and r is not None:
                files += rank0_call(comm, _write_r, r, gp_file, label)
    _report_files(log, files)
    errors = _error_reports(comm, log, model, source, entries, my_frames, names, v,
                            "the new frames" if extends is not None else "the training data")
    log.rank_table({**solution.table, "gemm GFLOP": stats["gemm_flops"] / 1e9,
                    "descriptor s": stats["descriptor_seconds"], "kernel rows s": stats["kernel_seconds"]})
    if v["report_file"]:
        report = log.json_report()
        report.update(version=__version__, rnd_seed=seed, n_sparse=n_sparse, target_rows=int(frame_rows_count.sum()),
                      files=files,
                      coordinates=[{"descriptor": " ".join(c.spec.piece.split()), "n_sparse": c.n_sparse} for c in coords],
                      **solution.report)
        if errors:
            report["errors"] = errors
        rank0_call(comm, _write_json, v["report_file"], report)
    return FitResult(model=model, alpha=alphas, sparse_x=[c.kernel.sparse_x for c in coords],
                     sparse_cutoff=[c.sparse_cutoff for c in coords], sparse_index=[ch.index for ch in choices],
                     e0=e0, timings=log.timing_summary(), files=files, errors=errors,
                     log_likelihood=solution.log_likelihood, r=solution.r_factor,
                     refit=_refit_problem(ctx) if keep_kernel_rows else None, e0_offsets=ctx.offsets,
                     e0_base=e0_base if ctx.offsets is not None else None)


def _refit_problem(ctx):
    from ..model.refit import RefitProblem
    cache, ctx.row_cache = ctx.row_cache, None
    return RefitProblem(ctx, cache)


def _error_reports(comm, log, model, source, entries, my_frames, names, v, what) -> Dict[str, dict]:
    """The fitted model's errors per config_type on this run's frames (``what``: the training data, or an
    extension's new frames) and on each test_file."""
    from ..model.calculator import GapPotential
    from ..model.scores import file_errors, report_errors

    tests = test_files(v)
    if not v["training_errors"] and not tests:
        return {}
    potential = GapPotential(model)
    errors: Dict[str, dict] = {}
    if v["training_errors"]:
        with log.phase(f"Errors on {what}"):
            errors["training"] = report_errors(comm, log, potential, source, entries, my_frames, names, what)
    for path in tests:
        with log.phase(f"Errors on test_file '{path}'"):
            errors.setdefault("test", {})[path] = file_errors(comm, log, potential, path, names, "test_file",
                                                              f"test_file '{path}'")
    return errors


def _base_coordinates(extends, species):
    """An extension's coordinates: the base fit's (expanded) descriptors; no new species."""
    base_species = [int(z) for z in extends["species"]]
    new = [z for z in species if z not in base_species]
    if new:
        raise DataError(f"the new data contain {', '.join(chemical_symbols[z] for z in new)}, which the fit of "
                        f"extend_checkpoint '{extends['path']}' has no descriptors for")
    return [parse_gap_piece(piece, k + 1) for k, piece in enumerate(extends["pieces"])]


def _saved_sparse_points(coords, common, path):
    """The sparse points, cutoffs, indices and θ a checkpoint saved, matched to the coordinates by descriptor."""
    pieces = [str(p) for p in common["pieces"]]
    by_piece = {" ".join(c.spec.piece.split()): c for c in coords}
    missing = [p for p in pieces if p not in by_piece]
    if missing:
        raise ConfigError(f"checkpoint_file '{path}' has sparse points of a descriptor this fit does not have: "
                          f"'{missing[0]}'")
    kept, choices, thetas = [], [], []
    for k, piece in enumerate(pieces):
        index = common[f"index{k}"]
        choices.append(SparseChoice(common[f"x{k}"], common[f"cutoff{k}"], index if index.size else None))
        thetas.append(common[f"theta{k}"] if common[f"theta{k}"].size else None)
        kept.append(by_piece[piece])
    return kept, choices, thetas


def _without_empty(log, coords, choices, thetas):
    """Leave out the coordinates that found no environments in the data.

    A descriptor as given with none is an error; one of several that add_species made (an
    angle_3b triplet of species that never meet, say) is left out with a warning: it would
    contribute nothing (gap_fit fails on it).
    """
    empty = [ch.index is not None and ch.x.shape[0] == 0 for ch in choices]
    found = {}
    for c, e in zip(coords, empty):
        found[c.spec.index] = found.get(c.spec.index, False) or not e
    for c, e in zip(coords, empty):
        text = " ".join(c.spec.piece.split())
        if e and not found[c.spec.index]:
            raise DataError(f"descriptor {c.spec.index} ({text}) found no environments in the data: check its cutoff "
                            f"and species (Z, Z1, Z2)")
        if e:
            log.warn(f"descriptor {c.spec.index} with add_species: '{text}' found no environments in the data and "
                     f"is left out of the model")
    keep = [k for k, e in enumerate(empty) if not e]
    return [coords[k] for k in keep], [choices[k] for k in keep], [thetas[k] for k in keep]


def _banner(log: Reporter, opts: TopLevelOptions, comm, blas_info: str):
    log(f"gapfit {__version__} — Gaussian Approximation Potential fitting (a gap_fit clone)")
    log(f"  processes: {comm.size}" + ("" if comm.size == 1 else f" (MPI: {comm.library})"))
    if comm.size > 1:
        from ..linalg.scalapack import scalapack_info
        log("  " + scalapack_info(comm)["text"] + " (block sizes once M is known: mpi_blocksize_rows/cols)")
    else:
        log("  solver: LAPACK QR (one process; run under mpirun for ScaLAPACK)")
    if blas_info:
        log(f"  BLAS: {blas_info}")
    log.title("Options")
    for p in TOP_LEVEL.params:
        if p.name in opts.given:
            value = opts.given[p.name]
            value = "" if value is None else " ".join(value.split())  # a value may span lines
            log(f"  {opts.given.key(p.name)} = {value}")
    log("  (other options at their gap_fit defaults)")


def _blas_info() -> str:
    """The BLAS libraries loaded, each once: NumPy's own and, under MPI, the one ScaLAPACK uses."""
    try:
        from threadpoolctl import threadpool_info
        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # pragma: no cover
        return ""
    libs = {}
    for i in info:
        path = os.path.basename(os.path.dirname(i.get("filepath") or ""))
        owner = {"numpy.libs": "NumPy's", "scipy.libs": "SciPy's"}.get(path, "system")
        name = f"{i.get('internal_api')} {i.get('version') or ''}".strip()
        threads = i.get("num_threads")
        libs.setdefault((name, owner), f"{name} ({owner}, {threads} thread{'s' if threads != 1 else ''})")
    return "; ".join(libs.values())


def _prepare_data(source, specs, v, given, names, sigmas, core=None):
    """Rank 0: index/validate the data, species order, e0 and per-frame labels.

    With a core potential and no ``e0`` given, its energy is evaluated on every frame with an
    energy here: e0 comes from core-subtracted energies, as in gap_fit.
    """
    # every frame's targets are checked here, on rank 0, before any work is distributed
    zero_e0 = np.zeros(119)
    core_energy = {}
    need_core_energy = core is not None and "e0" not in given

    def validate(frame):
        frame_rows(frame, names, sigmas, zero_e0, v["kernel_regularisation_is_per_atom"])
        if need_core_energy and frame_labels(frame.info, frame.arrays, len(frame), names, frame.where).has_energy:
            core_energy[frame.index] = core.evaluate(frame, forces=False)["energy"]

    entries, singles = source.index(validate=validate)
    species = species_in_order(entries)
    if core is not None:
        core.check_species(species, core.source)
    gaps = expand_species(specs, species)
    max_cutoff = max(g.make_descriptor().cutoff for g in gaps)
    labels = []
    for e in entries:
        arrays = dict.fromkeys(e.array_names)
        arrays.update(e.logical_arrays)
        labels.append(frame_labels(e.info, arrays, e.n_atoms, names, f"frame {e.index + 1} (line {e.line}) of "
                                   f"{os.path.basename(source.name)}"))
    if not any(l.has_energy for l in labels):
        keys = sorted({k for e in entries for k in e.info})
        hint = [k for k in keys if "energ" in k.lower()]
        raise DataError(f"no frame has the energy key '{names.energy}' (energy_parameter_name)"
                        + (f"; the data has {', '.join(hint)}" if hint else ""))
    e0, how, e0_warnings = compute_e0(v, given, entries, singles, species, names, max_cutoff, neighbour_list,
                                      core_energy)
    option = {"energy": "energy_parameter_name", "force": "force_parameter_name", "virial": "virial_parameter_name"}
    warnings = unused_target_warnings(entries, names, lambda kind: (given.key(option[kind]), option[kind] in given),
                                      v["parameter_name_prefix"])
    # the entries are broadcast to every rank, which only needs where each frame is
    for e in entries:
        e.info, e.numbers, e.logical_arrays = {}, e.numbers[:0], {}
    return entries, species, e0, how, labels, e0_warnings + warnings


def _targets_table(log, names, labels, sigmas, v):
    log.title("Targets found")
    log(f"  keys: energy '{names.energy}', forces '{names.force}', virial '{names.virial}' "
        f"(or stress '{names.stress}'), config_type '{names.config_type}'")
    groups: Dict[str, List[int]] = {}
    for l in labels:
        g = groups.setdefault(l.config_type, [0, 0, 0, 0, 0])
        g[0] += 1
        g[1] += int(l.has_energy)
        g[2] += 3 * l.n_force_atoms * int(l.has_forces)
        g[3] += int(l.has_virial)
        g[4] += int(l.n_rows == 0)
    rows = []
    for name, g in groups.items():
        s = sigmas(name)
        rows.append([name, g[0], g[1], g[2], g[3], g[4], " ".join(f"{x:g}" for x in s[:3])])
    tot = np.sum([g for g in groups.values()], axis=0)
    rows.append(["total", *tot.tolist(), ""])
    log.table(["config_type", "frames", "energies", "force comps", "virials", "no labels", "sigma E F V"], rows)
    unlabelled = int(tot[4])
    if unlabelled:
        log(f"  note: {unlabelled} frame(s) carry no label: they only provide sparse-point candidates")
    log(f"  sigma_per_atom={'T' if v['kernel_regularisation_is_per_atom'] else 'F'}: energy and virial sigmas "
        + ("are scaled by sqrt(N_atoms)" if v["kernel_regularisation_is_per_atom"] else "are absolute"))


def _random_seed(comm, opts, run):
    """The seed of the sparse points' random choices (the same on every rank), and the command line the
    model records: a drawn seed (rnd_seed not positive) is appended to it as ``rnd_seed=``, so that the
    model's own command line fits it again.  A resumed checkpoint keeps its first run's seed."""
    seed = opts.values["rnd_seed"]
    if run is not None and run.resuming and "rnd_seed" in run.common:
        seed = int(run.common["rnd_seed"])
    seed = rank0_call(comm, choose_seed, seed)
    drawn = opts.values["rnd_seed"] <= 0
    return seed, (f"{opts.option_string} rnd_seed={seed}" if drawn else opts.option_string)


def _model(label, e0, coords, alphas, opts, command_line, xyz_lines, fitted, core_text=None):
    cms = []
    for c, alpha in zip(coords, alphas):
        k = c.kernel
        cms.append(CoordinateModel(
            descriptor=c.spec.piece, covariance_type=k.covariance_type, delta=c.spec.gp["energy_scale"],
            f0=c.spec.gp["f0"], sparse_x=k.sparse_x, alpha=np.asarray(alpha), sparse_cutoff=c.sparse_cutoff,
            theta=getattr(k, "theta", None), zeta=getattr(k, "zeta", None),
            permutations=c.descriptor.permutations if k.covariance_type in (1, 4) else None))
    core_args = opts.values["baseline_ip_args"] if core_text is not None else ""
    return GapModel(label=label, e0=e0, coordinates=cms, fitted=fitted, command_line=command_line,
                    xyz_lines=xyz_lines, core_ip_args=core_args, core_xml=core_text)


def _write_r(r, gp_file, label):
    from ..model.gap_xml import array_file_bytes
    from ..runtime.files import write_files_atomically
    path = f"{gp_file}.R.{label}"
    write_files_atomically({path: array_file_bytes(np.triu(r).reshape(-1, order="F"))})
    return [path]


def _write_json(path, data):
    import json
    from ..runtime.files import write_files_atomically
    write_files_atomically({path: (json.dumps(data, indent=1, default=float) + "\n").encode()})


def _report_files(log, files):
    log.title("Output")
    for f in files:
        try:
            size = os.path.getsize(f)
        except OSError:
            size = 0
        log(f"  {f} ({human_bytes(size)})")
