"""Sparse-point methods: index_file and file reproduce gap_fit's references; none, random,
uniform internals; print_sparse_index; sparsify_only_no_fit."""

import json
import shlex
import shutil

import numpy as np
import pytest

from gapfit import GapFit
from gapfit.errors import ModelError
from gapfit.model.gap_xml import read_model
from gapfit.sparse.dedup import quip_heap_sort_order, unique_mask
from gapfit.sparse.sparsify import QuipRandom, select_uniform

from conftest import QUIP_TESTS, run_gapfit


def _ref(name):
    with open(QUIP_TESTS / "reference" / f"{name}.json") as fh:
        return json.load(fh)


def _check(model, ref, tol_alpha=1e-5, tol_x=1e-8):
    for c, rc in zip(model.coordinates, ref["coords"]):
        alpha = np.array(rc["alpha"])
        x = np.array(rc["sparsex"]).reshape(alpha.size, -1)
        assert np.abs(c.sparse_x - x).max() < tol_x
        assert np.abs(c.alpha - alpha).max() < tol_alpha


def test_index_file_reproduces_reference(tmp_path):
    ref = _ref("Si.distance_2b.uniform")
    (tmp_path / "sparse_index.inp").write_text("\n".join(str(i) for i in ref["index"][0]) + "\n")
    config = ref["config"].replace("sparse_method=uniform", "sparse_method=index_file sparse_file=sparse_index.inp")
    shutil.copy(QUIP_TESTS / "Si.np1.xyz", tmp_path)
    proc = run_gapfit(shlex.split(config), tmp_path)
    assert proc.returncode == 0, proc.stderr
    _check(read_model(str(tmp_path / "gp.xml")), ref)
    assert (tmp_path / "sparse_index.out").read_text().split() == [str(i) for i in ref["index"][0]]


def test_file_reproduces_reference(tmp_path):
    ref = _ref("SiC.distance_2b.uniform")
    config = ref["config"]
    for k, rc in enumerate(ref["coords"]):
        lines = []
        x = np.array(rc["sparsex"]).reshape(len(rc["alpha"]), -1)
        for cut, vec in zip(rc["cutoff"], x):
            lines.append(repr(float(cut)))
            lines.extend(repr(float(v)) for v in vec)
        (tmp_path / f"sparse{k}.inp").write_text("\n".join(lines) + "\n")
    z = [(14, 14), (14, 6), (6, 6)]
    gap = " : ".join(f"distance_2b covariance_type=ard_se cutoff=6.0 delta=1.0 theta_uniform=0.1 add_species=F "
                     f"Z1={a} Z2={b} sparse_method=file sparse_file=sparse{k}.inp" for k, (a, b) in enumerate(z))
    start = config.index("gap={")
    end = config.index("}}", start) + 2
    config = config[:start] + "gap={" + gap + "}" + config[end:]
    shutil.copy(QUIP_TESTS / "SiC.np1.xyz", tmp_path)
    proc = run_gapfit(shlex.split(config), tmp_path)
    assert proc.returncode == 0, proc.stderr
    _check(read_model(str(tmp_path / "gp.xml")), ref)


def test_file_with_sparsex_file_gives_hint(tmp_path):
    (tmp_path / "plain.sparseX").write_text("1.0\n2.0\n3.0\n")
    shutil.copy(QUIP_TESTS / "Si.np1.xyz", tmp_path)
    proc = run_gapfit(["at_file=Si.np1.xyz", "energy_parameter_name=dft_energy", "force_parameter_name=dft_force",
                       "default_sigma={0.01 1 0.5 0}",
                       "gap={distance_2b cutoff=4 covariance_type=ard_se delta=1 theta_uniform=0.5 "
                       "sparse_method=file sparse_file=plain.sparseX}", "gp_file=gp.xml"], tmp_path)
    assert proc.returncode == 2
    assert "gap_prepare_sparsex_input" in proc.stderr


SI_OPTIONS = dict(energy_parameter_name="dft_energy", force_parameter_name="dft_force",
                  virial_parameter_name="dft_virial", default_sigma=[0.01, 1.0, 0.5, 0.0], sparse_jitter=1e-3,
                  quiet=True)


def test_none_uses_all_distinct_instances():
    fit = GapFit(gap="distance_2b cutoff=3.0 covariance_type=ard_se delta=1 theta_uniform=0.5 sparse_method=none",
                 **SI_OPTIONS).fit(str(QUIP_TESTS / "Si.np1.xyz"))
    x = fit.sparse_x_[0][:, 0]
    assert x.size == np.unique(x).size  # duplicates (each pair appears twice) were removed
    assert x.size > 20


