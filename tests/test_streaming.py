"""The streaming solve (issue 9): rows folded into a triangular factor as they are made, checkpoints
that a signal writes and a rerun resumes, and extending a finished fit with new data.

Tolerances.  Streaming and dense are two Householder QRs of the same rows, in different orders;
they agree to the rounding floor of the fit, which is measured here: the change of α when every
training position moves by ±1 ulp (a dense refit).  Resuming with as many ranks as the stopped run
continues each rank's fold exactly, so its α is required to be bit-for-bit the uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from ase.io import read, write

from gapfit import GapFit
from gapfit.model.gap_xml import read_model

from conftest import TA_XYZ, run_gapfit, same_sparse_points, ulp_copy

GAP = ("distance_2b cutoff=5.0 covariance_type=ard_se delta=1.0 theta_uniform=0.75 n_sparse=15 sparse_method=uniform"
       " : soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=5.0 covariance_type=dot_product zeta=2 delta=0.1 n_sparse=40"
       " sparse_method=cur_points")
OPTIONS = ["e0_method=average", "default_sigma={0.002 0.1 0.05 0.0}", "sparse_jitter=1e-8",
           "force_parameter_name=forces", "rnd_seed=1", "do_copy_at_file=F",
           "row_chunk_mb=0.2"]  # small chunks: a checkpoint after each of several


def _alpha(xml):
    return np.concatenate([c.alpha for c in read_model(str(xml)).coordinates])


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(a).max())


def _fit(cwd, tag, *extra, data="train.xyz", gap=GAP, ranks=None, env=None, expect=0):
    args = [f"at_file={data}", "gap={" + gap + "}", f"gp_file={tag}.xml", *OPTIONS, *extra]
    proc = run_gapfit(args, cwd, mpi_ranks=ranks, env=env, timeout=300)
    assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr
    return proc


def _stop_env(rank, chunks):
    """A real SIGTERM to ``rank`` after its ``chunks``-th chunk (gapfit's test hook), as SLURM would send."""
    from conftest import mpi_env
    env = mpi_env()
    env["GAPFIT_TEST_SIGTERM_AFTER"] = f"{rank}:{chunks}"
    return env


def _mpi_stop(rank, chunks):
    return ["-x", "GAPFIT_TEST_SIGTERM_AFTER"], _stop_env(rank, chunks)


def _files(directory, prefix):
    return {p: hashlib.md5(open(os.path.join(directory, p), "rb").read()).hexdigest()
            for p in sorted(os.listdir(directory)) if p.startswith(prefix)}


@pytest.fixture(scope="module")
def ta(tmp_path_factory):
    """61 Ta frames; the dense and streaming fits; the rounding floor of α (1-ulp refits)."""
    d = tmp_path_factory.mktemp("streaming")
    frames = read(str(TA_XYZ), "::6")
    write(str(d / "train.xyz"), frames)
    _fit(d, "dense", "linear_solver=dense")
    cfg = same_sparse_points(d / "dense.xml")
    floor = 0.0
    for seed in (1, 2):  # the same sparse points, positions moved by ±1 ulp
        ulp_copy(d / "train.xyz", d / f"ulp{seed}.xyz", seed)
        proc = run_gapfit([f"config_file={cfg}", f"at_file=ulp{seed}.xyz", f"gp_file=ulp{seed}.xml"], d)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
        floor = max(floor, _rel(_alpha(d / "dense.xml"), _alpha(d / f"ulp{seed}.xml")))
    proc = _fit(d, "streaming", "linear_solver=streaming")
    print(f"rounding floor of α (1-ulp moves of the positions): {floor:.1e} relative")
    return d, floor, proc


def test_streaming_matches_dense(ta):
    d, floor, proc = ta
    assert "Linear system (streaming)" in proc.stdout and "56x56 triangular factor" in proc.stdout
    diff = _rel(_alpha(d / "dense.xml"), _alpha(d / "streaming.xml"))
    print(f"streaming vs dense: {diff:.1e} relative (floor {floor:.1e})")
    assert 0 < floor < 1e-4
    assert diff < 10 * floor
    # the same sparse points, e0 and descriptors: only α comes from another solver
    a, b = read_model(str(d / "dense.xml")), read_model(str(d / "streaming.xml"))
    assert np.array_equal(a.e0, b.e0)
    for ca, cb in zip(a.coordinates, b.coordinates):
        assert np.array_equal(ca.sparse_x, cb.sparse_x)


def test_factor_matches_dense_r(ta, tmp_path):
    """The folded factor is R of A (up to row signs), as the dense QR gives it (export_covariance)."""
    d, floor, _ = ta
    for path in ("dense", "streaming"):
        _fit(d, f"r_{path}", f"linear_solver={path}", "export_covariance=T")
    r = {}
    for path in ("dense", "streaming"):
        name = next(f for f in os.listdir(d) if f.startswith(f"r_{path}.xml.R."))
        r[path] = np.abs(np.loadtxt(d / name).reshape(55, 55, order="F"))  # column-major, as gap_fit
    assert np.allclose(np.tril(r["streaming"], -1), 0.0)
    scale = np.abs(r["dense"]).max()
    assert np.abs(r["dense"] - r["streaming"]).max() / scale < 1e-10


def test_resume_after_sigterm_is_bit_for_bit(ta):
    d, _, _ = ta
    proc = _fit(d, "cp", "linear_solver=streaming", "checkpoint_file=cp.ckpt", env=_stop_env(0, 2), expect=75)
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("gapfit: stopped by SIGTERM: checkpoint 'cp.ckpt' holds ") and \
        "rerun the same command to continue" in err[-1], proc.stderr
    assert not os.path.exists(d / "cp.xml")  # no model from a stopped run
    manifest = json.loads((d / "cp.ckpt").read_text())
    assert manifest["state"] == "folding" and manifest["ranks"] == 1
    held = int(err[-1].split(" holds ")[1].split()[0])
    assert 0 < held < 61
    proc = _fit(d, "cp", "linear_solver=streaming", "checkpoint_file=cp.ckpt")
    assert f"{held} frames were folded before; {61 - held} to go" in proc.stdout
    assert np.array_equal(_alpha(d / "cp.xml"), _alpha(d / "streaming.xml"))
    assert json.loads((d / "cp.ckpt").read_text())["state"] == "complete"
    # a finished checkpoint: the rerun folds nothing and gives the same model
    proc = _fit(d, "cp2", "linear_solver=streaming", "checkpoint_file=cp.ckpt")
    assert "61 frames were folded before; 0 to go" in proc.stdout
    assert np.array_equal(_alpha(d / "cp2.xml"), _alpha(d / "streaming.xml"))


def test_stale_checkpoint_is_refused_and_kept(ta):
    d, _, _ = ta
    _fit(d, "st", "linear_solver=streaming", "checkpoint_file=st.ckpt", env=_stop_env(0, 1), expect=75)
    before = _files(d, "st.ckpt")
    args = [a.replace("0.002 0.1", "0.003 0.1") for a in OPTIONS]
    proc = run_gapfit(["at_file=train.xyz", "gap={" + GAP + "}", "gp_file=st.xml", *args, "checkpoint_file=st.ckpt"], d)
    assert proc.returncode == 2  # a configuration error
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("gapfit: error: checkpoint_file 'st.ckpt' was made for another fit: the option "
                           "'default_sigma' differs (checkpoint: default_sigma=0.002 0.1 0.05 0.0; now: "
                           "default_sigma=0.003 0.1 0.05 0.0)"), line
    # other data under the same name
    write(str(d / "other.xyz"), read(str(d / "train.xyz"), ":60"))
    proc = _fit(d, "st", "linear_solver=streaming", "checkpoint_file=st.ckpt", data="other.xyz", expect=2)
    line = proc.stderr.strip().splitlines()[-1]
    assert "was made for another fit" in line and "data" in line, line
    assert _files(d, "st.ckpt") == before
    assert not os.path.exists(d / "st.xml")
    # a dense solve cannot checkpoint
    proc = _fit(d, "st", "linear_solver=dense", "checkpoint_file=st.ckpt", expect=2)
    assert "linear_solver=streaming" in proc.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def split(ta):
    """The frames in two files: a base fit on the first 40 (with a checkpoint), the rest to extend it."""
    d, _, _ = ta
    frames = read(str(d / "train.xyz"), ":")
    write(str(d / "base.xyz"), frames[:40])
    write(str(d / "new.xyz"), frames[40:])
    _fit(d, "base", "linear_solver=streaming", "checkpoint_file=base.ckpt", "e0={Ta:-11.8}", data="base.xyz")
    return d


def test_extension_is_the_fit_on_all_the_data(ta, split):
    """Extending a finished fit = fitting base + new frames with the base fit's sparse points (and e0)."""
    d = split
    proc = run_gapfit(["at_file=new.xyz", "extend_checkpoint=base.ckpt", "gp_file=ext.xml", "row_chunk_mb=0.2"], d)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "Extending the fit of checkpoint 'base.ckpt' (base.xyz" in proc.stdout
    # the fit on all the data with the same sparse points (gap_fit's index_file method), dense
    cfg = same_sparse_points(d / "base.xml", "checkpoint_file")
    for tag, data in (("union", "train.xyz"), ("union_ulp1", "ulp1.xyz"), ("union_ulp2", "ulp2.xyz")):
        proc = run_gapfit([f"config_file={cfg}", f"at_file={data}", f"gp_file={tag}.xml", "linear_solver=dense"], d)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    floor = max(_rel(_alpha(d / "union.xml"), _alpha(d / f"union_ulp{k}.xml")) for k in (1, 2))
    diff = _rel(_alpha(d / "union.xml"), _alpha(d / "ext.xml"))
    print(f"extension vs fit on all the data: {diff:.1e} relative (floor {floor:.1e})")
    assert diff < 10 * floor
    ext, base = read_model(str(d / "ext.xml")), read_model(str(d / "base.xml"))
    assert np.array_equal(ext.e0, base.e0)
    for a, b in zip(ext.coordinates, base.coordinates):
        assert np.array_equal(a.sparse_x, b.sparse_x)
    # the Python API gives the same model from in-memory frames (as the CLI runs: one thread, same chunks)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        fit = GapFit(quiet=True, row_chunk_mb=0.2).extend(read(str(d / "new.xyz"), ":"), str(d / "base.ckpt"))
    assert np.array_equal(np.concatenate(fit.alpha_), _alpha(d / "ext.xml"))


def test_extension_refuses_model_options(split):
    d = split
    proc = run_gapfit(["at_file=new.xyz", "extend_checkpoint=base.ckpt", "gp_file=bad.xml",
                       "default_sigma={0.01 0.1 0.05 0.0}"], d)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("gapfit: error: extend_checkpoint 'base.ckpt': default_sigma comes from the base fit"), line
    proc = run_gapfit(["at_file=new.xyz", "extend_checkpoint=missing.ckpt", "gp_file=bad.xml"], d)
    assert proc.returncode == 2 and "extend_checkpoint 'missing.ckpt' does not exist" in proc.stderr
    assert not os.path.exists(d / "bad.xml")


@pytest.mark.mpi
def test_mpi_resume(ta):
    """mpirun -n 2: a SIGTERM to rank 1 stops both ranks with a checkpoint; resuming with 2 ranks is
    bit for bit the uninterrupted run, with 3 ranks (the frames left shared afresh) within the floor."""
    d, floor, _ = ta
    _fit(d, "m2", "linear_solver=streaming", ranks=2)
    m2 = _alpha(d / "m2.xml")
    assert _rel(_alpha(d / "streaming.xml"), m2) < 10 * floor
    extra, env = _mpi_stop(1, 1)
    for resume_ranks in (2, 3):
        tag = f"mr{resume_ranks}"
        proc = run_gapfit(["at_file=train.xyz", "gap={" + GAP + "}", f"gp_file={tag}.xml", *OPTIONS,
                           "linear_solver=streaming", f"checkpoint_file={tag}.ckpt"], d, mpi_ranks=2,
                          extra_mpi=extra, env=env)
        assert proc.returncode == 75, proc.stdout[-3000:] + proc.stderr
        stopped = [line for line in proc.stderr.splitlines() if "stopped by" in line]
        assert len(stopped) == 1 and stopped[0].startswith("gapfit: stopped by SIGTERM (rank 1): checkpoint"), \
            proc.stderr  # rank 0 says it for the job
        manifest = json.loads((d / f"{tag}.ckpt").read_text())
        assert manifest["state"] == "folding" and manifest["ranks"] == 2
        proc = _fit(d, tag, "linear_solver=streaming", f"checkpoint_file={tag}.ckpt", ranks=resume_ranks)
        assert "frames were folded before" in proc.stdout
        alpha = _alpha(d / f"{tag}.xml")
        if resume_ranks == 2:
            assert np.array_equal(alpha, m2)
        else:
            print(f"2-rank checkpoint resumed on 3 ranks: {_rel(m2, alpha):.1e} relative (floor {floor:.1e})")
            assert _rel(m2, alpha) < 10 * floor
