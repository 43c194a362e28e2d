"""How fast is gapfit's soap_turbo descriptor (values and gradients) compared with quippy's?

Usage (from the repository root):

    .venv/bin/python benchmarks/soap_turbo_descriptor.py [--data ../shared/data/ta_snap/Ta_snap_train.xyz]
                                                        [--frames 40] [--threads 1] [--repeat 3]

The same frames (the first ``--frames`` of the data) go through gapfit's ``SoapTurbo.calc(grad=True)``
(neighbour list included) and quippy's ``Descriptor(...).calc(atoms, grad=True)``, for two settings:
the Fe GAP-22 long-range piece (one species, alpha_max 8, l_max 8, trivial compression, r_h 5 Å) and
a smaller poly3gauss one (alpha_max 4, l_max 4, width scalings).  The best of ``--repeat`` wall times
is printed per program, with the ratio gapfit / quippy (below 1: gapfit is faster) and the largest
value difference as a sanity check.  quippy runs in this process (its W/S state is recomputed because
the two settings differ in alpha_max).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fit_options import parse_data_and_threads  # noqa: E402

SETTINGS = {
    "GAP-22 long range (A 8, l 8, trivial)":
        "soap_turbo l_max=8 alpha_max=8 atom_sigma_r=0.5 atom_sigma_t=0.5 rcut_hard=5.0 rcut_soft=4.0 "
        "basis=poly3 scaling_mode=polynomial amplitude_scaling=1.0 radial_enhancement=1 compress_mode=trivial",
    "poly3gauss (A 4, l 4, scalings)":
        "soap_turbo l_max=4 alpha_max=4 atom_sigma_r=0.4 atom_sigma_t=0.4 atom_sigma_r_scaling=0.1 "
        "atom_sigma_t_scaling=0.1 amplitude_scaling=2.0 rcut_hard=4.5 rcut_soft=3.5 basis=poly3gauss",
}


def _best(fn, repeat):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                  "ta_snap", "Ta_snap_train.xyz"))
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--repeat", type=int, default=3)
    args = parse_data_and_threads(p, argv)
    if args is None:
        return 2
    import numpy as np
    from ase.io import read
    from quippy.descriptors import Descriptor

    from gapfit.config.gaps import parse_gap_piece
    from gapfit.descriptors.neighbours import neighbour_list

    frames = read(args.data, f":{args.frames}")
    z = int(frames[0].numbers[0])
    n_atoms = sum(len(f) for f in frames)
    print(f"{len(frames)} frames, {n_atoms} atoms, {args.threads} BLAS thread(s), best of {args.repeat}")
    print("| setting | dimensions | gapfit (s) | quippy (s) | gapfit / quippy | max |Δx| |")
    print("|---|---|---|---|---|---|")
    for name, text in SETTINGS.items():
        text = f"{text} species_Z={z}"
        desc = parse_gap_piece(text + " n_sparse=1 delta=1 covariance_type=dot_product zeta=2", 1).make_descriptor()

        def ours():
            return [desc.calc(f, neighbour_list(f.positions, np.asarray(f.cell), f.pbc, desc.cutoff), grad=True)
                    for f in frames]
        quip = Descriptor(text)

        def theirs():
            return [quip.calc(f, grad=True) for f in frames]
        t_ours, v_ours = _best(ours, args.repeat)
        t_quip, v_quip = _best(theirs, args.repeat)
        dx = max(float(np.abs(a.x - np.asarray(b["data"])).max()) for a, b in zip(v_ours, v_quip))
        print(f"| {name} | {desc.dimensions} | {t_ours:.3f} | {t_quip:.3f} | {t_ours / t_quip:.2f} | {dx:.1e} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
