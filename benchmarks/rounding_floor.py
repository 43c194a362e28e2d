"""How far apart rounding alone puts two fits of one recipe: the floor under a gap_fit/gapfit comparison.

Run it on the ``sparse/`` folder that ``compare_gap_fit.py CASE --keep`` leaves (a same-sparse-points
case: its options file ``sparse.xml.fit.cfg``, ``gap_fit.xml`` and ``gapfit.xml``).  gapfit fits again
with nothing changed but the order of the sums: ``row_chunk_mb`` large enough that no frame is split
into centre-atom pieces (or, with ``--row-chunk-mb`` small, split into more of them).  The kernel rows
then differ from the first fit's by a few ulps only (the pieces' rows are summed in another order);
the script prints how far that moves the predictions on held-out frames, next to how far gap_fit's
are from each of gapfit's two.

    .venv/bin/python benchmarks/compare_gap_fit.py ni_autoplex --keep
    .venv/bin/python benchmarks/rounding_floor.py /tmp/gapfit-bench-ni_autoplex-XXXX/sparse \\
        --test ../shared/data/ni_acclab/ni-test.xyz
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from compare_gap_fit import compare_models, config_words, run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="the sparse/ folder of a kept compare_gap_fit.py run")
    p.add_argument("--test", required=True, help="held-out frames to compare the models on")
    p.add_argument("--frames", type=int, default=None, help="only the first N test frames (default: all)")
    p.add_argument("--row-chunk-mb", type=float, default=4000.0,
                   help="row_chunk_mb of the second gapfit fit (the first used gapfit's default, 16)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    folder = os.path.abspath(args.folder)
    test = os.path.abspath(args.test)
    for name in ("sparse.xml.fit.cfg", "gap_fit.xml", "gapfit.xml"):
        if not os.path.exists(os.path.join(folder, name)):
            print(f"rounding_floor.py: {folder} has no {name} (run compare_gap_fit.py CASE --keep on a "
                  f"same-sparse-points case)", file=sys.stderr)
            return 2
    if not os.path.isfile(test):
        print(f"rounding_floor.py: --test {args.test}: no such file", file=sys.stderr)
        return 2
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    other = f"gapfit_chunk{args.row_chunk_mb:g}.xml"
    words = config_words(os.path.join(folder, "sparse.xml.fit.cfg"))
    cmd = [sys.executable, "-m", "gapfit", *words, "training_errors=F", f"row_chunk_mb={args.row_chunk_mb:g}",
           f"gp_file={other}"]
    start = time.time()
    status, wall, _ = run(cmd, folder, env, os.path.join(folder, f"log_chunk{args.row_chunk_mb:g}.txt"))
    if status != 0:
        print(f"rounding_floor.py: gapfit failed (exit {status}; see {folder}/log_chunk{args.row_chunk_mb:g}.txt)",
              file=sys.stderr)
        return 1
    print(f"gapfit with row_chunk_mb={args.row_chunk_mb:g}: {wall:.1f} s")
    n = args.frames if args.frames else 10 ** 9
    pairs = [("gap_fit.xml", "gapfit.xml", "gap_fit vs gapfit (row_chunk_mb=16)"),
             ("gap_fit.xml", other, f"gap_fit vs gapfit (row_chunk_mb={args.row_chunk_mb:g})"),
             ("gapfit.xml", other, "gapfit vs gapfit: the order of the sums only (the floor)")]
    print(f"\nmax differences on {os.path.basename(test)}" + (f" (first {args.frames} frames)" if args.frames else ""))
    print("| pair | max \\|ΔE\\|/atom (eV) | max \\|ΔF\\| (eV/Å) |")
    print("|---|---|---|")
    for a, b, label in pairs:
        de, df, _ = compare_models(os.path.join(folder, a), os.path.join(folder, b), test, n)
        print(f"| {label} | {de:.2e} | {df:.2e} |", flush=True)
    print(f"\ntotal {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
