"""Run folders, configuration fingerprints, resumable runs and the model store.

Every training run writes ``run.json`` beside its checkpoint: the fingerprint
of everything that determines its result and whether it finished.  A run
killed midway is found again by that fingerprint and resumed.  The trained
model is published to ``<models>/<dataset>/<split>/<rung>-K<K>.pt``, where
``analyze.py`` looks for it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rec.files import atomic_write

RUN_FILE = "run.json"
CHECKPOINT = "checkpoint.pt"


def fingerprint(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_run(folder: Path) -> dict:
    try:
        return json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_run(folder: Path, info: dict) -> None:
    text = json.dumps(info, indent=2, default=str)
    atomic_write(Path(folder) / RUN_FILE, lambda tmp: Path(tmp).write_text(text))


def find_resumable(root: Path, fp: str) -> Path | None:
    """The newest unfinished run under ``root`` with fingerprint ``fp`` and a checkpoint."""
    found = []
    for run_file in Path(root).glob(f"**/{RUN_FILE}"):
        info = read_run(run_file.parent)
        if info.get("fingerprint") == fp and not info.get("finished") and \
                (run_file.parent / CHECKPOINT).is_file():
            found.append(run_file.parent)
    return max(found, key=lambda p: (p / CHECKPOINT).stat().st_mtime, default=None)


def model_name(rung: str, dim: int) -> str:
    return f"{rung}-K{dim}.pt"


def model_path(models_root: Path, dataset: str, split_tag: str, rung: str, dim: int) -> Path:
    """``<models>/<dataset>/<split>/<rung>-K<K>.pt``: models of other splits never collide."""
    return Path(models_root) / dataset / split_tag / model_name(rung, dim)
