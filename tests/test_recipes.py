"""The potentials people publish, fitted by gap_fit and by gapfit from the same command line.

Si GAP-18 (its Glue core + distance_2b + soap), a C GAP-20-style distance_2b : angle_3b : soap,
autoplex's distance_Nb order 2 : order 3 : soap, and pp-kernel variants, with n_sparse scaled to
the small data sets.  gapfit chooses the sparse points once (sparsify_only_no_fit); both programs
then fit with them (CUR's random draws differ between the programs), and their predictions on
held-out frames must agree to 1e-6 eV/atom and 1e-5 eV/Å.  QUIP loads gapfit's model and agrees
with gapfit's calculator to 1e-8 (relative), and gapfit's calculator reads gap_fit's model.

Some published recipes are ill-conditioned (sparse_jitter=1e-8 with ARD_SE terms): moving every
training position by one ulp changes gapfit's own predictions by ~1e-6 eV/atom there.  When the
two programs differ by more than the tolerances above, the test measures that rounding floor
(three refits on positions moved by ±1 ulp) and requires the difference to stay within 10 times
the largest change it saw; it prints both.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from ase.io import read, write

from gapfit.model.calculator import GapCalculator
from gapfit.model.gap_xml import read_model

from conftest import (CORE_DATA, QUIP_TESTS, calculator_differences, config_words, evaluation_rounding_floor,
                      positions_rounding_floor, prediction_differences, run_gapfit)

pytestmark = pytest.mark.oracle

SI_KEYS = ["energy_parameter_name=dft_energy", "force_parameter_name=dft_force", "virial_parameter_name=dft_virial",
           "config_type_parameter_name=config_type"]

# Si GAP-18's command line (PRX 8, 041048), plus a two-body term; n_sparse 9000 → 80
SI_GAP18 = ("distance_2b cutoff=5.0 cutoff_transition_width=1.0 covariance_type={cov} delta=0.5 theta_uniform={theta} "
            "n_sparse=15 sparse_method=uniform : "
            "soap l_max=12 n_max=10 atom_sigma=0.5 zeta=4 cutoff=5.0 cutoff_transition_width=1.0 central_weight=1.0 "
            "n_sparse=80 delta=3.0 f0=0.0 covariance_type=dot_product sparse_method=cur_points")
SI_GAP18_OPTIONS = ["default_sigma={0.001 0.1 0.05 0.0}", "sparse_jitter=1.0e-8", "e0_offset=2.0",
                    "config_type_sigma={liq:0.003:0.15:0.2:0.0:amorph:0.01:0.2:0.4:0.0:sp:0.01:0.2:0.4:0.0}",
                    "core_param_file=glue.xml", "core_ip_args={IP Glue}"]

# C GAP-20's gap string (JCP 153, 034702), verbatim but for n_sparse (15, 200, 9000 → 10, 20, 60)
C_GAP20 = ("distance_2b n_sparse=10 theta_uniform=1.0 sparse_method=uniform covariance_type={cov} cutoff=4.5 delta=2.0 "
           ": angle_3b n_sparse=20 theta_uniform={theta} sparse_method=uniform covariance_type={cov} cutoff=2.5 "
           "delta=0.05 : soap n_max=12 l_max=4 atom_sigma=0.5 zeta=4.0 cutoff=4.5 cutoff_transition_width=1.0 "
           "central_weight=1.0 n_sparse=60 delta=0.2 covariance_type=dot_product sparse_method=cur_points "
           "radial_decay=-0.5")
C_GAP20_OPTIONS = ["default_sigma={0.001 0.01 0.05 0.0}", "sparse_jitter=1.0e-8", "e0_method=average"]

# autoplex's defaults (autoplex/fitting/mlip_hypers), soap scaled down (l_max 10 n_max 12 → 4, 6)
AUTOPLEX = ("distance_Nb order=2 f0=0.0 cutoff=5.0 n_sparse=15 covariance_type=ard_se delta=2.0 theta_uniform=0.5 "
            "sparse_method=uniform compact_clusters=T : "
            "distance_Nb order=3 f0=0.0 cutoff=3.25 n_sparse=40 covariance_type=ard_se delta=2.0 theta_uniform=1.0 "
            "sparse_method=uniform compact_clusters=T : "
            "soap l_max=4 n_max=6 atom_sigma=0.5 zeta=4 cutoff=5.0 cutoff_transition_width=1.0 central_weight=1.0 "
            "n_sparse=60 delta=1.0 f0=0.0 covariance_type=dot_product sparse_method=cur_points")

# (data, gap string, options, training on every n-th frame that is not held out).  The ard_se recipes
# need the data: on fewer frames they approach their rounding floor.  The pp variants are well
# conditioned (1e-11 to 1e-9 eV/atom apart) and gap_fit's soap is slow, so they train on fewer.
RECIPES = {
    "Si GAP-18 (Glue core)": ("Si.np2.xyz", SI_GAP18.format(cov="ard_se", theta=1.0), SI_GAP18_OPTIONS, 1),
    "Si GAP-18 (Glue core), pp 2b": ("Si.np2.xyz", SI_GAP18.format(cov="pp", theta=3.0), SI_GAP18_OPTIONS, 2),
    "C GAP-20 style": ("SiC.np1.xyz", C_GAP20.format(cov="ard_se", theta=1.0), C_GAP20_OPTIONS, 2),
    "C GAP-20 style, pp": ("SiC.np1.xyz", C_GAP20.format(cov="pp", theta=2.5), C_GAP20_OPTIONS, 4),
    "autoplex distance_Nb": ("SiC.np1.xyz", AUTOPLEX, C_GAP20_OPTIONS[:2] + ["e0_method=average"], 2),
}


def _split(tmp_path, name, every):
    """Hold out every fourth frame (8 at most); train on every ``every``-th of the others and the isolated atoms."""
    frames = read(str(QUIP_TESTS / name), ":")
    held = [k for k in range(len(frames)) if k % 4 == 3 and len(frames[k]) > 1][:8]
    train = [k for k in range(len(frames)) if k not in held and (k % every == 0 or len(frames[k]) == 1)]
    write(str(tmp_path / "train.xyz"), [frames[k] for k in train], format="extxyz")
    return [frames[k] for k in held]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_same_model_as_gap_fit(tmp_path, gap_fit, recipe):
    quippy = pytest.importorskip("quippy.potential")
    data, gap, options, every = RECIPES[recipe]
    held_out = _split(tmp_path, data, every)
    shutil.copy(CORE_DATA / "si_gap18_glue.xml", tmp_path / "glue.xml")
    common = ["at_file=train.xyz", "gap={" + gap + "}", *SI_KEYS, *options, "rnd_seed=1", "do_copy_at_file=F"]
    proc = run_gapfit(common + ["gp_file=sparse.xml", "sparsify_only_no_fit=T"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    if "radial_decay" in gap:  # C GAP-20's legacy key: accepted, with a warning saying it does nothing
        assert "gapfit: warning: the legacy key 'radial_decay' in gap descriptor 3 (soap) is accepted and has no " \
               "effect" in proc.stderr
    run = subprocess.run([gap_fit, *config_words(tmp_path / "sparse.xml.fit.cfg"), "gp_file=gap_fit.xml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert run.returncode == 0, run.stdout[-3000:]
    proc = run_gapfit(["config_file=sparse.xml.fit.cfg", "gp_file=gapfit.xml"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    ours, theirs = read_model(str(tmp_path / "gapfit.xml")), read_model(str(tmp_path / "gap_fit.xml"))
    assert ours.has_core == theirs.has_core == ("core_ip_args" in " ".join(options))
    assert [c.descriptor for c in ours.coordinates] == [c.descriptor for c in theirs.coordinates]
    np.testing.assert_allclose(ours.e0, theirs.e0, rtol=1e-12, atol=0)
    for a, b in zip(ours.coordinates, theirs.coordinates):
        assert np.abs(a.sparse_x - b.sparse_x).max() < 1e-12
        if a.permutations is not None:
            assert np.array_equal(a.permutations, b.permutations)
    de, df = prediction_differences(tmp_path / "gap_fit.xml", tmp_path / "gapfit.xml", held_out)
    print(f"{recipe}: {sum(c.sparse_x.shape[0] for c in ours.coordinates)} sparse points in "
          f"{len(ours.coordinates)} coordinates; gap_fit vs gapfit on {len(held_out)} held-out frames: "
          f"max |ΔE|/atom = {de:.2e} eV, max |ΔF| = {df:.2e} eV/Å")
    if not (de < 1e-6 and df < 1e-5):
        floor_e, floor_f = positions_rounding_floor(tmp_path, held_out)
        print(f"{recipe}: ill-conditioned: 1-ulp moves of the training positions change gapfit's predictions by up "
              f"to {floor_e:.2e} eV/atom and {floor_f:.2e} eV/Å")
        assert de < 10 * floor_e and df < 10 * floor_f
    # QUIP loads gapfit's model (the core included) and agrees with gapfit's calculator
    pot, calc = quippy.Potential(param_filename=str(tmp_path / "gapfit.xml")), GapCalculator(str(tmp_path / "gapfit.xml"))
    de, df, e_scale, f_scale = calculator_differences(pot, calc, held_out)
    print(f"{recipe}: quippy vs gapfit's calculator: energies {de / e_scale:.1e}, forces {df / f_scale:.1e} "
          f"(relative to the largest)")
    if not (de < 1e-8 * e_scale and df < 1e-8 * f_scale):
        floor_e, floor_f = evaluation_rounding_floor(tmp_path / "gapfit.xml", calc, held_out)
        print(f"{recipe}: 1-ulp changes of α move gapfit's own predictions by {floor_e / e_scale:.1e} (energies) and "
              f"{floor_f / f_scale:.1e} (forces), relative")
        assert de < 10 * floor_e and df < 10 * floor_f
