"""Training: epochs, early stopping, checkpoints and exact resume (SPEC §2.6).

``fit`` runs ALS epochs, evaluates after each (RMSE and NLL per split, the
objective J), stops when validation RMSE has not improved for ``patience``
epochs and keeps the best epoch's parameters.  After every epoch it writes a
checkpoint atomically; given that checkpoint again, it resumes and ends
exactly where an uninterrupted run would (ALS is deterministic given its
parameters).  Metric evaluation is timed apart from the ALS updates.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

import torch

from rec.als.config import ModelConfig
from rec.als.engine import ALS, EngineFacts
from rec.als.layout import LayoutSpec, shard_layout
from rec.als.solve import PhaseTimer
from rec.als.params import Params, days
from rec.als.rated import RatedSums
from rec.als.sizes import EngineSizes
from rec.data.people import require_people
from rec.data.ratings import Ratings
from rec.data.shards import Shard
from rec.data.splits import Split
from rec.distributed import Dist, RankExchange
from rec.errors import CacheError, ConfigError, RecError
from rec.bundle import load_tree, save_tree
from rec.mapping import from_mapping
from rec.system import gib, total_memory
from rec.metrics import (accuracy_of, nll, pairs_of_users, ranked_users, ranking_means,
                         ranking_sums, squared_errors)

log = logging.getLogger(__name__)
epoch_log = logging.getLogger("rec.epochs")
"""Each epoch's full record: the run's log file always, the terminal when ``verbose``."""
CHECKPOINT_FORMAT = 3
"""3: the best epoch's parameters in a file of their own (:func:`best_file`), which the
checkpoint names; 2 held them inline; 1 was a ``torch.save`` pickle."""
CHECKPOINT_KIND = "rec-checkpoint"
CHECKPOINT_FINITE = ("params", "best", "kept")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (``train:`` in ``conf/config.yaml``)."""

    max_epochs: int = 200
    """Upper bound on epochs (user step, movie step, genre step)."""
    patience: int = 3
    """Epochs without a validation improvement before stopping (the report: 0)."""
    min_delta: float = 1e-5
    """An epoch improves when validation RMSE (implicit feedback: minus NDCG@k) drops by more
    than this."""
    restore_best: bool = True
    """Keep the best epoch's parameters (the report kept the last ones)."""
    eval_train: bool = True
    """Compute train RMSE and the objective J each epoch (one pass over the training ratings)."""
    eval_test: bool = True
    """Compute test RMSE and NLL each epoch (for the curves; selection uses validation only)."""
    ranking_k: int = 10
    """k of precision@k, recall@k and NDCG@k on test, after training."""
    relevance: float = 4.0
    """A test rating at least this high is relevant for ranking."""
    ranking_max_users: int | None = 50_000
    """Rank at most this many (sampled) users; ``null`` ranks all."""
    profile: bool = False
    """Time the phases of each epoch (gather, gram, solve, genre, other); adds device syncs."""
    relaxation: float = 1.0
    """omega of over-relaxed ALS: each step moves a block to ``old + omega (exact - old)``;
    every step still lowers J for 0 < omega < 2 (1: plain ALS, as in the report)."""
    joint_genre_step: bool = False
    """``features``: solve the movie and genre steps as one exact joint step over (V, c, W)
    instead of one after the other.  It reaches J's minimum in about 10 epochs instead of
    hundreds, but on ml-latest-small that minimum validates worse (0.837 at its best epoch)
    than the alternating path's early-stopped 0.8361, so it is off by default."""
    cg_steps: int | None = None
    """``null``: every user and movie step solves each row's system exactly.  A count: that
    many conjugate-gradient steps from each row's current value instead (as implicit's ALS
    takes, three by default), which still lower J every step but never form a row's Gram:
    at large K an epoch costs a fraction (``benchmarks/README.md``), and more epochs may be
    needed.  ALS only (a Gibbs draw needs the exact factorization), with ``relaxation: 1``."""

    def __post_init__(self) -> None:
        checks = [("max_epochs", self.max_epochs >= 1, "1 or more (0 would train nothing and "
                   "publish the random initial parameters)"),
                  ("patience", self.patience >= 0, "0 or more epochs"),
                  ("ranking_k", self.ranking_k >= 1, "1 or more"),
                  ("ranking_max_users", self.ranking_max_users is None
                   or self.ranking_max_users >= 1, "null or a positive count"),
                  ("relaxation", 0 < self.relaxation < 2,
                   "between 0 and 2 (exclusive), where every step still lowers J"),
                  ("cg_steps", self.cg_steps is None or self.cg_steps >= 1,
                   "null (exact solves) or 1 or more steps")]
        for key, ok, want in checks:
            if not ok:
                raise ConfigError(f"train.{key}={getattr(self, key)}: must be {want}.")
        if self.cg_steps is not None and (self.relaxation != 1 or self.joint_genre_step):
            raise ConfigError("train.cg_steps takes conjugate-gradient steps towards each "
                              "row's exact solution, which over-relaxation and the joint genre "
                              "step need: write train.relaxation=1 train.joint_genre_step=false, "
                              "or train.cg_steps=null.")

    @classmethod
    def from_mapping(cls, values, **overrides) -> "TrainConfig":
        """Build from a plain mapping (``train:`` of the config); unknown keys are refused."""
        return from_mapping(cls, values, "train", **overrides)

    def results_key(self) -> dict:
        """The fields that change what training produces (resume must match them)."""
        keep = ("max_epochs", "patience", "min_delta", "restore_best", "joint_genre_step",
                "relaxation", "cg_steps")
        return {k: getattr(self, k) for k in keep}


