"""Top-N peers on rec's exported split (run inside the peers' own virtualenv).

    python benchmarks/topn_peers.py SPLIT_DIR OUT_DIR [--budget 12]

SPLIT_DIR holds ``train.csv``, ``val.csv`` and ``test.csv`` as ``python -m rec.data split``
writes them.  Each peer (implicit 0.7.3's ALS and BPR, LensKit's ImplicitMF) is fitted on
``train.csv`` for each of ``--budget`` settings, ranks every movie the person did not rate
in training, and is chosen by validation NDCG@10 (a held-out rating >= 4 is relevant), as
``benchmarks/topn.py`` chooses rec's.  Each grid covers the same two choices of which training
ratings count as interactions as rec's and EASE's (all, or those >= 3: ``INTERACTIONS``).  The chosen setting's top-10 lists of the test users
go to ``OUT_DIR/<peer>.json``; ``benchmarks/topn.py --peers OUT_DIR`` scores them with rec's
metric code on the same rows.  rec is not imported here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

K, RELEVANT = 10, 4.0
INTERACTIONS = (None, 3.0)
"""As in ``benchmarks/topn.py``: every training rating an interaction, or those >= 3."""


def label(at_least: float | None) -> str:
    return "all" if at_least is None else f">={at_least:g}"


def ndcg(lists: dict, held: pd.DataFrame) -> float:
    relevant = held[held["rating"] >= RELEVANT].groupby("userId")["movieId"].apply(set)
    scores = []
    for user, rel in relevant.items():
        top = lists.get(user, [])[:K]
        dcg = sum(1 / np.log2(r + 2) for r, m in enumerate(top) if m in rel)
        ideal = sum(1 / np.log2(r + 2) for r in range(min(K, len(rel))))
        scores.append(dcg / ideal)
    return float(np.mean(scores))


class Matrix:
    """The training ratings as a users x movies CSR (``seen``: every one, excluded from the
    person's candidates), with the id maps; :meth:`of` the interactions a model fits."""

    def __init__(self, train: pd.DataFrame):
        self.train = train
        self.users = np.unique(train["userId"].to_numpy())
        self.items = np.unique(train["movieId"].to_numpy())
        self.seen = self.of(None)

    def of(self, at_least: float | None) -> sp.csr_matrix:
        """The users x movies CSR of the training ratings of at least ``at_least`` (all)."""
        t = self.train if at_least is None else self.train[self.train["rating"] >= at_least]
        u = np.searchsorted(self.users, t["userId"].to_numpy())
        i = np.searchsorted(self.items, t["movieId"].to_numpy())
        return sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)),
                             shape=(len(self.users), len(self.items)))

    def lists(self, scores_of, held: pd.DataFrame) -> dict:
        wanted = np.unique(held.loc[held["rating"] >= RELEVANT, "userId"].to_numpy())
        rows = np.searchsorted(self.users, wanted)
        known = self.users[np.clip(rows, 0, len(self.users) - 1)] == wanted
        out = {}
        for user, row in zip(wanted[known], rows[known]):
            s = np.array(scores_of(row), dtype=np.float64)
            s[self.seen.indices[self.seen.indptr[row]:self.seen.indptr[row + 1]]] = -np.inf
            top = np.argpartition(-s, K)[:K]
            out[int(user)] = [int(self.items[i]) for i in top[np.argsort(-s[top])]]
        return out


def implicit_als(m: Matrix, budget: int):
    from implicit.als import AlternatingLeastSquares
    grid = itertools.product(INTERACTIONS, (256,), (3.0, 10.0, 30.0), (1.0, 2.0))
    for at_least, factors, reg, alpha in list(grid)[:budget]:
        model = AlternatingLeastSquares(factors=factors, regularization=reg, alpha=alpha,
                                        iterations=15, random_state=0)
        model.fit(m.of(at_least), show_progress=False)
        f, g = np.asarray(model.user_factors), np.asarray(model.item_factors)
        yield {"factors": factors, "regularization": reg, "alpha": alpha,
               "interactions": label(at_least)}, lambda r, f=f, g=g: g @ f[r]


def implicit_bpr(m: Matrix, budget: int):
    from implicit.bpr import BayesianPersonalizedRanking
    grid = itertools.product(INTERACTIONS, (128,), (0.01, 0.05), (0.001, 0.01, 0.1))
    for at_least, factors, lr, reg in list(grid)[:budget]:
        model = BayesianPersonalizedRanking(factors=factors, learning_rate=lr, regularization=reg,
                                            iterations=100, random_state=0)
        model.fit(m.of(at_least), show_progress=False)
        f, g = np.asarray(model.user_factors), np.asarray(model.item_factors)
        yield {"factors": factors, "learning_rate": lr, "regularization": reg,
               "interactions": label(at_least)}, lambda r, f=f, g=g: g @ f[r]


def embedded(table: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """Rows of ``table`` at ``numbers``; zeros where -1 (a person or movie without
    interactions under the threshold: no score beyond the others')."""
    out = table[np.maximum(numbers, 0)]
    out[numbers < 0] = 0
    return out


def lenskit_implicit_mf(m: Matrix, train: pd.DataFrame, budget: int):
    from lenskit.als import ImplicitMFScorer
    from lenskit.data import from_interactions_df
    from lenskit.training import TrainingOptions
    grid = itertools.product(INTERACTIONS, (128,), (0.1, 1.0, 10.0), (10.0, 40.0))
    for at_least, size, reg, weight in list(grid)[:budget]:
        kept = train if at_least is None else train[train["rating"] >= at_least]
        data = from_interactions_df(kept[["userId", "movieId"]], user_col="userId",
                                    item_col="movieId")
        scorer = ImplicitMFScorer(embedding_size=size, regularization=reg, weight=weight,
                                  epochs=15)
        scorer.train(data, TrainingOptions(rng=0))
        f, g = (embedded(np.asarray(e), vocabulary.numbers(ids, missing="negative"))
                for e, vocabulary, ids in ((scorer.user_embeddings, scorer.users, m.users),
                                           (scorer.item_embeddings, scorer.items, m.items)))
        yield {"embedding_size": size, "regularization": reg, "weight": weight,
               "interactions": label(at_least)}, lambda r, f=f, g=g: g @ f[r]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("split", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--budget", type=int, default=12)
    args = parser.parse_args()
    train, val, test = (pd.read_csv(args.split / f"{p}.csv") for p in ("train", "val", "test"))
    m = Matrix(train)
    args.out.mkdir(parents=True, exist_ok=True)
    peers = {"implicit 0.7.3 ALS": lambda: implicit_als(m, args.budget),
             "implicit 0.7.3 BPR": lambda: implicit_bpr(m, args.budget),
             "LensKit ImplicitMF": lambda: lenskit_implicit_mf(m, train, args.budget)}
    for name, candidates in peers.items():
        best, tried, start = None, 0, time.perf_counter()
        for setting, scores_of in candidates():
            tried += 1
            score = ndcg(m.lists(scores_of, val), val)
            if best is None or score > best["val_ndcg"]:
                best = {"name": name, "setting": setting, "val_ndcg": score,
                        "test_lists": m.lists(scores_of, test)}
        best.update(tried=tried, seconds=time.perf_counter() - start)
        (args.out / f"{name.replace(' ', '_')}.json").write_text(json.dumps(best))
        print(f"{name}: {best['setting']} val NDCG@{K} {best['val_ndcg']:.4f} "
              f"({tried} settings, {best['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
