"""Run the same fit with QUIP's gap_fit and with gapfit, in one invocation, and compare.

Prints wall time and peak RSS of each program, their ratios (gapfit / gap_fit),
and how closely the two models' predictions agree on the training frames.

Usage (from the repository root, after ``bash scripts/setup.sh``):

    .venv/bin/python benchmarks/compare_gap_fit.py ta_2b --data ../shared/data/ta_snap/Ta_snap_train.xyz
    .venv/bin/python benchmarks/compare_gap_fit.py --list

Each program runs in its own scratch directory with OMP_NUM_THREADS=--threads
(gap_fit is OpenMP-parallel; gapfit uses threaded BLAS).  Peak RSS is the
child's ru_maxrss from wait4().  ``--skip-gap-fit`` runs gapfit alone (e.g.
where gap_fit aborts for lack of memory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

DATA_OPTIONS = ("e0_method=average energy_parameter_name=energy force_parameter_name=forces "
                "virial_parameter_name=virial default_sigma={0.002 0.1 0.05 0.0} sparse_jitter=1.0e-8")
D2B = ("distance_2b cutoff=5.0 delta=10.0 covariance_type=ard_se theta_uniform=0.75 n_sparse=20 "
       "sparse_method=uniform")

CASES = {
    "ta_2b": {
        "about": "distance_2b only, Ta SNAP (issue 2)",
        "data": "../shared/data/ta_snap/Ta_snap_train.xyz",
        "options": DATA_OPTIONS + " gap={" + D2B + "}",
    },
    "ta_soap": {
        "about": "Ta-soap: distance_2b + soap l4 n8 cutoff 5, 1000 CUR points (issue 3)",
        "data": "../shared/data/ta_snap/Ta_snap_train.xyz",
        "options": DATA_OPTIONS + " gap={" + D2B + " : soap l_max=4 n_max=8 atom_sigma=0.5 zeta=2 cutoff=5.0 "
                   "cutoff_transition_width=0.5 central_weight=1.0 n_sparse=1000 delta=0.1 "
                   "covariance_type=dot_product sparse_method=cur_points}",
    },
    "inp_small": {
        "about": "InP-small: distance_2b + soap l4 n4 cutoff 4, 500 CUR points per species (issue 3)",
        "data": "../shared/data/inp_snap/InP_snap_train.xyz",
        "options": DATA_OPTIONS + " gap={" + D2B + " : soap l_max=4 n_max=4 atom_sigma=0.5 zeta=2 cutoff=4.0 "
                   "cutoff_transition_width=0.5 central_weight=1.0 n_sparse=500 delta=0.1 "
                   "covariance_type=dot_product sparse_method=cur_points}",
    },
    "inp_paper": {
        "about": "InP-paper: the Ta-soap options on InP (gap_fit needs ~82 GB here) (issue 3)",
        "data": "../shared/data/inp_snap/InP_snap_train.xyz",
        "options": DATA_OPTIONS + " gap={" + D2B + " : soap l_max=4 n_max=8 atom_sigma=0.5 zeta=2 cutoff=5.0 "
                   "cutoff_transition_width=0.5 central_weight=1.0 n_sparse=1000 delta=0.1 "
                   "covariance_type=dot_product sparse_method=cur_points}",
    },
}


def run(cmd, cwd, env, log_path):
    """Run a command; return (exit status, wall seconds, peak RSS bytes of the child)."""
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_maxrss * 1024


def gib(n):
    return f"{n / 1024 ** 3:.2f} GiB"


def dgemm_rate(threads, n=3000, repeats=3):
    """This machine's DGEMM rate (GFLOP/s) with ``threads`` BLAS threads, in a fresh process."""
    code = ("import time, numpy as np\n"
            f"a = np.random.rand({n}, {n}); b = np.random.rand({n}, {n}); a @ b\n"
            "t = time.perf_counter()\n"
            f"for _ in range({repeats}): a @ b\n"
            f"print(2 * {n}**3 * {repeats} / (time.perf_counter() - t) / 1e9)\n")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return float(out.stdout.strip())


def covariance_rate(log_path):
    """gapfit's own report from its log: (GFLOP of matrix products, kernel-row seconds, covariance-phase seconds)."""
    import re
    text = open(log_path, errors="replace").read()
    m = re.search(r"kernel rows ([0-9.]+) s \(([0-9.]+) GFLOP in matrix products", text)
    phase = re.search(r"Covariance K_NM \(descriptors and kernel rows\): ([0-9.]+) s wall", text)
    if not m:
        return None
    return float(m.group(2)), float(m.group(1)), float(phase.group(1)) if phase else None