@dataclass
class StopState:
    """Where early stopping stands after ``epoch`` epochs (saved in every checkpoint)."""

    epoch: int = 0
    best_val: float = math.inf
    """Lowest validation loss so far (:func:`selection_loss`: RMSE, or minus NDCG@k)."""
    best_epoch: int = 0
    bad_epochs: int = 0
    """Epochs since the last improvement."""

    def should_continue(self, cfg: TrainConfig) -> bool:
        return self.epoch < cfg.max_epochs and self.bad_epochs <= cfg.patience

    def record(self, epoch: int, val_loss: float, min_delta: float) -> bool:
        """Account for ``epoch``; ``True`` when it improved on the best by more than ``min_delta``."""
        self.epoch = epoch
        if val_loss < self.best_val - min_delta:
            self.best_val, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False


class Callback(Protocol):
    def on_epoch(self, epoch: int, record: dict, params: Params) -> None: ...


@dataclass
class FitResult:
    """What ``fit`` returns: the kept parameters, per-epoch history, final metrics, timings and
    the engine's facts (the engine itself, with its grouped ratings, is freed on return)."""

    params: Params
    best_epoch: int
    history: list[dict]
    final: dict
    timings: dict
    engine: EngineFacts


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def save_checkpoint(path: Path, fingerprint: str, state: dict) -> None:
    """Write a run's ``state`` atomically, tied to its ``fingerprint``; parameters that are
    NaN or infinite are refused (the last good checkpoint stays)."""
    try:
        save_tree(path, {**state, "fingerprint": fingerprint}, CHECKPOINT_KIND,
                  CHECKPOINT_FORMAT, CHECKPOINT_FINITE)
    except CacheError as e:
        raise RecError(f"{path}: not saved: {e}. Training diverged; lower train.relaxation "
                       "or raise the priors (model.tau, model.gamma).") from e


def best_file(checkpoint: Path, epoch: int) -> Path:
    """Where a run checkpointed at ``checkpoint`` keeps the parameters of its best epoch,
    ``epoch``: written once, when that epoch ends, and named by the checkpoint after it."""
    return checkpoint.with_name(f"{checkpoint.stem}.best{epoch}{checkpoint.suffix}")


def _drop_stale_bests(checkpoint: Path, keep: str | None) -> None:
    """The best-epoch files that the checkpoint no longer names (a run killed between the two
    writes leaves a newer one, unnamed: the next checkpoint drops it)."""
    for path in checkpoint.parent.glob(f"{checkpoint.stem}.best*{checkpoint.suffix}"):
        if path.name != keep:
            path.unlink(missing_ok=True)


