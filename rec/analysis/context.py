"""What every analysis starts from: the data, its split, and the trained model (SPEC §3).

The model is found in the model store by dataset, rung and K; when there is
none it is trained first with the same configuration (and the analysis says
so); ``checkpoint=PATH`` names a model file explicitly.  The split is rebuilt
from the options the model was trained with, so "users who rated the seed in
training" means exactly the ratings the model saw.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from rec.als.config import ModelConfig
from rec.data.load import DataConfig, load_dataset
from rec.data.ratings import Ratings
from rec.data.splits import Split, make_split
from rec.errors import ConfigError, RecError
from rec.model import Recommender
from rec.pipeline import split_options, train_from_config
from rec.runs import model_path

log = logging.getLogger(__name__)


@dataclass
class Context:
    """The composed configuration, the dataset and an output folder; models on demand."""

    cfg: object
    out_dir: Path
    ratings: Ratings = field(init=False)
    _models: dict = field(default_factory=dict, init=False)
    _splits: dict = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ratings = load_dataset(DataConfig.from_mapping(self.cfg.data), timestamps=False)

    def model(self, rung: str | None = None, K: int | None = None) -> Recommender:
        """The trained model of ``rung`` at ``K`` (default: the configured ones), trained if missing."""
        rung = rung or self.cfg.model.name
        K = int(self.cfg.K if K is None else K)
        key = (rung, K)
        if key not in self._models:
            self._models[key] = self._find_or_train(rung, K)
        return self._models[key]

    def split(self, model: Recommender) -> Split:
        """The split the model was trained on (built once per set of split options)."""
        options = model.meta.get("split", split_options(self.cfg))
        key = repr(sorted(options.items()))
        if key not in self._splits:
            self._splits[key] = make_split(self.ratings, **options)
        return self._splits[key]

    def _find_or_train(self, rung: str, K: int) -> Recommender:
        cfg = self.cfg
        explicit = cfg.get("checkpoint")
        if explicit and rung == cfg.model.name and K == int(cfg.K):
            return self._check(Recommender.load(explicit), explicit)
        wanted = ModelConfig.from_mapping(cfg.model, name=rung, K=K)
        path = model_path(Path(cfg.paths.models), self.ratings.name, rung, wanted.dim)
        reason = f"no trained {rung} model with K={wanted.dim} for {self.ratings.name} at {path}"
        if path.is_file():
            try:
                stored = Recommender.load(path)
            except RecError as e:  # rec's own published copy, unreadable or an older format
                reason = str(e)
            else:
                if stored.config == wanted:
                    return self._check(stored, path)
                reason = (f"the model at {path} was trained with {stored.config.hparams()}, not "
                          f"the configured {wanted.hparams()}")
        print(f"{reason}; training it first")
        train_cfg = OmegaConf.merge(cfg, {"K": K, "model": {"name": rung}})
        train_from_config(train_cfg, self.out_dir / f"train-{rung}-K{wanted.dim}")
        return self._check(Recommender.load(path), path)

    def _check(self, model: Recommender, path) -> Recommender:
        if model.dataset != self.ratings.name or len(model.movies) != self.ratings.n_items:
            raise ConfigError(f"{path} was trained on {model.dataset}, not {self.ratings.name}; "
                              "choose the matching data= or another checkpoint=.")
        log.info("using %s (%s)", path, model.config.hparams())
        return model

    def write_json(self, name: str, payload: dict) -> Path:
        path = self.out_dir / name
        path.write_text(json.dumps(payload, indent=2, default=_jsonable))
        return path


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
