"""Choose the σ of the Ta set's compressed-volume groups by a scan: one fit, then a refit per σ.

Usage: python choose_sigma.py train.xyz held_out.xyz OUT.txt

The Volume_A15/BCC/FCC groups are crystals compressed and stretched far from equilibrium (their
energies span eV/atom); with the default σ_E = 2 meV the GP spends its flexibility on them.  This
fits the training split once, keeping its kernel rows, and refits for each (σ_E, σ_V) of those
groups (a QR each: no descriptors are recomputed), scoring each model on the held-out split.  It
picks the setting with the lowest held-out energy RMSE and writes it, as gap_fit's
config_type_sigma value, to OUT.txt.
"""

import sys
import time

from gapfit import GapFit

GAP = ("distance_2b cutoff=5.0 cutoff_transition_width=1.0 covariance_type=ard_se delta=2.0 theta_uniform=0.75 "
       "n_sparse=30 sparse_method=uniform : "
       "soap l_max=4 n_max=8 atom_sigma=0.5 cutoff=5.0 cutoff_transition_width=0.5 central_weight=1.0 "
       "covariance_type=dot_product delta=0.2 zeta=2 n_sparse=400 sparse_method=cur_points")
VOLUME = ("Volume_A15", "Volume_BCC", "Volume_FCC")


def main(train, held_out, out):
    t0 = time.perf_counter()
    fit = GapFit(gap=GAP, energy_parameter_name="energy", force_parameter_name="forces",
                 virial_parameter_name="virial", e0_method="average", default_sigma=[0.002, 0.1, 0.05, 0.0],
                 sparse_jitter=1e-8, rnd_seed=1, training_errors=False, quiet=True).fit(train, keep_kernel_rows=True)
    t1 = time.perf_counter()
    grid = {"config_type_sigma": [{name: [sigma_e, 1.0, sigma_v, 0.0] for name in VOLUME}
                                  for sigma_e in (0.001, 0.003, 0.01, 0.05) for sigma_v in (0.05, 0.5)]}
    scan = fit.scan(grid, validation=held_out, objective="energy")
    t2 = time.perf_counter()
    print(f"choose_sigma: one fit {t1 - t0:.1f} s, {len(scan.table)} refits {t2 - t1:.1f} s; "
          f"σ of {', '.join(VOLUME)} against held-out RMSEs:")
    print(f"  {'sigma_E':>8} {'sigma_V':>8}  {'energy meV/atom':>15} {'forces eV/Å':>11} {'virial meV/atom':>15}")
    for row in scan.table:
        e, _, v, _ = next(iter(row["config_type_sigma"].values()))
        mark = "  <- lowest energy RMSE" if row["config_type_sigma"] == scan.best["config_type_sigma"] else ""
        print(f"  {e:8g} {v:8g}  {row['energy_rmse'] * 1e3:15.2f} {row['forces_rmse']:11.4f} "
              f"{row['virial_rmse'] * 1e3:15.2f}{mark}")
    chosen = scan.best["config_type_sigma"]
    text = ":".join(f"{name}:{':'.join(f'{s:g}' for s in values)}" for name, values in chosen.items())
    with open(out, "w") as fh:
        fh.write(text + "\n")
    print(f"choose_sigma: config_type_sigma={{{text}}}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
