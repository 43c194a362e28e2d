"""gapfit.descriptors.neighbours.neighbour_list against QUIP's Connection (via quippy).

QUIP's order matters: distance_2b instances (and sparse-point choices) follow
``for i: for n = 1..n_neighbours(i)`` in QUIP's internal neighbour order.  Two
oracles are used:

* the full neighbour list, read with quippy's ``Atoms.neighbour(i, n, ...)`` after
  ``set_cutoff(c); calc_connect()`` -- (i, j, shift, distance, diff) of every entry;
* ``Descriptor("distance_2b cutoff=rc").calc(atoms, grad=True)``, which sets the
  connection cutoff to ``rc + 1`` (quippy's ``_calc_connect``) and keeps pairs with
  distance < rc -- compared with ``neighbour_list(..., rc + 1)`` filtered by < rc.

The random structures change on every run; set ``GAPFIT_TEST_SEED`` to replay one.
"""

from __future__ import annotations

import glob
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from gapfit.descriptors.neighbours import neighbour_list

SEED = int(os.environ.get("GAPFIT_TEST_SEED", np.random.SeedSequence().entropy % 2**32))
SHARED = Path("/work/shared")
REFERENCE_FILES = sorted(glob.glob(str(SHARED / "reference" / "soap_reference" / "*.extxyz"))) + [
    str(SHARED / "data" / "quip_gapfit_tests" / "SiC.np1.xyz"),
    str(SHARED / "data" / "ta_snap" / "Ta_snap_train.xyz"),
]


# ---------------------------------------------------------------------------
# random structures


def _skewed_cell(rng, lengths, strength):
    """Cell rows with off-diagonal shears up to ``strength`` times the lengths, not too flat."""
    while True:
        cell = np.diag(lengths) + rng.uniform(-strength, strength, (3, 3)) * lengths[:, None]
        norms = np.linalg.norm(cell, axis=1)
        if abs(np.linalg.det(cell)) / np.prod(norms) > 0.25:
            return cell


def random_structure(rng, kind):
    """(positions, cell, pbc, rc) for one of the structure families."""
    pbc = np.ones(3, dtype=bool)
    lo, hi = 0.0, 1.0
    if kind == "ortho":
        cell = np.diag(rng.uniform(3.0, 9.0, 3))
        n, rc = rng.integers(2, 30), rng.uniform(2.0, 6.0)
    elif kind == "skewed":
        cell = _skewed_cell(rng, rng.uniform(4.0, 9.0, 3), 0.7)
        n, rc = rng.integers(2, 30), rng.uniform(2.0, 6.0)
    elif kind == "tiny":  # 1-2 atoms, cutoff several times the cell: many images and self-images
        L = rng.uniform(1.5, 3.0)
        cell = _skewed_cell(rng, L * rng.uniform(0.8, 1.2, 3), 0.4 * rng.integers(0, 2))
        n, rc = rng.integers(1, 3), rng.uniform(1.5, 3.5) * L
        lo, hi = -1.0, 2.0
    elif kind == "big":  # several link cells per direction
        cell = _skewed_cell(rng, rng.uniform(13.0, 20.0, 3), 0.25 * rng.integers(0, 2))
        n, rc = rng.integers(60, 200), rng.uniform(2.5, 4.5)
    elif kind == "outside":  # positions far outside the cell, negative fractions included
        cell = _skewed_cell(rng, rng.uniform(4.0, 9.0, 3), 0.5)
        n, rc = rng.integers(2, 25), rng.uniform(2.0, 6.0)
        lo, hi = -1.5, 2.5
    elif kind == "mixed":  # some non-periodic directions
        cell = _skewed_cell(rng, rng.uniform(4.0, 12.0, 3), 0.4 * rng.integers(0, 2))
        n, rc = rng.integers(2, 40), rng.uniform(2.0, 6.0)
        pbc = rng.random(3) < 0.5
        if pbc.all():
            pbc[rng.integers(3)] = False
        lo, hi = -0.5, 1.5
    elif kind == "cluster":  # F F F, a big box around a blob of atoms
        cell = np.diag(rng.uniform(15.0, 25.0, 3))
        n, rc = rng.integers(2, 60), rng.uniform(2.0, 6.0)
        pbc[:] = False
        lo, hi = 0.3, 0.7
    elif kind == "sheet":  # T T F with all atoms at the same height (QUIP's singular lat_eff)
        cell = np.diag(rng.uniform(3.0, 8.0, 3))
        cell[1, 0] = rng.uniform(-0.5, 0.5) * cell[0, 0]
        if rng.random() < 0.5:  # tilted c: the equal heights carry rounding noise (QUIP's dgemm/FMA path)
            cell[2, :2] = rng.uniform(-0.5, 0.5, 2) * cell[2, 2]
        n, rc = rng.integers(1, 12), rng.uniform(2.0, 6.0)
        pbc = np.array([True, True, False])
        lo, hi = (0.0, 1.0) if rng.random() < 0.5 else (-0.7, 1.7)
    elif kind == "flat_fma":  # tilted 1-3 atom sheets whose flatness depends on QUIP's FMA dgemm
        return _flat_fma_sheet(rng)
    else:
        raise ValueError(kind)
    frac = rng.uniform(lo, hi, (n, 3))
    if kind == "sheet":
        frac[:, 2] = 0.5
    positions = frac @ cell
    if kind == "cluster" and rng.random() < 0.3:
        cell = np.zeros((3, 3))  # ASE-style cluster without a cell
    return positions, cell, pbc, float(rc)