def test_random_is_reproducible_and_distinct():
    gap = "distance_2b cutoff=4.0 covariance_type=ard_se delta=1 theta_uniform=0.5 n_sparse=30 sparse_method=random"
    a = GapFit(gap=gap, rnd_seed=7, **SI_OPTIONS).fit(str(QUIP_TESTS / "Si.np1.xyz"))
    b = GapFit(gap=gap, rnd_seed=7, **SI_OPTIONS).fit(str(QUIP_TESTS / "Si.np1.xyz"))
    c = GapFit(gap=gap, rnd_seed=8, **SI_OPTIONS).fit(str(QUIP_TESTS / "Si.np1.xyz"))
    assert np.array_equal(a.sparse_index_[0], b.sparse_index_[0])
    assert not np.array_equal(a.sparse_index_[0], c.sparse_index_[0])
    assert np.unique(a.sparse_index_[0]).size == 30


def test_quip_random_stream():
    # Park–Miller minimal standard: from seed 1 the 10000th value is 1043618065 (Park & Miller 1988)
    r = QuipRandom.__new__(QuipRandom)
    r.idum = 1
    vals = r.quip_uniform(10000) * QuipRandom.M
    assert int(round(vals[-1])) == 1043618065
    r2 = QuipRandom.__new__(QuipRandom)
    r2.idum = 1
    assert all(abs(r2.quip_uniform() * QuipRandom.M - v) < 0.5 for v in vals[:5])


def test_heap_sort_order_sorts_and_is_deterministic():
    keys = np.round(np.random.default_rng(0).random(500), 2)
    order = quip_heap_sort_order(keys)
    assert np.all(np.diff(keys[order]) >= 0)
    assert np.array_equal(order, quip_heap_sort_order(keys))


def test_compiled_heap_sort_keeps_the_tie_order():
    """The compiled sort (numba) and the Python one put ties in the same (QUIP's) order."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(1)
    for n in (2, 7, 500, 30000):
        keys = np.round(rng.random(n) * max(n // 5, 1))  # many ties
        python, compiled = quip_heap_sort_order(keys, compiled=False), quip_heap_sort_order(keys, compiled=True)
        assert np.array_equal(python, compiled), n
        # ties are not in index order (the reason the sort is QUIP's own, not NumPy's)
        assert not np.array_equal(compiled, np.argsort(keys, kind="stable")) or n < 7


def test_unique_mask_drops_earlier_duplicate_in_sorted_order():
    """gap_fit's own rule (gap_fit_order: descriptors whose bits are the same everywhere)."""
    x = np.array([[1.0], [2.0], [1.0], [3.0], [1.0 + 1e-12]])
    keep = unique_mask(x, np.ones(5, dtype=bool), 1e-10, 1e-10, gap_fit_order=True)
    assert keep.sum() == 3 and keep[1] and keep[3]
    assert list(unique_mask(x, np.ones(5, dtype=bool), 1e-10, 1e-10)) == [True, True, False, True, False]


def test_unique_mask_does_not_hang_on_the_last_bit():
    """Issue 18: two environments with the same L1 norm (the species channels swapped, as InP's In and
    P sites), 12 copies of each, every copy moved by random ±1-ulp rounding.  gap_fit's rule compares
    only neighbours in the sorted norms, so how the copies interleave decides how many survive; the
    filter keeps exactly the first copy in data order of each environment, whatever the rounding."""
    a = np.array([0.125, 0.5, 0.25, 0.0625, 0.0625])
    b = a[[1, 0, 2, 4, 3]]  # same norm, another environment
    base = np.array([a, b] * 12)
    base = np.vstack([base, [[1.0, 0, 0, 0, 0], [0.0, 1, 0, 0, 0]]])  # and two distinct ones
    masks, gap_fit_counts = set(), set()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x = base * (1.0 + rng.choice([-1.0, 0.0, 1.0], base.shape) * 2.0 ** -52)
        keep = unique_mask(x, np.ones(len(x), bool), 1e-10, 1e-10)
        masks.add(tuple(np.flatnonzero(keep)))
        gap_fit_counts.add(int(unique_mask(x, np.ones(len(x), bool), 1e-10, 1e-10, gap_fit_order=True).sum()))
    assert masks == {(0, 1, 24, 25)}
    assert len(gap_fit_counts) > 1, gap_fit_counts  # the rounding does move gap_fit's rule
    # a candidate mask: the first *candidate* of each environment survives
    candidate = np.ones(len(base), bool)
    candidate[[0, 3]] = False
    assert list(np.flatnonzero(unique_mask(base, candidate, 1e-10, 1e-10))) == [1, 2, 24, 25]


