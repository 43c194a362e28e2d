"""K_NM rows against finite differences of the energy row, and the QR solve against lstsq.

Force rows are derivative observations of the energy: row (a, k) must equal
∂(energy row)/∂r_a,k; the virial row (l, k) must equal the derivative of the
energy row with respect to the strain ε_kl (positions and cell deformed by I+ε).
"""

import numpy as np
import pytest

from gapfit.kernels.covariance import Coordinate, k_mm, k_nm_rows
from gapfit.data.targets import VIRIAL_COMPONENTS, FrameRows
from gapfit.data.extxyz import Frame
from gapfit.kernels.functions import make_kernel
from gapfit.descriptors.neighbours import neighbour_list
from gapfit.config.gaps import parse_gap_piece
from gapfit.linalg.serial import cholesky_upper, qr_solve


def _structure(seed=3):
    rng = np.random.default_rng(seed)
    cell = np.array([[4.1, 0.2, 0.0], [0.3, 3.9, 0.1], [0.0, 0.4, 4.3]])
    pos = rng.random((4, 3)) @ cell
    return Frame(numbers=np.array([14, 14, 6, 14]), positions=pos, cell=cell, pbc=np.array([True, True, True]))


def _coordinate(piece, seed=0):
    spec = parse_gap_piece(piece, 1)
    desc = spec.make_descriptor()
    rng = np.random.default_rng(seed)
    if desc.dimensions == 1:
        sparse_x = rng.uniform(1.5, 3.5, size=(6, 1))
    else:
        sparse_x = rng.random((6, desc.dimensions))
    gp = spec.gp
    theta = np.full(desc.dimensions, gp["lengthscale_uniform"]) if gp["covariance_type"] == "ard_se" else None
    kernel = make_kernel(gp["covariance_type"], gp["energy_scale"], sparse_x, theta=theta,
                         zeta=gp["soap_exponent"], f0=gp["f0"])
    return Coordinate(spec=spec, descriptor=desc, kernel=kernel, sparse_cutoff=rng.uniform(0.3, 1.0, 6), column=0)


def _rows(coord, frame):
    nl = neighbour_list(frame.positions, frame.cell, frame.pbc, coord.descriptor.cutoff)
    vals = coord.descriptor.calc(frame, nl, grad=True)
    n = len(frame)
    fr = FrameRows(y=np.zeros(1 + 3 * n + 6), sigma=np.ones(1 + 3 * n + 6), has_energy=True,
                   force_atoms=np.arange(n), has_virial=True)
    return k_nm_rows([coord], [[vals]], [fr], [n], coord.n_sparse, block_bytes=2000)


def _energy_row(coord, frame):
    nl = neighbour_list(frame.positions, frame.cell, frame.pbc, coord.descriptor.cutoff)
    vals = coord.descriptor.calc(frame, nl, grad=False)
    return (coord.kernel.values(vals.x) * vals.cutoff[:, None]).sum(axis=0) * coord.sparse_cutoff


PIECES = [
    "distance_2b cutoff=3.0 cutoff_transition_width=1.0 covariance_type=ard_se delta=1.3 theta_uniform=0.7 n_sparse=6",
    "distance_2b cutoff=3.0 cutoff_transition_width=1.0 covariance_type=ard_se delta=1.3 theta_uniform=0.7 f0=0.4 "
    "n_sparse=6 n_exponents=3 exponents={1 -1 -2} add_species=F Z1=14 Z2=14",
    "distance_2b cutoff=3.0 covariance_type=ard_se delta=0.9 theta_uniform=1.1 n_sparse=6 tail_exponent=1 "
    "tail_range=0.8",
    "distance_2b cutoff=3.0 covariance_type=dot_product delta=0.9 zeta=2.5 n_sparse=6",
]


@pytest.mark.parametrize("piece", PIECES)
def test_derivative_rows_match_finite_differences(piece):
    coord = _coordinate(piece)
    frame = _structure()
    rows = _rows(coord, frame)
    n = len(frame)
    assert np.allclose(rows[0], _energy_row(coord, frame), rtol=1e-12, atol=1e-12)
    h = 1e-5
    for a in range(n):
        for k in range(3):
            plus, minus = frame.positions.copy(), frame.positions.copy()
            plus[a, k] += h
            minus[a, k] -= h
            fp = Frame(frame.numbers, plus, frame.cell, frame.pbc)
            fm = Frame(frame.numbers, minus, frame.cell, frame.pbc)
            fd = (_energy_row(coord, fp) - _energy_row(coord, fm)) / (2 * h)
            assert np.allclose(rows[1 + 3 * a + k], fd, rtol=1e-6, atol=1e-7), (a, k)
    for v, (l, k) in enumerate(VIRIAL_COMPONENTS):
        eps = np.zeros((3, 3))
        eps[k, l] = h
        deformed = []
        for sign in (1, -1):
            t = np.eye(3) + sign * eps
            deformed.append(Frame(frame.numbers, frame.positions @ t.T, frame.cell @ t.T, frame.pbc))
        fd = (_energy_row(coord, deformed[0]) - _energy_row(coord, deformed[1])) / (2 * h)
        assert np.allclose(rows[1 + 3 * n + v], fd, rtol=1e-6, atol=1e-7), (l, k)


def test_k_mm_has_cutoffs_and_jitter():
    coord = _coordinate(PIECES[0])
    kmm = k_mm([coord], 1e-3)
    sc = coord.sparse_cutoff
    expected = coord.kernel.values(coord.kernel.sparse_x) * np.outer(sc, sc) + 1e-3 * np.eye(6)
    assert np.allclose(kmm, expected, rtol=1e-14, atol=0)


def test_qr_solve_matches_lstsq_and_beats_normal_equations():
    rng = np.random.default_rng(1)
    k_nm = rng.normal(size=(300, 40)) @ np.diag(np.logspace(0, -6, 40))
    y = rng.normal(size=300)
    kmm = k_nm[:40].T @ k_nm[:40] + 1e-8 * np.eye(40)
    u = cholesky_upper(kmm, 1e-8)
    a = np.vstack([k_nm, u])
    b = np.concatenate([y, np.zeros(40)])
    x, _ = qr_solve(np.asfortranarray(a.copy()), b)
    ref = np.linalg.lstsq(a, b, rcond=None)[0]
    assert np.allclose(x, ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())
