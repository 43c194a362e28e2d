"""Published soap_turbo command lines, run by gap_fit and by gapfit as a shell runs them (issue 20).

* Fe GAP-22 (github.com/leiapple/Fe-GAP22 ``train.in``, MIT, (c) 2022 Lei Zhang, commit 99f2d84):
  distance_Nb order 2 and two soap_turbo terms with compress_mode=trivial, config_type_n_sparse,
  config_type_sigma, sparse_jitter=1e-12 and a per-species e0.  It runs on tantalum (the ta_snap set,
  examples/data), so ``species_Z={26}`` becomes ``{73}`` and ``e0={Fe:…}`` becomes Ta's mean energy
  per atom; Ta's config types are renamed to the four Fe GAP-22 names (surfaces and stacking faults
  → slice_sample_high, elastic bcc → phonons_54_high, displaced → phonons_128_high, volume scans →
  prim_random) and its arrays to the names the line asks for (``force``).
* The TurboGAP school's CH template (github.com/mcaroba/TurboGAP_School,
  database_fitting/iterative_training/inputs/fits/, commit ccbef71; quoted as a published
  configuration): distance_2b, angle_3b with the pp kernel, and one soap_turbo per central species
  (central_index=1, 2) with {{…}} vectors, a trailing ':' before the closing '}' and a Glue core.  Its
  core file is not published: ours (tests/data/core/ch_pairpot_glue.xml) is a short-range pair
  repulsion.  The C/H frames are random periodic boxes labelled by ASE's EMT (C and H parameters).

Only the n_sparse values are scaled down (and the Fe line's element).  Both programs get the same
words from bash.  When gapfit's CUR picks are not gap_fit's, gap_fit refits with gapfit's sparse
points (sparse_method=file), and the test says so.  Predictions on held-out frames must agree to
1e-6 eV/atom and 1e-5 eV/Å, or to 10× the fit's ±1-ulp rounding floor where that is larger (printed):
the largest change of gapfit's predictions when the training positions, soap_turbo's radial basis W
and the kernel rows K_NM all move by ±1 ulp (``_fit_rounding_floor``), or when gapfit runs on
OpenBLAS's other kernel family (``_other_kernels_floor``: another BLAS, as gap_fit's is).
quippy loads gapfit's model and agrees with gapfit's calculator to 1e-8 (relative), and gapfit's
calculator reads gap_fit's model.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.io import read, write

from gapfit import GapFit
from gapfit.descriptors import soap_turbo_radial
from gapfit.solve import rows as solve_rows
from gapfit.model.calculator import GapCalculator
from gapfit.model.gap_xml import read_model

from openblas_kernels import kernel_environments
from conftest import (CORE_DATA, TA_XYZ, calculator_differences, config_words, evaluation_rounding_floor,
                      prediction_differences, same_environment, same_sparse_points, ulp_moved)

pytestmark = pytest.mark.oracle

# Fe GAP-22's train.in as published (only the program name is a variable here)
FE_GAP22 = r"""$PROGRAM at_file=train.xyz \
gap={ distance_Nb order=2 cutoff=5.0 n_sparse=25 covariance_type=ard_se  \
delta=1.0 theta_uniform=2.5 sparse_method=uniform compact_clusters=True \
:soap_turbo l_max=8 alpha_max={{8}} \
atom_sigma_r={{0.25}} atom_sigma_t={{0.25}} \
atom_sigma_r_scaling={{ 0.0}} atom_sigma_t_scaling={{0.0}} \
zeta=4 rcut_hard=3.0 rcut_soft=2.5 \
delta=1.0 basis="poly3" \
scaling_mode="polynomial"  amplitude_scaling={{1.0}}  \
n_species=1 species_Z={26} add_species=F \
compress_mode="trivial" \
radial_enhancement=1 central_weight={{1.0}}  covariance_type=dot_product \
config_type_n_sparse={slice_sample_high:250:phonons_54_high:250:phonons_128_high:250:prim_random:100:default:1500} \
sparse_method=cur_points \
:soap_turbo l_max=8 alpha_max={{8}} \
atom_sigma_r={{0.5}} atom_sigma_t={{0.5}} \
atom_sigma_r_scaling={{ 0.0}} atom_sigma_t_scaling={{0.0}} \
zeta=4 rcut_hard=5.0 rcut_soft=4.0 \
delta=1.0 basis="poly3" \
scaling_mode="polynomial"  amplitude_scaling={{1.0}}  \
n_species=1 species_Z={26} add_species=F compress_mode="trivial" \
radial_enhancement=1 central_weight={{1.0}}  covariance_type=dot_product \
config_type_n_sparse={slice_sample_high:250:phonons_54_high:250:phonons_128_high:250:prim_random:100:default:1500} \
sparse_method=cur_points} \
sparse_jitter=1e-12 \
default_sigma={0.005 0.2 1.0 0.0}  \
config_type_sigma={slice_sample_high:0.0001:0.01:0.01:0.0:phonons_54_high:0.001:0.05:1.0:0.0:phonons_128_high:0.001:0.05:1.0:0.0:prim_random:0.0001:0.01:0.01:0.0} \
energy_parameter_name=energy force_parameter_name=force virial_parameter_name=virial  \
do_copy_at_file=F  \
sparse_separate_file=T  \
gp_file=gap_Fe_test.xml \
openmp_chunk_size=1000 \
e0={Fe:-3455.6995339}
"""
# n_sparse ÷ 10 (the 2-body term's 25 stays), the element, e0 (≈ Ta's mean energy per atom), the output
FE_EDITS = [("slice_sample_high:250:phonons_54_high:250:phonons_128_high:250:prim_random:100:default:1500",
             "slice_sample_high:25:phonons_54_high:25:phonons_128_high:25:prim_random:10:default:150"),
            ("species_Z={26}", "species_Z={73}"), ("e0={Fe:-3455.6995339}", "e0={Ta:-11.8}"),
            ("gp_file=gap_Fe_test.xml", "gp_file=$OUTPUT")]
TA_TO_FE_TYPES = {"GSF_110": "slice_sample_high", "GSF_112": "slice_sample_high", "Surface": "slice_sample_high",
                  "Elastic_BCC": "phonons_54_high", "Displaced_BCC": "phonons_128_high",
                  "Displaced_A15": "phonons_128_high", "Displaced_FCC": "phonons_128_high",
                  "Volume_BCC": "prim_random", "Volume_A15": "prim_random", "Volume_FCC": "prim_random"}

# The TurboGAP school's CH template as published (only the program name is a variable here)
TURBOGAP_CH = r"""energy="free_energy"
virial="DUMMY"
forces="forces"

