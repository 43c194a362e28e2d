#!/usr/bin/env bash
# Fit a Ta GAP (two-body + SOAP, as in gap_fit's usual recipe) to the Ta SNAP data set with
# gapfit, then check it with gapfit's ASE calculator (and QUIP itself, when quippy is installed).
# Usage: bash examples/run_example.sh [gapfit-executable]    (after bash scripts/setup.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
gapfit=${1:-"$here/../.venv/bin/gapfit"}
python="$(dirname "$gapfit")/python"
out="$here/output"
mkdir -p "$out"
cd "$out"

# The Volume_* groups reach extreme compression; they get larger sigmas (config_type_sigma).
"$gapfit" at_file="$here/data/Ta_snap_train.xyz" \
    energy_parameter_name=energy force_parameter_name=forces virial_parameter_name=virial \
    e0_method=average default_sigma={0.002 0.1 0.05 0.0} \
    config_type_sigma={Volume_A15:0.05:1.0:0.5:0:Volume_BCC:0.05:1.0:0.5:0:Volume_FCC:0.05:1.0:0.5:0} \
    "gap={distance_2b cutoff=5.0 cutoff_transition_width=1.0 covariance_type=ard_se delta=2.0 theta_uniform=0.75
          n_sparse=30 sparse_method=uniform :
          soap l_max=4 n_max=8 atom_sigma=0.5 cutoff=5.0 cutoff_transition_width=0.5 central_weight=1.0
          covariance_type=dot_product delta=0.2 zeta=2 n_sparse=400 sparse_method=cur_points}" \
    sparse_jitter=1e-8 rnd_seed=1 do_copy_at_file=F gp_file=ta_gap.xml

"$python" "$here/evaluate.py" ta_gap.xml "$here/data/Ta_snap_train.xyz"
