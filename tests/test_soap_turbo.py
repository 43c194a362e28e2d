"""The soap_turbo descriptor against QUIP (quippy-ase 0.10.3), finite differences and refusals.

* values and gradients against quippy's ``Descriptor(...).calc(atoms, grad=True)`` for a set of settings
  (poly3 / poly3gauss, one to three species, central_index 1 and 2, nonzero width and amplitude scalings,
  radial_enhancement, trivial and file compression, periodic cells smaller than the cutoff, l_max = 0,
  an ignored scalar central_weight, and six random settings on random structures drawn on every run:
  skewed cells, close contacts, one to three species; the seed is in the case names, hence in every
  failure message, and GAPFIT_TEST_SEED replays it).  Tolerance: |Δ| ≤ 1e-10 · max(1, max|reference|)
  per array (values are normalised; gradients are O(1/Å)), or 10 × the case's rounding floor where that
  is larger: the radial overlap S is ill-conditioned (cond 6e9 at alpha_max 6 with poly3, 1e13 at 8),
  and W = S^(-1/2) moves by cond(S)·ε when S's elements move by ±1 ulp, so the floor is measured by
  exactly that perturbation (spec §2.1, §7.4); the test prints each case's deviation, floor and
  tolerance, and how many cases the floor decided.  All settings go
  through one quippy process, ordered so that consecutive settings differ in Σ alpha_max: QUIP keeps
  W and S in process-global state recomputed only when Σ alpha_max changes (docs/dev/soap_turbo.md §2.7);
* the spec's reference numbers (§7.1) without quippy;
* finite differences of gapfit's gradients where QUIP's formulas are exact derivatives (no neighbour
  within 4ŝ of rcut_soft, poly3);
* the add_species expansion as gap_fit writes it into the XML, and one-line refusals.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.io import read

from gapfit.config.gaps import parse_gap_piece
from gapfit.descriptors import soap_turbo_radial
from gapfit.descriptors.neighbours import neighbour_list
from gapfit.descriptors.soap_turbo import SoapTurbo, quip_shared_basis_warnings
from gapfit.errors import ConfigError

from conftest import QUIP_TESTS
from test_soap import dense_gradient, finite_difference_gradient, run_seed

TOL = 1e-10
GP = " n_sparse=1 delta=1 covariance_type=dot_product zeta=2"

SI2 = Atoms("Si2", positions=[(0, 0, 0), (1.2, 0.7, 1.9)], cell=[20] * 3, pbc=False)
SICSI = Atoms("SiCSi", positions=[(0, 0, 0), (1.2, 0.7, 1.9), (-1.5, 0.3, 2.9)], cell=[20] * 3, pbc=False)


def _small_periodic():
    """A triclinic SiC cell smaller than the cutoff (images of the same atom are neighbours)."""
    rng = np.random.default_rng(3)
    cell = np.diag([3.1, 3.3, 3.0]) + rng.uniform(-0.3, 0.3, (3, 3))
    frac = rng.uniform(0, 1, (6, 3))
    return Atoms(["Si", "C"] * 4, scaled_positions=np.vstack([frac, [[0.5, 0.5, 0.5], [0.1, 0.9, 0.4]]]), cell=cell,
                 pbc=True)


def _sic_frame():
    return read(str(QUIP_TESTS / "SiC.np2.xyz"), index=3)


SEED = run_seed()


def _random_structure(rng, elements):
    """3-9 atoms of the given elements in a skewed cell (periodic or not) with one close contact (0.7-1.0 Å)."""
    n = int(rng.integers(3, 10))
    length = rng.uniform(4.0, 7.0)
    cell = np.diag(rng.uniform(0.8, 1.2, 3) * length) + np.triu(rng.uniform(-0.45, 0.45, (3, 3)) * length, 1)
    pos = rng.uniform(0, 1, (n, 3)) @ cell
    direction = rng.normal(size=3)
    pos[1] = pos[0] + rng.uniform(0.7, 1.0) * direction / np.linalg.norm(direction)
    symbols = [elements[k] for k in rng.integers(0, len(elements), n)]
    symbols[0] = elements[0]
    return Atoms(numbers=symbols, positions=pos, cell=cell, pbc=bool(rng.integers(0, 2)))


def _random_settings(seed, count=3, previous_sum=0):
    """``count`` random settings (one to three species, both bases, compress_mode none and trivial,
    radial_enhancement 0-2, l_max 0-6, alpha_max 2-6 per species) with random structures; consecutive
    Σ alpha_max differ (QUIP's W/S state, spec §2.7)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        ns = int(rng.integers(1, 4))
        species = [int(z) for z in rng.permutation([14, 6, 1])[:ns]]
        alpha = rng.integers(2, 7, ns)
        while int(alpha.sum()) == previous_sum:
            alpha = rng.integers(2, 7, ns)
        previous_sum = int(alpha.sum())
        basis = ["poly3", "poly3gauss"][int(rng.integers(0, 2))]

        def vec(lo, hi, digits=3):
            return "{" + " ".join(f"{v:.{digits}f}" for v in rng.uniform(lo, hi, ns)) + "}"
        centre = int(rng.integers(1, ns + 1))
        s = (f"soap_turbo l_max={int(rng.integers(0, 7))} n_species={ns} species_Z={{{' '.join(map(str, species))}}} "
             f"central_index={centre} alpha_max={{{' '.join(map(str, alpha))}}} "
             f"atom_sigma_r={vec(0.3, 0.6)} atom_sigma_t={vec(0.3, 0.6)} atom_sigma_r_scaling={vec(0.0, 0.2)} "
             f"atom_sigma_t_scaling={vec(0.0, 0.2)} amplitude_scaling={vec(0.5, 2.5)} "
             f"central_weight={vec(0.0, 1.5)} rcut_hard={rng.uniform(3.5, 4.5):.3f} rcut_soft={rng.uniform(2.5, 3.3):.3f} "
             f"basis={basis} radial_enhancement={int(rng.integers(0, 3))} nf={rng.uniform(3, 5):.2f}"
             + (" compress_mode=trivial" if rng.integers(0, 2) else ""))
        if ns == 1:  # one species: scalars, as gap_fit's users write them
            s = s.replace("{", "").replace("}", "")
        elements = [species[centre - 1]] + species  # the first atom is a centre
        out.append((f"random {k} (seed {seed})", _random_structure(rng, elements), s))
    return out


def _cases(tmp_path):
    """(name, atoms, descriptor string); consecutive Σ alpha_max differ (QUIP's W/S state, spec §2.7)."""
    pfile = tmp_path / "P.dat"
    # the P_transformation format: 2 species {3 3}, l_max 2 (uncompressed dimension 63)
    rows = [(1, 1, 1.0), (1, 5, 0.5), (2, 7, 1.0), (3, 22, -0.3), (3, 40, 2.0), (4, 63, 1.0)]
    pfile.write_text("3 3 2 6\nP_transformation\n" + "".join(f"{a} {b} {c}\n" for a, b, c in rows)
                     + "end_transformation\n")
    ofile = tmp_path / "old.dat"
    ofile.write_text("4 3 2 5\n" + "".join(f"{j}\n" for j in (1, 4, 9, 16, 33)))
    sic = ("n_species=2 species_Z={14 6} atom_sigma_r={0.5 0.4} atom_sigma_t={0.45 0.4} "
           "atom_sigma_r_scaling={0.1 0.05} atom_sigma_t_scaling={0.05 0.1} amplitude_scaling={2.0 1.0} "
           "rcut_hard=4.0 rcut_soft=3.0")
    cases = [
        ("dimer poly3", SI2, "soap_turbo l_max=2 alpha_max=3 atom_sigma=0.5 rcut_hard=4.0 rcut_soft=3.5 species_Z=14"),
        ("dimer poly3gauss", SI2, "soap_turbo l_max=3 alpha_max=5 atom_sigma=0.5 rcut_hard=4.0 rcut_soft=3.5 "
                                  "species_Z=14 basis=poly3gauss"),
        ("trimer everything", SICSI, "soap_turbo l_max=3 central_index=1 alpha_max={4 3} central_weight={1.0 0.5} "
                                     "basis=poly3gauss radial_enhancement=1 compress_mode=trivial " + sic),
        ("trimer centre C", SICSI, "soap_turbo l_max=3 central_index=2 alpha_max={4 2} atom_sigma=0.5 "
                                   "n_species=2 species_Z={14 6} rcut_hard=4.0 rcut_soft=3.0"),
        ("lone neighbour, central_weight 0: unnormalised", Atoms("SiC", positions=[(0, 0, 0), (2.3, 2.3, 2.3109)],
                                                                  cell=[20] * 3, pbc=False),
         "soap_turbo l_max=3 alpha_max={3 2} atom_sigma=0.5 n_species=2 species_Z={14 6} central_weight={0.0 1.0} "
         "rcut_hard=4.0 rcut_soft=3.5"),
        ("l_max 0 amplitude 0 enhancement 2", SICSI,
         "soap_turbo l_max=0 alpha_max=4 atom_sigma=0.5 atom_sigma_scaling=0.1 amplitude_scaling=0 "
         "radial_enhancement=2 rcut_hard=4.0 rcut_soft=3.0 species_Z=14"),
        ("scalar central_weight ignored", SI2, "soap_turbo l_max=2 alpha_max=2 atom_sigma=0.5 rcut_hard=4.0 "
                                               "central_weight=0.5 species_Z=14"),
        ("poly3gauss alpha_max 1", SI2, "soap_turbo l_max=2 alpha_max=1 atom_sigma=0.5 rcut_hard=4.0 rcut_soft=3.5 "
                                        "species_Z=14 basis=poly3gauss"),
        ("periodic small cell trivial", _small_periodic(),
         "soap_turbo l_max=4 central_index=2 alpha_max={4 4} central_weight={0.7 1.2} basis=poly3gauss "
         "compress_mode=trivial " + sic),
        ("SiC frame poly3", _sic_frame(), "soap_turbo l_max=5 central_index=1 alpha_max={5 4} " + sic),
        ("file P_transformation", SICSI, f"soap_turbo l_max=2 alpha_max={{3 3}} compress_file={pfile} " + sic),
        ("lone atom poly3gauss", Atoms("Si", positions=[(0, 0, 0)], cell=[20] * 3, pbc=False),
         "soap_turbo l_max=3 alpha_max={3 2} atom_sigma=0.5 n_species=2 species_Z={14 6} rcut_hard=4.0 "
         "basis=poly3gauss"),
        ("file old format", SICSI, f"soap_turbo l_max=2 alpha_max={{4 3}} compress_file={ofile} central_index=1 "
                                   "basis=poly3gauss " + sic.replace("rcut_hard=4.0", "rcut_hard=3.6")),
        ("alpha 8 poly3", _small_periodic(), "soap_turbo l_max=4 alpha_max={8 8} atom_sigma=0.45 n_species=2 "
                                             "species_Z={14 6} rcut_hard=4.0 rcut_soft=3.2 compress_mode=trivial"),
        ("SiC supercell, several chunks", _sic_frame() * (3, 3, 3),
         "soap_turbo l_max=4 central_index=2 alpha_max={5 4} basis=poly3gauss compress_mode=trivial " + sic),
    ]
    cases += _random_settings(SEED, count=6, previous_sum=9)  # the last fixed case has Σ alpha_max = 9
    return cases


_QUIPPY_SCRIPT = r"""
import pickle, sys
import numpy as np
from quippy.descriptors import Descriptor
out = []
for atoms, text in pickle.load(open(sys.argv[1], "rb")):
    res = Descriptor(text).calc(atoms, grad=True)
    out.append(dict(x=np.array(res["data"]), gd=np.array(res["grad_data"]), gi=np.array(res["grad_index_0based"]),
                    pos=np.array(res["pos"]).reshape(-1, 3)))
pickle.dump(out, open(sys.argv[2], "wb"))
"""


def _sum_alpha(desc):
    return sum(desc.alpha_max)


def _make(text):
    return parse_gap_piece(text + GP, 1).make_descriptor()


def _calc(desc, atoms, grad=True):
    nl = neighbour_list(atoms.positions, np.asarray(atoms.cell), atoms.pbc, desc.cutoff)
    return desc.calc(atoms, nl, grad=grad)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    pytest.importorskip("quippy")
    tmp = tmp_path_factory.mktemp("soap_turbo")
    cases = _cases(tmp)
    descs = [_make(text) for _, _, text in cases]
    sums = [_sum_alpha(d) for d in descs]
    assert all(a != b for a, b in zip(sums, sums[1:])), f"consecutive cases share Σ alpha_max: {sums}"
    (tmp / "in.pkl").write_bytes(pickle.dumps([(atoms, text) for _, atoms, text in cases]))
    (tmp / "q.py").write_text(_QUIPPY_SCRIPT)
    subprocess.run([sys.executable, str(tmp / "q.py"), str(tmp / "in.pkl"), str(tmp / "out.pkl")], check=True,
                   timeout=300)
    return cases, descs, pickle.loads((tmp / "out.pkl").read_bytes())


def _matching_rows(v, ref, name):
    """quippy's row of each of our gradient rows, by (centre atom, moved atom, image position).

    The rows are in neighbour-list order in both; quippy's ``Descriptor.calc`` builds its own
    connectivity, whose link cells (hence order) can differ from gap_fit's in large cells."""
    rows = {}
    for k, (c, a) in enumerate(ref["gi"]):
        rows.setdefault((int(c), int(a)), []).append(k)
    out = np.empty(v.grad_atom.size, dtype=int)
    for k, (c, a) in enumerate(zip(v.centres[v.grad_desc, 0], v.grad_atom)):
        cand = rows.get((int(c), int(a)), [])
        dist = [np.abs(ref["pos"][t] - v.grad_pos[k]).max() for t in cand]
        assert dist and min(dist) < 1e-8, f"{name}: no quippy row for centre {c}, atom {a} at {v.grad_pos[k]}"
        out[k] = cand.pop(int(np.argmin(dist)))
    return out


def _rounding_floor(text, atoms, v, monkeypatch, rng):
    """How far gapfit's own values and gradients move when every element of each radial overlap S moves
    by ±1 ulp (random signs, S kept symmetric) before W = S^(-1/2) is formed: the part of the result
    that rounding alone decides, cond(S)·ε-sized (cond(S) reaches 6e9 at alpha_max 6 and 1e13 at 8)."""
    exact = soap_turbo_radial.inverse_square_root

    def perturbed(s):
        signs = np.triu(rng.choice([-1.0, 1.0], s.shape))
        return exact(s * (1.0 + np.finfo(float).eps * (signs + np.triu(signs, 1).T)))
    with monkeypatch.context() as patch:
        patch.setattr(soap_turbo_radial, "inverse_square_root", perturbed)
        w = _calc(_make(text), atoms)
    return np.abs(w.x - v.x).max(initial=0.0), np.abs(w.grad_x - v.grad_x).max(initial=0.0)


def test_against_quippy(oracle, monkeypatch):
    """|Δ| ≤ max(1e-10·max(1, max|reference|), 10 × the ±1-ulp rounding floor of S) per array."""
    cases, descs, results = oracle
    rng = np.random.default_rng(SEED)
    report, floors = [], []
    for (name, atoms, text), desc, ref in zip(cases, descs, results):
        v = _calc(desc, atoms)
        assert v.x.shape == ref["x"].shape, f"{name}: shape {v.x.shape}, quippy {ref['x'].shape}"
        assert ref["gd"].shape == v.grad_x.shape, f"{name}: gradient rows {v.grad_x.shape}, quippy {ref['gd'].shape}"
        theirs = _matching_rows(v, ref, name)
        dx = np.abs(v.x - ref["x"]).max(initial=0.0)
        dg = np.abs(v.grad_x - ref["gd"][theirs]).max(initial=0.0)
        fx, fg = _rounding_floor(text, atoms, v, monkeypatch, rng)
        base_x = TOL * max(1.0, np.abs(ref["x"]).max(initial=0.0))
        base_g = TOL * max(1.0, np.abs(ref["gd"]).max(initial=0.0))
        tol_x, tol_g = max(base_x, 10 * fx), max(base_g, 10 * fg)
        floors.append((dx > base_x or dg > base_g, 10 * fx > base_x or 10 * fg > base_g))
        report.append(f"{name}: values {dx:.1e}, gradients {dg:.1e} (±1-ulp floor {fx:.1e}, {fg:.1e}; "
                      f"tolerance {tol_x:.1e}, {tol_g:.1e})")
        assert dx <= tol_x, report[-1]
        assert dg <= tol_g, report[-1]
    print("\n".join(report))
    print(f"{sum(f for _, f in floors)} of {len(floors)} cases have a floor above 1e-10; "
          f"{sum(d for d, _ in floors)} needed it")


def test_spec_reference_numbers():
    """docs/dev/soap_turbo.md §7.1 (Si dimer, defaults), without quippy; to 1e-13 absolute (the numbers are
    O(0.01-0.3): 1e-11 relative), as W = S^(-1/2) moves by ~1e-13 relative between OpenBLAS kernel families."""
    v = _calc(_make("soap_turbo l_max=2 alpha_max=3 atom_sigma=0.5 rcut_hard=4.0 rcut_soft=3.5 species_Z=14"), SI2)
    x0 = [0.1433814598108134, 0.00017335028611448932, 0.00024024182330495213, 0.31049772251146474,
          -0.00021093194960111424, -0.0002923253102217082]
    np.testing.assert_allclose(v.x[0, :6], x0, rtol=0, atol=1e-13)
    np.testing.assert_allclose(v.x[1], v.x[0], rtol=0, atol=1e-15)  # the dimer's symmetry, same arithmetic
    dx = [-0.008071579699209522, -0.0004581472384007448, -0.0006153297308386266, -0.00526070214035573]
    dz = [-0.012780001190415075, -0.0007253997941345124, -0.0009742720738278253, -0.00832944505556324]
    np.testing.assert_allclose(v.grad_x[1, 0, :4], dx, rtol=0, atol=1e-13)
    np.testing.assert_allclose(v.grad_x[1, 2, :4], dz, rtol=0, atol=1e-13)
    np.testing.assert_allclose(v.grad_x[0], -v.grad_x[1], rtol=0, atol=0)


@pytest.mark.parametrize("extra", ["", " compress_mode=trivial central_weight={0.6 1.3} central_index=2",
                                   " central_index=1 amplitude_scaling={2.0 1.5} radial_enhancement=1"])
def test_finite_differences(extra):
    """Central differences (h = 1e-5 Å) of every atom's moves; no neighbour within 4ŝ of rcut_soft."""
    atoms = Atoms("SiCSiCSi", positions=[(0, 0, 0), (1.1, 0.6, 1.2), (-1.3, 0.4, 1.4), (0.2, -1.5, 0.5),
                                         (0.5, 1.2, -1.1)], cell=[30] * 3, pbc=False)
    desc = _make("soap_turbo l_max=4 alpha_max={4 3} n_species=2 species_Z={14 6} atom_sigma_r={0.3 0.35} "
                 "atom_sigma_t={0.4 0.3} atom_sigma_r_scaling={0.02 0.03} atom_sigma_t_scaling={0.1 0.05} "
                 "rcut_hard=6.0 rcut_soft=5.8" + extra)
    v = _calc(desc, atoms)
    worst = np.abs(finite_difference_gradient(desc, atoms, 1e-5) - dense_gradient(v, len(atoms))).max()
    print(f"finite differences{extra}: max |FD - analytic| = {worst:.1e}")
    assert worst < 1e-8, worst


def test_rows_sum_to_zero_and_layout():
    v = _calc(_make("soap_turbo l_max=3 alpha_max={3 3} atom_sigma=0.5 n_species=2 species_Z={14 6} "
                    "rcut_hard=4.0 central_index=2"), _small_periodic())
    assert v.n_desc == 4 and list(v.centres[:, 0]) == [1, 3, 5, 7]
    total = np.zeros((v.n_desc, 3, v.x.shape[1]))
    np.add.at(total, v.grad_desc, v.grad_x)
    assert np.abs(total).max() < 1e-14


def test_add_species_expansion_as_gap_fit():
    """The strings gap_fit 0.10.3 writes into the XML (checked with a gap_fit run, spec §1.5)."""
    template = ("soap_turbo l_max=4 alpha_max={4 4} atom_sigma_r={0.5 0.5} atom_sigma_t={0.5 0.5} rcut_hard=4.5 n_species=2 "
                "species_Z={14 6} n_sparse=20 delta=1 covariance_type=dot_product zeta=4 ")
    out = SoapTurbo.expand_species(template, [14, 6])
    assert out == [template.rstrip() + " n_species=2 species_Z={14 6 } central_index=1",
                   template.rstrip() + " n_species=2 species_Z={14 6 } central_index=2"]
    assert [parse_gap_piece(p, 1).make_descriptor().centre_Z for p in out] == [14, 6]


def test_central_weight_scalar_warns():
    desc = _make("soap_turbo l_max=2 alpha_max=2 atom_sigma=0.5 rcut_hard=4.0 central_weight=0.25 species_Z=14")
    assert len(desc.warnings) == 1 and "central_weight=0.25 is ignored" in desc.warnings[0], desc.warnings
    assert _make("soap_turbo l_max=2 alpha_max=2 atom_sigma=0.5 rcut_hard=4.0 species_Z=14").warnings == ()


def test_a_basis_quip_would_share_is_named():
    """Equal Σ alpha_max, different split, consecutive in QUIP's cycle of soap_turbo calls (spec §2.7)."""
    common = " l_max=2 atom_sigma=0.5 rcut_hard=4.0 n_species=2 species_Z={14 6}"
    a, a2, b, c = (_make("soap_turbo alpha_max={4 2}" + common), _make("soap_turbo alpha_max={4 2} central_index=2" + common),
                   _make("soap_turbo alpha_max={3 3}" + common), _make("soap_turbo alpha_max={3 2}" + common))
    assert quip_shared_basis_warnings([a, a2]) == []
    assert quip_shared_basis_warnings([a, c, b, c]) == []  # QUIP recomputes at every call
    texts = quip_shared_basis_warnings([a, a2, b])  # a2 then b, and b then the next frame's a
    assert len(texts) == 2 and "coordinates 2 and 3 have the same sum of alpha_max (6)" in texts[0], texts
    assert "coordinates 1 and 3" in texts[1], texts
    (text,) = quip_shared_basis_warnings([b, c, a])  # the cycle: a, then the next frame's b
    assert "coordinates 1 and 3" in text, text


@pytest.mark.parametrize("text, key", [
    ("soap_turbo l_max=2 alpha_max=3 atom_sigma=0.5 rcut_hard=4 species_Z=14 basis=poly3tab", "basis"),
    ("soap_turbo l_max=2 alpha_max=3 atom_sigma=0.5 rcut_hard=4 species_Z=14 scaling_mode=exp", "scaling_mode"),
    ("soap_turbo l_max=2 alpha_max=3 atom_sigma=0.5 rcut_hard=4 rcut_soft=4 species_Z=14", "rcut_soft"),
    ("soap_turbo l_max=2 alpha_max=11 atom_sigma=0.5 rcut_hard=4 species_Z=14", "alpha_max"),
    ("soap_turbo l_max=2 alpha_max=12 atom_sigma=0.5 rcut_hard=4 species_Z=14 basis=poly3gauss", "alpha_max"),
    ("soap_turbo l_max=2 n_max=3 atom_sigma=0.5 rcut_hard=4 n_species=2 species_Z={14 6} central_index=3",
     "central_index"),
    ("soap_turbo l_max=2 alpha_max=8 atom_sigma=0.5 rcut_hard=4 n_species=2 species_Z={14 6}", "alpha_max"),
    ("soap_turbo l_max=2 alpha_max={3 3} atom_sigma_r={0.5} atom_sigma=0.5 rcut_hard=4 n_species=2 "
     "species_Z={14 6}", "atom_sigma_r"),
    ("soap_turbo l_max=2 alpha_max={3 3} atom_sigma=0.5 rcut_hard=4 n_species=2 species_Z={14 6 1}", "species_Z"),
    ("soap_turbo l_max=2 alpha_max=3 atom_sigma=0.5 rcut_hard=4 species_Z=14 compress_mode=1_1", "compress_mode"),
    ("soap_turbo l_max=2 alpha_max=3 atom_sigma=0.5 rcut_hard=4 species_Z=14 compress_file=/nonexistent/P",
     "compress_file"),
    ("soap_turbo l_max=2 alpha_max=3 atom_sigma_r=0.5 rcut_hard=4 species_Z=14", "atom_sigma"),
])
def test_refusals(text, key):
    with pytest.raises(ConfigError) as err:
        _make(text)
    message = str(err.value)
    assert "\n" not in message and f"'{key}'" in message, message


def test_atom_subsets_partition_the_instances():
    """calc(atoms=mask) over a partition of the atoms gives the instances and rows of the whole frame."""
    frame = _sic_frame()
    desc = _make("soap_turbo l_max=3 alpha_max={3 3} atom_sigma=0.5 n_species=2 species_Z={14 6} rcut_hard=4.0 "
                 "compress_mode=trivial")
    nl = neighbour_list(frame.positions, np.asarray(frame.cell), frame.pbc, desc.cutoff)
    whole = desc.calc(frame, nl, grad=True)
    mask = np.arange(len(frame)) % 2 == 0
    parts = [desc.calc(frame, nl, grad=True, atoms=m) for m in (mask, ~mask)]
    x = np.vstack([p.x for p in parts])
    order = np.argsort(np.concatenate([p.centres[:, 0] for p in parts]))
    np.testing.assert_array_equal(x[order], whole.x)
    n_rows = sum(p.grad_x.shape[0] for p in parts)
    assert n_rows == whole.grad_x.shape[0] == int(desc.gradient_rows(frame, nl).sum())
