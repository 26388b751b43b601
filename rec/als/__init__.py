"""The ALS engine: grouping, batched solves, the exact steps of SPEC §2.3."""

from rec.als.config import RUNGS, ModelConfig
from rec.als.engine import ALS
from rec.als.params import Params

__all__ = ["ALS", "ModelConfig", "Params", "RUNGS"]
