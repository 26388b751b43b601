"""Run the peer libraries on rec's exact split rows (run inside benchmarks' own virtualenv).

    python benchmarks/peers.py SPLIT_DIR PREDICTIONS_DIR

SPLIT_DIR holds ``train.csv``, ``val.csv``, ``test.csv`` and ``movies.csv`` as
``python -m rec.data split`` and ``benchmarks/peers.sh`` write them.  Each peer is
fitted on ``train.csv`` with its documented defaults (K = 10 where it has
factors) and predicts every row of ``test.csv``, in order; the predictions go to
``PREDICTIONS_DIR/<system>.csv`` (one column, ``prediction``), with the seconds
each fit took in ``PREDICTIONS_DIR/peers.json``.  rec is not imported here: the
peers run in their own environment.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

RATING_SCALE = (0.5, 5.0)


def surprise_model(name: str):
    from surprise import SVD, BaselineOnly
    return {"BaselineOnly": lambda: BaselineOnly(verbose=False),
            "SVD": lambda: SVD(random_state=0)}[name]()


def run_surprise(name: str, train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    from surprise import Dataset, Reader
    data = Dataset.load_from_df(train[["userId", "movieId", "rating"]], Reader(rating_scale=RATING_SCALE))
    algo = surprise_model(name)
    algo.fit(data.build_full_trainset())
    return np.array([algo.predict(u, i).est for u, i in zip(test["userId"], test["movieId"])])


def run_lenskit(k: int, train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    from lenskit.als import BiasedMFScorer
    from lenskit.batch import predict
    from lenskit.data import ItemListCollection, from_interactions_df
    from lenskit.pipeline import predict_pipeline
    from lenskit.training import TrainingOptions
    data = from_interactions_df(train, user_col="userId", item_col="movieId", rating_col="rating")
    pipe = predict_pipeline(BiasedMFScorer(embedding_size=k))
    pipe.train(data, TrainingOptions(rng=0))  # seeded: the same run twice gives the same RMSE
    pairs = test.rename(columns={"userId": "user_id", "movieId": "item_id"})[["user_id", "item_id"]]
    queries = ItemListCollection.from_df(pairs, ["user_id"])
    out = predict(pipe, queries, n_jobs=1).to_df()
    out = out.rename(columns={"user_id": "userId", "item_id": "movieId"})
    merged = test[["userId", "movieId"]].merge(out, on=["userId", "movieId"], how="left")
    return merged["score"].to_numpy()


def genre_table(movies: pd.DataFrame) -> pd.DataFrame:
    """One row per movie, one 0/1 column per genre (cmfrec's item side information)."""
    genres = movies["genres"].fillna("").str.get_dummies("|")
    genres = genres.drop(columns=["(no genres listed)"], errors="ignore")
    return pd.concat([movies[["movieId"]].rename(columns={"movieId": "ItemId"}), genres], axis=1)


def run_cmfrec(k: int, train: pd.DataFrame, test: pd.DataFrame, movies: pd.DataFrame | None) -> np.ndarray:
    from cmfrec import CMF
    X = train.rename(columns={"userId": "UserId", "movieId": "ItemId", "rating": "Rating"})
    model = CMF(method="als", k=k, verbose=False, random_state=0)
    if movies is None:
        model.fit(X[["UserId", "ItemId", "Rating"]])
    else:
        model.fit(X[["UserId", "ItemId", "Rating"]], I=genre_table(movies))
    return np.asarray(model.predict(user=test["userId"].to_numpy(), item=test["movieId"].to_numpy()))


SYSTEMS = {
    "surprise-BaselineOnly": lambda tr, te, mv: run_surprise("BaselineOnly", tr, te),
    "surprise-SVD": lambda tr, te, mv: run_surprise("SVD", tr, te),
    "lenskit-BiasedMF-K10": lambda tr, te, mv: run_lenskit(10, tr, te),
    "lenskit-BiasedMF-K50": lambda tr, te, mv: run_lenskit(50, tr, te),
    "cmfrec-ALS-K10": lambda tr, te, mv: run_cmfrec(10, tr, te, None),
    "cmfrec-ALS-K10-genres": lambda tr, te, mv: run_cmfrec(10, tr, te, mv),
}


def main(split_dir: Path, out: Path) -> None:
    train, test = pd.read_csv(split_dir / "train.csv"), pd.read_csv(split_dir / "test.csv")
    movies = pd.read_csv(split_dir / "movies.csv")
    out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for name, run in SYSTEMS.items():
        start = time.perf_counter()
        pred = run(train, test, movies)
        seconds[name] = time.perf_counter() - start
        print(f"{name:24s} fitted and predicted {len(test):,} rows in {seconds[name]:.1f} s", flush=True)
        pd.DataFrame({"prediction": pred}).to_csv(out / f"{name}.csv", index=False)
    (out / "peers.json").write_text(json.dumps({"seconds": seconds}, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
