"""The clustering / CUR sparse-point selection methods (gapfit.sparse.clustering).

References are independent, loop-based re-implementations written here from the GAP source's
description (gp_fit.F90 sparse_covariance, clustering.F90 pivot), LAPACK's pivoted Cholesky
(dpstrf), and gap_fit's own cur_points choice on Si.np1.xyz (statistical agreement only: its
Fortran random stream cannot be reproduced).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import cdist

from gapfit.sparse import clustering as cl
from gapfit.sparse.clustering import SELECTORS, SelectionContext
from gapfit.errors import ConfigError
from gapfit.sparse.dedup import unique_mask

from conftest import environment_labels

RANDOM_METHODS = ("cur_points", "cur_covariance", "kmeans", "fuzzy", "cluster")


def _data(n=150, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(2.0, 0.5, d) + 0.3


CONTEXTS = {
    "ard_se": SelectionContext(covariance_type="ard_se", theta=np.full(6, 1.5), delta=2.0, f0=0.3, zeta=1.0),
    "ard_se_actual": SelectionContext(covariance_type="ard_se", theta=np.full(6, 1.5), delta=2.0, f0=0.3,
                                      use_actual_gpcov=True),
    "pp": SelectionContext(covariance_type="pp", theta=np.full(6, 6.0), delta=2.0, f0=0.3),
    "pp_actual": SelectionContext(covariance_type="pp", theta=np.full(6, 6.0), delta=2.0, f0=0.3,
                                  use_actual_gpcov=True),
    "dot_product": SelectionContext(covariance_type="dot_product", zeta=2.0, delta=1.3),
    "dot_product_actual": SelectionContext(covariance_type="dot_product", zeta=3.0, use_actual_gpcov=True),
}


# --- generic contract ----------------------------------------------------------------
@pytest.mark.parametrize("ctx_name", sorted(CONTEXTS))
@pytest.mark.parametrize("method", sorted(SELECTORS))
def test_distinct_valid_reproducible(method, ctx_name):
    x = _data()
    ctx = CONTEXTS[ctx_name]
    m = 17
    idx = SELECTORS[method](x, m, np.random.default_rng(5), ctx)
    assert idx.dtype == np.int64 and idx.shape == (m,)
    assert np.unique(idx).size == m
    assert idx.min() >= 0 and idx.max() < x.shape[0]
    again = SELECTORS[method](x, m, np.random.default_rng(5), ctx)
    np.testing.assert_array_equal(idx, again)


@pytest.mark.parametrize("method", RANDOM_METHODS)
def test_seeds_change_the_choice(method):
    x = _data()
    ctx = CONTEXTS["ard_se"]
    choices = {tuple(np.sort(SELECTORS[method](x, 17, np.random.default_rng(s), ctx))) for s in range(4)}
    assert len(choices) > 1


def test_covariance_ignores_the_seed():
    x = _data()
    a = cl.select_covariance(x, 12, np.random.default_rng(0), CONTEXTS["ard_se"])
    b = cl.select_covariance(x, 12, np.random.default_rng(99), CONTEXTS["ard_se"])
    np.testing.assert_array_equal(a, b)
    assert a[0] == 0  # gap_fit starts from the first candidate


@pytest.mark.parametrize("method", sorted(SELECTORS))
def test_impossible_requests(method):
    x = _data(n=10)
    ctx = CONTEXTS["dot_product"]
    with pytest.raises(ConfigError, match=f"sparse_method={method}: 11 sparse points requested but there are "
                                          f"only 10 distinct candidates"):
        SELECTORS[method](x, 11, np.random.default_rng(0), ctx)
    assert SELECTORS[method](x, 0, np.random.default_rng(0), ctx).size == 0
    assert np.sort(SELECTORS[method](x, 10, np.random.default_rng(0), ctx)).tolist() == list(range(10))


@pytest.mark.parametrize("method", ["pivot", "kmeans", "fuzzy", "cluster"])
def test_ard_se_needs_theta(method):
    with pytest.raises(ConfigError, match="needs theta"):
        SELECTORS[method](_data(), 5, np.random.default_rng(0), SelectionContext(covariance_type="ard_se"))
    with pytest.raises(ConfigError, match="theta has 3 values, the descriptor has 6"):
        SELECTORS[method](_data(), 5, np.random.default_rng(0),
                          SelectionContext(covariance_type="ard_se", theta=np.ones(3)))


@pytest.mark.parametrize("method", ["covariance", "cur_covariance"])
def test_zero_norm_candidate_with_dot_product(method):
    x = _data(n=20)
    x[7] = 0.0
    with pytest.raises(ConfigError, match="candidate descriptor 7 has zero norm"):
        SELECTORS[method](x, 5, np.random.default_rng(0), CONTEXTS["dot_product"])


def test_cluster_actual_zero_norm_candidate():
    x = _data(n=20)
    x[3] = 0.0
    with pytest.raises(ConfigError, match="candidate descriptor 3 has zero norm"):
        cl.select_cluster(x, 5, np.random.default_rng(0), CONTEXTS["dot_product_actual"])


def test_unsupported_covariance_type():
    with pytest.raises(ConfigError, match="not available for covariance_type=bond_real_space"):
        cl.select_pivot(_data(), 5, np.random.default_rng(0), SelectionContext(covariance_type="bond_real_space"))


# --- memory refusal ----------------------------------------------------------------------
def test_memory_check_refuses_big_requests_without_allocating():
    n = 1_000_000
    for method, gib in (("cur_covariance", "22351.7"), ("cluster", "14901.2")):
        with pytest.raises(ConfigError) as err:
            cl.check_memory(method, n, 500)
        msg = str(err.value)
        assert f"sparse_method={method} with {n} candidates needs a {n} x {n} matrix" in msg
        assert f"({gib} GiB, over the 4.0 GiB limit)" in msg and "cur_points" in msg
        assert "\n" not in msg
    for method in ("pivot", "covariance"):
        with pytest.raises(ConfigError, match=rf"sparse_method={method} with {10 * n} candidates needs a "
                                              rf"{10 * n} x 1000 factor \(74\.5 GiB"):
            cl.check_memory(method, 10 * n, 1000)
    # below the limit: nothing happens; O(n d) methods are never refused
    cl.check_memory("cur_covariance", 10_000, 500)
    cl.check_memory("pivot", n, 500)
    cl.check_memory("cur_points", 10 ** 9, 10 ** 5)
    assert cl.MAX_DENSE_BYTES == 4 * 2 ** 30


@pytest.mark.parametrize("method", ["cur_covariance", "cluster", "pivot", "covariance"])
def test_selectors_apply_the_memory_limit(method):
    ctx = SelectionContext(covariance_type="dot_product", max_bytes=1000)
    with pytest.raises(ConfigError, match=f"sparse_method={method} with 150 candidates needs"):
        SELECTORS[method](_data(), 10, np.random.default_rng(0), ctx)


# --- cur_points ----------------------------------------------------------------------------
def test_cur_leverage_scores():
    x = _data(n=80, d=10)
    _, s, vt = np.linalg.svd(x.T, full_matrices=False)  # gap_fit's d×n matrix: v = right vectors
    v = vt.T
    r = int(np.sum(s > 1e-13)) // 2
    expect = np.minimum(7 / r * np.sum(v[:, :r] ** 2, axis=1), 1.0)
    np.testing.assert_allclose(cl.cur_leverage(v, s, 7), expect, rtol=1e-12, atol=1e-15)
    # the low-memory route (QR of x folded block by block, SVD of its d×d factor) gives the same
    np.testing.assert_allclose(cl.descriptor_leverage(x, 7), expect, rtol=1e-10, atol=1e-14)
    tall = _data(n=5000, d=10)  # several folded blocks
    _, s, vt = np.linalg.svd(tall.T, full_matrices=False)
    r = int(np.sum(s > 1e-13)) // 2
    expect = np.minimum(7 / r * np.sum(vt.T[:, :r] ** 2, axis=1), 1.0)
    np.testing.assert_allclose(cl.descriptor_leverage(tall, 7), expect, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("extra", [0, 3])
def test_cur_points_spans_exact_rank_matrix(extra):
    rng = np.random.default_rng(3)
    r = 5
    x = rng.normal(size=(200, r)) @ rng.normal(size=(r, 20))  # rank 5: 200 candidates in 20 dims
    for seed in range(5):
        idx = cl.select_cur_points(x, r + extra, np.random.default_rng(seed))
        err = cl.cur_reconstruction_error(x, idx)
        assert err < 1e-20 * np.sum(x ** 2)
    # fewer columns than the rank cannot reconstruct it: the error measure is not trivially 0
    assert cl.cur_reconstruction_error(x, idx[:r - 1]) > 1e-3 * np.sum(x ** 2)


def test_cur_points_always_takes_a_lone_direction():
    rng = np.random.default_rng(4)
    x = np.zeros((120, 6))
    x[:, 1:3] = rng.normal(size=(120, 2))  # everybody else lives in a plane
    x[57] = 0.0
    x[57, 4] = 100.0  # the only candidate along dimension 4, the largest singular value (plane: ~11)
    for seed in range(25):
        for m in (1, 3, 10):
            assert 57 in cl.select_cur_points(x, m, np.random.default_rng(seed))


def test_cur_points_logs_error_and_handles_rank_one():
    lines = []
    ctx = SelectionContext(log=lines.append, cur_report_error=True)
    x = np.random.default_rng(0).uniform(1.0, 2.0, size=(40, 1))  # distance_2b: d = 1
    idx = cl.select_cur_points(x, 4, np.random.default_rng(0), ctx)
    assert np.unique(idx).size == 4
    assert any("using rank 1" in line for line in lines)
    assert any(line.strip().startswith("cur_decomposition: iteration: 1, error:") for line in lines)
    with pytest.raises(ConfigError, match="descriptor matrix has no singular value above"):
        cl.select_cur_points(np.zeros((5, 3)), 2, np.random.default_rng(0))


def test_cur_points_explains_gap_fits_choice(quippy, quip_data):
    """gap_fit's cur_points choice on Si.np1.xyz favours high-leverage candidates as ours does."""
    from ase.io import read
    from quippy.descriptors import Descriptor
    ref = json.loads((quip_data / "reference" / "Si.soap.cur_points.json").read_text())
    desc = Descriptor("soap atom_sigma=0.5 central_weight=1.0 cutoff=4.0 cutoff_transition_width=1.0 "
                      "l_max=8 n_max=8 n_species=1 Z=14 species_Z={14}")
    x_all = np.vstack([desc.calc(a)["data"] for a in read(str(quip_data / "Si.np1.xyz"), ":")])
    gap_index = np.asarray(ref["index"][0]) - 1
    m = gap_index.size
    pool = np.nonzero(unique_mask(x_all, np.ones(len(x_all), bool), 1e-10, 1e-10))[0]
    # the filter keeps one member of each group of equivalent environments; which one is decided
    # by rounding (gap_fit kept candidates 1 and 3 of Si.np1 on its machine, we may keep 2 and 4),
    # so gap_fit's choices are mapped to the pool member that is the same environment
    labels = environment_labels(x_all)
    assert np.unique(labels[pool]).size == pool.size == np.unique(labels).size
    pool_member = dict(zip(labels[pool], pool))
    gap_index = np.array([pool_member[label] for label in labels[gap_index]])
    assert np.unique(gap_index).size == m
    x = x_all[pool]
    _, s, vt = np.linalg.svd(x.T, full_matrices=False)  # gap_fit's d×n matrix: v = right vectors
    p = cl.cur_leverage(vt.T, s, m)
    gap_chosen = np.isin(pool, gap_index)
    # under the algorithm a candidate is chosen with probability increasing in p
    assert p[gap_chosen].mean() > 1.8 * p[~gap_chosen].mean()
    quiet = SelectionContext(cur_report_error=False)
    ours = [p[cl.select_cur_points(x, m, np.random.default_rng(seed), quiet)].mean() for seed in range(8)]
    assert abs(np.mean(ours) / p[gap_chosen].mean() - 1.0) < 0.15


