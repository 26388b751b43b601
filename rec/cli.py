"""What the command-line entry points share: every failure a user can cause ends in one line.

A :class:`RecError` says what is wrong and what to do.  So do the failures of the machine
that a user can fix: a full disk, a folder that cannot be written, a file where a folder
should be, memory that an impossible size would need.  Each is printed as one line on
standard error, without a traceback, and the process exits with status 2.  Anything else
is a bug in rec, and keeps its traceback.
"""

from __future__ import annotations

import errno
import sys
from typing import Callable, TypeVar

import torch

from rec.errors import RecError

T = TypeVar("T")
WHERE = "rec writes under paths.root (run folders, checkpoints) and paths.models"
_OS_HINTS = {
    errno.ENOSPC: "no space left on its disk. Free some space, or set paths.root to a "
                  "folder on another disk; files already there were left as they were",
    errno.EDQUOT: "the disk quota is exhausted. Free some space, or set paths.root to a "
                  "folder elsewhere; files already there were left as they were",
    errno.EROFS: f"it is on a read-only file system. {WHERE}: set paths.root to a "
                 "writable folder",
    errno.EACCES: f"permission denied. {WHERE}: set paths.root to a folder you can write to, "
                  "or give yourself access",
    errno.EPERM: f"operation not permitted. {WHERE}: set paths.root to a folder you can "
                 "write to",
    errno.ENOTDIR: "a file stands where rec needs a folder. Set paths.root (or the path you "
                   "gave) to a folder, or move the file away",
    errno.EEXIST: "a file stands where rec needs a folder. Set paths.root (or the path you "
                  "gave) to a folder, or move the file away",
    errno.EISDIR: "it is a folder where rec needs a file. Give the path of a file",
    errno.ENOENT: "no such file or folder, and it cannot be created there (is its parent "
                  "a special file system such as /proc?). Set paths.root to an ordinary folder",
}


def one_line(e: BaseException) -> str | None:
    """The one-line message for a failure the user can fix, or ``None`` for a bug in rec."""
    if isinstance(e, RecError):
        return str(e)
    if isinstance(e, OSError) and e.errno in _OS_HINTS:
        where = e.filename if e.filename is not None else "a file"
        verb = "write" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "use"
        return f"cannot {verb} {where}: {_OS_HINTS[e.errno]}."
    if isinstance(e, (MemoryError, torch.OutOfMemoryError)) or (
            isinstance(e, RuntimeError) and "can't allocate memory" in str(e)):
        return ("out of memory: this run needs more memory than the machine has. Lower K, "
                "train on a smaller dataset, or use a machine with more memory.")
    return None


def run_or_exit(job: Callable[[], T]) -> T:
    """Run ``job``; a failure the user can fix prints one line (no traceback) and exits with
    status 2."""
    try:
        return job()
    except Exception as e:
        message = one_line(e)
        if message is None:
            raise
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(2)
