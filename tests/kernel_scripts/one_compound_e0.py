"""Fits of one-compound data with e0_method=least_squares and joint, under whatever OpenBLAS kernels
this process has (tests/test_e0.py runs it under two families); prints JSON.

For each data set and method: the warnings, e0 (before and after the joint offsets), and the
predictions on held-out frames of the fit and of refits with every training position moved by
±1 ulp (the fit's rounding floor under these kernels)."""

import io
import json
import sys

import numpy as np
from ase import Atoms

import gapfit

E0_TRUE = {49: -2.4567891, 15: -5.4321098}  # In, P (eV)
GAP_2B = ("distance_2b cutoff=4.0 covariance_type=ard_se delta=0.5 theta_uniform=1.0 n_sparse=10 "
          "sparse_method=uniform add_species=T")
OPTIONS = dict(energy_parameter_name="energy", force_parameter_name="no_forces", default_sigma=[0.002, 0.1, 0.05, 0.0],
               sparse_jitter=1e-8, rnd_seed=1, training_errors=False, gap=GAP_2B)


def cluster(symbols, rng):
    """A random compact cluster of ``symbols``, its energy e0 + a smooth pair term."""
    n = len(Atoms(symbols))
    while True:
        positions = rng.uniform(0.0, 1.6 * n ** (1 / 3) + 1.0, size=(n, 3))
        atoms = Atoms(symbols, positions=positions, cell=[20.0, 20.0, 20.0], pbc=False)
        d = atoms.get_all_distances()[np.triu_indices(n, 1)]
        if d.min() > 1.8 and d.max() < 3.9:
            break
    atoms.info["energy"] = float(sum(E0_TRUE[z] for z in atoms.numbers) + np.sum(np.exp(-(d - 2.5) ** 2) - 1.0))
    return atoms


def data_sets():
    rng = np.random.default_rng(18)
    return {
        "10 InP dimers": [cluster("InP", rng) for _ in range(10)],
        "38 InP frames of 2 and 4 atoms": [cluster("InP" if k % 2 else "In2P2", rng) for k in range(38)],
        "25 In3P2 frames": [cluster("In3P2", rng) for _ in range(25)],
    }, {
        "10 InP dimers": [cluster("InP", rng) for _ in range(4)],
        "38 InP frames of 2 and 4 atoms": [cluster("In2P2", rng) for _ in range(4)],
        "25 In3P2 frames": [cluster("In3P2", rng) for _ in range(4)],
    }


def moved(frames, seed):
    rng = np.random.default_rng(seed)
    out = []
    for atoms in frames:
        m = atoms.copy()
        m.positions = atoms.positions * (1.0 + rng.choice([-1.0, 1.0], atoms.positions.shape) * 2.0 ** -52)
        out.append(m)
    return out


def predictions(fit, frames):
    return [{"energy": float(p["energy"]), "forces": np.asarray(p["forces"]).tolist()} for p in fit.predict(frames)]


def main():
    train, held_out = data_sets()
    out = {}
    for name, frames in train.items():
        for method in ("least_squares", "joint"):
            log = io.StringIO()
            err = sys.stderr
            sys.stderr = io.StringIO()  # the warnings go to stderr (rank 0's Reporter)
            try:
                fit = gapfit.GapFit(stream=log, e0_method=method, **OPTIONS).fit(frames)
                warnings = sys.stderr.getvalue()
            finally:
                sys.stderr = err
            floor = [predictions(gapfit.GapFit(quiet=True, e0_method=method, **OPTIONS).fit(moved(frames, s)),
                                 held_out[name]) for s in range(2)]
            base = fit._e0_base if fit._e0_base is not None else fit.e0_
            out[f"{name}, {method}"] = {
                "warnings": warnings, "e0": {z: float(fit.e0_[z]) for z in E0_TRUE},
                "e0_base": {z: float(base[z]) for z in E0_TRUE},
                "compositions": [[int(np.count_nonzero(f.numbers == z)) for z in E0_TRUE] for f in frames],
                "energies": [f.info["energy"] for f in frames],
                "predictions": predictions(fit, held_out[name]), "moved": floor,
                "n_atoms": [len(f) for f in held_out[name]]}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
