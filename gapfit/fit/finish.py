"""The end of a fit: the model, the files written (atomically, by rank 0), the error reports on the
training data and on test_file, the per-rank table and report_file; and the end of a
``sparsify_only_no_fit=T`` run (the sparse points, and the second run's options)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..config.fit_config import FitConfig
from ..kernels.functions import THETA_KERNELS
from ..model.gap_xml import CoordinateModel, GapModel, array_file_bytes, write_model
from ..model.refit import RefitProblem
from ..runtime.files import write_files_atomically
from ..runtime.parallel import rank0_call, rank0_only
from ..runtime.report import Reporter, human_bytes
from ..version import __version__
from .preflight import FitSetup
from .solve_phase import FitSolution
from .sparse_phase import SparsePoints
from .training_data import TrainingData
from .two_step import prepare_second_run


@dataclass
class FitResult:
    """What a fit produced (also available as attributes of :class:`gapfit.GapFit`)."""

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


def finish_fit(config: FitConfig, setup: FitSetup, data: TrainingData, sparse: SparsePoints, fitted: FitSolution,
               comm, log: Reporter, write: bool = True, extends: Optional[dict] = None,
               keep_kernel_rows: bool = False) -> FitResult:
    """Collective: write the model, report its errors, return the result."""
    model = gap_model(config, setup, sparse, fitted.alphas, fitted.e0, _xyz_lines(config, data, comm), fitted=True)
    out, solution = config.outputs, fitted.solution
    files: List[str] = []
    if write:
        with log.phase("Writing the model"):
            files = rank0_call(comm, write_model, model, out.gp_file, out.separate_sparse)
            if out.export_covariance and solution.r is not None:
                files += rank0_call(comm, _write_r, solution.r, out.gp_file, setup.label)
    report_files(log, files)
    errors = error_reports(config, data, model, comm, log, "the new frames" if extends is not None else
                           "the training data")
    stats = fitted.stats
    log.rank_table({**solution.table, "gemm GFLOP": stats["gemm_flops"] / 1e9,
                    "descriptor s": stats["descriptor_seconds"], "kernel rows s": stats["kernel_seconds"]})
    if out.report_file:
        report = log.json_report()
        report.update(version=__version__, rnd_seed=sparse.seed, n_sparse=fitted.ctx.n_sparse,
                      target_rows=int(data.frame_rows.sum()), files=files,
                      coordinates=[{"descriptor": " ".join(c.spec.piece.split()), "n_sparse": c.n_sparse}
                                   for c in sparse.coords], **solution.report)
        if errors:
            report["errors"] = errors
        rank0_call(comm, _write_json, out.report_file, report)
    offsets = fitted.ctx.offsets
    return FitResult(model=model, alpha=list(fitted.alphas), sparse_x=[c.kernel.sparse_x for c in sparse.coords],
                     sparse_cutoff=[c.sparse_cutoff for c in sparse.coords],
                     sparse_index=[c.sparse_index for c in sparse.coords], e0=fitted.e0,
                     timings=log.timing_summary(), files=files, errors=errors,
                     log_likelihood=solution.log_likelihood, r=solution.r_factor,
                     refit=_refit_problem(fitted.ctx) if keep_kernel_rows else None,
                     e0_offsets=offsets, e0_base=fitted.e0_base if offsets is not None else None)


def finish_sparsify_only(config: FitConfig, setup: FitSetup, data: TrainingData, sparse: SparsePoints, comm,
                         log: Reporter, write: bool = True) -> FitResult:
    """Collective: the sparse points written (α zero), and the options of the fit that uses them."""
    alphas = [np.zeros(c.n_sparse) for c in sparse.coords]
    model = gap_model(config, setup, sparse, alphas, sparse.e0, _xyz_lines(config, data, comm), fitted=False)
    gp_file = config.outputs.gp_file
    files = rank0_call(comm, write_model, model, gp_file, config.outputs.separate_sparse) if write else []
    if write:
        extra, options_path = rank0_call(comm, prepare_second_run, gp_file, None, os.getcwd())
        files += extra
        log(f"sparsify_only_no_fit=T: sparse points written; fit with them (serially or under MPI) with\n"
            f"    gapfit config_file={os.path.relpath(options_path)}")
    report_files(log, files)
    log.rank_table()
    return FitResult(model=model, alpha=alphas, sparse_x=[c.kernel.sparse_x for c in sparse.coords],
                     sparse_cutoff=[c.sparse_cutoff for c in sparse.coords],
                     sparse_index=[c.sparse_index for c in sparse.coords], e0=sparse.e0,
                     timings=log.timing_summary(), files=files)


def gap_model(config: FitConfig, setup: FitSetup, sparse: SparsePoints, alphas: Sequence[np.ndarray],
              e0: np.ndarray, xyz_lines, fitted: bool) -> GapModel:
    """The GAP XML's contents."""
    cms = []
    for c, alpha in zip(sparse.coords, alphas):
        k = c.kernel
        cms.append(CoordinateModel(
            descriptor=c.spec.piece, covariance_type=k.covariance_type, delta=c.spec.gp.delta,
            f0=c.spec.gp.f0, sparse_x=k.sparse_x, alpha=np.asarray(alpha), sparse_cutoff=c.sparse_cutoff,
            theta=getattr(k, "theta", None), zeta=getattr(k, "zeta", None),
            permutations=c.descriptor.permutations if k.covariance_type in THETA_KERNELS else None))
    core = config.targets.core
    return GapModel(label=setup.label, e0=e0, coordinates=cms, fitted=fitted, command_line=sparse.command_line,
                    xyz_lines=xyz_lines, core_ip_args=core.ip_args if core is not None else "",
                    core_xml=setup.core_text)


