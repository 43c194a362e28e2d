"""The Python API: ``GapFit(**gap_fit_options).fit(frames)``; the CLI is a thin layer over it.

The fit follows gap_fit and the paper (Klawohn et al., J. Chem. Phys. 159, 174108):

1. parse the options and descriptors; rank 0 indexes and validates the data;
2. species expansion (``add_species``), e0, targets and σ;
3. frames are assigned to ranks by the greedy balance; each rank parses its own;
4. sparse points: candidates are computed on the owning ranks, gathered to rank
   0 in data order, selected there and broadcast;
5. each rank builds its rows of A = [Σ^-1/2 K_NM ; U] and b = [Σ^-1/2 y ; 0] chunk
   by chunk (no communication); K_MM = UᵀU is factorised on rank 0 and U's rows
   are scattered;
6. min‖Aα − b‖ by Householder QR: LAPACK on one process, ScaLAPACK on P×1;
7. rank 0 writes the GAP XML (atomically).

Example
-------
>>> from gapfit import GapFit
>>> fit = GapFit(gap="distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0 theta_uniform=1.0 "
...                  "n_sparse=20 sparse_method=uniform",
...              default_sigma=[0.01, 0.1, 0.05, 0.0], e0_method="average", gp_file="gp.xml")
>>> fit.fit("train.xyz")            # or a list of ase.Atoms
>>> fit.alpha_[0][:3]
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from . import __version__
from .covariance import DEFAULT_BLOCK_BYTES, Coordinate, k_mm, k_nm_rows
from .data import (SigmaTable, TargetNames, assign_frames, compute_e0, distribute, frame_labels, frame_rows,
                   species_in_order, unused_target_warnings)
from .errors import ConfigError, DataError, NumericalError
from .extxyz import MemorySource, XyzFileSource
from .gap_xml import CoordinateModel, GapModel, check_writable, make_label, write_model
from .heap import keep_freed_blocks, release_freed_memory
from .kernels import make_kernel
from .neighbours import neighbour_list
from .options import (TOP_LEVEL, TopLevelOptions, expand_species, parse_gap_piece, parse_top_level,
                      quote_value, split_fields)
from .outputs import input_files, output_files, refuse_clobbering
from .parallel import SerialComm, rank0_call, rank0_only
from .report import Reporter, human_bytes, peak_rss_bytes
from .sparsify import SparseChoice, choose_sparse_points, make_rng, parse_config_type_n_sparse

# Bytes of descriptor gradients accumulated before a chunk's K rows are built.
CHUNK_BYTES = 16 * 1024 ** 2
CANDIDATE_METHODS = ("random", "uniform", "none", "index_file", "cur_points", "cur_covariance", "pivot",
                     "kmeans", "fuzzy", "cluster", "covariance")


def options_to_string(options: Dict[str, Any]) -> str:
    """gap_fit's key=value string from Python values (lists → {a b}, bools → T/F)."""
    parts = []
    for key, value in options.items():
        if value is None:
            continue
        if key == "gap" and isinstance(value, (list, tuple)):
            value = "{" + " : ".join(str(v).strip() for v in value) + "}"
        elif isinstance(value, bool):
            value = "T" if value else "F"
        elif isinstance(value, (list, tuple, np.ndarray)):
            value = "{" + " ".join(repr(float(v)) if isinstance(v, float) else str(v) for v in value) + "}"
        elif isinstance(value, dict):  # e0={"Si": -158.5} or config_type_sigma
            items = []
            for k, v in value.items():
                items.append(str(k))
                if isinstance(v, (list, tuple)):
                    items.extend(str(x) for x in v)
                else:
                    items.append(str(v))
            value = "{" + ":".join(items) + "}"
        else:
            value = quote_value(str(value))
        parts.append(f"{key}={value}")
    return " ".join(parts)


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


