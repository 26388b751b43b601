"""Compare engine settings inside one process: ``python -m rec.compare`` (SPEC §5).

Timings on shared machines drift by 15-40% between processes, so two
settings are only comparable when their epochs interleave in one process.
This builds one engine per distinct ``chunk``/``batch`` on the same training
ratings and runs their epochs round-robin (``threads`` is switched per epoch),
then prints each setting's min and median ALS seconds per epoch.  The
shipped defaults always run as the reference; each argument changes them.

    python -m rec.compare --data synthetic --scale 0.25 \\
        chunk=65536 chunk=131072 chunk=262144 batch=4096 threads=1

Each engine holds its own grouped ratings (~0.5 GB at full ML-32M scale).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace

import torch

from rec.als.config import RUNGS, ModelConfig
from rec.als.engine import ALS
from rec.cli import run_or_exit
from rec.data.load import DATASETS, DataConfig, load_dataset
from rec.data.splits import make_split
from rec.errors import ConfigError
from rec.system import describe, pick_device


@dataclass(frozen=True)
class Setting:
    """One engine configuration to time."""

    chunk: int = 1 << 17
    """Padded ratings per Gram chunk (``train.chunk_elems``)."""
    batch: int = 1 << 15
    """Rows per batched solve (``train.batch_rows``)."""
    threads: int = 0
    """torch threads during its epochs; 0 keeps the process default."""

    @classmethod
    def parse(cls, text: str, base: "Setting") -> "Setting":
        """``chunk=131072,batch=32768,threads=2``; keys left out keep ``base``'s values."""
        values = {}
        for item in filter(None, text.split(",")):
            key, _, value = item.partition("=")
            if key not in cls.__dataclass_fields__ or not value.isdigit():
                raise ConfigError(f"cannot read the setting {item!r}: write chunk=N, batch=N "
                                  "or threads=N, comma-separated")
            values[key] = int(value)
        return replace(base, **values)

    def label(self) -> str:
        return f"chunk={self.chunk},batch={self.batch},threads={self.threads or 'default'}"


def time_settings(engines: dict, settings: list[Setting], epochs: int) -> dict[Setting, list[float]]:
    """ALS seconds of each epoch per setting, the settings' epochs interleaved."""
    default_threads = torch.get_num_threads()
    seconds: dict[Setting, list[float]] = {s: [] for s in settings}
    for _ in range(epochs):
        for s in settings:
            engine, params = engines[(s.chunk, s.batch)]
            torch.set_num_threads(s.threads or default_threads)
            start = time.perf_counter()
            engine.epoch(params)
            if engine.device.type == "cuda":
                torch.cuda.synchronize(engine.device)
            seconds[s].append(time.perf_counter() - start)
    torch.set_num_threads(default_threads)
    return seconds


def compare(args: argparse.Namespace) -> str:
    device = pick_device(args.device)
    base = Setting()
    settings = list(dict.fromkeys([base, *(Setting.parse(t, base) for t in args.settings)]))
    ratings = load_dataset(DataConfig(name=args.data, root=args.root, scale=args.scale),
                           timestamps=False)
    train = make_split(ratings, seed=0).train
    model = ModelConfig(name=args.model, K=args.K, tau=15, gamma=3, reg_scaling="none").validated()
    engines = {}
    for s in settings:
        if (s.chunk, s.batch) not in engines:
            engine = ALS(model, ratings.user[train], ratings.item[train], ratings.rating[train],
                         ratings.n_users, ratings.n_items, ratings.movies.genre_matrix(), device,
                         chunk_elems=s.chunk, batch_rows=s.batch)
            engines[(s.chunk, s.batch)] = engine, engine.initial_params(ratings.n_genres, 0)
    seconds = time_settings(engines, settings, args.epochs + 1)  # the first epoch warms up
    machine = describe(device)
    lines = [f"{ratings.name}: {len(train):,} training ratings, {args.model} K={args.K}, "
             f"{args.epochs} timed epochs each (after one warm-up), interleaved",
             f"machine: {machine['device']}, {machine['cpu']}, {machine['cpus']} CPUs, "
             f"default {machine['threads']} threads, torch {machine['torch']}"]
    for s, t in seconds.items():
        timed = t[1:]
        lines.append(f"  {s.label():44s} median {statistics.median(timed):.3f} s  "
                     f"min {min(timed):.3f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rec.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", help="chunk=N,batch=N,threads=N (one per setting)")
    parser.add_argument("--data", default="synthetic", choices=DATASETS)
    parser.add_argument("--scale", type=float, default=1.0, help="synthetic: fraction of ML-32M")
    parser.add_argument("--root", default=os.environ.get("REC_DATA_ROOT", "data"))
    parser.add_argument("--model", default="features", choices=RUNGS)
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    print(run_or_exit(lambda: compare(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
