"""Refits from cached kernel rows (gapfit.model.refit, gapfit.model.tuning), the log marginal likelihood
(gapfit.solve.evidence) and committees (gapfit.model.committee).

* A refit with other σ, config_type_sigma, δ or sparse_jitter equals a fit from scratch with those
  options: α within 1e-8 relative.  The case is well conditioned (jitter 1e-4, σ_E = 0.01: α ≲ 1e3;
  the two differ by 2e-10 and 3e-9, the refit folding its rows where the fit from scratch runs a
  dense QR).
* The log marginal likelihood equals a direct dense computation of the GP evidence,
  −½ yᵀC⁻¹y − ½ log|C| − N/2 log 2π with C = Σ + K_NM K_MM⁻¹ K_MN built as an N×N matrix, to 1e-8
  relative (they agree to ~1e-10), on the dense and the streaming path.
* A scan's validation errors equal GapFit.score on the refitted model; k-fold and likelihood
  objectives rank their points.
* A committee's α are ᾱ + R⁻¹ε: its mean tends to the model's prediction as n grows, and its energy
  variance matches the analytic posterior variance k*ᵀ(AᵀA)⁻¹k* within sampling error for n = 200;
  quippy.gap_tools, given gapfit's exported R, samples the same distribution.
"""

import numpy as np
import pytest
from ase.io import read, write

from conftest import TA_XYZ

import gapfit
from gapfit.errors import ConfigError
from gapfit.data.extxyz import MemorySource

GAP = ("distance_2b cutoff=5.0 covariance_type=ard_se delta=2.0 theta_uniform=0.75 n_sparse=15 sparse_method=uniform : "
       "soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=4.0 cutoff_transition_width=0.5 central_weight=1.0 "
       "covariance_type=dot_product delta=0.2 zeta=2 n_sparse=40 sparse_method=cur_points")
BASE = dict(energy_parameter_name="energy", force_parameter_name="forces", virial_parameter_name="virial",
            e0_method="average", sparse_jitter=1e-4, rnd_seed=1, training_errors=False)
SIGMA = [0.01, 0.2, 0.1, 0.0]


@pytest.fixture(scope="module")
def ta_split():
    frames = read(str(TA_XYZ), ":")
    return frames[::6], frames[3::12]


@pytest.fixture(scope="module")
def base_fit(ta_split):
    train, _ = ta_split
    return gapfit.GapFit(quiet=True, default_sigma=SIGMA, gap=GAP, **BASE).fit(train, keep_kernel_rows=True)


def _rel(a, b):
    a, b = np.concatenate(a), np.concatenate(b)
    return np.abs(a - b).max() / np.abs(b).max()


def test_refit_equals_fit_from_scratch(base_fit, ta_split):
    train, held = ta_split
    refit = base_fit.refit(default_sigma=[0.005, 0.1, 0.05, 0.0], delta=[1.0, 0.3], sparse_jitter=1e-3)
    options = dict(BASE, sparse_jitter=1e-3)
    scratch = gapfit.GapFit(quiet=True, default_sigma=[0.005, 0.1, 0.05, 0.0],
                            gap=GAP.replace("delta=2.0", "delta=1.0").replace("delta=0.2", "delta=0.3"),
                            **options).fit(train)
    assert _rel(refit.alpha_, scratch.alpha_) < 1e-8
    assert [c.delta for c in refit.model_.coordinates] == [1.0, 0.3]
    assert refit.log_likelihood_ == pytest.approx(scratch.log_likelihood_, rel=1e-8)
    for a, b, frame in zip(refit.predict(held[:4]), scratch.predict(held[:4]), held[:4]):
        assert abs(a["energy"] - b["energy"]) / len(frame) < 1e-8
    # config_type_sigma, given as a dict, equals gap_fit's string form from scratch
    refit = base_fit.refit(config_type_sigma={"Volume_A15": [0.1, 1.0, 1.0, 0.0]})
    scratch = gapfit.GapFit(quiet=True, default_sigma=SIGMA, gap=GAP, config_type_sigma="Volume_A15:0.1:1.0:1.0:0",
                            **BASE).fit(train)
    assert _rel(refit.alpha_, scratch.alpha_) < 1e-8
    # the base fit is left as it was
    assert base_fit.refit().alpha_[1] == pytest.approx(base_fit.alpha_[1], rel=1e-8, abs=1e-8 * np.abs(
        base_fit.alpha_[1]).max())


