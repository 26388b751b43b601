"""Seconds per training epoch of LensKit's BiasedMF on a split folder's train.csv.

Run inside the peers' virtualenv by ``benchmarks/speed.sh``, right after rec's own benchmark
on the same ratings:  ``python benchmarks/lenskit_speed.py SPLIT_DIR --K 10 --epochs 5``.
Prints one line: ``lenskit BiasedMF K=.. threads=..: s/epoch median .. min .. (epochs ..)``.
The first epoch is timed apart (it warms LensKit's compiled kernels up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("split", type=Path)
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("LK_NUM_THREADS", str(args.threads))
    os.environ.setdefault("LK_NUM_BACKEND_THREADS", str(args.threads))
    import pandas as pd
    from lenskit.als import BiasedMFScorer
    from lenskit.data import from_interactions_df
    from lenskit.parallel import ensure_parallel_init
    from lenskit.training import TrainingOptions

    ensure_parallel_init()
    train = pd.read_csv(args.split / "train.csv", usecols=["userId", "movieId", "rating"])
    data = from_interactions_df(train, user_col="userId", item_col="movieId", rating_col="rating")
    start = time.perf_counter()
    trainer = BiasedMFScorer(embedding_size=args.K).create_trainer(data, TrainingOptions(rng=0))
    setup = time.perf_counter() - start
    seconds = []
    for _ in range(args.epochs + 1):
        start = time.perf_counter()
        trainer.train_epoch()
        seconds.append(time.perf_counter() - start)
    import torch
    print(f"lenskit BiasedMF K={args.K} threads={args.threads} ({len(train):,} ratings): s/epoch "
          f"median {statistics.median(seconds[1:]):.3f} min {min(seconds[1:]):.3f} "
          f"(first {seconds[0]:.3f}, {args.epochs} timed; setup {setup:.2f} s; "
          f"torch threads {torch.get_num_threads()})", flush=True)


if __name__ == "__main__":
    main()