def error_reports(config: FitConfig, data: TrainingData, model: GapModel, comm, log: Reporter,
                  what: str) -> Dict[str, dict]:
    """The fitted model's errors per config_type on this run's frames (``what``: the training data, or an
    extension's new frames) and on each test_file."""
    out, names = config.outputs, config.targets.names
    if not out.training_errors and not out.test_files:
        return {}
    from ..model.calculator import GapPotential  # lazy: ASE's calculators only when errors are reported
    from ..model.scores import file_errors, report_errors, sample_frames
    potential = GapPotential(model)
    errors: Dict[str, dict] = {}
    if out.training_errors:
        with log.phase(f"Errors on {what}"):
            chosen = sample_frames([lab.config_type for lab in data.labels], [e.n_atoms for e in data.entries],
                                   data.my_frames, out.training_errors_atoms)
            if chosen.note:
                log(f"Errors on {what}: {chosen.note}")
            errors["training"] = report_errors(comm, log, potential, data.source, data.entries, chosen.frames,
                                               names, what, totals=chosen.totals)
    for path in out.test_files:
        with log.phase(f"Errors on test_file '{_short(path)}'"):  # the timing table's row: the file's name
            errors.setdefault("test", {})[path] = file_errors(comm, log, potential, path, names, "test_file",
                                                              f"test_file '{path}'")
    return errors


def _short(path: str, width: int = 32) -> str:
    """A file's name, cut to ``width`` characters (…) for phase names and table rows."""
    name = os.path.basename(path) or path
    return name if len(name) <= width else name[:width - 1] + "…"


def report_files(log: Reporter, files: Sequence[str]) -> None:
    log.title("Output")
    for f in files:
        try:
            size = os.path.getsize(f)
        except OSError:
            size = 0
        log(f"  {f} ({human_bytes(size)})")


def _xyz_lines(config: FitConfig, data: TrainingData, comm):
    """The training data's text for the XML (do_copy_at_file=T; rank 0 writes the XML: the copy stays there)."""
    return rank0_only(comm, data.source.text_lines) if config.outputs.copy_atoms_file else None


def _refit_problem(ctx) -> RefitProblem:
    """The fit's problem for refits: its context, and the rows its cache kept."""
    return RefitProblem(replace(ctx, row_cache=None), ctx.row_cache)


def _write_r(r, gp_file, label):
    path = f"{gp_file}.R.{label}"
    write_files_atomically({path: array_file_bytes(np.triu(r).reshape(-1, order="F"))})
    return [path]


def _write_json(path, data):
    write_files_atomically({path: (json.dumps(data, indent=1, default=float) + "\n").encode()})