$PROGRAM atoms_filename=train_tagged.xyz core_param_file=pairpot_mod.xml core_ip_args={IP Glue} \
        gap={ \
              distance_2b Z1=1 Z2=1 cutoff=4.0 n_sparse=30 covariance_type=ard_se \
                  delta=0.5 theta_uniform=0.5 sparse_method=uniform add_species=F : \
              distance_2b Z1=1 Z2=6 cutoff=4.0 n_sparse=30 covariance_type=ard_se \
                  delta=0.5 theta_uniform=0.5 sparse_method=uniform add_species=F : \
              distance_2b Z1=6 Z2=6 cutoff=4.0 n_sparse=30 covariance_type=ard_se \
                  delta=0.5 theta_uniform=0.5 sparse_method=uniform add_species=F : \
              angle_3b Z_center=6 Z1=1 Z2=1 cutoff=2.0 n_sparse=200 covariance_type=pp \
                  delta=0.01 theta_uniform=2.0 sparse_method=uniform add_species=F : \
              angle_3b Z_center=6 Z1=1 Z2=6 cutoff=2.0 n_sparse=200 covariance_type=pp \
                  delta=0.01 theta_uniform=2.0 sparse_method=uniform add_species=F : \
              angle_3b Z_center=6 Z1=6 Z2=6 cutoff=2.0 n_sparse=200 covariance_type=pp \
                  delta=0.01 theta_uniform=2.0 sparse_method=uniform add_species=F : \
              soap_turbo l_max=4 alpha_max={{4 4}} atom_sigma_r={{0.2 0.2}} atom_sigma_t={{0.2 0.2}} \
                  atom_sigma_r_scaling={{0.1 0.1}} atom_sigma_t_scaling={{0.1 0.1}} \
                  zeta=4 rcut_hard=4.0 rcut_soft=3.5 basis=poly3gauss \
                  scaling_mode=polynomial add_species=F \
                  amplitude_scaling={{2.0 2.0}} n_species=2 species_Z={{1 6}} central_index=1 \
                  radial_enhancement=1 compress_mode=trivial \
                  central_weight={{1.0 1.0}} \
                  n_sparse=500 \
                  delta=0.1 f0=0.0 covariance_type=dot_product sparse_method=cur_points : \
              soap_turbo l_max=4 alpha_max={{4 4}} atom_sigma_r={{0.2 0.2}} atom_sigma_t={{0.2 0.2}} \
                  atom_sigma_r_scaling={{0.1 0.1}} atom_sigma_t_scaling={{0.1 0.1}} \
                  zeta=4 rcut_hard=4.0 rcut_soft=3.5 basis=poly3gauss \
                  scaling_mode=polynomial add_species=F \
                  amplitude_scaling={{2.0 2.0}} n_species=2 species_Z={{1 6}} central_index=2 \
                  radial_enhancement=1 compress_mode=trivial \
                  central_weight={{1.0 1.0}} \
                  n_sparse=500 \
                  delta=0.1 f0=0.0 covariance_type=dot_product sparse_method=cur_points : \
            } \
        default_sigma={0.001 0.1 0.1 0.1} \
        energy_parameter_name=${energy} force_parameter_name=${forces} \
        virial_parameter_name=${virial} \
        sparse_jitter=1.0e-8 e0={H:0:C:0} do_copy_at_file=F \
        sparse_separate_file=T openmp_chunk_size=10000 gp_file=CH.xml