def _flat_fma_sheet(rng):
    """A skewed T T F sheet (1-3 atoms at one fractional height) whose heights come out exactly
    equal with plain multiply-adds but not with QUIP's FMA-based dgemm (or the reverse), so that
    QUIP's calc_lat_eff takes the other branch (singular effective lattice or not)."""
    from gapfit.descriptors import neighbours

    pbc = np.array([True, True, False])
    for _ in range(20000):
        L = rng.uniform(1.5, 3.5)
        cell = _skewed_cell(rng, L * rng.uniform(0.8, 1.2, 3), 0.4)
        frac = rng.uniform(-0.6, 1.6, (rng.integers(2, 4), 3))
        frac[:, 2] = rng.uniform()
        positions = frac @ cell
        g = neighbours._inverse(cell)
        plain = neighbours._matvec(g, positions)[:, 2]
        x, y, z = positions.T
        fused = neighbours._fma(z, g[2, 2], neighbours._fma(y, g[2, 1], x * g[2, 0]))
        if (np.ptp(plain) == 0) != (np.ptp(fused) == 0):
            return positions, cell, pbc, float(rng.uniform(1.5, 3.0) * L)
    raise RuntimeError("no FMA-sensitive sheet found")


KINDS = ["ortho", "skewed", "tiny", "big", "outside", "mixed", "cluster", "sheet", "flat_fma"]
N_PER_KIND = 30


def random_structures(seed, per_kind=N_PER_KIND):
    rng = np.random.default_rng(seed)
    return [(kind, k) + random_structure(rng, kind) for kind in KINDS for k in range(per_kind)]


# ---------------------------------------------------------------------------
# oracles


def _atoms(positions, cell, pbc):
    from ase import Atoms

    return Atoms(numbers=[14] * len(positions), positions=positions, cell=cell, pbc=pbc)


def quip_full_list(atoms, cutoff):
    """QUIP's neighbour list (0-based i, j, shift, distance, diff) in QUIP's order."""
    from quippy.convert import ase_to_quip

    qa = ase_to_quip(atoms)
    qa.set_cutoff(cutoff)
    qa.calc_connect()
    dist, diff, shift = np.zeros(()), np.zeros(3), np.zeros(3, dtype=np.int32)
    rows_i, rows_j, rows_s, rows_d, rows_v = [], [], [], [], []
    for i in range(1, len(atoms) + 1):
        for n in range(1, qa.n_neighbours(i) + 1):
            j = qa.neighbour(i, n, distance=dist, diff=diff, shift=shift)
            rows_i.append(i - 1)
            rows_j.append(j - 1)
            rows_s.append(shift.copy())
            rows_d.append(float(dist))
            rows_v.append(diff.copy())
    return (np.array(rows_i, dtype=np.int64), np.array(rows_j, dtype=np.int64),
            np.array(rows_s, dtype=np.int64).reshape(-1, 3), np.array(rows_d), np.array(rows_v).reshape(-1, 3))


