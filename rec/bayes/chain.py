"""A Gibbs chain from warm start to posterior: sweeps, running means, checkpoints, resume.

``sample`` is ``inference=gibbs``'s counterpart of :func:`rec.training.fit`: an optional
warm start of ALS epochs (the rung's own priors), ``burn_in`` sweeps, then ``samples``
sweeps whose validation and test predictions are averaged as they come (the posterior
mean) and ``keep`` of which, evenly thinned, are kept for the saved model.  Every
``checkpoint_every`` sweeps the whole state, random generators included, is written
atomically; given that checkpoint again the chain continues exactly as if uninterrupted.

Under torchrun each rank draws its own users' and movies' rows of every step and shares
them, as ALS's steps do (:meth:`rec.als.engine.ALS.draw_step`); every rank draws the same
random numbers and hyperparameters, so the job runs one process's chain.  Each rank
averages the predictions of its own users' held-out ratings, and the metrics add up the
ranks' sums.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from rec.als.config import ModelConfig
from rec.als.params import Params
from rec.als.solve import PhaseTimer
from rec.als.sizes import EngineSizes
from rec.bayes.config import InferenceConfig
from rec.als.exchange import Exchange
from rec.bayes.posterior import Z_OF, Posterior, RunningPredictions
from rec.bayes.sampler import GibbsSampler
from rec.data.ratings import Ratings
from rec.data.shards import Shard
from rec.data.splits import Split
from rec.distributed import Dist
from rec.errors import ConfigError, RecError
from rec.training import (Callback, FitResult, TrainConfig, _Subsets, _sync, build_engine,
                          cold_rows, epoch_log, heldout_rows, load_checkpoint,
                          popularity_ranking, save_checkpoint)

log = logging.getLogger(__name__)
RUNGS = ("biases", "embeddings", "features")


@dataclass
class ChainResult:
    """``fit``'s result and the kept samples.  ``fit.params`` is the packed
    :meth:`Posterior.predictive_params` (its predictions and rankings are the posterior means:
    the metrics); each parameter's posterior mean is ``posterior.mean()``."""

    fit: FitResult
    posterior: Posterior


