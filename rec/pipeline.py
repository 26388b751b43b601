"""From a composed configuration to a trained, published model (what ``train.py`` runs).

Loads the data, splits it, trains (resuming a killed run with the same
fingerprint), logs to TensorBoard, writes ``metrics.json`` and the model into
the run folder, publishes the model where ``analyze.py`` finds it, and prints
a summary with the timings of the run and the machine they came from.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

from rec.als.config import ModelConfig
from rec.data.load import DataConfig, load_dataset
from rec.data.ratings import Ratings
from rec.data.splits import make_split
from rec.files import atomic_write
from rec.model import Recommender
from rec.runs import CHECKPOINT, find_resumable, fingerprint, model_path, read_run, write_run
from rec.system import describe, peak_rss_mb, pick_device, set_threads
from rec.tensorboard_log import TensorBoardLogger
from rec.training import TrainConfig, fit, load_checkpoint

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _get(cfg, key, default=None):
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def split_options(cfg) -> dict:
    s = _get(cfg, "split", {}) or {}
    return {"kind": _get(s, "kind", "random"), "fractions": list(_get(s, "fractions", (0.9, 0.05, 0.05))),
            "seed": _get(s, "seed", 0), "fold": _get(s, "fold", "u1")}


def load(cfg) -> tuple[Ratings, float]:
    """The configured dataset (timestamps only for the temporal split), and its load seconds."""
    start = time.perf_counter()
    ratings = load_dataset(DataConfig.from_mapping(cfg.data),
                           timestamps=split_options(cfg)["kind"] == "temporal")
    return ratings, time.perf_counter() - start


def _time_loading(data: DataConfig) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="rec-load-"))
    try:
        data.cache_dir = str(folder)
        t0 = time.perf_counter()
        load_dataset(data)
        t1 = time.perf_counter()
        load_dataset(data)
        return {"csv_load_s": t1 - t0, "cache_load_s": time.perf_counter() - t1,
                "load_peak_rss_mb": peak_rss_mb()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure_loading(cfg) -> dict:
    """Seconds to parse the dataset's text files and to read its binary cache (SPEC §5).

    Runs in a child process, so the parse's memory does not count towards the
    training process's peak; the child's own peak is reported beside it.
    """
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_time_loading, (DataConfig.from_mapping(cfg.data),))


def train_from_config(cfg, run_dir: Path) -> dict:
    """Train the configured model; return the summary (``val/rmse`` is what sweeps minimize)."""
    set_threads(_get(cfg, "threads"))
    device = pick_device(_get(cfg, "device", "auto"))
    dtype = DTYPES[_get(cfg, "dtype", "float32")]
    model_cfg = ModelConfig.from_mapping(cfg.model, K=cfg.K)
    train_cfg = TrainConfig.from_mapping(cfg.train)
    seed = int(_get(cfg, "seed", 0))
    loading = measure_loading(cfg) if _get(cfg, "measure_loading", False) else {}
    ratings, load_s = load(cfg)
    options = split_options(cfg)
    split = make_split(ratings, **options)
    fp = fingerprint({"data": ratings.name, "ratings": len(ratings), "split": options,
                      "model": model_cfg.hparams(), "train": train_cfg.results_key(),
                      "seed": seed, "dtype": str(dtype), "device": device.type})
    paths = cfg.paths
    work = find_resumable(Path(paths.output_root), fp) if _get(cfg, "resume", True) else None
    checkpoint_epoch = 0
    if work is not None:
        checkpoint_epoch = load_checkpoint(work / CHECKPOINT, fp)["state"]["epoch"]
        log.info("resuming the unfinished run in %s (after epoch %d)", work, checkpoint_epoch)
    work = work or Path(run_dir)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    info = read_run(work) or {
        "fingerprint": fp, "finished": False, "created": stamp,
        "tensorboard": str(Path(paths.tensorboard) / f"{ratings.name}_{model_cfg.name}_K{model_cfg.dim}_{stamp}")}
    write_run(work, info)
    board = TensorBoardLogger(info["tensorboard"], purge_step=checkpoint_epoch + 1 if checkpoint_epoch else None) \
        if _get(cfg, "tensorboard", True) else None
    result = fit(ratings, split, model_cfg, train_cfg, seed=seed, device=device, dtype=dtype,
                 checkpoint=work / CHECKPOINT, fingerprint=fp,
                 callbacks=(board,) if board else ())
    model = Recommender.from_training(ratings, split.train, result.params, model_cfg, result.final,
                                      {"fingerprint": fp, "split": options, "seed": seed,
                                       "run": str(work)})
    saved = model.save(work / "model.pt")
    published = atomic_write(model_path(Path(paths.models), ratings.name, model_cfg.name, model_cfg.dim),
                             lambda tmp: shutil.copyfile(saved, tmp))
    summary = _summary(cfg, ratings, model_cfg, result, load_s, loading, device, published, info)
    for folder in {work, Path(run_dir)}:  # a resumed run: its own folder and the new one
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    if board:
        board.log_hparams({**model_cfg.hparams(), "dataset": ratings.name, "seed": seed},
                          result.final)
        genres = [" | ".join(ratings.movies.genres_of(i)) for i in range(ratings.n_items)]
        board.log_projector(result.params.item_factors, ratings.movies.titles, genres,
                            model.item_counts)
        board.close()
    write_run(work, {**info, "finished": True, "model": str(published)})
    print(format_summary(summary))
    return summary


def _summary(cfg, ratings, model_cfg, result, load_s, loading, device, published, info) -> dict:
    als, evals = result.timings["als_s"], result.timings["eval_s"]
    per_epoch = {"als_s_median": statistics.median(als) if als else float("nan"),
                 "als_s_min": min(als) if als else float("nan"),
                 "eval_s_median": statistics.median(evals) if evals else float("nan")}
    phases = sorted({k for h in result.history for k in h if k.startswith("profile/")})
    per_epoch["profile"] = {k[8:-2]: statistics.median(h[k] for h in result.history if k in h) for k in phases}
    millions = result.engine.by_user.nnz / 1e6
    per_epoch["als_s_per_million_ratings"] = per_epoch["als_s_median"] / millions if millions else float("nan")
    return {
        "dataset": ratings.name, "counts": ratings.summary(), "model": model_cfg.hparams(),
        "train": dict(cfg.train), "final": result.final, "history": result.history,
        "timing": {"load_s": load_s, **loading, "setup_s": result.timings["setup_s"], **per_epoch,
                   "final_eval_s": result.timings["final_eval_s"], "epochs_timed": len(als),
                   "padding": result.engine.by_user.padded / max(result.engine.by_user.nnz, 1) - 1,
                   "tiles": {"user_step": result.engine.by_user.n_tiles,
                             "movie_step": result.engine.by_item.n_tiles},
                   "peak_rss_mb": peak_rss_mb()},
        "machine": describe(device), "model_file": str(published),
        "tensorboard": info["tensorboard"],
    }


def format_summary(s: dict) -> str:
    f, t, m, c = s["final"], s["timing"], s["machine"], s["counts"]
    k = next((key.split("@")[1] for key in f if key.startswith("test/precision@")), "10")
    lines = [
        f"rec: {s['dataset']}  model={s['model']['model']}  K={s['model']['K']}  "
        f"({c['ratings']:,} ratings, {c['users']:,} users, {c['movies']:,} movies)",
        f"  machine   {m['device']}, {m['threads']} threads, {m['cpu']}" + (f", {m['gpu']}" if 'gpu' in m else ""),
        f"  data      loaded in {t['load_s']:.2f} s" + (
            f"; apart: parse from CSV {t['csv_load_s']:.2f} s (peak RSS {t['load_peak_rss_mb']:,.0f} MiB), "
            f"read from cache {t['cache_load_s']:.2f} s" if "csv_load_s" in t else ""),
        f"  setup     {t['setup_s']:.2f} s (grouping, padding {t['padding']:.1%}; table tiles: "
        f"user step {t['tiles']['user_step']}, movie step {t['tiles']['movie_step']})",
        f"  epochs    {f['epochs']} run, best {f['best_epoch']}; ALS s/epoch median {t['als_s_median']:.3f}, "
        f"min {t['als_s_min']:.3f} ({t['als_s_per_million_ratings']:.4f} s per million ratings); "
        f"eval s/epoch {t['eval_s_median']:.3f}",
        *(["  profile   median s/epoch: " + ", ".join(f"{k} {v:.3f}" for k, v in t["profile"].items())]
          if t.get("profile") else []),
        f"  memory    peak RSS {t['peak_rss_mb']:,.0f} MiB",
        f"  val       RMSE {f['val/rmse']:.4f}   test RMSE {f['test/rmse']:.4f}  NLL {f['test/nll']:.4f}  "
        + (f"cold-start RMSE {f['test/cold_rmse']:.4f} ({f['test/cold_n']} rows)" if f["test/cold_n"]
           else "no test movie is unseen in training"),
        f"  ranking   precision@{k} {f[f'test/precision@{k}']:.4f}  recall@{k} {f[f'test/recall@{k}']:.4f}  "
        f"NDCG@{k} {f[f'test/ndcg@{k}']:.4f}  ({f['test/ranked_users']} users)",
        f"  model     {s['model_file']}",
        f"  logs      tensorboard --logdir {Path(s['tensorboard']).parent}",
    ]
    return "\n".join(lines)

