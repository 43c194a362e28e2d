"""What the in-process benchmarks (e0_methods.py, seed_spread.py) share: a --data file that must exist
and --threads, set for BLAS before NumPy is imported."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional


def parse_data_and_threads(parser: argparse.ArgumentParser, argv=None) -> Optional[argparse.Namespace]:
    """Parse ``argv`` (``parser`` has ``--data``); None, with one line on stderr, if the data file is missing."""
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="BLAS threads")
    args = parser.parse_args(argv)
    if not os.path.exists(args.data):
        print(f"no data at {args.data}: give --data", file=sys.stderr)
        return None
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    return args