def sample(ratings: Ratings | Shard, split: Split | None, model_cfg: ModelConfig,
           inference: InferenceConfig, cfg: TrainConfig = TrainConfig(),
           sizes: EngineSizes = EngineSizes(), *, seed: int = 0,
           device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
           checkpoint: Path | None = None, fingerprint: str = "",
           callbacks: tuple[Callback, ...] = (), dist: Dist = Dist()) -> ChainResult:
    """Run the chain on ``split.train``; resume from ``checkpoint`` when it exists.  In a job
    of several processes (``dist``) every rank runs it on its :class:`Shard` (``split`` is
    then ``None``) and rank 0 alone writes the checkpoint."""
    if split is not None and split.fold_in is not None:
        raise ConfigError("split=strong folds its held-out users in by an ALS user step; the "
                          "Gibbs sampler does not fold users in. Use inference=als.")
    _check(model_cfg, cfg)
    unused = als_stopping(cfg)
    if unused and dist.main:
        log.warning("%s: ALS's stopping rule, unused by inference=gibbs, which runs "
                    "inference.warm_start = %d ALS epochs, then inference.burn_in + "
                    "inference.samples = %d sweeps.", ", ".join(unused),
                    inference.warm_start, inference.burn_in + inference.samples)
    device = torch.device(device)
    start = _sync(device)
    engine = build_engine(ratings, split and split.train, model_cfg, sizes, device, dtype,
                          relaxation=cfg.relaxation, dist=dist, heldout=heldout_rows(split))
    exchange = engine.exchange
    data = _Subsets(ratings, split, device, model_cfg.has_time)
    if cfg.profile:
        engine.timer = PhaseTimer(device)
    setup_s = _sync(device) - start
    p = engine.initial_params(engine.n_features, seed)
    sampler = GibbsSampler(engine, inference, seed)
    running = {part: RunningPredictions.zeros(t[2].numel(), device)
               for part, t in data.parts.items()}
    kept, history, done = [], [], 0
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, fingerprint)
        done, history, kept = state["sweep"], state["history"], state["kept"]
        p.copy_(Params.from_state_dict(state["params"]).to(device, dtype))
        sampler.load_state_dict(state["sampler"])
        engine.load_state_dict(state.get("engine"))
        mine = _rank_part(state["running"], dist)
        for part, r in running.items():
            r.load_state_dict(mine[part])
        log.info("resuming the chain %s after sweep %d", checkpoint, done)
    else:
        for _ in range(inference.warm_start):
            engine.epoch(p)
    def save() -> None:
        own = {k: r.state_dict() for k, r in running.items()}
        every = dist.gather(own) if dist.active else own  # each rank averages its own users'
        if dist.main:
            save_checkpoint(checkpoint, fingerprint, {
                "sweep": done, "params": p.state_dict(), "sampler": sampler.state_dict(),
                "engine": engine.state_dict(), "history": history, "kept": kept,
                "running": every})
    total = inference.burn_in + inference.samples
    sweep_s, eval_s = [], []
    while done < total:
        t0 = _sync(device)
        hyper = sampler.sweep(p)
        t1 = _sync(device)
        done += 1
        record = {"epoch": done, "time/als_s": t1 - t0}
        if engine.timer:
            record.update({f"profile/{k}_s": v for k, v in engine.timer.take().items()})
        for part, (user, item, rating) in data.parts.items():
            f = p.predict(user, item, data.days[part])
            rr = ratings.rating_range
            record[f"{part}/sample_rmse"] = held_out_metrics(exchange, rating, f, rr)["rmse"]
            if done > inference.burn_in:
                running[part].add(f, hyper.lam)
            mean = running[part].mean if running[part].count else f
            record[f"{part}/rmse"] = held_out_metrics(exchange, rating, mean, rr)["rmse"]
        record.update({f"hyper/{k}": v for k, v in hyper.trace().items()})
        if done > inference.burn_in and (done - inference.burn_in) % inference.thin == 0 \
                and len(kept) < inference.keep:
            kept.append(_kept(p, hyper))
        record["time/eval_s"] = _sync(device) - t1
        sweep_s.append(record["time/als_s"])
        eval_s.append(record["time/eval_s"])
        history.append(record)
        epoch_log.info("sweep %d: %s", done, "  ".join(
            f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))
        for cb in callbacks:
            cb.on_epoch(done, record, p)
        if checkpoint is not None and (done % inference.checkpoint_every == 0 or done == total):
            save()
    posterior = Posterior.stack([(Params.from_state_dict(k["params"]), k["lam"],
                                  k["user_precision"], k["user_mean"]) for k in kept])
    t2 = _sync(device)
    final = _final(engine, p, posterior, running, ratings, split, data, cfg, seed)
    final.update(best_epoch=done, epochs=done, burn_in=inference.burn_in,
                 samples_averaged=inference.samples, samples_kept=posterior.size,
                 warm_start=inference.warm_start)
    timings = {"setup_s": setup_s, "als_s": sweep_s, "eval_s": eval_s,
               "final_eval_s": _sync(device) - t2}
    result = FitResult(posterior.predictive_params(), done, history, final, timings, engine.facts())
    return ChainResult(result, posterior)


ALS_STOPPING = ("max_epochs", "patience", "min_delta", "restore_best")
"""The ``train:`` settings of ALS's early stopping, which a chain has no use for."""


def als_stopping(cfg: TrainConfig) -> list[str]:
    """``train.name=value`` for each of :data:`ALS_STOPPING` set away from its default: a
    chain says it does not use them rather than ignore them silently (an error would refuse
    shared experiment files such as ``+experiment=bench_32m``, which set them for ALS)."""
    return [f"train.{f.name}={getattr(cfg, f.name)}" for f in fields(cfg)
            if f.name in ALS_STOPPING and getattr(cfg, f.name) != f.default]


