"""The ``gapfit-eval`` command: a GAP XML's errors on labelled extended XYZ files, per config_type.

    gapfit-eval MODEL.xml DATA.xyz [MORE.xyz ...] [key=value ...] [--json FILE] [--plot PREFIX]

Any GAP XML that gapfit's calculator evaluates (gapfit's, gap_fit's, with a Glue core or not).
The keys are the fit's: ``energy_parameter_name``, ``force_parameter_name``,
``virial_parameter_name``, ``stress_parameter_name``, ``config_type_parameter_name``,
``force_mask_parameter_name``, ``parameter_name_prefix``.  The table is the one a fit prints for
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

from ..config.targets import TargetNames, parse_target_names
from ..errors import ConfigError, GapfitError
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


def _names(words: List[str]):
    return parse_target_names(words, "on the gapfit-eval command line")


def evaluate_files(comm, log, model_path: str, paths: List[str], names, collect: bool = False) -> Dict[str, dict]:
    """{path: error summary} of the model on each file (every rank gets the summaries).

    With ``collect``, rank 0's summaries also carry ``"points"``: the (config_type, reference,
    predicted) values of every frame, for parity plots.
    """

    potential = GapPotential.from_file(model_path)  # every rank (the same file: the same outcome)
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


def plot_parity(summaries: Dict[str, dict], prefix: str) -> List[str]:
    """Parity plots (predicted against reference, coloured by config_type), one PNG per quantity."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib (or gapfit[plot])") from None
    written = []
    titles = {"energy": "energy (eV/atom)", "forces": "force components (eV/Å)", "virial": "virial (eV/atom)"}
    for quantity, title in titles.items():
        groups: Dict[str, list] = {}
        for summary in summaries.values():
            for ct, ref, pred in summary.get("points", {}).get(quantity, []):
                groups.setdefault(ct, []).append((ref, pred))
        if not groups:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 5))
        low, high = np.inf, -np.inf
        # one colour per config_type: tab10 repeats after 10 groups, tab20 does not before 20
        colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
        for k, ct in enumerate(sorted(groups)):
            values = np.concatenate([np.column_stack([np.ravel(r), np.ravel(p)]) for r, p in groups[ct]])
            ax.scatter(values[:, 0], values[:, 1], s=6, label=ct, alpha=0.7, color=colours(k % colours.N))
            low, high = min(low, values.min()), max(high, values.max())
        ax.plot([low, high], [low, high], "k-", lw=0.8)
        ax.set_xlabel(f"reference {title}")
        ax.set_ylabel(f"predicted {title}")
        ax.legend(fontsize=6, markerscale=2, ncol=2 if len(groups) > 8 else 1)
        fig.tight_layout()
        path = f"{prefix}_{quantity}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)

    comm = get_comm()
    try:
        paths = [w for w in args.words if "=" not in w]
        names = _names([w for w in args.words if "=" in w])
        if not paths:
            raise ConfigError("no data file given (gapfit-eval MODEL.xml DATA.xyz ...)")
        for path in [args.model] + paths:
            if not os.path.isfile(path):
                raise ConfigError(f"'{path}' does not exist" if not os.path.exists(path) else f"'{path}' is not a file")
        log = Reporter(comm)
        summaries = evaluate_files(comm, log, args.model, paths, names, collect=bool(args.plot))
        if comm.rank == 0:
            if args.plot:
                for path in plot_parity(summaries, args.plot):
                    log(f"parity plot: {path}")
            if args.json:
                clean = {p: {k: v for k, v in s.items() if k != "points"} for p, s in summaries.items()}
                with open(args.json, "w") as fh:
                    json.dump({"model": args.model, "errors": clean}, fh, indent=1)
                log(f"errors written to {args.json}")
        return 0
    except GapfitError as exc:  # the same on every rank (every rank reads the same files): rank 0 says it
        if comm.rank == 0:
            print(f"gapfit-eval: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
