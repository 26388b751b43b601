"""implicit 0.7.3's CPU ALS on rec's training rows, seconds per iteration (peers' virtualenv).

    python benchmarks/implicit_speed.py SPLIT_DIR --K 64 --threads 2 [--iterations 3]

Reads ``train.csv`` of ``python -m rec.data split`` (every training rating an interaction,
as rec's implicit rung takes them), fits implicit's conjugate-gradient ALS (its default)
one iteration at a time, and prints the median and min seconds per iteration.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("split")
    parser.add_argument("--K", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()
    from implicit.cpu.als import AlternatingLeastSquares
    train = pd.read_csv(f"{args.split}/train.csv", usecols=["userId", "movieId"])
    users, u = np.unique(train["userId"].to_numpy(), return_inverse=True)
    items, i = np.unique(train["movieId"].to_numpy(), return_inverse=True)
    csr = sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)),
                        shape=(len(users), len(items)))
    model = AlternatingLeastSquares(factors=args.K, iterations=1, num_threads=args.threads,
                                    random_state=0)
    seconds = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        model.fit(csr, show_progress=False)  # one more iteration from where it stands
        seconds.append(time.perf_counter() - start)
    print(f"implicit 0.7.3 ALS (conjugate gradient), K = {args.K}, {args.threads} threads, "
          f"{csr.nnz:,} interactions: s/iteration median {statistics.median(seconds):.3f}, "
          f"min {min(seconds):.3f}")


if __name__ == "__main__":
    main()
