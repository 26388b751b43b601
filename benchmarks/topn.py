"""Top-N lists on identical rows: rec's implicit rung and explicit models against most popular
and EASE, each chosen on validation with the same budget, with paired bootstrap intervals.

    python benchmarks/topn.py [--data ml-latest-small] [--budget 12] [--peers DIR]

Every system sees rec's split of the dataset (random 0.9/0.05/0.05, seed 0, as
``python -m rec.data split`` exports it), ranks every movie the person did not rate in
training, and counts a held-out rating >= 4 as relevant.  Each system's settings are the
best of ``--budget`` settings by validation NDCG@10 (never test), and every implicit system's
grid covers the same choice of which training ratings count as interactions
(:data:`INTERACTIONS`), rec's and EASE's also that of graded targets (:data:`LIKED`); the
table reports test
metrics and, against rec's implicit rung, the paired bootstrap 95% interval of the
difference in NDCG@10 (the same users redrawn for both).  ``--peers DIR`` adds the lists
that ``benchmarks/topn_peers.py`` wrote there (implicit's ALS and BPR, LensKit's
ImplicitMF), run in the peers' own virtualenv on the same exported rows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: rec beside it

from rec.als import ModelConfig
from rec.data import DataConfig, load_dataset, make_split
from rec.metrics import PER_USER, list_metrics, pairs_of_users, ranked_lists, ranked_users
from rec.model import Recommender
from rec.system import cpu_model
from rec.training import TrainConfig, fit

K = 10
RELEVANT = 4.0


class Rows:
    """The split's rows as the metrics need them, for validation or test."""

    def __init__(self, ratings, split, part: str):
        self.r, self.split = ratings, split
        idx = getattr(split, part)
        self.user, self.item, self.rating = (ratings.user[idx].long(), ratings.item[idx].long(),
                                             ratings.rating[idx])
        self.users = ranked_users(self.user, self.rating, ratings.n_users, RELEVANT)[0]
        self.seen = pairs_of_users(ratings, split.train, self.users)
        self.popularity = ratings.item_counts(split.train)

    def table(self, scores) -> tuple[torch.Tensor, torch.Tensor]:
        """Per user of :attr:`users`: the metrics of :data:`PER_USER`, and the top-K lists."""
        out = [(rows, top) for rows, top in ranked_lists(
            scores, self.r.n_users, self.r.n_items, *(x.long() for x in self.seen), self.user,
            self.item, self.rating, K, RELEVANT, self.users, popularity=self.popularity)]
        return torch.cat([r for r, _ in out]), torch.cat([t for _, t in out])

    def of_lists(self, lists: dict[int, list[int]]) -> torch.Tensor:
        """The metrics of given top-K lists (user index -> movie indices, best first)."""
        top = torch.tensor([(lists.get(int(u), []) + [-1] * K)[:K] for u in self.users])
        relevant = set(zip(self.user[self.rating >= RELEVANT].tolist(),
                           self.item[self.rating >= RELEVANT].tolist()))
        hits = torch.tensor([[float((int(u), int(i)) in relevant) for i in row]
                             for u, row in zip(self.users, top)], dtype=torch.float64)
        n_rel = torch.tensor([sum(1 for (a, _) in relevant if a == int(u)) for u in self.users],
                             dtype=torch.float64)
        pop = torch.where(top >= 0, self.popularity[top.clamp(min=0)], 0).double()
        return list_metrics(hits, n_rel, K, pop)


def summary(rows: torch.Tensor, lists: torch.Tensor | None, n_items: int) -> dict:
    out = {name: float(rows[:, j].mean()) for j, name in enumerate(PER_USER)}
    if lists is not None:
        out["coverage"] = float(torch.unique(lists[lists >= 0]).numel() / n_items)
    return out


def paired_interval(a: torch.Tensor, b: torch.Tensor, n_boot: int = 2000, seed: int = 0):
    """Mean of ``a - b`` over users, with its paired bootstrap 95% percentile interval."""
    g = torch.Generator().manual_seed(seed)
    d = (a - b).double()
    draws = torch.randint(0, d.numel(), (n_boot, d.numel()), generator=g)
    means = d[draws].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(d.mean()), float(lo), float(hi)


def popular(ratings, split):
    counts = ratings.item_counts(split.train).double()
    yield "most popular", {}, lambda users: counts.expand(len(users), -1)


