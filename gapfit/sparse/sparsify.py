"""Choosing sparse points (gap_fit's ``sparse_method``; GAP ``gp_fit.F90``, ``clustering.F90``).

All candidates of a coordinate are its descriptor instances in data order
(frames in file order, instances in QUIP's order).  Before any selection,
duplicates are excluded as gap_fit does (:mod:`gapfit.sparse.dedup`).

Selected indices are sorted ascending, so sparse points follow data order.  All
random choices use one explicit :class:`numpy.random.Generator` (``rnd_seed``);
gap_fit's Fortran random stream is not reproduced, so ``random`` (and the random
fill of ``uniform``) choose different, equally valid points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..options.syntax import split_fields
from ..runtime.quip_random import QuipRandom  # noqa: F401  (re-exported: its historical home)
from ..runtime.spill import drop_pages, take_rows
from . import clustering
from .dedup import unique_mask


def _nint(t: np.ndarray) -> np.ndarray:
    """Fortran NINT: round half away from zero."""
    r = np.round(t)
    frac = t - np.trunc(t)
    half = np.abs(frac) == 0.5
    r[half] = np.trunc(t[half]) + np.sign(t[half])
    return r.astype(np.int64)


def _row_blocks(x: np.ndarray, block_rows: int):
    """(start, rows) of x a block at a time; a file-backed x's pages leave memory after each."""
    for start in range(0, x.shape[0], block_rows):
        yield start, np.asarray(x[start:start + block_rows])
        drop_pages(x)


class _UniformGrid:
    """gap_fit's ``uniform`` grid: ⌈m^(1/d)⌉ bins per dimension over [min, max] of the candidates;
    the bin of a value is NINT((x − min)/range·(n_grid − 1)), bins are numbered row-major from the
    first dimension."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, m: int):
        d = lower.size
        self.lower, self.x_range = lower, upper - lower
        self.n_grid = int(np.ceil(float(m) ** (1.0 / d)))
        if d * np.log(max(self.n_grid, 2)) > np.log(2.0 ** 63):
            raise ConfigError(f"sparse_method=uniform cannot grid a {d}-dimensional descriptor "
                              f"({self.n_grid}^{d} bins); use cur_points or random")
        self.n_bins = self.n_grid ** d
        self.weights = self.n_grid ** np.arange(d, dtype=np.int64)

    def bins(self, rows: np.ndarray) -> np.ndarray:
        """The flat bin index of each row (row by row: independent of how the rows are blocked)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (rows - self.lower) / self.x_range * (self.n_grid - 1)
        t[:, self.x_range == 0] = 0.0
        return _nint(t) @ self.weights


def select_uniform(x: np.ndarray, m: int, rng: np.random.Generator, block_rows: int = 1 << 16) -> np.ndarray:
    """gap_fit's ``uniform``: the first point of each new histogram bin in data order, then random fill.

    Two passes over x a block at a time (its range; then each occupied bin's first member and
    count), so that memory grows with the occupied bins, not with the candidates; the random
    fill recomputes the bins of the rows it draws.
    """
    n, d = x.shape
    if n < m:
        raise DataError(f"uniform sparsification: {n} candidates < {m} sparse points")
    lower, upper = np.full(d, np.inf), np.full(d, -np.inf)
    for _, rows in _row_blocks(x, block_rows):
        lower, upper = np.minimum(lower, rows.min(axis=0)), np.maximum(upper, rows.max(axis=0))
    grid = _UniformGrid(lower, upper, m)
    # occupied bins (sorted), the first row in each and how many rows each holds
    occupied, first, count = (np.zeros(0, dtype=np.int64) for _ in range(3))
    for start, rows in _row_blocks(x, block_rows):
        b, f, c = np.unique(grid.bins(rows), return_index=True, return_counts=True)
        pos = np.searchsorted(occupied, b)
        seen = np.zeros(b.size, dtype=bool)
        inside = pos < occupied.size
        seen[inside] = occupied[pos[inside]] == b[inside]
        count[pos[seen]] += c[seen]
        new = ~seen
        occupied, first, count = (np.insert(a, pos[new], v[new]) for a, v in ((occupied, b), (first, f + start),
                                                                                  (count, c)))
    chosen = list(np.sort(first)[:m])
    if len(chosen) < m:
        # gap_fit's random fill: a random bin (of all n_grid^d), skipped if empty or used up,
        # then random points until one of that bin not yet chosen turns up
        taken = np.zeros(occupied.size, dtype=np.int64)
        np.add.at(taken, np.searchsorted(occupied, grid.bins(np.asarray(x[np.sort(chosen)]))), 1)
        uniform = getattr(rng, "quip_uniform", None) or (lambda: float(rng.random()))
        while len(chosen) < m:
            b = int(np.ceil(uniform() * grid.n_bins)) - 1
            j = int(np.searchsorted(occupied, b))
            if j == occupied.size or occupied[j] != b or taken[j] == count[j]:
                continue
            picked = np.asarray(chosen)

            def in_bin_not_chosen(idx):
                return (grid.bins(np.asarray(x[idx])) == b) & ~np.isin(idx, picked)
            chosen.append(_first_draw(rng, n, in_bin_not_chosen))
            taken[j] += 1
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _first_draw(rng, n: int, accept) -> int:
    """The first random candidate index (⌈u n⌉ − 1) that ``accept`` takes, drawing one by one.

    QUIP's stream is drawn in batches and then advanced by exactly the draws used, so a rare
    bin costs a few array operations instead of thousands of Python calls.
    """
    if not hasattr(rng, "quip_peek"):
        while True:
            i = int(np.ceil(float(rng.random()) * n)) - 1
            if accept(np.array([i]))[0]:
                return i
    batch = 64
    while True:
        idx = np.ceil(rng.quip_peek(batch) * n).astype(np.int64) - 1
        ok = accept(idx)
        if ok.any():
            j = int(np.argmax(ok))
            rng.quip_skip(j + 1)
            return int(idx[j])
        rng.quip_skip(batch)
        batch = min(4 * batch, 1 << 20)


