"""The two-step workflow: sparsify once (serially), then fit with the sparse points from files.

gap_fit's documented recipe for MPI fits with methods that need all the data at once:

1. ``gap_fit ... sparsify_only_no_fit=T`` writes an unfitted XML and its sparseX files;
2. QUIP's ``gap_prepare_sparsex_input.py gp.xml`` turns each sparseX file into
   ``<sparseX file>.input``: per sparse point one cutoff line, then d value lines
   (``sparse_method=file``'s format);
3. rerun with ``add_species=F`` and, per expanded descriptor, ``sparse_method=file
   sparse_file=<...>.input``.

:func:`prepare_second_run` does steps 2 and 3 in one go for an XML written by gap_fit or
gapfit: it writes the ``.input`` files and ``<gp_file>.fit.cfg``, the complete options of the
second run (from the XML's ``<command_line>``), which ``gapfit config_file=...`` (or
``mpirun -n P gapfit config_file=...``) accepts as it is.  gapfit's ``sparsify_only_no_fit=T``
calls it itself.
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

import numpy as np

from ..errors import ModelError
from ..model.gap_xml import array_file_bytes, read_model
from ..options.syntax import key_values, quote_value
from ..runtime.files import write_files_atomically

# GP keys that the second run must not repeat (the sparse points come from the file)
_DROPPED = ("sparse_method", "sparse_file", "n_sparse", "config_type_n_sparse", "print_sparse_index",
            "add_species")


def sparse_input_bytes(sparse_x: np.ndarray, sparse_cutoff: np.ndarray) -> bytes:
    """``sparse_method=file`` format: for each point its cutoff, then its d values, one per line."""
    return array_file_bytes(np.column_stack([np.asarray(sparse_cutoff, dtype=float), np.asarray(sparse_x, dtype=float)]))


def file_piece(descriptor: str, sparse_file: str) -> str:
    """A gap piece with its own sparse points from ``sparse_file`` (species keys kept, add_species=F)."""
    words = []
    for key, value in key_values(descriptor, what="the <descriptor> string"):
        if key in _DROPPED:
            continue
        words.append(key if value is None else f"{key}={quote_value(value)}")
    words += ["add_species=F", "sparse_method=file", f"sparse_file={sparse_file}"]
    return " ".join(words)


def second_run_options(command_line: str, pieces: List[str]) -> str:
    """The first run's options with sparsify_only_no_fit dropped and gap={...} replaced."""
    kept = []
    for key, value in key_values(command_line, what="the <command_line> of the XML"):
        if key in ("gap", "sparsify_only_no_fit", "config_file"):
            continue
        kept.append(key if value is None else f"{key}={quote_value(value)}")
    gap = "gap={" + " : ".join("{" + p + "}" for p in pieces) + "}"
    return "\n".join(kept + [gap]) + "\n"


def prepare_second_run(xml_path: str, options_path: Optional[str] = None,
                       relative_to: Optional[str] = None) -> Tuple[List[str], str]:
    """Write the ``.input`` sparse files and the second run's options for a sparsified XML.

    Paths inside the options file are relative to ``relative_to`` (default: the directory of
    the XML, where gap_fit's helper is meant to run).  Returns (files written, options path).
    """
    model = read_model(xml_path)
    base = os.path.dirname(os.path.abspath(xml_path))
    relative_to = os.path.abspath(relative_to or base)
    if not model.command_line:
        raise ModelError(f"'{xml_path}' has no <command_line>: cannot write the options of the second run")
    contents, pieces = {}, []
    for i, c in enumerate(model.coordinates, start=1):
        name = f"{os.path.basename(xml_path)}.sparseX.{model.label}{i}.input"
        path = os.path.join(base, name)
        contents[path] = sparse_input_bytes(c.sparse_x, c.sparse_cutoff)
        pieces.append(file_piece(c.descriptor.strip(), os.path.relpath(path, relative_to)))
    options_path = options_path or os.path.join(base, os.path.basename(xml_path) + ".fit.cfg")
    header = (f"# gapfit/gap_fit options for the fit with the sparse points of {os.path.basename(xml_path)}\n"
              f"# run: gapfit config_file={os.path.relpath(options_path, relative_to)}   (from {relative_to})\n")
    contents[options_path] = (header + second_run_options(model.command_line, pieces)).encode()
    write_files_atomically(contents)
    return list(contents), options_path

