"""The head of a fit's log: the version, the processes and solver, the BLAS, and the options given."""

from __future__ import annotations

import os

from ase.data import chemical_symbols

from ..config.fit_config import FitConfig
from ..linalg.scalapack import scalapack_info
from ..options.top_level import TOP_LEVEL
from ..runtime.report import Reporter
from ..version import __version__
from .preflight import FitSetup


def banner(log: Reporter, config: FitConfig, comm, setup: FitSetup) -> None:
    log(f"gapfit {__version__} — Gaussian Approximation Potential fitting (a gap_fit clone)")
    log(f"  processes: {comm.size}" + ("" if comm.size == 1 else f" (MPI: {comm.library})"))
    path = config.solver.path
    if path == "streaming":
        log("  solver: streaming (each rank folds its rows into an (M+1)² triangular factor; "
            + ("the factors are combined by a tree of folds)" if comm.size > 1 else "LAPACK dtpqrt)"))
    elif comm.size > 1:
        log("  " + scalapack_info(comm)["text"] + " (block sizes once M is known: mpi_blocksize_rows/cols)"
            + ("" if path == "dense" else "; linear_solver=auto may choose the streaming factor once M is known"))
    else:
        log("  solver: LAPACK QR (one process; run under mpirun for ScaLAPACK)"
            + ("" if path == "dense" else "; linear_solver=auto may choose the streaming factor once M is known"))
    blas = blas_info()
    if blas:
        log(f"  BLAS: {blas}")
    log.title("Options")
    given = config.given
    for p in TOP_LEVEL.params:
        if p.name in given:
            value = given[p.name]
            value = "" if value is None else " ".join(value.split())  # a value may span lines
            log(f"  {given.key(p.name)} = {value}")
    log("  (other options at their gap_fit defaults)")
    log(f"Found {len(config.gaps)} GAP descriptor(s) on the command line")
    for spec in config.gaps:
        for text in spec.warnings:
            log.warn(text)
    core = setup.core
    if core is not None:
        log(f"Core potential: IP {core.ip} from {core.source} (elements "
            f"{' '.join(chemical_symbols[z] for z in core.species)}, cutoff {core.cutoff:g} Å); its energies, "
            f"forces and virials are subtracted from the targets")


def blas_info() -> str:
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