def select_random(n: int, m: int, rng) -> np.ndarray:
    """m distinct uniform random indices (gap_fit uses the Fortran intrinsic stream: not reproduced)."""
    return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)


def _read_tokens(path: str, where: str) -> List[str]:
    """The whitespace-separated words of a sparse_file, with one-line errors."""
    try:
        with open(path) as fh:
            return fh.read().split()
    except FileNotFoundError:
        raise ConfigError(f"sparse_file '{path}' {where} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"sparse_file '{path}' {where} cannot be read: {exc.strerror}") from None


def read_sparse_file(path: str, d: int, where: str):
    """``sparse_method=file``: per point one cutoff then d values (any whitespace)."""
    numbers = _read_tokens(path, where)
    try:
        values = np.array([float(v.replace("d", "e").replace("D", "E")) for v in numbers])
    except ValueError:
        raise ConfigError(f"sparse_file '{path}' {where} contains something that is not a number") from None
    if values.size == 0 or values.size % (d + 1):
        hint = ""
        if values.size and values.size % d == 0:
            hint = (" (it looks like a gp_file.sparseX.* file without cutoffs: convert it with "
                    "scripts/gap_prepare_sparsex_input.py)")
        raise ConfigError(f"sparse_file '{path}' {where} has {values.size} numbers, not a multiple of "
                          f"dimensions+1 = {d + 1} (one cutoff then {d} values per point){hint}")
    table = values.reshape(-1, d + 1)
    return table[:, 1:].copy(), table[:, 0].copy()


def read_index_file(path: str, n_candidates: int, where: str) -> np.ndarray:
    """``sparse_method=index_file``: 1-based indices into the coordinate's instances."""
    tokens = _read_tokens(path, where)
    try:
        idx = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        raise ConfigError(f"sparse_file '{path}' {where} must hold integer indices") from None
    if idx.size == 0:
        raise ConfigError(f"sparse_file '{path}' {where} is empty")
    bad = idx[(idx < 1) | (idx > n_candidates)]
    if bad.size:
        raise ConfigError(f"sparse_file '{path}' {where}: index {bad[0]} is outside 1..{n_candidates} "
                          f"(the number of descriptor instances)")
    return idx - 1


@dataclass
class SparseChoice:
    """The sparse points of one coordinate."""

    x: np.ndarray  # (M, d)
    cutoff: np.ndarray  # (M,)
    index: Optional[np.ndarray]  # 0-based indices into the candidates, None for file input


def choose_sparse_points(spec, x: Optional[np.ndarray], cutoff: Optional[np.ndarray], config_type: Optional[np.ndarray],
                         config_type_names: Sequence[str], d: int, rng: np.random.Generator, log=print,
                         theta: Optional[np.ndarray] = None, use_actual_gpcov: bool = False,
                         permutations: Optional[np.ndarray] = None, gap_fit_order: bool = False) -> SparseChoice:
    """Select one coordinate's sparse points with ``spec.gp.sparse_method``.

    ``x``, ``cutoff`` and ``config_type`` (index into ``config_type_names``) are
    all candidate instances in data order (None for ``file``, which needs none).
    """
    gp = spec.gp
    method = gp.sparse_method
    where = spec.where
    if method == "file":
        sx, sc = read_sparse_file(gp.sparse_file, d, where)
        if gp.n_sparse and gp.n_sparse != sx.shape[0]:
            raise ConfigError(f"n_sparse={gp.n_sparse} {where} does not match the {sx.shape[0]} points "
                              f"in sparse_file '{gp.sparse_file}'")
        return SparseChoice(sx, sc, None)
    n_all = x.shape[0]
    if n_all == 0:  # no environments: the caller decides (an error, or a coordinate left out)
        return SparseChoice(np.zeros((0, d)), np.zeros(0), np.zeros(0, dtype=np.int64))
    if method == "index_file":
        index = read_index_file(gp.sparse_file, n_all, where)
        if gp.n_sparse and gp.n_sparse != index.size:
            raise ConfigError(f"n_sparse={gp.n_sparse} {where} does not match the {index.size} indices "
                              f"in sparse_file '{gp.sparse_file}'")
        index = np.sort(index)
        return SparseChoice(np.array(x[index]), cutoff[index], index)
    candidate = unique_mask(x, np.ones(n_all, dtype=bool), gp.unique_hash_tolerance,
                            gp.unique_descriptor_tolerance, gap_fit_order)
    n_x = int(candidate.sum())
    if method == "none":
        index = np.nonzero(candidate)[0]
        log(f"  sparse_method=none: using all {index.size} distinct instances of descriptor {spec.index}")
        return SparseChoice(np.array(x[index]), cutoff[index], index)
    selector = _SELECTORS.get(method)
    if selector is None:
        if method not in clustering.SELECTORS:
            raise ConfigError(f"sparse_method={method} {where} is not implemented in gapfit")
        context = clustering.SelectionContext.from_gp(gp, theta=theta, use_actual_gpcov=use_actual_gpcov, log=log,
                                                      permutations=permutations)
        method_fn = clustering.SELECTORS[method]

        def selector(xs, m, rng_):
            return np.sort(method_fn(xs, m, rng_, context))
    groups: List[np.ndarray] = []
    if gp.n_sparse > 0:
        m = gp.n_sparse
        if n_x < m:
            log(f"  warning: descriptor {spec.index} has {n_x} distinct instances, fewer than n_sparse={m}; "
                f"using {n_x}")
            m = n_x
        pool = np.nonzero(candidate)[0]
        groups.append(pool[selector(x if pool.size == n_all else take_rows(x, pool), m, rng)])
    else:
        per_type = parse_config_type_n_sparse(gp.config_type_n_sparse, where)
        for name, m in per_type.items():
            if m == 0:
                continue
            if name in config_type_names:
                t = config_type_names.index(name)
                pool = np.nonzero(candidate & (config_type == t))[0]
            else:
                pool = np.zeros(0, dtype=np.int64)
            if pool.size < m:
                log(f"  warning: config_type '{name}' of descriptor {spec.index} has {pool.size} distinct "
                    f"instances, fewer than {m}; using {pool.size}")
                m = pool.size
            if m:
                groups.append(pool[selector(take_rows(x, pool), m, rng)])
    index = np.sort(np.concatenate(groups)) if groups else np.zeros(0, dtype=np.int64)
    if index.size == 0:
        raise DataError(f"descriptor {spec.index} ({' '.join(spec.piece.split())}) has no sparse points")
    return SparseChoice(np.array(x[index]), cutoff[index], index)


def parse_config_type_n_sparse(text: str, where: str) -> Dict[str, int]:
    fields = split_fields(text, separators=" :;", what="config_type_n_sparse")
    if len(fields) % 2:
        raise ConfigError(f"config_type_n_sparse {where} must be pairs {{type:count:...}}; got {text!r}")
    out: Dict[str, int] = {}
    for k in range(0, len(fields), 2):
        try:
            count = int(fields[k + 1])
        except ValueError:
            raise ConfigError(f"config_type_n_sparse {where}: the count of '{fields[k]}' must be an integer; "
                              f"got {fields[k + 1]!r}") from None
        if count < 0:
            raise ConfigError(f"config_type_n_sparse {where}: the count of '{fields[k]}' is negative")
        out[fields[k]] = count
    return out


def _uniform(x, m, rng):
    return select_uniform(x, m, rng)


def _random(x, m, rng):
    return select_random(x.shape[0], m, rng)


_SELECTORS = {"uniform": _uniform, "random": _random}


def choose_seed(seed: Optional[int]) -> int:
    """The seed of all random choices: ``rnd_seed`` when positive, else one drawn from the operating
    system's entropy (gap_fit takes one from the clock).  A drawn seed is written into the model's
    command line and ``report_file``, so that the model's own command line fits it again."""
    if seed is None or seed <= 0:
        return int(np.random.SeedSequence().entropy % (2 ** 31 - 2)) + 1
    return int(seed)
