"""The files a fit reads and the files it writes, and the rule that no output lands on an input.

gap_fit happily writes ``gp_file=train.xyz`` over its own training data.  gapfit refuses any
output (the XML and the files named after it, ``report_file``, ``print_sparse_index``,
``linear_system_dump_file``) that would replace an input (``at_file``, ``config_file``,
``sparse_file``, ``theta_file``, ``core_param_file``, ``template_file``, ``test_file``) or another output,
before anything is written.  Files are compared by their real path, so links and ``./`` do
not hide a clash.  Messages quote the keys as the user typed them.
"""

from __future__ import annotations

import os
import re
from typing import List, Sequence, Tuple

from ..errors import ConfigError

# (description with the key as typed, path)
Named = Tuple[str, str]


def test_files(values) -> List[str]:
    """The paths of ``test_file`` (commas or spaces between them)."""
    from ..options.syntax import split_fields
    text = values.get("test_file", "")
    return split_fields(text, separators=" ,", what="test_file") if text else []


def input_files(opts, specs: Sequence) -> List[Named]:
    """Every file the options make the fit read."""
    files = []
    at_file = opts["atoms_filename"]
    if at_file and not at_file.startswith("<"):  # "<in-memory>": structures given to the API
        files.append((f"{opts.key('atoms_filename')} '{at_file}'", at_file))
    if opts["config_file"]:
        files.append((f"config_file '{opts['config_file']}'", opts["config_file"]))
    if opts.has("baseline_ip_args"):
        files.append((f"{opts.key('baseline_param_filename')} '{opts['baseline_param_filename']}'",
                      opts["baseline_param_filename"]))
    if opts.has("template_file"):
        files.append((f"template_file '{opts['template_file']}'", opts["template_file"]))
    for path in test_files(opts.values):
        files.append((f"test_file '{path}'", path))
    for spec in specs:
        gp, given = spec.gp, spec.gp_given
        if gp["sparse_file"]:
            files.append((f"sparse_file '{gp['sparse_file']}' of gap descriptor {spec.index}", gp["sparse_file"]))
        if "lengthscale_file" in given:
            files.append((f"{given.key('lengthscale_file')} '{gp['lengthscale_file']}' of gap descriptor "
                          f"{spec.index}", gp["lengthscale_file"]))
    return files


def output_files(opts, specs: Sequence, label: str, n_ranks: int = 1) -> Tuple[List[Named], List[Named]]:
    """The files the fit will write: (exact paths, path patterns for the files named by label).

    A pattern is a regular expression on the real path, for the numbered sparseX files whose
    count is only known after species expansion.
    """
    v = opts.values
    gp_file = v["gap_file"]
    gp_key = f"{opts.key('gap_file')} '{gp_file}'"
    exact = [(gp_key, gp_file)]
    if v["sparsify_only_no_fit"]:
        exact.append((f"the second run's options of {gp_key}", gp_file + ".fit.cfg"))
    if v["export_covariance"]:
        exact.append((f"the exported R of {gp_key}", f"{gp_file}.R.{label}"))
    if v["report_file"]:
        exact.append((f"report_file '{v['report_file']}'", v["report_file"]))
    if v.get("checkpoint_file"):
        exact.append((f"checkpoint_file '{v['checkpoint_file']}'", v["checkpoint_file"]))
    if v["linear_system_dump_file"]:
        prefix = v["linear_system_dump_file"]
        for rank in range(n_ranks):
            for part in ("A", "b"):
                exact.append((f"linear_system_dump_file '{prefix}' (rank {rank})", f"{prefix}.{part}.{rank}"))
    index_files = {}  # descriptors may share one (each appends its line, as in gap_fit)
    for spec in specs:
        path = spec.gp["print_sparse_index"]
        if path and _real(path) not in index_files:
            index_files[_real(path)] = (f"print_sparse_index '{path}' of gap descriptor {spec.index}", path)
    exact += index_files.values()
    sparse_x = re.escape(_real(gp_file)) + r"\.sparseX\." + re.escape(label) + r"\d+(\.input)?"
    patterns = [(f"a sparseX file of {gp_key}", sparse_x)]
    if v.get("checkpoint_file"):
        patterns.append((f"a part of checkpoint_file '{v['checkpoint_file']}'",
                         re.escape(_real(v["checkpoint_file"])) + r"\.g\d+\.(common|rank\d+)\.npz"))
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
    for k, (out_name, out_path) in enumerate(outputs):
        for in_name, in_path in inputs:
            if _same(out_path, in_path):
                raise ConfigError(f"{out_name} would overwrite the input {in_name}: choose another output name")
        for other_name, other_path in outputs[:k]:
            if _same(out_path, other_path):
                raise ConfigError(f"{out_name} and {other_name} are the same file: choose different names")
    for out_name, pattern in patterns:
        regex = re.compile(pattern)
        for in_name, in_path in inputs:
            if regex.fullmatch(_real(in_path)):
                raise ConfigError(f"{out_name} would overwrite the input {in_name}: choose another output name")
