"""Refit, scan and committee through the Python API, serially or under mpirun (tests/test_refit.py).

Usage: refit_check.py TRAIN.xyz HELD.xyz OUT.json [--mpi]; rank 0 writes α of the base fit and of a
refit, the log marginal likelihoods, a scan's table and the first committee member's α.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402

import gapfit  # noqa: E402
from gapfit.runtime.parallel import get_comm  # noqa: E402

GAP = ("distance_2b cutoff=5.0 covariance_type=ard_se delta=2.0 theta_uniform=0.75 n_sparse=15 sparse_method=uniform : "
       "soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=4.0 cutoff_transition_width=0.5 central_weight=1.0 "
       "covariance_type=dot_product delta=0.2 zeta=2 n_sparse=40 sparse_method=cur_points")


def main():
    train, held, out = sys.argv[1:4]
    comm = get_comm(use_mpi="--mpi" in sys.argv)
    fit = gapfit.GapFit(comm=comm, quiet=True, gap=GAP, energy_parameter_name="energy", force_parameter_name="forces",
                        virial_parameter_name="virial", e0_method="average", sparse_jitter=1e-4, rnd_seed=1,
                        training_errors=False, default_sigma=[0.01, 0.2, 0.1, 0.0], linear_solver="streaming")
    fit.fit(train, keep_kernel_rows=True)
    refit = fit.refit(default_sigma=[0.005, 0.1, 0.05, 0.0], delta=[1.0, 0.3])
    scan = fit.scan({"energy_sigma": [0.003, 0.03], "force_sigma": [0.05, 0.2]}, validation=held)
    folds = fit.scan({"energy_sigma": [0.01, 0.1]}, folds=3, objective="energy")
    member = fit.committee(2, seed=1)[0]
    if comm.rank == 0:
        data = {"alpha": np.concatenate(fit.alpha_).tolist(), "refit_alpha": np.concatenate(refit.alpha_).tolist(),
                "log_likelihood": fit.log_likelihood_, "refit_log_likelihood": refit.log_likelihood_,
                "scan": scan.table, "folds": folds.table, "best": scan.best,
                "member": np.concatenate([c.alpha for c in member.coordinates]).tolist()}
        with open(out, "w") as fh:
            json.dump(data, fh)


if __name__ == "__main__":
    main()
