"""Frames to ranks: the paper's greedy balance (gap_fit's task_manager), and the rows of U in the gaps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass
class Distribution:
    """Which rank owns which frame, and which rows of U each rank holds."""

    owner: np.ndarray  # (n_frames,) rank of each frame
    frame_rows: np.ndarray  # (n_frames,) rows each frame contributes
    data_rows: np.ndarray  # (n_ranks,) data rows per rank
    u_start: np.ndarray  # (n_ranks,) first row of U held by each rank
    u_count: np.ndarray  # (n_ranks,) rows of U held by each rank

    @property
    def n_ranks(self) -> int:
        return int(self.data_rows.shape[0])

    @property
    def unified_rows(self) -> int:
        """Rows every rank's block must hold (before rounding up to the block size)."""
        return int(np.max(self.data_rows + self.u_count)) if self.n_ranks else 0


def assign_frames(frame_rows: Sequence[int], n_ranks: int) -> np.ndarray:
    """Greedy longest-first assignment: the owner rank of every frame.

    Frames are taken heaviest first (ties: later frames first, as gap_fit's stable
    ascending sort walked backwards) and each goes to the rank with the fewest
    rows so far (the lowest rank on ties).  Every rank computes the same result.
    """
    weights = np.asarray(frame_rows, dtype=np.int64)
    order = np.argsort(weights, kind="stable")[::-1]
    load = np.zeros(n_ranks, dtype=np.int64)
    owner = np.empty(weights.shape[0], dtype=np.int64)
    for f in order:  # one step per frame, no numerical work
        r = int(np.argmin(load))
        owner[f] = r
        load[r] += weights[f]
    return owner


def distribute(frame_rows: Sequence[int], n_ranks: int, n_sparse: int, owner: Optional[np.ndarray] = None) -> Distribution:
    """Frames to ranks (:func:`assign_frames`), then the M rows of U into the gaps.

    U's rows first fill each rank's gap up to the most loaded rank, then the rest
    is spread evenly (gap_fit's shared task).
    """
    weights = np.asarray(frame_rows, dtype=np.int64)
    if owner is None:
        owner = assign_frames(weights, n_ranks)
    load = np.bincount(owner, weights=weights, minlength=n_ranks).astype(np.int64)
    unified = int(load.max()) if n_ranks else 0
    padding = unified - load
    remainder = max(n_sparse - int(padding.sum()), 0)
    n_split, extra = divmod(remainder, n_ranks)
    u_start = np.zeros(n_ranks, dtype=np.int64)
    u_count = np.zeros(n_ranks, dtype=np.int64)
    offset = 0
    for r in range(n_ranks):
        want = int(padding[r]) + n_split + (1 if r < extra else 0)
        take = min(want, n_sparse - offset)
        u_start[r], u_count[r] = offset, take
        offset += take
    return Distribution(owner=owner, frame_rows=weights, data_rows=load, u_start=u_start, u_count=u_count)
