"""Peak memory against the size of the data: one case of compare_gap_fit.py fitted by gapfit on
every 8th, 4th, 2nd frame and on all of its data (the same options, the same numbers of sparse
points), with the streaming and, optionally, the dense path.

The dense path holds A, (N + M) × M doubles, which grows with N; the streaming path holds the
(M+1)² factor and one chunk of rows, so its peak should not.  Printed: frames, target rows N,
wall time, peak RSS (ru_maxrss of the child) and the ratio to the smallest fit's peak.

    .venv/bin/python benchmarks/memory_vs_n.py inp_paper                 # streaming, 1/8 .. all
    .venv/bin/python benchmarks/memory_vs_n.py inp_paper --every 8 1 --dense
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compare_gap_fit import CASES, _subset, _write_files, case_data_and_env, gib, options_to_argv, run  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--data", help="training file (default: the case's ../shared path)")
    p.add_argument("--every", type=int, nargs="+", default=[8, 4, 2, 1], help="fit every k-th frame, for each k")
    p.add_argument("--dense", action="store_true", help="also fit each subset with linear_solver=dense")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="BLAS threads")
    args = p.parse_args(argv)
    case = CASES[args.case]
    data, env = case_data_and_env(case, args.data, args.threads)
    if data is None:
        return 2
    scratch = tempfile.mkdtemp(prefix=f"gapfit-memory-{args.case}-")
    print(f"case {args.case}: {case['about']}; {args.threads} BLAS thread(s); scratch {scratch}")
    print("| data | solver | frames | target rows N | M | wall (s) | peak RSS | / smallest |")
    print("|---|---|---|---|---|---|---|---|")
    paths = ["streaming"] + (["dense"] if args.dense else [])
    smallest = {}
    for every in args.every:
        subset = data if every == 1 else _subset(data, every, scratch)
        for path in paths:
            wd = os.path.join(scratch, f"every{every}_{path}")
            os.makedirs(wd)
            _write_files(case, wd)
            words = options_to_argv(f"at_file={subset} do_copy_at_file=F rnd_seed=1 " + case["options"])
            log = os.path.join(wd, "log.txt")
            status, wall, rss = run([sys.executable, "-m", "gapfit", *words, "gp_file=gp.xml", "training_errors=F",
                                     f"linear_solver={path}"], wd, env, log)
            text = open(log, errors="replace").read()
            if status != 0:
                print(f"| 1/{every} | {path} | failed (exit {status}; see {log}) |")
                continue
            frames = re.search(r"total\s+(\d+)\s", text)
            rows = re.search(r"(\d+) target rows", text)
            m = re.search(r"total M = (\d+)", text)
            smallest.setdefault(path, rss)
            print(f"| 1/{every} | {path} | {frames.group(1) if frames else '?'} | {rows.group(1) if rows else '?'} "
                  f"| {m.group(1) if m else '?'} | {wall:.1f} | {gib(rss)} | {rss / smallest[path]:.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
