"""Choosing σ, δ and sparse_jitter: refit settings, grid scans and an optimiser over cached kernel
rows (:mod:`gapfit.model.refit`).

The objective of a scan is either the log marginal likelihood of the training data (maximised),
or a validation RMSE (minimised): on held-out frames, or by k-fold cross-validation over the
training frames (each fold is left out of the factor in turn and predicted; the RMSEs are
pooled over the folds).  Every setting costs one QR per fold; descriptors and kernel rows are
never recomputed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..config.refit_keys import REFIT_KEYS, Settings, apply_refit_keys, scalar_value
from ..errors import ConfigError, NumericalError

OBJECTIVES = ("likelihood", "energy", "forces", "virial")


def base_settings(problem) -> Settings:
    config = problem.ctx.config
    return Settings(default_sigma=list(config.targets.default_sigma),
                    config_type_sigma=config.targets.config_type_sigma, deltas=list(problem.deltas),
                    sparse_jitter=float(config.solver.sparse_jitter))


def settings(problem, base: Settings, **keys) -> Settings:
    """``base`` with the refit keys changed (ConfigError naming a bad key or value), δ checked against the
    fit's kernels."""
    out = apply_refit_keys(base, **keys)
    if keys.get("delta") is not None:
        problem.check_deltas(out.deltas)
    return out


def refit_model(problem, model, chosen: Settings):
    """(the refitted GapModel, gapfit.model.refit.Solved): collective."""
    solved = problem.solve(chosen.table(), chosen.deltas, chosen.sparse_jitter)
    coordinates = []
    for c, cm, delta in zip(problem.ctx.coords, model.coordinates, chosen.deltas):
        coordinates.append(replace(cm, alpha=np.array(solved.alpha[c.column:c.column + c.n_sparse]), delta=delta))
    line = (model.command_line + " " + chosen.words()).strip()
    offsets = problem.ctx.offsets
    e0 = offsets.e0(problem.ctx.e0, solved.alpha) if offsets is not None else model.e0
    return replace(model, coordinates=coordinates, command_line=line, e0=e0), solved


def grid_points(grid: Dict[str, Sequence]) -> List[Dict[str, object]]:
    """The Cartesian product of a {key: [values]} grid, as a list of {key: value}."""
    if not isinstance(grid, dict) or not grid:
        raise ConfigError("scan: the grid is a dict {key: [values, ...]} of refit keys")
    keys = list(grid)
    unknown = [k for k in keys if k not in REFIT_KEYS]
    if unknown:
        raise ConfigError(f"scan: unknown key '{unknown[0]}' (the keys are {', '.join(REFIT_KEYS)})")
    return [dict(zip(keys, values)) for values in itertools.product(*(list(grid[k]) for k in keys))]


