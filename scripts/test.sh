#!/usr/bin/env bash
# The test suite, twice: under the CPU's own OpenBLAS kernels, then under a second kernel family
# (OPENBLAS_CORETYPE; tests/openblas_kernels.py picks the next older family this CPU runs: Haswell on
# AVX-512 machines, Sandybridge on AVX2 ones).  The families' BLAS and LAPACK results differ in their
# last bits, so a result that depends on which ran is a decision taken at machine epsilon: a bug.
# Extra arguments go to pytest (e.g. bash scripts/test.sh -x -k e0).  Run after scripts/setup.sh --tests.
set -euo pipefail
cd "$(dirname "$0")/.."
unset OPENBLAS_CORETYPE
native=$(.venv/bin/python -c "import numpy, threadpoolctl; print(next((i.get('architecture') or '?') for i in threadpoolctl.threadpool_info() if i.get('internal_api') == 'openblas'))")
second=$(.venv/bin/python tests/openblas_kernels.py)
echo "tests: pass 1 of 2: the CPU's own OpenBLAS kernels ($native)"
.venv/bin/python -m pytest -q tests "$@"
if [ -n "$second" ]; then
    echo "tests: pass 2 of 2: OPENBLAS_CORETYPE=$second"
    OPENBLAS_CORETYPE=$second .venv/bin/python -m pytest -q tests "$@"
else
    echo "tests: no second OpenBLAS kernel family on this CPU ($native): one pass only"
fi
