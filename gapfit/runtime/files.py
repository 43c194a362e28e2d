"""Files written atomically (every file complete, or none changed), and whether an output's folder
can be written."""

from __future__ import annotations

import os
import tempfile

from ..errors import ConfigError


def check_writable(path: str, key: str = "gp_file") -> None:
    """Fail early (before any heavy work) if ``path`` cannot be written (``key``: as the user typed it)."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise ConfigError(f"{key} '{path}' is a directory")
    if not os.path.isdir(directory):
        raise ConfigError(f"{key} '{path}': directory '{directory}' does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".gapfit-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{key} '{path}': cannot write in directory '{directory}' ({exc.strerror})") from None


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process's umask (077 on a shared cluster
    keeps models private)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_files_atomically(contents: dict) -> None:
    """Write {path: bytes} so that either all files appear complete or none changes."""
    temps = []
    try:
        for path, data in contents.items():
            directory = os.path.dirname(os.path.abspath(path)) or "."
            fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, new_file_mode())  # mkstemp's 0600 → what open() would give
        # the XML last, so a reader never sees it before its sparseX files
        for tmp, path in sorted(temps, key=lambda t: t[1].endswith(".xml")):
            os.replace(tmp, path)
        temps = []
    finally:
        for tmp, _ in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass
