"""Dispatch ``analyze.py task=<name>``: run the task, write its JSON, print its summary."""

from __future__ import annotations

from pathlib import Path

from rec.analysis import data, dimensions, genres, polarization, recommend
from rec.analysis.context import Context
from rec.errors import ConfigError
from rec.system import set_threads

TASKS = {"data": data.run, "polarization": polarization.run, "recommend": recommend.run,
         "genres": genres.run, "dimensions": dimensions.run}


def run_task(cfg, out_dir: Path) -> dict:
    """Run ``cfg.task.name``; its figures, CSV tables and ``<task>.json`` go to ``out_dir``."""
    name = cfg.task.name
    if name not in TASKS:
        raise ConfigError(f"task={name!r}: choose one of {', '.join(TASKS)}.")
    set_threads(cfg.get("threads"))
    ctx = Context(cfg, out_dir)
    result = TASKS[name](ctx, cfg.task)
    result = {"task": name, "dataset": ctx.ratings.name, **result}
    ctx.write_json(f"{name}.json", result)
    print(f"{name} ({ctx.ratings.name}) -> {ctx.out_dir}\n{result['summary']}")
    return result
