"""A 10-point σ scan by refits against one fit, and against gap_fit, which needs a full fit per point.

Usage (from the repository root):

    .venv/bin/python benchmarks/sigma_scan.py [--data ../shared/data/ta_snap/Ta_snap_train.xyz] [--threads 2]

The case is compare_gap_fit.py's ``ta_soap`` (distance_2b + soap l4 n8, 1000 CUR points).  gapfit
fits once with ``keep_kernel_rows=True`` and then scans energy_sigma × force_sigma (5 × 2 points,
objective: the log marginal likelihood); gap_fit runs the same fit once.  Printed: the fit's and
the scan's wall times, scan / fit (the issue's bound: ≤ 2), and (fit + scan) / (10 gap_fit fits).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_gap_fit import CASES, case_data_and_env, options_to_argv, run  # noqa: E402

GRID = {"energy_sigma": [0.001, 0.002, 0.005, 0.01, 0.02], "force_sigma": [0.05, 0.1]}

SCAN = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import gapfit
from gapfit.options import parse_top_level
words = json.loads(sys.argv[2])
t0 = time.perf_counter()
fit = gapfit.GapFit(words, quiet=True).fit(keep_kernel_rows=True)
t1 = time.perf_counter()
scan = fit.scan(json.loads(sys.argv[3]))
t2 = time.perf_counter()
print(json.dumps({"fit": t1 - t0, "scan": t2 - t1, "points": len(scan.table), "best": scan.best,
                  "table": scan.table, "timings": fit.timings_}))
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="Ta training file (default: ../shared/data/ta_snap/Ta_snap_train.xyz)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--gap-fit", default=os.path.join(os.path.dirname(sys.executable), "gap_fit"))
    p.add_argument("--skip-gap-fit", action="store_true")
    args = p.parse_args(argv)
    case = CASES["ta_soap"]
    data, env = case_data_and_env(case, args.data, args.threads)
    if data is None:
        return 2
    scratch = tempfile.mkdtemp(prefix="gapfit-sigma-scan-")
    words = options_to_argv(f"at_file={data} do_copy_at_file=F rnd_seed=1 " + case["options"])
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    print(f"sigma scan on {data}: {case['about']}; {args.threads} thread(s); scratch {scratch}")
    proc = subprocess.run([sys.executable, "-c", SCAN, root, json.dumps(words + ["training_errors=F"]),
                           json.dumps(GRID)], env=env, cwd=scratch, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"gapfit: one fit (keeping its kernel rows) {out['fit']:.1f} s; {out['points']}-point scan "
          f"{out['scan']:.1f} s ({out['scan'] / out['points']:.2f} s per refit)")
    print(f"  scan / fit = {out['scan'] / out['fit']:.3f} (bound: 2)")
    for row in out["table"]:
        print(f"  energy_sigma {row['energy_sigma']:<6g} force_sigma {row['force_sigma']:<5g} "
              f"log marginal likelihood {row['log_likelihood']:.6g}")
    print(f"  best (largest log marginal likelihood): {out['best']}")
    if not args.skip_gap_fit:
        wd = os.path.join(scratch, "gap_fit")
        os.makedirs(wd)
        status, wall, rss = run([args.gap_fit] + words + ["gp_file=gp.xml"], wd, env, os.path.join(wd, "log.txt"))
        if status != 0:
            print(f"gap_fit failed (exit {status}); see {wd}/log.txt", file=sys.stderr)
            return 1
        print(f"gap_fit: one fit {wall:.1f} s; {out['points']} fits ≈ {out['points'] * wall:.0f} s")
        print(f"  (gapfit fit + scan) / ({out['points']} gap_fit fits) = "
              f"{(out['fit'] + out['scan']) / (out['points'] * wall):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
