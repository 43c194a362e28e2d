"""The distributed layout of ScaLAPACK's QR: which global rows a rank owns, the 32-bit limits of
ScaLAPACK's integers, the documented workspace minima, and ScaLAPACK's info codes in words."""

from __future__ import annotations

import numpy as np

from .scalapack_library import ScalapackSizeError

INT32_MAX = 2**31 - 1
SINGULAR_ADVICE = ("increase sparse_jitter, and check for duplicate sparse points or a descriptor "
                    "whose values are all equal")

_ARGS = {
    "descinit": ["DESC", "M", "N", "MB", "NB", "IRSRC", "ICSRC", "ICTXT", "LLD", "INFO"],
    "pdgeqrf": ["M", "N", "A", "IA", "JA", "DESCA", "TAU", "WORK", "LWORK", "INFO"],
    "pdormqr": ["SIDE", "TRANS", "M", "N", "K", "A", "IA", "JA", "DESCA", "TAU", "C", "IC", "JC", "DESCC",
                "WORK", "LWORK", "INFO"],
    "pdtrtrs": ["UPLO", "TRANS", "DIAG", "N", "NRHS", "A", "IA", "JA", "DESCA", "B", "IB", "JB", "DESCB", "INFO"],
}
_DESC_ENTRIES = ["DTYPE", "CTXT", "M", "N", "MB", "NB", "RSRC", "CSRC", "LLD"]
# Codes whose number does not follow the -(100*i + j) rule (hard-coded in ScaLAPACK's source).
_SPECIAL = {
    ("pdtrtrs", -904): "the descriptor of R needs square blocks (DESCA MB = NB); the NB=MB re-description was not applied",
    ("pdtrtrs", -1304): "the descriptor of b needs MB equal to R's NB",
}


def translate_info(routine, info, n_cols=None):
    """A plain-English message for a ScaLAPACK ``info`` code."""
    if info == 0:
        return f"{routine}: success"
    if info > 0:
        if routine == "pdtrtrs":
            where = f" of {n_cols}" if n_cols else ""
            return (f"the QR factor R is singular: diagonal element {info}{where} is exactly zero "
                    f"(ScaLAPACK pdtrtrs info={info}); {SINGULAR_ADVICE}")
        return f"ScaLAPACK {routine} failed with info={info}"
    if (routine, info) in _SPECIAL:
        return f"ScaLAPACK {routine} rejected its arguments (info={info}): {_SPECIAL[(routine, info)]}"
    code = -info
    names = _ARGS.get(routine, [])
    if code > 100:
        arg, entry = divmod(code, 100)
        argname = names[arg - 1] if 0 < arg <= len(names) else f"#{arg}"
        entname = _DESC_ENTRIES[entry - 1] if 0 < entry <= 9 else f"#{entry}"
        what = f"entry {entry} ({entname}) of argument {arg} ({argname})"
    else:
        what = f"argument {code} ({names[code - 1]})" if 0 < code <= len(names) else f"argument {code}"
    return (f"ScaLAPACK {routine} was called with an illegal value in {what} (info={info}); "
            f"this is a bug in gapfit's call, please report it")


# --------------------------------------------------------------------------------------------
# Size checks


def workspace_estimates(n_local_rows, n_cols, nb):
    """Documented minimum LWORKs on a P×1 grid (Python ints): (pdgeqrf, pdormqr 'L' with one rhs)."""
    mp0, nq0 = int(n_local_rows), int(n_cols)
    geqrf = nb * (mp0 + nq0 + nb)
    ormqr = max((nb * (nb - 1)) // 2, (1 + mp0) * nb) + nb * nb
    return geqrf, ormqr


def check_int32_sizes(n_procs, n_local_rows, n_cols, mb, nb, lwork=None, return_r=False):
    """Raise :class:`ScalapackSizeError` if anything ScaLAPACK indexes with 32-bit ints overflows.

    Checks (Python ints, before any call): global row count P·n_local_rows, n_cols, mb, nb,
    the local leading dimension, the local element counts of A (n_local_rows·n_cols) and of
    its (n_local_rows+mb)·n_cols bound, the documented workspace sizes of pdgeqrf and
    pdormqr, any ``lwork`` values given (a dict name → value, e.g. from the queries), and
    with ``return_r`` the n_cols² elements gathered for R.
    """
    P, nl, n, mb, nb = (int(v) for v in (n_procs, n_local_rows, n_cols, mb, nb))
    geqrf, ormqr = workspace_estimates(nl, n, nb)
    more_ranks = "use more MPI ranks (fewer rows per rank)"
    smaller_nb = "use a smaller mpi_blocksize_cols (nb) or more MPI ranks"
    items = [
        ("global row count P*n_local_rows", P * nl, "use fewer rows per rank (smaller padding) — the global "
         "count itself is limited, so reduce the data or the number of sparse points"),
        ("number of columns n_cols", n, "use fewer sparse points"),
        ("local row count / leading dimension", nl, more_ranks),
        ("row block size mb", mb, "use a smaller mpi_blocksize_rows"),
        ("column block size nb", nb, smaller_nb),
        ("local elements of A (n_local_rows*n_cols)", nl * n, more_ranks),
        ("local index bound (n_local_rows+mb)*n_cols", (nl + mb) * n, more_ranks + " or a smaller mpi_blocksize_rows"),
        ("pdgeqrf workspace nb*(n_local_rows+n_cols+nb)", geqrf, smaller_nb),
        ("pdormqr workspace", ormqr, smaller_nb),
    ]
    if return_r:
        items.append(("elements of R gathered on rank 0 (n_cols^2)", n * n,
                      "use fewer sparse points or do not export the covariance"))
    for name, value in (lwork or {}).items():
        items.append((name, int(value), smaller_nb))
    bad = [(name, value, advice) for name, value, advice in items if value > INT32_MAX]
    if bad:
        name, value, advice = bad[0]
        others = f" (so do: {', '.join(f'{b[0]} = {b[1]}' for b in bad[1:])})" if len(bad) > 1 else ""
        raise ScalapackSizeError(
            f"ScaLAPACK uses 32-bit integers and the {name} = {value} exceeds 2^31-1{others} "
            f"(P={P}, n_local_rows={nl}, n_cols={n}, mb={mb}, nb={nb}): {advice}")
    bad_small = [(name, value) for name, value, _ in items if value < 0]
    if bad_small:
        raise ValueError(f"negative size: {bad_small[0][0]} = {bad_small[0][1]}")


# --------------------------------------------------------------------------------------------
# The solve


def owned_global_rows(n_local_rows, mb, rank, n_procs):
    """Global (0-based) row index of each local row of ``rank`` in the row-block-cyclic layout."""
    li = np.arange(int(n_local_rows), dtype=np.int64)
    return ((li // mb) * n_procs + rank) * mb + li % mb
