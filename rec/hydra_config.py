"""The one place where rec meets Hydra: composed configs become typed dataclasses.

``train.py`` and ``analyze.py`` call :func:`run_config` or
:func:`analyze_config` once; nothing else under ``rec/`` reads Hydra's
config objects.  Top-level ``K`` moves into the model's section, the
analysis task's options are checked against that task's own dataclass, and
Hydra's console log is told to keep every epoch's line to the log file
unless ``verbose=true``; a multirun ends with its table (:class:`SweepSummary`).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rec.cli import run_or_exit

from rec.errors import ConfigError
from rec.run_config import RunConfig
from rec.sweep import write_summary

if TYPE_CHECKING:
    from rec.analysis.run import AnalyzeConfig

ANALYZE_ONLY = ("task", "checkpoint")
CONF = Path(__file__).resolve().parent / "conf"
"""The configs: the package's own (in a clone, a link to the top-level conf/)."""


def register_resolvers() -> None:
    """``${run_id:}``: this process's id and a random tag, which the run folders' names end
    with, so runs started in the same second never share a folder (the value is cached: one
    per process and config)."""
    OmegaConf.register_new_resolver("run_id", lambda: f"{os.getpid()}-{secrets.token_hex(3)}",
                                    use_cache=True, replace=True)


def main_or_exit(main: Callable[[], None]) -> None:
    """Call a ``@hydra.main`` function so that every failure a user can cause ends in one line
    and exit status 2 (:func:`rec.cli.run_or_exit`), Hydra's own included: a bad override,
    and a run folder that cannot be made or written (Hydra writes its config there first).
    The job inside wraps itself in :func:`rec.cli.run_or_exit` too, so Hydra adds no line
    of its own to a failed job's."""
    register_resolvers()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing a traceback

    def job() -> None:
        try:
            main()
        except (HydraException, OmegaConfBaseException) as e:
            raise ConfigError(_hydra_message(e)) from e
    run_or_exit(job)


def _hydra_message(e: BaseException) -> str:
    """Hydra's message and its cause's, without OmegaConf's key-path detail lines."""
    lines = []
    for err in (e, e.__cause__):
        for line in str(err or "").splitlines():
            line = line.strip()
            if line and not line.startswith(("full_key:", "object_type=", "reference_type=")) \
                    and line not in lines:
                lines.append(line)
    return " ".join(lines) or type(e).__name__


def _plain(cfg: DictConfig) -> dict:
    values = OmegaConf.to_container(cfg, resolve=True)
    values.pop("hydra", None)
    if "K" in values:
        values["model"] = {**values.get("model", {}), "K": values.pop("K")}
    return values


def run_config(cfg: DictConfig) -> RunConfig:
    """The typed run configuration of a composed ``conf/config.yaml``."""
    return RunConfig.from_mapping(_plain(cfg))


def compose_run(overrides: list[str]) -> RunConfig:
    """The run configuration ``python train.py OVERRIDES`` would train (for searches)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        try:
            cfg = compose("config", overrides=list(overrides))
        except HydraException as e:
            raise ConfigError(f"cannot compose `{' '.join(overrides)}`: {e}") from None
        return run_config(cfg)


def analyze_config(cfg: DictConfig) -> "AnalyzeConfig":
    """The typed configuration of a composed ``conf/analyze.yaml``."""
    from rec.analysis.run import AnalyzeConfig  # here: train.py need not import the analyses
    values = _plain(cfg)
    task, checkpoint = (values.pop(k, None) for k in ANALYZE_ONLY)
    if not isinstance(task, dict) or "name" not in task:
        raise ConfigError("task=<name> is missing: write e.g. task=data.")
    options = dict(task)
    return AnalyzeConfig.build(RunConfig.from_mapping(values), options.pop("name"), options,
                               checkpoint)


def run_dir() -> Path:
    """This job's output folder, as Hydra made it."""
    return Path(HydraConfig.get().runtime.output_dir)


class _NotEpochs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("rec.epochs")


def route_epoch_lines(verbose: bool) -> None:
    """Per-epoch lines to the run's log file only, unless ``verbose`` (then to the terminal too)."""
    if verbose:
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(_NotEpochs())


class SweepSummary(Callback):
    """Hydra callback: the table of a multirun when it ends (:mod:`rec.sweep`)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        write_summary(Path(config.hydra.sweep.dir))
