"""How the processes of one job combine an engine's work: the seam between one process and P.

:class:`ALS` solves the rows it holds and then asks its exchange for the rest: the rows that
other processes solved (:meth:`Exchange.share`), sums over processes (:meth:`Exchange.total`),
which held-out ratings to evaluate (:meth:`Exchange.own_part`).  This class is one process,
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

    def share(self, theta: torch.Tensor, side: str) -> None:
        """After a step: the rows of ``theta`` (``side`` ``"user"`` or ``"item"``) that other
        processes solved, into this one's, in place (one process solved them all)."""

    def own_part(self, n: int) -> slice:
        """The positions of ``n`` held-out ratings this process evaluates (one process: all)."""
        return slice(0, n)

    def take_comm(self) -> dict:
        """Seconds in collectives and bytes sent since the last call (one process: none)."""
        return {}
