"""How close to this machine's DGEMM rate do the least-squares kernels run?

One process, the BLAS's own threads.  For M columns and N = rows-per-m × M random rows it times:

* DGEMM (2000³) — the reference rate;
* the streaming fold as gapfit runs it (``TriangularFactor`` with its default blocks: dgeqrt of each
  block of ≈ 8(M+1) rows, then a triangle merge by dtpqrt) and as it ran before issue 22 (dtpqrt
  on blocks of M+1 rows);
* the dense QR as gapfit runs it (``qr_solve``: dgeqrt with 128-column recursive panels, dgemqrt)
  and LAPACK's dgeqrf, which it replaced.

Rates are useful flops (2NM² − 2M³/3) per second, and each is printed as a fraction of DGEMM.

    python benchmarks/fold_rate.py                    # M = 1000, N = 40 M
    python benchmarks/fold_rate.py --m 2000 --rows-per-m 20
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from scipy.linalg import blas, lapack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")  # as gapfit's command line sets it

from gapfit.linalg.serial import qr_flops, qr_solve  # noqa: E402
from gapfit.linalg.triangular import TriangularFactor  # noqa: E402


def dgemm_rate(n=2000):
    a = np.asfortranarray(np.random.default_rng(0).standard_normal((n, n)))
    blas.dgemm(1.0, a, a)
    start = time.perf_counter()
    blas.dgemm(1.0, a, a)
    return 2.0 * n ** 3 / (time.perf_counter() - start)


def timed(function, rows):
    start = time.perf_counter()
    function(rows)
    return time.perf_counter() - start


def fold(rows, **factor_options):
    factor = TriangularFactor(rows.shape[1] - 1, **factor_options)
    for start in range(0, rows.shape[0], 2048):  # a producer's chunks
        factor.add_rows(rows[start:start + 2048])
    return factor.solve()


def dgeqrf(rows):
    lapack.dgeqrf(np.asfortranarray(rows[:, :-1]), overwrite_a=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=1000)
    parser.add_argument("--rows-per-m", type=int, default=40)
    args = parser.parse_args()
    m, n_rows = args.m, args.rows_per_m * args.m
    rows = np.asfortranarray(np.random.default_rng(1).standard_normal((n_rows, m + 1)))
    gemm = dgemm_rate()
    flops = qr_flops(n_rows, m + 1)
    print(f"M = {m}, N = {n_rows}; DGEMM {gemm / 1e9:.1f} GFLOP/s")
    cases = [("fold (gapfit: dgeqrt blocks + dtpqrt merge)", lambda r: fold(r)),
             ("fold before issue 22 (dtpqrt, blocks of M+1)", lambda r: fold(r, block_rows=m + 1, tall_blocks=False)),
             ("dense QR (gapfit: dgeqrt + dgemqrt)", lambda r: qr_solve(np.asfortranarray(r[:, :-1]), r[:, -1])),
             ("dense QR before issue 22 (dgeqrf)", dgeqrf)]
    for name, function in cases:
        seconds = timed(function, rows)
        rate = flops / seconds
        print(f"{name:48s} {seconds:7.2f} s  {rate / 1e9:6.1f} GFLOP/s  {rate / gemm:5.2f} of DGEMM")


if __name__ == "__main__":
    main()
