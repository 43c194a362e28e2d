"""Core (baseline) potentials: QUIP's IP Glue evaluated as quippy does, subtracted from the
targets as gap_fit does, and written into (and read from) the model as QUIP's Sum potential."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from ase import Atoms
from ase.io import read

from gapfit.model.calculator import GapCalculator
from gapfit.data.core import GluePotential
from gapfit.errors import ConfigError
from gapfit.model.gap_xml import read_model

from conftest import QUIP_TESTS, run_gapfit

CORES = os.path.join(os.path.dirname(__file__), "data", "core")
GLUE_FILES = {  # file, label, species of the random structures
    "Si GAP-18": ("si_gap18_glue.xml", "", [14]),
    "Si GAP-18 with its O entries": ("si_gap18_glue.xml", "", [14, 8]),
    "C GAP-20 (10 Å)": ("c_gap20_r6_innercut.xml", "", [6]),
    "two species": ("sic_test_glue.xml", "SiC_test", [14, 6]),
}


def _random_frame(rng, species, min_distance=1.0):
    n = int(rng.integers(2, 14))
    cell = np.diag(rng.uniform(3.0, 7.0, 3)) + np.triu(rng.uniform(-1.5, 1.5, (3, 3)), 1)
    for attempt in range(500):
        if attempt and attempt % 50 == 0 and n > 2:  # too crowded for this cell: one atom fewer
            n -= 1
        positions = rng.random((n, 3)) @ cell + rng.normal(0, 0.5, (n, 3))  # some outside the cell
        atoms = Atoms(numbers=rng.choice(species, n), positions=positions, cell=cell, pbc=True)
        d = atoms.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        if d.min() > min_distance:
            return atoms
    raise RuntimeError("no structure without close contacts")


@pytest.mark.oracle
@pytest.mark.parametrize("case", list(GLUE_FILES))
def test_glue_against_quippy(case):
    """Energies, forces and virials to 1e-10 relative on random structures (contacts down to 1 Å)."""
    quippy = pytest.importorskip("quippy.potential")
    name, label, species = GLUE_FILES[case]
    path = os.path.join(CORES, name)
    ours = GluePotential(open(path).read(), label=label, source=name)
    theirs = quippy.Potential("IP Glue" + (f" label={label}" if label else ""), param_filename=path)
    seed = int(np.random.SeedSequence().entropy % 2 ** 31)
    rng = np.random.default_rng(seed)
    for k in range(12):
        atoms = _random_frame(rng, species)
        q = atoms.copy()
        q.calc = theirs
        e, f, w = q.get_potential_energy(), q.get_forces(), theirs.get_virial()
        res = ours.evaluate(atoms)
        what = f"{case}, seed {seed}, frame {k}"
        assert abs(res["energy"] - e) <= 1e-10 * max(abs(e), 1e-3), what
        assert np.abs(res["forces"] - f).max() <= 1e-10 * max(np.abs(f).max(), 1e-3), what
        assert np.abs(res["virial"] - w).max() <= 1e-10 * max(np.abs(w).max(), 1e-3), what
        assert np.allclose(res["energies"], theirs.get_energies(), rtol=0, atol=1e-10 * max(abs(e), 1.0)), what


def test_glue_parameter_errors():
    good = open(os.path.join(CORES, "sic_test_glue.xml")).read()
    with pytest.raises(ConfigError, match="no <Glue_params> with label=other"):
        GluePotential(good, label="other", source="x.xml")
    with pytest.raises(ConfigError, match="declares num_points=6 but has 5"):
        GluePotential(good.replace('<point a="3.6" rho="0.0"/>', ""), source="x.xml")
    with pytest.raises(ConfigError, match="x.xml is not well-formed XML"):
        GluePotential(good[:-20], source="x.xml")
    glue = GluePotential(good, label="SiC_test", source="x.xml")
    with pytest.raises(ConfigError, match=r"x.xml describes C, Si but not O \(Z=8\), which the data contain"):
        glue.check_species([14, 8, 6], "x.xml")


SI = ["energy_parameter_name=dft_energy", "force_parameter_name=dft_force", "virial_parameter_name=dft_virial",
      "default_sigma={0.01 1.0 0.5 0.0}", "rnd_seed=1", "do_copy_at_file=F", "sparse_jitter=1e-6"]
GAP_2B = "gap={distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0 theta_uniform=0.5 n_sparse=10 sparse_method=uniform}"


@pytest.mark.parametrize("args,culprit", [
    (["core_ip_args={IP LJ}", "core_param_file=glue.xml"],
     "core_ip_args={IP LJ}: the core potential IP LJ is not implemented in gapfit (supported: IP Glue)"),
    (["core_ip_args={IP Glue}"], "core_param_file (default) 'quip_params.xml' does not exist"),
    (["core_ip_args={IP Glue}", "core_param_file=c.xml"], "describes C but not Si (Z=14), which the data contain"),
    (["baseline_ip_args={Glue}", "core_param_file=glue.xml"], "baseline_ip_args={Glue} must be a QUIP init string"),
])
def test_core_option_errors(tmp_path, args, culprit):
    shutil.copy(QUIP_TESTS / "Si.np1.xyz", tmp_path)
    shutil.copy(os.path.join(CORES, "si_gap18_glue.xml"), tmp_path / "glue.xml")
    shutil.copy(os.path.join(CORES, "c_gap20_r6_innercut.xml"), tmp_path / "c.xml")
    proc = run_gapfit(["at_file=Si.np1.xyz", GAP_2B, "gp_file=gp.xml", *SI, *args], tmp_path)
    assert proc.returncode != 0 and culprit in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "gp.xml").exists()


@pytest.mark.oracle
def test_two_species_core_same_model_as_gap_fit(tmp_path, gap_fit):
    """A Si–C core with density and embedding terms: targets, e0 (average, net of the core) and
    virials as gap_fit's; the written model carries the core, and QUIP loads it."""
    quippy = pytest.importorskip("quippy.potential")
    import subprocess
    shutil.copy(QUIP_TESTS / "SiC.np1.xyz", tmp_path)
    shutil.copy(os.path.join(CORES, "sic_test_glue.xml"), tmp_path / "core.xml")
    gap = ("gap={distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0 theta_uniform=0.5 n_sparse=10 "
           "sparse_method=uniform}")
    common = ["at_file=SiC.np1.xyz", gap, "e0_method=average", "core_ip_args={IP Glue label=SiC_test}",
              "core_param_file=core.xml", *SI]
    proc = run_gapfit(common + ["gp_file=gapfit.xml"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Core potential: IP Glue" in proc.stdout and "net of the core potential" in proc.stdout
    run = subprocess.run([gap_fit, *common, "gp_file=gap_fit.xml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-2000:]
    ours, theirs = read_model(str(tmp_path / "gapfit.xml")), read_model(str(tmp_path / "gap_fit.xml"))
    assert ours.has_core and theirs.has_core
    assert ours.e0[14] == pytest.approx(theirs.e0[14], rel=1e-12, abs=0)
    for a, b in zip(ours.coordinates, theirs.coordinates):
        assert np.array_equal(a.sparse_x, b.sparse_x)
        assert np.abs(a.alpha - b.alpha).max() <= 1e-6 * np.abs(b.alpha).max()
    text = (tmp_path / "gapfit.xml").read_text()
    assert 'init_args="Sum init_args_pot1={IP Glue label=SiC_test} init_args_pot2={IP GAP label=' in text
    assert '<GAP_data do_core="T">' in text and (tmp_path / "core.xml").read_text().strip() in text
    frames = read(str(QUIP_TESTS / "SiC.np1.xyz"), "::9")
    for xml in ("gapfit.xml", "gap_fit.xml"):  # quippy and gapfit's calculator on both models
        q, g = quippy.Potential(param_filename=str(tmp_path / xml)), GapCalculator(str(tmp_path / xml))
        for atoms in frames:
            a, b = atoms.copy(), atoms.copy()
            a.calc, b.calc = q, g
            assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), rel=1e-10)
            assert np.abs(b.get_forces() - a.get_forces()).max() < 1e-8 * max(1.0, np.abs(a.get_forces()).max())
