"""Combining the ranks' triangular factors under MPI: gapfit's binary tree of LAPACK folds
(gapfit.linalg.triangular.reduce_factors) against ScaLAPACK's QR of the stacked factors (P×1
grid, pdgeqrf through gapfit.linalg.scalapack.qr_solve), on the same factors.

Each rank makes an (M+1)² factor of its own random rows; both ways then give α (compared).

    mpirun -n 2 .venv/bin/python benchmarks/combine_factors.py --m 1000 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gapfit.runtime.parallel import get_comm  # noqa: E402
from gapfit.linalg.scalapack import qr_solve  # noqa: E402
from gapfit.linalg.triangular import TriangularFactor, reduce_factors  # noqa: E402


def local_factor(comm, m):
    rng = np.random.default_rng(1 + comm.rank)
    factor = TriangularFactor(m)
    factor.add_rows(rng.standard_normal((3 * (m + 1), m + 1)))
    factor.flush()
    return factor


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, nargs="+", default=[500, 1000, 2000])
    args = p.parse_args(argv)
    comm = get_comm()
    if comm.rank == 0:
        print(f"combining {comm.size} factors of (M+1)² doubles")
        print("| M | tree (s) | ScaLAPACK QR of the stacked factors (s) | ratio tree/ScaLAPACK | max rel Δα |")
        print("|---|---|---|---|---|")
    for m in args.m:
        factor = local_factor(comm, m)
        stacked = np.asfortranarray(factor.r[:, :m].copy())  # this rank's rows of [R̃_1; ...; R̃_P]
        rhs = factor.r[:, m].copy()
        comm.barrier()
        t0 = time.perf_counter()
        total = reduce_factors(comm, factor)
        alpha_tree = total.solve()[0] if total is not None else None
        comm.barrier()
        tree = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = qr_solve(comm, stacked, rhs, m, m + 1)
        comm.barrier()
        scalapack = time.perf_counter() - t0
        if comm.rank == 0:
            alpha_sl = out[0] if isinstance(out, tuple) else out
            diff = np.abs(alpha_sl - alpha_tree).max() / np.abs(alpha_tree).max()
            print(f"| {m} | {tree:.2f} | {scalapack:.2f} | {tree / scalapack:.2f} | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
