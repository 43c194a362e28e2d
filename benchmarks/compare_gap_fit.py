"""Run the same fit with QUIP's gap_fit and with gapfit, in one invocation, and compare.

Prints wall time and peak RSS of each program, their ratios (gapfit / gap_fit),
and how closely the two models' predictions agree on the training frames.

Usage (from the repository root, after ``bash scripts/setup.sh``):

    .venv/bin/python benchmarks/compare_gap_fit.py ta_2b --data ../shared/data/ta_snap/Ta_snap_train.xyz
    .venv/bin/python benchmarks/compare_gap_fit.py --list

Each program runs in its own scratch directory with OMP_NUM_THREADS=--threads
(gap_fit is OpenMP-parallel; gapfit uses threaded BLAS).  Peak RSS is the
child's ru_maxrss from wait4().  ``--skip-gap-fit`` runs gapfit alone (e.g.
where gap_fit aborts for lack of memory); ``--also CMD`` times another gapfit (another checkout's)
in the same run, for before/after comparisons of a change.
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

# the Ni set of jGAP (acclab): QUIP-style 'force'; an isolated atom and dimers; virials on bulk frames
NI_OPTIONS = ("energy_parameter_name=energy force_parameter_name=force virial_parameter_name=virial "
              "default_sigma={0.002 0.05 0.05 0.0} sparse_jitter=1.0e-8")


def zbl_glue(z: int, r_inner: float = 0.5, r_switch: float = 1.2, r_cut: float = 1.8) -> str:
    """A pair-only QUIP Glue file: the ZBL universal repulsion, switched smoothly to 0 at ``r_cut``.

    The density and embedding are dummies (F ≡ 0), as in C GAP-20's core; made here, for the benchmark.
    """
    import numpy as np
    a = 0.46850 / (2.0 * z ** 0.23)

    def energy(r):
        x = r / a
        phi = (0.18175 * np.exp(-3.1998 * x) + 0.50986 * np.exp(-0.94229 * x) + 0.28022 * np.exp(-0.4029 * x)
               + 0.02817 * np.exp(-0.20162 * x))
        t = np.clip((r - r_switch) / (r_cut - r_switch), 0.0, 1.0)
        return 14.399645 * z * z / r * phi * (1.0 - t * t * t * (10.0 - 15.0 * t + 6.0 * t * t))
    r = np.linspace(r_inner, r_cut, 33)
    points = "\n".join(f'      <point r="{x:.6f}" E="{energy(x):.12e}"/>' for x in r)
    return (f'<Glue_params n_types="1">\n  <per_type_data atomic_num="{z}" type="1">\n'
            f'    <density num_points="2" density_y1="0.0" density_yn="0.0">\n'
            f'      <point a="0.5" rho="0.0"/>\n      <point a="1.0" rho="0.0"/>\n    </density>\n'
            f'    <potential_density num_points="2">\n      <point rho="0.0" E="0.0"/>\n'
            f'      <point rho="1.0" E="0.0"/>\n    </potential_density>\n  </per_type_data>\n'
            f'  <per_pair_data type1="1" type2="1">\n    <potential_pair num_points="{r.size}" yn="0.0">\n'
            f'{points}\n    </potential_pair>\n  </per_pair_data>\n</Glue_params>\n')


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
    "ta_soap_turbo": {
        "about": "Fe GAP-22's gap string on Ta (distance_Nb order 2 + two soap_turbo l8 a8, compress_mode=trivial; "
                 "1000 CUR points each instead of config_type_n_sparse) (issue 20)",
        "data": "../shared/data/ta_snap/Ta_snap_train.xyz",
        "options": DATA_OPTIONS + " gap={distance_Nb order=2 cutoff=5.0 n_sparse=25 covariance_type=ard_se delta=1.0 "
                   "theta_uniform=2.5 sparse_method=uniform compact_clusters=True" + "".join(
                       f" : soap_turbo l_max=8 alpha_max={{{{8}}}} atom_sigma_r={{{{{s}}}}} atom_sigma_t={{{{{s}}}}} "
                       f"atom_sigma_r_scaling={{{{0.0}}}} atom_sigma_t_scaling={{{{0.0}}}} zeta=4 rcut_hard={rh} "
                       f"rcut_soft={rs} delta=1.0 basis=poly3 scaling_mode=polynomial amplitude_scaling={{{{1.0}}}} "
                       f"n_species=1 species_Z={{73}} add_species=F compress_mode=trivial radial_enhancement=1 "
                       f"central_weight={{{{1.0}}}} covariance_type=dot_product n_sparse=1000 sparse_method=cur_points"
                       for s, rh, rs in ((0.25, 3.0, 2.5), (0.5, 5.0, 4.0))) + "}",
    },
    "inp_soap_turbo": {
        "about": "two species, turboGAP-style: distance_2b + soap_turbo l4 a{4 4} poly3gauss r_h 4 (as inp_small), add_species "
                 "(one term per centre species, central_index 1 and 2), 500 CUR points each (issue 20)",
        "data": "../shared/data/inp_snap/InP_snap_train.xyz",
        "options": DATA_OPTIONS + " gap={" + D2B + " : soap_turbo l_max=4 alpha_max={{4 4}} "
                   "atom_sigma_r={{0.3 0.3}} atom_sigma_t={{0.3 0.3}} atom_sigma_r_scaling={{0.1 0.1}} "
                   "atom_sigma_t_scaling={{0.1 0.1}} amplitude_scaling={{1.0 1.0}} central_weight={{1.0 1.0}} "
                   "rcut_hard=4.0 rcut_soft=3.5 basis=poly3gauss scaling_mode=polynomial radial_enhancement=1 "
                   "n_species=2 species_Z={{49 15}} compress_mode=trivial zeta=4 delta=0.1 "
                   "covariance_type=dot_product n_sparse=500 sparse_method=cur_points}",
    },
    "inp_small": {
        "about": "InP-small: distance_2b + soap l4 n4 cutoff 4, 500 CUR points per species (issue 3)",
        "data": "../shared/data/inp_snap/InP_snap_train.xyz",
        "options": DATA_OPTIONS + " gap={" + D2B + " : soap l_max=4 n_max=4 atom_sigma=0.5 zeta=2 cutoff=4.0 "
                   "cutoff_transition_width=0.5 central_weight=1.0 n_sparse=500 delta=0.1 "
                   "covariance_type=dot_product sparse_method=cur_points}",
    },
    "ta_3b": {
        "about": "Ta-soap plus angle_3b (cutoff 3.2, 100 uniform points): the C GAP-20 form on Ta (issue 8)",
        "data": "../shared/data/ta_snap/Ta_snap_train.xyz",
        "options": DATA_OPTIONS + " gap={" + D2B + " : angle_3b cutoff=3.2 cutoff_transition_width=0.5 "
                   "covariance_type=ard_se delta=0.05 theta_uniform=1.0 n_sparse=100 sparse_method=uniform : "
                   "soap l_max=4 n_max=8 atom_sigma=0.5 zeta=2 cutoff=5.0 cutoff_transition_width=0.5 "
                   "central_weight=1.0 n_sparse=1000 delta=0.1 covariance_type=dot_product sparse_method=cur_points}",
    },
    "ni_tabgap": {
        "about": "acclab-style tabGAP on the Ni set: a repulsive (ZBL) Glue core + distance_2b + angle_3b (issue 8)",
        "data": "../shared/data/ni_acclab/ni-train.xyz",
        "options": NI_OPTIONS + " core_ip_args={IP Glue} core_param_file=ni_zbl_glue.xml gap={distance_2b cutoff=5.0 "
                   "cutoff_transition_width=1.0 covariance_type=ard_se delta=10.0 theta_uniform=0.75 n_sparse=20 "
                   "sparse_method=uniform : angle_3b cutoff=3.3 cutoff_transition_width=0.6 covariance_type=ard_se "
                   "delta=0.5 theta_uniform=1.0 n_sparse=200 sparse_method=uniform}",
        "files": {"ni_zbl_glue.xml": lambda: zbl_glue(28)},
    },
    "ni_autoplex": {
        "about": "autoplex's distance_Nb order 2 : order 3 : soap on the Ni set; same sparse points (issue 8)",
        "data": "../shared/data/ni_acclab/ni-train.xyz",
        "options": NI_OPTIONS + " gap={distance_Nb order=2 f0=0.0 cutoff=5.0 n_sparse=15 covariance_type=ard_se "
                   "delta=2.0 theta_uniform=0.5 sparse_method=uniform compact_clusters=T : distance_Nb order=3 f0=0.0 "
                   "cutoff=3.25 n_sparse=100 covariance_type=ard_se delta=2.0 theta_uniform=1.0 sparse_method=uniform "
                   "compact_clusters=T : soap l_max=10 n_max=12 atom_sigma=0.5 zeta=4 cutoff=5.0 "
                   "cutoff_transition_width=1.0 central_weight=1.0 n_sparse=2000 delta=1.0 f0=0.0 "
                   "covariance_type=dot_product sparse_method=cur_points}",
        "same_sparse": True,
        "every": 8,  # every 8th training frame (and the isolated atom): gap_fit holds all soap gradients
        "test_data": "../shared/data/ni_acclab/ni-test.xyz",
    },
    "wbe": {
        "about": "W-Be (25,422 frames, 531,642 atoms, E+F): 2b per pair + soap l4 n8, 1000 CUR points per species; "
                 "A would need ~26 GB: gapfit streaming, serially (issue 9; run with --skip-gap-fit)",
        "data": "../shared/data/wbe_snap/WBe_train.xyz",
        "options": "e0_method=average energy_parameter_name=energy force_parameter_name=forces "
                   "default_sigma={0.002 0.1 0.05 0.0} sparse_jitter=1.0e-8 gap={" + D2B  # add_species: 3 pairs
                   + " : soap l_max=4 n_max=8 atom_sigma=0.5 zeta=2 cutoff=5.0 cutoff_transition_width=0.5 "
                     "central_weight=1.0 n_sparse=1000 delta=0.1 covariance_type=dot_product sparse_method=cur_points}",
    },
    "inp_paper": {
        "about": "InP-paper: the Ta-soap options on InP (gap_fit needs ~82 GB here) (issue 3)",
        "data": "../shared/data/inp_snap/InP_snap_train.xyz",
        "options": DATA_OPTIONS + " gap={" + D2B + " : soap l_max=4 n_max=8 atom_sigma=0.5 zeta=2 cutoff=5.0 "
                   "cutoff_transition_width=0.5 central_weight=1.0 n_sparse=1000 delta=0.1 "
                   "covariance_type=dot_product sparse_method=cur_points}",
    },
}


def case_data_and_env(case, data_arg, threads):
    """The case's data file (absolute; None with a message if missing) and the environment for ``threads``."""
    data = os.path.abspath(data_arg or case["data"])
    if not os.path.exists(data):
        print(f"benchmark: data file {data} not found (give --data)", file=sys.stderr)
        return None, None
    return data, dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))


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
    phase = re.search(r"Covariance K_NM[^:\n]*: ([0-9.]+) s wall", text)  # dense or streaming
    if not m:
        return None
    return float(m.group(2)), float(m.group(1)), float(phase.group(1)) if phase else None