class Objective:
    """Evaluates settings: the log marginal likelihood, and validation RMSEs (held-out or k-fold)."""

    def __init__(self, problem, objective: Optional[str] = None, validation=None, folds: Optional[int] = None,
                 seed: int = 0):
        if validation is not None and folds:
            raise ConfigError("scan: give validation frames or folds, not both")
        objective = objective or ("likelihood" if validation is None and not folds else "forces")
        if objective not in OBJECTIVES:
            raise ConfigError(f"scan: objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")
        if objective != "likelihood" and validation is None and not folds:
            raise ConfigError(f"scan: objective '{objective}' needs validation frames or folds=k")
        self.problem, self.name = problem, objective
        self.validation = problem.rows_of(validation) if validation is not None else None
        self.folds = None
        if folds:
            folds = int(folds)
            frames = np.unique(problem.cache.frame)
            if problem.comm.size > 1:
                frames = np.unique(np.concatenate(problem.comm.allgather(frames)))
            if not 2 <= folds <= frames.size:
                raise ConfigError(f"scan: folds must be between 2 and the {frames.size} training frames; got {folds}")
            order = np.random.default_rng(seed).permutation(frames)
            self.folds = np.array_split(order, folds)

    def __call__(self, chosen: Settings) -> dict:
        """{log_likelihood, energy_rmse, forces_rmse, virial_rmse (validation), objective (to minimise)}."""
        problem = self.problem
        solved = problem.solve(chosen.table(), chosen.deltas, chosen.sparse_jitter)
        row = {"log_likelihood": solved.log_likelihood}
        if self.validation is not None:
            overall = problem.errors(self.validation, solved)["overall"]
            row.update({f"{q}_rmse": overall[q]["rmse"] for q in ("energy", "forces", "virial")})
        elif self.folds is not None:
            pooled = np.zeros((3, 2))
            for fold in self.folds:
                held = problem.solve(chosen.table(), chosen.deltas, chosen.sparse_jitter, exclude_frames=fold)
                overall = problem.errors(problem.cache, held, only_frames=fold)["overall"]
                for k, q in enumerate(("energy", "forces", "virial")):
                    if overall[q]["n"]:
                        pooled[k] += (overall[q]["n"], overall[q]["n"] * overall[q]["rmse"] ** 2)
            row.update({f"{q}_rmse": (math.sqrt(pooled[k, 1] / pooled[k, 0]) if pooled[k, 0] else None)
                        for k, q in enumerate(("energy", "forces", "virial"))})
        value = -solved.log_likelihood if self.name == "likelihood" else row[f"{self.name}_rmse"]
        row["objective"] = float("inf") if value is None else float(value)
        return row


#: objectives closer than this fraction of the best one's size are a tie, which the order of the
#: points settles: far above their rounding (a Si likelihood scan differed by 4e-14 relative between
#: BLAS kernel families, and picked another sparse_jitter under each), far below any difference that
#: matters (0.02 of a log-likelihood of 2e4)
TIE_RTOL = 1e-6


def best_index(objectives: Sequence[Optional[float]]) -> int:
    """The first point (in grid or evaluation order) whose objective is within :data:`TIE_RTOL` of
    the smallest; a missing or NaN objective counts as +∞."""
    values = np.array([np.inf if v is None or not np.isfinite(v) else float(v) for v in objectives])
    best = values.min() if values.size else np.inf
    if not np.isfinite(best):
        return 0
    return int(np.flatnonzero(values <= best + TIE_RTOL * abs(best))[0])


def evaluate_point(problem, start: Settings, point: Dict[str, float], evaluate: Objective) -> dict:
    """One row of a scan or an optimisation: the point and its objective.  A setting whose K_MM or
    R does not factorise is a bad one (objective +∞, the reason kept), not the end of the search."""
    try:
        return {**point, **evaluate(settings(problem, start, **point))}
    except NumericalError as exc:
        return {**point, "log_likelihood": None, "objective": float("inf"), "failed": str(exc)}
    except ConfigError as exc:
        if "refit:" not in str(exc):
            raise
        return {**point, "log_likelihood": None, "objective": float("inf"), "failed": str(exc)}