"""
CH_EDITS = [("n_sparse=500", "n_sparse=60"), ("gp_file=CH.xml", "gp_file=$OUTPUT")]


def _edited(script, edits):
    for old, new in edits:
        assert old in script, old
        script = script.replace(old, new)
    return script


def _fe_data(folder):
    """Every third Ta frame for training (renamed as Fe GAP-22's data), eight others held out."""
    frames = read(str(TA_XYZ), ":")
    held = [k for k in range(len(frames)) if k % 9 == 4][::5][:8]
    train = []
    for k in range(0, len(frames), 3):
        source = frames[k]
        atoms = Atoms(source.numbers, source.positions, cell=source.cell, pbc=source.pbc)
        atoms.arrays["force"] = source.get_forces()
        atoms.info.update(energy=source.get_potential_energy(), virial=source.info["virial"],
                          config_type=TA_TO_FE_TYPES.get(source.info["config_type"], source.info["config_type"]))
        train.append(atoms)
    write(str(folder / "train.xyz"), train, format="extxyz")
    return [frames[k] for k in held]


def _ch_data(folder, n_frames=60, seed=11):
    """Random periodic C/H boxes (no two atoms closer than 1.05 Å), labelled by ASE's EMT."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        n_c, n_h = int(rng.integers(6, 11)), int(rng.integers(3, 9))
        cell = np.diag([rng.uniform(5.5, 6.5)] * 3) + rng.uniform(-0.4, 0.4, (3, 3))
        positions = np.zeros((0, 3))
        while len(positions) < n_c + n_h:
            trial = rng.uniform(0.0, 1.0, 3) @ cell
            probe = Atoms(positions=np.vstack([positions, trial]), cell=cell, pbc=True)
            if len(positions) == 0 or probe.get_distances(len(positions), range(len(positions)), mic=True).min() > 1.05:
                positions = np.vstack([positions, trial])
        atoms = Atoms("C" * n_c + "H" * n_h, positions=positions, cell=cell, pbc=True)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        atoms.info["free_energy"] = energy
        atoms.arrays["forces"] = forces
        frames.append(atoms)
    write(str(folder / "train_tagged.xyz"), [a for k, a in enumerate(frames) if k % 5], format="extxyz")
    shutil.copy(CORE_DATA / "ch_pairpot_glue.xml", folder / "pairpot_mod.xml")
    return frames[::5]


RECIPES = {"Fe GAP-22 (on Ta)": (FE_GAP22, FE_EDITS, _fe_data, "train.xyz"),
           "TurboGAP school CH": (TURBOGAP_CH, CH_EDITS, _ch_data, "train_tagged.xyz")}


_QUIPPY_EVAL = r"""
import pickle, sys
from quippy.potential import Potential
pot = Potential(param_filename=sys.argv[1])
out = []
for atoms in pickle.load(open(sys.argv[2], "rb")):
    atoms.calc = pot
    out.append((atoms.get_potential_energy(), atoms.get_forces()))
pickle.dump(out, open(sys.argv[3], "wb"))
"""


def _radial_basis_floor(xml, calc, frames, monkeypatch, n=2):
    """Largest change of gapfit's predictions when every element of each soap_turbo radial overlap S moves
    by ±1 ulp before W = S^(-1/2) is formed: LAPACK's backward error, so what another BLAS (QUIP's own,
    or another OpenBLAS kernel family) may change.  cond(S) is 1e13 for Fe GAP-22's alpha_max 8, so this
    part of the model's rounding floor is far above α's (docs/dev/soap_turbo.md §7.4)."""
    exact = soap_turbo_radial.inverse_square_root
    worst_e = worst_f = 0.0
    for seed in range(n):
        rng = np.random.default_rng(seed)

        def perturbed(s, rng=rng):
            signs = np.triu(rng.choice([-1.0, 1.0], s.shape))
            return exact(s * (1.0 + np.finfo(float).eps * (signs + np.triu(signs, 1).T)))
        with monkeypatch.context() as patch:
            patch.setattr(soap_turbo_radial, "inverse_square_root", perturbed)
            other = GapCalculator(str(xml))
        de, df, _, _ = calculator_differences(calc, other, frames)
        worst_e, worst_f = max(worst_e, de), max(worst_f, df)
    return worst_e, worst_f


def _fit_rounding_floor(folder, held_out, config, train, monkeypatch, n=4):
    """The fit's ±1-ulp rounding floor: the largest change of gapfit's predictions on ``held_out`` when
    the fit (same sparse points: the options file ``config``) runs with every training position, every
    element of each soap_turbo radial basis W = S^(-1/2) and every kernel row element K_NM moved by
    ±1 ulp (random signs), evaluated with the exact W as the test evaluates gap_fit's model.  Two
    programs' inputs, bases and kernel rows can never agree better than that: the positions are
    read, W is an eigendecomposition of S with cond(S) = 1e13 (alpha_max 8; quippy's descriptors
    differ from gapfit's by 1-2e-10 relative on Ta, a 1-ulp move of W by 3-8e-10), and K_NM's
    1-ulp moves stand for the solver's backward error.  (CI once measured 1.98e-6 eV/atom between
    the programs against a floor of the positions alone of 1.44e-7.)"""
    exact, exact_rows = soap_turbo_radial.inverse_square_root, solve_rows.k_nm_rows
    frames = read(str(folder / train), ":")
    worst_e = worst_f = 0.0
    for seed in range(n):
        rng = np.random.default_rng(seed)
        moved = ulp_moved(frames, rng)

        def perturbed(s, rng=rng):
            signs = np.triu(rng.choice([-1.0, 1.0], s.shape))
            return exact(s) * (1.0 + np.finfo(float).eps * (signs + np.triu(signs, 1).T))

        def rows(*args, rng=rng, **kwargs):
            k = exact_rows(*args, **kwargs)
            return k * (1.0 + np.finfo(float).eps * rng.choice([-1.0, 1.0], k.shape))
        with monkeypatch.context() as patch:
            patch.setattr(soap_turbo_radial, "inverse_square_root", perturbed)
            patch.setattr(solve_rows, "k_nm_rows", rows)
            patch.chdir(folder)
            GapFit(f"config_file={config}", gp_file=f"moved{seed}.xml", training_errors=False, quiet=True).fit(moved)
        de, df = prediction_differences(folder / "gapfit.xml", folder / f"moved{seed}.xml", held_out)
        worst_e, worst_f = max(worst_e, de), max(worst_f, df)
    return worst_e, worst_f


def _other_kernels_floor(folder, held_out, config):
    """How far gapfit's predictions move when the same fit (same sparse points) runs on OpenBLAS's
    other kernel family (``OPENBLAS_CORETYPE``; (0, 0) on a machine with one family): another BLAS,
    as gap_fit's own OpenBLAS 0.3.15 is.  For the Fe line this is the largest part of the floor
    (1.2e-5 eV/atom, Haswell against SkylakeX, when measured: soap_turbo's W = S^(-1/2) carries the
    BLAS's last bits at cond(S)^(1/2)·ε)."""
    envs = kernel_environments()
    if len(envs) < 2:
        return 0.0, 0.0
    other = envs[0] if os.environ.get("OPENBLAS_CORETYPE") else envs[1]  # under the second pass: the native
    run = subprocess.run([sys.executable, "-m", "gapfit", f"config_file={config}", "gp_file=other_kernels.xml",
                          "training_errors=F"], cwd=str(folder), env=dict(other, OMP_NUM_THREADS="2"),
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return prediction_differences(folder / "gapfit.xml", folder / "other_kernels.xml", held_out)


class _QuippyInFreshProcess(Calculator):
    """quippy's predictions for ``frames`` with the model ``xml``, computed once in a fresh process and
    served to ``calculator_differences`` frame by frame (in the order of ``frames``)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, xml, frames):
        super().__init__()
        folder = os.path.dirname(str(xml))
        with open(os.path.join(folder, "quippy_frames.pkl"), "wb") as fh:
            pickle.dump([Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in frames], fh)
        with open(os.path.join(folder, "quippy_eval.py"), "w") as fh:
            fh.write(_QUIPPY_EVAL)
        subprocess.run([sys.executable, "quippy_eval.py", str(xml), "quippy_frames.pkl", "quippy.pkl"], cwd=folder,
                       check=True, capture_output=True, timeout=600)
        with open(os.path.join(folder, "quippy.pkl"), "rb") as fh:
            results = pickle.load(fh)
        self._by_positions = {np.asarray(a.positions).tobytes(): r for a, r in zip(frames, results)}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, forces = self._by_positions[np.asarray(self.atoms.positions).tobytes()]
        self.results = {"energy": energy, "forces": forces}


def _run(script, program, output, cwd):
    env = dict(os.environ, PROGRAM=program, OUTPUT=output, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    return subprocess.run(["bash", "-c", script], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_published_soap_turbo_line_same_model_as_gap_fit(tmp_path, gap_fit, recipe, monkeypatch):
    pytest.importorskip("quippy.potential")
    template, edits, make_data, train_file = RECIPES[recipe]
    script = _edited(template, edits)
    held_out = make_data(tmp_path)
    gapfit_program = f"{sys.executable} -m gapfit training_errors=F"
    run = _run(script, gapfit_program, "gapfit.xml", tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    run = _run(script, gap_fit, "gap_fit.xml", tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    ours, theirs = read_model(str(tmp_path / "gapfit.xml")), read_model(str(tmp_path / "gap_fit.xml"))
    assert [c.descriptor for c in ours.coordinates] == [c.descriptor for c in theirs.coordinates]
    assert ours.has_core == theirs.has_core
    np.testing.assert_allclose(ours.e0, theirs.e0, rtol=1e-12, atol=0)
    same_points = all(a.sparse_x.shape == b.sparse_x.shape and same_environment(a.sparse_x, b.sparse_x).any(axis=1).all()
                      for a, b in zip(ours.coordinates, theirs.coordinates))
    # the same sparse points in every case (gap_fit refits with gapfit's when its CUR picks differ):
    # the options file also serves the rounding floor below; gapfit's own training_errors=F (from the
    # program words) is dropped: gap_fit does not know the key
    cfg = same_sparse_points(tmp_path / "gapfit.xml", "training_errors")
    if not same_points:
        run = subprocess.run([gap_fit, *config_words(tmp_path / cfg), "gp_file=gap_fit.xml"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="2"))
        assert run.returncode == 0, run.stdout[-3000:]
    n_sparse = [c.sparse_x.shape[0] for c in ours.coordinates]
    seed = next(w for w in ours.command_line.split() if w.startswith("rnd_seed="))
    de, df = prediction_differences(tmp_path / "gap_fit.xml", tmp_path / "gapfit.xml", held_out)
    print(f"{recipe}: sparse points per coordinate {n_sparse} (gapfit's {seed}), "
          f"{'the same as gap_fit' if same_points else 'not gap_fit CUR picks: gap_fit refitted with them'}; "
          f"gap_fit vs gapfit on {len(held_out)} held-out frames: max |ΔE|/atom = {de:.2e} eV, max |ΔF| = {df:.2e} eV/Å")
    if not (de < 1e-6 and df < 1e-5):
        floor_e, floor_f = _fit_rounding_floor(tmp_path, held_out, cfg, train_file, monkeypatch)
        blas_e, blas_f = _other_kernels_floor(tmp_path, held_out, cfg)
        print(f"{recipe}: ill-conditioned: 1-ulp moves of the training positions, soap_turbo's radial basis W "
              f"and K_NM change gapfit's predictions by up to {floor_e:.2e} eV/atom and {floor_f:.2e} eV/Å, "
              f"OpenBLAS's other kernel family by {blas_e:.2e} and {blas_f:.2e}; the test allows 10× the larger")
        floor_e, floor_f = max(floor_e, blas_e), max(floor_f, blas_f)
        assert de < 10 * floor_e and df < 10 * floor_f
    # QUIP loads gapfit's model and agrees with gapfit's calculator.  quippy runs in a fresh process: QUIP
    # keeps soap_turbo's W and S in process-global state recomputed only when Σ alpha_max changes
    # (docs/dev/soap_turbo.md §2.7), so after the Fe recipe's poly3 {8} the CH model's poly3gauss {4 4} would
    # be evaluated with the Fe basis in this process
    calc = GapCalculator(str(tmp_path / "gapfit.xml"))
    de, df, e_scale, f_scale = calculator_differences(_QuippyInFreshProcess(tmp_path / "gapfit.xml", held_out),
                                                      calc, held_out)
    print(f"{recipe}: quippy vs gapfit's calculator: energies {de / e_scale:.1e}, forces {df / f_scale:.1e} "
          f"(relative to the largest)")
    if not (de < 1e-8 * e_scale and df < 1e-8 * f_scale):
        floor_e, floor_f = evaluation_rounding_floor(tmp_path / "gapfit.xml", calc, held_out)
        basis_e, basis_f = _radial_basis_floor(tmp_path / "gapfit.xml", calc, held_out, monkeypatch)
        print(f"{recipe}: 1-ulp changes of α move gapfit's own predictions by {floor_e / e_scale:.1e} (energies) and "
              f"{floor_f / f_scale:.1e} (forces), 1-ulp changes of the radial overlaps S by {basis_e / e_scale:.1e} "
              f"and {basis_f / f_scale:.1e}, relative")
        assert de < 10 * max(floor_e, basis_e) and df < 10 * max(floor_f, basis_f)
