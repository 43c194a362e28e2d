"""The Python API: ``GapFit(**gap_fit_options).fit(frames)``; the CLI is a thin layer over it.

The phases of a fit are in :mod:`gapfit.pipeline`.

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

from .data import TargetNames
from .errors import ConfigError
from .extxyz import MemorySource, XyzFileSource
from .gap_xml import write_model
from .options import join_argv, parse_top_level, quote_value
from .parallel import SerialComm
from .pipeline import FitResult, run_fit  # noqa: F401 (FitResult: part of the API)


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
        A :mod:`gapfit.parallel` communicator; serial by default.
    stream : file, optional
        Where rank 0 prints progress (stdout by default).
    quiet : bool
        Print nothing.

    Attributes (after :meth:`fit`)
    --------------------------------
    model_ : GapModel, alpha_, sparse_x_, sparse_cutoff_, sparse_index_, e0_,
    timings_, files_ (paths written), errors_ (the error tables of the training data and
    test_file, as in ``report_file``: see :mod:`gapfit.scores`).
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
        if keys:
            text = (text + " " + options_to_string(keys)).strip()
        self.option_text = text

    # ------------------------------------------------------------------
    def fit(self, frames=None) -> "GapFit":
        """Fit to ``frames`` (a path or a list of ase.Atoms); None means the at_file option."""
        return self._run(self.option_text, frames)

    def extend(self, frames, checkpoint: str) -> "GapFit":
        """Extend the finished fit saved in ``checkpoint`` (a ``checkpoint_file``) with ``frames``.

        The result is the fit on the base data and ``frames`` together, with the base fit's sparse
        points, θ, e0 and σ rules; only the new frames' rows are computed.  The options given to
        this GapFit may only name outputs (gp_file, checkpoint_file, ...).
        """
        return self._run((self.option_text + " extend_checkpoint=" + quote_value(os.fspath(checkpoint))).strip(),
                         frames)

    def _run(self, text: str, frames) -> "GapFit":
        source = None
        if frames is not None and not isinstance(frames, (str, os.PathLike)):
            source = MemorySource(list(frames))
            if "at_file=" not in text and "atoms_filename=" not in text:
                text += " at_file=<in-memory>"
        elif frames is not None:
            text += f" at_file={os.fspath(frames)}"
        opts = parse_top_level(option_string=text)
        extends = None
        if opts["extend_checkpoint"]:
            from .checkpoint import extension_options
            opts, extends = extension_options(opts, self.comm)
        if source is None:
            source = XyzFileSource(opts["at_file"])
        # unlike the CLI, the API writes files only when gp_file is given
        result = run_fit(opts, source, comm=self.comm, stream=self.stream, quiet=self.quiet,
                         write=opts.has("gp_file"), extends=extends)
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
        self._name_options = {key: opts.values[key] for key in TargetNames.OPTION_KEYS}
        return self

    def predict(self, frames) -> List[Dict[str, np.ndarray]]:
        """The fitted model's energy (eV), forces (eV/Å), virial (eV) and local energies of each
        structure (a path, or a list of ase.Atoms)."""
        potential, source = self._potential(), _frames(frames)
        return [potential.evaluate(frame) for frame in source.read(_all(source))]

    def score(self, frames, **names) -> List[dict]:
        """The fitted model's errors on labelled ``frames`` (a path or a list of ase.Atoms), one dict
        per config_type and one "overall" (definitions: :mod:`gapfit.scores`).  The reference values
        are found under the fit's ``*_parameter_name`` keys unless ``names`` gives others."""
        from .scores import ErrorTable, score_frames
        unknown = sorted(set(names) - set(TargetNames.OPTION_KEYS))
        if unknown:
            raise ConfigError(f"score: unknown key '{unknown[0]}' (the keys are {', '.join(TargetNames.OPTION_KEYS)})")
        target_names = TargetNames.from_options({**self._name_options, **names})
        source = _frames(frames)
        return score_frames(self._potential(), source.read(_all(source)), target_names, ErrorTable()).rows()

    def _potential(self):
        from .calculator import GapPotential
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
        from .calculator import GapCalculator
        return GapCalculator(model=self.model_)


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
