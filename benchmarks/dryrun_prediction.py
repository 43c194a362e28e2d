"""Does ``dryrun=T`` predict the wall time?  One case of compare_gap_fit.py: gapfit with dryrun=T, then
the same fit, and each phase's prediction against what the fit's timing table measured.

    .venv/bin/python benchmarks/dryrun_prediction.py ta_soap
    .venv/bin/python benchmarks/dryrun_prediction.py inp_small --every 4 --solver dense

Phases compared: the sparse points; descriptors, K_NM rows and the fold (streaming: one phase of the
fit) or descriptors and K_NM rows, then the QR (dense); the training-error pass; and the total
(dryrun's sum against the fit's total wall time, reading the data included).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compare_gap_fit import CASES, _subset, _write_files, case_data_and_env, options_to_argv, run  # noqa: E402

#: the fit's timing-table phases each dryrun row stands for
PHASES = {"sparse points": ["Sparse points"],
          "descriptors and K_NM rows": ["Covariance K_NM"],
          "fold into the (M+1)² factor": [],  # inside the streaming covariance phase
          "dense QR": ["Solving by QR"],
          "training errors": ["Errors on the training data"]}


def predicted(text):
    rows = {}
    block = text.split("Wall time estimate (dryrun=T)", 1)[1]
    for name in PHASES:
        match = re.search(rf"^\s+{re.escape(name)}\s+([0-9.e+-]+)\s", block, re.M)
        if match:
            rows[name] = float(match.group(1))
    total = float(re.search(r"total about ([0-9.e+-]+) s", block).group(1))
    return rows, total


def measured(text):
    table = text.split("wall time (s) per phase", 1)[1]
    rows = {}
    for line in table.splitlines():
        match = re.match(r"^\s{2}(\S.*?)\s{2,}([0-9.e+]+)\s+([0-9.e+]+)\s+([0-9.e+]+)\s*$", line)
        if match and not set(match.group(4)) <= set("-"):
            rows[match.group(1)] = float(match.group(4))
    total = float(re.search(r"total wall time ([0-9.]+) s", text).group(1))
    return rows, total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--data", help="training file (default: the case's ../shared path)")
    p.add_argument("--every", type=int, default=1, help="fit every k-th frame")
    p.add_argument("--solver", default="streaming", choices=["streaming", "dense"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="BLAS threads")
    args = p.parse_args(argv)
    case = CASES[args.case]
    data, env = case_data_and_env(case, args.data, args.threads)
    if data is None:
        return 2
    scratch = tempfile.mkdtemp(prefix=f"gapfit-dryrun-{args.case}-")
    subset = data if args.every == 1 else _subset(data, args.every, scratch)
    _write_files(case, scratch)
    words = options_to_argv(f"at_file={subset} do_copy_at_file=F rnd_seed=1 " + case["options"])
    words += ["gp_file=gp.xml", f"linear_solver={args.solver}"]
    logs = {}
    for name, extra in (("dryrun", ["dryrun=T"]), ("fit", [])):
        logs[name] = os.path.join(scratch, f"{name}.txt")
        status, wall, _ = run([sys.executable, "-m", "gapfit", *words, *extra], scratch, env, logs[name])
        if status != 0:
            print(f"{name} failed (exit {status}; see {logs[name]})")
            return 1
        print(f"{name}: {wall:.1f} s")
    guess, guess_total = predicted(open(logs["dryrun"]).read())
    seen, seen_total = measured(open(logs["fit"]).read())
    print(f"case {args.case} (every {args.every}), {args.solver}: predicted against measured wall seconds")
    print("| phase | dryrun | fit | dryrun / fit |")
    print("|---|---|---|---|")
    streaming_covariance = guess.get("descriptors and K_NM rows", 0.0) + guess.get("fold into the (M+1)² factor", 0.0)
    for name, phases in PHASES.items():
        if name not in guess or not phases:
            continue
        value = streaming_covariance if name == "descriptors and K_NM rows" else guess[name]
        actual = sum(v for phase, v in seen.items() if any(phase.startswith(p) for p in phases))
        label = name + (" + fold" if name == "descriptors and K_NM rows" and args.solver == "streaming" else "")
        print(f"| {label} | {value:.3g} | {actual:.3g} | {value / actual if actual else float('nan'):.2f} |")
    print(f"| total | {guess_total:.3g} | {seen_total:.3g} | {guess_total / seen_total:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
