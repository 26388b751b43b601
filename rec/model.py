"""A trained model that answers queries in the dataset's own ids (SPEC §3).

It scores a (user, movie) pair, recommends top-k movies for a user (skipping
what the user rated), folds in a new user from a few (movie, rating) pairs
(one user step against fixed V: milliseconds), and places a new movie from
its genres (the features rung's prior mean).  It saves to one file with
everything it needs: parameters, id maps, titles, genres and metrics.

A model sampled by Gibbs (``inference=gibbs``) carries its thinned posterior samples
(:class:`rec.bayes.posterior.Posterior`): every answer is then the posterior mean, each
comes with a predictive standard deviation (``*_with_std``), and top-k can rank by an
optimistic quantile instead of the mean.  Two sets of parameters, each asked for by name:
:attr:`Recommender.params`, the embeddings and biases (a Gibbs model's posterior means, K
dimensions), which answers with a geometry read (similar movies, new-movie embeddings, the
analyses); and :attr:`Recommender.predictor`, whose predictions are the answers (a Gibbs
model's samples packed side by side, S K dimensions; an ALS model's ``params`` itself).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rec.als.config import ModelConfig
from rec.als.params import Params, days
from rec.als.solve import ridge_solve
from rec.bayes.posterior import Posterior
from rec.data.catalog import Catalog
from rec.data.people import People
from rec.data.ratings import Ratings
from rec.data.shards import Shard
from rec.errors import CacheError, RecError
from rec.bundle import StreamedArray, load_tree, save_tree
from rec.titles import find_title

FORMAT = 3
"""3: a bundle (:mod:`rec.bundle`: JSON and checksummed arrays, no pickle); 1 and 2 were
``torch.save`` pickles, refused on load."""
KIND = "rec-model"
FINITE = ("params", "posterior/samples")
"""Parameters are refused at save and at load when any is NaN or infinite."""

@dataclass
class Recommender:
    """Parameters plus the catalog they index."""

    params: Params
    """The embeddings and biases: the ALS point estimate, or each parameter's posterior mean
    (K dimensions) for a Gibbs model.  Predictions come from :attr:`predictor`."""
    config: ModelConfig
    dataset: str
    user_ids: torch.Tensor
    movies: Catalog
    item_counts: torch.Tensor
    """Training ratings per movie."""
    rated_offsets: torch.Tensor
    """CSR over users of every movie they rated (any split): excluded from their top-k."""
    rated_items: torch.Tensor
    rating_range: tuple[float, float]
    metrics: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    posterior: Posterior | None = None
    """Gibbs: the kept posterior samples (``params`` is then their posterior mean)."""
    popularity_weight: float = 0.0
    """An explicit model ranks by ``predicted rating + popularity_weight log(1 + training
    count)``, the weight chosen on validation when it was trained
    (:func:`rec.training.popularity_ranking`); 0 ranks by predicted rating alone."""
    people: People | None = None
    """The people's features of a model trained with ``model.person_features``
    (:mod:`rec.data.people`): what a new person's ``attributes`` are read against."""
    _shared: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    """The implicit loss's ``alpha0 V^T V``, once a fold-in formed it."""
    _predictor: Params | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.posterior is not None and self.params.dim != self.config.dim:
            raise RecError(f"a Gibbs model's params are its posterior means, {self.config.dim} "
                           f"dimensions, not {self.params.dim}: build it with "
                           "Recommender.from_training(..., posterior=...).")

    @property
    def predictor(self) -> Params:
        """Parameters whose predictions are this model's answers: :attr:`params` for a point
        estimate; for a Gibbs model the samples packed side by side
        (:meth:`rec.bayes.posterior.Posterior.predictive_params`, S K dimensions), whose
        predictions are the posterior means.  Vectors from :meth:`fold_in` live in its space."""
        if self.posterior is None:
            return self.params
        if self._predictor is None:
            self._predictor = self.posterior.predictive_params()
        return self._predictor

    @classmethod
    def from_training(cls, ratings: Ratings, train: torch.Tensor, params: Params,
                      config: ModelConfig, metrics: dict | None = None,
                      meta: dict | None = None,
                      posterior: Posterior | None = None) -> "Recommender":
        """The model of a training run; ``metrics`` carry the ranking's ``popularity_weight``.
        With a ``posterior`` (Gibbs), :attr:`params` is its :meth:`~Posterior.mean` and the
        given ``params`` (the chain's packed predictive ones) are not kept."""
        if posterior is not None:
            params = posterior.mean()
        user = ratings.user
        ordered = user.numel() < 2 or bool((user[1:] >= user[:-1]).all())  # GroupLens files are
        order = slice(None) if ordered else torch.argsort(user, stable=True)
        offsets = torch.zeros(ratings.n_users + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(ratings.user_counts(), 0)
        return cls(params.to("cpu", torch.float32), config, ratings.name, ratings.user_ids,
                   ratings.movies, ratings.item_counts(train), offsets,
                   ratings.item[order].to(torch.int32), ratings.rating_range, metrics or {},
                   meta or {}, posterior, (metrics or {}).get("popularity_weight", 0.0),
                   ratings.people if config.person_features else None)

    @classmethod
    def from_shard(cls, shard: Shard, params: Params, config: ModelConfig,
                   metrics: dict | None = None, meta: dict | None = None,
                   posterior: Posterior | None = None,
                   rated: tuple[torch.Tensor, torch.Tensor] | None = None) -> "Recommender":
        """:meth:`from_training` in a job of several processes, where no rank holds the whole
        dataset: what each user rated is read from the cache, block by block (``rated``: that
        CSR, when the caller has it)."""
        if posterior is not None:
            params = posterior.mean()
        offsets, items = shard.rated_by_user() if rated is None else rated
        return cls(params.to("cpu", torch.float32), config, shard.name, shard.user_ids,
                   shard.movies, shard.item_degree.cpu(), offsets, items, shard.rating_range,
                   metrics or {}, meta or {}, posterior,
                   (metrics or {}).get("popularity_weight", 0.0))

    @classmethod
    def save_from_shard(cls, path: str | Path, shard: Shard, params: Params,
                        config: ModelConfig, metrics: dict | None = None,
                        meta: dict | None = None, posterior: Posterior | None = None) -> Path:
        """``from_shard(...).save(path)`` without the rated-movies CSR's movies in memory: when
        the cache is ordered by person they go from the cache to the file block by block
        (:meth:`rec.data.shards.Shard.rated_items_streamed`), the same bytes; else the CSR is
        built whole first."""
        streamed = shard.rated_items_streamed()
        if streamed is None:
            return cls.from_shard(shard, params, config, metrics, meta, posterior).save(path)
        model = cls.from_shard(shard, params, config, metrics, meta, posterior,
                               rated=(shard.rated_offsets(), torch.zeros(0, dtype=torch.int32)))
        return model.save(path, rated_items=streamed)

    # persistence -------------------------------------------------------------------------
    def save(self, path: str | Path, rated_items: StreamedArray | None = None) -> Path:
        """Write atomically: a killed run never leaves a half-written model.  ``rated_items``:
        the movies of :attr:`rated_offsets`' CSR, written block by block in place of
        :attr:`rated_items` (:meth:`save_from_shard`)."""
        state = {k: getattr(self, k) for k, f in self.__dataclass_fields__.items() if f.init}
        if rated_items is not None:
            state["rated_items"] = rated_items
        state.update(params=self.params.state_dict(), config=asdict(self.config),
                     movies=self.movies.state_dict(),
                     people=None if self.people is None else self.people.state_dict())
        if self.posterior is not None:  # params are the samples packed: rebuilt on load
            state.update(params=None, posterior=self.posterior.state_dict())
        try:
            return save_tree(path, state, KIND, FORMAT, FINITE)
        except CacheError as e:
            raise RecError(f"{path}: not saved: {e}. Training diverged; lower "
                           "train.relaxation or raise the priors (model.tau, model.gamma).") from e

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        """A model :meth:`save` wrote; a file that is damaged, of another format or not a
        model is refused with a message that names it (nothing in it is executed)."""
        path = Path(path)
        if not path.is_file():
            what = "a folder, not a model file" if path.is_dir() else "no trained model there"
            raise RecError(f"{path}: {what}. Train one with `python train.py`, or give "
                           "checkpoint= the path of a model file.")
        try:
            state = load_tree(path, KIND, FORMAT, FINITE)
        except (CacheError, OSError) as e:
            raise RecError(f"{path}: not a usable rec model ({e}). Retrain it with "
                           "`python train.py`, or copy the file again.") from e
        try:
            posterior = state.get("posterior")
            if posterior is not None:
                state["posterior"] = Posterior.from_state_dict(posterior)
                state["params"] = state["posterior"].mean()
            else:
                state["params"] = Params.from_state_dict(state["params"])
            state["config"] = ModelConfig(**state["config"])
            state["movies"] = Catalog(**state["movies"])
            if state.get("people") is not None:
                state["people"] = People(**state["people"])
            return cls(**state)
        except Exception as e:  # checksums match, yet the content is not a model's
            raise RecError(f"{path}: not a readable rec model ({e}). Retrain it.") from e

    # lookups ------------------------------------------------------------------------------
    def user_index(self, user_id: int) -> int:
        hit = torch.nonzero(self.user_ids == as_id(user_id, "user")).flatten()
        if hit.numel() == 0:
            raise RecError(f"user id {user_id} is not in {self.dataset}; for a new user, use "
                           "recommend_new_user with a few (movie id, rating) pairs.")
        return int(hit[0])

    def item_index(self, movie_id: int) -> int:
        hit = torch.nonzero(self.movies.ids == as_id(movie_id, "movie")).flatten()
        if hit.numel() == 0:
            raise RecError(f"movie id {movie_id} is not in {self.dataset}'s catalog.")
        return int(hit[0])

    def _pair_positions(self, user_ids, movie_ids) -> tuple[torch.Tensor, torch.Tensor]:
        users = _positions(self.user_ids, user_ids, "user", self.dataset)
        items = _positions(self.movies.ids, movie_ids, "movie", self.dataset)
        if users.numel() != items.numel():
            raise RecError(f"{users.numel()} user ids and {items.numel()} movie ids: give one "
                           "movie id per user id (pairs are read position by position).")
        return users, items

    def predict_ids(self, user_ids: torch.Tensor, movie_ids: torch.Tensor,
                    timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """Clipped predictions for many pairs of a known user id and a catalog movie id;
        ``timestamps`` (Unix seconds, one per pair): when each rating is made, which a model
        with time terms (``model.time_bins``, ``model.time_drift``) uses; without them its
        predictions leave the time terms out."""
        self._ratings_only("predict_ids")
        users, items = self._pair_positions(user_ids, movie_ids)
        day = None if timestamps is None else days(torch.as_tensor(timestamps))
        if day is not None and day.numel() != users.numel():
            raise RecError(f"{day.numel()} timestamps for {users.numel()} pairs: give one per pair.")
        return self.predictor.predict(users, items, day).clamp(*self.rating_range)

    def find_movie(self, title: str) -> int:
        """Movie index of a title, searched forgivingly (see :mod:`rec.titles`)."""
        return find_title(title, self.movies.titles, self.item_counts)

    def rated_by(self, user: int) -> torch.Tensor:
        return self.rated_items[self.rated_offsets[user]:self.rated_offsets[user + 1]].long()

    # answers ------------------------------------------------------------------------------
    def _ratings_only(self, what: str) -> None:
        if self.config.implicit:
            raise RecError(f"{what}: this model learned who watched what (model.feedback="
                           "implicit); its scores rank movies but are not ratings. Use "
                           "recommend, or a model trained on the ratings.")

    def predict(self, user_id: int, movie_id: int, timestamp: int | None = None) -> float:
        """Predicted rating of a known user for a catalog movie, clipped to the rating range
        (``timestamp``: as for :meth:`predict_ids`)."""
        self._ratings_only("predict")
        u, n = torch.tensor([self.user_index(user_id)]), torch.tensor([self.item_index(movie_id)])
        day = None if timestamp is None else days(torch.tensor([timestamp]))
        return float(self.predictor.predict(u, n, day).clamp(*self.rating_range))

    def top_k(self, scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
              min_count: int = 0, predicted: torch.Tensor | None = None) -> list[dict]:
        """The ``k`` best movies by ``scores`` (all of them when fewer are left), as records
        with id, title, genres, ``score`` (what they are ranked by), the training rating
        count and, given ``predicted`` ratings, each one's ``predicted`` rating clipped to the
        rating scale (what a person is shown)."""
        k = as_count(k, "k")
        if predicted is not None:
            predicted = predicted.clamp(*self.rating_range)
        scores = scores.clone().float()
        if exclude is not None and exclude.numel():
            scores[exclude] = float("-inf")
        if min_count:
            scores[self.item_counts < min_count] = float("-inf")
        k = min(k, int(torch.isfinite(scores).sum()))
        values, index = torch.topk(scores, k)
        m = self.movies
        records = [{"rank": r + 1, "movie_id": int(m.ids[i]), "title": m.titles[i],
                    "genres": " | ".join(m.genres_of(i)), "score": float(v),
                    **({} if predicted is None else {"predicted": float(predicted[i])}),
                    "ratings": int(self.item_counts[i])}
                   for r, (v, i) in enumerate(zip(values.tolist(), index.tolist()))]
        return records

    def _unit_factors(self) -> torch.Tensor:
        v = self.params.item_factors
        if v.shape[1] == 0:
            raise RecError("similar movies need embeddings: this model has none (model=biases).")
        return v / v.norm(dim=1, keepdim=True).clamp(min=1e-12)

    def similar(self, movie_id: int, k: int = 10, min_count: int = 0) -> list[dict]:
        """The ``k`` movies whose embeddings point most nearly the same way as this one's
        (cosine similarity, the ``score``)."""
        n = self.item_index(movie_id)
        unit = self._unit_factors()
        return self.top_k(unit @ unit[n], k, torch.tensor([n]), min_count)

    def because(self, movie_ids: list[int], liked_ids: list[int]) -> list[int]:
        """For each of ``movie_ids``, the one of ``liked_ids`` whose embedding points most
        nearly the same way (cosine similarity): "because you liked ..." beside a list."""
        if not liked_ids:
            raise RecError("because: give at least one movie the person liked.")
        unit = self._unit_factors()
        rows = torch.tensor([self.item_index(i) for i in movie_ids], dtype=torch.long)
        cols = torch.tensor([self.item_index(i) for i in liked_ids], dtype=torch.long)
        nearest = (unit[rows] @ unit[cols].T).argmax(dim=1)
        return [liked_ids[j] for j in nearest.tolist()]

    def item_scores(self, user_factors: torch.Tensor, user_bias: float = 0.0) -> torch.Tensor:
        """Predicted rating of every movie for one user vector of :attr:`predictor`'s space
        (unclipped)."""
        p = self.predictor
        return p.mu + user_bias + p.item_bias + p.item_factors @ user_factors

    def ranked(self, predicted: torch.Tensor, k: int, exclude: torch.Tensor | None,
               min_count: int = 0) -> list[dict]:
        """:meth:`top_k` by ``predicted`` (ratings, or an implicit model's scores) plus
        ``popularity_weight log(1 + training count)``."""
        return self.top_k(self._with_popularity(predicted), k, exclude, min_count,
                          None if self.config.implicit else predicted)

    def _with_popularity(self, scores: torch.Tensor) -> torch.Tensor:
        if not self.popularity_weight:
            return scores
        return scores + self.popularity_weight * torch.log1p(self.item_counts.float())

    def recommend(self, user_id: int, k: int = 10, exclude_rated: bool = True,
                  min_count: int = 0) -> list[dict]:
        """Top-k movies for a known user, skipping what the user rated (an explicit model:
        by predicted rating and popularity, :attr:`popularity_weight`)."""
        m = self.user_index(user_id)
        p = self.predictor
        scores = self.item_scores(p.user_factors[m], float(p.user_bias[m]))
        return self.ranked(scores, k, self.rated_by(m) if exclude_rated else None, min_count)

    def fold_in(self, pairs: list[tuple[int, float]],
                attributes: dict | None = None) -> tuple[torch.Tensor, float]:
        """A new user's ``(u, b)``: one exact user step against fixed V and c (SPEC §3); for a
        Gibbs model, one per posterior sample, packed like :attr:`predictor`.  An implicit-
        feedback model takes the movies the person watched, as ids or (id, rating) pairs.
        ``attributes`` (``{"gender": "F", "age": 31, "occupation": "writer"}``, a model with
        ``model.person_features``): the prior mean the person starts from."""
        if self.config.implicit:
            return self._fold_in_watched(pairs), 0.0
        if self.posterior is not None:  # packed like predictor: item_scores gives the mean
            u, b = self.fold_in_samples(pairs, attributes)
            return u.reshape(-1) / self.posterior.size ** 0.5, float(b.mean())
        items, rating = self._pairs(pairs)
        cfg, p = self.config, self.params
        x = [p.item_factors[items]]
        y = rating - p.mu
        if cfg.has_biases:
            x.append(torch.ones(len(items), 1))
            y = y - p.item_bias[items]
        z = torch.cat([*x, y.unsqueeze(1)], 1)
        reg = torch.tensor(cfg.precisions())
        if cfg.count_scaled:
            reg = reg * len(items)
        mean = torch.zeros(len(reg))
        row = self._person_row(attributes)
        mean[:p.dim] = rated_sum(p.rated_factors, items) + row @ p.person_factors
        if cfg.has_biases:
            mean[p.dim] = row @ p.person_bias
        theta = ridge_solve((z.T @ z).unsqueeze(0), cfg.lam, reg, (reg * mean).unsqueeze(0))[0]
        return theta[:p.dim], float(theta[p.dim]) if cfg.has_biases else 0.0

    def _person_row(self, attributes: dict | None) -> torch.Tensor:
        """A new person's row of D from their ``attributes`` (zeros without them)."""
        if attributes is not None and self.people is None:
            raise RecError("attributes: this model was trained without model.person_features, "
                           "so it has no use for them; drop them or train with it.")
        n = 0 if self.people is None else len(self.people.names)
        return torch.zeros(n) if attributes is None else self.people.row(attributes)

    def _fold_in_watched(self, watched) -> torch.Tensor:
        """The implicit loss's exact user step for one person: ``(alpha0 V^T V + sum c v v^T
        + tau (|N| + alpha0 N)^nu I) u = sum c t v`` over the movies they watched."""
        items, c, t = self._watched(watched)
        cfg, v = self.config, self.params.item_factors
        x = v[items].double()
        a = self._gramian() + (x.T * c) @ x
        a.diagonal().add_(cfg.tau * (len(items) + cfg.alpha0 * v.shape[0]) ** cfg.nu)
        return torch.linalg.solve(a, x.T @ (c * t)).to(v.dtype)

    def _gramian(self) -> torch.Tensor:
        """``alpha0 V^T V`` in float64, formed once per model (fold-ins share it)."""
        if self._shared is None:
            v = self.params.item_factors.double()
            self._shared = self.config.alpha0 * (v.T @ v)
        return self._shared.clone()

    def _watched(self, watched) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Movie indices, confidences ``c`` and targets ``t`` of what a person watched: movie
        ids (target 1), or (movie id, rating) pairs; ratings under ``interaction_min`` are not
        interactions."""
        if isinstance(watched, (str, bytes)) or not hasattr(watched, "__iter__"):
            raise RecError(f"fold-in takes a list of movie ids or (movie id, rating) pairs; "
                           f"got {watched!r}.")
        watched = list(watched)
        if watched and all(isinstance(w, (tuple, list)) for w in watched):
            items, rating = self._pairs(watched)
        else:
            if any(isinstance(w, (tuple, list)) for w in watched):
                raise RecError("fold-in takes movie ids or (movie id, rating) pairs, not both.")
            items, rating = self._pairs([(w, self.rating_range[1]) for w in watched])
            rating = torch.full_like(rating, float("nan"))
        cfg = self.config
        keep = torch.ones(len(items), dtype=torch.bool) if cfg.interaction_min is None else \
            rating.isnan() | (rating >= cfg.interaction_min)
        if not bool(keep.any()):
            raise RecError(f"none of these ratings reaches model.interaction_min="
                           f"{cfg.interaction_min}: this model learned from nothing lower.")
        rated = torch.nan_to_num(rating[keep].double(), nan=0.0)
        c = 1 + cfg.confidence * rated if cfg.confidence else torch.ones_like(rated)
        return items[keep], c, cfg.targets(rating[keep].double())

    def _pairs(self, pairs: list[tuple[int, float]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Movie indices and ratings of a new user's (movie id, rating) pairs, checked: known
        integer ids, each movie once, finite ratings on the scale."""
        if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
            raise RecError(f"fold-in takes a list of (movie id, rating) pairs; got {pairs!r}.")
        pairs = list(pairs)
        if not pairs:
            raise RecError("fold-in needs at least one (movie id, rating) pair.")
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
            raise RecError("fold-in takes (movie id, rating) pairs, e.g. [(4993, 5.0), (1, 3.5)].")
        items = [self.item_index(m) for m, _ in pairs]
        repeated = sorted({int(self.movies.ids[i]) for i in items if items.count(i) > 1})
        if repeated:
            raise RecError(f"fold-in lists movie id(s) {repeated} more than once; give each "
                           "movie one rating.")
        try:
            rating = torch.tensor([float(r) for _, r in pairs], dtype=torch.float32)
        except (TypeError, ValueError):
            raise RecError("fold-in ratings must be numbers, e.g. [(4993, 5.0)].") from None
        lo, hi = self.rating_range
        if not bool(((rating >= lo) & (rating <= hi)).all()):  # NaN fails both
            raise RecError(f"fold-in ratings must be numbers in [{lo}, {hi}]; got {rating.tolist()}.")
        return torch.tensor(items), rating

    def recommend_new_user(self, pairs: list[tuple[int, float]], k: int = 10,
                           min_count: int = 0, attributes: dict | None = None) -> list[dict]:
        """Top-k for someone not in the data, from a few (movie id, rating) pairs (and, for a
        model with ``model.person_features``, their ``attributes``)."""
        u, b = self.fold_in(pairs, attributes)
        seen = self._watched(pairs)[0] if self.config.implicit else self._pairs(pairs)[0]
        return self.ranked(self.item_scores(u, b), k, seen, min_count)

    def _genre_rows(self, genres: list[str] | str) -> torch.Tensor:
        """Genre indices of ``genres``: a list of names, or one string in MovieLens' notation
        (``"Action"``, ``"Action|Comedy"``)."""
        if isinstance(genres, str):
            genres = [g.strip() for g in genres.split("|") if g.strip()]
        names = self.movies.genre_names
        unknown = [g for g in genres if g not in names]
        if unknown or not genres:
            raise RecError(f"genres {unknown or genres} are not among {', '.join(names)}.")
        return torch.tensor([names.index(g) for g in genres])

    def new_movie(self, genres: list[str]) -> torch.Tensor:
        """Embedding of a movie with no ratings: the mean of its genres' embeddings (SPEC §2.3).
        A model with ``model.movie_year`` or ``model.movie_tags`` adds nothing for them here:
        a movie known only by its genres has no decade or tags (its decade and tag blocks of A
        are empty, as for a movie without a year in its title)."""
        return self._genre_mean(self.params, genres)

    def _genre_mean(self, p: Params, genres: list[str]) -> torch.Tensor:
        """The mean of these genres' embeddings in ``p`` (:attr:`params` or :attr:`predictor`)."""
        return p.genre_factors[self._genre_rows(genres)].mean(0)

    def new_movie_bias(self, genres: list[str]) -> float:
        """Bias of a movie with no ratings: the mean of its genres' biases with
        ``model.genre_bias``, else 0 (the prior mean of c)."""
        return float(self.params.genre_bias[self._genre_rows(genres)].mean())

    def prior_means(self) -> torch.Tensor:
        """p_n for every movie: ``A W``, the mean of its genres' embeddings plus, where the model
        has them, its decade's and its tags' (zeros below the features rung)."""
        p = self.params
        if not self.config.has_genres:
            return torch.zeros_like(p.item_factors)
        return self.config.movie_features(self.movies, p.genre_factors.dtype) @ p.genre_factors

    def predict_new_movie(self, genres: list[str]) -> torch.Tensor:
        """Every known user's predicted rating of a new movie with these genres (its whole prior:
        embedding and bias)."""
        p = self.predictor
        scores = (p.mu + self.new_movie_bias(genres) + p.user_bias
                  + p.user_factors @ self._genre_mean(p, genres))
        return scores.clamp(*self.rating_range)


    # uncertainty (Gibbs models) ------------------------------------------------------------
    def _posterior(self) -> Posterior:
        if self.posterior is None:
            raise RecError("this model is a point estimate (inference=als) and has no predictive "
                           "uncertainty; train it with inference=gibbs.")
        return self.posterior

    def predict_ids_with_std(self, user_ids: torch.Tensor,
                             movie_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean (clipped) and predictive standard deviation of many pairs."""
        users, items = self._pair_positions(user_ids, movie_ids)
        mean, std = self._posterior().predict(users, items)
        return mean.clamp(*self.rating_range), std

    def predict_with_std(self, user_id: int, movie_id: int) -> tuple[float, float]:
        """One pair's posterior mean and predictive standard deviation."""
        mean, std = self.predict_ids_with_std(torch.tensor([user_id]), torch.tensor([movie_id]))
        return float(mean[0]), float(std[0])

    def rank_scores(self, sample_scores: torch.Tensor, rank_by: str = "mean",
                    quantile: float = 0.9) -> torch.Tensor:
        """Scores to rank movies by, from ``(S, n_items)`` per-sample predictions: their mean,
        or ``rank_by="quantile"``: the ``quantile`` of the predictive distribution (an
        optimistic ranking favours movies the model is unsure about)."""
        if rank_by == "mean":
            return sample_scores.mean(0)
        if rank_by != "quantile" or not 0 < quantile < 1:
            raise RecError(f"rank_by={rank_by!r}, quantile={quantile}: rank by 'mean', or by "
                           "'quantile' with a quantile strictly between 0 and 1.")
        std = self._posterior().spread(sample_scores)
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(quantile))
        return sample_scores.mean(0) + z * std

    def recommend_with_uncertainty(self, user_id: int, k: int = 10, rank_by: str = "mean",
                                   quantile: float = 0.9, exclude_rated: bool = True,
                                   min_count: int = 0) -> list[dict]:
        """Top-k for a known user by the posterior mean or an optimistic quantile (plus the
        model's popularity term, as :meth:`recommend` ranks); each record also gives the
        posterior mean and predictive standard deviation."""
        post, m = self._posterior(), self.user_index(user_id)
        s = post.samples
        scores = post.scores(s["user_factors"][:, m], s["user_bias"][:, m])
        return self._ranked(scores, k, rank_by, quantile, self.rated_by(m) if exclude_rated
                            else None, min_count)

    def _ranked(self, scores: torch.Tensor, k: int, rank_by: str, quantile: float,
                exclude: torch.Tensor | None, min_count: int) -> list[dict]:
        mean, std = scores.mean(0), self._posterior().spread(scores)
        records = self.top_k(self._with_popularity(self.rank_scores(scores, rank_by, quantile)),
                             k, exclude, min_count, predicted=mean)
        for rec in records:
            i = self.item_index(rec["movie_id"])
            rec.update(mean=float(mean[i].clamp(*self.rating_range)), std=float(std[i]))
        return records

    def fold_in_samples(self, pairs: list[tuple[int, float]],
                        attributes: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A new user's ``(S, K)`` factors and ``(S,)`` biases: per posterior sample, the
        user's conditional mean given that sample's V, c, noise and prior precisions (and
        their attributes' prior mean, as :meth:`fold_in`)."""
        post = self._posterior()
        items, rating = self._pairs(pairs)
        row = self._person_row(attributes)
        us, bs = [], []
        for s in range(post.size):
            p = post.sample(s)
            z = torch.cat([p.item_factors[items], torch.ones(len(items), 1),
                           (rating - p.mu - p.item_bias[items]).unsqueeze(1)], 1)
            g = (z.T @ z).unsqueeze(0)
            mean = post.user_mean[s] + rated_sum(p.rated_factors, items) + row @ p.person_factors
            rhs_prior = (post.user_precision[s, :p.dim] * mean).unsqueeze(0)
            bias = (post.user_precision[s, p.dim] * (row @ p.person_bias)).view(1, 1)
            prior = torch.cat([rhs_prior, bias], 1)
            theta = ridge_solve(g, 1.0 / float(post.noise_var[s]), post.user_precision[s], prior)[0]
            us.append(theta[:p.dim])
            bs.append(theta[p.dim])
        return torch.stack(us), torch.stack(bs)

    def recommend_new_user_with_uncertainty(self, pairs: list[tuple[int, float]], k: int = 10,
                                            rank_by: str = "mean", quantile: float = 0.9,
                                            min_count: int = 0,
                                            attributes: dict | None = None) -> list[dict]:
        """Top-k for someone not in the data, averaged over the posterior samples."""
        u, b = self.fold_in_samples(pairs, attributes)
        rated = self._pairs(pairs)[0]
        return self._ranked(self._posterior().scores(u, b), k, rank_by, quantile, rated, min_count)

    def predict_new_movie_with_std(self, genres: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every known user's posterior-mean prediction of a new movie with these genres, and
        its predictive standard deviation (per sample: its genres' prior mean)."""
        post, rows = self._posterior(), self._genre_rows(genres)
        s = post.samples
        v = s["genre_factors"][:, rows].mean(1)  # (S, K)
        c = s["genre_bias"][:, rows].mean(1)  # (S,)
        f = post.mu + s["user_bias"] + c.unsqueeze(1) + torch.bmm(
            s["user_factors"], v.unsqueeze(2)).squeeze(2)
        return f.mean(0).clamp(*self.rating_range), post.spread(f)


def rated_sum(rated_factors: torch.Tensor, items: torch.Tensor) -> torch.Tensor | float:
    """A new person's SVD++ prior mean, ``|N|^(-1/2) sum_{n in N} y_n`` over the movies they
    rated (0 for a model without ``model.svdpp``)."""
    if rated_factors.shape[0] == 0 or len(items) == 0:
        return 0.0
    return rated_factors[items].sum(0) / len(items) ** 0.5


def as_id(value, what: str) -> int:
    """``value`` as an integer id; a value that is not a whole number (``1.7``, ``"1"``,
    NaN, ``True``) is refused, never truncated."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(value) or value != int(value):
        raise RecError(f"{what} id {value!r} is not an integer; ids are the whole numbers of "
                       "the dataset's files (e.g. 4993).")
    return int(value)


def as_count(value, what: str) -> int:
    """``value`` as a count of at least 1 (``k`` of a top-k list)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise RecError(f"{what}={value!r}: expected a whole number, 1 or more.")
    return int(value)


def as_ids(values, what: str) -> torch.Tensor:
    """A 1-D int64 tensor of ids; non-integer values are refused, never truncated."""
    t = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    if t.dim() != 1:
        raise RecError(f"{what} ids must be one list (a 1-D array); got shape {tuple(t.shape)}.")
    if t.is_floating_point() and not bool((t == t.round()).all() & t.isfinite().all()):
        raise RecError(f"{what} ids must be integers; got non-integer values.")
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32,
                                                  torch.int64, torch.uint8)):
        raise RecError(f"{what} ids must be integers; got {t.dtype}.")
    return t.to(torch.int64)


def _positions(ids: torch.Tensor, wanted: torch.Tensor, what: str, dataset: str) -> torch.Tensor:
    """Index of each of ``wanted`` in ``ids``; an id not there is an error that names it."""
    order = torch.argsort(ids)
    wanted = as_ids(wanted, what)
    at = torch.searchsorted(ids[order], wanted).clamp(max=max(len(ids) - 1, 0))
    found = order[at]
    missing = ids[found] != wanted
    if bool(missing.any()):
        raise RecError(f"{what} id {int(wanted[missing][0])} is not in {dataset} "
                       f"({int(missing.sum())} such id(s)).")
    return found
