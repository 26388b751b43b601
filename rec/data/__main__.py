"""Print a dataset's counts: ``python -m rec.data ml-latest-small [--root DIR]``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from rec.data.load import DATASETS, DataConfig, counts_report, load_dataset
from rec.errors import RecError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rec.data", description=__doc__)
    parser.add_argument("name", choices=DATASETS, help="dataset name")
    parser.add_argument("--root", default=os.environ.get("REC_DATA_ROOT", "data"),
                        help="data root (default: $REC_DATA_ROOT or data/)")
    parser.add_argument("--scale", type=float, default=1.0, help="synthetic: fraction of ML-32M")
    parser.add_argument("--path", help="csv: your ratings file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    try:
        ratings = load_dataset(DataConfig(name=args.name, root=args.root, scale=args.scale,
                                          path=args.path))
    except RecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(counts_report(ratings))
    print(f"loaded in     {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
