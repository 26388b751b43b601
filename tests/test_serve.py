"""``rec serve``: the JSON API over a published model, its answers and its refusals."""

from __future__ import annotations

import math
import os

import pytest
import torch
from fastapi.testclient import TestClient

from rec.als import ModelConfig
from rec.bayes.chain import sample
from rec.bayes.config import InferenceConfig
from rec.data.splits import make_split
from rec.model import Recommender
from rec.serve import MAX_K, create_app
from rec.training import TrainConfig, fit

FELLOWSHIP, TOY_STORY = 4993, 1


def _model(small, cfg: ModelConfig, tmp_path_factory) -> Recommender:
    split = make_split(small)
    result = fit(small, split, cfg, TrainConfig(max_epochs=3, ranking_max_users=50))
    model = Recommender.from_training(small, split.train, result.params, cfg, result.final)
    path = model.save(tmp_path_factory.mktemp("serve") / "model.pt")  # served as published
    return Recommender.load(path)


@pytest.fixture(scope="module")
def explicit(small, tmp_path_factory):
    return TestClient(create_app(_model(small, ModelConfig(name="features", K=6),
                                        tmp_path_factory)))


@pytest.fixture(scope="module")
def implicit(small, tmp_path_factory):
    cfg = ModelConfig(name="features", K=6, feedback="implicit", tau=0.01, alpha0=0.2)
    return TestClient(create_app(_model(small, cfg, tmp_path_factory)))


def test_the_answers_of_an_explicit_model(explicit, small):
    assert explicit.get("/health").json() == {"status": "ok"}
    info = explicit.get("/model").json()
    assert info["dataset"] == "ml-latest-small" and info["K"] == 6 and info["inference"] == "als"
    assert info["movies"] == small.n_items and info["rating_scale"] == [0.5, 5.0]
    found = explicit.get("/movies", params={"q": "fellowship ring"}).json()
    assert found[0]["movie_id"] == FELLOWSHIP and "Fellowship" in found[0]["title"]
    assert explicit.get("/movies", params={"q": "no such title xyzzy"}).json() == []
    # many matches: the most rated first, ties by title, the same as sorting every match
    few = explicit.get("/movies", params={"q": "the", "limit": 7}).json()
    many = explicit.get("/movies", params={"q": "the", "limit": 100}).json()
    assert len(many) == 100 and all("the" in m["title"].lower() for m in many)
    assert many == sorted(many, key=lambda m: (-m["ratings"], m["title"])) and few == many[:7]
    counts = small.item_counts(make_split(small).train)  # the model's training counts
    shown = {m["movie_id"] for m in many}
    left_out = [int(counts[i]) for i, t in enumerate(small.movies.titles)
                if "the" in t.lower() and int(small.movies.ids[i]) not in shown]
    assert max(left_out) <= many[-1]["ratings"]
    top = explicit.get("/users/1/recommendations", params={"k": 5}).json()
    assert [r["rank"] for r in top] == [1, 2, 3, 4, 5]
    assert all(0.5 <= r["predicted"] <= 5.0 for r in top)  # shown as ratings: on the scale
    rated = set(small.movies.ids[small.item[small.user == 0].long()].tolist())  # user id 1
    assert not rated & {r["movie_id"] for r in top}
    new = explicit.post("/recommendations", json={"movies": [{"movie_id": FELLOWSHIP},
                                                             {"movie_id": TOY_STORY, "rating": 2}],
                                                  "k": 4}).json()
    assert len(new) == 4 and not {FELLOWSHIP, TOY_STORY} & {r["movie_id"] for r in new}
    # liked: the loved movie, not Toy Story rated 2 (below the person's mean rating)
    assert {r["because_id"] for r in new} == {FELLOWSHIP}
    assert all("Fellowship of the Ring" in r["because"] for r in new)
    many = explicit.post("/recommendations", json={"movies": [
        {"movie_id": m} for m in (FELLOWSHIP, TOY_STORY, 2571, 318)], "k": 8}).json()
    model = explicit.app.state.service.model
    v = model.params.item_factors
    unit = v / v.norm(dim=1, keepdim=True)
    for r in many:  # the nearest liked movie by cosine, checked by hand
        cos = {m: float(unit[model.item_index(r["movie_id"])] @ unit[model.item_index(m)])
               for m in (FELLOWSHIP, TOY_STORY, 2571, 318)}
        assert r["because_id"] == max(cos, key=cos.get)
    similar = explicit.get(f"/movies/{FELLOWSHIP}/similar", params={"k": 3}).json()
    assert len(similar) == 3 and all(-1 <= r["score"] <= 1 for r in similar)
    one = explicit.get("/predict", params={"user_id": 1, "movie_id": FELLOWSHIP}).json()
    assert 0.5 <= one["rating"] <= 5.0 and "std" not in one
    assert explicit.get("/").headers["content-type"].startswith("text/html")
    assert explicit.get("/docs").status_code == 200
    assert "/recommendations" in explicit.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("request_, status, says", [
    (("get", "/users/999999/recommendations", {}), 404, "user id 999999 is not in"),
    (("get", "/movies/123456789/similar", {}), 404, "movie id 123456789 is not in"),
    (("get", "/users/1/recommendations", {"params": {"k": 0}}), 422, "k: Input should be greater"),
    (("get", "/users/1/recommendations", {"params": {"k": MAX_K + 1}}), 422, "k: Input should be less"),
    (("get", "/users/1/recommendations", {"params": {"k": "ten"}}), 422, "k: Input should be a valid integer"),
    (("get", "/users/abc/recommendations", {}), 422, "user_id"),
    (("get", "/predict", {"params": {"user_id": 1}}), 422, "movie_id: Field required"),
    (("post", "/recommendations", {"content": b'{"movies": [{"movie_id": 1, "rating": NaN}]}',
                                   "headers": {"content-type": "application/json"}}), 422, "rating"),
    (("post", "/recommendations", {"json": {"movies": [{"movie_id": 1, "rating": 9}]}}), 422,
     "in [0.5, 5.0]"),
    (("post", "/recommendations", {"json": {"movies": []}}), 422, "movies: List should have at least 1"),
    (("post", "/recommendations", {"json": {"movies": [{"movie_id": 1}, {"movie_id": 1}]}}), 422,
     "more than once"),
    (("post", "/recommendations", {"json": {"movies": [{"movie_id": 77777777}]}}), 404, "not in"),
    (("post", "/recommendations", {"json": {"movies": [{"movie_id": 1}],
                                            "attributes": {"gender": "F"}}}), 422,
     "without model.person_features"),
    (("post", "/recommendations", {"content": b'{"movies": [', "headers":
                                   {"content-type": "application/json"}}), 422, "JSON"),
    (("post", "/recommendations", {"content": b"x" * 70_000, "headers":
                                   {"content-type": "application/json"}}), 413, "over 65,536 bytes"),
])
def test_bad_input_gets_a_4xx_that_says_what_to_send(explicit, request_, status, says):
    method, path, kwargs = request_
    response = getattr(explicit, method)(path, **kwargs)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]


