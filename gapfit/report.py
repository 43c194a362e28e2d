"""Progress output: only rank 0 prints (phases, counts, timings, memory).

Other ranks print only their own errors (the CLI does that, prefixed with the rank).
"""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from typing import Dict, List, Optional

import numpy as np


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux ru_maxrss is in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return 0


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024.0
    return f"{n:.2f} TiB"


class Reporter:
    """Rank-0 printer with per-phase wall-time and peak-RSS bookkeeping."""

    def __init__(self, comm=None, stream=None, quiet: bool = False, print_all: bool = False):
        self.comm = comm
        self.rank = 0 if comm is None else comm.rank
        self.size = 1 if comm is None else comm.size
        self.stream = stream if stream is not None else sys.stdout
        self.quiet = quiet
        self.print_all = print_all
        self.phases: List[tuple] = []  # (name, wall seconds, peak rss bytes after)
        self.start = time.perf_counter()
        self.gathered: List[dict] = []  # every rank's phases, peak RSS and extras (rank_table, rank 0)

    @property
    def active(self) -> bool:
        return not self.quiet and (self.rank == 0 or self.print_all)

    def __call__(self, text: str = "") -> None:
        if self.active:
            prefix = f"[rank {self.rank}/{self.size}] " if self.print_all and self.size > 1 else ""
            for line in str(text).split("\n"):
                print(prefix + line, file=self.stream)
            self.stream.flush()

    def title(self, text: str) -> None:
        self("")
        self(f"== {text} " + "=" * max(0, 70 - len(text)))

    @contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        self(f"-- {name} ...")
        yield
        dt = time.perf_counter() - t0
        rss = peak_rss_bytes()
        self.phases.append((name, dt, rss))
        self(f"   {name}: {dt:.2f} s wall, peak RSS {human_bytes(rss)} (now {human_bytes(current_rss_bytes())})")

    def table(self, header: List[str], rows: List[List[str]], indent: str = "  ") -> None:
        widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
                  for i, h in enumerate(header)]
        self(indent + "  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
        self(indent + "  ".join("-" * w for w in widths))
        for r in rows:
            self(indent + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)))

    def json_report(self) -> dict:
        """Per-rank phases, extras and peak RSS as gathered by :meth:`rank_table` (rank 0)."""
        gathered = self.gathered
        names = [n for n, _ in gathered[0]["phases"]] if gathered else []
        return {
            "ranks": self.size,
            "phases": {n: [dict(g["phases"]).get(n) for g in gathered] for n in names},
            "peak_rss_bytes": [g["rss"] for g in gathered],
            "per_rank": [g["extra"] for g in gathered],
            "total_wall_seconds": time.perf_counter() - self.start,
        }

    def timing_summary(self) -> Dict[str, float]:
        return {name: dt for name, dt, _ in self.phases}

    def rank_table(self, extra: Optional[Dict[str, float]] = None) -> None:
        """Gather every rank's phase times, rows and peak RSS; print min/mean/max on rank 0."""
        local = {"phases": [(n, dt) for n, dt, _ in self.phases], "rss": peak_rss_bytes(), "extra": extra or {}}
        gathered = self.comm.gather(local, root=0) if self.comm is not None and self.size > 1 else [local]
        self.gathered = gathered or []  # None on the other ranks
        if self.rank != 0 or self.quiet:
            return
        names = [n for n, _ in gathered[0]["phases"]]
        rows = []
        for i, name in enumerate(names):
            vals = np.array([g["phases"][i][1] if i < len(g["phases"]) else np.nan for g in gathered])
            rows.append([name, f"{np.nanmin(vals):.2f}", f"{np.nanmean(vals):.2f}", f"{np.nanmax(vals):.2f}"])
        for key in gathered[0]["extra"]:
            vals = np.array([g["extra"].get(key, np.nan) for g in gathered], dtype=float)
            rows.append([key, f"{np.nanmin(vals):.0f}", f"{np.nanmean(vals):.0f}", f"{np.nanmax(vals):.0f}"])
        rss = np.array([g["rss"] for g in gathered], dtype=float)
        rows.append(["peak RSS", human_bytes(rss.min()), human_bytes(rss.mean()), human_bytes(rss.max())])
        label = "wall time (s) per phase" + (f", over {self.size} ranks" if self.size > 1 else "")
        self.title("Timing and memory")
        self(f"  {label}")
        self.table(["phase", "min", "mean", "max"], rows)
        total = time.perf_counter() - self.start
        self(f"  total wall time {total:.2f} s")