class GapFit:
    """Fit a GAP with gap_fit's options.

    Parameters
    ----------
    options : str, list of str or dict, optional
        gap_fit options as one string (``"at_file=train.xyz gap={...} ..."``), as
        argv words, or as a dict; keyword arguments are added (and win).
        Values may be Python objects: lists become ``{a b c}``, booleans T/F.
    comm : communicator, optional
        A :mod:`gapfit.parallel` communicator; serial by default.
    stream : file, optional
        Where rank 0 prints progress (stdout by default).
    quiet : bool
        Print nothing.

    Attributes (after :meth:`fit`)
    --------------------------------
    model_ : GapModel, alpha_, sparse_x_, sparse_cutoff_, sparse_index_, e0_,
    timings_, files_ (paths written).
    """

    def __init__(self, options=None, *, comm=None, stream=None, quiet: bool = False, **keys):
        self.comm = comm if comm is not None else SerialComm()
        self.stream = stream
        self.quiet = quiet
        if options is None:
            text = ""
        elif isinstance(options, str):
            text = options
        elif isinstance(options, dict):
            text = options_to_string(options)
        else:
            from .options import join_argv
            text = join_argv(list(options))
        if keys:
            text = (text + " " + options_to_string(keys)).strip()
        self.option_text = text

    # ------------------------------------------------------------------
    def fit(self, frames=None) -> "GapFit":
        """Fit to ``frames`` (a path or a list of ase.Atoms); None means the at_file option."""
        text = self.option_text
        source = None
        if frames is not None and not isinstance(frames, (str, os.PathLike)):
            source = MemorySource(list(frames))
            if "at_file=" not in text and "atoms_filename=" not in text:
                text += " at_file=<in-memory>"
        elif frames is not None:
            text += f" at_file={os.fspath(frames)}"
        opts = parse_top_level(option_string=text)
        if source is None:
            source = XyzFileSource(opts["at_file"])
        # unlike the CLI, the API writes files only when gp_file is given
        result = run_fit(opts, source, comm=self.comm, stream=self.stream, quiet=self.quiet,
                         write=opts.has("gp_file"))
        self.result_ = result
        self.model_ = result.model
        self.alpha_ = result.alpha
        self.sparse_x_ = result.sparse_x
        self.sparse_cutoff_ = result.sparse_cutoff
        self.sparse_index_ = result.sparse_index
        self.e0_ = result.e0
        self.timings_ = result.timings
        self.files_ = result.files
        return self

    def write_xml(self, path: str, separate_sparse: bool = True) -> List[str]:
        """Write the fitted model to ``path`` (and its sparseX files) atomically."""
        return write_model(self.model_, path, separate_sparse)

    def calculator(self):
        """An ASE calculator for the fitted model (no file needed)."""
        from .calculator import GapCalculator
        return GapCalculator(model=self.model_)


def fit(frames=None, **options) -> GapFit:
    """Shortcut: ``gapfit.fit("train.xyz", gap=..., default_sigma=[...])``."""
    return GapFit(**options).fit(frames)


# ----------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------

def _banner(log: Reporter, opts: TopLevelOptions, comm, blas_info: str):
    log(f"gapfit {__version__} — Gaussian Approximation Potential fitting (a gap_fit clone)")
    log(f"  processes: {comm.size}" + ("" if comm.size == 1 else f" (MPI: {comm.library})"))
    if comm.size > 1:
        from .solvers.scalapack import scalapack_info
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


