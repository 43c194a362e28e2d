"""The memory the machine has for a new allocation (the solver path, the refit cache and dryrun decide by it)."""

from __future__ import annotations


def available_memory() -> float:
    """Bytes the kernel says a new allocation can have (MemAvailable; 0 if unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        return float(info.get("MemAvailable", info.get("MemTotal", 0)))
    except OSError:  # pragma: no cover
        return 0.0
