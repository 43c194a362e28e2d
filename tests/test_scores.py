"""Error reports (gapfit.model.scores): the tables a fit prints and writes for its training data and its
test_file equal the errors computed independently, with quippy's Potential on the written XML
and ASE's reading of the reference values, serially and under ``mpirun -n 2``."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read, write

from conftest import TA_XYZ, mpi_env, run_gapfit

OPTIONS = ["energy_parameter_name=energy", "force_parameter_name=forces", "virial_parameter_name=virial",
           "e0_method=average", "default_sigma={0.01 0.2 0.1 0.0}", "sparse_jitter=1e-4", "rnd_seed=1",
           "gap={distance_2b cutoff=5.0 covariance_type=ard_se delta=2.0 theta_uniform=0.75 n_sparse=15 "
           "sparse_method=uniform : soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=4.0 cutoff_transition_width=0.5 "
           "central_weight=1.0 covariance_type=dot_product delta=0.2 zeta=2 n_sparse=40 sparse_method=cur_points}"]
# relative, against quippy's predictions of the same XML.  The σ and jitter above keep α ≲ 2e3, so
# the two programs' predictions agree to 4e-11 eV/atom and 1e-10 eV/Å; with gap_fit's usual
# sparse_jitter=1e-8 and σ_E = 2 meV, α reaches 3e5 and rounding alone moves predictions by 5e-9
# eV/atom, 2e-6 of a 1 meV/atom RMSE.  Errors that are themselves at that level (the forces of
# perfect crystals, ~1e-11 eV/Å) are compared absolutely, to 1e-9.
TOLERANCE = 1e-6
FLOOR = 1e-9


def _split(tmp_path):
    frames = read(str(TA_XYZ), ":")
    write(str(tmp_path / "train.xyz"), frames[::6])  # 61 frames, every config_type
    write(str(tmp_path / "test.xyz"), frames[3::12])  # 30 others
    return frames[::6], frames[3::12]


def _independent(xml, frames):
    """{config_type or "overall": {quantity: (n, rmse, mae)}} from quippy's predictions."""
    from quippy.potential import Potential
    pot = Potential(param_filename=str(xml))
    errors = {}
    for atoms in frames:
        n = len(atoms)
        e_ref, f_ref = atoms.get_potential_energy(), atoms.get_forces()
        w_ref = np.asarray(atoms.info["virial"], dtype=float).reshape(3, 3)
        a = atoms.copy()
        a.calc = pot
        w = -a.get_stress(voigt=False) * a.get_volume()
        de = (a.get_potential_energy() - e_ref) / n
        df = (a.get_forces() - f_ref).reshape(-1)
        dw = (0.5 * (w + w.T) - 0.5 * (w_ref + w_ref.T))[np.tril_indices(3)] / n
        for group in (atoms.info.get("config_type", "default"), "overall"):
            g = errors.setdefault(group, {"energy": [], "forces": [], "virial": [], "max": 0.0})
            g["energy"].append([de])
            g["forces"].append(df)
            g["virial"].append(dw)
            g["max"] = max(g["max"], float(np.sqrt(((a.get_forces() - f_ref) ** 2).sum(axis=1)).max()))
    out = {}
    for group, g in errors.items():
        out[group] = {q: (np.concatenate(g[q]).size, float(np.sqrt(np.mean(np.concatenate(g[q]) ** 2))),
                          float(np.mean(np.abs(np.concatenate(g[q]))))) for q in ("energy", "forces", "virial")}
        out[group]["max"] = g["max"]
    return out


def _compare(summary, expected):
    groups = dict(summary["config_types"], overall=summary["overall"])
    assert set(groups) == set(expected)
    for group, ref in expected.items():
        got = groups[group]
        for q in ("energy", "forces", "virial"):
            n, rmse, mae = ref[q]
            assert got[q]["n"] == n, (group, q)
            assert got[q]["rmse"] == pytest.approx(rmse, rel=TOLERANCE, abs=FLOOR), (group, q)
            assert got[q]["mae"] == pytest.approx(mae, rel=TOLERANCE, abs=FLOOR), (group, q)
        assert got["forces"]["max"] == pytest.approx(ref["max"], rel=TOLERANCE, abs=FLOOR), group


