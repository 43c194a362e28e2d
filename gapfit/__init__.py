"""gapfit: fit Gaussian Approximation Potentials, a drop-in clone of QUIP's gap_fit.

The command line (``gapfit at_file=... gap={...} ...``) takes gap_fit's own
syntax; the Python API is :class:`gapfit.api.GapFit`; fitted models are GAP XML
files that QUIP, quippy and LAMMPS load, and :class:`gapfit.calculator.GapCalculator`
evaluates them in ASE.
"""

__version__ = "0.1.0"

from .errors import ConfigError, DataError, GapfitError, ModelError, NumericalError  # noqa: F401


def __getattr__(name):
    # Lazy imports keep ``import gapfit`` cheap (no MPI, no SciPy) for the CLI's error paths.
    if name == "GapFit":
        from .api import GapFit
        return GapFit
    if name == "GapCalculator":
        from .calculator import GapCalculator
        return GapCalculator
    if name == "fit":
        from .api import fit
        return fit
    raise AttributeError(f"module 'gapfit' has no attribute {name!r}")