# --- cur_covariance --------------------------------------------------------------------
def _kernel_reference(x, ctx, crude=False):
    """Normalised kernel by explicit loops over pairs (gpCoordinates_Covariance, normalise=.false.)."""
    n = x.shape[0]
    k = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            if ctx.covariance_type == "ard_se":
                if crude:
                    k[i, j] = np.exp(-0.5 * np.sum((x[i] - x[j]) ** 2) / 16.0)
                else:
                    t = np.asarray(ctx.theta)
                    kij = ctx.delta ** 2 * np.exp(-0.5 * np.sum(((x[i] - x[j]) / t) ** 2)) + ctx.f0 ** 2
                    k[i, j] = kij / (ctx.delta ** 2 + ctx.f0 ** 2)
            elif ctx.covariance_type == "pp":  # QUIP's covariancePP, q = 1, j = d//2 + 2
                jj = x.shape[1] // 2 + 2
                t = np.full(x.shape[1], 4.0) if crude else np.asarray(ctx.theta)
                r = np.sqrt(np.sum(((x[i] - x[j]) / t) ** 2))
                pp = (1 - r) ** (jj + 1) * ((jj + 1) * r + 1) if r < 1 else 0.0
                if crude:
                    k[i, j] = pp
                else:
                    k[i, j] = (ctx.delta ** 2 * pp + ctx.f0 ** 2) / (ctx.delta ** 2 + ctx.f0 ** 2)
            else:
                k[i, j] = (x[i] @ x[j]) ** ctx.zeta / np.sqrt((x[i] @ x[i]) ** ctx.zeta * (x[j] @ x[j]) ** ctx.zeta)
    return k


