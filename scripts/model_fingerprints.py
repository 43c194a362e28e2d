"""Fingerprints of the models gapfit writes for the test fixtures, to show that a change of the code's
structure left its output byte for byte the same (issue 19).

Usage (from a checkout, with its .venv):

    .venv/bin/python scripts/model_fingerprints.py OUT.json [--work DIR]
    python3 scripts/model_fingerprints.py --compare BEFORE.json AFTER.json

Each case fits with the gapfit of the checkout the script is in (``python -m gapfit``, under
``mpirun -n 2`` where the case says so) and records the SHA-256 of every file the fit writes (the
model XML and its sparseX files), with the timestamped label (``GAP_2026_...``) replaced by
``LABEL`` in names and contents (and the fit's folder by ``FOLDER``).  The cases are the fixtures
of tests/test_mpi.py and tests/test_streaming.py: distance_2b, soap, angle_3b with a Glue core,
distance_Nb, e0_method=joint, the streaming solver, sparsify_only_no_fit, and MPI with P = 2.  Run it on the commit before a change and after it, then
compare: every fingerprint must be equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
SI_NP2 = DATA / "quip_gapfit_tests" / "SiC.np2.xyz"
TA = ROOT / "examples" / "data" / "Ta_snap_train.xyz"
CORE = DATA / "core" / "sic_test_glue.xml"

SI = ["energy_parameter_name=dft_energy", "force_parameter_name=dft_force", "virial_parameter_name=dft_virial",
      "default_sigma={0.01 1.0 0.5 0.0}", "sparse_jitter=1e-4", "rnd_seed=1", "do_copy_at_file=F",
      "training_errors=F"]
TA_OPTS = ["e0_method=average", "energy_parameter_name=energy", "force_parameter_name=forces",
           "virial_parameter_name=virial", "default_sigma={0.002 0.1 0.05 0.0}", "sparse_jitter=1e-5", "rnd_seed=1",
           "do_copy_at_file=F", "training_errors=F"]
D2B = ("distance_2b cutoff=5.0 cutoff_transition_width=1.0 covariance_type=ard_se delta=1.0 theta_uniform=0.5 "
       "n_sparse=20 sparse_method=uniform")
SOAP = D2B + (" : soap l_max=4 n_max=6 atom_sigma=0.5 cutoff=4.0 cutoff_transition_width=0.5 delta=0.2 "
              "covariance_type=dot_product zeta=2 n_sparse=60 sparse_method=cur_points")
ANGLE_CORE = ("distance_2b cutoff=4.0 covariance_type=pp delta=1.0 theta_uniform=3.0 n_sparse=15 sparse_method=uniform "
              ": angle_3b cutoff=3.0 cutoff_transition_width=0.8 covariance_type=pp delta=0.5 f0=0.1 "
              "theta_uniform=2.5 n_sparse=15 sparse_method=uniform")
NB = ("distance_Nb order=2 cutoff=4.0 covariance_type=ard_se delta=1.0 theta_uniform=1.0 n_sparse=10 "
      "sparse_method=uniform : distance_Nb order=3 cutoff=3.0 compact_clusters=F covariance_type=ard_se delta=0.5 "
      "theta_fac=0.5 n_sparse=20 sparse_method=uniform")

# name: (data, every n-th frame, options, gap string, MPI ranks)
CASES = {
    "SiC distance_2b": (SI_NP2, 1, SI, D2B, 1),
    "SiC soap": (SI_NP2, 1, SI, SOAP, 1),
    "SiC angle_3b + Glue core": (SI_NP2, 1, SI + ["e0_method=average", "core_ip_args={IP Glue label=SiC_test}",
                                                  f"core_param_file={CORE}"], ANGLE_CORE, 1),
    "SiC distance_Nb": (SI_NP2, 1, SI + ["e0_method=average"], NB, 1),
    "SiC e0_method=joint": (SI_NP2, 1, SI + ["e0_method=joint"], D2B, 1),
    "SiC soap, streaming": (SI_NP2, 1, SI + ["linear_solver=streaming"], SOAP, 1),
    "SiC soap, sparsify_only_no_fit": (SI_NP2, 1, SI + ["sparsify_only_no_fit=T"], SOAP, 1),
    "Ta soap": (TA, 3, TA_OPTS, SOAP, 1),
    "SiC soap, P=2": (SI_NP2, 1, SI, SOAP, 2),
    "SiC soap, streaming, P=2": (SI_NP2, 1, SI + ["linear_solver=streaming"], SOAP, 2),
    "SiC e0_method=joint, P=2": (SI_NP2, 1, SI + ["e0_method=joint"], D2B, 2),
}
LABEL = re.compile(rb"GAP_\d{4}(_\d+){7}")


def _copy_frames(source: Path, dest: Path, every: int) -> None:
    if every == 1:
        shutil.copy(source, dest)
        return
    lines, out, k, frame = source.read_text().splitlines(keepends=True), [], 0, 0
    while k < len(lines):
        n = int(lines[k].split()[0]) + 2
        if frame % every == 0:
            out.extend(lines[k:k + n])
        k, frame = k + n, frame + 1
    dest.write_text("".join(out))


def run_case(name, work: Path) -> dict:
    data, every, options, gap, ranks = CASES[name]
    folder = work / re.sub(r"[^A-Za-z0-9]+", "_", name)
    folder.mkdir(parents=True)
    _copy_frames(data, folder / "train.xyz", every)
    cmd = [sys.executable, "-m", "gapfit", "at_file=train.xyz", "gap={" + gap + "}", "gp_file=gp.xml", *options]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONPATH=str(ROOT))
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), "--oversubscribe"] + cmd
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: gapfit failed\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    prints = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("gp.xml"):
            key = LABEL.sub(b"LABEL", path.name.encode()).decode()
            text = LABEL.sub(b"LABEL", path.read_bytes()).replace(str(folder).encode(), b"FOLDER")
            prints[key] = hashlib.sha256(text).hexdigest()
    return prints


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", help="write the fingerprints here (JSON)")
    p.add_argument("--work", help="folder for the fits (default: a temporary one)")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two fingerprint files")
    args = p.parse_args(argv)
    if args.compare:
        before, after = (json.loads(Path(f).read_text()) for f in args.compare)
        bad = [f"{case}: {f}" for case in sorted(set(before) | set(after))
               for f in sorted(set(before.get(case, {})) | set(after.get(case, {})))
               if before.get(case, {}).get(f) != after.get(case, {}).get(f)]
        n = sum(len(v) for v in before.values())
        print(f"{n} files in {len(before)} cases: " + ("all byte-identical" if not bad else
                                                        f"{len(bad)} differ:\n  " + "\n  ".join(bad)))
        return 1 if bad else 0
    if not args.out:
        p.error("give OUT.json, or --compare BEFORE AFTER")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gapfit-fingerprints-"))
    prints = {}
    for name in CASES:
        prints[name] = run_case(name, work)
        print(f"{name}: {len(prints[name])} files", flush=True)
    Path(args.out).write_text(json.dumps(prints, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
