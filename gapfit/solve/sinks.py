"""The sinks that rows of the least-squares problem go into, behind one interface.

The producer (:func:`gapfit.solve.rows.kernel_row_chunks`) yields chunks of unscaled K_NM rows with
their targets y, their σ and what they are (:class:`gapfit.solve.rows.ChunkLabels`); a sink takes
each chunk by ``add(k, y, sigma, labels)`` and may scale ``k`` in place:

* ``dense``: :class:`DenseRows`, Σ^-1/2 K_NM and Σ^-1/2 y into this rank's rows of the dense A and b;
* ``streaming``: :class:`FoldRows`, the rows folded into the (M+1)² triangular factor
  (:class:`gapfit.linalg.triangular.TriangularFactor`);
* ``cache``: :class:`KernelRowCache`, the unscaled rows kept for refits, teed onto either of the
  others by :class:`Tee` (it copies the rows before the other scales them);
* :class:`Discard` drops the rows (held-out frames are only cached).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Protocol

import numpy as np

from ..linalg.triangular import TriangularFactor
from ..runtime.memory import available_memory
from ..runtime.spill import RowSpill

#: the cache stays in memory while it takes less than this share of the available memory
MEMORY_SHARE = 0.25


class RowSink(Protocol):
    """What every sink does with a chunk of rows (it may scale ``k`` in place)."""

    def add(self, k: np.ndarray, y: np.ndarray, sigma: np.ndarray, labels) -> None:
        ...


class DenseRows:
    """The dense path's sink: Σ^-1/2 K_NM and Σ^-1/2 y into this rank's rows of A and b."""

    def __init__(self, a_local: np.ndarray, b_local: np.ndarray):
        self.a_local, self.b_local = a_local, b_local
        self.rows = 0  # rows filled so far
        self.data_stats = np.zeros(2)  # rows and Σ log σ (for the log marginal likelihood)

    def add(self, k: np.ndarray, y: np.ndarray, sigma: np.ndarray, labels=None) -> None:
        n = y.size
        self.data_stats += (n, float(np.sum(np.log(sigma))))
        k /= sigma[:, None]
        self.a_local[self.rows:self.rows + n] = k
        self.b_local[self.rows:self.rows + n] = y / sigma
        self.rows += n


class FoldRows:
    """The streaming path's sink: the rows folded into a triangular factor as they come."""

    def __init__(self, factor: TriangularFactor):
        self.factor = factor

    def add(self, k: np.ndarray, y: np.ndarray, sigma: np.ndarray, labels=None) -> None:
        self.factor.add(k, y, sigma)


class KernelRowCache:
    """This rank's unscaled K_NM rows, targets, σ and σ rules: the sink refits are made from
    (:mod:`gapfit.model.refit`), teed onto the fit's own (:class:`Tee`)."""

    def __init__(self, n_columns: int, expected_rows: int = 0, in_memory: Optional[bool] = None):
        self.n_columns = int(n_columns)
        if in_memory is None:
            free = available_memory()
            in_memory = not free or 8.0 * expected_rows * n_columns < MEMORY_SHARE * free
        self.in_memory = bool(in_memory)
        self._blocks: List[np.ndarray] = []
        self._spill = None if self.in_memory else RowSpill(self.n_columns)
        self._parts: Dict[str, list] = {"y": [], "sigma": [], "kind": [], "frame": [], "n_atoms": [], "group": []}
        self.config_types: List[str] = []  # group code → config_type name
        self._k = None
        self.rows = 0

    def add(self, k: np.ndarray, y: np.ndarray, sigma: np.ndarray, labels) -> None:
        if self.in_memory:
            self._blocks.append(np.array(k, dtype=float, order="C"))
        else:
            self._spill.append(k)
        codes = []
        for name in labels.config_types:
            if name not in self.config_types:
                self.config_types.append(name)
            codes.append(self.config_types.index(name))
        pos = labels.frame_position
        parts = self._parts
        parts["y"].append(np.array(y, dtype=float))
        parts["sigma"].append(np.array(sigma, dtype=float))
        parts["kind"].append(np.asarray(labels.sigma_kind, dtype=np.int8))
        parts["frame"].append(np.asarray(labels.frames, dtype=np.int64)[pos])
        parts["n_atoms"].append(np.asarray(labels.n_atoms, dtype=np.int64)[pos])
        parts["group"].append(np.asarray(codes, dtype=np.int16)[pos])
        self.rows += y.size
        self._k = None

    def _column(self, name: str) -> np.ndarray:
        parts = self._parts[name]
        if len(parts) != 1:  # concatenated once, on first use
            self._parts[name] = [np.concatenate(parts) if parts else np.zeros(0)]
        return self._parts[name][0]

    y = property(lambda self: self._column("y"), doc="targets (e0 and core subtracted)")
    sigma = property(lambda self: self._column("sigma"), doc="σ as fitted")
    kind = property(lambda self: self._column("kind"), doc="σ rule and quantity (FrameRows.sigma_kind)")
    frame = property(lambda self: self._column("frame"), doc="frame index of every row")
    n_atoms = property(lambda self: self._column("n_atoms"), doc="atoms of every row's frame")
    group = property(lambda self: self._column("group"), doc="config_type code (config_types) of every row")

    @property
    def k(self) -> np.ndarray:
        """All rows, (rows, M): in memory, or mapped from the temporary file."""
        if self._k is None:
            if self.in_memory:
                self._k = np.concatenate(self._blocks) if self._blocks else np.zeros((0, self.n_columns))
                self._blocks = [self._k]
            else:
                self._k = self._spill.array()
        return self._k

    def blocks(self, block_bytes: int = 1 << 25):
        """Row slices of about ``block_bytes`` of K each."""
        step = max(1, block_bytes // (8 * max(self.n_columns, 1)))
        for start in range(0, self.rows, step):
            yield slice(start, min(start + step, self.rows))

    @property
    def nbytes(self) -> float:
        return 8.0 * self.rows * self.n_columns


class Tee:
    """Every chunk to ``cache`` first (unscaled), then to ``sink``."""

    def __init__(self, cache: KernelRowCache, sink: RowSink):
        self.cache, self.sink = cache, sink

    def add(self, k: np.ndarray, y: np.ndarray, sigma: np.ndarray, labels) -> None:
        self.cache.add(k, y, sigma, labels)
        self.sink.add(k, y, sigma, labels)


class Discard:
    """A sink that drops the rows (held-out frames are only cached, never solved for)."""

    def add(self, k, y, sigma, labels=None) -> None:
        pass


#: the sinks by name (``linear_solver``'s paths, and the cache)
SINKS = {"dense": DenseRows, "streaming": FoldRows, "cache": KernelRowCache}
