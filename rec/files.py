"""Atomic file writes: a killed or failed run never leaves a torn file, nor damages the old one.

A write goes to a temporary file beside its target, named for the host and process that
write it, and is renamed over the target when complete.  A process killed mid-write leaves
its temporary file behind; the next write to the same target on the same host removes the
temporary files of writers that are no longer alive (a live writer's are left alone).
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Callable


def _tag() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` on this host left; return
    them."""
    host, removed = socket.gethostname(), []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2:].split(".")  # host (may hold dots), pid, random, tmp
        if len(parts) < 4 or ".".join(parts[:-3]) != host or not parts[-3].isdigit():
            continue
        if not _alive(int(parts[-3])):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_tag()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
