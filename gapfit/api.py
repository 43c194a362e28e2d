"""The Python API: ``GapFit(**gap_fit_options).fit(frames)``; the CLI is a thin layer over it.

The phases of a fit are in :mod:`gapfit.fit.pipeline`.

Example
-------
>>> from gapfit import GapFit
>>> fit = GapFit(gap="distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0 theta_uniform=1.0 "
...                  "n_sparse=20 sparse_method=uniform",
...              default_sigma=[0.01, 0.1, 0.05, 0.0], e0_method="average", gp_file="gp.xml")
>>> fit.fit("train.xyz")            # or a list of ase.Atoms
>>> fit.alpha_[0][:3]
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

import numpy as np

from .data.extxyz import MemorySource, XyzFileSource
from .data.targets import TargetNames
from .errors import ConfigError
from .fit.pipeline import FitResult, configure, run_fit  # noqa: F401 (FitResult: part of the API)
from .model.calculator import GapCalculator, GapPotential
from .model.committee import calibrate as calibrate_committee
from .model.committee import sample_models, with_scale
from .model.gap_xml import write_model
from .model.scores import ErrorTable, score_frames
from .model.tuning import (Objective, ScanResult, base_settings, best_index, evaluate_point, grid_points,
                           optimise_settings, refit_model, settings)
from .options.syntax import join_argv, quote_value
from .options.gp import GP_KEYS
from .options.schema import did_you_mean
from .options.top_level import TOP_LEVEL, parse_top_level
from .runtime.parallel import SerialComm


def _check_keyword(key: str) -> None:
    """A keyword that is no gap_fit option fails when GapFit is made, not when the data are read."""
    if key in TOP_LEVEL:
        return
    if key in GP_KEYS:
        raise ConfigError(f"'{key}' is a key of one descriptor, not a keyword of GapFit: put it inside gap "
                          f"(gap=['soap ... {key}=...'])")
    hint = did_you_mean(key, TOP_LEVEL.names())
    if not hint and did_you_mean(key, GP_KEYS.names()):
        hint = did_you_mean(key, GP_KEYS.names())[:-1] + " (a key of one descriptor: inside gap)?"
    raise ConfigError(f"unknown keyword '{key}' for GapFit{hint}")


def options_to_string(options: Dict[str, Any]) -> str:
    """gap_fit's key=value string from Python values (lists → {a b}, bools → T/F)."""
    parts = []
    for key, value in options.items():
        if value is None:
            continue
        if key == "gap" and isinstance(value, (list, tuple)):
            value = "{" + " : ".join(str(v).strip() for v in value) + "}"
        elif isinstance(value, bool):
            value = "T" if value else "F"
        elif isinstance(value, (list, tuple, np.ndarray)):
            value = "{" + " ".join(repr(float(v)) if isinstance(v, float) else str(v) for v in value) + "}"
        elif isinstance(value, dict):  # e0={"Si": -158.5} or config_type_sigma
            items = []
            for k, v in value.items():
                items.append(str(k))
                if isinstance(v, (list, tuple)):
                    items.extend(str(x) for x in v)
                else:
                    items.append(str(v))
            value = "{" + ":".join(items) + "}"
        else:
            value = quote_value(str(value))
        parts.append(f"{key}={value}")
    return " ".join(parts)


