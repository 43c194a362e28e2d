"""Check gapfit.linalg.scalapack.qr_solve against numpy.linalg.lstsq (run under mpirun).

    mpirun -n P python tests/mpi_scripts/scalapack_check.py --rows 700 --cols 60 --mb 16 --nb 8

Every rank builds the same reproducible random tall problem, keeps an uneven share of its
rows (rank r gets a share proportional to r+1), pads them with zero rows to a common
multiple of mb and calls qr_solve.  Rank 0 compares with lstsq on the unpadded global
problem and prints one ``RESULT ...`` line; the exit status is non-zero on a mismatch.

``--singular K`` zeroes column K (1-based) so that R(K,K) = 0 exactly; the script then
expects a ScalapackError and prints ``SINGULAR <message>`` (exit 0 when the message names
diagonal element K).  ``--no-diag-check`` leaves the detection to pdtrtrs's own info.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from gapfit.runtime.parallel import get_comm  # noqa: E402
from gapfit.linalg import scalapack  # noqa: E402


def split_counts(n_rows, n_procs, even=False):
    weights = np.ones(n_procs) if even else np.arange(1, n_procs + 1, dtype=float)
    counts = np.floor(n_rows * weights / weights.sum()).astype(int)
    counts[-1] += n_rows - counts.sum()
    return counts


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=700)
    ap.add_argument("--cols", type=int, default=60)
    ap.add_argument("--mb", type=int, default=16, help="row block (0: the whole local row count)")
    ap.add_argument("--nb", type=int, default=100, help="column block (0: n_cols)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--singular", type=int, default=0, help="zero this column (1-based)")
    ap.add_argument("--no-diag-check", action="store_true")
    ap.add_argument("--return-r", action="store_true")
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--even", action="store_true", help="equal row counts (default: rank r gets a share ~ r+1)")
    ap.add_argument("--no-reference", action="store_true", help="skip lstsq (timing runs)")
    ap.add_argument("--bad-rank", type=int, default=-1,
                    help="this rank passes a C-ordered a_local: every rank must raise TypeError (no hang)")
    args = ap.parse_args(argv)

    comm = get_comm(use_mpi=True)
    limits = scalapack.limit_blas_threads(comm)  # noqa: F841  (1 thread per rank under MPI)
    if args.no_diag_check:
        scalapack._CHECK_DIAG = False
    if args.selftest:
        dt = scalapack.blacs_selftest(comm)
        if comm.rank == 0:
            print(f"SELFTEST ok {dt:.3f}s {scalapack.scalapack_info(comm)['text']}", flush=True)

    P, rank = comm.size, comm.rank
    rng = np.random.default_rng(args.seed)
    a_glob = rng.standard_normal((args.rows, args.cols))
    x_true = rng.standard_normal(args.cols)
    b_glob = a_glob @ x_true + 0.1 * rng.standard_normal(args.rows)
    if args.singular:
        a_glob[:, args.singular - 1] = 0.0

    counts = split_counts(args.rows, P, args.even)
    start = int(counts[:rank].sum())
    n_mine = int(counts[rank])
    mb_pad = args.mb if args.mb > 0 else 1
    n_local = -(-int(counts.max()) // mb_pad) * mb_pad
    a_local = np.zeros((n_local, args.cols), order="F")
    b_local = np.zeros(n_local)
    a_local[:n_mine] = a_glob[start:start + n_mine]
    b_local[:n_mine] = b_glob[start:start + n_mine]

    if rank == args.bad_rank:
        a_local = np.ascontiguousarray(a_local) if args.cols > 1 else a_local
    if args.bad_rank >= 0:
        try:
            scalapack.qr_solve(comm, a_local, b_local, args.cols, args.mb, args.nb)
        except TypeError as exc:
            msgs = comm.gather(str(exc))
            if rank == 0:
                ok = all(f"rank {args.bad_rank}" in m and "Fortran" in m for m in msgs)
                print(f"BADARG {'ok' if ok else 'WRONG'} P={P}: {msgs[0]}", flush=True)
            return 0
        print(f"BADARG MISSED on rank {rank}", flush=True)
        return 5

    timings = {}
    t0 = time.perf_counter()
    try:
        out = scalapack.qr_solve(comm, a_local, b_local, args.cols, args.mb, args.nb,
                                 return_r=args.return_r, timings=timings)
    except scalapack.ScalapackError as exc:
        if args.singular:
            ok = f"diagonal element {args.singular} " in str(exc)
            if rank == 0:
                print(f"SINGULAR {'ok' if ok else 'WRONG'} P={P}: {exc}", flush=True)
            return 0 if ok else 3
        raise
    elapsed = time.perf_counter() - t0
    if args.singular:
        if rank == 0:
            print(f"SINGULAR MISSED P={P}: no error for a zero column {args.singular}", flush=True)
        return 4
    x, r = out if args.return_r else (out, None)

    # Every rank must hold the same x.
    same = comm.allgather(x.tobytes())
    if any(s != same[0] for s in same):
        if rank == 0:
            print("RESULT MISMATCH between ranks", flush=True)
        return 2
    status = 0
    if rank == 0:
        mbs = args.mb if args.mb else n_local
        line = (f"P={P} rows={args.rows} cols={args.cols} n_local={n_local} mb={mbs} nb={args.nb} "
                f"time={elapsed:.4f}s " + " ".join(f"{k}={v:.4f}" for k, v in timings.items()))
        if not args.no_reference:
            ref = np.linalg.lstsq(a_glob, b_glob, rcond=None)[0]
            rel = float(np.max(np.abs(x - ref)) / np.max(np.abs(ref)))
            elem = float(np.max(np.abs(x - ref) / np.abs(ref)))
            line += f" maxrel={rel:.3e} elemrel={elem:.3e}"
            if not rel < args.tol:
                status = 1
            if args.return_r:
                # RᵀR = AᵀA (R is unique up to the signs of its rows).
                gram = a_glob.T @ a_glob
                rerr = float(np.max(np.abs(r.T @ r - gram)) / np.max(np.abs(gram)))
                tri = bool(np.all(np.tril(r, -1) == 0.0))
                line += f" r_gram_rel={rerr:.3e} r_upper={tri}"
                if not (rerr < 1e-12 and tri and r.shape == (args.cols, args.cols)):
                    status = 1
        print(("RESULT OK " if status == 0 else "RESULT FAIL ") + line, flush=True)
    elif args.return_r and r is not None:
        status = 1
    return comm.bcast(status)


if __name__ == "__main__":
    sys.exit(main())
