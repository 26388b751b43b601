"""Run folders, configuration fingerprints, resumable runs and the model store.

Every training run writes ``run.json`` beside its checkpoint: the identity of everything
that determines its result (the data's content, the split, every setting), its fingerprint
and whether it finished.  A run killed midway is found again by that fingerprint and
resumed; an unfinished run of another identity is never resumed, and the notice says what
differs.  A process holds an exclusive lock on the folder it trains in, so two processes
never train in one folder: a second one with the same settings starts a folder of its own.
The trained model is published to ``<models>/<dataset>/<split>/<rung>-K<K>.pt``, where
``analyze.py`` looks for it, replaced atomically under a lock, with a sidecar
``<rung>-K<K>.json`` that names the run that published it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from rec.errors import RecError
from rec.files import atomic_write

RUN_FILE = "run.json"
CHECKPOINT = "checkpoint.pt"
LOCK_FILE = ".lock"


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


class RunLock:
    """An exclusive, advisory lock on a run folder, held while one process trains there.

    The operating system drops it when the process ends, however it ends: a killed run's
    folder is free to resume at once."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._file = None

    def acquire(self) -> bool:
        """Take the lock if no other process holds it; ``True`` when taken."""
        f = open(self.folder / LOCK_FILE, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        self._file = f
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _unfinished(root: Path) -> list[tuple[Path, dict]]:
    """Unfinished runs under ``root`` that have a checkpoint, newest checkpoint first."""
    found = []
    for run_file in Path(root).glob(f"**/{RUN_FILE}"):
        info = read_run(run_file.parent)
        if info and not info.get("finished") and (run_file.parent / CHECKPOINT).is_file():
            found.append((run_file.parent, info))
    return sorted(found, key=lambda f: (f[0] / CHECKPOINT).stat().st_mtime, reverse=True)


def find_resumable(root: Path, identity: dict, name: str = "") -> tuple[
        Path | None, RunLock | None, list[str]]:
    """The newest unfinished run under ``root`` of this ``identity`` that no other process is
    training, locked for this one; and a line for each unfinished run of the same ``name``
    that is not resumed, saying why."""
    fp, notices = fingerprint(identity), []
    for folder, info in _unfinished(root):
        if info.get("fingerprint") == fp:
            lock = RunLock(folder)
            if lock.acquire():
                return folder, lock, notices
            notices.append(f"not resuming {folder}: another process is training it; "
                           "this run trains in a folder of its own")
        elif name and info.get("name") == name:
            notices.append(f"not resuming {folder}: it was started with other "
                           f"{_differences(info.get('identity', {}), identity)}; training afresh")
    return None, None, notices


def _differences(theirs: dict, ours: dict) -> str:
    ours = json.loads(json.dumps(ours, default=str))  # as run.json holds it: tuples as lists
    keys = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    labels = {"data": "data (its content differs)"}
    return ", ".join(labels.get(k, k) for k in keys) or "settings"


def claim_run(root: Path, new_folder: Path, identity: dict, name: str, resume: bool,
              tensorboard_root: Path) -> tuple[Path, dict, RunLock, list[str]]:
    """The folder to train in and its run record, locked for this process: an unfinished run
    of the same identity to resume (when ``resume``), else ``new_folder``, claimed by
    creating its run record exclusively (a folder another run already claimed is refused)."""
    fp = fingerprint(identity)
    notices: list[str] = []
    if resume:
        work, lock, notices = find_resumable(root, identity, name)
        if work is not None:
            return work, read_run(work), lock, notices
    work = Path(new_folder)
    work.mkdir(parents=True, exist_ok=True)
    lock = RunLock(work)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    info = {"fingerprint": fp, "name": name, "identity": identity, "finished": False,
            "created": stamp, "pid": os.getpid(),
            "tensorboard": str(Path(tensorboard_root) / f"{name}_{stamp}_{work.name}")}
    try:
        with open(work / RUN_FILE, "x") as f:
            json.dump(info, f, indent=2, default=str)
    except FileExistsError:
        raise RecError(f"{work}: another run already uses this folder; start this one again "
                       "(each run gets a folder of its own).") from None
    if not lock.acquire():
        raise RecError(f"{work}: another process holds this run folder; start this one again.")
    return work, info, lock, notices


def model_name(rung: str, dim: int) -> str:
    return f"{rung}-K{dim}.pt"


def model_path(models_root: Path, dataset: str, split_tag: str, rung: str, dim: int) -> Path:
    """``<models>/<dataset>/<split>/<rung>-K<K>.pt``: models of other splits never collide."""
    return Path(models_root) / dataset / split_tag / model_name(rung, dim)


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # waits: publishing takes a moment
        yield


def publish(model_file: Path, target: Path, record: dict) -> Path:
    """Copy ``model_file`` over ``target`` atomically, and write ``record`` (which run, when)
    to the sidecar ``target.with_suffix('.json')``: both under one lock, so the sidecar always
    names the run whose model is there, and the run that publishes last wins."""
    target = Path(target)
    with _locked(target.parent / f".{target.name}.lock"):
        atomic_write(target, lambda tmp: shutil.copyfile(model_file, tmp))
        text = json.dumps({**record, "published": datetime.now().isoformat(timespec="seconds")},
                          indent=2, default=str)
        atomic_write(sidecar(target), lambda tmp: Path(tmp).write_text(text))
    return target


def sidecar(model: Path) -> Path:
    """The JSON file beside a published model that names the run that published it."""
    return Path(model).with_suffix(".json")
