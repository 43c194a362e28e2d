"""glibc heap policy for the chunked covariance phase (no-ops on other C libraries).

The covariance phase allocates and frees the same few temporaries of 1–10 MB
(gradient blocks, kernel products) thousands of times.  Under glibc's start-up
policy such blocks are mmapped, or trimmed off the top of the heap once freed, so
every block lands on fresh pages and pays their page faults: on Ta-soap that was
0.6 s of 2.55 s of kernel rows (the GEMMs ran at 87 instead of 138 GFLOP/s).
:func:`keep_freed_blocks` fixes the thresholds at the values glibc's own dynamic
policy settles on (mmap above 32 MiB, trim above 64 MiB), so freed blocks are
reused from the start; :func:`release_freed_memory` is called between chunks to
hand the pages back, so that peak RSS stays ~ live data.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc
        return None


def keep_freed_blocks() -> None:
    """Serve blocks up to 32 MiB from the heap and keep up to 64 MiB of freed top."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 ** 2)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 * 1024 ** 2)


def release_freed_memory() -> None:
    """Return freed heap pages to the operating system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