def quip_distance_2b(atoms, rc):
    """quippy's distance_2b instances: (i, j) 0-based, image position of j, distance."""
    from quippy.descriptors import Descriptor

    r = Descriptor(f"distance_2b cutoff={rc}").calc(atoms, grad=True)
    if "ci" not in r:
        return np.zeros((0, 2), dtype=np.int64), np.zeros((0, 3)), np.zeros(0)
    ci = np.asarray(r["ci"], dtype=np.int64).reshape(-1, 2) - 1
    return ci, np.asarray(r["pos"]).reshape(-1, 3)[1::2], np.asarray(r["data"]).reshape(-1)


def _rel(a, b):
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-300)


def check_full(positions, cell, pbc, cutoff, label, stats):
    qi, qj, qs, qd, qv = quip_full_list(_atoms(positions, cell, pbc), cutoff)
    nl = neighbour_list(positions, cell, pbc, cutoff)
    assert nl.n_pairs == len(qi), f"{label}: {nl.n_pairs} pairs, QUIP has {len(qi)}"
    for name, ours, theirs in (("i", nl.i, qi), ("j", nl.j, qj), ("shift", nl.shift, qs)):
        bad = np.flatnonzero((ours != theirs).reshape(len(qi), -1 if len(qi) else 1).any(axis=1))
        assert len(bad) == 0, (f"{label}: {name} differs from QUIP's order at entry {bad[0]} "
                               f"(ours i={nl.i[bad[0]]} j={nl.j[bad[0]]} s={nl.shift[bad[0]]}, "
                               f"QUIP i={qi[bad[0]]} j={qj[bad[0]]} s={qs[bad[0]]})")
    assert np.all(_rel(nl.distance, qd) <= 1e-14), f"{label}: distances differ beyond 1e-14"
    assert np.allclose(nl.diff, qv, rtol=1e-14, atol=1e-13), f"{label}: diff vectors differ"
    expected = np.zeros(len(positions) + 1, dtype=np.int64)
    np.cumsum(np.bincount(qi, minlength=len(positions)), out=expected[1:])
    assert np.array_equal(nl.offsets, expected), f"{label}: offsets"
    stats["pairs"] += len(qi)
    stats["distance_not_bitwise"] += int(np.sum(nl.distance != qd))
    stats["diff_not_bitwise"] += int(np.sum(np.any(nl.diff != qv, axis=1)))


def check_distance_2b(positions, cell, pbc, rc, label, stats):
    ci, qpos, qd = quip_distance_2b(_atoms(positions, cell, pbc), rc)
    nl = neighbour_list(positions, cell, pbc, rc + 1.0)  # quippy's connection cutoff
    m = nl.distance < rc
    ours = np.stack([nl.i[m], nl.j[m]], axis=1)
    assert ours.shape == ci.shape, f"{label}: {len(ours)} instances, quippy has {len(ci)}"
    bad = np.flatnonzero(np.any(ours != ci, axis=1))
    assert len(bad) == 0, f"{label}: (i, j) differ from quippy's order at instance {bad[0]}"
    image = positions[nl.j[m]] + nl.shift[m].astype(float) @ np.asarray(cell, dtype=float)
    assert np.allclose(image, qpos, rtol=1e-14, atol=1e-12), f"{label}: image positions differ"
    assert np.all(_rel(nl.distance[m], qd) <= 1e-14), f"{label}: distances differ beyond 1e-14"
    stats["pairs"] += len(qd)
    stats["distance_not_bitwise"] += int(np.sum(nl.distance[m] != qd))


