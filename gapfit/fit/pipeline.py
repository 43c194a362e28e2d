"""A fit, as every rank runs it: the phases in order (:func:`run_fit`); :mod:`gapfit.api` is the user's API.

The fit follows gap_fit and the paper (Klawohn et al., J. Chem. Phys. 159, 174108).  Each phase
takes and returns frozen values:

1. preflight (:mod:`.preflight`): every input readable, every output writable, nothing clobbered;
   the core potential read; the banner (:mod:`.banner`).  The options were checked before, once,
   into a :class:`gapfit.config.fit_config.FitConfig`;
2. the data (:mod:`.training_data`): rank 0 indexes and validates the frames, species, e0 and
   targets; the descriptors are expanded over the species; frames go to ranks by the greedy balance;
3. ``dryrun=T`` stops here with the memory estimate (:mod:`.dryrun`);
4. a checkpoint to resume from, or a fit to extend (:mod:`.sparse_phase`);
5. the sparse points (:mod:`gapfit.sparse.candidates`: candidates on the owning ranks, gathered
   to rank 0 in data order, chosen there and broadcast), and the coordinates' kernels;
6. ``sparsify_only_no_fit=T`` stops here, with the sparse points written (:mod:`.finish`);
7. the solve (:mod:`.solve_phase`, :mod:`gapfit.solve.linear_system`): each rank's K_NM rows from
   the producer into the dense A or the streaming factor, QR by LAPACK, ScaLAPACK or the fold;
8. the end (:mod:`.finish`): rank 0 writes the GAP XML (atomically), error reports, report_file.
"""

from __future__ import annotations

from typing import Optional, Tuple

from ..config.extension import extension_options, extension_path
from ..config.fit_config import FitConfig, build_config
from ..errors import ConfigError
from ..options.top_level import TopLevelOptions
from ..runtime.heap import keep_freed_blocks
from ..runtime.parallel import SerialComm
from ..runtime.report import Reporter
from ..solve.checkpoint import StopRequest, read_base_manifest
from .banner import banner
from .dryrun import dry_run
from .finish import FitResult, finish_fit, finish_sparsify_only
from .preflight import preflight
from .solve_phase import solve_phase
from .sparse_phase import choose_sparse, open_checkpoint
from .training_data import read_data

__all__ = ["FitResult", "configure", "run_fit"]


def configure(opts: TopLevelOptions, comm) -> Tuple[FitConfig, Optional[dict]]:
    """The FitConfig of parsed options (collective); an extension's are over the base fit's options, whose
    checkpoint manifest comes back too (None for an ordinary fit)."""
    path = extension_path(opts)
    if not path:
        return build_config(opts), None
    manifest = read_base_manifest(path, comm)
    return build_config(extension_options(opts, manifest)), manifest


def run_fit(config: FitConfig, source, comm=None, stream=None, quiet=False, write=True,
            extends: Optional[dict] = None, keep_kernel_rows: bool = False) -> FitResult:
    """Run the whole fit (every rank calls this); returns the result on every rank.

    With ``write=False`` no file is written (the model is returned in memory).  ``extends``: the
    manifest of a finished fit's checkpoint whose factor the frames of ``source`` extend (the
    options then come from :func:`gapfit.config.extension.extension_options`).  With a
    ``checkpoint_file``, SIGTERM and SIGUSR1 are caught for the whole fit (a checkpoint, then exit).
    """
    if keep_kernel_rows and (config.checkpoint.file or extends is not None):
        raise ConfigError("keep_kernel_rows needs all the fit's rows in one run: leave out checkpoint_file and "
                          "extend_checkpoint")
    comm = comm if comm is not None else SerialComm()
    with StopRequest(active=bool(config.checkpoint.file)) as stop:
        keep_freed_blocks()  # the chunked phases reuse their large temporaries (gapfit.runtime.heap)
        log = Reporter(comm, stream=stream, quiet=quiet, print_all=config.run.print_all,
                       progress_interval=config.run.progress_interval)
        setup = preflight(config, comm, write)
        banner(log, config, comm, setup)
        data = read_data(config, setup, source, comm, log, extends)
        if config.run.dryrun:
            return dry_run(config, setup, data, comm, log)
        run = open_checkpoint(config, setup, data, comm, log, stop, extends)
        sparse = choose_sparse(config, data, run, comm, log)
        if config.sparse.only:
            return finish_sparsify_only(config, setup, data, sparse, comm, log, write)
        fitted = solve_phase(config, setup, data, sparse, run, comm, log, keep_kernel_rows, extends)
        return finish_fit(config, setup, data, sparse, fitted, comm, log, write, extends, keep_kernel_rows)
