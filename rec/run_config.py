"""One run's whole configuration as typed values (SPEC §3).

``train.py`` and ``analyze.py`` turn Hydra's composed config into a
:class:`RunConfig` once (:mod:`rec.hydra_config`); everything below them
reads these dataclasses, never Hydra's.  It answers "which data, split, model
and run is this?" in one place: the fingerprint that resume matches, the
published model's identity and the summary all come from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from rec.als.config import ModelConfig
from rec.als.sizes import EngineSizes
from rec.bayes.config import InferenceConfig
from rec.data.load import DataConfig
from rec.data.splits import SplitConfig
from rec.errors import ConfigError
from rec.mapping import from_mapping
from rec.runs import model_path
from rec.training import TrainConfig

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Paths:
    """Where a run reads and writes (``paths:``); ``paths.root=DIR`` moves every output."""

    root: str = "."
    """The folder under which a run writes everything: run folders, checkpoints, TensorBoard
    logs and the published models (the defaults of the three below)."""
    data_root: str = "data"
    """Where datasets live, ``<data_root>/<name>/`` (input: not moved by ``root``)."""
    output_root: str = "outputs"
    """Run folders (``train/``, ``analyze/``, ``sweeps/``), each with its checkpoint."""
    tensorboard: str = "outputs/tensorboard"
    """TensorBoard runs."""
    models: str = "models"
    """The model store: ``<models>/<dataset>/<split>/<rung>-K<K>.pt``."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run (``conf/config.yaml``)."""

    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    """The rung and its priors; ``K`` comes from the config's top-level ``K``."""
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineSizes = field(default_factory=EngineSizes)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    """ALS point estimates (``als``) or posterior samples (``gibbs``)."""
    paths: Paths = field(default_factory=Paths)
    seed: int = 0
    """Initialization seed (the split has its own: ``split.seed``)."""
    device: str = "auto"
    """``auto`` (a GPU when one is visible), ``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: str = "float32"
    """Working precision: ``float32`` or ``float64``."""
    threads: int | None = None
    """torch intra-op threads; ``None``: torch's default (all cores)."""
    resume: bool = True
    """Continue an unfinished run with the same fingerprint."""
    tensorboard: bool = True
    """Write each epoch's metrics (and Gibbs traces) for TensorBoard under ``paths.tensorboard``."""
    measure_loading: bool = False
    """Also time a CSV parse and a cache read in a child process (benchmarks)."""
    progress: bool = True
    """A progress bar over epochs on an interactive terminal."""
    verbose: bool = False
    """Every epoch's full record on the terminal too (it always goes to the run's log file)."""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype={self.dtype}: expected one of {', '.join(DTYPES)}.")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads}: expected null or a positive count.")
        if self.split.kind == "strong" and self.inference.gibbs:
            raise ConfigError("split=strong folds its held-out users in by an ALS user step; "
                              "inference=gibbs does not fold users in. Use inference=als, or "
                              "another split.")

    @classmethod
    def from_mapping(cls, values) -> "RunConfig":
        """Build from the plain mapping of a composed config (``K`` inside ``model``)."""
        return from_mapping(cls, values, "")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def variant(self) -> str:
        """The model's name in file and run names: the rung's, ``+gibbs`` when sampled."""
        return self.model.variant + ("+gibbs" if self.inference.gibbs else "")

    def published_model(self, dataset: str) -> Path:
        """Where this run's model is published, and where ``analyze.py`` looks for it."""
        return model_path(Path(self.paths.models), dataset, self.split.tag(), self.variant,
                          self.model.dim)
