"""Evaluate a GAP XML on an extended XYZ file: RMSE of energies per atom and forces.

Usage: python evaluate.py gp.xml data.xyz
Uses gapfit's ASE calculator; if quippy is installed, also checks that QUIP itself
loads the model and gives the same energies.
"""

import sys

import numpy as np
from ase.io import read

from gapfit import GapCalculator


def main(model, data):
    frames = read(data, ":")
    calc = GapCalculator(model)
    de, df = [], []
    for atoms in frames:
        e_ref, f_ref = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = calc
        de.append((atoms.get_potential_energy() - e_ref) / len(atoms))
        df.append((atoms.get_forces() - f_ref).ravel())
    print(f"{model}: {len(frames)} frames, energy RMSE {1000 * np.sqrt(np.mean(np.square(de))):.1f} meV/atom, "
          f"force RMSE {np.sqrt(np.mean(np.square(np.concatenate(df)))):.3f} eV/Å")
    try:
        from quippy.potential import Potential
    except ImportError:
        print("quippy is not installed: skipped the check that QUIP itself loads the model "
              "(pip install quippy-ase, or bash scripts/setup.sh --tests)")
        return
    pot = Potential(param_filename=model)
    worst = 0.0
    for atoms in frames[:20]:
        ours = calc.get_potential_energy(atoms)
        a = atoms.copy()
        a.calc = pot
        worst = max(worst, abs(a.get_potential_energy() - ours) / max(abs(ours), 1.0))
    print(f"QUIP (quippy) loads {model}; its energies agree with gapfit's to {worst:.1e} (relative)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
