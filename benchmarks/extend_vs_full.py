"""Extending a fit against fitting everything again (issue 9, acceptance 3).

On a Ta set (default: the example data, 363 frames): a base fit on the first half of the frames
with a checkpoint, its extension with the second half (extend_checkpoint=), and the fit on all the
frames with the base fit's sparse points, e0 and θ.  Prints each run's covariance-phase time, the
extension's share of the full fit's, and the largest relative difference of α; the rounding floor
of α is measured as the change when every position moves by ±1 ulp.

    .venv/bin/python benchmarks/extend_vs_full.py [--data FILE] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

GAP = ("distance_2b cutoff=5.0 covariance_type=ard_se delta=1.0 theta_uniform=0.75 n_sparse=20 sparse_method=uniform"
       " : soap l_max=4 n_max=8 atom_sigma=0.5 cutoff=5.0 covariance_type=dot_product zeta=2 delta=0.1 n_sparse=500"
       " sparse_method=cur_points")
OPTIONS = ["e0_method=average", "default_sigma={0.002 0.1 0.05 0.0}", "sparse_jitter=1e-8", "energy_parameter_name=energy",
           "force_parameter_name=forces", "virial_parameter_name=virial", "rnd_seed=1", "do_copy_at_file=F"]


def gapfit(args, cwd, env):
    proc = subprocess.run([sys.executable, "-m", "gapfit", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"gapfit {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr}")
    phase = re.search(r"Covariance K_NM[^:\n]*: ([0-9.]+) s wall", proc.stdout)
    return float(phase.group(1))


def alpha(path):
    from gapfit.model.gap_xml import read_model
    return np.concatenate([c.alpha for c in read_model(path).coordinates])


def base_e0(path):
    """(symbol, e0) of every species of a model with a non-zero e0 (the model's e0 is indexed by Z)."""
    from ase.data import chemical_symbols

    from gapfit.model.gap_xml import read_model
    model = read_model(path)
    return [(chemical_symbols[z], float(model.e0[z])) for z in range(1, len(model.e0)) if model.e0[z] != 0.0]


def main(argv=None):
    from ase.io import read, write

    from conftest import same_sparse_points, ulp_copy
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(ROOT, "examples", "data", "Ta_snap_train.xyz"))
    p.add_argument("--threads", type=int, default=1, help="BLAS threads")
    args = p.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    d = tempfile.mkdtemp(prefix="gapfit-extend-")
    frames = read(args.data, ":")
    half = len(frames) // 2
    write(os.path.join(d, "all.xyz"), frames)
    write(os.path.join(d, "old.xyz"), frames[:half])
    write(os.path.join(d, "new.xyz"), frames[half:])
    base = gapfit(["at_file=old.xyz", "gap={" + GAP + "}", "gp_file=base.xml", "checkpoint_file=base.ckpt", *OPTIONS],
                  d, env)
    ext = gapfit(["at_file=new.xyz", "extend_checkpoint=base.ckpt", "gp_file=ext.xml"], d, env)
    # the full fit: the base fit's sparse points and its e0 (an average over the first half only)
    cfg = same_sparse_points(os.path.join(d, "base.xml"), "checkpoint_file", "e0_method", "e0")
    e0 = "e0={" + ":".join(f"{s}:{v!r}" for s, v in base_e0(os.path.join(d, "base.xml"))) + "}"
    full = gapfit([f"config_file={cfg}", e0, "at_file=all.xyz", "gp_file=full.xml", "linear_solver=streaming"], d,
                  env)
    from pathlib import Path
    ulp_copy(Path(d) / "all.xyz", Path(d) / "ulp.xyz")
    gapfit([f"config_file={cfg}", e0, "at_file=ulp.xyz", "gp_file=ulp.xml", "linear_solver=streaming"], d, env)
    a_full, a_ext, a_ulp = alpha(os.path.join(d, "full.xml")), alpha(os.path.join(d, "ext.xml")), alpha(
        os.path.join(d, "ulp.xml"))
    scale = np.abs(a_full).max()
    print(f"data {args.data}: base {half} frames, extension {len(frames) - half}, M = {a_full.size}; "
          f"{args.threads} BLAS thread(s); scratch {d}")
    print("| run | covariance phase (s) |")
    print("|---|---|")
    print(f"| base fit (first half) | {base:.2f} |")
    print(f"| extension (second half) | {ext:.2f} |")
    print(f"| full fit (all frames, same sparse points) | {full:.2f} |")
    print(f"extension / full covariance time: {ext / full:.2f}")
    print(f"max |Δα| / max |α|, extension vs full: {np.abs(a_ext - a_full).max() / scale:.1e} "
          f"(rounding floor, ±1-ulp positions: {np.abs(a_ulp - a_full).max() / scale:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
