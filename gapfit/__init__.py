"""gapfit: fit Gaussian Approximation Potentials, a drop-in clone of QUIP's gap_fit.

The command line (``gapfit at_file=... gap={...} ...``) takes gap_fit's own
syntax; the Python API is :class:`gapfit.GapFit`; fitted models are GAP XML files that QUIP,
quippy and LAMMPS load, and :class:`gapfit.GapCalculator` evaluates them in ASE
(:class:`gapfit.CommitteeCalculator` a committee of them; :func:`gapfit.read_model`, :func:`gapfit.write_model`).
"""


from .errors import ConfigError, DataError, GapfitError, ModelError, NumericalError  # noqa: F401
from .version import __version__  # noqa: F401

#: the API's names, imported when first used: ``import gapfit`` stays cheap (no SciPy, no MPI) for the
#: CLI's error paths
_LAZY = {
    "GapFit": "gapfit.api",
    "fit": "gapfit.api",
    "GapCalculator": "gapfit.model.calculator",
    "CommitteeCalculator": "gapfit.model.committee",
    "read_model": "gapfit.model.gap_xml",
    "write_model": "gapfit.model.gap_xml",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gapfit' has no attribute {name!r}")
