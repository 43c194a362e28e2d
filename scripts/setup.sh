#!/usr/bin/env bash
# Set up gapfit on a fresh Debian/Ubuntu machine: system MPI + ScaLAPACK + OpenBLAS,
# then a virtual environment in .venv with gapfit and its test extra (quippy-ase, the oracle).
# Usage: bash scripts/setup.sh            (from the repository root; idempotent)
set -euo pipefail
cd "$(dirname "$0")/.."

packages="openmpi-bin libscalapack-openmpi-dev libopenblas0-pthread python3-venv"
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
echo "setup: installing gapfit and its test extra into .venv"
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup: done (.venv/bin/gapfit, .venv/bin/gap_fit from quippy-ase)"
