"""Shared fixtures: data paths, the oracle (quippy, gap_fit), and running the gapfit CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
QUIP_TESTS = DATA / "quip_gapfit_tests"
CORE_DATA = DATA / "core"
TA_XYZ = ROOT / "examples" / "data" / "Ta_snap_train.xyz"


# --- environments compared by value ---------------------------------------------------------
# Which member of a group of equivalent environments (equal to 1e-10) survives gap_fit's duplicate
# filter is decided by the last bit of their L1 norms, which differs between CPUs and between
# quippy, gap_fit and gapfit.  Tests compare such choices by value, never by position.
ENVIRONMENT_TOLERANCE = 1e-10


def central_differences(values, atoms, h):
    """(values(atoms + h e_ak) - values(atoms - h e_ak)) / 2h for every atom a and direction k, as an
    array (*values.shape, n_atoms, 3)."""
    columns = []
    for a in range(len(atoms)):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, k] += h
            minus.positions[a, k] -= h
            columns.append((values(plus) - values(minus)) / (2 * h))
    fd = np.stack(columns, axis=-1)
    return fd.reshape(*fd.shape[:-1], len(atoms), 3)


def clear_of_kinks(atoms, radii, margin=1e-3) -> bool:
    """No interatomic distance (periodic images included) within ``margin`` Å of any of ``radii``: where
    a cutoff function's second derivative jumps (soap's cosine at cutoff − cutoff_transition_width and
    at cutoff), central differences that straddle it lose their O(h²) accuracy.  A random structure
    drew a pair 9e-5 Å from soap's 3.2 Å cutoff in CI (test_soap_compression, seed 1755866264):
    finite differences 5.6e-7 off the exact gradient."""
    from ase.neighborlist import neighbor_list
    d = neighbor_list("d", atoms, max(radii) + margin)
    return all(np.abs(d - r).min(initial=np.inf) > margin for r in radii)


def same_environment(xa, xb, tol=ENVIRONMENT_TOLERANCE):
    """close[i, j]: row i of ``xa`` and row j of ``xb`` are the same environment (max |Δ| < tol)."""
    xa, xb = np.asarray(xa, float), np.asarray(xb, float)
    return cdist(xa.reshape(len(xa), -1), xb.reshape(len(xb), -1), "chebyshev") < tol


def environment_labels(x, tol=ENVIRONMENT_TOLERANCE):
    """Label each row of ``x`` by the first row that is the same environment as it."""
    return np.argmax(same_environment(x, x, tol), axis=1)


def shared_environments(xa, xb, tol=ENVIRONMENT_TOLERANCE):
    """How many rows of ``xa`` are the same environment as some row of ``xb``."""
    return int(same_environment(xa, xb, tol).any(axis=1).sum())


def config_words(path) -> list:
    """The options of a gapfit config file as argv words for gap_fit (which has no config comments)."""
    from gapfit.options.syntax import split_fields, strip_comments
    options = strip_comments(Path(path).read_text())
    words = split_fields(options.replace("{", "\x01").replace("}", "\x02"), separators=" \n")
    return [w.replace("\x01", "{").replace("\x02", "}") for w in words]


def prediction_differences(xml_a, xml_b, frames):
    """Max |ΔE| per atom (eV) and max |ΔF| (eV/Å) between two models (gapfit's calculator) on ``frames``."""
    from gapfit.model.calculator import GapCalculator
    calc_a, calc_b = GapCalculator(str(xml_a)), GapCalculator(str(xml_b))
    de = df = 0.0
    for atoms in frames:
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = calc_a, calc_b
        de = max(de, abs(a.get_potential_energy() - b.get_potential_energy()) / len(atoms))
        df = max(df, np.abs(a.get_forces() - b.get_forces()).max())
    return de, df


def ulp_moved(frames, rng):
    """Copies of ``frames`` (their labels kept) with every position moved by ±1 ulp (random signs)."""
    moved = []
    for atoms in frames:
        m = atoms.copy()
        m.calc = atoms.calc
        m.positions = atoms.positions * (1.0 + rng.choice([-1.0, 1.0], atoms.positions.shape) * 2.0 ** -52)
        moved.append(m)
    return moved


def positions_rounding_floor(folder, held_out, n=3, config="sparse.xml.fit.cfg", reference="gapfit.xml",
                             train="train.xyz"):
    """The rounding floor of an ill-conditioned fit: the largest change of gapfit's predictions on
    ``held_out`` (eV/atom, eV/Å) when every training position moves by ±1 ulp, same sparse points.

    Refits ``folder/train`` ``n`` times with the options file ``config`` (whose sparse-point
    files are named relative to ``folder``) and compares with ``folder/reference``."""
    from ase.io import read
    from gapfit import GapFit
    folder = Path(folder)
    frames = read(str(folder / train), ":")
    worst_e = worst_f = 0.0
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        for seed in range(n):
            moved = ulp_moved(frames, np.random.default_rng(seed))
            GapFit(f"config_file={config}", gp_file=str(folder / f"moved{seed}.xml"), training_errors=False,
                   quiet=True).fit(moved)
            e, f = prediction_differences(folder / reference, folder / f"moved{seed}.xml", held_out)
            worst_e, worst_f = max(worst_e, e), max(worst_f, f)
    finally:
        os.chdir(cwd)
    return worst_e, worst_f


def calculator_differences(calc_a, calc_b, frames):
    """Max |ΔE|, max |ΔF| between two calculators, and the largest |E| and |F| (for relative measures)."""
    de = df = e_scale = f_scale = 0.0
    for atoms in frames:
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = calc_a, calc_b
        e, f = a.get_potential_energy(), a.get_forces()
        de, df = max(de, abs(e - b.get_potential_energy())), max(df, np.abs(f - b.get_forces()).max())
        e_scale, f_scale = max(e_scale, abs(e)), max(f_scale, np.abs(f).max())
    return de, df, e_scale, f_scale


def evaluation_rounding_floor(xml, calc, frames, n=3):
    """Largest change of ``calc``'s predictions when every α of ``xml`` moves by ±1 ulp (the model's own floor)."""
    from gapfit.model.calculator import GapCalculator
    from gapfit.model.gap_xml import read_model
    worst_e = worst_f = 0.0
    for seed in range(n):
        rng = np.random.default_rng(seed)
        model = read_model(str(xml))
        for c in model.coordinates:
            c.alpha = c.alpha * (1.0 + rng.choice([-1.0, 1.0], c.alpha.shape) * 2.0 ** -52)
        de, df, _, _ = calculator_differences(calc, GapCalculator(model=model), frames)
        worst_e, worst_f = max(worst_e, de), max(worst_f, df)
    return worst_e, worst_f


def same_sparse_points(xml, *drop):
    """A config file for fits with the sparse points of ``xml`` (sparse_method=file; gapfit's two-step helper)."""
    from gapfit.fit.two_step import prepare_second_run
    _, cfg = prepare_second_run(str(xml))
    lines = [line for line in open(cfg).read().splitlines() if line.split("=")[0] not in drop]
    with open(cfg, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return os.path.basename(cfg)


def _xyz_frames(lines):
    """The frames of an XYZ file's ``lines``: (count line, comment line, atom lines) of each."""
    k = 0
    while k < len(lines):
        n = int(lines[k])
        yield lines[k], lines[k + 1], lines[k + 2:k + 2 + n]
        k += 2 + n


def every_nth_frame(src, dst, step):
    """Frames 0, step, 2 step, ... of the XYZ file ``src``, copied line for line (bit for bit) to ``dst``."""
    frames = _xyz_frames(Path(src).read_text().splitlines(keepends=True))
    Path(dst).write_text("".join("".join([count, comment, *atoms])
                                 for i, (count, comment, atoms) in enumerate(frames) if i % step == 0))


def ulp_copy(src, dst, seed=7):
    """``src`` with every position moved by ±1 ulp (species x y z ... lines), written in full precision."""
    rng = np.random.default_rng(seed)
    out = []
    for count, comment, atoms in _xyz_frames(Path(src).read_text().splitlines()):
        out += [count, comment]
        for line in atoms:
            f = line.split()
            pos = np.array(f[1:4], dtype=float)
            pos = np.nextafter(pos, pos + rng.choice([-1.0, 1.0], size=3) * np.inf)
            out.append(" ".join([f[0], *map(repr, pos.tolist()), *f[4:]]))
    Path(dst).write_text("\n".join(out) + "\n")


def mpi_env(threads: int = 1):
    """Environment for subprocesses that run gapfit under (or without) mpirun, as root too."""
    env = dict(os.environ)
    env.update({
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    return env


@pytest.fixture
def quip_data():
    return QUIP_TESTS


@pytest.fixture
def ta_xyz():
    return TA_XYZ


@pytest.fixture
def quippy():
    return pytest.importorskip("quippy", reason="quippy-ase (the oracle) is not installed")


def gap_fit_executable():
    candidates = [shutil.which("gap_fit"), os.path.join(os.path.dirname(sys.executable), "gap_fit")]
    for c in candidates:
        if c and os.path.exists(c):
            return c
    return None


@pytest.fixture
def gap_fit():
    exe = gap_fit_executable()
    if exe is None:
        pytest.skip("gap_fit (from quippy-ase) is not installed")
    return exe


def run_gapfit(args, cwd, timeout=600, env=None, mpi_ranks=None, extra_mpi=(), training_errors=False):
    """Run ``python -m gapfit args`` (optionally under mpirun) and return the CompletedProcess.

    A fit's error report on its training data (a second pass over the data) is switched off
    (``training_errors=F`` appended) unless ``training_errors`` or the arguments ask for it:
    tests/test_scores.py and tests/test_report.py test the report itself.  A sparsify_only_no_fit
    run has no report and its options go into the second run's file, which gap_fit reads too: it
    is left alone.
    """
    args = [str(a) for a in args]
    is_fit = any(a.startswith(("at_file=", "atoms_filename=", "config_file=")) for a in args)
    if (is_fit and not training_errors and not any(a.startswith("-") for a in args)
            and not any(a.startswith(("training_errors=", "test_file=", "sparsify_only_no_fit=")) for a in args)):
        args.append("training_errors=F")
    cmd = [sys.executable, "-m", "gapfit", *args]
    if mpi_ranks:
        mpirun = shutil.which("mpirun")
        if mpirun is None:
            pytest.skip("mpirun is not installed")
        over = ["--oversubscribe"] if mpi_ranks > (os.cpu_count() or 1) else []
        cmd = [mpirun, "-n", str(mpi_ranks), *over, *extra_mpi] + cmd
    return subprocess.run(cmd, cwd=str(cwd), env=env or mpi_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def gapfit_cli():
    return run_gapfit


# --- a single-node SLURM on localhost (scripts/local_slurm.sh) ---------------------------------
@pytest.fixture
def local_slurm(tmp_path):
    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None or shutil.which("munged") is None:
        pytest.skip("SLURM is not installed (bash scripts/setup.sh installs slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM needs root")
    state = tmp_path / "slurm"
    script = ROOT / "scripts" / "local_slurm.sh"
    proc = subprocess.run(["bash", str(script), "start", str(state)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield state / "slurm.conf"
    finally:
        subprocess.run(["bash", str(script), "stop", str(state)], capture_output=True, timeout=60)


def slurm_job_state(job, env):
    """(JobState, Reason) of a job, from scontrol (no accounting database is needed)."""
    proc = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True, timeout=30)
    fields = dict(w.split("=", 1) for w in proc.stdout.split() if "=" in w)
    return fields.get("JobState", "UNKNOWN"), fields.get("Reason", "")


def wait_for_slurm_job(job, env, state_dir, pending_limit=30.0, run_limit=300.0, requeue_release=False):
    """Wait for a job to end; fail within seconds, with slurmctld's reason, if it cannot start.

    On an idle single-node cluster a job starts at once: one still pending after ``pending_limit``
    seconds never will (e.g. a node configured with fewer CPUs than the job asks for).  With
    ``requeue_release`` a requeued job is waited for too, and the begin time slurmctld gives it
    (a delay before it may start again) is moved to now, a few seconds after the requeue.
    """
    start = pending_since = time.monotonic()
    waiting = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING") + (("REQUEUED",) if requeue_release else ())
    while True:
        state, reason = slurm_job_state(job, env)
        now = time.monotonic()
        waited = now - start
        if state not in waiting:
            return state, reason
        if state != "PENDING":
            pending_since = now
        elif requeue_release and reason == "BeginTime" and now - pending_since > 3.0:
            # not at once: slurmd refuses a credential issued in the same second as the one the
            # requeue revoked ("Job credential revoked"); slurmctld's own delay is minutes
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, capture_output=True,
                           timeout=30)
        if (state == "PENDING" and now - pending_since > pending_limit) or waited > run_limit:
            subprocess.run(["scancel", job], env=env, capture_output=True, timeout=30)
            log = (state_dir / "slurmctld.log").read_text(errors="replace").splitlines()[-15:]
            nodes = subprocess.run(["sinfo", "-N", "-o", "%N %T %c %E"], env=env, capture_output=True,
                                   text=True, timeout=30).stdout
            pytest.fail(f"job {job} still {state} after {waited:.0f} s, reason: {reason}\n"
                        f"sinfo:\n{nodes}slurmctld.log (end):\n" + "\n".join(log))
        time.sleep(0.5)