def compare_models(xml_a, xml_b, data, n_frames=50):
    """Max |ΔE|/atom and max |ΔF| between two models on the first frames of the data."""
    import numpy as np
    from ase.io import read
    from gapfit.model.calculator import GapCalculator

    from gapfit.model.gap_xml import read_model
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
    p.add_argument("--also", default=None, metavar="CMD",
                   help="another gapfit command timed in the same run (e.g. the checkout before a change: "
                        "'../old/.venv/bin/python -m gapfit'); its ratio to this gapfit is printed")
    p.add_argument("--keep", action="store_true", help="keep the scratch directories")
    args = p.parse_args(argv)
    if args.list or not args.case:
        for name, case in CASES.items():
            print(f"{name:10s} {case['about']}")
        return 0
    case = CASES[args.case]
    data, env = case_data_and_env(case, args.data, args.threads)
    if data is None:
        return 2
    scratch = tempfile.mkdtemp(prefix=f"gapfit-bench-{args.case}-")
    if case.get("every"):
        data = _subset(data, case["every"], scratch)
    options = f"at_file={data} do_copy_at_file=F rnd_seed=1 " + case["options"]
    words = options_to_argv(options)
    results = {}
    programs = [] if args.skip_gap_fit else [("gap_fit", [args.gap_fit])]
    gapfit_cmd = args.gapfit.split() if args.gapfit else [sys.executable, "-m", "gapfit"]
    # gap_fit reports no errors: gapfit's report (a second pass over the data) is left out of the comparison
    programs.append(("gapfit", gapfit_cmd + ["training_errors=F"]))
    if args.also:
        programs.append(("also", args.also.split() + ["training_errors=F"]))
    print(f"case {args.case}: {case['about']}")
    print(f"data {data}; {args.threads} thread(s) per program; scratch {scratch}")
    if case.get("same_sparse"):
        # CUR's random draws differ between the programs: gapfit chooses the sparse points once,
        # both fit with them (the timings below are then those of the fit alone)
        wd = os.path.join(scratch, "sparse")
        os.makedirs(wd)
        _write_files(case, wd)
        status, wall, _ = run(gapfit_cmd + words + ["gp_file=sparse.xml", "sparsify_only_no_fit=T"], wd, env,
                              os.path.join(wd, "log.txt"))
        if status != 0:
            print(f"gapfit sparsify_only_no_fit=T failed (exit {status}; see {wd}/log.txt)", file=sys.stderr)
            return 1
        print(f"  sparse points chosen by gapfit in {wall:.1f} s; both programs fit with them")
        words = config_words(os.path.join(wd, "sparse.xml.fit.cfg"))
    for name, cmd in programs:
        wd = os.path.join(scratch, "sparse") if case.get("same_sparse") else os.path.join(scratch, name)
        os.makedirs(wd, exist_ok=True)
        _write_files(case, wd)
        log = os.path.join(wd, f"log_{name}.txt")
        status, wall, rss = run(cmd + words + [f"gp_file={name}.xml"], wd, env, log)
        results[name] = (status, wall, rss, os.path.join(wd, f"{name}.xml"))
        state = "ok" if status == 0 else f"FAILED (exit {status}; see {log})"
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
    if "also" in results and results["also"][0] == 0 and results["gapfit"][0] == 0:
        g, a = results["gapfit"], results["also"]
        print(f"| ratio gapfit/also ({args.also}) | {g[1] / a[1]:.3f} | {g[2] / a[2]:.3f} |")
    if "gap_fit" in results and results["gap_fit"][0] != 0:
        lines = open(_log(scratch, case, "gap_fit"), errors="replace").read().strip().splitlines()
        why = [l.strip() for l in lines if "Error allocating" in l or "SYSTEM ABORT" in l or "error" in l.lower()]
        print("\ngap_fit failed: " + " / ".join((why or lines[-3:])[:2]))
    rate = covariance_rate(_log(scratch, case, "gapfit")) if results["gapfit"][0] == 0 else None
    if rate:
        peak = dgemm_rate(args.threads)
        flops, kernel_s, phase_s = rate
        print(f"\nDGEMM rate of this machine ({args.threads} threads): {peak:.0f} GFLOP/s")
        print(f"gapfit covariance: {flops:.0f} GFLOP of matrix products; kernel rows {kernel_s:.1f} s = "
              f"{flops / kernel_s:.0f} GFLOP/s ({100 * flops / kernel_s / peak:.0f}% of DGEMM); whole phase with "
              f"descriptor gradients {phase_s:.1f} s = {100 * flops / phase_s / peak:.0f}% of DGEMM")
    if both:
        check = os.path.abspath(case["test_data"]) if case.get("test_data") else data
        de, df, same = compare_models(q[3], g[3], check)
        print(f"\nsparse points in common: {same}; the two models agree on the first 50 frames of "
              f"{os.path.basename(check)} to {de:.2e} eV/atom and {df:.2e} eV/Å")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(r[0] == 0 for r in results.values()) else 1


def _subset(path, every, scratch):
    """Every ``every``-th frame of an extended XYZ file, and its single-atom frames (e0), in the scratch folder."""
    from ase.io import read, write
    frames = read(path, ":")
    out = os.path.join(scratch, f"every{every}_" + os.path.basename(path))
    write(out, [f for k, f in enumerate(frames) if k % every == 0 or len(f) == 1], format="extxyz")
    return out


def _write_files(case, wd):
    for name, make in case.get("files", {}).items():
        with open(os.path.join(wd, name), "w") as fh:
            fh.write(make())


def _log(scratch, case, name):
    return os.path.join(scratch, "sparse" if case.get("same_sparse") else name, f"log_{name}.txt")


def config_words(path):
    """An options file (gapfit's two-step output) as argv words for either program."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from gapfit.options.syntax import split_fields, strip_comments
    text = strip_comments(open(path).read())
    words = split_fields(text.replace("{", "\x01").replace("}", "\x02"), separators=" \n")
    return [w.replace("\x01", "{").replace("\x02", "}") for w in words]


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