def _report(stats, what):
    print(f"{what}: {dict(stats)} (GAPFIT_TEST_SEED={SEED})")
    if stats.get("distance_not_bitwise") or stats.get("diff_not_bitwise"):
        warnings.warn(f"{what}: not bitwise identical to QUIP: {dict(stats)} (seed {SEED})")


# ---------------------------------------------------------------------------
# tests against quippy


def test_random_structures_full_list(quippy):
    stats = {"structures": 0, "pairs": 0, "distance_not_bitwise": 0, "diff_not_bitwise": 0}
    for kind, k, positions, cell, pbc, rc in random_structures(SEED):
        for cutoff in (rc, rc + 1.0):
            label = f"seed {SEED} (GAPFIT_TEST_SEED), {kind} #{k}, pbc={pbc.tolist()}, n={len(positions)}, cutoff={cutoff}"
            check_full(positions, cell, pbc, cutoff, label, stats)
            stats["structures"] += 1
    _report(stats, "full neighbour list")


def test_random_structures_distance_2b(quippy):
    stats = {"structures": 0, "pairs": 0, "distance_not_bitwise": 0}
    # half as many: quippy's distance_2b with gradients is the slow part, and the full list has them all
    for kind, k, positions, cell, pbc, rc in random_structures(SEED + 1, N_PER_KIND // 2):
        label = f"seed {SEED} (GAPFIT_TEST_SEED), {kind} #{k}, pbc={pbc.tolist()}, n={len(positions)}, rc={rc}"
        check_distance_2b(positions, cell, pbc, rc, label, stats)
        stats["structures"] += 1
    _report(stats, "distance_2b")


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: Path(p).name)
def test_reference_structures(quippy, path):
    import ase.io

    if not os.path.exists(path):
        pytest.skip(f"{path} not found")
    atoms = ase.io.read(path, index=0)
    stats = {"pairs": 0, "distance_not_bitwise": 0, "diff_not_bitwise": 0}
    for cutoff in (2.5, 3.7, 5.0, 6.0):
        args = (atoms.positions, atoms.cell.array, atoms.pbc, cutoff, f"{Path(path).name}, cutoff {cutoff}", stats)
        check_full(*args)
        check_distance_2b(*args)
    assert stats["distance_not_bitwise"] == 0 and stats["diff_not_bitwise"] == 0, stats


def _literal_structures():
    """Non-periodic c (|c| = 1 Å, atoms spanning 10 Å) where QUIP's single-precision
    literals in calc_lat_eff decide the link cells: ``(zmax - zmin) * 1.1`` gives 3 cells
    in c for rc = 11.0000001/3 (2 with a double 1.1), and ``zmin - 0.05`` puts one atom
    on the other side of a cell boundary than a double 0.05 would."""
    from gapfit.descriptors import neighbours

    rng = np.random.default_rng(0)
    positions = np.c_[rng.uniform(0, 6, 20), rng.uniform(0, 6, 20), rng.uniform(0, 10, 20)]
    positions[0, 2], positions[1, 2] = 0.0, 10.0
    cell, pbc = np.diag([6.0, 6.0, 1.0]), np.array([True, True, False])
    boundary = positions.copy()
    boundary[2, 2] = 10 * neighbours._F32_1_1 * (1 / 6 - 0.05 - 3.7e-10)
    return [("1.1", positions, cell, pbc, 11.0000001 / 3), ("0.05", boundary, cell, pbc, 3.5)]