@pytest.mark.parametrize("ctx_name", ["ard_se", "pp", "dot_product"])
def test_cur_covariance_matrix_is_gap_fits(ctx_name):
    x = _data(n=30)
    ctx = CONTEXTS[ctx_name]
    a = cl.cur_covariance_matrix(x, ctx)
    ref = _kernel_reference(x, ctx)
    np.fill_diagonal(ref, 0.0)  # kernel_distance_matrix(covariance_only) leaves a zero diagonal
    np.testing.assert_allclose(a, ref, rtol=1e-12, atol=1e-13)
    assert np.array_equal(a, a.T)
    unit = cl.cur_covariance_matrix(x, replace(ctx, cur_covariance_unit_diagonal=True))
    assert np.all(np.diag(unit) == 1.0)


def test_cur_covariance_matches_cur_on_the_matrix():
    x = _data(n=60)
    ctx = CONTEXTS["ard_se"]
    a = cl.cur_covariance_matrix(x, ctx)
    _, s, vt = np.linalg.svd(a)
    p = cl.cur_leverage(vt.T, s, 9)
    expect = cl.cur_keys_select(p, 9, np.random.default_rng(8))
    np.testing.assert_array_equal(cl.select_cur_covariance(x, 9, np.random.default_rng(8), ctx), expect)


