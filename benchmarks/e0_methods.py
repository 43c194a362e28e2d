"""e0 methods compared on InP: gap_fit's ``average`` against gapfit's ``least_squares`` (one e0 per
species from the compositions) and ``joint`` (that e0 plus one offset per species fitted with the GP).

Usage (from the repository root):

    .venv/bin/python benchmarks/e0_methods.py [--data ../shared/data/inp_snap/InP_snap_train.xyz]
                                             [--every 8] [--soap] [--threads 2]

Each method fits the same frames (every ``every``-th frame of the data) with compare_gap_fit.py's
distance_2b options (``--soap``: plus its inp_small soap), and is scored on the training frames
and on held-out frames (the frames half-way between them, every ``every``-th from ``every // 2``).
Printed per method: the e0 of each species, and the energy (meV/atom) and force (eV/Å) RMSEs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from compare_gap_fit import D2B  # noqa: E402
from fit_options import parse_data_and_threads  # noqa: E402

SOAP = ("soap l_max=4 n_max=4 atom_sigma=0.5 zeta=2 cutoff=4.0 cutoff_transition_width=0.5 central_weight=1.0 "
        "n_sparse=500 delta=0.1 covariance_type=dot_product sparse_method=cur_points")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                  "inp_snap", "InP_snap_train.xyz"))
    p.add_argument("--every", type=int, default=8)
    p.add_argument("--soap", action="store_true", help="distance_2b + soap instead of distance_2b alone")
    args = parse_data_and_threads(p, argv)
    if args is None:
        return 2
    from ase.io import read

    from ase.data import chemical_symbols

    import gapfit
    frames = read(args.data, ":")
    train, held = frames[::args.every], frames[args.every // 2::args.every]
    species = sorted({int(z) for f in train for z in f.numbers})
    gap = D2B + (" : " + SOAP if args.soap else "")
    print(f"{len(train)} training frames (every {args.every}th), {len(held)} held out; gap={{{gap}}}")
    print("| e0_method | e0 (eV) | training energy RMSE (meV/atom) | held-out energy | held-out forces (eV/Å) | fit (s) |")
    print("|---|---|---|---|---|---|")
    for method in ("average", "least_squares", "joint"):
        t0 = time.perf_counter()
        fit = gapfit.GapFit(gap=gap, e0_method=method, energy_parameter_name="energy", force_parameter_name="forces",
                            virial_parameter_name="virial", default_sigma=[0.002, 0.1, 0.05, 0.0],
                            sparse_jitter=1e-8, rnd_seed=1, quiet=True).fit(train)
        wall = time.perf_counter() - t0
        training = fit.errors_["training"]["overall"]
        scored = next(row for row in fit.score(held) if row["config_type"] == "overall")
        e0 = ", ".join(f"{chemical_symbols[z]} {fit.e0_[z]:.4f}" for z in species)
        print(f"| {method} | {e0} | {training['energy']['rmse'] * 1e3:.3f} | {scored['energy']['rmse'] * 1e3:.3f} | "
              f"{scored['forces']['rmse']:.4f} | {wall:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