@dataclass
class ScanResult:
    """A scan's or an optimisation's evaluations (``table``: one dict per setting, with
    ``objective``, ``log_likelihood`` and any validation RMSEs), the best setting, and the GapFit
    refitted at it."""

    objective: str
    table: List[dict]
    best: Dict[str, object]
    fit: object

    def lines(self) -> List[str]:
        """The table as text (RMSEs in meV, the objective named), the best setting marked, and notes:
        a best point on the edge of the grid, and a likelihood that would choose another point."""
        if not self.table:
            return []
        points = [k for k in dict.fromkeys(k for row in self.table for k in row) if k not in _RESULT_COLUMNS]
        results = [k for k in _RESULT_COLUMNS if k != "failed" and any(k in row for row in self.table)]
        header = [*points, *(_column_title(k, self.objective) for k in results)]
        shown_as = {"objective": "objective" if self.objective == "likelihood" else "objective_rmse"}
        body = [[_cell(row.get(k), shown_as.get(k, k)) for k in points + results] for row in self.table]
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
        best = best_index([row["objective"] for row in self.table])
        out = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
        for i, (row, cells) in enumerate(zip(self.table, body)):
            note = "  <- best" if i == best else ""
            if "failed" in row:
                note += "  failed: " + row["failed"].split(":")[0]
            out.append("  ".join(c.rjust(w) for c, w in zip(cells, widths)) + note)
        return out + self.notes(points, best)

    def notes(self, points: List[str], best: int) -> List[str]:
        """What the table alone does not say (see :meth:`lines`)."""
        out = []
        for key in points:
            values = sorted({_sort_key(row.get(key)) for row in self.table if row.get(key) is not None})
            here = _sort_key(self.table[best].get(key))
            if len(values) >= 3 and here in (values[0], values[-1]):
                side = "smallest" if here == values[0] else "largest"
                out.append(f"note: the best point has the {side} {key} of the grid: the optimum may lie beyond "
                           f"it; extend the grid past {self.table[best].get(key)}")
        if self.objective != "likelihood" and any(row.get("log_likelihood") is not None for row in self.table):
            by_likelihood = best_index([-row["log_likelihood"] if row.get("log_likelihood") is not None else None
                                        for row in self.table])
            if by_likelihood != best:
                chosen = {k: self.table[by_likelihood].get(k) for k in points}
                out.append(f"note: the log likelihood of the training data would choose {chosen}; the validation "
                           f"{self.objective} error measures what the model is used for, and is the one to trust "
                           f"when the validation frames are like the applications (the likelihood needs no "
                           f"validation data, but trusts the model's form)")
        return out


#: a scan row's result columns, in display order (the others are the scanned keys)
_RESULT_COLUMNS = ("log_likelihood", "energy_rmse", "forces_rmse", "virial_rmse", "objective", "failed")
_TITLES = {"log_likelihood": "log L", "energy_rmse": "E RMSE meV/atom", "forces_rmse": "F RMSE meV/Å",
           "virial_rmse": "V RMSE meV/atom"}


def _column_title(key: str, objective: str) -> str:
    if key != "objective":
        return _TITLES[key]
    return "objective: -log L" if objective == "likelihood" else f"objective: {_TITLES[objective + '_rmse']}"


def _cell(value, key: str) -> str:
    """A table cell: RMSEs (and an RMSE objective) in meV, lists as {a b c}."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "{" + " ".join(f"{float(v):.4g}" for v in value) + "}"
    if isinstance(value, (float, int, np.floating, np.integer)):
        if not np.isfinite(value):
            return str(value)
        return f"{value * 1e3:.4g}" if key.endswith("_rmse") else f"{value:.6g}"
    return str(value)


def _sort_key(value):
    return tuple(np.ravel(value).tolist()) if isinstance(value, (list, tuple, np.ndarray)) else value


def optimise_settings(problem, start: Settings, keys: List[str], evaluate: Objective, max_evaluations: int):
    """Nelder–Mead over log(values) of ``keys`` from ``start``: (every evaluation's row, the best point)."""
    x0 = np.log([scalar_value(start, k) for k in keys])
    if not np.all(np.isfinite(x0)):
        raise ConfigError(f"optimise: every key needs a positive starting value; got "
                          f"{dict(zip(keys, np.exp(x0)))}")
    rows: List[dict] = []

    def f(x):
        row = evaluate_point(problem, start, {k: float(np.exp(v)) for k, v in zip(keys, x)}, evaluate)
        rows.append(row)
        return row["objective"]

    from scipy.optimize import minimize  # lazy: only optimise needs it (a large import)
    minimize(f, x0, method="Nelder-Mead", options={"maxfev": int(max_evaluations), "xatol": 1e-3, "fatol": 1e-9})
    best = best_index([row["objective"] for row in rows])
    return rows, {k: rows[best][k] for k in keys}
