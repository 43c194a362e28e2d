"""Progress output: only rank 0 prints (phases, counts, timings, memory).

Other ranks print only their own errors (the CLI does that, prefixed with the rank).
"""

from __future__ import annotations

import resource
import sys
import threading
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


def significant(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, without exponents for everyday sizes (0.0912, 41.2, 12345)."""
    x = float(x)
    if not np.isfinite(x):
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** digits:
        return f"{x:.0f}"
    decimals = max(0, digits - 1 - int(np.floor(np.log10(abs(x)))))
    return f"{x:.{decimals}f}"


def human_seconds(t: float) -> str:
    """12.3 s, 4 m 05 s, 2 h 03 m."""
    if t < 60:
        return f"{t:.1f} s"
    if t < 3600:
        return f"{int(t // 60)} m {int(t % 60):02d} s"
    return f"{int(t // 3600)} h {int(t % 3600 // 60):02d} m"


class _StatusLine:
    """A status line that is redrawn in place on a terminal and printed as plain lines in a file."""

    def __init__(self, log: "Reporter"):
        self.log = log
        self.lines: List[str] = []  # what was reported (for tests and the JSON report)
        self.tty = bool(getattr(log.stream, "isatty", lambda: False)())
        self.drawn = False

    def show(self, text: str) -> None:
        self.lines.append(text)
        if not self.log.active:
            return
        if self.tty:
            self.log.stream.write("\r\033[K" + text)
            self.log.stream.flush()
            self.drawn = True
        else:
            self.log(text)

    def close(self) -> None:
        """End a redrawn line (terminal only)."""
        if self.drawn:
            self.log.stream.write("\n")
            self.log.stream.flush()
            self.drawn = False


class Progress(_StatusLine):
    """Rank 0's progress through a long phase: done/total, rate and ETA.

    A report is due when both ``interval`` seconds and ``min_fraction`` of the work have passed
    since the last one (whichever is rarer), so a phase prints a handful of lines at most and
    nothing if it ends within ``interval``.  On a terminal the line is redrawn in place; in a
    file (SLURM logs) each report is a plain line, without carriage returns.
    """

    def __init__(self, log: "Reporter", what: str, total: float, unit: str = "rows", interval: float = 10.0,
                 min_fraction: float = 0.05, clock=time.perf_counter, note: str = ""):
        super().__init__(log)
        self.what, self.total, self.unit = what, float(total), unit
        self.interval, self.min_fraction, self.clock, self.note = interval, min_fraction, clock, note
        self.start = self.last_time = clock()
        self.last_done = 0.0

    def update(self, done: float) -> None:
        now = self.clock()
        if now - self.last_time < self.interval or done - self.last_done < self.min_fraction * self.total:
            return
        if done >= self.total:
            return  # the phase's own end line follows
        self.last_time, self.last_done = now, done
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        self.show(f"   {self.what}: {done:.0f}/{self.total:.0f} {self.unit} ({100.0 * done / self.total:.0f}%), "
                  f"{significant(rate)} {self.unit}/s, {human_seconds(elapsed)} so far, about "
                  f"{human_seconds(eta)} to go{self.note}")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Heartbeat(_StatusLine):
    """Progress of a long step that cannot count its own work (one LAPACK call, a selection).

    While the step runs, a thread prints the time so far every ``interval`` seconds (or 5% of the
    estimate), with the time to go if an ``estimate`` of the total (seconds, and how it was
    estimated) is known.  The
    step itself must release the GIL or be Python code (LAPACK through SciPy and ctypes does).
    Nothing is printed for a step shorter than ``interval``.
    """

    def __init__(self, log: "Reporter", what: str, estimate: Optional[tuple] = None, interval: float = 10.0):
        super().__init__(log)
        self.what, self.estimate, self.interval = what, estimate, interval
        self._stop = threading.Event()
        self._thread = None

    def _run(self) -> None:
        start = time.perf_counter()
        # every interval, or every 5% of the estimated time, whichever is rarer; with no
        # estimate the gaps grow by half each time: a handful of lines, however long the step
        wait = max(self.interval, 0.05 * self.estimate[0]) if self.estimate else self.interval
        while not self._stop.wait(wait):
            if not self.estimate:
                wait *= 1.5
            elapsed = time.perf_counter() - start
            text = f"   {self.what}: {human_seconds(elapsed)} so far"
            if self.estimate:
                seconds, how = self.estimate
                text += (f", about {human_seconds(seconds - elapsed)} to go ({how})" if seconds > elapsed
                         else f", longer than the {human_seconds(seconds)} estimated ({how})")
            self.show(text)

    def __enter__(self) -> "Heartbeat":
        if self.log.active:
            self._thread = threading.Thread(target=self._run, name="gapfit-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.close()


class Reporter:
    """Rank-0 printer with per-phase wall-time and peak-RSS bookkeeping."""

    def __init__(self, comm=None, stream=None, quiet: bool = False, print_all: bool = False,
                 progress_interval: float = 10.0):
        self.comm = comm
        self.rank = 0 if comm is None else comm.rank
        self.size = 1 if comm is None else comm.size
        self.stream = stream if stream is not None else sys.stdout
        self.quiet = quiet
        self.print_all = print_all
        self.phases: List[tuple] = []  # (name, wall seconds, peak rss bytes after)
        self.start = time.perf_counter()
        self.gathered: List[dict] = []  # every rank's phases, peak RSS and extras (rank_table, rank 0)
        self.warnings: List[str] = []
        self.repeated: List[str] = []  # warnings the end-of-run summary repeats
        self.progress_interval = progress_interval

    @property
    def active(self) -> bool:
        return not self.quiet and (self.rank == 0 or self.print_all)

    def __call__(self, text: str = "") -> None:
        if self.active:
            prefix = f"[rank {self.rank}/{self.size}] " if self.print_all and self.size > 1 else ""
            for line in str(text).split("\n"):
                print(prefix + line, file=self.stream)
            self.stream.flush()

    def warn(self, text: str, repeat: bool = False) -> None:
        """A warning: the fit goes on.  Rank 0 prints it to stderr (one line) and keeps it for the report;
        ``repeat``: also in the end-of-run summary (what was not fitted or evaluated)."""
        self.warnings.append(text)
        if repeat:
            self.repeated.append(text)
        if not self.quiet and self.rank == 0:
            self.stream.flush()
            print(f"gapfit: warning: {text}", file=sys.stderr)
            sys.stderr.flush()

    def progress(self, what: str, total: float, unit: str = "rows", note: str = "", **kw) -> Progress:
        """A :class:`Progress` for a long loop (prints only where this reporter prints)."""
        kw.setdefault("interval", self.progress_interval)
        return Progress(self, what, total, unit, note=note, **kw)

    def heartbeat(self, what: str, estimate: Optional[tuple] = None, **kw) -> Heartbeat:
        """A :class:`Heartbeat` for a long step without a count of its work."""
        kw.setdefault("interval", max(self.progress_interval, 1.0))
        return Heartbeat(self, what, estimate, **kw)

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
            "warnings": list(self.warnings),
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
            rows.append([name, *(significant(f(vals)) for f in (np.nanmin, np.nanmean, np.nanmax))])
        for key in gathered[0]["extra"]:
            vals = np.array([g["extra"].get(key, np.nan) for g in gathered], dtype=float)
            if "bytes" in key:
                rows.append([key.replace(" bytes", ""), *(human_bytes(f(vals)) for f in (np.nanmin, np.nanmean, np.nanmax))])
            else:
                rows.append([key, *(significant(f(vals)) for f in (np.nanmin, np.nanmean, np.nanmax))])
        rss = np.array([g["rss"] for g in gathered], dtype=float)
        rows.append(["peak RSS", human_bytes(rss.min()), human_bytes(rss.mean()), human_bytes(rss.max())])
        label = "wall time (s) per phase" + (f", over {self.size} ranks" if self.size > 1 else "")
        self.title("Timing and memory")
        self(f"  {label}")
        self.table(["phase", "min", "mean", "max"], rows)
        total = time.perf_counter() - self.start
        self(f"  total wall time {total:.2f} s")
        self.repeat_warnings()

    def repeat_warnings(self) -> None:
        """The warnings about targets that were not used, once more at the end (rank 0)."""
        if self.rank == 0 and not self.quiet and self.repeated:
            self.title("Not fitted or evaluated")
            for text in dict.fromkeys(self.repeated):
                self(f"  {text}")
