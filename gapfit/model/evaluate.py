"""The ``gapfit-eval`` command: a GAP XML's errors on labelled extended XYZ files, per config_type.

    gapfit-eval MODEL.xml DATA.xyz [MORE.xyz ...] [key=value ...] [--json FILE] [--plot PREFIX]

Any GAP XML that gapfit's calculator evaluates (gapfit's, gap_fit's, with a Glue core or not).
The keys are the fit's: ``energy_parameter_name``, ``force_parameter_name``,
``virial_parameter_name``, ``stress_parameter_name``, ``config_type_parameter_name``,
``force_mask_parameter_name``, ``parameter_name_prefix``; those the fit was given are read from the
model's own ``<command_line>`` unless given here (the log says which).  The table is the one a fit prints for
its training data (definitions in :mod:`gapfit.model.scores`); ``--json`` writes it, ``--plot`` writes
parity plots (``PREFIX_energy.png`` etc., needs matplotlib: ``pip install gapfit[plot]``).
Under ``mpirun`` the frames are spread over the ranks by atom count; rank 0 prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np

from ..config.targets import TARGET_NAME_SCHEMA, TargetNames, parse_target_names, recorded_target_names
from ..errors import ConfigError, GapfitError
from ..options.syntax import key_values as parse_pairs
from ..runtime.parallel import get_comm
from ..runtime.report import Reporter
from .calculator import GapPotential
from .scores import ParityPoints, file_errors


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gapfit-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="keys (key=value): " + ", ".join(TargetNames.OPTION_KEYS))
    p.add_argument("model", help="GAP XML file")
    p.add_argument("words", nargs="+", metavar="DATA.xyz|key=value", help="extended XYZ files and keys")
    p.add_argument("--json", metavar="FILE", help="write the tables as JSON")
    p.add_argument("--plot", metavar="PREFIX", help="write parity plots PREFIX_energy.png, _forces.png, _virial.png")
    return p


def _names(words: List[str], log, potential: GapPotential) -> TargetNames:
    """The target names: the user's words over the fit's own (the model's recorded command line)."""
    recorded = recorded_target_names(potential.model.command_line)
    given = {TARGET_NAME_SCHEMA.by_name[k].name for k, _ in parse_pairs(" ".join(words)) if k in TARGET_NAME_SCHEMA}
    recorded = [(k, v) for k, v in recorded if TARGET_NAME_SCHEMA.by_name[k].name not in given]
    if recorded:
        log(f"from the model's command line: {' '.join(f'{k}={v}' for k, v in recorded)}")
    return parse_target_names(words, "on the gapfit-eval command line", recorded=recorded)


def evaluate_files(comm, log, potential: GapPotential, paths: List[str], names, collect: bool = False
                   ) -> Dict[str, dict]:
    """{path: error summary} of the model on each file (every rank gets the summaries).

    With ``collect``, rank 0's summaries also carry ``"points"``: the (config_type, reference,
    predicted) values of every frame, for parity plots.
    """
    out = {}
    for path in paths:
        points = ParityPoints() if collect else None
        with log.phase(f"Errors on '{path}'"):
            out[path] = file_errors(comm, log, potential, path, names, "data file", f"'{path}'", points=points)
        if collect:
            merged = points.gather(comm)
            if merged is not None:
                out[path]["points"] = merged
    return out


def plot_parity(summaries: Dict[str, dict], prefix: str, model: str = "") -> List[str]:
    """Parity plots (predicted against reference, coloured by config_type), one PNG per quantity, titled
    with the model, the files and the overall RMSE; each config_type's RMSE in the legend."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib (or gapfit[plot])") from None
    written = []
    for quantity, (title, unit) in _PLOTS.items():
        groups: Dict[str, np.ndarray] = {}
        for summary in summaries.values():
            for ct, ref, pred in summary.get("points", {}).get(quantity, []):
                groups.setdefault(ct, []).append(np.column_stack([np.ravel(ref), np.ravel(pred)]))
        if not groups:
            continue
        groups = {ct: np.concatenate(v) for ct, v in groups.items()}
        fig, ax = plt.subplots(figsize=(6.5, 6))
        colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")  # tab20 repeats after 20
        order = sorted(groups, key=lambda ct: (-len(groups[ct]), ct))  # the largest group underneath
        for ct in order:
            values = groups[ct]
            rmse = 1e3 * np.sqrt(np.mean((values[:, 1] - values[:, 0]) ** 2))
            ax.scatter(values[:, 0], values[:, 1], s=8, alpha=0.6, linewidths=0, color=colours(sorted(groups).index(ct)
                                                                                                 % colours.N),
                       label=f"{ct} ({len(values)}, {rmse:.3g} {unit})")
        everything = np.concatenate(list(groups.values()))
        low, high, outside = _axis_range(everything)
        ax.plot([low, high], [low, high], "k-", lw=0.8)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel(f"reference {title}")
        ax.set_ylabel(f"predicted {title}")
        overall = 1e3 * np.sqrt(np.mean((everything[:, 1] - everything[:, 0]) ** 2))
        files = ", ".join(os.path.basename(p) for p in summaries)
        ax.set_title(f"{os.path.basename(model) or 'model'} on {files}\n{title}: RMSE {overall:.3g} {unit}"
                     + (f"; {outside} points beyond the axes" if outside else ""), fontsize=9)
        ax.legend(fontsize=8, markerscale=2.5, title="config_type (points, RMSE)", title_fontsize=8,
                  ncol=2 if len(groups) > 8 else 1, loc="upper left")
        fig.tight_layout()
        path = f"{prefix}_{quantity}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


_PLOTS = {"energy": ("energy (eV/atom)", "meV/atom"), "forces": ("force components (eV/Å)", "meV/Å"),
          "virial": ("virial (eV/atom)", "meV/atom")}


def _axis_range(values: np.ndarray):
    """(low, high, points outside): all points, unless a few far ones (compressed-volume frames, say)
    would squeeze the rest into a corner; then the 0.5–99.5 percentile range, padded by half of it."""
    lo, hi = float(values.min()), float(values.max())
    q_lo, q_hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if hi - lo > 3 * (q_hi - q_lo) > 0:
        pad = 0.5 * (q_hi - q_lo)
        lo, hi = q_lo - pad, q_hi + pad
    else:
        pad = 0.03 * (hi - lo or 1.0)
        lo, hi = lo - pad, hi + pad
    outside = int(np.count_nonzero(np.any((values < lo) | (values > hi), axis=1)))
    return lo, hi, outside


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)

    comm = get_comm()
    try:
        paths = [w for w in args.words if "=" not in w]
        words = [w for w in args.words if "=" in w]
        parse_target_names(words, "on the gapfit-eval command line")  # bad keys before any work
        if not paths:
            raise ConfigError("no data file given (gapfit-eval MODEL.xml DATA.xyz ...)")
        for path in [args.model] + paths:
            if not os.path.isfile(path):
                raise ConfigError(f"'{path}' does not exist" if not os.path.exists(path) else f"'{path}' is not a file")
        log = Reporter(comm)
        potential = GapPotential.from_file(args.model)  # every rank (the same file: the same outcome)
        names = _names(words, log, potential)
        summaries = evaluate_files(comm, log, potential, paths, names, collect=bool(args.plot))
        if comm.rank == 0:
            if args.plot:
                for path in plot_parity(summaries, args.plot, args.model):
                    log(f"parity plot: {path}")
            if args.json:
                clean = {p: {k: v for k, v in s.items() if k != "points"} for p, s in summaries.items()}
                with open(args.json, "w") as fh:
                    json.dump({"model": args.model, "errors": clean}, fh, indent=1)
                log(f"errors written to {args.json}")
        log.repeat_warnings()
        return 0
    except GapfitError as exc:  # the same on every rank (every rank reads the same files): rank 0 says it
        if comm.rank == 0:
            print(f"gapfit-eval: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