@pytest.mark.parametrize("ranks", [None, 2])
def test_training_and_test_errors_equal_quippys(tmp_path, quippy, ranks):
    train, test = _split(tmp_path)
    proc = run_gapfit(["at_file=train.xyz", "test_file=test.xyz", "gp_file=gp.xml", "report_file=report.json",
                       *OPTIONS], tmp_path, mpi_ranks=ranks)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    _compare(report["errors"]["training"], _independent(tmp_path / "gp.xml", train))
    _compare(report["errors"]["test"]["test.xyz"], _independent(tmp_path / "gp.xml", test))
    assert "Errors on the training data" in proc.stdout and "Errors on test_file 'test.xyz'" in proc.stdout
    # the table in the log: one row per config_type and the overall row, energies in meV/atom
    overall = report["errors"]["training"]["overall"]
    row = next(line for line in proc.stdout.splitlines() if line.strip().startswith("overall"))
    assert f"{overall['energy']['rmse'] * 1e3:.4g}" in row.split()
    worst = report["errors"]["training"]["overall"]["forces"]
    assert 1 <= worst["max_frame"] <= len(train) and worst["max_atom"] >= 1
    # gapfit-eval on the same model and file, with the same number of ranks: the same table
    proc = _gapfit_eval(["gp.xml", "test.xyz", "energy_parameter_name=energy", "force_parameter_name=forces",
                         "virial_parameter_name=virial", "--json", "eval.json", "--plot", "parity"], tmp_path, ranks)
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads((tmp_path / "eval.json").read_text())["errors"]["test.xyz"]
    fitted = report["errors"]["test"]["test.xyz"]
    for group in ["overall"] + list(fitted["config_types"]):
        a = fitted[group] if group == "overall" else fitted["config_types"][group]
        b = evaluated[group] if group == "overall" else evaluated["config_types"][group]
        for q in ("energy", "forces", "virial"):
            assert b[q]["n"] == a[q]["n"] and b[q]["rmse"] == pytest.approx(a[q]["rmse"], rel=1e-12, abs=1e-15)
    for quantity in ("energy", "forces", "virial"):
        assert (tmp_path / f"parity_{quantity}.png").stat().st_size > 10000


def _sample(frames, atoms):
    """The frames the training table scores for ``training_errors_atoms=atoms``, by the rule docs/errors.md
    states (about ``atoms`` atoms; in each config_type of F frames, n = max(5, round(fF)) of them, f the
    atom fraction, at positions ⌊(k + ½)F/n⌋; all of a config_type of at most 5)."""
    fraction = atoms / sum(len(a) for a in frames)
    by_type = {}
    for k, a in enumerate(frames):
        by_type.setdefault(a.info.get("config_type", "default"), []).append(k)
    chosen = []
    for members in by_type.values():
        n = len(members) if len(members) <= 5 else max(5, int(round(fraction * len(members))))
        chosen += [members[int((k + 0.5) * len(members) / n)] for k in range(n)]
    return sorted(chosen)


@pytest.mark.parametrize("ranks", [None, 2])
def test_sampled_training_errors_equal_quippys_on_the_chosen_frames(tmp_path, quippy, ranks):
    """training_errors_atoms: the table scores frames spread through each config_type, the same ones on
    any number of ranks, says "n of N" per config_type, and equals quippy's errors on exactly those."""
    train, _ = _split(tmp_path)
    budget = sum(len(a) for a in train) // 4
    proc = run_gapfit(["at_file=train.xyz", "gp_file=gp.xml", "report_file=report.json",
                       f"training_errors_atoms={budget}", *OPTIONS], tmp_path, mpi_ranks=ranks, training_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    chosen = [train[k] for k in _sample(train, budget)]
    assert len(chosen) == 38 and len(train) == 61  # 5 of each of the two 16- and 17-frame config_types
    report = json.loads((tmp_path / "report.json").read_text())
    _compare(report["errors"]["training"], _independent(tmp_path / "gp.xml", chosen))
    assert f"{len(chosen)} of {len(train)} frames" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.strip().startswith("overall"))
    assert f"{len(chosen)} of {len(train)}" in row


