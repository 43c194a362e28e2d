"""Decisions that must not hang on the last bit (issue 18): the same answer under two OpenBLAS kernel
families, and rules with a stated tolerance where gap_fit's rule decided at machine epsilon.

The e0 rank is in tests/test_e0.py, the duplicate filter in tests/test_sparsify.py."""

import json
import subprocess
import sys

import numpy as np
import pytest

import gapfit
from gapfit.sparse.cur import descriptor_leverage
from gapfit.errors import NumericalError
from gapfit.linalg.serial import cholesky_upper
from gapfit.model.tuning import TIE_RTOL, best_index

from conftest import QUIP_TESTS, ROOT


def test_decisions_do_not_depend_on_the_blas_kernels():
    """Under the native kernels and a second family (tests/openblas_kernels.py): the same soap radial
    bases can be built (990 settings; 13 used to flip, where the overlap is singular to working
    precision), and a likelihood scan over sparse_jitter values whose objectives differ only by
    rounding picks the same point, the first of the tie."""
    from openblas_kernels import kernel_environments
    runs = []
    for env in kernel_environments():
        out = subprocess.run([sys.executable, str(ROOT / "tests" / "kernel_scripts" / "decisions.py")], env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append((env["GAPFIT_TEST_KERNELS"], json.loads(out.stdout)))
    print("kernel families:", [name for name, _ in runs])
    for name, r in runs:
        objectives = np.array(r["jitter_scan"]["objectives"])
        print(f"{name}: sparse_jitter scan objectives {objectives.tolist()}, best {r['jitter_scan']['best']}")
        assert np.ptp(objectives) < TIE_RTOL * abs(objectives).min()  # a tie: rounding only
        assert r["jitter_scan"]["best"] == 1e-16
        built = r["radial_bases"]
        assert len(built) == 990
        assert built["POLY 8 0.5"] and built["GTO 12 0.5"] and not built["GTO 30 0.5"]
    for name, r in runs[1:]:
        assert r["radial_bases"] == runs[0][1]["radial_bases"], name


def test_cur_leaves_out_rounding_level_singular_values():
    """Rows of norm 1e3 in 40 dimensions of rank 32 (8 columns are combinations of others): the 8
    structurally zero singular values come out above gap_fit's absolute 1e-13, and counting them
    would make the rank depend on rounding.  The leverage uses rank 32 // 2 = 16, as an
    independent SVD of x says it should."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, 32))
    x = np.hstack([x, x[:, :8] * 0.5 + x[:, 8:16] * 0.25])
    x *= 1e3 / np.linalg.norm(x, axis=1, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    print(f"s_max {s[0]:.3g}; the 8 structural zeros {s[32]:.2e} ... {s[-1]:.2e}")
    assert np.count_nonzero(s > 1e-13) > 33  # gap_fit's rule would count rounding
    m = 10
    expect = np.minimum(1.0, m / 16 * np.einsum("nk,nk->n", u[:, :16], u[:, :16]))
    np.testing.assert_allclose(descriptor_leverage(x, m), expect, rtol=1e-8, atol=1e-12)


def test_best_point_of_a_tie_is_the_first():
    assert best_index([3.0, 1.0 + 1e-9, 1.0, 2.0]) == 1  # within 1e-6 of the best: the first of them
    assert best_index([3.0, 1.0 + 1e-5, 1.0]) == 2
    assert best_index([float("nan"), None, 5.0, float("inf")]) == 2
    assert best_index([None, float("nan")]) == 0


def test_a_setting_that_does_not_factorise_is_a_bad_point_not_the_end():
    """scan and optimise: a sparse_jitter at which K_MM does not factorise gets objective +∞ (the
    reason kept in the table), and the search goes on."""
    # ζ = 1 on a 7-dimensional soap: K_MM of 30 points has rank ≤ 7, and needs its sparse_jitter
    fit = gapfit.GapFit(gap="soap l_max=1 n_max=2 atom_sigma=0.5 cutoff=4.0 cutoff_transition_width=1.0 "
                            "covariance_type=dot_product delta=1.0 zeta=1 n_sparse=30 sparse_method=cur_points",
                        energy_parameter_name="dft_energy", force_parameter_name="dft_force",
                        virial_parameter_name="dft_virial", default_sigma=[0.01, 0.5, 0.5, 0.0], e0_method="average",
                        sparse_jitter=1e-8, rnd_seed=1, training_errors=False, quiet=True)
    fit.fit(str(QUIP_TESTS / "Si.np1.xyz"), keep_kernel_rows=True)
    scan = fit.scan({"sparse_jitter": [0.0, 1e-8]})
    assert scan.table[0]["objective"] == float("inf") and "not positive definite" in scan.table[0]["failed"]
    assert scan.best == {"sparse_jitter": 1e-8}
    assert any("failed: K_MM" in line for line in scan.lines())
    result = fit.optimise(keys=("sparse_jitter",), max_evaluations=6)
    assert np.isfinite(min(row["objective"] for row in result.table))


def test_k_mm_below_its_rounding_level_is_named():
    """gap_fit stops when K_MM does not factorise, and so does gapfit; when sparse_jitter is below
    K_MM's rounding level (M ε max K_ii) the message says that the outcome is the machine's."""
    x = np.random.default_rng(0).normal(size=(40, 3))
    k = 2500.0 * (x @ x.T)  # δ = 50, rank 3: 37 eigenvalues are rounding (level 40 ε max K_ii ≈ 1e-10)
    with pytest.raises(NumericalError, match=r"below K_MM's rounding level .* give sparse_jitter ≥ "):
        cholesky_upper(k + 1e-12 * np.eye(40), 1e-12)
    warned = []
    cholesky_upper(k + 1e-6 * np.eye(40), 1e-6, warned.append)  # well above the level: no word
    assert warned == []