@pytest.mark.parametrize("case", [0, 1], ids=["literal_1.1", "literal_0.05"])
def test_single_precision_literals(quippy, monkeypatch, case):
    from gapfit.descriptors import neighbours

    name, positions, cell, pbc, rc = _literal_structures()[case]
    stats = {"pairs": 0, "distance_not_bitwise": 0, "diff_not_bitwise": 0}
    check_full(positions, cell, pbc, rc, f"single-precision {name} literal", stats)
    # the structure is sensitive to the literal: a double-precision one changes the order
    ours = neighbour_list(positions, cell, pbc, rc)
    monkeypatch.setattr(neighbours, "_F32_1_1" if name == "1.1" else "_F32_0_05", float(name))
    other = neighbour_list(positions, cell, pbc, rc)
    assert not (np.array_equal(ours.j, other.j) and np.array_equal(ours.shift, other.shift))


# ---------------------------------------------------------------------------
# oracle-free checks


def test_bond_symmetry_and_distances():
    """Every bond is seen from both sides with the same stored distance; diff matches the shift."""
    rng = np.random.default_rng(SEED + 2)
    for kind in KINDS:
        positions, cell, pbc, rc = random_structure(rng, kind)
        nl = neighbour_list(positions, cell, pbc, rc)
        msg = f"seed {SEED} (GAPFIT_TEST_SEED), {kind}"
        image = positions[nl.j] + nl.shift @ cell
        assert np.allclose(nl.diff, image - positions[nl.i], atol=1e-10), msg
        assert np.allclose(nl.distance, np.linalg.norm(nl.diff, axis=1), rtol=1e-14, atol=0), msg
        assert np.all(nl.distance < rc), msg
        assert not np.any((nl.i == nl.j) & np.all(nl.shift == 0, axis=1)), msg
        fwd = {(a, b, *s): d for a, b, s, d in zip(nl.i.tolist(), nl.j.tolist(), nl.shift.tolist(), nl.distance.tolist())}
        for (a, b, s0, s1, s2), d in fwd.items():
            assert fwd[(b, a, -s0, -s1, -s2)] == d, msg
        assert np.all(np.diff(nl.i) >= 0) and nl.offsets[-1] == nl.n_pairs, msg


def test_same_set_as_brute_force_when_periodic():
    from ase.neighborlist import primitive_neighbor_list

    rng = np.random.default_rng(SEED + 3)
    for kind in ("ortho", "skewed", "tiny", "big", "outside"):
        positions, cell, pbc, rc = random_structure(rng, kind)
        nl = neighbour_list(positions, cell, pbc, rc)
        i, j, S, d = primitive_neighbor_list("ijSd", pbc, cell, positions, rc)
        keep = (d < rc) & ~((i == j) & np.all(S == 0, axis=1))
        ours = set(zip(nl.i.tolist(), nl.j.tolist(), map(tuple, nl.shift.tolist())))
        theirs = set(zip(i[keep].tolist(), j[keep].tolist(), map(tuple, S[keep].tolist())))
        assert ours == theirs, f"seed {SEED} (GAPFIT_TEST_SEED), {kind}"


def test_empty_inputs():
    nl = neighbour_list(np.zeros((0, 3)), np.eye(3) * 5, [True] * 3, 3.0)
    assert nl.n_pairs == 0 and nl.offsets.tolist() == [0]
    nl = neighbour_list(np.zeros((2, 3)) + [[0, 0, 0], [10, 0, 0]], np.eye(3) * 20, [False] * 3, 3.0)
    assert nl.n_pairs == 0 and nl.offsets.tolist() == [0, 0, 0]


def test_speed():
    rng = np.random.default_rng(SEED + 4)
    L = (1000 / 0.05) ** (1 / 3)
    positions = rng.uniform(0, L, (1000, 3))
    cell = np.diag([L, L, L])
    best = min(_timed(neighbour_list, positions, cell, [True] * 3, 6.0) for _ in range(3))
    assert best < 1.0, f"1000 atoms, cutoff 6: {best:.3f} s"
    best = min(_timed(neighbour_list, np.zeros((1, 3)), np.eye(3) * 2.5, [True] * 3, 6.0) for _ in range(3))
    assert best < 0.1, f"1 atom, lattice 2.5, cutoff 6: {best:.3f} s"


def _timed(f, *args):
    t = time.perf_counter()
    f(*args)
    return time.perf_counter() - t