class BestEpoch:
    """The best epoch's parameters, kept to restore them at the end: this process's own rows
    of the user and movie tables (every row in one process) and the other blocks whole.
    Restoring shares each process's rows again, as a step does, so under torchrun a rank
    holds 1/P of the tables' copy instead of all of it."""

    SIDE = {"user_factors": "user", "user_bias": "user", "item_factors": "item",
            "item_bias": "item"}

    def __init__(self, engine: ALS, p: Params) -> None:
        self.exchange, self.own, self.saved = engine.exchange, engine.own, None
        self.keep(p)

    def _part(self, p: Params, name: str):
        value = getattr(p, name)
        side = self.SIDE.get(name)
        return value if side is None or not torch.is_tensor(value) else value[self.own[side]]

    def keep(self, p: Params) -> None:
        """Copy ``p``'s part into the kept one (the first call allocates it)."""
        part = {f.name: self._part(p, f.name) for f in fields(Params)}
        if self.saved is None:
            self.saved = {k: v.clone() if torch.is_tensor(v) else v for k, v in part.items()}
            return
        for name, value in part.items():
            if torch.is_tensor(value):
                self.saved[name].copy_(value)
            else:
                self.saved[name] = value

    def restore(self, p: Params) -> Params:
        """``p`` set to the kept epoch's parameters, every process's rows shared again."""
        for name, kept in self.saved.items():
            if not torch.is_tensor(kept):
                setattr(p, name, kept)
                continue
            self._part(p, name).copy_(kept)
            if name in self.SIDE:
                self.exchange.share(getattr(p, name), self.SIDE[name])
        return p


def load_checkpoint(path: Path, fingerprint: str) -> dict:
    """The state :func:`save_checkpoint` wrote for ``fingerprint`` (nothing in the file is
    executed); a damaged file or another run's is refused."""
    try:
        state = load_tree(path, CHECKPOINT_KIND, CHECKPOINT_FORMAT, CHECKPOINT_FINITE)
    except (CacheError, OSError) as e:
        raise RecError(f"{path}: unusable checkpoint ({e}); move it away to start afresh.") from e
    if state.get("fingerprint") != fingerprint:
        raise RecError(f"{path}: this checkpoint belongs to another configuration; "
                       "resume it with that configuration, or train anew.")
    return state


class _Subsets:
    """Validation and test ratings, on the device (training ratings live in the engine's groups)."""

    def __init__(self, ratings: Ratings | Shard, split: Split | None, device: torch.device,
                 timed: bool = False):
        if isinstance(ratings, Shard):  # read with the shard: those of the rank's users
            held = {"val": ratings.val, "test": ratings.test}
        else:
            held = {name: (ratings.user[idx], ratings.item[idx], ratings.rating[idx])
                    for name, idx in (("val", split.val), ("test", split.test))}
        self.parts = {name: tuple(t.to(device) for t in part) for name, part in held.items()}
        self.days = {name: days(ratings.timestamp[idx]).to(device) if timed else None
                     for name, idx in (("val", split and split.val), ("test", split and split.test))}
        """Per part, the days its ratings were made (``None`` without time terms)."""
        self.candidates: dict = {}
        """Per part and ranking rule: the users ranked and what each rated in training
        (:func:`ranking_metrics`), found once."""
        given = None if split is None or split.fold_in is None else split.fold_in
        self.given = None if given is None else \
            (ratings.user[given], ratings.item[given], ratings.rating[given])
        """``split=strong``: the held-out users' given ratings, which fold them in."""
        self.given_rows = None
        """Their layout, built by the engine on first use."""

    def scored(self, engine: ALS, p: Params) -> Params:
        """The parameters that held-out ratings are scored with: ``p``, and under
        ``split=strong`` the held-out users folded in from their given ratings against
        ``p``'s movies (:meth:`ALS.fold_in`)."""
        if self.given is None:
            return p
        if self.given_rows is None:
            user, item = self.given[:2]
            rated = None if engine.rated is None else \
                RatedSums.build(user, item, engine.n_users, engine.n_items, engine.device)
            self.given_rows = engine.given_rows(*self.given), rated
        return engine.fold_in(p, *self.given_rows)


def _train_metrics(engine: ALS, p: Params, rating_range: tuple[float, float]) -> dict:
    """Train RMSE and NLL (clipped predictions) and the objective J, from one pass."""
    n = engine.n_train
    raw, clipped = engine.train_errors(p, rating_range)
    return {"train/rmse": math.sqrt(clipped / max(n, 1)), "train/nll": nll(clipped, n, engine.cfg.lam),
            "objective": engine.objective(p, raw)}


