"""Data layer: files -> :class:`Ratings` tensors -> splits (SPEC §1)."""

from rec.data.load import DATASETS, DataConfig, counts_report, load_dataset
from rec.data.catalog import Catalog
from rec.data.ratings import Ratings
from rec.data.splits import Split, make_split

__all__ = ["DATASETS", "Catalog", "DataConfig", "Ratings", "Split", "counts_report", "load_dataset",
           "make_split"]