def test_sparse_points_do_not_depend_on_the_blas_kernels(tmp_path):
    """Issue 18: soap's values differ in their last bits between OpenBLAS kernel families, and the
    duplicate filter used to decide on those bits (InP: 113 of 200 cur_points shared between Haswell's
    and SkylakeX's kernels).  The same sparse points, by index, under the native kernels and a second
    family (tests/openblas_kernels.py), for soap (cur_points) and distance_2b (uniform)."""
    from conftest import DATA, mpi_env
    from openblas_kernels import kernel_environments
    gap = ("gap={soap l_max=4 n_max=6 atom_sigma=0.5 cutoff=5.0 cutoff_transition_width=1.0 central_weight=1.0 "
           "n_species=2 species_Z={15 49} covariance_type=dot_product zeta=2 delta=0.1 n_sparse=200 "
           "sparse_method=cur_points print_sparse_index=soap_index.txt : distance_2b cutoff=5.0 "
           "covariance_type=ard_se delta=1.0 theta_uniform=1.0 n_sparse=20 sparse_method=uniform "
           "print_sparse_index=pair_index.txt}")
    chosen = []
    for k, env in enumerate(kernel_environments()):
        run = tmp_path / f"run{k}"
        run.mkdir()
        shutil.copy(DATA / "inp_snap" / "InP_subset.xyz", run)
        proc = run_gapfit(["at_file=InP_subset.xyz", gap, "energy_parameter_name=energy", "force_parameter_name=forces",
                           "default_sigma={0.002 0.1 0.05 0.0}", "e0_method=average", "rnd_seed=3",
                           "gp_file=sparse.xml", "sparsify_only_no_fit=T"], run, env={**mpi_env(), **env})
        assert proc.returncode == 0, proc.stderr
        chosen.append((env["GAPFIT_TEST_KERNELS"], [(run / f).read_text().splitlines() for f in ("soap_index.txt",
                                                                                                  "pair_index.txt")]))
    print("kernel families:", [name for name, _ in chosen])
    for name, (soap, pair) in chosen:  # add_species: a soap coordinate per centre, a pair one per species pair
        assert [len(set(line.split())) for line in soap] == [200, 200], name
        assert [len(set(line.split())) for line in pair] == [20, 20, 20], name
    for name, (soap, pair) in chosen[1:]:
        for k, (a, b) in enumerate(zip(soap, chosen[0][1][0])):
            shared = len(set(a.split()) & set(b.split()))
            print(f"soap coordinate {k + 1}: {shared} of 200 sparse points shared by {chosen[0][0]} and {name}")
        assert soap == chosen[0][1][0] and pair == chosen[0][1][1]


def test_uniform_first_point_per_bin():
    x = np.array([[0.0], [0.05], [0.5], [0.52], [1.0], [0.26]])
    idx = select_uniform(x, 3, QuipRandom(1))
    assert list(idx) == [0, 2, 4]


def _uniform_in_memory(x, m, rng):
    """``uniform`` from its definition, on the whole array at once: the reference for the blockwise one."""
    n, d = x.shape
    lower, x_range = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
    n_grid = int(np.ceil(float(m) ** (1.0 / d)))
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (x - lower) / x_range * (n_grid - 1)
    t[:, x_range == 0] = 0.0
    r = np.where(np.abs(t - np.trunc(t)) == 0.5, np.trunc(t) + np.sign(t), np.round(t))  # Fortran NINT
    flat = r.astype(np.int64) @ (n_grid ** np.arange(d, dtype=np.int64))
    chosen = list(np.sort(np.unique(flat, return_index=True)[1])[:m])
    while len(chosen) < m:
        b = int(np.ceil(rng.quip_uniform() * n_grid ** d)) - 1
        members = np.nonzero(flat == b)[0]
        if members.size == 0 or np.isin(members, chosen).all():
            continue
        while True:
            i = int(np.ceil(rng.quip_uniform() * n)) - 1
            if flat[i] == b and i not in chosen:
                chosen.append(i)
                break
    return np.sort(np.asarray(chosen))


@pytest.mark.parametrize("d, m", [(1, 20), (3, 100), (2, 7)])
def test_uniform_in_blocks_is_uniform_in_memory(d, m):
    """The blockwise ``uniform`` (two passes; bins recomputed for the random fill), on disk and in
    memory, with blocks of 37 rows, chooses what the whole-array definition chooses, random fill included."""
    from gapfit.runtime.spill import RowSpill
    rng = np.random.default_rng(d)
    x = np.round(rng.normal(size=(3000, d)) ** 3, 1)  # a few crowded bins: the random fill is needed
    x[100:400] = x[0]
    spill = RowSpill(d)
    spill.append(x)
    for xs in (x, spill.array()):
        for seed in (1, 2):
            blockwise = select_uniform(xs, m, QuipRandom(seed), block_rows=37)
            assert np.array_equal(blockwise, _uniform_in_memory(x, m, QuipRandom(seed))), (d, m, seed)
            assert np.unique(blockwise).size == m


