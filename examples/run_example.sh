#!/usr/bin/env bash
# Fit a two-body GAP to the Ta SNAP data set with gapfit, then check it with
# gapfit's ASE calculator (and quippy, when installed).
# Usage: bash examples/run_example.sh [gapfit-executable]    (from the repository root)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
gapfit=${1:-"$here/../.venv/bin/gapfit"}
python="$(dirname "$gapfit")/python"
out="$here/output"
mkdir -p "$out"
cd "$out"

"$gapfit" at_file="$here/data/Ta_snap_train.xyz" \
    gap={distance_2b cutoff=5.0 cutoff_transition_width=1.0 covariance_type=ard_se delta=1.0 theta_uniform=0.5 n_sparse=30 sparse_method=uniform} \
    e0_method=average energy_parameter_name=energy force_parameter_name=forces virial_parameter_name=virial \
    config_type_sigma={Volume_A15:0.05:1.0:0.5:0:Volume_BCC:0.05:1.0:0.5:0:Volume_FCC:0.05:1.0:0.5:0} \
    default_sigma={0.002 0.1 0.05 0.0} sparse_jitter=1e-8 rnd_seed=1 do_copy_at_file=F gp_file=ta_2b.xml

"$python" "$here/evaluate.py" ta_2b.xml "$here/data/Ta_snap_train.xyz"
