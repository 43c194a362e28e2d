"""Preflight: everything a fit needs of the filesystem, checked before the banner and before any data
is read, so that nothing after it fails for a reason it could have seen.

* every input exists and can be read: at_file, the core's parameter file, sparse_file and
  theta_file of each descriptor, test_file, an existing checkpoint_file;
* every output's folder exists and can be written: gp_file, report_file, print_sparse_index,
  checkpoint_file, linear_system_dump_file;
* no output lands on an input or on another output.  gap_fit happily writes ``gp_file=train.xyz``
  over its own training data; gapfit refuses any output (the XML and the files named after it,
  ``report_file``, ``print_sparse_index``, ``linear_system_dump_file``, the checkpoint's parts)
  that would replace an input or another output.  Files are compared by their real path, so
  links and ``./`` do not hide a clash.

Messages quote the keys as the user typed them.  The core potential's parameter file is read here
too (rank 0), and the model's label, which names the sparseX files, is made.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple

from ..config.fit_config import FitConfig
from ..data.core import GluePotential, load_core, read_param_file
from ..data.extxyz import check_readable as check_xyz_readable
from ..errors import ConfigError
from ..model.gap_xml import make_label
from ..runtime.files import check_writable
from ..runtime.parallel import rank0_call
from ..solve.checkpoint import Checkpoint


class Named(NamedTuple):
    """A file of the fit: how messages name it (the key as typed, its path, whose it is), its path, its key."""

    description: str
    path: str
    key: str


@dataclass(frozen=True)
class FitSetup:
    """What preflight found: the model's label, and the core potential (its file's text too)."""

    label: str
    core: Optional[GluePotential] = None
    core_text: Optional[str] = None


def preflight(config: FitConfig, comm, write: bool = True) -> FitSetup:
    """Check the filesystem for this fit (collective: rank 0 looks, every rank gets the answer)."""
    core = core_text = None
    if config.targets.core is not None:
        c = config.targets.core
        core_text = rank0_call(comm, read_param_file, c.param_file, c.param_file_key)
        core = load_core(c.ip_args, core_text, c.source, c.ip_args_key)
    label = rank0_call(comm, make_label)
    rank0_call(comm, check_files, config, label, comm.size, write and not config.run.dryrun)
    return FitSetup(label=label, core=core, core_text=core_text)


def check_files(config: FitConfig, label: str, n_ranks: int, outputs_too: bool = True) -> None:
    """Rank 0: inputs readable; with ``outputs_too``, no output on an input and every output's folder
    writable (ConfigError, or DataError for at_file as its reader says)."""
    inputs = input_files(config)
    if outputs_too:
        outputs, patterns = output_files(config, label, n_ranks)
        refuse_clobbering(inputs, outputs, patterns)
    for named in inputs:
        if named.key == config.targets.at_file_key and named.path == config.targets.at_file:
            check_xyz_readable(named.path, named.key)
        else:
            check_readable(named)
    if outputs_too:
        for named in outputs:
            check_writable(named.path, named.key)
    if config.checkpoint.file and os.path.exists(config.checkpoint.file):
        Checkpoint(config.checkpoint.file).manifest()  # a gapfit checkpoint, or a ConfigError naming it


def check_readable(named: Named) -> None:
    """A file the fit reads exists and can be read."""
    where = named.description[len(f"{named.key} '{named.path}'"):]
    if not os.path.exists(named.path):
        raise ConfigError(f"{named.key} '{named.path}'{where} does not exist")
    if not os.path.isfile(named.path):
        raise ConfigError(f"{named.key} '{named.path}'{where} is not a file")
    if not os.access(named.path, os.R_OK):
        raise ConfigError(f"{named.key} '{named.path}'{where} cannot be read: permission denied")


def input_files(config: FitConfig) -> List[Named]:
    """Every file the options make the fit read (at_file first)."""
    files = []
    t = config.targets
    if t.at_file and not t.at_file.startswith("<"):
        files.append(Named(f"{t.at_file_key} '{t.at_file}'", t.at_file, t.at_file_key))
    config_file = config.config_file
    if config_file:
        files.append(Named(f"config_file '{config_file}'", config_file, "config_file"))
    if t.core is not None:
        files.append(Named(f"{t.core.param_file_option} '{t.core.param_file}'", t.core.param_file,
                           t.core.param_file_option))
    for path in config.outputs.test_files:
        files.append(Named(f"test_file '{path}'", path, "test_file"))
    for spec in config.gaps:
        gp = spec.gp
        if gp.sparse_file:
            files.append(Named(f"sparse_file '{gp.sparse_file}' of gap descriptor {spec.index}", gp.sparse_file,
                               "sparse_file"))
        if gp.theta_rule == "file":
            files.append(Named(f"{gp.theta_file_key} '{gp.theta_file}' of gap descriptor {spec.index}",
                               gp.theta_file, gp.theta_file_key))
    return files


def output_files(config: FitConfig, label: str, n_ranks: int = 1) -> Tuple[List[Named], List[Named]]:
    """The files the fit will write: (exact paths, path patterns for the files named by label).

    A pattern is a regular expression on the real path, for the numbered sparseX files whose
    count is only known after species expansion.
    """
    out = config.outputs
    gp_key = f"{out.gp_file_key} '{out.gp_file}'"
    exact = [Named(gp_key, out.gp_file, out.gp_file_key)]
    if config.sparse.only:
        exact.append(Named(f"the second run's options of {gp_key}", out.gp_file + ".fit.cfg", out.gp_file_key))
    if out.export_covariance:
        exact.append(Named(f"the exported R of {gp_key}", f"{out.gp_file}.R.{label}", out.gp_file_key))
    if out.report_file:
        exact.append(Named(f"report_file '{out.report_file}'", out.report_file, "report_file"))
    checkpoint = config.checkpoint.file
    if checkpoint:
        exact.append(Named(f"checkpoint_file '{checkpoint}'", checkpoint, "checkpoint_file"))
    if out.dump_prefix:
        for rank in range(n_ranks):
            for part in ("A", "b"):
                exact.append(Named(f"linear_system_dump_file '{out.dump_prefix}' (rank {rank})",
                                   f"{out.dump_prefix}.{part}.{rank}", "linear_system_dump_file"))
    index_files = {}  # descriptors may share one (each appends its line, as in gap_fit)
    for spec in config.gaps:
        path = spec.gp.print_sparse_index
        if path and _real(path) not in index_files:
            index_files[_real(path)] = Named(f"print_sparse_index '{path}' of gap descriptor {spec.index}", path,
                                             "print_sparse_index")
    exact += index_files.values()
    sparse_x = re.escape(_real(out.gp_file)) + r"\.sparseX\." + re.escape(label) + r"\d+(\.input)?"
    patterns = [Named(f"a sparseX file of {gp_key}", sparse_x, out.gp_file_key)]
    if checkpoint:
        patterns.append(Named(f"a part of checkpoint_file '{checkpoint}'",
                              re.escape(_real(checkpoint)) + r"\.g\d+\.(common|rank\d+)\.npz", "checkpoint_file"))
    return exact, patterns


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def _same(a: str, b: str) -> bool:
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def refuse_clobbering(inputs: Sequence[Named], outputs: Sequence[Named], patterns: Sequence[Named] = ()) -> None:
    """Raise ConfigError if an output is an input, or two outputs are one file."""
    for k, (out_name, out_path, _) in enumerate(outputs):
        for in_name, in_path, _ in inputs:
            if _same(out_path, in_path):
                raise ConfigError(f"{out_name} would overwrite the input {in_name}: choose another output name")
        for other_name, other_path, _ in outputs[:k]:
            if _same(out_path, other_path):
                raise ConfigError(f"{out_name} and {other_name} are the same file: choose different names")
    for out_name, pattern, _ in patterns:
        regex = re.compile(pattern)
        for in_name, in_path, _ in inputs:
            if regex.fullmatch(_real(in_path)):
                raise ConfigError(f"{out_name} would overwrite the input {in_name}: choose another output name")
