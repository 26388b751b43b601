"""What the command-line entry points share: user errors end the run cleanly."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

from rec.errors import RecError

T = TypeVar("T")


def run_or_exit(job: Callable[[], T]) -> T:
    """Run ``job``; a :class:`RecError` prints its message (no traceback) and exits with 2."""
    try:
        return job()
    except RecError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
