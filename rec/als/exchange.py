"""How the processes of one job combine an engine's work: the seam between one process and P.

:class:`ALS` solves the rows it holds and then asks its exchange for the rest: the rows that
other processes solved (:meth:`Exchange.share`), sums over processes (:meth:`Exchange.total`)
of what each computes from its own rows, and where its part of a list lies in the job's
(:meth:`Exchange.place`).  This class is one process,
where there is nothing to exchange; :class:`rec.distributed.RankExchange` is a rank of a
``torch.distributed`` job.  The engine never asks which one it has.
"""

from __future__ import annotations

import torch


class Exchange:
    """One process: every row is solved here, every sum is already whole."""

    several = False
    """Whether other processes hold part of the work."""
    cache_sharers = 1
    """Processes of the job sharing this machine's last-level cache."""

    def total(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the job's processes, in place (one process: ``t`` itself)."""
        return t

    def share(self, table: torch.Tensor, side: str) -> None:
        """After a step: the rows of ``table`` (a parameter table of ``side``, ``"user"`` or
        ``"item"``) that other processes solved, into this one's, in place (one process
        solved them all)."""

    def place(self, count: int) -> tuple[int, int]:
        """Where this process's ``count`` items of a list ordered by process lie in the job's:
        how many the processes before it hold, and the job's total (one process: 0,
        ``count``)."""
        return 0, count

    def take_comm(self) -> dict:
        """Seconds in collectives and bytes sent since the last call (one process: none)."""
        return {}