# --- pivot -----------------------------------------------------------------------------
def _pivot_reference(k, m):
    """gap_fit's right-looking pivoted Cholesky on the full matrix, first largest diagonal wins."""
    k = k.copy()
    n = k.shape[0]
    piv = np.arange(n)
    for j in range(m):
        jmax, dmax = j, 0.0
        for i in range(j, n):
            if dmax < k[i, i]:
                jmax, dmax = i, k[i, i]
        k[[j, jmax]] = k[[jmax, j]]
        k[:, [j, jmax]] = k[:, [jmax, j]]
        piv[[j, jmax]] = piv[[jmax, j]]
        k[j, j] = np.sqrt(k[j, j])
        k[j + 1:, j] /= k[j, j]
        for i in range(j + 1, n):
            k[i:, i] -= k[i:, j] * k[i, j]
        k = np.tril(k) + np.tril(k, -1).T
    return piv[:m]


@pytest.mark.parametrize("ctx_name", ["ard_se", "pp", "dot_product"])
def test_pivot_matches_reference_pivoted_cholesky(ctx_name):
    x = _data(n=70)
    base = CONTEXTS[ctx_name]
    ctx = replace(base, jitter=0.0)
    if ctx.covariance_type in ("ard_se", "pp"):  # pp: θ-scaled distances, as ard_se
        scale = ctx.theta
    else:
        scale = x.max(axis=0) - x.min(axis=0)
    kmat = np.exp(-0.5 * cdist(x / scale, x / scale))
    m = 25
    ours = cl.select_pivot(x, m, np.random.default_rng(0), ctx)
    np.testing.assert_array_equal(ours, _pivot_reference(kmat, m))
    _, piv, _, info = scipy.linalg.lapack.dpstrf(kmat, lower=1)
    np.testing.assert_array_equal(ours, piv[:m] - 1)
    # gap_fit's jitter (≤ 1e-7 on distances of order 1) does not change these pivots
    np.testing.assert_array_equal(cl.select_pivot(x, m, np.random.default_rng(0), base), ours)


def test_pair_jitter_is_symmetric_uniform_and_seeded():
    i = np.arange(300)[:, None]
    j = np.arange(300)[None, :]
    u = cl._pair_uniform(np.uint64(12345), i, j)
    assert u.shape == (300, 300)
    assert np.array_equal(u, u.T)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01
    assert not np.array_equal(u, cl._pair_uniform(np.uint64(54321), i, j))
    assert float(cl._pair_uniform(np.uint64(7), 3, 5)) == float(cl._pair_uniform(np.uint64(7), 5, 3))


