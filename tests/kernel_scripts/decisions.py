"""Discrete decisions that used to hang on the last bits of BLAS results, under whatever OpenBLAS
kernels this process has (tests/test_decisions.py runs it under two families); prints JSON.

- which soap radial bases can be built (990 settings of basis, n_max and atom_sigma: near n_max 11
  for POLY and 18 for GTO the overlap is singular to working precision);
- the best point of a likelihood scan over sparse_jitter values whose objectives differ only by
  rounding.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np

from gapfit import GapFit
from gapfit.descriptors.soap_basis import RadialBasis

DATA = Path(__file__).resolve().parent.parent / "data" / "quip_gapfit_tests"


def radial_bases():
    built = {}
    for kind in ("EQUISPACED_GAUSS", "GTO", "POLY"):
        for n in range(1, 31):
            for sigma in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.5, 2.0):
                try:
                    basis = RadialBasis(kind, n, 4, 0.5 / sigma ** 2, 5.0 + sigma * math.sqrt(20.0 * math.log(10.0)))
                    built[f"{kind} {n} {sigma}"] = bool(np.all(np.isfinite(basis.transform)))
                except np.linalg.LinAlgError:
                    built[f"{kind} {n} {sigma}"] = False
    return built


def jitter_scan():
    fit = GapFit(gap="soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=4.0 cutoff_transition_width=1.0 "
                     "covariance_type=dot_product delta=1.0 zeta=2 n_sparse=60 sparse_method=cur_points",
                 energy_parameter_name="dft_energy", force_parameter_name="dft_force",
                 virial_parameter_name="dft_virial", default_sigma=[0.01, 0.5, 0.5, 0.0], e0_method="average",
                 sparse_jitter=1e-10, rnd_seed=1, training_errors=False, quiet=True)
    fit.fit(str(DATA / "Si.np1.xyz"), keep_kernel_rows=True)
    scan = fit.scan({"sparse_jitter": [1e-16, 2e-16, 5e-16, 1e-15, 2e-15]})
    return {"best": scan.best["sparse_jitter"], "objectives": [row["objective"] for row in scan.table]}


if __name__ == "__main__":
    json.dump({"radial_bases": radial_bases(), "jitter_scan": jitter_scan()}, sys.stdout)