def test_refit_bad_input(base_fit, ta_split):
    with pytest.raises(ConfigError, match="unknown key 'sigma'"):
        base_fit.refit(sigma=1.0)
    with pytest.raises(ConfigError, match="2 descriptors"):
        base_fit.refit(delta=0.5)
    with pytest.raises(ConfigError, match="default_sigma needs 3 or 4"):
        base_fit.refit(default_sigma=[0.1, 0.2])
    with pytest.raises(ConfigError, match="delta .* must be positive"):
        base_fit.refit(delta={2: -1.0})
    with pytest.raises(RuntimeError, match="keep_kernel_rows=True"):
        gapfit.GapFit(quiet=True, default_sigma=SIGMA, gap=GAP, **BASE).fit(ta_split[0][:20]).refit(energy_sigma=0.1)


def _direct_evidence(fit, dump_prefix, frames, sigma, jitter):
    """The GP evidence from N×N matrices: C = Σ^½ (I + A K_MM⁻¹ Aᵀ) Σ^½ with A = Σ^-½ K_NM (the dump)."""
    a = np.loadtxt(f"{dump_prefix}.A.0")
    b = np.loadtxt(f"{dump_prefix}.b.0")
    xs, cs = fit.sparse_x_, fit.sparse_cutoff_
    r = xs[0][:, 0]
    k_2b = 2.0 ** 2 * np.exp(-0.5 * (r[:, None] - r[None, :]) ** 2 / 0.75 ** 2) * np.outer(cs[0], cs[0])
    k_soap = 0.2 ** 2 * (xs[1] @ xs[1].T) ** 2 * np.outer(cs[1], cs[1])
    m0, m = len(r), len(r) + len(xs[1])
    k_mm = np.zeros((m, m))
    k_mm[:m0, :m0], k_mm[m0:, m0:] = k_2b, k_soap
    k_mm += jitter * np.eye(m)
    c = np.eye(a.shape[0]) + a @ np.linalg.solve(k_mm, a.T)
    sign, logdet = np.linalg.slogdet(c)
    assert sign > 0
    # σ as the fit sets them: σ_E and σ_V times √N_atoms (sigma_per_atom), σ_F per component
    log_sigma = sum(np.log(sigma[0] * np.sqrt(len(f))) + 3 * len(f) * np.log(sigma[1])
                    + 6 * np.log(sigma[2] * np.sqrt(len(f))) for f in frames)
    return -0.5 * b @ np.linalg.solve(c, b) - 0.5 * logdet - log_sigma - 0.5 * a.shape[0] * np.log(2 * np.pi)


@pytest.mark.parametrize("solver", ["dense", "streaming"])
def test_log_marginal_likelihood_equals_direct_evidence(tmp_path, solver):
    frames = read(str(TA_XYZ), ":")
    small, rows = [], 0
    for f in frames[1::5]:
        if len(f) <= 16 and rows < 500:
            small.append(f)
            rows += 1 + 3 * len(f) + 6
    assert 450 <= rows <= 560
    write(str(tmp_path / "small.xyz"), small)
    options = dict(BASE, sparse_jitter=1e-6, linear_solver="dense", linear_system_dump_file=str(tmp_path / "dump"))
    dense = gapfit.GapFit(quiet=True, default_sigma=SIGMA, gap=GAP, **options).fit(str(tmp_path / "small.xyz"))
    m = sum(x.shape[0] for x in dense.sparse_x_)
    assert 40 <= m <= 60
    direct = _direct_evidence(dense, tmp_path / "dump", small, SIGMA, 1e-6)
    if solver == "dense":
        value = dense.log_likelihood_
    else:
        options.update(linear_solver="streaming")
        del options["linear_system_dump_file"]
        value = gapfit.GapFit(quiet=True, default_sigma=SIGMA, gap=GAP, **options).fit(
            str(tmp_path / "small.xyz")).log_likelihood_
    assert value == pytest.approx(direct, rel=1e-8)