def _accuracy(engine: ALS, p: Params, user: torch.Tensor, item: torch.Tensor,
              rating: torch.Tensor, rating_range: tuple[float, float],
              day: torch.Tensor | None = None) -> dict[str, float]:
    """RMSE and NLL of held-out ratings (made on ``day``, for the time terms); over a job's
    ranks, each rank sums the errors of its users' ratings and the sums are added up."""
    sums = torch.tensor([squared_errors(p, user, item, rating, rating_range, day),
                         rating.numel()], dtype=torch.float64, device=engine.device)
    sse, n = engine.exchange.total(sums).tolist()
    return accuracy_of(sse, int(n), engine.cfg.lam)


def _evaluate(engine: ALS, p: Params, data: _Subsets, cfg: TrainConfig,
              rating_range: tuple[float, float], record: dict, ranked) -> None:
    """One epoch's metrics into ``record``; ``ranked(params, part)``: the ranking metrics of
    ``part``, which select the implicit loss's epochs.  Held-out ratings are scored with
    :meth:`_Subsets.scored`."""
    if cfg.eval_train:
        record.update({"objective": engine.objective(p)} if engine.implicit
                      else _train_metrics(engine, p, rating_range))
    scored = data.scored(engine, p)
    for part in ("val", "test") if cfg.eval_test else ("val",):
        if engine.implicit:
            record.update(ranked(scored, part))
            continue
        metrics = _accuracy(engine, scored, *data.parts[part], rating_range, data.days[part])
        record[f"{part}/rmse"], record[f"{part}/nll"] = metrics["rmse"], metrics["nll"]


def final_metrics(engine: ALS, p: Params, ratings: Ratings | Shard, split: Split | None,
                  data: _Subsets, cfg: TrainConfig, seed: int) -> dict:
    """Accuracy per split, cold-start RMSE and ranking metrics of the kept parameters (the
    implicit loss: its objective and the ranking metrics of validation and test)."""
    scored = data.scored(engine, p)
    if engine.implicit:
        out = {"objective": engine.objective(p), "train/n": engine.n_train}
        for part in data.parts:
            out.update(ranking_metrics(scored, ratings, split, data, cfg, seed, engine, part))
        return out
    rr = ratings.rating_range
    out = {**_train_metrics(engine, p, rr), "train/n": engine.n_train}
    p = scored
    for part, tensors in data.parts.items():
        for k, v in _accuracy(engine, p, *tensors, rr, data.days[part]).items():
            out[f"{part}/{k}"] = v
    user, item, rating = data.parts["test"]
    day = data.days["test"]
    cold = cold_rows(engine, item)
    at = lambda rows: None if day is None else day[rows]
    cs = _accuracy(engine, p, user[cold], item[cold], rating[cold], rr, at(cold))
    out["test/cold_rmse"], out["test/cold_n"] = cs["rmse"], cs["n"]
    warm = _accuracy(engine, p, user[~cold], item[~cold], rating[~cold], rr, at(~cold))
    out["test/warm_rmse"], out["test/warm_n"] = warm["rmse"], warm["n"]
    out.update(popularity_ranking(p, ratings, split, data, cfg, seed, engine))
    return out


def cold_rows(engine: ALS, item: torch.Tensor) -> torch.Tensor:
    """Which of the rows ``item`` are of movies without training ratings."""
    return engine.item_degree.to(item.device)[item.long()] == 0


def ranking_metrics(p: Params, ratings: Ratings | Shard, split: Split | None, data: _Subsets,
                    cfg: TrainConfig, seed: int, engine: ALS | None = None,
                    part: str = "test") -> dict:
    """The ranking metrics at ``cfg.ranking_k`` on ``part`` (``val`` or ``test``) of ``p``'s
    scores, every movie the user did not rate in training a candidate; over a job's shards,
    each rank ranks its own users and the sums are added up."""
    user, item, rating = data.parts[part]
    key = (part, cfg.relevance, cfg.ranking_max_users, seed)
    if key not in data.candidates:  # the same every epoch: found once per run
        place = engine.exchange.place if engine is not None else None
        users, n = ranked_users(user, rating, p.user_factors.shape[0], cfg.relevance,
                                cfg.ranking_max_users, seed, place)
        if isinstance(ratings, Shard):
            seen_user, seen_item = ratings.pairs(users)
        else:
            seen_user, seen_item = pairs_of_users(ratings, split.known(), users)
        data.candidates[key] = (n, users.to(user.device), seen_user.to(user.device),
                                seen_item.to(user.device))
    n, users, seen_user, seen_item = data.candidates[key]
    popularity = engine.item_degree if engine is not None else ratings.item_counts(split.train)
    sums = ranking_sums(p, seen_user, seen_item, user, item, rating, cfg.ranking_k,
                        cfg.relevance, users, popularity=popularity)
    if engine is not None:
        engine.exchange.total(sums)
    return {f"{part}/{k}": v for k, v in ranking_means(sums, n, cfg.ranking_k).items()}


