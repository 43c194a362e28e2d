"""gapfit under MPI: time, parallel efficiency and per-rank memory against the local size of A.

For each P in --ranks (default 1 2), runs the case's fit with ``mpirun -n P`` (P=1 without a
launcher), one BLAS thread per rank, and reads gapfit's JSON report (report_file=) for the
per-rank peak RSS, the rows of A each rank holds and the phase times.  Prints, per P:

* wall time, speedup and efficiency T(1) / (P T(P));
* per rank: local A (rows × M × 8 bytes), peak RSS and the overhead RSS − A.

The paper (Klawohn et al. 2023) reports 1.4–1.8 GB per process; the target here is an
overhead below 0.2 GB per rank plus the local A.

Usage: .venv/bin/python benchmarks/mpi_scaling.py ta_soap [--ranks 1 2] [--data PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_gap_fit import CASES, gib, options_to_argv  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--data")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads per rank")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    case = CASES[args.case]
    data = os.path.abspath(args.data or case["data"])
    scratch = tempfile.mkdtemp(prefix=f"gapfit-mpi-{args.case}-")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    words = options_to_argv(f"at_file={data} do_copy_at_file=F rnd_seed=1 " + case["options"])
    print(f"case {args.case}: {case['about']}\ndata {data}; {args.threads} BLAS thread(s) per rank; scratch {scratch}")
    results = {}
    for ranks in args.ranks:
        wd = os.path.join(scratch, f"p{ranks}")
        os.makedirs(wd)
        cmd = [sys.executable, "-m", "gapfit", *words, "gp_file=gp.xml", "report_file=report.json", "training_errors=F"]
        if ranks > 1:
            over = ["--oversubscribe"] if ranks > (os.cpu_count() or 1) else []
            cmd = [shutil.which("mpirun"), "-n", str(ranks), *over] + cmd
        t0 = time.perf_counter()
        with open(os.path.join(wd, "log.txt"), "w") as log:
            proc = subprocess.run(cmd, cwd=wd, env=env, stdout=log, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"  P={ranks}: FAILED (see {wd}/log.txt)")
            continue
        with open(os.path.join(wd, "report.json")) as fh:
            results[ranks] = (wall, json.load(fh))
    if not results:
        return 1
    t1 = results[min(results)][0] * min(results)
    print("\n| P | wall (s) | speedup | efficiency | covariance phase max (s) | QR (s) |")
    print("|---|---|---|---|---|---|")
    for ranks, (wall, rep) in sorted(results.items()):
        cov = max(rep["phases"].get("Covariance K_NM (descriptors and kernel rows)", [0]))
        qr = max(v for k, vals in rep["phases"].items() if k.startswith("Solving") for v in vals)
        print(f"| {ranks} | {wall:.1f} | {t1 / wall:.2f} | {t1 / (ranks * wall):.2f} | {cov:.1f} | {qr:.2f} |")
    print("\n| P | rank | local A rows | local A | peak RSS | RSS − A |")
    print("|---|---|---|---|---|---|")
    for ranks, (wall, rep) in sorted(results.items()):
        for r, (extra, rss) in enumerate(zip(rep["per_rank"], rep["peak_rss_bytes"])):
            a = extra["A bytes"]
            print(f"| {ranks} | {r} | {int(extra['local rows of A'])} | {gib(a)} | {gib(rss)} | {gib(rss - a)} |")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
