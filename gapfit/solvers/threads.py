"""BLAS threads for the LAPACK factorisations: one thread when more would only wait.

dtpqrt (the streaming fold) and dgeqrf/dormqr on a narrow A are many small BLAS calls.  OpenBLAS
threads that wait for cores busy with other work make them crawl: on the 2-core development
machine beside two other jobs, folding 430 rows into a 430² factor took 3.1 s with 2 threads and
0.014 s with one (1020²: 0.41 against 0.25 s; 2000²: 23.7 against 1.7 s), and the example's dense
QR (12.6k × 430) 17 s instead of 0.5 s.  So small problems always run on one thread, and larger
ones do when the cores are already busy (1-minute load average ≥ cores); otherwise BLAS keeps
its configured threads.
"""

from __future__ import annotations

import contextlib
import os

_CONTROLLER = None


def cores_busy() -> bool:
    try:
        return os.getloadavg()[0] >= (os.cpu_count() or 1)
    except OSError:  # pragma: no cover
        return False


@contextlib.contextmanager
def lapack_threads(n_columns: int, small: int = 1024):
    """Limit BLAS to one thread inside the block for ``n_columns`` ≤ ``small`` or on busy cores."""
    global _CONTROLLER
    limiter = None
    if n_columns <= small or cores_busy():
        try:
            if _CONTROLLER is None:
                from threadpoolctl import ThreadpoolController
                _CONTROLLER = ThreadpoolController()
            limiter = _CONTROLLER.limit(limits=1, user_api="blas")
        except Exception:  # pragma: no cover (threadpoolctl missing, or no BLAS found)
            limiter = None
    try:
        yield
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