POPULARITY_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
"""The weights of ``log(1 + training count)`` that an explicit model's ranking tries on
validation (:func:`popularity_ranking`)."""


def with_popularity(p: Params, counts: torch.Tensor, weight: float) -> Params:
    """``p`` whose scores rank by ``predicted rating + weight log(1 + count)``: the movie
    biases moved (a ranking's scores ignore mu and the user's bias)."""
    if not weight:
        return p
    ranked = Params(p.mu, p.user_factors, p.user_bias, p.item_factors, p.item_bias.clone(),
                    p.genre_factors, p.genre_bias)
    ranked.item_bias += weight * torch.log1p(counts.to(p.item_bias.device, p.item_bias.dtype))
    return ranked


def popularity_ranking(p: Params, ratings: Ratings | Shard, split: Split | None,
                       data: _Subsets, cfg: TrainConfig, seed: int,
                       engine: ALS | None = None) -> dict:
    """An explicit model's ranking metrics on validation and test when it ranks by its
    predicted rating plus ``w log(1 + training count)``, ``w`` the best of
    :data:`POPULARITY_WEIGHTS` by validation NDCG@k (``popularity_weight``).  By predicted
    rating alone the top of a list is movies whose few ratings were high; the count is the
    evidence that a person would pick the movie at all, and validation says how much of it
    a list needs."""
    counts = engine.item_degree if engine is not None else ratings.item_counts(split.train)
    key = f"val/ndcg@{cfg.ranking_k}"
    tried = {w: ranking_metrics(with_popularity(p, counts, w), ratings, split, data, cfg, seed,
                                engine, "val") for w in POPULARITY_WEIGHTS}
    best = max(POPULARITY_WEIGHTS, key=lambda w: (tried[w][key], -w))
    test = ranking_metrics(with_popularity(p, counts, best), ratings, split, data, cfg, seed,
                           engine, "test")
    return {**tried[best], **test, "popularity_weight": best}


def selection_loss(record: dict, model_cfg: ModelConfig, k: int) -> float:
    """What early stopping and searches minimize: validation RMSE for explicit feedback,
    minus validation NDCG@k for the implicit loss (its scores are not ratings)."""
    return -record[f"val/ndcg@{k}"] if model_cfg.implicit else record["val/rmse"]


def _check_fits(rows: int, dim: int, dtype: torch.dtype, device) -> None:
    """Refuse a size that could never fit in memory, before any work: a lower bound of what
    training holds (the parameters and the best epoch's copy, one float64 system per
    thread)."""
    width = dim + 2
    need = 2 * rows * width * torch.finfo(dtype).bits // 8 + torch.get_num_threads() * width ** 2 * 8
    have = total_memory() if torch.device(device).type == "cpu" else \
        torch.cuda.get_device_properties(torch.device(device)).total_memory
    if have and need > have:
        raise ConfigError(f"K={dim} needs at least {gib(need)} of memory here ({rows:,} users and "
                          f"movies of {width} numbers each, and {width}x{width} systems), and this "
                          f"machine has {gib(have)}; lower K.")


