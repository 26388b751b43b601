"""rec: matrix factorization for MovieLens by exact ALS and Gibbs sampling, in PyTorch.

``import rec`` gives what a notebook needs (:mod:`rec.api`): :func:`load_dataset`,
:func:`train` (the settings of ``python train.py`` as keywords), :func:`load_model` and the
:class:`Recommender` it returns; the typed configurations and :func:`fit` for training
without publishing.
"""

__version__ = "0.3.0"

from rec.als import ModelConfig  # noqa: E402
from rec.api import load_dataset, load_model, overrides, train  # noqa: E402
from rec.data import DataConfig, Ratings, make_split  # noqa: E402
from rec.data.splits import SplitConfig  # noqa: E402
from rec.model import Recommender  # noqa: E402
from rec.training import TrainConfig, fit  # noqa: E402

__all__ = ["DataConfig", "ModelConfig", "Ratings", "Recommender", "SplitConfig", "TrainConfig",
           "__version__", "fit", "load_dataset", "load_model", "make_split", "overrides", "train"]