def compare_models(xml_a, xml_b, data, n_frames=50):
    """Max |ΔE|/atom and max |ΔF| between two models on the first frames of the data."""
    import numpy as np
    from ase.io import read
    from gapfit.calculator import GapCalculator

    from gapfit.gap_xml import read_model
    same = []
    for a, b in zip(read_model(xml_a).coordinates, read_model(xml_b).coordinates):
        rows_b = {tuple(r) for r in np.round(b.sparse_x, 7)}
        n = sum(tuple(r) in rows_b for r in np.round(a.sparse_x, 7))
        same.append(f"{n}/{a.sparse_x.shape[0]}")
    frames = read(data, f":{n_frames}")
    ca, cb = GapCalculator(xml_a), GapCalculator(xml_b)
    de = df = 0.0
    for atoms in frames:
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = ca, cb
        de = max(de, abs(a.get_potential_energy() - b.get_potential_energy()) / len(atoms))
        df = max(df, float(np.abs(a.get_forces() - b.get_forces()).max()))
    return de, df, ", ".join(same)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", nargs="?", choices=sorted(CASES))
    p.add_argument("--list", action="store_true", help="list the cases")
    p.add_argument("--data", help="training file (default: the case's ../shared path)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP/BLAS threads per program")
    p.add_argument("--gap-fit", default=shutil.which("gap_fit") or os.path.join(os.path.dirname(sys.executable), "gap_fit"))
    p.add_argument("--gapfit", default=None, help="gapfit command (default: this Python's -m gapfit)")
    p.add_argument("--skip-gap-fit", action="store_true", help="run gapfit only")
    p.add_argument("--keep", action="store_true", help="keep the scratch directories")
    args = p.parse_args(argv)
    if args.list or not args.case:
        for name, case in CASES.items():
            print(f"{name:10s} {case['about']}")
        return 0
    case = CASES[args.case]
    data = os.path.abspath(args.data or case["data"])
    if not os.path.exists(data):
        print(f"benchmark: data file {data} not found (give --data)", file=sys.stderr)
        return 2
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    scratch = tempfile.mkdtemp(prefix=f"gapfit-bench-{args.case}-")
    options = f"at_file={data} do_copy_at_file=F rnd_seed=1 " + case["options"]
    words = options_to_argv(options)
    results = {}
    programs = [] if args.skip_gap_fit else [("gap_fit", [args.gap_fit])]
    gapfit_cmd = args.gapfit.split() if args.gapfit else [sys.executable, "-m", "gapfit"]
    programs.append(("gapfit", gapfit_cmd))
    print(f"case {args.case}: {case['about']}")
    print(f"data {data}; {args.threads} thread(s) per program; scratch {scratch}")
    for name, cmd in programs:
        wd = os.path.join(scratch, name)
        os.makedirs(wd)
        status, wall, rss = run(cmd + words + [f"gp_file={name}.xml"], wd, env, os.path.join(wd, "log.txt"))
        results[name] = (status, wall, rss, os.path.join(wd, f"{name}.xml"))
        state = "ok" if status == 0 else f"FAILED (exit {status}; see {wd}/log.txt)"
        print(f"  {name:8s} {state:10s} wall {wall:8.1f} s   peak RSS {gib(rss)}")
    print()
    print("| program | wall time (s) | peak RSS |")
    print("|---|---|---|")
    for name, (status, wall, rss, _) in results.items():
        print(f"| {name} | {wall:.1f}{'' if status == 0 else ' (failed)'} | {gib(rss)} |")
    both = "gap_fit" in results and results["gap_fit"][0] == 0 and results["gapfit"][0] == 0
    if both:
        g, q = results["gapfit"], results["gap_fit"]
        print(f"| ratio gapfit/gap_fit | {g[1] / q[1]:.3f} | {g[2] / q[2]:.3f} |")
    if "gap_fit" in results and results["gap_fit"][0] != 0:
        lines = open(os.path.join(scratch, "gap_fit", "log.txt"), errors="replace").read().strip().splitlines()
        why = [l.strip() for l in lines if "Error allocating" in l or "SYSTEM ABORT" in l or "error" in l.lower()]
        print("\ngap_fit failed: " + " / ".join((why or lines[-3:])[:2]))
    rate = covariance_rate(os.path.join(scratch, "gapfit", "log.txt")) if results["gapfit"][0] == 0 else None
    if rate:
        peak = dgemm_rate(args.threads)
        flops, kernel_s, phase_s = rate
        print(f"\nDGEMM rate of this machine ({args.threads} threads): {peak:.0f} GFLOP/s")
        print(f"gapfit covariance: {flops:.0f} GFLOP of matrix products; kernel rows {kernel_s:.1f} s = "
              f"{flops / kernel_s:.0f} GFLOP/s ({100 * flops / kernel_s / peak:.0f}% of DGEMM); whole phase with "
              f"descriptor gradients {phase_s:.1f} s = {100 * flops / phase_s / peak:.0f}% of DGEMM")
    if both:
        de, df, same = compare_models(q[3], g[3], data)
        print(f"\nsparse points in common: {same}; the two models agree on the first 50 frames to "
              f"{de:.2e} eV/atom and {df:.2e} eV/Å")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(r[0] == 0 for r in results.values()) else 1


def options_to_argv(options):
    """Split an option string into argv words, keeping brace groups in one word."""
    words, depth, cur = [], 0, []
    for ch in options:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == " " and depth == 0:
            if cur:
                words.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if cur:
        words.append("".join(cur))
    return words


if __name__ == "__main__":
    sys.exit(main())
