"""From a run configuration to a trained, published model (what ``train.py`` runs).

Loads the data, splits it, trains (resuming a killed run with the same
fingerprint), logs to TensorBoard, writes ``metrics.json`` and the model into
the run folder, publishes the model where ``analyze.py`` finds it, and prints
a summary that names the split and gives the timings of the run and the
machine they came from.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import statistics
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import torch

from rec.bayes.chain import sample
from rec.data.load import DataConfig, load_dataset
from rec.data.shards import Shard, prepare, read_shard
from rec.distributed import Dist, from_env, shard_bounds
from rec.errors import ConfigError
from rec.data.ratings import Ratings
from rec.model import Recommender
from rec.progress import EpochProgress
from rec.run_config import RunConfig
from rec.runs import CHECKPOINT, RunLock, claim_run, fingerprint, publish, write_run
from rec.system import describe, peak_gpu_mb, peak_rss_mb, pick_device, set_threads
from rec.tensorboard_log import TensorBoardLogger
from rec.bayes.posterior import Posterior
from rec.training import FitResult, fit, load_checkpoint

log = logging.getLogger(__name__)


def load(run: RunConfig) -> tuple[Ratings, float]:
    """The configured dataset (with timestamps only when the split or the model's time terms
    need them), and its seconds."""
    start = time.perf_counter()
    ratings = load_dataset(run.data, timestamps=run.split.needs_timestamps or run.model.has_time)
    return ratings, time.perf_counter() - start


def load_shard(run: RunConfig, dist: Dist) -> tuple[Shard, float]:
    """This rank's part of the split dataset (the first rank on each machine writes the cache
    and the split's labels there first, while the others wait), and the seconds it took to
    read."""
    if dist.local_rank == 0:
        start = time.perf_counter()
        prepare(run.data, run.split)
        log.info("cache and split labels ready in %.2f s", time.perf_counter() - start)
    dist.barrier()
    start = time.perf_counter()
    shard = read_shard(run.data, run.split, dist.rank, dist.world, shard_bounds)
    return shard, time.perf_counter() - start


def _time_loading(data: DataConfig) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="rec-load-"))
    try:
        data = replace(data, cache_dir=str(folder))
        t0 = time.perf_counter()
        load_dataset(data)
        t1 = time.perf_counter()
        load_dataset(data)
        return {"csv_load_s": t1 - t0, "cache_load_s": time.perf_counter() - t1,
                "load_peak_rss_mb": peak_rss_mb()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure_loading(data: DataConfig) -> dict:
    """Seconds to parse the dataset's text files and to read its binary cache (SPEC §5).

    Runs in a child process, so the parse's memory does not count towards the
    training process's peak; the child's own peak is reported beside it.
    """
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_time_loading, (data,))


def run_identity(run: RunConfig, ratings: Ratings | Shard) -> dict:
    """Everything that determines a run's result, the data's content included: resume
    continues only a run with the same."""
    sampled = {"inference": asdict(run.inference)} if run.inference.gibbs else {}
    if sampled and isinstance(ratings, Shard):  # each rank's checkpointed averages are its own
        sampled["processes"] = ratings.world
    return {"data": [ratings.name, ratings.content_digest()], "ratings": len(ratings),
            "split": run.split.options(), "model": run.model.hparams(),
            "train": run.train.results_key(), "engine": asdict(run.engine), "seed": run.seed,
            "dtype": str(run.torch_dtype), "device": pick_device(run.device).type, **sampled}


def run_fingerprint(run: RunConfig, ratings: Ratings | Shard) -> str:
    return fingerprint(run_identity(run, ratings))


def _run_folder(run: RunConfig, run_dir: Path, identity: dict, name: str
                ) -> tuple[RunLock, tuple[Path, dict, int]]:
    """The lock this process holds on the folder it trains in (an unfinished run of this
    identity to resume, else ``run_dir``), and the folder, its run record and the epoch its
    checkpoint reached."""
    work, info, lock, notices = claim_run(Path(run.paths.output_root), Path(run_dir), identity,
                                          name, run.resume, Path(run.paths.tensorboard))
    for line in notices:
        log.warning(line)
    epoch = 0
    if work != Path(run_dir):
        try:
            saved = load_checkpoint(work / CHECKPOINT, info["fingerprint"])
        except BaseException:
            lock.release()
            raise
        epoch = saved["state"]["epoch"] if "state" in saved else saved["sweep"]
        log.info("resuming the unfinished run in %s (after epoch %d)", work, epoch)
    return lock, (work, info, epoch)


def train(run: RunConfig, run_dir: Path) -> dict:
    """Train the configured model; return the summary (``val/rmse`` is what sweeps minimize)."""
    set_threads(run.threads)
    device = pick_device(run.device)
    dist = from_env(device)
    try:
        summary = _train(run, run_dir, device, dist)
    except BaseException:
        dist.close(clean=False)
        raise
    dist.close()
    return summary


def _train(run: RunConfig, run_dir: Path, device, dist: Dist) -> dict:
    """:func:`train` in one process of the job ``dist``: rank 0 alone writes."""
    if dist.active and run.split.kind == "strong":
        raise ConfigError("split=strong runs in one process; start it with python, not torchrun.")
    if dist.active and run.train.joint_genre_step:
        raise ConfigError("train.joint_genre_step=true runs in one process only; drop it "
                          "under torchrun.")
    loading = measure_loading(run.data) if run.measure_loading and dist.main else {}
    if dist.active:  # no rank holds the whole dataset
        (ratings, load_s), split = load_shard(run, dist), None
    else:
        ratings, load_s = load(run)
        split = run.split.make(ratings)
    identity = run_identity(run, ratings)
    fp = fingerprint(identity)
    name = f"{ratings.name}_{run.split.tag()}_{run.variant}_K{run.model.dim}"
    lock, where = _run_folder(run, run_dir, identity, name) if dist.main else (nullcontext(), None)
    with lock:  # the folder stays this process's to the end
        work, info, done = dist.broadcast(where)
        board = TensorBoardLogger(info["tensorboard"], purge_step=done + 1 if done else None) \
            if run.tensorboard and dist.main else None
        inf = run.inference
        steps = inf.burn_in + inf.samples if inf.gibbs else run.train.max_epochs
        progress = EpochProgress(steps, done, enabled=run.progress and dist.main,
                                 unit="sweep" if inf.gibbs else "epoch")
        callbacks = tuple(c for c in (board, progress) if c)
        try:
            result, posterior = _infer(run, ratings, split, device, work / CHECKPOINT, fp,
                                       callbacks, dist)
            progress.finish()
        finally:
            progress.close()
        peaks = dist.gather(peak_rss_mb())
        if not dist.main:  # the same result as rank 0's, which writes it
            return {"final": result.final, "history": result.history}
        split_info = run.split.describe(ratings.sizes if split is None else split.sizes())
        meta = {"fingerprint": fp, "split": run.split.options(), "seed": run.seed,
                "run": str(work), "inference": asdict(run.inference)}
        if split is None:  # no rank holds the dataset: its rated movies go to the file in blocks
            saved = Recommender.save_from_shard(work / "model.pt", ratings, result.params,
                                                run.model, result.final, meta, posterior)
        else:
            saved = Recommender.from_training(ratings, split.train, result.params, run.model,
                                              result.final, meta, posterior).save(work / "model.pt")
        published = publish(saved, run.published_model(ratings.name),
                            {"run": str(work), "fingerprint": fp, "name": name,
                             "overrides": _overrides(run_dir)})
        summary = _summary(run, ratings, split_info, result, load_s, loading, device, published,
                           info)
        summary["machine"]["processes"] = dist.world
        if dist.active:
            summary["timing"]["peak_rss_mb_per_rank"] = peaks
            comm = [h["time/comm_s"] for h in result.history if "time/comm_s" in h]
            mb = [h["comm/mb"] for h in result.history if "comm/mb" in h]
            summary["timing"]["comm_s_median"] = statistics.median(comm) if comm else float("nan")
            summary["timing"]["comm_mb_per_epoch"] = statistics.median(mb) if mb else float("nan")
        for folder in {work, Path(run_dir)}:  # a resumed run: its own folder and the new one
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
        if board:
            counts = ratings.item_degree.cpu() if split is None \
                else ratings.item_counts(split.train)
            factors = (result.params if posterior is None else posterior.mean()).item_factors
            _finish_board(board, run, ratings, split_info, result, factors.cpu(), counts)
        write_run(work, {**info, "finished": True, "model": str(published)})
        print(format_summary(summary))
        return summary


def _overrides(run_dir: Path) -> list[str]:
    """The command-line overrides Hydra recorded for this run (none outside Hydra)."""
    try:
        return [line[2:] for line in (Path(run_dir) / ".hydra" / "overrides.yaml").read_text()
                .splitlines() if line.startswith("- ")]
    except OSError:
        return []


def _infer(run: RunConfig, ratings: Ratings | Shard, split, device, checkpoint: Path, fp: str,
           callbacks: tuple, dist: Dist) -> tuple[FitResult, Posterior | None]:
    """ALS training, or the Gibbs chain (``inference=gibbs``) and its kept samples."""
    common = {"seed": run.seed, "device": device, "dtype": run.torch_dtype,
              "checkpoint": checkpoint, "fingerprint": fp, "callbacks": callbacks}
    if run.inference.gibbs:
        chain = sample(ratings, split, run.model, run.inference, run.train, run.engine,
                       dist=dist, **common)
        return chain.fit, chain.posterior
    return fit(ratings, split, run.model, run.train, run.engine, dist=dist, **common), None


def _finish_board(board: TensorBoardLogger, run: RunConfig, ratings: Ratings | Shard,
                  split_info: dict, result: FitResult, item_factors: torch.Tensor,
                  item_counts: torch.Tensor) -> None:
    split = {f"split_{k}": str(v) for k, v in split_info.items() if k != "sizes"}
    board.log_hparams({**run.model.hparams(), "inference": run.inference.method,
                       "dataset": ratings.name, "seed": run.seed, **split},
                      result.final, result.best_epoch)
    genres = [" | ".join(ratings.movies.genres_of(i)) for i in range(ratings.n_items)]
    board.log_projector(item_factors, ratings.movies.titles, genres, item_counts)
    board.close()


def _per_epoch(result: FitResult) -> dict:
    als, evals = result.timings["als_s"], result.timings["eval_s"]
    nan = float("nan")
    out = {"als_s_median": statistics.median(als) if als else nan,
           "als_s_min": min(als) if als else nan,
           "eval_s_median": statistics.median(evals) if evals else nan}
    phases = sorted({k for h in result.history for k in h if k.startswith("profile/")})
    out["profile"] = {k[8:-2]: statistics.median(h[k] for h in result.history if k in h) for k in phases}
    millions = result.engine.n_train / 1e6
    out["als_s_per_million_ratings"] = out["als_s_median"] / millions if millions else nan
    return out


def _summary(run: RunConfig, ratings: Ratings | Shard, split_info: dict, result: FitResult, load_s: float,
             loading: dict, device, published: Path, info: dict) -> dict:
    facts = result.engine
    return {
        "dataset": ratings.name, "counts": ratings.summary(), "split": split_info,
        "model": run.model.hparams(), "train": asdict(run.train), "engine": asdict(facts.sizes),
        "inference": asdict(run.inference),
        "final": result.final, "history": result.history,
        "timing": {"load_s": load_s, **loading, "setup_s": result.timings["setup_s"],
                   **_per_epoch(result), "final_eval_s": result.timings["final_eval_s"],
                   "epochs_timed": len(result.timings["als_s"]), "padding": facts.padding,
                   "tiles": {"user_step": facts.user_step_tiles, "movie_step": facts.movie_step_tiles},
                   "peak_rss_mb": peak_rss_mb(), **peak_gpu_mb(device)},
        "cold": {"users": facts.cold_users, "movies": facts.cold_movies},
        "machine": describe(device), "model_file": str(published),
        "tensorboard": info["tensorboard"],
    }


def format_split(split: dict) -> str:
    """``random 0.9/0.05/0.05, seed 0: 90,752 train, 5,042 val, 5,042 test``."""
    how = f"{split['kind']}" + (f" fold {split['fold']}" if "fold" in split else "")
    how += f" {split['cold_fraction']:g} of movies held out," if "cold_fraction" in split else ""
    how += (" " + "/".join(f"{x:g}" for x in split["fractions"])) if "fractions" in split \
        else " (one rating per user each for validation and test)"
    how += " of users" if "fold_in" in split else ""
    how += f", seed {split['seed']}" if "seed" in split else ""
    sizes = split["sizes"]
    given = f" (held-out users folded in from {split['fold_in']:g} of their ratings, " \
        f"{sizes['fold_in']:,} rows)" if "fold_in" in split else ""
    return f"{how}: {sizes['train']:,} train, {sizes['val']:,} val, {sizes['test']:,} test{given}"


def _steps_line(f: dict, t: dict) -> str:
    if t['als_s_median'] != t['als_s_median']:  # NaN: a resumed run that had nothing left to do
        return (f"  epochs    {f['epochs']} run, best {f['best_epoch']}; none ran in this process "
                "(the checkpoint it resumed from had finished), so no timing")
    per = (f"({t['als_s_per_million_ratings']:.4f} s per million ratings); "
           f"eval s/{'sweep' if 'samples_kept' in f else 'epoch'} {t['eval_s_median']:.3f}")
    if "samples_kept" in f:
        return (f"  sweeps    {f['epochs']} Gibbs sweeps after {f['warm_start']} ALS epochs: "
                f"burn-in {f['burn_in']}, {f['samples_averaged']} averaged, {f['samples_kept']} "
                f"kept; s/sweep median {t['als_s_median']:.3f}, min {t['als_s_min']:.3f} " + per)
    return (f"  epochs    {f['epochs']} run, best {f['best_epoch']}; ALS s/epoch median "
            f"{t['als_s_median']:.3f}, min {t['als_s_min']:.3f} " + per)


def _accuracy_line(f: dict, k: str) -> str:
    if "val/rmse" not in f:  # the implicit loss: no ratings predicted, selected by NDCG
        return (f"  val       NDCG@{k} {f[f'val/ndcg@{k}']:.4f} (what selects the epoch)   "
                f"objective L {f['objective']:,.1f}")
    return (f"  val       RMSE {f['val/rmse']:.4f}   test RMSE {f['test/rmse']:.4f}  NLL "
            f"{f['test/nll']:.4f}  " + (
                f"warm {f['test/warm_rmse']:.4f} ({f['test/warm_n']:,} rows), cold-start "
                f"{f['test/cold_rmse']:.4f} ({f['test/cold_n']:,} rows)" if f["test/cold_n"]
                else "no test movie is unseen in training"))


def format_summary(s: dict) -> str:
    f, t, m, c = s["final"], s["timing"], s["machine"], s["counts"]
    k = next((key.split("@")[1] for key in f if key.startswith("test/precision@")), "10")
    lines = [
        f"rec: {s['dataset']}  model={s['model']['model']}  K={s['model']['K']}  "
        f"({c['ratings']:,} ratings, {c['users']:,} users, {c['movies']:,} movies)",
        f"  split     {format_split(s['split'])}",
        f"  machine   {m['device']}, {m['threads']} threads, {m['cpu']}" + (f", {m['gpu']}" if 'gpu' in m else "")
        + (f"; {m['processes']} processes (torch.distributed)" if m.get("processes", 1) > 1 else ""),
        f"  data      loaded in {t['load_s']:.2f} s" + (
            f"; apart: parse from CSV {t['csv_load_s']:.2f} s (peak RSS {t['load_peak_rss_mb']:,.0f} MiB), "
            f"read from cache {t['cache_load_s']:.2f} s" if "csv_load_s" in t else ""),
        f"  setup     {t['setup_s']:.2f} s ({s['engine']['kernel']} kernel; grouping, padding "
        f"{t['padding']:.1%}; table tiles: "
        f"user step {t['tiles']['user_step']}, movie step {t['tiles']['movie_step']})",
        _steps_line(f, t),
        *(["  profile   median s/epoch: " + ", ".join(f"{k} {v:.3f}" for k, v in t["profile"].items())]
          if t.get("profile") else []),
        f"  memory    peak RSS {t['peak_rss_mb']:,.0f} MiB" + (
            " (per rank: " + ", ".join(f"{m:,.0f}" for m in t["peak_rss_mb_per_rank"]) + " MiB)"
            if "peak_rss_mb_per_rank" in t else "") + (
            f"; peak GPU memory {t['peak_gpu_mb']:,.0f} MiB" if "peak_gpu_mb" in t else ""),
        *([f"  comm      median per epoch: {t['comm_s_median']:.3f} s in collectives, "
           f"{t['comm_mb_per_epoch']:,.1f} MB sent per rank"] if "comm_s_median" in t else []),
        *([f"  intervals test coverage of the 50% / 90% predictive intervals: "
           f"{f['test/coverage_50']:.3f} / {f['test/coverage_90']:.3f}"] if "test/coverage_50" in f
          else []),
        _accuracy_line(f, k),
        f"  ranking   precision@{k} {f[f'test/precision@{k}']:.4f}  recall@{k} {f[f'test/recall@{k}']:.4f}  "
        f"NDCG@{k} {f[f'test/ndcg@{k}']:.4f}  MAP@{k} {f[f'test/map@{k}']:.4f}  hit rate "
        f"{f[f'test/hit_rate@{k}']:.3f}  ({f['test/ranked_users']} users; relevant: test ratings "
        f">= {s['train']['relevance']:g})",
        f"  lists     coverage {f[f'test/coverage@{k}']:.1%} of the catalogue, mean popularity "
        f"{f[f'test/popularity@{k}']:,.1f} training ratings" + (
            f"; ranked by predicted rating + {f['popularity_weight']:g} log(1 + training count) "
            "(weight chosen on validation)" if "popularity_weight" in f else ""),
        f"  model     {s['model_file']}",
        f"  logs      tensorboard --logdir {Path(s['tensorboard']).parent}",
    ]
    return "\n".join(lines)