class GapFit:
    """Fit a GAP with gap_fit's options.

    Parameters
    ----------
    options : str, list of str or dict, optional
        gap_fit options as one string (``"at_file=train.xyz gap={...} ..."``), as
        argv words, or as a dict; keyword arguments are added (and win).
        Values may be Python objects: lists become ``{a b c}``, booleans T/F.
    comm : communicator, optional
        A :mod:`gapfit.runtime.parallel` communicator; serial by default.
    stream : file, optional
        Where rank 0 prints progress (stdout by default).
    quiet : bool
        Print nothing.

    Attributes (after :meth:`fit`)
    --------------------------------
    model_ : GapModel, alpha_, sparse_x_, sparse_cutoff_, sparse_index_, e0_,
    timings_, files_ (paths written), errors_ (the error tables of the training data and
    test_file, as in ``report_file``: see :mod:`gapfit.model.scores`), log_likelihood_ (the log
    marginal likelihood of the training data: :mod:`gapfit.solve.evidence`).

    With ``fit(..., keep_kernel_rows=True)``, :meth:`refit`, :meth:`scan` and :meth:`optimise`
    re-solve with other σ, δ or sparse_jitter at the cost of a QR (:mod:`gapfit.model.refit`).
    :meth:`committee` samples models from the posterior of α.
    """

    def __init__(self, options=None, *, comm=None, stream=None, quiet: bool = False, **keys):
        self.comm = comm if comm is not None else SerialComm()
        self.stream = stream
        self.quiet = quiet
        if options is None:
            text = ""
        elif isinstance(options, str):
            text = options
        elif isinstance(options, dict):
            text = options_to_string(options)
        else:
            text = join_argv(list(options))
        for key in list(keys) + (list(options) if isinstance(options, dict) else []):
            _check_keyword(key)
        if keys:
            text = (text + " " + options_to_string(keys)).strip()
        self.option_text = text

    # ------------------------------------------------------------------
    def fit(self, frames=None, keep_kernel_rows: bool = False) -> "GapFit":
        """Fit to ``frames`` (a path or a list of ase.Atoms); None means the at_file option.

        ``keep_kernel_rows``: keep the unscaled K_NM rows (N×M doubles, in memory or in a
        temporary file) for :meth:`refit`, :meth:`scan` and :meth:`optimise`.
        """
        return self._run(self.option_text, frames, keep_kernel_rows)

    def extend(self, frames, checkpoint: str) -> "GapFit":
        """Extend the finished fit saved in ``checkpoint`` (a ``checkpoint_file``) with ``frames``.

        The result is the fit on the base data and ``frames`` together, with the base fit's sparse
        points, θ, e0 and σ rules; only the new frames' rows are computed.  The options given to
        this GapFit may only name outputs (gp_file, checkpoint_file, ...).
        """
        return self._run((self.option_text + " extend_checkpoint=" + quote_value(os.fspath(checkpoint))).strip(),
                         frames)

    def _run(self, text: str, frames, keep_kernel_rows: bool = False) -> "GapFit":
        source = None
        if frames is not None and not isinstance(frames, (str, os.PathLike)):
            source = MemorySource(list(frames))
            if "at_file=" not in text and "atoms_filename=" not in text:
                text += " at_file=<in-memory>"
        elif frames is not None:
            text += f" at_file={os.fspath(frames)}"
        config, extends = configure(parse_top_level(option_string=text), self.comm)
        if source is None:
            source = XyzFileSource(config.targets.at_file)
        # unlike the CLI, the API writes files only when gp_file is given
        result = run_fit(config, source, comm=self.comm, stream=self.stream, quiet=self.quiet,
                         write=config.outputs.gp_file_given, extends=extends, keep_kernel_rows=keep_kernel_rows)
        self._take(result)
        self._name_options = config.target_name_options()
        self._problem = result.refit
        self._settings = None
        return self

    def _take(self, result) -> None:
        self.result_ = result
        self.model_ = result.model
        self.alpha_ = result.alpha
        self.sparse_x_ = result.sparse_x
        self.sparse_cutoff_ = result.sparse_cutoff
        self.sparse_index_ = result.sparse_index
        self.e0_ = result.e0
        self.timings_ = result.timings
        self.files_ = result.files
        self.errors_ = result.errors
        self.log_likelihood_ = result.log_likelihood
        self.r_ = result.r
        self._e0_offsets, self._e0_base = result.e0_offsets, result.e0_base

    # --- refits, scans, committees (gapfit.model.refit, gapfit.model.tuning, gapfit.model.committee) ----------
    def _refit_problem(self):
        if getattr(self, "_problem", None) is None:
            raise RuntimeError("refit, scan and optimise need the kernel rows: fit with keep_kernel_rows=True")
        return self._problem

    def _current_settings(self):
        return self._settings or base_settings(self._refit_problem())

    def refit(self, **keys) -> "GapFit":
        """A new GapFit re-solved with other ``default_sigma`` (or ``energy_sigma``, ``force_sigma``,
        ``virial_sigma``), ``config_type_sigma`` (gap_fit's string or {name: [E, F, V, H]}), ``delta``
        (a list, one per descriptor after add_species, or {descriptor number: δ}) or ``sparse_jitter``.

        Costs a QR: the cached kernel rows are rescaled.  Equal to a fit from scratch with those
        options (the sparse points and e0 are this fit's).  Collective under MPI.
        """
        problem = self._refit_problem()
        chosen = settings(problem, self._current_settings(), **keys)
        model, solved = refit_model(problem, self.model_, chosen)
        new = GapFit.__new__(GapFit)
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_potential_cache"})
        new.model_, new._settings = model, chosen
        new.alpha_, new.e0_ = [c.alpha for c in model.coordinates], model.e0
        new.log_likelihood_, new.r_, new.errors_, new.files_ = solved.log_likelihood, solved.r, {}, []
        return new

    def scan(self, grid: Dict[str, list], objective: str = None, validation=None, folds: int = None,
             seed: int = 0):
        """Refit at every point of ``grid`` ({refit key: [values]}) and rank the points.

        ``objective``: "likelihood" (the default without validation: the log marginal likelihood,
        maximised) or the validation RMSE of "energy", "forces" (the default with validation) or
        "virial", on ``validation`` frames or by ``folds``-fold cross-validation.  Returns a
        :class:`gapfit.model.tuning.ScanResult`: the table, the best point, and the best model refitted.
        """
        problem = self._refit_problem()
        evaluate = Objective(problem, objective, _source_or_none(validation), folds, seed)
        rows = [evaluate_point(problem, self._current_settings(), point, evaluate) for point in grid_points(grid)]
        best = best_index([row["objective"] for row in rows])
        point = {k: rows[best][k] for k in grid}
        return ScanResult(objective=evaluate.name, table=rows, best=point, fit=self.refit(**point))

    def optimise(self, keys=("energy_sigma", "force_sigma"), objective: str = None, validation=None,
                 folds: int = None, seed: int = 0, max_evaluations: int = 60):
        """Minimise the objective of :meth:`scan` over the refit ``keys`` (scalars: energy_sigma,
        force_sigma, virial_sigma, sparse_jitter, or delta of a one-descriptor fit) by Nelder–Mead in
        log space, from this fit's values.  Returns a :class:`gapfit.model.tuning.ScanResult` of every
        evaluation."""
        problem = self._refit_problem()
        evaluate = Objective(problem, objective, _source_or_none(validation), folds, seed)
        rows, point = optimise_settings(problem, self._current_settings(), list(keys), evaluate, max_evaluations)
        return ScanResult(objective=evaluate.name, table=rows, best=point, fit=self.refit(**point))

    def committee(self, n: int, seed: int = 0, calibrate=None, **names) -> list:
        """``n`` models with α drawn from the posterior N(α, (AᵀA)⁻¹) as α + R⁻¹ε (GapModel each;
        write them with :func:`gapfit.model.gap_xml.write_model`, evaluate them with
        :class:`gapfit.model.committee.CommitteeCalculator`).

        ``calibrate``: validation frames (a path or a list of ase.Atoms, not the training data) on
        which the committee's spread is scaled to match its errors, energies and forces separately
        (:func:`gapfit.model.committee.calibrate`); the factors are in ``committee_scale_``, printed
        unless ``quiet``, and stored in every member.  References are found under the fit's
        ``*_parameter_name`` keys unless ``names`` gives others."""
        if getattr(self, "model_", None) is None:
            raise RuntimeError("fit first: there is no fitted model")
        models = sample_models(self.model_, self.r_, n, seed, self.comm, offsets=getattr(self, "_e0_offsets", None),
                               base_e0=getattr(self, "_e0_base", None))
        if calibrate is None:
            return models
        source = _frames(calibrate)
        scale, counts = calibrate_committee(models, source.read(_all(source)), self._target_names(names))
        self.committee_scale_ = scale
        if not self.quiet and self.comm.rank == 0:
            print(f"committee of {n}: errors ~ Student-t(ν, scale √((k·spread)² + s0²)) with k = {scale[0]:.3g}, "
                  f"s0 = {scale[1] * 1e3:.3g} meV/atom, ν = {scale[2]:.3g} (energies, {counts['energy']} frames) and "
                  f"k = {scale[3]:.3g}, s0 = {scale[4] * 1e3:.3g} meV/Å, ν = {scale[5]:.3g} (forces, "
                  f"{counts['forces']} components); energy_std and forces_std are σ-equivalents (±1: the "
                  f"central 68 % interval)", file=self.stream)
        return with_scale(models, scale)

    def predict(self, frames) -> List[Dict[str, np.ndarray]]:
        """The fitted model's energy (eV), forces (eV/Å), virial (eV) and local energies of each
        structure (a path, or a list of ase.Atoms)."""
        potential, source = self._potential(), _frames(frames)
        return [potential.evaluate(frame) for frame in source.read(_all(source))]

    def score(self, frames, **names) -> List[dict]:
        """The fitted model's errors on labelled ``frames`` (a path or a list of ase.Atoms), one dict
        per config_type and one "overall" (definitions: :mod:`gapfit.model.scores`).  The reference values
        are found under the fit's ``*_parameter_name`` keys unless ``names`` gives others."""
        source = _frames(frames)
        return score_frames(self._potential(), source.read(_all(source)), self._target_names(names),
                            ErrorTable()).rows()

    def _target_names(self, names) -> TargetNames:
        """The fit's target names, with ``names`` (``force_parameter_name=...``) over them."""
        unknown = sorted(set(names) - set(TargetNames.OPTION_KEYS))
        if unknown:
            raise ConfigError(f"unknown key '{unknown[0]}' (the keys are {', '.join(TargetNames.OPTION_KEYS)})")
        return TargetNames.from_options({**self._name_options, **names})

    def _potential(self):
        if getattr(self, "model_", None) is None:
            raise RuntimeError("fit (or extend) first: there is no fitted model")
        if getattr(self, "_potential_cache", None) is None or self._potential_cache.model is not self.model_:
            self._potential_cache = GapPotential(self.model_)
        return self._potential_cache

    def write_xml(self, path: str, separate_sparse: bool = True) -> List[str]:
        """Write the fitted model to ``path`` (and its sparseX files) atomically."""
        return write_model(self.model_, path, separate_sparse)

    def calculator(self):
        """An ASE calculator for the fitted model (no file needed)."""
        return GapCalculator(model=self.model_)


def _source_or_none(frames):
    return None if frames is None else _frames(frames)


def _frames(frames):
    """A frame source for a path or a list of structures."""
    if isinstance(frames, (str, os.PathLike)):
        return XyzFileSource(os.fspath(frames), key="frames")
    return MemorySource(list(frames))


def _all(source):
    return source.index()[0]


def fit(frames=None, **options) -> GapFit:
    """Shortcut: ``gapfit.fit("train.xyz", gap=..., default_sigma=[...])``."""
    return GapFit(**options).fit(frames)
