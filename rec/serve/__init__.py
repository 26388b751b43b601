"""``rec serve MODEL``: a published model behind a JSON API and a web page.

    rec serve models/ml-latest-small/random-0.9-0.05-0.05-seed0/features+genre_bias+flipped+year+drift-K10.pt

Endpoints (OpenAPI docs at ``/docs``): ``/health``; ``/model``; ``/movies?q=`` (the catalogue
by title); ``/users/{id}/recommendations``; ``POST /recommendations`` (a new person folded in
from movies, with or without ratings); ``/movies/{id}/similar``; ``/predict``.  A Gibbs model's
answers carry a standard deviation.  Bad input gets a 4xx whose ``error`` says what to send;
the page at ``/`` is the seed's dummy user: pick movies you love, see what the model makes of
you.  It listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from rec.errors import RecError
from rec.model import Recommender

MAX_K = 1000
"""Most movies one answer lists."""
MAX_BODY = 64 * 1024
"""Most bytes of a request body (a new person's movies)."""
MAX_MOVIES = 1000
"""Most movies a new person lists."""
PAGE = Path(__file__).parent / "static" / "index.html"


class Watched(BaseModel):
    movie_id: int = Field(description="a movie id of the model's catalogue (MovieLens movieId)")
    rating: float | None = Field(None, allow_inf_nan=False,
                                 description="the person's rating on the model's scale; "
                                             "left out: a movie they loved (the top of the scale)")


class NewPerson(BaseModel):
    movies: list[Watched] = Field(min_length=1, max_length=MAX_MOVIES,
                                  description="movies the person watched, each once")
    k: int = Field(10, ge=1, le=MAX_K, description="how many movies to recommend")
    attributes: dict[str, str | int] | None = Field(
        None, description="what the person is, for a model trained with "
                          "model.person_features: gender, age, occupation "
                          '(e.g. {"gender": "F", "age": 31, "occupation": "writer"})')


class BadRequest(Exception):
    """A request the model cannot answer: ``status`` and what to send instead."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


def _validation_message(e: RequestValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) + (". Send JSON like {\"movies\": [{\"movie_id\": 4993, \"rating\": "
                               "5.0}], \"k\": 10}, and k between 1 and " f"{MAX_K}.")


class Service:
    """The model's answers as JSON records, one query at a time (a fold-in caches the
    implicit loss's Gramian on the model)."""

    def __init__(self, model: Recommender) -> None:
        self.model, self.lock = model, threading.Lock()
        self.gibbs = model.posterior is not None
        self.lower_titles = [t.lower() for t in model.movies.titles]  # searched on every keystroke
        self.counts = model.item_counts.numpy()

    def _known(self, what: str, lookup, value: int) -> int:
        try:
            return lookup(value)
        except RecError as e:
            raise BadRequest(404, str(e)) from None

    def info(self) -> dict:
        m, cfg = self.model, self.model.config
        keep = ("val/rmse", "test/rmse", "test/ndcg@10", "val/ndcg@10", "test/precision@10",
                "test/recall@10")
        return {"dataset": m.dataset, "model": cfg.name, "K": cfg.dim,
                "feedback": "implicit" if cfg.implicit else "explicit",
                "inference": "gibbs" if self.gibbs else "als", "users": int(m.user_ids.numel()),
                "movies": len(m.movies.titles), "rating_scale": list(m.rating_range),
                "popularity_weight": m.popularity_weight,
                "metrics": {k: v for k, v in m.metrics.items() if k in keep}}

    def search(self, q: str, limit: int) -> list[dict]:
        words = q.lower().split()
        titles, counts, ids = self.model.movies.titles, self.counts, self.model.movies.ids
        hits = np.array([i for i, t in enumerate(self.lower_titles) if all(w in t for w in words)],
                        dtype=np.int64)
        if hits.size > limit:  # only the titles rated at least as often as the limit-th can show
            least = np.partition(counts[hits], hits.size - limit)[hits.size - limit]
            hits = hits[counts[hits] >= least]
        top = sorted(hits.tolist(), key=lambda i: (-int(counts[i]), titles[i]))[:limit]
        return [{"movie_id": int(ids[i]), "title": titles[i],
                 "genres": " | ".join(self.model.movies.genres_of(i)), "ratings": int(counts[i])}
                for i in top]

    def recommend(self, user_id: int, k: int) -> list[dict]:
        self._known("user", self.model.user_index, user_id)
        with self.lock:
            if self.gibbs:
                return self.model.recommend_with_uncertainty(user_id, k)
            return self.model.recommend(user_id, k)

    def recommend_new(self, person: NewPerson) -> list[dict]:
        top = self.model.rating_range[1]
        for w in person.movies:
            self._known("movie", self.model.item_index, w.movie_id)
        pairs = [(w.movie_id, top if w.rating is None else w.rating) for w in person.movies]
        if self.model.config.implicit and all(w.rating is None for w in person.movies):
            pairs = [w.movie_id for w in person.movies]  # watched: no rating needed
        try:
            with self.lock:
                if self.gibbs:
                    found = self.model.recommend_new_user_with_uncertainty(
                        pairs, person.k, attributes=person.attributes)
                else:
                    found = self.model.recommend_new_user(pairs, person.k,
                                                          attributes=person.attributes)
        except RecError as e:
            raise BadRequest(422, str(e)) from None
        return self._because(found, person) if self.model.params.item_factors.shape[1] else found

    def _because(self, found: list[dict], person: NewPerson) -> list[dict]:
        """Each movie with the nearest, in the embedding space, of the person's liked movies:
        those rated at or above the person's mean (a movie loved without a rating counts as the
        top of the scale, as the fold-in takes it)."""
        top = self.model.rating_range[1]
        rating = [top if w.rating is None else w.rating for w in person.movies]
        mean = sum(rating) / len(rating)
        liked = [w.movie_id for w, r in zip(person.movies, rating) if r >= mean]
        nearest = self.model.because([r["movie_id"] for r in found], liked)
        titles, index = self.model.movies.titles, self.model.item_index
        return [{**r, "because_id": b, "because": titles[index(b)]} for r, b in zip(found, nearest)]

    def similar(self, movie_id: int, k: int) -> list[dict]:
        self._known("movie", self.model.item_index, movie_id)
        try:
            with self.lock:
                return self.model.similar(movie_id, k)
        except RecError as e:
            raise BadRequest(422, str(e)) from None

    def predict(self, user_id: int, movie_id: int) -> dict:
        self._known("user", self.model.user_index, user_id)
        self._known("movie", self.model.item_index, movie_id)
        if self.model.config.implicit:
            raise BadRequest(422, "this model learned who watched what (feedback=implicit): "
                                  "it ranks movies but predicts no ratings; ask "
                                  f"/users/{user_id}/recommendations instead.")
        with self.lock:
            if self.gibbs:
                mean, std = self.model.predict_with_std(user_id, movie_id)
                return {"user_id": user_id, "movie_id": movie_id, "rating": mean, "std": std}
            return {"user_id": user_id, "movie_id": movie_id,
                    "rating": self.model.predict(user_id, movie_id)}


def create_app(model: Recommender, max_body: int = MAX_BODY) -> FastAPI:
    """The API over ``model`` (see the module's docstring)."""
    from rec import __version__
    service = Service(model)
    app = FastAPI(title=f"rec: {model.dataset} {model.config.name}", version=__version__,
                  description="Recommendations from a published rec model. Every id is the "
                              "dataset's own (MovieLens userId, movieId).")
    app.state.service = service  # the model it answers from, for tests and embedding apps

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > max_body):
            return _problem(413, f"the request body is over {max_body:,} bytes; send at most "
                                 f"{MAX_MOVIES} movies.")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return _problem(422, _validation_message(e))

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, e: BadRequest):
        return _problem(e.status, str(e))

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    def info() -> dict:
        return service.info()

    @app.get("/movies")
    def search(q: str = Query(..., min_length=1, max_length=200, description="words of a title"),
               limit: int = Query(20, ge=1, le=MAX_K)) -> list[dict]:
        return service.search(q, limit)

    @app.get("/users/{user_id}/recommendations")
    def recommend(user_id: int, k: int = Query(10, ge=1, le=MAX_K)) -> list[dict]:
        return service.recommend(user_id, k)

    @app.post("/recommendations")
    def recommend_new(person: NewPerson) -> list[dict]:
        return service.recommend_new(person)

    @app.get("/movies/{movie_id}/similar")
    def similar(movie_id: int, k: int = Query(10, ge=1, le=MAX_K)) -> list[dict]:
        return service.similar(movie_id, k)

    @app.get("/predict")
    def predict(user_id: int, movie_id: int) -> dict:
        return service.predict(user_id, movie_id)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rec serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a published model file (train.py prints it)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    from rec.cli import run_or_exit
    model = run_or_exit(lambda: Recommender.load(args.model))
    import uvicorn
    print(f"rec serve: {args.model} on http://{args.host}:{args.port}/ (API docs: /docs)")
    uvicorn.run(create_app(model), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