def build_engine(ratings: Ratings | Shard, train: torch.Tensor | None, model_cfg: ModelConfig,
                 sizes: EngineSizes = EngineSizes(), device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, joint_genre_step: bool = False,
                 relaxation: float = 1.0, dist: Dist = Dist(),
                 cg_steps: int | None = None, heldout: torch.Tensor | None = None) -> ALS:
    """The engine over the training ratings at positions ``train``, laid out by ``sizes``
    (the fused kernel's layout reads them in place; the torch path's groups copy them); in a
    job of several processes, over this rank's :class:`Shard`, with the exchange that
    shares each step's rows between the ranks (:class:`rec.distributed.RankExchange`).
    ``heldout``: the positions of the held-out ratings whose identities the SVD++ sums also
    hold (``model.svdpp_heldout``)."""
    _check_fits(ratings.n_users + ratings.n_items, model_cfg.dim, dtype, device)
    genres = model_cfg.movie_features(ratings.movies, dtype)
    if dist.active != isinstance(ratings, Shard):
        raise RecError("a job of several processes trains on each rank's Shard "
                       "(rec.data.shards.read_shard), and one process on the whole Ratings.")
    if dist.active:
        if joint_genre_step:
            raise ConfigError("train.joint_genre_step=true runs in one process only; drop it "
                              "under torchrun.")
        spec = LayoutSpec.resolve(model_cfg, sizes, device, dtype, cache_sharers=dist.local_world)
        exchange = RankExchange(dist, ratings.user_bounds, ratings.item_bounds)
        if model_cfg.has_rated or model_cfg.has_time or model_cfg.person_features:
            raise ConfigError("model.svdpp, model.svdpp_flipped, model.person_features and the "
                              "time terms (model.time_bins, model.time_drift) train in one "
                              "process; drop them under torchrun.")
        return ALS(shard_layout(spec, ratings), spec, genres, exchange, relaxation=relaxation,
                   cg_steps=cg_steps)
    if model_cfg.has_rated and joint_genre_step:
        raise ConfigError("train.joint_genre_step=true solves V and W together without the SVD++ "
                          "sums in the movies' prior mean; drop it with model.svdpp or "
                          "model.svdpp_flipped.")
    rated = rated_sums(ratings, train, heldout, model_cfg, device)
    return ALS.from_ratings(model_cfg, ratings.user, ratings.item, ratings.rating,
                            ratings.n_users, ratings.n_items, genres, device, dtype, sizes,
                            joint_genre_step, relaxation, subset=train, cg_steps=cg_steps,
                            rated=rated, timestamp=ratings.timestamp,
                            person_matrix=require_people(ratings.people, ratings.name)
                            .feature_matrix(dtype) if model_cfg.person_features else None)


def rated_sums(ratings: Ratings, train: torch.Tensor | None, heldout: torch.Tensor | None,
               model_cfg: ModelConfig, device) -> tuple[RatedSums | None, RatedSums | None]:
    """The SVD++ sums the model asks for: who rated what among the training ratings, and
    with ``model.svdpp_heldout`` the held-out ones too (their identities only)."""
    if not model_cfg.has_rated:
        return None, None
    rows = torch.arange(len(ratings)) if train is None else train
    if model_cfg.svdpp_heldout:
        if heldout is None:
            raise ConfigError("model.svdpp_heldout=true needs the split's held-out ratings.")
        rows = torch.cat([rows, heldout])
    user, item = ratings.user[rows], ratings.item[rows]
    build = lambda a, b, n, m: RatedSums.build(a, b, n, m, device)
    return (build(user, item, ratings.n_users, ratings.n_items) if model_cfg.svdpp else None,
            build(item, user, ratings.n_items, ratings.n_users) if model_cfg.svdpp_flipped else None)


def heldout_rows(split: Split | None) -> torch.Tensor | None:
    """The positions of a split's validation and test ratings: the held-out ratings whose
    identities ``model.svdpp_heldout`` adds (``split=strong`` refuses the option)."""
    return None if split is None else torch.cat([split.val, split.test])


