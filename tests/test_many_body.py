"""angle_3b and distance_Nb against QUIP: live quippy on random structures, finite differences,
permutations, species expansion and the pp / permutation kernels.

The random structures change on every run (the seed is in the assertion messages; set
GAPFIT_TEST_SEED to replay one): 1–3 species, periodic skewed cells with atoms outside the cell,
slabs, clusters, close contacts.  quippy's ``Descriptor.calc`` builds its neighbour list with
cutoff + 1, which sets QUIP's neighbour order; gapfit's list is built with the same cutoff.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from ase import Atoms

from gapfit.descriptors.angle_3b import Angle3b
from gapfit.descriptors.distance_nb import DistanceNb
from gapfit.errors import ConfigError
from gapfit.kernels.functions import make_kernel
from gapfit.descriptors.neighbours import neighbour_list
from gapfit.options.syntax import key_values
from gapfit.options.schema import apply_schema

TOL = 1e-10  # values and gradients against quippy (they agree bit for bit on the machines seen)


def run_seed() -> int:
    env = os.environ.get("GAPFIT_TEST_SEED")
    return int(env) if env else int(np.random.SeedSequence().entropy % (2 ** 31))


def make(cls, text):
    values, given = apply_schema(cls.schema, key_values(text), "in the test")
    return cls(values, piece=text, given=given)


def random_structure(rng):
    """Periodic skewed cell (atoms outside it), slab or cluster; 1–3 species; sometimes a close contact."""
    n = int(rng.integers(2, 10))
    kind = int(rng.integers(3))
    species = [14, 6, 8][:int(rng.integers(1, 4))]
    if kind == 0:
        cell = np.diag(rng.uniform(2.8, 6.0, 3)) + np.triu(rng.uniform(-1.5, 1.5, (3, 3)), 1)
        positions = rng.random((n, 3)) @ cell + rng.normal(0, 0.4, (n, 3))
        pbc = True
    elif kind == 1:
        cell = np.diag(rng.uniform(3.0, 6.0, 3))
        positions = rng.random((n, 3)) @ cell * [1, 1, 0.4]
        pbc = [True, True, False]
    else:
        cell = np.eye(3) * 20.0
        positions = rng.normal(scale=1.4, size=(n, 3)) + 10.0
        pbc = False
    if n > 2 and rng.random() < 0.3:
        positions[1] = positions[0] + rng.normal(scale=0.25, size=3)  # a close contact
    return Atoms(numbers=rng.choice(species, n), positions=positions, cell=cell, pbc=pbc)


def _quippy_rows(ref, n, d, rows_per):
    return (np.asarray(ref["data"]).reshape(n, d), np.asarray(ref["covariance_cutoff"]).reshape(n),
            np.asarray(ref["grad_data"]).reshape(n * rows_per, 3, d),
            np.asarray(ref["grad_covariance_cutoff"]).reshape(n * rows_per, 3),
            np.asarray(ref["pos"]).reshape(n * rows_per, 3),
            np.concatenate([np.asarray(a).reshape(-1) for a in ref["ii"]]) - 1)


def _compare(desc, text, atoms, what, rows_per):
    from quippy.descriptors import Descriptor
    ref = Descriptor(text).calc(atoms, grad=True)
    nl = neighbour_list(atoms.positions, atoms.cell[:], atoms.pbc, desc.cutoff + 1.0)
    v = desc.calc(atoms, nl, grad=True)
    n_ref = len(ref["covariance_cutoff"]) if "covariance_cutoff" in ref else 0
    assert v.n_desc == n_ref, f"{what}: {v.n_desc} instances, quippy {n_ref}"
    if n_ref == 0:
        return 0
    x, cut, gx, gcut, pos, atom = _quippy_rows(ref, n_ref, desc.dimensions, rows_per)
    assert np.array_equal(atom, v.grad_atom), f"{what}: gradient atoms differ"
    for name, ours, theirs in (("x", v.x, x), ("cutoff", v.cutoff, cut), ("grad_x", v.grad_x, gx),
                               ("grad_cutoff", v.grad_cutoff, gcut), ("positions", v.grad_pos, pos)):
        err = np.abs(ours - theirs).max()
        assert err < TOL, f"{what}: {name} differ by {err:.2e}"
    return n_ref


@pytest.mark.oracle
def test_angle_3b_against_quippy():
    pytest.importorskip("quippy")
    seed = run_seed()
    rng = np.random.default_rng(seed)
    total = 0
    for case in range(60):
        atoms = random_structure(rng)
        zs = sorted(set(atoms.numbers.tolist()))
        z, z1, z2 = (int(rng.choice([0] + zs)) for _ in range(3))
        rc = float(rng.uniform(2.0, 4.2))
        text = (f"angle_3b cutoff={rc} cutoff_transition_width={float(rng.uniform(0.1, min(1.5, rc)))} "
                f"Z={z} Z1={z1} Z2={z2}")
        what = f"seed {seed} (GAPFIT_TEST_SEED), case {case}: '{text}' on {len(atoms)} atoms, pbc {atoms.pbc}"
        total += _compare(make(Angle3b, text), text, atoms, what, 3)
    assert total > 100, f"seed {seed}: only {total} instances were compared"


@pytest.mark.oracle
@pytest.mark.parametrize("order,compact", [(2, "T"), (2, "F"), (3, "T"), (3, "F")])
def test_distance_nb_against_quippy(order, compact):
    pytest.importorskip("quippy")
    from quippy.descriptors import Descriptor
    seed = run_seed()
    rng = np.random.default_rng(seed + 10 * order + (compact == "T"))
    total = 0
    for case in range(25):
        atoms = random_structure(rng)
        zs = sorted(set(atoms.numbers.tolist()))
        text = (f"distance_Nb order={order} cutoff={float(rng.uniform(2.2, 3.8))} "
                f"cutoff_transition_width={float(rng.uniform(0.2, 1.2))} compact_clusters={compact}")
        if rng.random() < 0.6:  # a species multiset, given unsorted (QUIP sorts it)
            text += " Z={" + " ".join(str(int(z)) for z in rng.choice(zs + [6], order)) + "}"
        desc = make(DistanceNb, text)
        what = f"seed {seed} (GAPFIT_TEST_SEED), case {case}: '{text}' on {len(atoms)} atoms, pbc {atoms.pbc}"
        total += _compare(desc, text, atoms, what, order)
        perms = np.asarray(Descriptor(text).permutations()).reshape(-1, desc.dimensions)
        assert np.array_equal(perms, desc.permutations), what
    assert total > 50, f"seed {seed}: only {total} instances were compared"


def _dense_gradient(v, n_atoms):
    g = np.zeros((v.n_desc, n_atoms, 3, v.x.shape[1]))
    c = np.zeros((v.n_desc, n_atoms, 3))
    np.add.at(g, (v.grad_desc, v.grad_atom), v.grad_x)
    np.add.at(c, (v.grad_desc, v.grad_atom), v.grad_cutoff)
    return g, c


@pytest.mark.parametrize("text", [
    "angle_3b cutoff=3.4 cutoff_transition_width=1.2",
    "angle_3b cutoff=3.0 cutoff_transition_width=0.9 Z=14 Z1=6 Z2=14",
    "distance_Nb order=2 cutoff=3.4 cutoff_transition_width=1.1",
    "distance_Nb order=3 cutoff=3.2 cutoff_transition_width=1.0 compact_clusters=T",
    "distance_Nb order=3 cutoff=3.2 cutoff_transition_width=1.0 compact_clusters=F Z={14 6 14}",
])
def test_gradients_by_finite_differences(text):
    """Values, covariance cutoffs and their gradients, independently of quippy."""
    seed = run_seed()
    rng = np.random.default_rng(seed)
    cell = (np.eye(3) + rng.uniform(-0.2, 0.2, (3, 3))) * 4.2
    atoms = Atoms(numbers=rng.permutation([14, 6, 14, 14, 6]), positions=rng.random((5, 3)) @ cell, cell=cell,
                  pbc=True)
    desc = make(Angle3b if text.startswith("angle_3b") else DistanceNb, text)

    def values(a):
        v = desc.calc(a, neighbour_list(a.positions, a.cell[:], a.pbc, desc.cutoff), grad=False)
        return v.x, v.cutoff
    v = desc.calc(atoms, neighbour_list(atoms.positions, atoms.cell[:], atoms.pbc, desc.cutoff), grad=True)
    assert v.n_desc > 0
    gx, gc = _dense_gradient(v, len(atoms))
    h = 1e-5
    worst = 0.0
    for a in range(len(atoms)):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, k] += h
            minus.positions[a, k] -= h
            (xp, cp), (xm, cm) = values(plus), values(minus)
            worst = max(worst, np.abs((xp - xm) / (2 * h) - gx[:, a, k]).max(),
                        np.abs((cp - cm) / (2 * h) - gc[:, a, k]).max())
    assert worst < 1e-7, f"seed {seed} (GAPFIT_TEST_SEED), '{text}': finite differences differ by {worst:.2e}"


def test_species_expansion_is_gap_fits():
    """The strings gap_fit 0.10.3 appends (taken from its XML <descriptor>s; order of first appearance)."""
    assert Angle3b.expand_species("angle_3b cutoff=3", [14, 6]) == [
        f"angle_3b cutoff=3 Z={a} Z1={b} Z2={c}" for a, b, c in
        [(14, 14, 14), (14, 14, 6), (14, 6, 6), (6, 14, 14), (6, 14, 6), (6, 6, 6)]]
    assert len(Angle3b.expand_species("angle_3b cutoff=3", [6, 14, 8])) == 18
    assert DistanceNb.expand_species("distance_Nb order=2 cutoff=3", [6, 14, 8]) == [
        "distance_Nb order=2 cutoff=3 Z={" + z + " }" for z in ("6 6", "6 14", "6 8", "14 14", "8 14", "8 8")]
    assert DistanceNb.expand_species("distance_Nb order=3 cutoff=3", [14, 6]) == [
        "distance_Nb order=3 cutoff=3 Z={" + z + " }" for z in ("14 14 14", "6 14 14", "6 6 14", "6 6 6")]


def test_option_checks():
    for text, match in [("distance_Nb order=4 cutoff=3", "orders above 3"),
                        ("distance_Nb order=3 cutoff=3 Z={14 6}", "must have order=3 atomic numbers"),
                        ("distance_Nb order=2 cutoff=0", "'cutoff' key"),
                        ("angle_3b cutoff=2 cutoff_transition_width=3", "at most the cutoff")]:
        with pytest.raises(ConfigError, match=match):
            make(Angle3b if text.startswith("angle_3b") else DistanceNb, text)
    # gap models older than 1596837814 default to compact_clusters=F, as QUIP
    assert not make(DistanceNb, "distance_Nb order=2 cutoff=3 xml_version=1500000000").compact
    assert make(DistanceNb, "distance_Nb order=2 cutoff=3 xml_version=1500000000 compact_clusters=T").compact


# --- kernels -----------------------------------------------------------------------------
def _brute_kernel(kind, x, s, theta, delta, f0, perms):
    """Loops over pairs and permutations (gp_predict.F90's definitions)."""
    d = x.shape[1]
    j = d // 2 + 2

    def base(a, b):
        q = np.sum(((a - b) / theta) ** 2)
        if kind == "ard_se":
            return np.exp(-0.5 * q)
        r = np.sqrt(q)
        return (1 - r) ** (j + 1) * ((j + 1) * r + 1) if r < 1 else 0.0
    out = np.zeros((x.shape[0], s.shape[0]))
    perms = np.asarray(perms)
    for n, m in itertools.product(range(x.shape[0]), range(s.shape[0])):
        raw = sum(base(x[n][p - 1], s[m]) for p in perms)
        if len(perms) > 1:
            raw /= np.sqrt(sum(base(x[n][p - 1], x[n]) for p in perms) * sum(base(s[m][p - 1], s[m]) for p in perms))
        out[n, m] = delta ** 2 * raw + f0 ** 2
    return out


@pytest.mark.parametrize("kind", ["ard_se", "pp"])
@pytest.mark.parametrize("perms", [[[1, 2, 3]], [[1, 2, 3], [2, 1, 3]],
                                   [[1, 2, 3], [2, 1, 3], [1, 3, 2], [3, 1, 2], [2, 3, 1], [3, 2, 1]]])
def test_kernels_values_and_gradients(kind, perms):
    """pp and the permutation-normalised kernels: values by loops, gradients by finite differences."""
    rng = np.random.default_rng(7)
    x, s = rng.uniform(0, 2, (6, 3)), rng.uniform(0, 2, (5, 3))
    theta = np.full(3, 1.7) if len(perms) > 2 else np.array([1.3, 1.3, 2.1])
    kernel = make_kernel(kind, 0.7, s, theta=theta, f0=0.3, permutations=np.array(perms))
    np.testing.assert_allclose(kernel.values(x), _brute_kernel(kind, x, s, theta, 0.7, 0.3, perms), rtol=1e-12,
                               atol=1e-14)
    block = kernel.prepare(x)
    grad_x = rng.normal(size=(8, 3, 3))  # gradient rows: ∂x/∂r for 8 (instance, atom) rows
    desc = rng.integers(0, 6, 8)
    contracted = kernel.contract(block, desc, grad_x, np.ones((6, 5)) * kernel.gradient_factor(block))
    weights = rng.normal(size=5)
    gsum = kernel.gradient_of_sum(block, weights)
    h = 1e-6
    for d in range(3):
        step = np.zeros(3)
        step[d] = h
        dk = (kernel.values(x + step) - kernel.values(x - step)) / (2 * h)  # ∂k/∂x_d, (6, 5)
        np.testing.assert_allclose(gsum[:, d], dk @ weights, rtol=1e-6, atol=1e-8)
        expected = np.einsum("rk,rm->rkm", grad_x[:, :, d], dk[desc])
        if d == 0:
            total = expected
        else:
            total = total + expected
    np.testing.assert_allclose(contracted, total, rtol=1e-6, atol=1e-8)


def test_permutations_need_a_symmetric_theta():
    s = np.ones((2, 3))
    with pytest.raises(ValueError, match="theta must be equal"):
        make_kernel("ard_se", 1.0, s, theta=np.array([1.0, 2.0, 3.0]), permutations=np.array([[1, 2, 3], [2, 1, 3]]))
    # repeated permutations (distance_Nb order 2 of one species: [[1], [1]]) are the identity kernel
    k = make_kernel("ard_se", 1.0, np.ones((2, 1)), theta=np.ones(1), permutations=np.array([[1], [1]]))
    assert type(k).__name__ == "ArdSeKernel"
