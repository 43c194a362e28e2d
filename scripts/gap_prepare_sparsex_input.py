#!/usr/bin/env python3
"""Prepare the second step of gap_fit's two-step workflow from a sparsified GAP XML.

The equivalent of QUIP's bin/gap_prepare_sparsex_input.py, for XMLs written by gap_fit or
gapfit with sparsify_only_no_fit=T:

    python scripts/gap_prepare_sparsex_input.py gp.xml

writes, next to gp.xml, one ``<sparseX file>.input`` per descriptor (sparse_method=file
format: a cutoff line, then the d values of each sparse point) and ``gp.xml.fit.cfg``, the
complete options of the fit that uses them (add_species=F, sparse_method=file per expanded
descriptor).  Then, from the same directory:

    mpirun -n 4 gapfit config_file=gp.xml.fit.cfg
"""

import argparse
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("xml", help="GAP XML written with sparsify_only_no_fit=T (by gap_fit or gapfit)")
    p.add_argument("--options", help="where to write the options file (default: <xml>.fit.cfg)")
    p.add_argument("--relative-to", help="directory the second run starts in (default: the XML's directory)")
    args = p.parse_args(argv)
    try:
        from gapfit.errors import GapfitError
        from gapfit.fit.two_step import prepare_second_run
    except ImportError:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        from gapfit.errors import GapfitError
        from gapfit.fit.two_step import prepare_second_run
    try:
        files, options = prepare_second_run(args.xml, args.options, args.relative_to)
    except GapfitError as exc:
        print(f"gap_prepare_sparsex_input: error: {exc}", file=sys.stderr)
        return 1
    for f in files:
        print(f"wrote {f}")
    start = os.path.abspath(args.relative_to or os.path.dirname(os.path.abspath(args.xml)))
    print(f"next, from {start}:\n    gapfit config_file={os.path.relpath(options, start)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
