"""Every code block of README.md runs as written, so the README cannot rot.

The blocks run in order, in one folder laid out like a checkout (``examples/`` and ``scripts/``
copied, ``.venv`` linked to the environment running the tests, its ``gapfit`` on PATH) that
holds the example data as ``train.xyz`` (every other frame, for the suite's time): what a user
following the README does.  The
environment is the README's own advice for root on a 2-core machine (``OMPI_ALLOW_RUN_AS_ROOT``,
oversubscription allowed).

Two blocks are set-up commands.  The test command's setup is what CI (``.ci/run``) runs, so the
test checks that ``.ci/run`` runs exactly that block; the example block's setup half is the
same setup, and its example half runs here.  The SLURM block runs against a single-node SLURM
started on localhost.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gapfit.model.gap_xml import read_model

from conftest import ROOT, TA_XYZ, every_nth_frame, mpi_env, wait_for_slurm_job

README = ROOT / "README.md"
SETUP = "bash scripts/setup.sh"
ACTIVATE = "source .venv/bin/activate"


#: the user documentation whose code blocks run too, after README's (docs/dev holds research notes)
DOCS = sorted((ROOT / "docs").glob("*.md"))


def code_blocks():
    """(language, code) of every fenced block in README.md and then docs/*.md, in order."""
    return [block for path in [README, *DOCS]
            for block in re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), flags=re.S | re.M)]


def test_every_block_is_bash_or_python():
    blocks = code_blocks()
    assert len(blocks) >= 6
    assert {lang for lang, _ in blocks} <= {"bash", "python"}, [lang for lang, _ in blocks]


def test_ci_runs_the_readme_test_command():
    tests = [code for lang, code in code_blocks() if f"{SETUP} --tests" in code]
    assert len(tests) == 1
    command = tests[0].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1].strip() == command


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("examples", "scripts"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("output", "gapfit-*.out", "*.xml*"))
    os.symlink(Path(sys.executable).parent.parent, root / ".venv")
    every_nth_frame(TA_XYZ, root / "train.xyz", 2)  # 182 frames: half the time of all 363
    return root


def _run(cmd, cwd, env, what):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"README block failed: {what}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc


@pytest.mark.mpi
def test_readme_blocks_run(checkout, local_slurm):
    env = mpi_env()
    env.pop("PYTHONPATH", None)  # the installed gapfit, as a user has it
    venv_bin = str(Path(sys.executable).parent)  # the commands are on PATH only once README activates .venv
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    activated = False
    env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
    env["SLURM_CONF"] = str(local_slurm)
    ran, ran_output = [], []
    for lang, code in code_blocks():
        what = code.strip().splitlines()[0]
        if f"{SETUP} --tests" in code:
            continue  # the command running this test (test_ci_runs_the_readme_test_command)
        if code.strip() == ACTIVATE:
            activated = True  # what the README asks for after setup, in every shell: each block below runs so
        if activated and lang == "bash":
            code = f"{ACTIVATE}\n{code}"
        if lang == "python":
            assert activated, "a Python block before README says how to put the environment's python on PATH"
            _run([sys.executable, "-c", code], checkout, env, what)
        elif code.strip().startswith(f"{SETUP} && "):  # runs before activation, as on a fresh machine
            ran_output.append(_run(["bash", "-euo", "pipefail", "-c", code.strip()[len(SETUP) + 4:]], checkout, env,
                                   what).stdout)
            output = checkout / "examples" / "output"
            assert read_model(str(output / "ta_gap.xml")).coordinates
            # the held-out error table, and the parity plots README points to
            proc_text = ran_output[-1]
            assert "Errors on 'held_out.xyz'" in proc_text and "choose_sigma: config_type_sigma=" in proc_text
            for quantity in ("energy", "forces", "virial"):
                assert (output / f"parity_{quantity}.png").stat().st_size > 10000
        elif "sbatch" in code:
            proc = _run(["bash", "-euo", "pipefail", "-c", code], checkout, env, what)
            job = re.search(r"Submitted batch job (\d+)", proc.stdout).group(1)
            state, reason = wait_for_slurm_job(job, env, local_slurm.parent)
            out = (checkout / "examples" / "slurm" / f"gapfit-{job}.out").read_text(errors="replace")
            assert state == "COMPLETED", f"job {job} ended {state} ({reason})\n{out[-3000:]}"
            assert "2 ranks on 1 node(s)" in out
            assert read_model(str(checkout / "examples" / "slurm" / "ta_gap.xml")).coordinates
        else:
            _run(["bash", "-euo", "pipefail", "-c", code], checkout, env, what)
        ran.append(what)
    assert len(ran) >= 5, ran
    # what the blocks wrote
    for name in ("gp.xml", "gp_mpi.xml", "sparse/gp.xml", "sparse/gp.xml.fit.cfg", "gp_api.xml", "gp_all.xml"):
        assert (checkout / name).exists(), name
    assert len(read_model(str(checkout / "gp_mpi.xml")).coordinates) == 2