def test_an_implicit_model_folds_in_watched_movies_and_predicts_no_ratings(implicit):
    info = implicit.get("/model").json()
    assert info["feedback"] == "implicit"
    watched = implicit.post("/recommendations", json={"movies": [{"movie_id": FELLOWSHIP}],
                                                      "k": 5}).json()
    assert len(watched) == 5 and all("predicted" not in r for r in watched)
    assert FELLOWSHIP not in {r["movie_id"] for r in watched}
    refused = implicit.get("/predict", params={"user_id": 1, "movie_id": TOY_STORY})
    assert refused.status_code == 422 and "predicts no ratings" in refused.json()["error"]


def test_a_gibbs_model_answers_with_a_standard_deviation(small):
    split = make_split(small)
    cfg = ModelConfig(name="embeddings", K=3)
    chain = sample(small, split, cfg, InferenceConfig(method="gibbs", warm_start=2, burn_in=2,
                                                      samples=4, keep=4),
                   TrainConfig(ranking_max_users=50))
    model = Recommender.from_training(small, split.train, chain.fit.params, cfg, chain.fit.final,
                                      posterior=chain.posterior)
    client = TestClient(create_app(model))
    assert client.get("/model").json()["inference"] == "gibbs"
    one = client.get("/predict", params={"user_id": 1, "movie_id": TOY_STORY}).json()
    assert one["std"] > 0 and math.isfinite(one["rating"])
    top = client.get("/users/1/recommendations", params={"k": 3}).json()
    assert all(r["std"] > 0 for r in top)
    new = client.post("/recommendations", json={"movies": [{"movie_id": FELLOWSHIP}], "k": 3})
    assert new.status_code == 200 and all(r["std"] > 0 for r in new.json())


def test_the_load_benchmark_serves_in_a_child_process_and_reports_each_endpoint(small_root,
                                                                                tmp_path):
    """benchmarks/serve_load.py end to end, tiny: rec serve on a loopback port in a child
    process, every endpoint answered without an error, one row each, and the server stopped."""
    import subprocess
    import sys
    from tests.conftest import REPO
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--data",
                           "ml-latest-small", "--root", str(small_root), "--requests", "8",
                           "--clients", "2", "--seconds", "20"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "REC_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line.split("|") for line in done.stdout.splitlines()
            if line.startswith("| ml-latest-small |")]
    assert len(rows) == 6
    for row in rows:
        assert int(row[3]) == 8 and float(row[4].replace(",", "")) > 0
        assert 0 < float(row[5]) <= float(row[6])  # p50 <= p99