def fit(ratings: Ratings | Shard, split: Split | None, model_cfg: ModelConfig,
        cfg: TrainConfig = TrainConfig(),
        sizes: EngineSizes = EngineSizes(), *, seed: int = 0, device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32, checkpoint: Path | None = None, fingerprint: str = "",
        callbacks: tuple[Callback, ...] = (), dist: Dist = Dist()) -> FitResult:
    """Train ``model_cfg`` on ``split.train``; resume from ``checkpoint`` when it exists.
    In a job of several processes (``dist``) every rank trains its :class:`Shard` (``split``
    is then ``None``: the shard holds its part of it), all ranks hold the same parameters
    after each step, and rank 0 alone writes the checkpoint."""
    device = torch.device(device)
    if model_cfg.has_time and split is not None and split.fold_in is not None:
        raise ConfigError("split=strong folds held-out people in by a user step without time "
                          "terms; drop model.time_bins and model.time_drift, or choose another "
                          "split.")
    if model_cfg.svdpp_heldout and split is not None and split.fold_in is not None:
        raise ConfigError("model.svdpp_heldout=true with split=strong would give held-out users "
                          "sums their fold-in never sees; drop one of them.")
    start = _sync(device)
    engine = build_engine(ratings, split and split.train, model_cfg, sizes, device, dtype,
                          cfg.joint_genre_step, cfg.relaxation, dist, cfg.cg_steps,
                          heldout_rows(split))
    data = _Subsets(ratings, split, device, model_cfg.has_time)
    if cfg.profile:
        engine.timer = PhaseTimer(device)
    setup_s = _sync(device) - start
    p = engine.initial_params(engine.n_features, seed)
    history, stop, best_name = [], StopState(), None
    if checkpoint is not None and checkpoint.is_file():
        saved = load_checkpoint(checkpoint, fingerprint)
        best_name = saved["best"]
        if best_name is not None:  # the best epoch's parameters, then the last epoch's
            best_saved = load_checkpoint(checkpoint.with_name(best_name), fingerprint)
            p.copy_(Params.from_state_dict(best_saved["params"]).to(device, dtype))
            del best_saved
        best = BestEpoch(engine, p) if cfg.restore_best else None
        p.copy_(Params.from_state_dict(saved["params"]).to(device, dtype))
        engine.load_state_dict(saved.get("engine"))
        history, stop = saved["history"], StopState(**saved["state"])
        if best is not None and stop.best_epoch \
                and best_name != best_file(checkpoint, stop.best_epoch).name:
            raise RecError(f"{checkpoint}: it names no file of its best epoch ({stop.best_epoch}"
                           "), so it was written with train.restore_best=false; resume it with "
                           "that setting.")
        del saved
        log.info("resuming %s after epoch %d", checkpoint, stop.epoch)
    else:
        best = BestEpoch(engine, p) if cfg.restore_best else None
    als_s, eval_s = [], []
    ranked = lambda params, part: ranking_metrics(params, ratings, split, data, cfg, seed,
                                                  engine, part)
    while stop.should_continue(cfg):
        record = _epoch(engine, p, data, cfg, ratings.rating_range, stop.epoch + 1, ranked)
        als_s.append(record["time/als_s"])
        eval_s.append(record["time/eval_s"])
        improved = stop.record(record["epoch"], selection_loss(record, model_cfg, cfg.ranking_k),
                               cfg.min_delta)
        if improved and best is not None:
            best.keep(p)
        history.append(record)
        epoch_log.info("epoch %d: %s", stop.epoch, "  ".join(
            f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))
        for cb in callbacks:  # before the checkpoint: a resumed run redoes what they missed
            cb.on_epoch(stop.epoch, record, p)
        if checkpoint is not None and dist.main:
            if improved and best is not None:  # whole on every rank now: written from p
                best_name = best_file(checkpoint, stop.epoch).name
                save_checkpoint(checkpoint.with_name(best_name), fingerprint,
                                {"params": p.state_dict()})
            save_checkpoint(checkpoint, fingerprint, {
                "params": p.state_dict(), "best": best_name, "history": history,
                "state": asdict(stop), "engine": engine.state_dict()})
            _drop_stale_bests(checkpoint, best_name)
    restore = best is not None and stop.best_epoch and stop.best_epoch != stop.epoch
    kept = best.restore(p) if restore else p
    t2 = _sync(device)
    facts = engine.finish()
    final = final_metrics(engine, kept, ratings, split, data, cfg, seed)
    final.update(best_epoch=stop.best_epoch, epochs=stop.epoch)
    timings = {"setup_s": setup_s, "als_s": als_s, "eval_s": eval_s,
               "final_eval_s": _sync(device) - t2}
    return FitResult(kept, stop.best_epoch, history, final, timings, facts)


def _epoch(engine: ALS, p: Params, data: _Subsets, cfg: TrainConfig,
           rating_range: tuple[float, float], epoch: int, ranked) -> dict:
    """One ALS epoch on ``p``, then its metrics; the record of what it did and took."""
    t0 = _sync(engine.device)
    engine.epoch(p)
    t1 = _sync(engine.device)
    record = {"epoch": epoch, "time/als_s": t1 - t0}
    if engine.timer:
        record.update({f"profile/{k}_s": v for k, v in engine.timer.take().items()})
    _evaluate(engine, p, data, cfg, rating_range, record, ranked)
    record["time/eval_s"] = _sync(engine.device) - t1
    record.update(engine.exchange.take_comm())  # the steps' exchanges and the metrics' sums
    return record
