"""The two least-squares paths on the same rows: the dense QR of A against folding the rows into the
(M+1)² triangular factor (gapfit.linalg.triangular), for a range of M, on one process.

Only the solver is timed: the same random rows are handed to both (the producer of K_NM rows costs
the same on either path).  It prints seconds, the memory each path holds, and the ratio, for the
streaming block sizes given; ``linear_solver=auto`` (gapfit/solve/linear_system.py) is set from it.

    python benchmarks/streaming_vs_dense.py                  # M = 500 1000 2000 4000, N = 20 M
    python benchmarks/streaming_vs_dense.py --m 1000 --rows-per-m 50 --blocks 1 2 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gapfit.runtime.report import human_bytes  # noqa: E402
from gapfit.linalg.serial import qr_solve  # noqa: E402
from gapfit.linalg.triangular import TriangularFactor  # noqa: E402

CHUNK_ROWS = 2048  # rows handed over at a time (a producer's chunk)


def _chunks(n_rows, m, seed=1):
    """The same rows for both paths: ``n_rows`` rows of [A | b] in chunks (a few random blocks reused)."""
    rng = np.random.default_rng(seed)
    blocks = [rng.standard_normal((CHUNK_ROWS, m + 1)) for _ in range(3)]
    done = 0
    k = 0
    while done < n_rows:
        take = min(CHUNK_ROWS, n_rows - done)
        yield blocks[k % 3][:take] * (1.0 + 1e-3 * k)  # distinct rows: a full-rank system
        done += take
        k += 1


def dense(n_rows, m):
    t0 = time.perf_counter()
    a = np.zeros((n_rows, m), order="F")
    b = np.zeros(n_rows)
    row = 0
    for chunk in _chunks(n_rows, m):
        a[row:row + chunk.shape[0]] = chunk[:, :m]
        b[row:row + chunk.shape[0]] = chunk[:, m]
        row += chunk.shape[0]
    alpha, _ = qr_solve(a, b)
    return time.perf_counter() - t0, 8.0 * n_rows * (m + 1), alpha


def streaming(n_rows, m, block_rows):
    t0 = time.perf_counter()
    factor = TriangularFactor(m, block_rows=block_rows)
    for chunk in _chunks(n_rows, m):
        factor.add_rows(chunk)
    alpha, _ = factor.solve()
    return time.perf_counter() - t0, float(factor.nbytes), alpha


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, nargs="+", default=[500, 1000, 2000, 4000], help="numbers of sparse points")
    parser.add_argument("--rows-per-m", type=float, default=20.0, help="rows of A per sparse point (N = this × M)")
    parser.add_argument("--blocks", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                        help="streaming block sizes, in multiples of M + 1 rows")
    args = parser.parse_args(argv)
    try:
        from threadpoolctl import threadpool_info
        threads = max(int(p.get("num_threads", 1)) for p in threadpool_info())
    except Exception:  # pragma: no cover
        threads = 0
    print(f"streaming vs dense least squares, one process, {threads or '?'} BLAS thread(s), N = "
          f"{args.rows_per_m:g} M rows")
    print(f"{'M':>6} {'N':>8} {'dense s':>9} {'dense mem':>10} | " +
          " | ".join(f"{'block ' + format(b, 'g') + '(M+1)':>16} {'mem':>10} {'ratio':>6}" for b in args.blocks))
    for m in args.m:
        n_rows = int(args.rows_per_m * m)
        t_dense, mem_dense, alpha_dense = dense(n_rows, m)
        cells = []
        for mult in args.blocks:
            t_stream, mem_stream, alpha_stream = streaming(n_rows, m, int(mult * (m + 1)))
            diff = np.abs(alpha_stream - alpha_dense).max() / np.abs(alpha_dense).max()
            if diff > 1e-8:
                raise SystemExit(f"M={m}: the two paths disagree by {diff:.1e}")
            cells.append(f"{t_stream:16.2f} {human_bytes(mem_stream):>10} {t_stream / t_dense:6.2f}")
        print(f"{m:6d} {n_rows:8d} {t_dense:9.2f} {human_bytes(mem_dense):>10} | " + " | ".join(cells), flush=True)
    print("ratio: streaming seconds / dense seconds (below 1: streaming is faster)")


if __name__ == "__main__":
    main()
