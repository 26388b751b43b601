"""Cutting rows into contiguous ranges of about equal work: the kernel's thread blocks and the
ranks' shards both use it, so it sits below the data layer and the engine alike."""

from __future__ import annotations

import torch


def balanced_bounds(degree: torch.Tensor, parts: int) -> torch.Tensor:
    """``parts + 1`` non-decreasing boundaries cutting the rows into contiguous ranges of about
    equal ratings (one more per row, so that rows without ratings are shared out too)."""
    load = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(degree.double() + 1, 0)])
    bounds = torch.searchsorted(load, torch.linspace(0, float(load[-1]), parts + 1,
                                                     dtype=torch.float64))
    bounds[0], bounds[-1] = 0, degree.numel()
    return torch.cummax(bounds, 0).values
