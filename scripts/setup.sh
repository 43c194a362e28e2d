#!/usr/bin/env bash
# Set up gapfit on a fresh Debian/Ubuntu machine: system MPI + ScaLAPACK + OpenBLAS,
# then a virtual environment .venv with gapfit.
#   bash scripts/setup.sh           gapfit only
#   bash scripts/setup.sh --tests   also the test extra (quippy-ase, the oracle) and a local
#                                   SLURM (slurmctld, slurmd, munge) for the batch-job test
# Run from anywhere; idempotent.  Uses sudo for apt-get when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
for arg in "$@"; do
    case "$arg" in
        --tests) tests=1 ;;
        *) echo "setup.sh: unknown argument $arg (use --tests)" >&2; exit 2 ;;
    esac
done

packages="openmpi-bin libscalapack-openmpi-dev libopenblas0-pthread python3-venv"
if [ $tests = 1 ]; then
    packages="$packages slurmctld slurmd slurm-client munge libpmix-dev"
fi
missing=""
for p in $packages; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($python --version)"
    $python -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ $tests = 1 ]; then
    echo "setup: installing gapfit with its test extra (quippy-ase) into .venv"
    .venv/bin/python -m pip install -q -e '.[test]'
else
    echo "setup: installing gapfit with its plot extra (matplotlib, for parity plots) into .venv"
    .venv/bin/python -m pip install -q -e '.[plot]'
fi
echo "setup: done: .venv/bin/gapfit"
echo "setup: put gapfit, gapfit-eval and the environment's python on PATH with: source .venv/bin/activate"
