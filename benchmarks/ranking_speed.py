"""Seconds to rank every test user over every candidate movie, as training's metrics do.

    python benchmarks/ranking_speed.py [--data synthetic] [--K 10 64] [--threads 2] [--repeats 3]

Loads the dataset (default: synthetic data of ML-32M's shape), takes rec's random split, and
times :func:`rec.metrics.ranking_sums` over every user with a relevant test rating (no
sample), every movie the user did not rate in training a candidate, with parameters of
width K (random: the time does not depend on their values).  Finding each user's training
movies, done once per run and kept, is timed apart.  Prints min and median of the repeats
and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: rec beside it

from rec.als import Params
from rec.data import DataConfig, load_dataset, make_split
from rec.metrics import pairs_of_users, ranked_users, ranking_sums
from rec.system import cpu_model

K_TOP = 10
RELEVANT = 4.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--root", default=None,
                        help="data root (default: the checkout's data/ for synthetic, which is "
                             "generated there, else $REC_DATA_ROOT or data/)")
    parser.add_argument("--K", type=int, nargs="+", default=[10, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.root or (str(Path(__file__).resolve().parents[1] / "data")
                         if args.data == "synthetic" else os.environ.get("REC_DATA_ROOT", "data"))
    ratings = load_dataset(DataConfig(name=args.data, root=root))
    split = make_split(ratings)
    test = split.test.long()
    user, item, rating = ratings.user[test], ratings.item[test], ratings.rating[test]
    start = time.perf_counter()
    users = ranked_users(user, rating, ratings.n_users, RELEVANT)[0]
    seen_user, seen_item = pairs_of_users(ratings, split.train, users)
    setup = time.perf_counter() - start
    popularity = ratings.item_counts(split.train)
    print(f"# {ratings.name}: {ratings.n_users:,} users, {ratings.n_items:,} movies; "
          f"{users.numel():,} test users ranked over every movie they did not rate in training "
          f"({seen_item.numel():,} training pairs left out); top {K_TOP}")
    print(f"# machine: {cpu_model()}, {torch.get_num_threads()} threads, "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    print(f"# finding the users and their training movies (once per run): {setup:.2f} s")
    print("| K | s for all users (min) | (median) | users per s |")
    print("|---|---|---|---|")
    for k in args.K:
        g = torch.Generator().manual_seed(k)
        p = Params(0.0, torch.randn(ratings.n_users, k, generator=g), torch.zeros(ratings.n_users),
                   torch.randn(ratings.n_items, k, generator=g), torch.zeros(ratings.n_items),
                   torch.zeros(0, k), torch.zeros(0))
        seconds = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            ranking_sums(p, seen_user, seen_item, user, item, rating, K_TOP, RELEVANT, users,
                         popularity=popularity)
            seconds.append(time.perf_counter() - t)
        best = min(seconds)
        print(f"| {k} | {best:.2f} | {statistics.median(seconds):.2f} | "
              f"{users.numel() / best:,.0f} |")


if __name__ == "__main__":
    main()