# --- kmeans / fuzzy / cluster on blobs --------------------------------------------------------
def _blobs(k, per=30, d=4, sep=50.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * sep
    x = np.vstack([c + rng.normal(size=(per, d)) for c in centres])
    label = np.repeat(np.arange(k), per)
    order = rng.permutation(x.shape[0])
    return x[order], label[order]


@pytest.mark.parametrize("method", ["kmeans", "fuzzy", "cluster"])
@pytest.mark.parametrize("init,k", [("random", 2), ("kmeans++", 6)])
def test_one_point_per_blob(method, init, k):
    x, label = _blobs(k)
    for cov in ("ard_se", "dot_product"):
        ctx = SelectionContext(covariance_type=cov, theta=np.full(4, 3.0), kmeans_init=init)
        for seed in range(5):
            idx = SELECTORS[method](x, k, np.random.default_rng(seed), ctx)
            assert sorted(label[idx]) == list(range(k)), (cov, seed)


def test_duplicate_nearest_points_are_resolved_in_order():
    xs = np.array([[0.0], [1.0], [2.0], [10.0]])
    centres = np.array([[0.9], [1.2], [1.1]])
    nearest = cl._nearest_candidates(xs, (xs ** 2).ravel(), centres)
    assert nearest.tolist() == [1, 1, 1]
    out = cl._distinct_nearest(xs, (xs ** 2).ravel(), centres, nearest, lambda *a: None, "kmeans")
    # first centre keeps candidate 1; the others take their nearest unused candidates in order
    assert out.tolist() == [1, 2, 0]


def test_fuzzy_weights():
    d2 = np.array([[1.0, 4.0], [0.0, 9.0], [4.0, 4.0]])
    w = cl._fuzzy_weights(d2, 2.0)
    np.testing.assert_allclose(w, [[0.8, 0.2], [1.0, 0.0], [0.5, 0.5]])


def test_cluster_kernel_distance():
    x = _data(n=25)
    ctx = CONTEXTS["dot_product_actual"]
    dm = cl.cluster_distance_matrix(x, np.random.default_rng(0), ctx)
    ref = np.sqrt(np.maximum(2.0 - 2.0 * _kernel_reference(x, ctx), 0.0))
    np.fill_diagonal(ref, 0.0)
    np.testing.assert_allclose(dm, ref, atol=1e-7)
    # without use_actual_gpcov: scaled distance plus a jitter below 1e-7
    ctx = CONTEXTS["ard_se"]
    dm = cl.cluster_distance_matrix(x, np.random.default_rng(0), ctx)
    ref = cdist(x / ctx.theta, x / ctx.theta)
    assert np.array_equal(dm, dm.T) and np.all(np.diag(dm) == 0.0)
    off = ~np.eye(25, dtype=bool)
    assert np.all(dm[off] - ref[off] > -1e-12) and np.all(dm[off] - ref[off] < 1e-7 + 1e-12)


# --- covariance ------------------------------------------------------------------------
def _covariance_reference(x, m, ctx):
    """sparse_covariance as written in gp_fit.F90: one solve with K_mm per candidate and step."""
    k = _kernel_reference(x, ctx, crude=not ctx.use_actual_gpcov)
    n = x.shape[0]
    chosen = [0]
    for _ in range(m - 1):
        kmm = k[np.ix_(chosen, chosen)].copy()
        np.fill_diagonal(kmm, 1.0 + 1.0e-6)
        score = np.empty(n)
        for i in range(n):
            km = k[chosen, i]
            score[i] = km @ np.linalg.solve(kmm, km)
        score[chosen] = np.inf
        chosen.append(int(np.argmin(score)))
    return np.array(chosen)


@pytest.mark.parametrize("ctx_name", sorted(CONTEXTS))
def test_covariance_matches_brute_force(ctx_name):
    x = _data(n=60, d=6) * 2.0
    ctx = CONTEXTS[ctx_name]
    m = 15
    np.testing.assert_array_equal(cl.select_covariance(x, m, np.random.default_rng(0), ctx),
                                  _covariance_reference(x, m, ctx))


# --- the oracle: gap_fit's deterministic methods ----------------------------------------------
_SOAP = "soap atom_sigma=0.5 central_weight=1.0 cutoff=4.0 cutoff_transition_width=1.0 l_max=8 n_max=8"
_GAP_PIECES = {  # name: (gap piece, context, n_sparse); sparse_method is filled in per run
    "soap_dot": (f"{_SOAP} covariance_type=dot_product delta=3.0 zeta=4",
                 SelectionContext(covariance_type="dot_product", delta=3.0, zeta=4.0), 40),
    "soap_ard": (f"{_SOAP} covariance_type=ard_se delta=3.0 f0=1.0 theta_uniform=0.05",
                 SelectionContext(covariance_type="ard_se", delta=3.0, f0=1.0, theta=np.array([0.05])), 30),
    "d2_ard": ("distance_2b cutoff=4.0 covariance_type=ard_se delta=1.5 f0=0.5 theta_uniform=0.7",
               SelectionContext(covariance_type="ard_se", delta=1.5, f0=0.5, theta=np.array([0.7])), 12),
}


def _run_gap_fit(gap_fit, tmp_path, quip_data, method, actual):
    import re
    import shutil
    import subprocess
    shutil.copy(quip_data / "Si.np1.xyz", tmp_path)
    pieces = [f"{piece} n_sparse={m} sparse_method={method} print_sparse_index=idx_{name}.out"
              for name, (piece, _, m) in _GAP_PIECES.items()]
    args = [gap_fit, "at_file=Si.np1.xyz", "default_sigma={0.01 1.0 0.5 0.0}", "e0_offset=2.0",
            "energy_parameter_name=dft_energy", "force_parameter_name=dft_force",
            "virial_parameter_name=dft_virial", "gap={" + " : ".join(pieces) + "}", "gp_file=gp.xml",
            "rnd_seed=1", "do_copy_atoms_file=F", "sparsify_only_no_fit=T",
            f"sparse_use_actual_gpcov={'T' if actual else 'F'}"]
    run = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    files = re.findall(r'sparseX_filename="([^"]*)"', (tmp_path / "gp.xml").read_text())
    assert len(files) == len(_GAP_PIECES)
    out = {}
    for (name, (_, _, m)), f in zip(_GAP_PIECES.items(), files):
        values = np.loadtxt(tmp_path / f).reshape(m, -1)
        index = np.loadtxt(tmp_path / f"idx_{name}.out", dtype=np.int64) - 1
        out[name] = (index, values)
    return out


@pytest.mark.parametrize("method,actual", [("covariance", False), ("covariance", True), ("pivot", False)])
def test_deterministic_methods_match_gap_fit(gap_fit, quippy, quip_data, tmp_path, method, actual):
    """covariance has no randomness in gap_fit, pivot only a 1e-7 jitter: both are reproducible exactly.

    SOAP candidates (atom order) are compared by index.  distance_2b is compared by the sparse
    points' values: gap_fit's printed indices do not follow quippy's instance order for it.
    """
    from ase.io import read
    from quippy.descriptors import Descriptor
    ref = _run_gap_fit(gap_fit, tmp_path, quip_data, method, actual)
    frames = read(str(quip_data / "Si.np1.xyz"), ":")
    for name, (_, ctx, m) in _GAP_PIECES.items():
        desc = Descriptor((_SOAP + " n_species=1 Z=14 species_Z={14}") if name.startswith("soap")
                          else "distance_2b cutoff=4.0 Z1=14 Z2=14")
        x_all = np.vstack([np.asarray(desc.calc(a).get("data", np.zeros((0, desc.dimensions()))))
                           .reshape(-1, desc.dimensions()) for a in frames])
        pool = np.nonzero(unique_mask(x_all, np.ones(len(x_all), bool), 1e-10, 1e-10))[0]
        chosen = pool[SELECTORS[method](x_all[pool], m, np.random.default_rng(0),
                                        replace(ctx, use_actual_gpcov=actual))]
        gap_index, gap_values = ref[name]
        if name.startswith("soap"):
            # the same environments (to 1e-10), whichever duplicate the filters kept
            labels = environment_labels(x_all)
            np.testing.assert_array_equal(np.sort(labels[chosen]), np.sort(labels[gap_index]), err_msg=name)
        np.testing.assert_allclose(np.sort(x_all[chosen], axis=0), np.sort(gap_values, axis=0),
                                   rtol=1e-12, atol=1e-15, err_msg=name)