def test_scan_validation_errors_equal_score(base_fit, ta_split):
    _, held = ta_split
    result = base_fit.scan({"energy_sigma": [0.003, 0.01, 0.03], "force_sigma": [0.05, 0.2]}, validation=held)
    assert result.objective == "forces" and len(result.table) == 6
    best = min(result.table, key=lambda row: row["forces_rmse"])
    assert result.best == {"energy_sigma": best["energy_sigma"], "force_sigma": best["force_sigma"]}
    overall = result.fit.score(held)[-1]  # gapfit.model.scores on the refitted model, from its descriptors
    assert overall["forces"]["rmse"] == pytest.approx(best["forces_rmse"], rel=1e-8)
    assert overall["energy"]["rmse"] == pytest.approx(best["energy_rmse"], rel=1e-8)
    assert overall["virial"]["rmse"] == pytest.approx(best["virial_rmse"], rel=1e-8)
    # the likelihood objective: its best point is the one of largest log marginal likelihood
    by_evidence = base_fit.scan({"energy_sigma": [0.001, 0.01, 0.1]})
    assert by_evidence.objective == "likelihood"
    top = max(by_evidence.table, key=lambda row: row["log_likelihood"])
    assert by_evidence.best["energy_sigma"] == top["energy_sigma"]
    assert by_evidence.fit.log_likelihood_ == pytest.approx(top["log_likelihood"], rel=1e-10)
    # k-fold cross-validation: every training frame is predicted once, by a fit without it
    folds = base_fit.scan({"energy_sigma": [0.01, 0.1]}, folds=3, objective="energy")
    assert all(row["energy_rmse"] > 0 for row in folds.table)
    with pytest.raises(ConfigError, match="needs validation frames or folds"):
        base_fit.scan({"energy_sigma": [0.01]}, objective="energy")


def test_optimise_improves_the_objective(base_fit, ta_split):
    _, held = ta_split
    result = base_fit.optimise(["energy_sigma", "force_sigma"], validation=held, objective="energy",
                               max_evaluations=20)
    start = result.table[0]["objective"]  # Nelder-Mead evaluates the starting point first
    assert min(row["objective"] for row in result.table) <= start
    assert result.fit.score(held)[-1]["energy"]["rmse"] == pytest.approx(
        min(row["objective"] for row in result.table), rel=1e-8)


def test_committee_mean_and_variance(base_fit, ta_split):
    from gapfit.model.committee import CommitteeCalculator
    _, held = ta_split
    frames = held[:3]
    # analytic posterior variance of each energy: k*ᵀ (AᵀA)⁻¹ k* = ‖R⁻ᵀ k*‖², k* its energy K row
    cache = base_fit._problem.rows_of(MemorySource(frames))
    k_energy = np.asarray(cache.k)[cache.kind % 3 == 0]
    r = base_fit.r_
    analytic = (np.linalg.solve(r.T, k_energy.T) ** 2).sum(axis=0)
    predicted = np.array([p["energy"] for p in base_fit.predict(frames)])
    gaps = []
    for n in (20, 200):
        calc = CommitteeCalculator(base_fit.committee(n, seed=3))
        means, variances = [], []
        for frame in frames:
            atoms = frame.copy()
            atoms.calc = calc
            means.append(atoms.get_potential_energy())
            variances.append(calc.results["energy_std"] ** 2)
        gaps.append(np.abs(np.array(means) - predicted) / np.sqrt(analytic / n))
        if n == 200:
            ratio = np.array(variances) / analytic
            # the sample variance of 200 normal draws: relative standard error √(2/199) = 0.10
            assert np.all((ratio > 0.6) & (ratio < 1.5)), ratio
    # the committee mean is within 4 standard errors of the model's prediction at either size
    assert np.all(np.concatenate(gaps) < 4.0), gaps


