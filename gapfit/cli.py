"""The ``gapfit`` command: gap_fit's command line, serial or under mpirun/srun.

Errors are one line on stderr (``gapfit: error: ...``) with exit status 2 for
bad options and 1 otherwise, and no traceback unless ``verbosity=VERBOSE`` (or
higher).  Under MPI, an error raised on one rank only is printed by that rank,
prefixed ``[rank k/P]``, and the whole job is aborted through MPI_Abort so that
nothing hangs; errors that every rank raises together are printed once by rank 0.
"""

from __future__ import annotations

import os
import sys
import traceback

from .errors import ConfigError, GapfitError
from .version import __version__

# NumPy and SciPy each load their own OpenBLAS, and each library's idle threads busy-wait for 2^28
# cycles (~0.1 s) after a call, holding the cores the other library's next call needs: the fit
# alternates them (kernel rows in NumPy, folds and factorisations in SciPy's LAPACK).  2^20 cycles
# (~0.4 ms) halves the streaming fold's and the kernel rows' wall time on 2 cores (benchmarks/
# compare_gap_fit.py inp_soap_turbo, 1/8 of the frames: fold 6.0 -> 3.4 s, kernel rows 2.6 -> 1.5 s)
# and changes no result (the threads share the work as before).  Read when OpenBLAS loads, so here,
# before anything imports NumPy; a value the user sets wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        from .config.help import help_text
        try:
            print(help_text(argv[1] if len(argv) > 1 else None))
            sys.stdout.flush()
        except ConfigError as exc:
            print(f"gapfit: error: {exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # gapfit --help | head
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if argv and argv[0] in ("-V", "--version"):
        print(f"gapfit {__version__}")
        return 0
    if not argv:
        from .config.help import USAGE
        print(USAGE, file=sys.stderr)
        print("gapfit: error: no options given (at_file, gap and default_sigma are mandatory)", file=sys.stderr)
        return 2

    from .runtime.parallel import get_comm, rank0_call, rank_prefix
    try:
        comm = get_comm()
    except Exception as exc:  # mpi4py missing or MPI init failure
        print(f"gapfit: error: cannot start MPI: {exc}", file=sys.stderr)
        return 1
    verbose = any(a.replace(" ", "").lower().startswith("verbosity=") and
                  a.split("=", 1)[1].strip().upper() in ("VERBOSE", "NERD", "ANALYSIS") for a in argv)
    try:
        from .data.extxyz import XyzFileSource
        from .fit.pipeline import configure, run_fit
        from .options.top_level import parse_top_level, read_config_file

        opts = parse_top_level(argv, read_file=lambda p: rank0_call(comm, read_config_file, p))
        config, extends = configure(opts, comm)
        verbose = verbose or config.run.verbose
        if comm.size > 1:
            from .linalg import scalapack
            scalapack.blacs_selftest(comm)
            if not any(k in os.environ for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")):
                scalapack.limit_blas_threads(comm)  # also caps the OpenBLAS that ScaLAPACK loaded
        run_fit(config, XyzFileSource(config.targets.at_file), comm=comm, extends=extends)
        sys.stdout.flush()
        return 0
    except KeyboardInterrupt:
        print(f"{rank_prefix(comm)}gapfit: interrupted", file=sys.stderr)
        _abort_if_parallel(comm, 130)
        return 130
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one line and an exit status
        return _report_failure(comm, exc, verbose)


def _report_failure(comm, exc, verbose) -> int:
    from .runtime.parallel import rank_prefix

    collective = getattr(exc, "collective", False) or isinstance(exc, ConfigError) and not getattr(exc, "local", False)
    if isinstance(exc, SystemExit):
        raise exc
    if isinstance(exc, GapfitError):
        code = exc.exit_code
        message = f"gapfit: {exc}" if code == 75 else f"gapfit: error: {exc}"  # 75: stopped with a checkpoint
    elif isinstance(exc, MemoryError):
        code = 1
        message = "gapfit: error: out of memory: use more MPI ranks (or nodes) or fewer sparse points; dryrun=T estimates"
    else:
        code = 1
        message = f"gapfit: internal error: {type(exc).__name__}: {exc}"
        if not verbose:
            message += " (rerun with verbosity=VERBOSE for the traceback)"
        collective = getattr(exc, "collective", False)
    if collective and comm.size > 1:
        if comm.rank == 0:  # one message for the whole job, so no rank prefix
            _print_error(message, exc, verbose)
        sys.stdout.flush()
        return code
    _print_error(rank_prefix(comm) + message, exc, verbose)
    _abort_if_parallel(comm, code)
    return code


def _print_error(message, exc, verbose):
    sys.stdout.flush()
    if verbose:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(message.replace("\n", " "), file=sys.stderr)
    sys.stderr.flush()


def _abort_if_parallel(comm, code):
    if comm.size > 1:
        comm.abort(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