def test_sparsify_only_no_fit(tmp_path):
    fit = GapFit(gap="distance_2b cutoff=4.0 covariance_type=ard_se delta=1 theta_uniform=0.5 n_sparse=10 "
                     "sparse_method=uniform", sparsify_only_no_fit=True, gp_file=str(tmp_path / "s.xml"),
                 **SI_OPTIONS).fit(str(QUIP_TESTS / "Si.np1.xyz"))
    model = read_model(str(tmp_path / "s.xml"))
    assert not model.fitted
    assert np.all(model.coordinates[0].alpha == 0) and model.coordinates[0].sparse_x.shape == (10, 1)
    from gapfit.model.calculator import GapCalculator
    with pytest.raises(ModelError, match="not been fitted"):
        GapCalculator(str(tmp_path / "s.xml"))
    assert 'fitted="F"' in (tmp_path / "s.xml").read_text()
    assert fit.files_


def test_candidates_on_disk_choose_what_memory_chooses():
    """Spilled candidates (gapfit.runtime.spill: a temporary file read a block at a time) give the same
    duplicate filter, CUR choice and sparse points as the same candidates in memory."""
    from gapfit.sparse import clustering as cl
    from gapfit.runtime.spill import RowSpill, drop_pages, file_backed, take_rows
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 40))
    x[1500:1800] = x[:300]  # duplicates: the filter's pool is not every row, so rows are taken
    spill = RowSpill(40)
    for start in range(0, 3000, 700):  # appended in pieces, as frames come
        spill.append(x[start:start + 700])
    on_disk = spill.array()
    assert file_backed(on_disk) and not file_backed(x) and np.array_equal(on_disk, x)
    mask_mem = unique_mask(x, np.ones(3000, bool), 1e-10, 1e-10)
    mask_disk = unique_mask(on_disk, np.ones(3000, bool), 1e-10, 1e-10)
    assert np.array_equal(mask_mem, mask_disk) and mask_mem.sum() == 2700
    pool = np.nonzero(mask_mem)[0]
    taken = take_rows(on_disk, pool, block_bytes=40 * 8 * 128)
    assert file_backed(taken) and np.array_equal(taken, x[pool])
    for seed in range(3):
        a = cl.select_cur_points(x[pool], 50, np.random.default_rng(seed))
        b = cl.select_cur_points(taken, 50, np.random.default_rng(seed))
        assert np.array_equal(a, b)
    drop_pages(on_disk)  # a no-op on the values
    assert np.array_equal(on_disk[2999], x[2999])


def test_coordinates_sharing_a_pass_choose_the_same_points(monkeypatch):
    """Consecutive soap coordinates share a pass over the data when their candidates fit PASS_BYTES
    (gapfit.sparse.candidates.candidate_passes): the same sparse points, bit for bit, as one pass each."""
    from ase.io import read
    from conftest import DATA
    from gapfit.sparse import candidates
    frames = read(str(DATA / "inp_snap" / "InP_subset.xyz"), ":")
    options = dict(gap="distance_2b cutoff=5.0 covariance_type=ard_se delta=1.0 theta_uniform=1.0 n_sparse=15 "
                       "sparse_method=uniform : soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=4.0 "
                       "cutoff_transition_width=0.5 central_weight=1.0 n_species=2 species_Z={15 49} "
                       "covariance_type=dot_product delta=0.1 zeta=2 n_sparse=40 sparse_method=cur_points",
                   energy_parameter_name="energy", force_parameter_name="forces", virial_parameter_name="virial",
                   e0_method="average", default_sigma=[0.002, 0.1, 0.05, 0.0], sparse_jitter=1e-8, rnd_seed=4,
                   training_errors=False, quiet=True)
    groups = []
    real = candidates.candidate_passes
    monkeypatch.setattr(candidates, "candidate_passes", lambda *a, **k: groups.append(real(*a, **k)) or groups[-1])
    shared = GapFit(**options).fit(frames)
    monkeypatch.setattr(candidates, "PASS_BYTES", 0)
    alone = GapFit(**options).fit(frames)
    assert groups == [[[0, 1, 2, 3, 4]], [[0, 1, 2], [3], [4]]]  # 3 pairs, then a soap per species
    for a, b in zip(shared.model_.coordinates, alone.model_.coordinates):
        assert np.array_equal(a.sparse_x, b.sparse_x)
    for a, b in zip(shared.alpha_, alone.alpha_):
        assert np.array_equal(a, b)