def test_committee_equals_quippy_gap_tools(tmp_path, ta_split):
    pytest.importorskip("quippy")
    from quippy import gap_tools
    train, held = ta_split
    fit = gapfit.GapFit(quiet=True, default_sigma=SIGMA, gap=GAP, export_covariance=True,
                        gp_file=str(tmp_path / "gp.xml"), **BASE).fit(train, keep_kernel_rows=True)
    wrapper = gap_tools.read_xml(str(tmp_path / "gp.xml"))
    # the same posterior: quippy's R (read from the exported file) and ours give the same AᵀA
    r = fit.r_
    assert np.allclose(wrapper.R.T @ wrapper.R, r.T @ r, rtol=0, atol=1e-10 * np.abs(r.T @ r).max())
    # and the same samples' spread: energies of one held-out frame under 200 draws of each
    cache = fit._problem.rows_of(MemorySource(held[:1]))
    k_energy = np.asarray(cache.k)[cache.kind % 3 == 0][0]
    np.random.seed(5)
    theirs = np.array([k_energy @ wrapper._posterior_sample() for _ in range(200)])
    ours = np.array([k_energy @ np.concatenate([c.alpha for c in m.coordinates]) for m in fit.committee(200, seed=5)])
    analytic = float((np.linalg.solve(r.T, k_energy) ** 2).sum())
    assert abs(theirs.mean() - ours.mean()) < 5 * np.sqrt(2 * analytic / 200)
    assert 0.7 < theirs.var(ddof=1) / ours.var(ddof=1) < 1.4


