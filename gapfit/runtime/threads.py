"""BLAS threads for the LAPACK factorisations: one thread when more would only wait.

dtpqrt (the streaming fold) and dgeqrt/dgemqrt on a narrow A are many small BLAS calls.  OpenBLAS
threads that wait for cores busy with other work make them crawl: on the 2-core development
machine beside two other jobs, folding 430 rows into a 430² factor took 3.1 s with 2 threads and
0.014 s with one (1020²: 0.41 against 0.25 s; 2000²: 23.7 against 1.7 s), and the example's dense
QR (12.6k × 430) 17 s instead of 0.5 s.  So small problems always run on one thread, and larger
ones do when other processes keep the cores busy; otherwise BLAS keeps its configured threads.

"Other processes" is the CPU time the machine spent outside this process (``/proc/stat`` less
this process's own user and system time), not the load average: a long fit alone on the machine
raises the load average to its own thread count, and would then have starved itself of threads
(InP-paper's dense QR ran on one thread at 13 GFLOP/s that way).
"""

from __future__ import annotations

import contextlib
import os
import time

_CONTROLLER = None
#: seconds: a busy-ness measured longer ago than this is measured again
STALE = 60.0
#: seconds the first measurement (or one after a stale one) watches the machine for
FIRST_INTERVAL = 0.25
_last = {"sample": None, "busy": False}


def _sample():
    """(monotonic time, CPU seconds of the whole machine not idle, CPU seconds of this process)."""
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    own = os.times()
    return time.monotonic(), (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_processes_busy() -> bool:
    """Whether processes other than this one have used at least half of the cores lately."""
    cores = os.cpu_count() or 1
    try:
        before = _last["sample"]
        if before is None or time.monotonic() - before[0] > STALE:
            before = _sample()
            time.sleep(FIRST_INTERVAL)
        now = _sample()
    except (OSError, ValueError, IndexError):  # no /proc: the load average, own threads included
        try:
            return os.getloadavg()[0] >= cores
        except OSError:  # pragma: no cover
            return False
    elapsed = now[0] - before[0]
    if elapsed < 1.0 and _last["sample"] is not None:
        return _last["busy"]  # too short to tell: the last answer
    others = ((now[1] - before[1]) - (now[2] - before[2])) / max(elapsed, 1e-9)
    _last.update(sample=now, busy=others >= 0.5 * cores)
    return _last["busy"]


@contextlib.contextmanager
def lapack_threads(n_columns: int, small: int = 1024):
    """Limit BLAS to one thread inside the block for ``n_columns`` ≤ ``small`` or on busy cores."""
    global _CONTROLLER
    limiter = None
    if n_columns <= small or other_processes_busy():
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