def run_fit(opts: TopLevelOptions, source, comm=None, stream=None, quiet=False, write=True) -> FitResult:
    """Run the whole fit (every rank calls this); returns the result on every rank.

    With ``write=False`` no file is written (the model is returned in memory).
    """
    comm = comm if comm is not None else SerialComm()
    keep_freed_blocks()  # the chunked phases reuse their large temporaries (gapfit.heap)
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
    label = rank0_call(comm, make_label)
    if not v["dryrun"] and write:
        outputs, patterns = output_files(opts, specs, label, comm.size)
        refuse_clobbering(input_files(opts, specs), outputs, patterns)
        rank0_call(comm, check_writable, gp_file, opts.key("gap_file"))
    _banner(log, opts, comm, _blas_info())
    log(f"Found {len(specs)} GAP descriptor(s) on the command line")

    # -- data: rank 0 indexes and validates, and works out species and e0 --------------
    with log.phase("Reading and checking the data"):
        prep = rank0_call(comm, _prepare_data, source, specs, v, opts.given, names, sigmas)
    entries, species, e0, e0_how, labels, warnings = prep
    for text in warnings:
        log.warn(text)
    gaps = expand_species(specs, species)
    coords = [Coordinate(spec=g, descriptor=g.make_descriptor()) for g in gaps]
    max_cutoff = max(c.descriptor.cutoff for c in coords)
    from ase.data import chemical_symbols
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
        _memory_estimate(log, comm, source, entries, my_frames, coords, frame_rows_count, owner, max_cutoff)
        log("dryrun=T: stopping before the fit")
        return FitResult(model=None, alpha=[], sparse_x=[], sparse_cutoff=[], sparse_index=[], e0=e0)

    rng, seed = make_rng(v["rnd_seed"])
    log(f"Random seed = {seed}")

    # -- sparse points -----------------------------------------------------------------
    with log.phase("Sparse points"):
        choices, thetas = _sparse_points(comm, log, source, entries, labels, my_frames, coords, config_type_names,
                                         max_cutoff, rng, v)
    column = 0
    for c, choice, theta in zip(coords, choices, thetas):
        gp = c.spec.gp
        c.kernel = make_kernel(gp["covariance_type"], gp["energy_scale"], choice.x, theta=theta,
                               zeta=gp["soap_exponent"], f0=gp["f0"])
        c.sparse_cutoff = np.asarray(choice.cutoff, dtype=float)
        c.column = column
        column += c.n_sparse
    n_sparse = column
    log(f"Sparse points: {', '.join(str(c.n_sparse) for c in coords)} (total M = {n_sparse})")
    release_freed_memory()  # the candidates were many small arrays: hand their pages back before A

    xyz_lines = None
    if v["do_copy_atoms_file"]:  # only rank 0 writes the XML: the copy stays there
        xyz_lines = rank0_only(comm, source.text_lines)

    if sparsify_only:
        model = _model(label, e0, coords, [np.zeros(c.n_sparse) for c in coords], opts, xyz_lines, fitted=False)
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
    dist = distribute(frame_rows_count, comm.size, n_sparse, owner=owner)
    if comm.size == 1:
        n_local = int(frame_rows_count.sum()) + n_sparse
        mb = nb = 0
    else:
        mb, nb, n_local = block_sizes(dist.unified_rows, n_sparse, v["mpi_blocksize_rows"], v["mpi_blocksize_cols"])
    n_data_local = int(dist.data_rows[comm.rank])
    if comm.size > 1:
        from .solvers.scalapack import scalapack_info
        log(scalapack_info(comm, mb, nb)["text"])
        log(f"  rows per rank: {', '.join(str(int(r)) for r in dist.data_rows)} data + "
            f"{', '.join(str(int(u)) for u in dist.u_count)} of U, padded to {n_local}")
    log(f"Linear system: {int(frame_rows_count.sum())} target rows + {n_sparse} rows of U, {n_sparse} columns; "
        f"A needs {human_bytes(8.0 * n_local * n_sparse)} per rank")
    try:
        a_local = np.zeros((n_local, n_sparse), order="F")
    except MemoryError:
        raise NumericalError(f"cannot allocate A ({n_local}x{n_sparse}, {human_bytes(8.0 * n_local * n_sparse)}): "
                             f"use more MPI ranks or fewer sparse points") from None
    b_local = np.zeros(n_local)

    stats: Dict[str, float] = {}
    with log.phase("Covariance K_NM (descriptors and kernel rows)"):
        filled = _fill_rows(a_local, b_local, source, entries, my_frames, coords, names, sigmas, e0, v, max_cutoff,
                            log, stats, n_data_local)
    log(f"   of which descriptors {stats['descriptor_seconds']:.2f} s, kernel rows {stats['kernel_seconds']:.2f} s "
        f"({stats['gemm_flops'] / 1e9:.1f} GFLOP in matrix products, "
        f"{stats['gemm_flops'] / 1e9 / max(stats['kernel_seconds'], 1e-9):.1f} GFLOP/s) on rank {comm.rank}")
    if filled != n_data_local:
        raise DataError(f"internal inconsistency: {filled} rows built, {n_data_local} expected")
    if v["linear_system_dump_file"]:
        _dump(v["linear_system_dump_file"], comm, a_local[:filled], b_local[:filled])

    with log.phase("K_MM and its Cholesky factor"):
        u = rank0_only(comm, _cholesky, coords, v["sparse_jitter"])
        if comm.size == 1:
            a_local[filled:filled + n_sparse] = u
        else:
            rows = comm.scatter_rows(u if comm.rank == 0 else None, dist.u_count, root=0)
            a_local[filled:filled + rows.shape[0]] = rows
        del u

    with log.phase("Solving by QR" + (" (ScaLAPACK)" if comm.size > 1 else " (LAPACK)")):
        with log.heartbeat("QR", rank0_call(comm, _qr_estimate, int(frame_rows_count.sum()) + n_sparse, n_sparse,
                                            comm.size)):
            alpha, r = _solve(comm, log, a_local, b_local, n_sparse, mb, nb, v)
    del a_local

    alphas = [alpha[c.column:c.column + c.n_sparse] for c in coords]
    model = _model(label, e0, coords, alphas, opts, xyz_lines, fitted=True)
    files = []
    if write:
        with log.phase("Writing the model"):
            files = rank0_call(comm, write_model, model, gp_file, v["sparse_separate_file"])
            if v["export_covariance"] and r is not None:
                files += rank0_call(comm, _write_r, r, gp_file, label)
    _report_files(log, files)
    log.rank_table({"target rows": float(n_data_local), "local rows of A": float(n_local),
                    "A bytes": 8.0 * n_local * n_sparse, "gemm GFLOP": stats["gemm_flops"] / 1e9,
                    "descriptor s": stats["descriptor_seconds"], "kernel rows s": stats["kernel_seconds"]})
    if v["report_file"]:
        report = log.json_report()
        report.update(version=__version__, n_sparse=n_sparse, target_rows=int(frame_rows_count.sum()),
                      block_sizes={"mb": mb, "nb": nb, "local_rows": n_local}, files=files,
                      coordinates=[{"descriptor": " ".join(c.spec.piece.split()), "n_sparse": c.n_sparse} for c in coords])
        rank0_call(comm, _write_json, v["report_file"], report)
    return FitResult(model=model, alpha=alphas, sparse_x=[c.kernel.sparse_x for c in coords],
                     sparse_cutoff=[c.sparse_cutoff for c in coords], sparse_index=[ch.index for ch in choices],
                     e0=e0, timings=log.timing_summary(), files=files)