def _gapfit_eval(args, cwd, ranks=None):
    cmd = [sys.executable, "-m", "gapfit.model.evaluate", *args]
    if ranks:
        cmd = [shutil.which("mpirun"), "-n", str(ranks),
               *(["--oversubscribe"] if ranks > (os.cpu_count() or 1) else []), *cmd]
    return subprocess.run(cmd, cwd=str(cwd), env=mpi_env(), capture_output=True, text=True, timeout=600)


def test_gapfit_eval_refuses_bad_input_in_one_line(tmp_path):
    _split(tmp_path)
    (tmp_path / "gp.xml").write_text("<GAP_params/>")
    cases = [(["missing.xml", "test.xyz"], "gapfit-eval: error: 'missing.xml' does not exist", 2),
             (["gp.xml", "test.xyz", "energy_paramter_name=energy"],
              "gapfit-eval: error: unknown key 'energy_paramter_name' on the gapfit-eval command line; "
              "did you mean 'energy_parameter_name'?", 2),
             (["gp.xml", "energy_parameter_name=energy"], "gapfit-eval: error: no data file given", 2),
             (["gp.xml", "test.xyz"], "gapfit-eval: error: GAP model 'gp.xml' has no <gpSparse>", 1),
             (["test.xyz", "test.xyz"], "gapfit-eval: error: GAP model 'test.xyz' is not well-formed XML", 1)]
    for args, message, status in cases:
        proc = _gapfit_eval(args, tmp_path)
        assert proc.returncode == status and proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_training_errors_can_be_switched_off_and_test_file_is_checked_first(tmp_path):
    _split(tmp_path)
    proc = run_gapfit(["at_file=train.xyz", "test_file=missing.xyz", "gp_file=gp.xml", *OPTIONS], tmp_path)
    assert proc.returncode != 0 and not (tmp_path / "gp.xml").exists()
    assert proc.stderr.strip().splitlines()[-1] == "gapfit: error: test_file 'missing.xyz' does not exist"
    shutil.copy(tmp_path / "train.xyz", tmp_path / "copy.xyz")
    proc = run_gapfit(["at_file=train.xyz", "test_file=copy.xyz", "gp_file=copy.xyz", *OPTIONS], tmp_path)
    assert proc.returncode != 0 and "would overwrite the input test_file 'copy.xyz'" in proc.stderr
    proc = run_gapfit(["at_file=train.xyz", "training_errors=F", "gp_file=gp.xml", "report_file=r.json",
                       *OPTIONS], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Errors on" not in proc.stdout and "errors" not in json.loads((tmp_path / "r.json").read_text())


def test_api_score_and_predict_equal_the_fits_report(tmp_path):
    """GapFit.score on the test frames (ase.Atoms) gives the fit's test_file table; GapFit.predict
    gives the calculator's predictions."""
    from gapfit import GapFit
    from gapfit.model.calculator import GapCalculator

    train, test = _split(tmp_path)
    options = {k: v for k, v in (w.split("=", 1) for w in OPTIONS)}
    fit = GapFit(quiet=True, test_file=str(tmp_path / "test.xyz"), **options).fit(train)
    from_fit = fit.errors_["test"][str(tmp_path / "test.xyz")]
    rows = {r["config_type"]: r for r in fit.score(test)}
    assert set(rows) == set(from_fit["config_types"]) | {"overall"}
    for q in ("energy", "forces", "virial"):
        assert rows["overall"][q]["rmse"] == pytest.approx(from_fit["overall"][q]["rmse"], rel=1e-12)
    assert fit.errors_["training"]["overall"]["frames"] == len(train)
    # other reference keys: scoring against the model's own predictions gives zero errors
    calc = GapCalculator(model=fit.model_)
    relabelled = []
    for atoms in test[:5]:
        a = atoms.copy()
        a.calc = calc
        a.info["e_pred"] = a.get_potential_energy()
        a.arrays["f_pred"] = a.get_forces()
        a.calc = None
        relabelled.append(a)
    zero = {r["config_type"]: r for r in fit.score(relabelled, energy_parameter_name="e_pred",
                                                   force_parameter_name="f_pred", virial_parameter_name="none")}
    assert zero["overall"]["energy"]["rmse"] < 1e-12 and zero["overall"]["forces"]["rmse"] < 1e-12
    assert zero["overall"]["virial"]["n"] == 0
    predictions = fit.predict(test[:3])
    for atoms, pred in zip(test[:3], predictions):
        a = atoms.copy()
        a.calc = calc
        assert pred["energy"] == pytest.approx(a.get_potential_energy(), rel=1e-12)
        assert np.abs(pred["forces"] - a.get_forces()).max() < 1e-10
    with pytest.raises(Exception, match="unknown key 'energy_name'"):
        fit.score(test, energy_name="x")


def test_gapfit_eval_reads_the_fits_target_names_and_names_what_it_leaves_out(tmp_path):
    """The model's command line gives the *_parameter_name keys (ASE's 'forces' here, not gap_fit's
    default 'force'); one the user overrides wrongly is named in a warning and in the summary."""
    _split(tmp_path)
    fit = [o for o in OPTIONS if not o.startswith("gap=")] + [
        "gap={distance_2b cutoff=5.0 covariance_type=ard_se delta=2.0 theta_uniform=0.75 n_sparse=15 "
        "sparse_method=uniform}", "training_errors=F"]
    proc = run_gapfit(["at_file=train.xyz", "gp_file=gp.xml", *fit], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _gapfit_eval(["gp.xml", "test.xyz", "--json", "recorded.json", "--plot", "recorded"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("from the model's command line: energy_parameter_name=energy force_parameter_name=forces "
            "virial_parameter_name=virial") in proc.stdout
    recorded = json.loads((tmp_path / "recorded.json").read_text())["errors"]["test.xyz"]["overall"]
    assert recorded["forces"]["n"] > 0 and recorded["virial"]["n"] > 0
    assert (tmp_path / "recorded_forces.png").stat().st_size > 10000  # the force plot, with no keys given
    proc = _gapfit_eval(["gp.xml", "test.xyz", "force_parameter_name=force", "--json", "wrong.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "from the model's command line: energy_parameter_name=energy virial_parameter_name=virial" in proc.stdout
    wrong = json.loads((tmp_path / "wrong.json").read_text())["errors"]["test.xyz"]["overall"]
    assert wrong["forces"]["n"] == 0 and wrong["energy"] == recorded["energy"]
    told = "their forces are not evaluated; set force_parameter_name=forces to evaluate them"
    assert told in proc.stderr and told in proc.stdout.split("== Not fitted or evaluated")[1], proc.stdout


def test_parity_axes_leave_out_a_few_far_points_and_say_so():
    """A few compressed-volume frames must not squeeze the main cluster into a corner (issue 21)."""
    from gapfit.model.evaluate import _axis_range
    rng = np.random.default_rng(0)
    main = rng.normal(-11.8, 0.05, (500, 2))
    far = np.array([[-5.0, -5.1], [-4.0, -4.2]])
    low, high, outside = _axis_range(np.vstack([main, far]))
    assert outside == 2 and low < main.min() and high < -11.0
    low, high, outside = _axis_range(main)  # nothing far: every point shown
    assert outside == 0 and low < main.min() and high > main.max()


def test_header_names_the_solver_and_test_file_rows_stay_short(tmp_path):
    """The log's header says which solver runs; a test_file's phase is named by its file name, cut to
    32 characters, not its path (the timing table stays readable)."""
    _split(tmp_path)
    deep = tmp_path / "a" / "long" / "directory" / "of" / "validation" / "data"
    deep.mkdir(parents=True)
    shutil.copy(tmp_path / "test.xyz", deep / "held_out_frames_of_the_tantalum_set.xyz")
    fit = [o for o in OPTIONS if not o.startswith("gap=")] + [
        "gap={distance_2b cutoff=5.0 covariance_type=ard_se delta=2.0 theta_uniform=0.75 n_sparse=15 "
        "sparse_method=uniform}", "training_errors=F", "linear_solver=streaming",
        f"test_file={deep / 'held_out_frames_of_the_tantalum_set.xyz'}"]
    proc = run_gapfit(["at_file=train.xyz", "gp_file=gp.xml", *fit], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "  solver: streaming" in proc.stdout.split("== Options")[0]
    table = proc.stdout.split("wall time (s) per phase")[1]
    row = next(line for line in table.splitlines() if "Errors on test_file" in line)
    assert "'held_out_frames_of_the_tantalum…'" in row and "directory" not in row, row

