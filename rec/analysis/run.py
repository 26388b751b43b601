"""Dispatch ``analyze.py task=<name>``: compute the task, render it, write its JSON, print it.

Each task module has typed ``Options``, a ``compute(ctx, options)`` that
returns its numbers (and, under keys starting with ``_``, the arrays its
figures need), a ``render(result, out_dir)`` that writes figures and CSV
tables, and a ``summarize(result)`` for the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rec.analysis import (coldstart, data, dimensions, genres, polarization, recommend,
                          uncertainty)
from rec.analysis.context import Context
from rec.errors import ConfigError
from rec.mapping import from_mapping
from rec.run_config import RunConfig
from rec.system import set_threads

TASKS = {"data": data, "polarization": polarization, "recommend": recommend,
         "genres": genres, "dimensions": dimensions, "coldstart": coldstart,
         "uncertainty": uncertainty}


@dataclass(frozen=True)
class AnalyzeConfig:
    """One analysis: the run whose model it reads, the task and its options (``conf/analyze.yaml``)."""

    run: RunConfig
    task: str
    options: object
    """The task's own ``Options`` dataclass."""
    checkpoint: str | None = None
    """A model file to analyze instead of the store's model for ``run``."""

    @classmethod
    def build(cls, run: RunConfig, task: str, options: dict,
              checkpoint: str | None = None) -> "AnalyzeConfig":
        if task not in TASKS:
            raise ConfigError(f"task={task}: choose one of {', '.join(TASKS)}.")
        return cls(run, task, from_mapping(TASKS[task].Options, options, "task"), checkpoint)


def run_task(job: AnalyzeConfig, out_dir: Path) -> dict:
    """Run ``job``; its figures, CSV tables and ``<task>.json`` go to ``out_dir``."""
    set_threads(job.run.threads)
    ctx = Context(job.run, out_dir, job.checkpoint)
    task = TASKS[job.task]
    computed = task.compute(ctx, job.options)
    task.render(computed, ctx.out_dir)
    numbers = {k: v for k, v in computed.items() if not k.startswith("_")}
    result = {"task": job.task, "dataset": ctx.ratings.name, "split": job.run.split.options(),
              **numbers, "summary": task.summarize(computed)}
    ctx.write_json(f"{job.task}.json", result)
    print(f"{job.task} ({ctx.ratings.name}) -> {ctx.out_dir}\n{result['summary']}")
    return result