def block_sizes(unified_rows: int, n_sparse: int, mb: int, nb: int):
    """gap_fit's ScaLAPACK blocks: mb (0 → all local rows), nb (0 → M); local rows padded to a multiple of mb."""
    mb = mb or max(unified_rows, 1)
    nb = nb or n_sparse
    n_local = -(-max(unified_rows, 1) // mb) * mb
    return mb, nb, n_local


def _prepare_data(source, specs, v, given, names, sigmas):
    """Rank 0: index/validate the data, species order, e0 and per-frame labels."""
    # every frame's targets are checked here, on rank 0, before any work is distributed
    zero_e0 = np.zeros(119)
    entries, singles = source.index(
        validate=lambda frame: frame_rows(frame, names, sigmas, zero_e0, v["kernel_regularisation_is_per_atom"]))
    species = species_in_order(entries)
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
    e0, how = compute_e0(v, given, entries, singles, species, names, max_cutoff, neighbour_list)
    option = {"energy": "energy_parameter_name", "force": "force_parameter_name", "virial": "virial_parameter_name"}
    warnings = unused_target_warnings(entries, names, lambda kind: (given.key(option[kind]), option[kind] in given),
                                      v["parameter_name_prefix"])
    # the entries are broadcast to every rank, which only needs where each frame is
    for e in entries:
        e.info, e.numbers, e.logical_arrays = {}, e.numbers[:0], {}
    return entries, species, e0, how, labels, warnings


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


def _config_type_index(label_ct: str, names: List[str]) -> int:
    if label_ct in names:
        return names.index(label_ct)
    return names.index("default")


def _sparse_points(comm, log, source, entries, labels, my_frames, coords, config_type_names, max_cutoff, rng, v):
    """Candidates on the owning ranks, gathered to rank 0 in data order; selection there; broadcast."""
    need = [c.spec.gp["sparse_method"] in CANDIDATE_METHODS or "lengthscale_factor" in c.spec.gp_given
            for c in coords]
    local = [([], [], [], []) for _ in coords]  # x, cutoff, config type, frame ids/counts
    if any(need):
        share = " (rank 0's share)" if comm.size > 1 else ""
        progress = log.progress("candidate descriptors", max(len(my_frames), 1), unit="frames", note=share)
        for done, frame in enumerate(source.read([entries[f] for f in my_frames])):
            progress.update(done)
            nl = neighbour_list(frame.positions, frame.cell, frame.pbc, max_cutoff)
            ct = _config_type_index(labels[frame.index].config_type, config_type_names)
            for k, c in enumerate(coords):
                if not need[k]:
                    continue
                vals = c.descriptor.calc(frame, nl, grad=False)
                local[k][0].append(vals.x)
                local[k][1].append(vals.cutoff)
                local[k][2].append(np.full(vals.n_desc, ct, dtype=np.int64))
                local[k][3].append((frame.index, vals.n_desc))
        progress.close()
    choices: List[Optional[SparseChoice]] = []
    thetas = []
    for k, c in enumerate(coords):
        d = c.descriptor.dimensions
        x = cut = ct = None
        if need[k]:
            xs, cs, ts, fc = local[k]
            x_loc = np.concatenate(xs) if xs else np.zeros((0, d))
            c_loc = np.concatenate(cs) if cs else np.zeros(0)
            t_loc = np.concatenate(ts) if ts else np.zeros(0, dtype=np.int64)
            x_all = comm.gather_rows(x_loc)
            c_all = comm.gather_rows(c_loc)
            t_all = comm.gather_rows(t_loc)
            fc_all = comm.gather(fc, root=0)
            if comm.rank == 0:
                # reorder the gathered blocks by frame: global data order, as in serial
                # (gap_fit's MPI runs keep rank order instead: mpi_candidate_order=rank)
                blocks, start = [], 0
                for rank, rank_list in enumerate(fc_all):
                    for frame_id, count in rank_list:
                        key = (rank, frame_id) if v["mpi_candidate_order"] == "rank" else (frame_id,)
                        blocks.append((key, start, count))
                        start += count
                blocks.sort()
                order = np.concatenate([np.arange(s, s + n) for _, s, n in blocks]) if blocks else np.zeros(0, int)
                x, cut, ct = x_all[order], c_all[order], t_all[order]
        theta = _theta(comm, c, x)
        thetas.append(theta)
        with log.heartbeat(f"choosing the sparse points of coordinate {k + 1} ({c.spec.gp['sparse_method']})"):
            choice = rank0_call(comm, choose_sparse_points, c.spec, x, cut, ct, config_type_names, d, rng,
                                log if comm.rank == 0 else (lambda *a: None), theta=theta,
                                use_actual_gpcov=v["sparse_use_actual_gpcov"])
        if comm.rank == 0 and choice.index is not None and c.spec.gp["print_sparse_index"]:
            with open(c.spec.gp["print_sparse_index"], "a") as fh:
                fh.write(" ".join(str(i + 1) for i in choice.index) + "\n")
        if choice.x.shape[1] != d:
            raise ConfigError(f"sparse points of descriptor {c.spec.index} have {choice.x.shape[1]} dimensions, "
                              f"the descriptor has {d}")
        choices.append(choice)
        n_cand = "" if x is None else f" from {x.shape[0]} instances"
        log(f"  coordinate {k + 1}: {choice.x.shape[0]} sparse points ({c.spec.gp['sparse_method']}){n_cand}")
    return choices, thetas


def _theta(comm, coord, x_all):
    """θ for ARD_SE: uniform, from a file, or the data range times theta_fac (over all data)."""
    gp, given = coord.spec.gp, coord.spec.gp_given
    d = coord.descriptor.dimensions
    if gp["covariance_type"] != "ard_se":
        return None
    if "lengthscale_uniform" in given:
        return np.full(d, gp["lengthscale_uniform"])
    if "lengthscale_file" in given:
        path = gp["lengthscale_file"]
        try:
            with open(path) as fh:
                fields = split_fields(fh.readline(), separators=" :;\t", what=f"theta_file '{path}'")
            theta = np.array([float(f) for f in fields])
        except (OSError, ValueError):
            raise ConfigError(f"theta_file '{path}' {coord.spec.where} cannot be read as {d} numbers") from None
        if theta.size != d:
            raise ConfigError(f"theta_file '{path}' {coord.spec.where} has {theta.size} values, the descriptor has {d}")
        return theta
    fields = split_fields(gp["lengthscale_factor"], separators=" :;", what="theta_fac")
    try:
        fac = np.array([float(f) for f in fields])
    except ValueError:
        raise ConfigError(f"theta_fac {coord.spec.where} must be numbers; got {gp['lengthscale_factor']!r}") from None
    if fac.size not in (1, d):
        raise ConfigError(f"theta_fac {coord.spec.where} must have 1 or {d} values; got {fac.size}")

    def compute():
        rng_ = x_all.max(axis=0) - x_all.min(axis=0)
        theta = rng_ * fac
        theta[theta < 1e-8] = 1.0
        return theta
    # unlike gap_fit under MPI, θ comes from all the data (rank 0), not each rank's share
    return rank0_call(comm, compute)


def _fill_rows(a_local, b_local, source, entries, my_frames, coords, names, sigmas, e0, v, max_cutoff, log, stats,
               n_rows):
    """Build this rank's rows Σ^-1/2 K_NM and Σ^-1/2 y, chunk by chunk of frames."""
    n_columns = a_local.shape[1]
    if os.environ.get("GAPFIT_INJECT_FAILURE_RANK", "") == str(getattr(log, "rank", 0)):
        # test hook: a failure on one rank only (tests/test_mpi.py checks the job aborts cleanly)
        raise DataError("injected failure on this rank (GAPFIT_INJECT_FAILURE_RANK)")
    row = 0
    pending = []  # (frame rows, values per coordinate, n_atoms)
    pending_bytes = 0
    pending_rows = 0
    flushes = 0
    sigma_per_atom = v["kernel_regularisation_is_per_atom"]
    stats.update(gemm_flops=0.0, descriptor_seconds=0.0, kernel_seconds=0.0)

    def describe(frame, nl, grad, atoms=None):
        t0 = time.perf_counter()
        values = [c.descriptor.calc(frame, nl, grad=grad, atoms=atoms) for c in coords]
        stats["descriptor_seconds"] += time.perf_counter() - t0
        return values

    def kernel_rows(frames_values, rows, atom_counts):
        t0 = time.perf_counter()
        k = k_nm_rows(coords, frames_values, rows, atom_counts, n_columns, stats=stats)
        stats["kernel_seconds"] += time.perf_counter() - t0
        return k

    def write(k, y, sigma):
        nonlocal row
        n = y.size
        k /= sigma[:, None]
        a_local[row:row + n] = k  # Σ^-1/2 K_NM
        b_local[row:row + n] = y / sigma  # Σ^-1/2 y
        row += n

    def flush():
        nonlocal pending_bytes, pending_rows, flushes
        if pending:
            rows = [p[0] for p in pending]
            k = kernel_rows([p[1] for p in pending], rows, [p[2] for p in pending])
            write(k, np.concatenate([r.y for r in rows]), np.concatenate([r.sigma for r in rows]))
        pending.clear()
        pending_bytes = pending_rows = 0
        flushes += 1
        if flushes % 4 == 0:  # the chunks' temporaries fragment the heap; keep RSS ~ A + one chunk
            release_freed_memory()

    share = " (rank 0's share)" if getattr(log, "size", 1) > 1 else ""
    progress = log.progress("K_NM rows", max(n_rows, 1), note=share)
    for frame in source.read([entries[f] for f in my_frames]):
        progress.update(row + pending_rows)  # rows built, and queued in this chunk
        fr = frame_rows(frame, names, sigmas, e0, sigma_per_atom)
        grad = bool(fr.force_atoms.size) or fr.has_virial
        nl = neighbour_list(frame.positions, frame.cell, frame.pbc, max_cutoff)
        per_atom = _bytes_per_atom(coords, frame, nl, grad)
        if per_atom is not None and per_atom.sum() > CHUNK_BYTES:
            # a frame too big for one chunk: its instances in pieces (by centre atom); the K rows
            # are sums over instances, so the pieces' rows add up to the frame's
            flush()
            k = np.zeros((fr.y.size, n_columns))
            for atoms in _atom_groups(per_atom, CHUNK_BYTES):
                k += kernel_rows([describe(frame, nl, grad, atoms)], [fr], [len(frame)])
            write(k, fr.y, fr.sigma)
            continue
        values = describe(frame, nl, grad)
        pending.append((fr, values, len(frame)))
        pending_rows += fr.y.size
        pending_bytes += 8.0 * fr.y.size * n_columns  # the chunk's K rows
        if per_atom is not None:
            pending_bytes += per_atom.sum()
        else:  # descriptor values + the kernel matrices k(x, s) of their instances
            pending_bytes += sum(val.nbytes + 4 * 8 * val.n_desc * c.n_sparse for val, c in zip(values, coords))
        if pending_bytes > CHUNK_BYTES:
            flush()
    flush()
    progress.close()
    return row


def _bytes_per_atom(coords, frame, nl, grad):
    """Approximate working memory of each centre atom's instances (None if a descriptor cannot split)."""
    if not all(c.descriptor.splittable for c in coords):
        return None
    total = np.zeros(len(frame))
    for c in coords:
        rows = c.descriptor.gradient_rows(frame, nl)
        if rows is None:
            return None
        d = c.descriptor.dimensions
        per_row = (3 * d + 8) * 8 if grad else 0
        total += rows * per_row + (rows > 0) * (d + 4 * c.n_sparse) * 8
    return total


def _atom_groups(per_atom_bytes, budget):
    """Boolean masks of consecutive atoms whose bytes stay within ``budget`` (one atom at least)."""
    cumulative = np.cumsum(per_atom_bytes)
    group = np.floor_divide(cumulative - per_atom_bytes, budget).astype(np.int64)
    for g in np.unique(group):
        yield group == g


def _cholesky(coords, jitter):
    from .solvers.serial import cholesky_upper
    return cholesky_upper(k_mm(coords, jitter), jitter)


def _qr_estimate(n_rows, n_cols, n_ranks):
    """(seconds, how) the QR should take, from a small dgeqrf sample; None for a short QR."""
    from .solvers.serial import qr_flops, sampled_qr_rate
    flops = qr_flops(n_rows, n_cols)
    if flops < 2e10:  # a few seconds at most: no heartbeat will print
        return None
    rate = sampled_qr_rate(n_cols)
    per_rank = " per rank" if n_ranks > 1 else ""
    return flops / (rate * n_ranks), f"estimated: {flops:.2g} flops at {rate / 1e9:.0f} GFLOP/s{per_rank}"


def _solve(comm, log, a_local, b_local, n_sparse, mb, nb, v):
    if comm.size == 1:
        from .solvers.serial import qr_solve
        alpha, r = qr_solve(a_local, b_local)
        norm = v["condition_number_norm"].strip()
        if norm:
            from scipy.linalg import lapack
            rcond, info = lapack.dtrcon(r, norm=norm.upper(), uplo="U")
            log(f"Condition number (log10) of the triangular factor R (norm {norm.upper()}): {-np.log10(rcond):.4f}")
        return alpha, (r if v["export_covariance"] else None)
    from .solvers.scalapack import qr_solve as sl_qr_solve
    if v["condition_number_norm"].strip():
        log("warning: condition_number_norm is not computed with MPI (as in gap_fit)")
    out = sl_qr_solve(comm, a_local, b_local, n_sparse, mb, nb, return_r=v["export_covariance"])
    if v["export_covariance"]:
        return out
    return out, None


def _model(label, e0, coords, alphas, opts, xyz_lines, fitted):
    cms = []
    for c, alpha in zip(coords, alphas):
        k = c.kernel
        cms.append(CoordinateModel(
            descriptor=c.spec.piece, covariance_type=k.covariance_type, delta=c.spec.gp["energy_scale"],
            f0=c.spec.gp["f0"], sparse_x=k.sparse_x, alpha=np.asarray(alpha), sparse_cutoff=c.sparse_cutoff,
            theta=getattr(k, "theta", None), zeta=getattr(k, "zeta", None)))
    return GapModel(label=label, e0=e0, coordinates=cms, fitted=fitted, command_line=opts.option_string,
                    xyz_lines=xyz_lines)


def _write_r(r, gp_file, label):
    from .gap_xml import array_file_bytes, write_files_atomically
    path = f"{gp_file}.R.{label}"
    write_files_atomically({path: array_file_bytes(np.triu(r).reshape(-1, order="F"))})
    return [path]


def _dump(prefix, comm, k_rows, b_rows):
    np.savetxt(f"{prefix}.A.{comm.rank}", k_rows)
    np.savetxt(f"{prefix}.b.{comm.rank}", b_rows)


def _write_json(path, data):
    import json
    from .gap_xml import write_files_atomically
    write_files_atomically({path: (json.dumps(data, indent=1, default=float) + "\n").encode()})


def _report_files(log, files):
    log.title("Output")
    for f in files:
        try:
            size = os.path.getsize(f)
        except OSError:
            size = 0
        log(f"  {f} ({human_bytes(size)})")


def _memory_estimate(log, comm, source, entries, my_frames, coords, frame_rows_count, owner, max_cutoff):
    """dryrun=T: count instances and gradient rows, then estimate the peak memory per rank."""
    n_coord = len(coords)
    counts = np.zeros((n_coord, 2), dtype=np.int64)  # instances, gradient rows
    biggest_frame = 0.0
    for frame in source.read([entries[f] for f in my_frames]):
        nl = neighbour_list(frame.positions, frame.cell, frame.pbc, max_cutoff)
        frame_bytes = 0.0
        for k, c in enumerate(coords):
            rows = c.descriptor.gradient_rows(frame, nl)
            if rows is None:
                rows = np.zeros(len(frame))
            n_inst = int(np.count_nonzero(rows)) if c.descriptor.splittable else 1
            counts[k] += (n_inst, int(rows.sum()))
            frame_bytes += rows.sum() * 3 * c.descriptor.dimensions * 8
        biggest_frame = max(biggest_frame, frame_bytes)
    counts = comm.allreduce_sum(counts)
    biggest_frame = comm.allreduce_max(biggest_frame)
    if comm.rank != 0:
        return
    log.title("Memory estimate (dryrun=T)")
    m_total, cand_bytes = 0, 0.0
    rows = []
    for k, c in enumerate(coords):
        gp, d = c.spec.gp, c.descriptor.dimensions
        n_inst, n_grad = (int(v) for v in counts[k])
        m = gp["n_sparse"] if gp["n_sparse"] > 0 else n_inst
        m = min(m, n_inst) if gp["sparse_method"] not in ("file", "index_file") else m
        m_total += m
        if gp["sparse_method"] in CANDIDATE_METHODS:
            cand_bytes += 3.0 * n_inst * d * 8
        rows.append([k + 1, c.descriptor.name, d, n_inst, n_grad, m, human_bytes(3.0 * n_grad * d * 8)])
    log.table(["coordinate", "descriptor", "d", "instances", "gradient rows", "M", "all gradients"], rows)
    n_rows = int(frame_rows_count.sum())
    a_total = 8.0 * (n_rows + m_total) * m_total
    baseline = float(peak_rss_bytes())
    chunk = CHUNK_BYTES + 4.0 * DEFAULT_BLOCK_BYTES + min(biggest_frame, CHUNK_BYTES)
    root_extra = cand_bytes + 2 * 8.0 * m_total ** 2
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        available = float(info.get("MemAvailable", info.get("MemTotal", 0)))
    except OSError:  # pragma: no cover
        available = 0.0

    def per_rank(p):
        load = np.bincount(owner if p == comm.size else assign_frames(frame_rows_count, p),
                           weights=frame_rows_count, minlength=p)
        local_rows = load.max() + -(-m_total // p)
        return baseline + 8.0 * local_rows * m_total + chunk, root_extra

    gradients_all = sum(3.0 * counts[k, 1] * c.descriptor.dimensions * 8 for k, c in enumerate(coords))
    log(f"  A: {n_rows} target rows + {m_total} rows of U, {m_total} columns = {human_bytes(a_total)} in all")
    log(f"  descriptor gradients of the whole data set: {human_bytes(gradients_all)} (gapfit keeps one chunk: "
        f"about {human_bytes(chunk)} with the kernel blocks)")
    log(f"  gap_fit would hold all of them plus two copies of A: about "
        f"{human_bytes(gradients_all + 2 * a_total + 8.0 * sum(counts[:, 0]))} per process")
    table, smallest = [], None
    for p in sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, comm.size}):
        rank_bytes, extra = per_rank(p)
        total = p * rank_bytes + extra
        fits = available > 0 and total <= available
        if fits and smallest is None:
            smallest = p
        table.append([p, human_bytes(rank_bytes), human_bytes(rank_bytes + extra), human_bytes(total),
                      "yes" if fits else "no"])
    log.table(["ranks P", "per rank", "rank 0", "all ranks", f"fits here ({human_bytes(available)} free)"], table)
    if smallest is not None:
        log(f"  smallest P that fits this machine: {smallest}")
    else:
        nodes = -(-int(a_total + root_extra) // int(max(available - baseline, 1)))
        log(f"  does not fit this machine with any P: use about {nodes} node(s) like this one, one rank per core")
