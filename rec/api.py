"""rec from Python, without Hydra: load a dataset, train a model, load a published one.

    import rec
    model = rec.train("ml-latest-small", model="features", K=10)
    model.recommend(user_id=1, k=10)
    loved = rec.train("ml-latest-small", feedback="implicit", train={"max_epochs": 20})
    same = rec.load_model(model.path)

:func:`train` takes the same settings as ``python train.py`` with the same defaults (the
shipped ``conf/`` composes them) and the same checks and messages: the config groups as
keywords (``model``, ``feedback``, ``split``, ``inference``, ``data``), ``K``, and a mapping
of keys for each section (``model={"tau": 0.5}`` is ``model.tau=0.5``); a section given as a
mapping keeps its group's defaults (``model="features"`` then picks the rung).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Mapping

from rec.data import DataConfig, Ratings, load_dataset as _load
from rec.errors import ConfigError
from rec.hydra_config import compose_run
from rec.model import Recommender

GROUPS = ("data", "model", "feedback", "split", "inference")
"""Config groups a keyword picks by name (``conf/<group>/<name>.yaml``)."""
SECTIONS = ("data", "model", "split", "train", "engine", "inference", "paths")
"""Sections whose keys a mapping sets."""


def load_dataset(name: str = "ml-latest-small", root: str | Path | None = None,
                 **options: Any) -> Ratings:
    """The ratings of a dataset (``DataConfig`` options: ``scale``, ``path``, ...); ``root``
    defaults to ``$REC_DATA_ROOT``, else ``data``."""
    root = root or os.environ.get("REC_DATA_ROOT", "data")
    return _load(DataConfig(name=name, root=str(root), **options))


def load_model(path: str | Path) -> Recommender:
    """A published model (:meth:`Recommender.load`)."""
    return Recommender.load(path)


def _value(value: Any) -> str:
    """An override's value as Hydra reads it (lists and null as JSON, strings quoted when
    they hold a character Hydra would parse)."""
    if isinstance(value, str):
        return value if value.replace("-", "").replace("_", "").replace(".", "").replace(
            "/", "").isalnum() else json.dumps(value)
    return json.dumps(value)


def overrides(data: str | Mapping | None = None, *, K: int | None = None,
              **sections: str | Mapping[str, Any]) -> list[str]:
    """The ``train.py`` overrides these keywords mean (see the module's docstring)."""
    out = []
    for name, given in (("data", data), *sections.items()):
        if given is None:
            continue
        if name not in GROUPS + SECTIONS:
            raise ConfigError(f"rec.train({name}=...): not a setting; the settings are "
                              f"{', '.join(sorted(set(GROUPS + SECTIONS)))} and K.")
        if isinstance(given, str):
            if name not in GROUPS:
                raise ConfigError(f"rec.train({name}={given!r}): {name} takes a mapping of its "
                                  f"keys, e.g. {name}={{'key': value}}.")
            out.append(f"{name}={given}")
        elif isinstance(given, Mapping):
            out += [f"{name}.{key}={_value(v)}" for key, v in given.items()]
        else:
            raise ConfigError(f"rec.train({name}={given!r}): expected a name or a mapping.")
    return out + ([] if K is None else [f"K={int(K)}"])


def train(data: str | Mapping | None = "ml-latest-small", *, K: int | None = None,
          quiet: bool = False, **sections: str | Mapping[str, Any]) -> Recommender:
    """Train as ``python train.py`` would with the same settings, publish the model, and
    return it (its file: ``model.path``).  Progress bars stay off; ``quiet`` also drops the
    closing summary.  A resumable run of the same settings resumes, as on the command line."""
    given = overrides(data, K=K, **sections)
    run = compose_run(given + ["progress=false"])
    from rec.pipeline import train as train_run
    folder = Path(run.paths.output_root) / "train" / run.data.name / \
        f"{run.model.name}-K{run.model.dim}" / \
        f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{os.getpid()}-{secrets.token_hex(3)}"
    if quiet:
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            summary = train_run(run, folder)
    else:
        summary = train_run(run, folder)
    path = Path(summary["model_file"]).resolve()
    model = Recommender.load(path)
    model.path = path
    return model
