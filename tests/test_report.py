"""Rank-0 output: progress within long phases, heartbeats, number formats, warnings."""

import io
import time

import numpy as np

from gapfit.runtime.report import Reporter, human_seconds, significant

from conftest import TA_XYZ, run_gapfit


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _progress(stream, **kw):
    clock = Clock()
    log = Reporter(stream=stream)
    return clock, log.progress("K_NM rows", 1000, clock=clock, **kw)


def test_progress_reports_when_both_time_and_work_have_passed():
    out = io.StringIO()
    clock, prog = _progress(out)
    for done, t in [(10, 5.0), (20, 11.0), (30, 12.0), (60, 13.0), (61, 22.0), (62, 30.0), (200, 40.0)]:
        clock.t = t
        prog.update(done)
    # 11 s/20 rows: 2% of the work, too little; 13 s/60 rows: 6% and 13 s: a report; then 10 s and
    # another 5% must pass: 22 s/61 and 30 s/62 rows do not, 40 s/200 rows does
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 == len(prog.lines)
    assert lines[0] == ("   K_NM rows: 60/1000 rows (6%), 4.62 rows/s, 13.0 s so far, about 3 m 23 s to go")
    assert lines[1].startswith("   K_NM rows: 200/1000 rows (20%), 5.00 rows/s, 40.0 s so far, about 2 m 40 s to go")
    assert "\r" not in out.getvalue()


def test_progress_is_silent_for_a_short_phase_and_at_the_end():
    out = io.StringIO()
    clock, prog = _progress(out)
    for done in range(0, 1001, 100):
        clock.t = done / 200.0  # 5 s in all
        prog.update(done)
    prog.close()
    assert out.getvalue() == ""


def test_progress_redraws_one_line_on_a_terminal():
    out = Terminal()
    clock, prog = _progress(out)
    with prog:
        for done, t in [(100, 11.0), (300, 25.0), (500, 40.0)]:
            clock.t = t
            prog.update(done)
    text = out.getvalue()
    assert text.count("\r\033[K") == 3 and text.endswith("\n") and text.count("\n") == 1


def test_heartbeat_prints_elapsed_and_estimate():
    out = io.StringIO()
    log = Reporter(stream=out)
    with log.heartbeat("QR", (0.5, "estimated: test"), interval=0.1) as beat:
        time.sleep(0.35)
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 4 and lines == beat.lines
    assert lines[0].startswith("   QR: 0.1 s so far, about 0.4 s to go (estimated: test)")
    out = io.StringIO()
    with Reporter(stream=out).heartbeat("CUR", None, interval=0.1):  # no estimate: gaps 0.1, 0.15, 0.225 s
        time.sleep(0.65)
    assert len(out.getvalue().splitlines()) == 3
    out = io.StringIO()
    with Reporter(stream=out).heartbeat("QR", None, interval=0.2):
        pass
    assert out.getvalue() == ""
    with Reporter(stream=out, quiet=True).heartbeat("QR", None, interval=0.01):
        time.sleep(0.05)
    assert out.getvalue() == ""


def test_number_formats():
    assert [significant(x) for x in (0.0912345, 1.234, 12.345, 363, 0.0, np.nan)] == \
        ["0.0912", "1.23", "12.3", "363", "0", "-"]
    assert [human_seconds(t) for t in (9.94, 65, 7384)] == ["9.9 s", "1 m 05 s", "2 h 03 m"]


def test_fit_log_has_progress_without_carriage_returns(tmp_path):
    """A non-terminal run (a SLURM log) prints plain progress lines, and small times keep their digits."""
    args = [f"at_file={TA_XYZ}", "e0_method=average", "force_parameter_name=forces", "default_sigma={0.002 0.1 0.05 0}",
            "gap={distance_2b cutoff=5.0 covariance_type=ard_se delta=1.0 theta_uniform=0.5 n_sparse=20 "
            "sparse_method=uniform}", "gp_file=gp.xml", "progress_interval=0"]
    proc = run_gapfit(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("   K_NM rows: ")]
    assert 3 <= len(lines) <= 20, proc.stdout
    assert all("rows/s" in line and "to go" in line for line in lines)
    assert [line for line in proc.stdout.splitlines() if line.startswith("   candidate descriptors: ")]
    assert "\r" not in proc.stdout and "\0" not in proc.stdout + proc.stderr
    table = proc.stdout[proc.stdout.index("== Timing and memory"):]
    writing = next(line for line in table.splitlines() if line.strip().startswith("Writing the model"))
    assert float(writing.split()[-1]) > 0  # 3 significant digits, not "0.00"