def test_refit_scan_and_committee_under_mpi_equal_serial(tmp_path, ta_split):
    """The Python API under mpirun -n 2 (each rank caches and folds its own rows): the same α,
    log marginal likelihood, scan table and committee as serially, to rounding (1e-8 relative)."""
    import shutil
    import subprocess
    import sys
    from conftest import ROOT, mpi_env
    train, held = ta_split
    write(str(tmp_path / "train.xyz"), train)
    write(str(tmp_path / "held.xyz"), held)
    script = str(ROOT / "tests" / "mpi_scripts" / "refit_check.py")
    results = {}
    for ranks in (None, 2):
        out = tmp_path / f"out{ranks}.json"
        cmd = [sys.executable, script, "train.xyz", "held.xyz", str(out)]
        if ranks:
            if shutil.which("mpirun") is None:
                pytest.skip("mpirun is not installed")
            cmd = [shutil.which("mpirun"), "-n", str(ranks), *cmd, "--mpi"]
        proc = subprocess.run(cmd, cwd=str(tmp_path), env=mpi_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        import json
        results[ranks] = json.loads(out.read_text())
    serial, mpi = results[None], results[2]
    for key in ("alpha", "refit_alpha", "member"):
        a, b = np.array(serial[key]), np.array(mpi[key])
        assert np.abs(a - b).max() <= 1e-8 * np.abs(a).max(), key
    for key in ("log_likelihood", "refit_log_likelihood"):
        assert mpi[key] == pytest.approx(serial[key], rel=1e-8)
    assert mpi["best"] == serial["best"]
    for table in ("scan", "folds"):
        for a, b in zip(serial[table], mpi[table]):
            for key, value in a.items():
                assert b[key] == pytest.approx(value, rel=1e-8), (table, key)


def test_log_marginal_likelihood_in_the_report_serial_and_mpi(tmp_path, ta_split):
    """The CLI logs the log marginal likelihood and writes it to report_file: LAPACK, ScaLAPACK
    (mpirun -n 2) and the streaming solver agree to 1e-8 relative."""
    import json
    from conftest import run_gapfit
    write(str(tmp_path / "train.xyz"), ta_split[0][::2])
    words = ["at_file=train.xyz", "energy_parameter_name=energy", "force_parameter_name=forces",
             "virial_parameter_name=virial", "e0_method=average", "default_sigma={0.01 0.2 0.1 0.0}",
             "sparse_jitter=1e-4", "rnd_seed=1", "training_errors=F", "gap={" + GAP + "}"]
    values = {}
    for name, extra, ranks in (("lapack", ["linear_solver=dense"], None), ("scalapack", ["linear_solver=dense"], 2),
                               ("streaming", ["linear_solver=streaming"], 2)):
        proc = run_gapfit(words + extra + [f"gp_file={name}.xml", f"report_file={name}.json"], tmp_path,
                          mpi_ranks=ranks)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Log marginal likelihood:" in proc.stdout
        values[name] = json.loads((tmp_path / f"{name}.json").read_text())["log_marginal_likelihood"]
    assert values["scalapack"] == pytest.approx(values["lapack"], rel=1e-8)
    assert values["streaming"] == pytest.approx(values["lapack"], rel=1e-8)


def _nll(k, floor, nu, error, spread):
    """−Σ log t_ν(e; 0, k²s² + s0²) by scipy.stats (independent of gapfit's own formula)."""
    from scipy.stats import t
    return -np.sum(t.logpdf(error, nu, scale=np.sqrt((k * spread) ** 2 + floor ** 2)))


def test_committee_calibration(base_fit, ta_split, tmp_path):
    """committee(calibrate=frames): (k, s0, ν) maximise Σ log t_ν(e; 0, k²s² + s0²) for energies per
    atom and for force components, checked here on the members' own predictions (no better point
    within ±1 % of each, ν within [1, 1000]); stored in each member's XML, which QUIP still loads;
    CommitteeCalculator reports the σ-equivalent q_ν·√((k·spread)² + s0²), q_ν = t_ν⁻¹(Φ(1))."""
    from scipy.stats import norm, t
    from gapfit.model.calculator import GapCalculator
    from gapfit.model.committee import CommitteeCalculator
    from gapfit.model.gap_xml import read_model, write_model
    _, held = ta_split
    validation = held[::2]
    members = base_fit.committee(6, seed=5, calibrate=validation)
    k_e, s0_e, nu_e, k_f, s0_f, nu_f = base_fit.committee_scale_
    calcs = [GapCalculator(model=m) for m in members]
    e_err, e_spread, f_err, f_spread = [], [], [], []
    for frame in validation:
        energies, forces = [], []
        for calc in calcs:
            atoms = frame.copy()
            atoms.calc = calc
            energies.append(atoms.get_potential_energy() / len(frame))
            forces.append(atoms.get_forces())
        energies, forces = np.array(energies), np.array(forces)
        reference = frame.calc.results  # ase.io.read keeps the file's energy and forces there
        e_err.append(energies.mean() - reference["energy"] / len(frame))
        e_spread.append(energies.std(ddof=1))
        error, spread = (forces.mean(axis=0) - reference["forces"]).ravel(), forces.std(axis=0, ddof=1).ravel()
        keep = (spread > 1e-9) | (np.abs(error) > 1e-9)  # zero by symmetry in data and members: left out
        f_err.extend(error[keep])
        f_spread.extend(spread[keep])
    for (k, floor, nu), error, spread in (((k_e, s0_e, nu_e), e_err, e_spread), ((k_f, s0_f, nu_f), f_err, f_spread)):
        error, spread = np.array(error), np.array(spread)
        best = _nll(k, floor, nu, error, spread)
        for dk in (0.99, 1.01):
            assert _nll(k * dk, floor, nu, error, spread) >= best - 1e-9 * abs(best)
            if floor > 1e-6 * np.abs(error).max():  # a floor at zero has no lower neighbour that matters
                assert _nll(k, floor * dk, nu, error, spread) >= best - 1e-9 * abs(best)
            if 1.0 < nu * dk < 1000.0:
                assert _nll(k, floor, nu * dk, error, spread) >= best - 1e-9 * abs(best)
    assert k_e > 1 and k_f > 1, (k_e, k_f)  # the posterior of α alone understates the errors
    print(f"calibration on {len(validation)} frames: k_E = {k_e:.3g}, s0_E = {s0_e:.2e} eV/atom, ν_E = {nu_e:.3g}, "
          f"k_F = {k_f:.3g}, s0_F = {s0_f:.2e} eV/Å, ν_F = {nu_f:.3g}")
    # the calculator calibrates the spread; uncalibrated members give the raw one
    atoms = held[1].copy()
    atoms.calc = CommitteeCalculator(members)
    atoms.get_potential_energy()
    scaled = atoms.calc.results["energy_std"], atoms.calc.results["forces_std"]
    raw = held[1].copy()
    raw.calc = CommitteeCalculator(base_fit.committee(6, seed=5))
    raw.get_potential_energy()
    q_e, q_f = (t.ppf(norm.cdf(1.0), nu) for nu in (nu_e, nu_f))
    assert scaled[0] == pytest.approx(q_e * np.hypot(k_e * raw.calc.results["energy_std"], len(raw) * s0_e), rel=1e-10)
    np.testing.assert_allclose(scaled[1], q_f * np.hypot(k_f * raw.calc.results["forces_std"], s0_f), rtol=1e-10)
    # stored with the model; QUIP loads such a member and predicts what gapfit does
    write_model(members[0], str(tmp_path / "member.xml"))
    again = read_model(str(tmp_path / "member.xml"))
    assert again.committee_scale == (k_e, s0_e, nu_e, k_f, s0_f, nu_f)
    with pytest.raises(ValueError, match="different calibrations"):
        CommitteeCalculator([again, base_fit.committee(1, seed=5)[0]])
    quippy = pytest.importorskip("quippy.potential")
    frame = held[1].copy()
    frame.calc = quippy.Potential(param_filename=str(tmp_path / "member.xml"))
    ours = held[1].copy()
    ours.calc = GapCalculator(str(tmp_path / "member.xml"))
    assert frame.get_potential_energy() == pytest.approx(ours.get_potential_energy(), rel=1e-10)


def test_scan_table_reads_as_the_rest_of_gapfit(base_fit, ta_split):
    """RMSEs in meV, the objective named, lists aligned, and the notes a reader needs: a best point on
    the grid's edge, and a likelihood that would choose another point."""
    _, held = ta_split
    scan = base_fit.scan({"energy_sigma": [0.003, 0.01, 0.03], "force_sigma": [0.1, 0.2, 0.4]},
                         validation=held[:10], objective="forces")
    lines = scan.lines()
    header = lines[0].split("  ")
    assert "F RMSE meV/Å" in lines[0] and lines[0].rstrip().endswith("objective: F RMSE meV/Å")
    best = next(i for i, line in enumerate(lines) if line.endswith("<- best")) - 1
    cells = lines[best + 1].replace("<- best", "").split()
    assert float(cells[-1]) == pytest.approx(scan.table[best]["forces_rmse"] * 1e3, rel=1e-3)
    assert len({len(line.replace("  <- best", "")) for line in lines[:len(scan.table) + 1]}) == 1, header  # aligned
    best_row = scan.table[best]
    for key, grid in (("energy_sigma", [0.003, 0.01, 0.03]), ("force_sigma", [0.1, 0.2, 0.4])):
        on_edge = best_row[key] in (grid[0], grid[-1])
        assert on_edge == any(line.startswith("note: the best point has the") and f" {key} " in line for line in lines)
    by_likelihood = max(range(len(scan.table)), key=lambda i: scan.table[i]["log_likelihood"])
    assert (by_likelihood != best) == any("log likelihood of the training data would choose" in line for line in lines)
    listed = base_fit.scan({"default_sigma": [[0.003, 0.1, 0.05, 0.0], [0.01, 0.2, 0.1, 0.0]]}).lines()
    assert "{0.003 0.1 0.05 0}" in listed[1] and len({len(line.replace("  <- best", "")) for line in listed}) == 1