INTERACTIONS = (None, 3.0)
"""Which training ratings count as interactions, searched by every implicit system alike: all
of them, or those of at least 3 (ratings are explicit here; a low one says the person did not
like what they watched).  Whatever counts, every movie rated in training is excluded from the
person's candidates."""


def label(at_least: float | None) -> str:
    return "all" if at_least is None else f">={at_least:g}"


def interactions(ratings, split, at_least: float | None) -> torch.Tensor:
    """Positions of the training ratings that count as interactions."""
    idx = split.train
    return idx if at_least is None else idx[ratings.rating[idx] >= at_least]


LIKED = (None, 4.0)
"""Each interaction's target, searched by rec's implicit rung and EASE alike: 1 for every one,
or 1 for those rated at least 4 (the relevance rule) and :data:`UNLIKED` for the others (rec:
``model.liked_min``, ``model.unliked_target``; EASE: the entries of X)."""
UNLIKED = 0.5


def ease(ratings, split, budget: int):
    """EASE (Steck 2019): ``B = I - P diag(1 / diag P)``, ``P = (X^T X + lambda I)^-1``;
    lambda on a geometric grid for each choice of :data:`INTERACTIONS` and :data:`LIKED`."""
    lambdas = np.geomspace(100, 1000, max(1, budget // (len(INTERACTIONS) * len(LIKED))))
    for at_least, liked in itertools.product(INTERACTIONS, LIKED):
        idx = interactions(ratings, split, at_least)
        x = torch.zeros(ratings.n_users, ratings.n_items)
        rated = ratings.rating[idx]
        x[ratings.user[idx].long(), ratings.item[idx].long()] = torch.ones_like(rated) \
            if liked is None else torch.where(rated >= liked, 1.0, UNLIKED)
        gram = x.T @ x
        for lam in lambdas:
            p = torch.linalg.inv(gram + lam * torch.eye(gram.shape[0]))
            b = -p / p.diagonal()
            b.fill_diagonal_(0.0)
            yield "EASE", {"lambda": round(float(lam), 1), "interactions": label(at_least),
                           "liked_min": liked}, lambda users, b=b, x=x: x[users.long()] @ b


REC_GRID = {"K": (256,), "tau_alpha0": ((0.002, 0.8), (0.002, 1.6), (0.001, 1.6))}


def rec_implicit(ratings, split, budget: int):
    settings = list(itertools.product(INTERACTIONS, LIKED, REC_GRID["K"],
                                      REC_GRID["tau_alpha0"]))
    for at_least, liked, k, (tau, alpha0) in settings[:budget]:
        cfg = ModelConfig(name="features", K=k, feedback="implicit", tau=tau, alpha0=alpha0,
                          interaction_min=at_least, liked_min=liked, unliked_target=UNLIKED)
        result = fit(ratings, split, cfg, TrainConfig(max_epochs=40, patience=3,
                                                      ranking_max_users=None))
        p = result.params
        yield "rec implicit (features)", {"K": k, "tau": tau, "alpha0": alpha0,
                                          "interactions": label(at_least),
                                          "liked_min": liked}, \
            lambda users, p=p: p.user_factors[users.long()] @ p.item_factors.T


EXPLICIT = {"latent": {"tau": 0.1, "reg_scaling": "count"},
            "biases": {"tau": 1.0, "gamma": 2.0},
            "embeddings": {"tau": 15.0, "gamma": 3.0},
            "features": {"tau": 15.0, "gamma": 3.0, "genre_bias": True, "svdpp_flipped": True,
                         "movie_year": True, "time_drift": True}}
"""Each explicit rung as ``conf/model/`` ships it (features: as
``conf/tuned/ml-latest-small_features.yaml`` tunes it, with the flipped term, the release decade
and the person's drift), K = 10."""


def rec_explicit(ratings, split, rung: str):
    """An explicit rung's ``recommend()``: predicted rating plus its validated popularity term
    (no settings to choose here: the explicit rung is tuned for RMSE, and the popularity
    weight on validation as it trains)."""
    cfg = ModelConfig(name=rung, **{"K": 10, **EXPLICIT[rung]})
    result = fit(ratings, split, cfg, TrainConfig(max_epochs=200, relaxation=1.8,
                                                  ranking_max_users=None))
    model = Recommender.from_training(ratings, split.train, result.params, cfg, result.final)
    p, w = model.params, model.popularity_weight
    pop = w * torch.log1p(model.item_counts.float())
    yield f"rec explicit ({rung}, recommend)", {"popularity_weight": w}, \
        lambda users, p=p: pop + p.item_bias + p.user_factors[users.long()] @ p.item_factors.T


def choose(candidates, val: Rows, test: Rows) -> dict:
    """The candidate with the best validation NDCG@10, and its test rows and lists."""
    best, tried, start = None, 0, time.perf_counter()
    for name, setting, scores in candidates:
        tried += 1
        ndcg = float(val.table(scores)[0][:, PER_USER.index("ndcg")].mean())
        if best is None or ndcg > best["val_ndcg"]:
            rows, lists = test.table(scores)
            best = {"name": name, "setting": setting, "val_ndcg": ndcg, "rows": rows,
                    "lists": lists}
    best.update(tried=tried, seconds=time.perf_counter() - start)
    return best


def peer_lists(folder: Path, ratings, val: Rows, test: Rows) -> list[dict]:
    """The peers' chosen lists from ``benchmarks/topn_peers.py`` (ids mapped to rec's indices)."""
    users = {int(u): i for i, u in enumerate(ratings.user_ids.tolist())}
    items = {int(m): i for i, m in enumerate(ratings.movies.ids.tolist())}
    out = []
    for path in sorted(folder.glob("*.json")):
        run = json.loads(path.read_text())
        lists = {users[int(u)]: [items[int(m)] for m in ms] for u, ms in run["test_lists"].items()}
        rows = test.of_lists(lists)
        out.append({"name": run["name"], "setting": run["setting"], "val_ndcg": run["val_ndcg"],
                    "rows": rows, "lists": None, "tried": run["tried"],
                    "seconds": run["seconds"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="ml-latest-small")
    parser.add_argument("--root", default=None, help="data root (default $REC_DATA_ROOT or data)")
    parser.add_argument("--budget", type=int, default=12, help="settings tried per system")
    parser.add_argument("--peers", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.root or os.environ.get("REC_DATA_ROOT", "data")
    ratings = load_dataset(DataConfig(name=args.data, root=root))
    split = make_split(ratings)
    val, test = Rows(ratings, split, "val"), Rows(ratings, split, "test")
    systems = [choose(popular(ratings, split), val, test),
               choose(ease(ratings, split, args.budget), val, test),
               choose(rec_implicit(ratings, split, args.budget), val, test)]
    systems += [choose(rec_explicit(ratings, split, rung), val, test) for rung in EXPLICIT]
    if args.peers:
        systems += peer_lists(args.peers, ratings, val, test)
    popular_rows, ours = systems[0]["rows"][:, 2], systems[2]
    print(f"# {args.data}, rec's random split; {test.users.numel()} test users with a rating "
          f">= {RELEVANT:g}; every unrated movie a candidate; budget {args.budget} settings "
          f"per system, chosen by validation NDCG@{K}")
    print(f"# machine: {cpu_model()}, {torch.get_num_threads()} threads, {platform.python_version()}")
    print(f"| system | chosen on validation | tried | val NDCG@{K} | precision@{K} | recall@{K} | "
          f"NDCG@{K} | MAP@{K} | hit rate | coverage | mean popularity | NDCG@{K} - rec implicit "
          f"(95% paired bootstrap) | NDCG@{K} - most popular (95% paired bootstrap) |")
    print("|" + "---|" * 13)
    for s in systems:
        m = summary(s["rows"], s["lists"], ratings.n_items)
        d, lo, hi = paired_interval(s["rows"][:, 2], ours["rows"][:, 2])
        setting = ", ".join(f"{k}={v}" for k, v in s["setting"].items()) or "-"
        diff = "-" if s is ours else f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        d, lo, hi = paired_interval(s["rows"][:, 2], popular_rows)
        above = "-" if s is systems[0] else f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        cover = f"{m['coverage']:.1%}" if "coverage" in m else "-"
        print(f"| {s['name']} | {setting} | {s['tried']} | {s['val_ndcg']:.4f} | "
              f"{m['precision']:.4f} | {m['recall']:.4f} | {m['ndcg']:.4f} | {m['map']:.4f} | "
              f"{m['hit_rate']:.3f} | {cover} | {m['popularity']:.1f} | {diff} | {above} |")


if __name__ == "__main__":
    main()