def _check(model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    """Refuse what a chain cannot do, rather than ignore it (``train.relaxation`` applies to
    its ALS warm start; of ALS's stopping rule, :func:`als_stopping`)."""
    if model_cfg.implicit:
        raise ConfigError("inference=gibbs samples the explicit-feedback rungs; "
                          "model.feedback=implicit trains by ALS (inference=als).")
    if model_cfg.name not in RUNGS:
        raise ConfigError(f"inference=gibbs samples the rungs {', '.join(RUNGS)}; "
                          f"model={model_cfg.name} has no bias terms to sample.")
    if cfg.joint_genre_step:
        raise ConfigError("train.joint_genre_step=true is an ALS step; inference=gibbs draws the "
                          "genre embeddings from their own conditional: drop the override.")
    if cfg.cg_steps is not None:
        raise ConfigError("train.cg_steps is an ALS step; inference=gibbs draws each row from "
                          "its exact conditional: drop the override.")
    if not cfg.eval_test:
        raise ConfigError("train.eval_test=false: a Gibbs chain averages its test predictions "
                          "as it goes (the posterior mean); drop the override.")


def _kept(p: Params, hyper) -> dict:
    k = p.dim
    params = {k: v.clone() if torch.is_tensor(v) else v for k, v in p.state_dict().items()}
    return {"params": params, "lam": hyper.lam,  # copies: on CPU state_dict aliases p
            "user_precision": torch.as_tensor(hyper.user_precision, dtype=torch.float32),
            "user_mean": torch.as_tensor(hyper.user_mean[:k], dtype=torch.float32)}


def _rank_part(running, dist: Dist) -> dict:
    """This rank's running predictions in a checkpoint's ``running``: one process's parts, or
    every rank's in rank order (the run's identity holds the number of processes)."""
    if isinstance(running, dict):
        running = [running]
    if len(running) != dist.world:
        raise RecError(f"this chain's checkpoint was written by {len(running)} process(es), "
                       f"not {dist.world}; resume it with as many, or start anew with "
                       "resume=false.")
    return running[dist.rank]


def _final(engine, p: Params, posterior: Posterior, running: dict, ratings: Ratings | Shard,
           split: Split | None, data: _Subsets, cfg: TrainConfig, seed: int) -> dict:
    """Posterior-mean RMSE, predictive NLL and interval coverage per split, warm and cold
    test rows, the last sample's train RMSE, and ranking by the posterior-mean scores."""
    rr, exchange = ratings.rating_range, engine.exchange
    raw, clipped = engine.train_errors(p, rr)
    n = engine.n_train
    out = {"train/rmse": math.sqrt(clipped / max(n, 1)), "train/n": n,
           "objective": engine.objective(p, raw)}
    for part, (user, item, rating) in data.parts.items():
        metrics = held_out_metrics(exchange, rating, running[part].mean, rr, running[part].std)
        out.update({f"{part}/{k}": v for k, v in metrics.items()})
    user, item, rating = data.parts["test"]
    cold, mean = cold_rows(engine, item), running["test"].mean
    for name, rows in (("cold", cold), ("warm", ~cold)):
        metrics = held_out_metrics(exchange, rating[rows], mean[rows], rr)
        out[f"test/{name}_rmse"], out[f"test/{name}_n"] = metrics["rmse"], metrics["n"]
    predictive = posterior.predictive_params().to(engine.device, engine.dtype)
    out.update(popularity_ranking(predictive, ratings, split, data, cfg, seed, engine))
    return out


def held_out_metrics(exchange: Exchange, rating: torch.Tensor, mean: torch.Tensor,
                     rating_range: tuple[float, float],
                     std: torch.Tensor | None = None) -> dict:
    """RMSE of the clipped predictions ``mean`` of held-out ratings and their count; with
    the predictive ``std``, the mean negative log density under N(clipped mean, std^2) and
    the share inside the central 50% and 90% intervals of N(mean, std^2).  Each process sums
    over its ratings and the sums are added over the job (NaN without ratings)."""
    r, m = rating.double(), mean.double()
    clipped = m.clamp(*rating_range)
    sums = [(clipped - r).square().sum()]
    if std is not None:
        var = std.double() ** 2
        sums.append((0.5 * torch.log(2 * math.pi * var) + (r - clipped) ** 2 / (2 * var)).sum())
        sums += [((r - m).abs() <= z * std.double()).double().sum() for z in Z_OF.values()]
    sums.append(torch.tensor(float(r.numel()), dtype=torch.float64, device=r.device))
    *total, n = exchange.total(torch.stack(sums)).tolist()
    mean_of = lambda x: x / n if n else float("nan")
    out = {"rmse": math.sqrt(mean_of(total[0])), "n": int(n)}
    if std is not None:
        out["nll"] = mean_of(total[1])
        out.update({f"coverage_{int(q * 100)}": mean_of(x) for q, x in zip(Z_OF, total[2:])})
    return out
