"""Dataset commands.

``python -m rec.data ml-latest-small [--root DIR]`` prints a dataset's counts.
``python -m rec.data split ml-latest-small [--kind random] [--fractions 0.9,0.05,0.05]
[--seed 0] [--fold u1] [--fold-in 0.8] --out DIR`` writes the exact train, validation and test rows
of a split as CSV (``userId,movieId,rating,timestamp``, the dataset's own ids), with
``split.json`` beside them, so that any other library can be run on the same rows.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from rec.data.export import write_split
from rec.data.load import DATASETS, DataConfig, counts_report, load_dataset
from rec.data.splits import SPLITS, SplitConfig
from rec.errors import ConfigError, RecError


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=DATASETS, help="dataset name")
    parser.add_argument("--root", default=os.environ.get("REC_DATA_ROOT", "data"),
                        help="data root (default: $REC_DATA_ROOT or data/)")
    parser.add_argument("--scale", type=float, default=1.0, help="synthetic: fraction of ML-32M")
    parser.add_argument("--path", help="csv: your ratings file")


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write three fractions like 0.9,0.05,0.05") from None


def split_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rec.data split",
                                     description="Write a split's train, val and test rows as CSV.")
    _dataset_args(parser)
    parser.add_argument("--kind", choices=SPLITS, default="random")
    parser.add_argument("--fractions", type=_fractions,
                        help="train,val,test shares (default: 0.9,0.05,0.05; predefined: 0.95,0.05,0)")
    parser.add_argument("--seed", type=int, help="random / predefined: the split's seed (default 0)")
    parser.add_argument("--fold", help="predefined: the official fold, e.g. u1")
    parser.add_argument("--cold-fraction", type=float,
                        help="cold_movies: share of rated movies held out (default 0.1)")
    parser.add_argument("--fold-in", type=float,
                        help="strong: share of a held-out user's ratings given to fold them in "
                             "(default 0.8; written to fold_in.csv)")
    parser.add_argument("--out", required=True, type=Path, help="folder for train.csv, val.csv, test.csv")
    return parser


def _split_config(args: argparse.Namespace) -> SplitConfig:
    default = SplitConfig.default_fractions(args.kind)
    if len(args.fractions or default) != 3:
        raise ConfigError(f"--fractions {','.join(map(str, args.fractions))}: write three shares.")
    return SplitConfig(kind=args.kind, fractions=args.fractions or default, fold=args.fold,
                       seed=0 if args.seed is None else args.seed, cold_fraction=args.cold_fraction,
                       fold_in=args.fold_in)


def _data_config(args: argparse.Namespace) -> DataConfig:
    return DataConfig(name=args.name, root=args.root, scale=args.scale, path=args.path)


def split_main(argv: list[str]) -> str:
    args = split_parser().parse_args(argv)
    split = _split_config(args)
    ratings = load_dataset(_data_config(args), timestamps=True)
    info = write_split(ratings, split, args.out)
    sizes = info["sizes"]
    return (f"{ratings.name} {split.tag()}: {sizes['train']:,} train, {sizes['val']:,} val, "
            f"{sizes['test']:,} test rows" + (f", {sizes['fold_in']:,} given to fold held-out "
            "users in" if "fold_in" in sizes else "") + f" -> {args.out}")


def counts_main(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(prog="python -m rec.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _dataset_args(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = counts_report(load_dataset(_data_config(args)))
    return f"{report}\nloaded in     {time.perf_counter() - start:.2f} s"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(split_main(argv[1:]) if argv[:1] == ["split"] else counts_main(argv))
    except RecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
