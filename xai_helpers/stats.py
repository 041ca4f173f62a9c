"""Intervals for comparisons between explanation methods, over a sample of images.

A score averaged over a handful of images says little on its own: the spread between images is
often as large as the differences between methods. :func:`bootstrap_interval` gives a seeded
percentile-bootstrap 95 % interval for the mean of per-image scores, and
:func:`paired_difference_interval` the same for the mean *difference* between two methods scored on
the same images (pairing removes the image-to-image spread that both methods share). An ordering
is worth asserting only when the interval of the difference excludes zero.

``groups`` handles samples whose items share a source (for example photo grids built from the same
photos): the bootstrap then resamples the groups, not the items.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Interval", "bootstrap_interval", "paired_difference_interval"]


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` items with a percentile-bootstrap interval ``[low, high]`` at ``level``."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def excludes(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies outside the interval."""
        return value < self.low or value > self.high

    def __format__(self, spec: str) -> str:
        """``f"{interval:.2f}"`` gives ``"0.41 [0.38, 0.44]"``: the spec applies to all three numbers."""
        spec = spec or ".3f"
        return f"{self.mean:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def __str__(self) -> str:
        return format(self)


def _as_values(values: torch.Tensor | list[float]) -> torch.Tensor:
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() < 2:
        raise ValueError(f"need at least 2 values for an interval, got {v.numel()}")
    if not torch.isfinite(v).all():
        raise ValueError("values contain NaN or infinity")
    return v


def bootstrap_interval(
    values: torch.Tensor | list[float],
    *,
    groups: torch.Tensor | list[int] | None = None,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean of ``values [n]`` with a seeded percentile-bootstrap interval.

    Each of ``resamples`` replicates draws ``n`` items with replacement (or, with ``groups [n]``
    giving each item's group id, draws the groups with replacement and keeps all their items) and
    takes the mean; the interval runs between the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of the replicate means.
    """
    v = _as_values(values)
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100 for a stable interval, got {resamples}")
    generator = torch.Generator().manual_seed(seed)
    if groups is None:
        picks = torch.randint(len(v), (resamples, len(v)), generator=generator)
        replicates = v[picks].mean(1)
    else:
        ids = torch.as_tensor(groups).flatten()
        if ids.shape != v.shape:
            raise ValueError(f"groups must give one id per value: {list(ids.shape)} ids for {len(v)} values")
        unique, index = ids.unique(return_inverse=True)
        if len(unique) < 2:
            raise ValueError("need at least 2 groups for a grouped interval")
        sums = torch.zeros(len(unique), dtype=v.dtype).index_add_(0, index, v)
        counts = torch.zeros(len(unique), dtype=v.dtype).index_add_(0, index, torch.ones_like(v))
        picks = torch.randint(len(unique), (resamples, len(unique)), generator=generator)
        replicates = sums[picks].sum(1) / counts[picks].sum(1)
    tail = (1 - level) / 2
    low, high = torch.quantile(replicates, torch.tensor([tail, 1 - tail], dtype=v.dtype)).tolist()
    return Interval(float(v.mean()), low, high, len(v), level)


def paired_difference_interval(
    first: torch.Tensor | list[float], second: torch.Tensor | list[float], **options
) -> Interval:
    """:func:`bootstrap_interval` of ``first - second``, two methods' scores on the same ``n`` items."""
    a, b = _as_values(first), _as_values(second)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same length, got {len(a)} and {len(b)}")
    return bootstrap_interval(a - b, **options)
