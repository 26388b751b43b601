"""A Gibbs chain from warm start to posterior: sweeps, running means, checkpoints, resume.

``sample`` is ``inference=gibbs``'s counterpart of :func:`rec.training.fit`: an optional
warm start of ALS epochs (the rung's own priors), ``burn_in`` sweeps, then ``samples``
sweeps whose validation and test predictions are averaged as they come (the posterior
mean) and ``keep`` of which, evenly thinned, are kept for the saved model.  Every
``checkpoint_every`` sweeps the whole state, random generators included, is written
atomically; given that checkpoint again the chain continues exactly as if uninterrupted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from rec.als.config import ModelConfig
from rec.als.params import Params
from rec.als.solve import PhaseTimer
from rec.als.sizes import EngineSizes
from rec.bayes.config import InferenceConfig
from rec.bayes.posterior import Posterior, RunningPredictions, coverage, rmse
from rec.bayes.sampler import GibbsSampler
from rec.data.ratings import Ratings
from rec.data.splits import Split
from rec.errors import ConfigError
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


def sample(ratings: Ratings, split: Split, model_cfg: ModelConfig, inference: InferenceConfig,
           cfg: TrainConfig = TrainConfig(), sizes: EngineSizes = EngineSizes(), *,
           seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
           checkpoint: Path | None = None, fingerprint: str = "",
           callbacks: tuple[Callback, ...] = ()) -> ChainResult:
    """Run the chain on ``split.train``; resume from ``checkpoint`` when it exists."""
    if split.fold_in is not None:
        raise ConfigError("split=strong folds its held-out users in by an ALS user step; the "
                          "Gibbs sampler does not fold users in. Use inference=als.")
    _check(model_cfg, cfg)
    device = torch.device(device)
    start = _sync(device)
    engine = build_engine(ratings, split.train, model_cfg, sizes, device, dtype,
                          relaxation=cfg.relaxation, heldout=heldout_rows(split))
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
        for part, r in running.items():
            r.load_state_dict(state["running"][part])
        log.info("resuming the chain %s after sweep %d", checkpoint, done)
    else:
        for _ in range(inference.warm_start):
            engine.epoch(p)
    save = lambda: save_checkpoint(checkpoint, fingerprint, {
        "sweep": done, "params": p.state_dict(), "sampler": sampler.state_dict(),
        "history": history, "kept": kept,
        "running": {k: r.state_dict() for k, r in running.items()}})
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
            record[f"{part}/sample_rmse"] = rmse(rating, f, ratings.rating_range)
            if done > inference.burn_in:
                running[part].add(f, hyper.lam)
            mean = running[part].mean if running[part].count else f
            record[f"{part}/rmse"] = rmse(rating, mean, ratings.rating_range)
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


def _check(model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    """Refuse what a chain cannot do, rather than ignore it.  ``train.max_epochs``,
    ``patience``, ``min_delta`` and ``restore_best`` are ALS's: a chain runs
    ``inference.burn_in + inference.samples`` sweeps; ``train.relaxation`` applies to its ALS
    warm start."""
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


def _final(engine, p: Params, posterior: Posterior, running: dict, ratings: Ratings,
           split: Split, data: _Subsets, cfg: TrainConfig, seed: int) -> dict:
    """Posterior-mean RMSE, predictive NLL and interval coverage per split, warm and cold
    test rows, the last sample's train RMSE, and ranking by the posterior-mean scores."""
    rr = ratings.rating_range
    raw, clipped = engine.train_errors(p, rr)
    n = engine.n_train
    out = {"train/rmse": math.sqrt(clipped / max(n, 1)), "train/n": n,
           "objective": engine.objective(p, raw)}
    for part, (user, item, rating) in data.parts.items():
        mean, std = running[part].mean, running[part].std
        out[f"{part}/rmse"], out[f"{part}/n"] = rmse(rating, mean, rr), rating.numel()
        out[f"{part}/nll"] = gaussian_nll(rating, mean.clamp(*rr), std)
        out.update({f"{part}/{k}": v for k, v in coverage(rating, mean, std).items()})
    user, item, rating = data.parts["test"]
    cold, mean = cold_rows(engine, item), running["test"].mean
    out["test/cold_rmse"], out["test/cold_n"] = rmse(rating[cold], mean[cold], rr), int(cold.sum())
    out["test/warm_rmse"], out["test/warm_n"] = rmse(rating[~cold], mean[~cold], rr), int((~cold).sum())
    predictive = posterior.predictive_params().to(engine.device, engine.dtype)
    out.update(popularity_ranking(predictive, ratings, split, data, cfg, seed))
    return out


def gaussian_nll(rating: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> float:
    """Mean negative log density of the ratings under N(mean, std^2) (the predictive)."""
    if rating.numel() == 0:
        return float("nan")
    var = std.double() ** 2
    return float((0.5 * torch.log(2 * math.pi * var)
                  + (rating.double() - mean.double()) ** 2 / (2 * var)).mean())
