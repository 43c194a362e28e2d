"""Exception hierarchy.

Every error a user can cause is one of these, with a one-line message that names
the culprit (the key, the file and frame, the rank).  The CLI turns them into a
single line on stderr and a non-zero exit status, without a traceback.
"""


class GapfitError(Exception):
    """Base class of all gapfit errors (exit status 1 from the CLI)."""

    exit_code = 1


class ConfigError(GapfitError):
    """A bad option: unknown key, invalid value, impossible combination.

    Raised before any heavy work, identically on every rank (exit status 2).
    """

    exit_code = 2


class DataError(GapfitError):
    """Bad training data: malformed extended XYZ, missing or invalid labels."""


class NumericalError(GapfitError):
    """A numerical failure: factorisation, NaN weights, an ill-posed solve."""


class ModelError(GapfitError):
    """A GAP XML model that cannot be read or evaluated."""
