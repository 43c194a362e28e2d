"""OpenBLAS kernel families (``OPENBLAS_CORETYPE``): which this CPU runs, and which two to test under.

OpenBLAS picks its kernels for the CPU at load time; ``OPENBLAS_CORETYPE`` overrides the choice
(numpy's, scipy's and the system's OpenBLAS all read it).  The families' GEMM and LAPACK results
differ in their last bits, so a decision taken at machine epsilon shows up as a difference between
them (issue 18: SkylakeX's kernels gave e0 = ±3e13 eV where Haswell's gave −4.02 eV).  A CPU can run
its own family and every older one, so the suite runs under the native family and under the next
older one with other kernels:

- AVX-512 CPUs (OpenBLAS's SkylakeX, Cooperlake, SapphireRapids): Haswell;
- AVX2 CPUs (Haswell, Zen): Sandybridge;
- AVX CPUs (Sandybridge): Nehalem.

Run as a script it prints the second family (``scripts/test.sh`` uses it), or nothing when there is
none (not x86-64, or OpenBLAS not found).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import List, Optional

#: (family, the CPU flags it needs), newest first
FAMILIES = [
    ("SkylakeX", {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"}),
    ("Haswell", {"avx2", "fma"}),
    ("Sandybridge", {"avx"}),
    ("Nehalem", {"sse4_2"}),
]
#: OpenBLAS's name for the native core → the family whose kernels it uses
NATIVE_FAMILY = {"SkylakeX": "SkylakeX", "Cooperlake": "SkylakeX", "SapphireRapids": "SkylakeX",
                 "Haswell": "Haswell", "Zen": "Haswell", "Sandybridge": "Sandybridge", "Nehalem": "Nehalem"}


def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def supported_families() -> List[str]:
    flags = cpu_flags()
    return [name for name, needs in FAMILIES if needs <= flags]


def native_core(python: str = sys.executable) -> Optional[str]:
    """The core OpenBLAS (numpy's) picks with ``OPENBLAS_CORETYPE`` unset, as threadpoolctl reports it."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = ("import numpy, threadpoolctl\n"
            "print(next((i.get('architecture') or '') for i in threadpoolctl.threadpool_info() "
            "if i.get('internal_api') == 'openblas'))")
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True)
    return out.stdout.strip() or None if out.returncode == 0 else None


def second_family(native: Optional[str] = None) -> Optional[str]:
    """The newest supported family older than the native one (other kernels), or None."""
    native = native if native is not None else native_core()
    family = NATIVE_FAMILY.get(native or "")
    names = [name for name, _ in FAMILIES]
    if family is None:
        return None
    older = names[names.index(family) + 1:]
    return next((name for name in older if name in supported_families()), None)


def kernel_environments() -> List[dict]:
    """Two environments for subprocesses: the native kernels (``OPENBLAS_CORETYPE`` unset) and the
    second family's (only the first when there is no second)."""
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    envs = [dict(base, GAPFIT_TEST_KERNELS=f"native ({native_core() or 'unknown'})")]
    second = second_family()
    if second:
        envs.append(dict(base, OPENBLAS_CORETYPE=second, GAPFIT_TEST_KERNELS=second))
    return envs


if __name__ == "__main__":
    print(second_family() or "")
