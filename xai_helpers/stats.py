"""Intervals and tests for comparisons between explanation methods, over a sample of images.

A score averaged over a handful of images says little on its own: the spread between images is
often as large as the differences between methods. This module gives the few statistics the book
uses, each honest at the sample sizes the book has.

* :func:`bootstrap_interval` -- a seeded bootstrap 95 % interval for the mean of per-image scores,
  bias-corrected and accelerated (BCa, Efron 1987) by default. The plain percentile bootstrap is
  too narrow at small ``n`` (at n = 5 it covers the mean about 85 % of the time, not 95 %); BCa
  corrects most of that for n of a few dozen and more.
* :func:`t_interval` -- Student's t interval, the one to use for a handful of items (the six
  evaluation photos); it assumes roughly normal scores and says so by its name.
* :func:`paired_difference_interval` -- the interval of the mean *difference* between two methods
  scored on the same items (pairing removes the item-to-item spread that both methods share).
* :func:`sign_test` -- how many items favour each of two methods, "k of n", with an exact
  two-sided binomial p-value. With n = 5 it cannot reach p < 0.05 even when every item agrees
  (the smallest two-sided p-value is 2 / 2^5 = 0.0625), so five photos alone cannot "separate" two
  methods by this test.
* :func:`holm` -- Holm's step-down adjustment of many p-values at once, for tables with many
  verdicts.

``groups`` handles samples whose items share a source (for example photo grids built from the same
photos): the bootstrap then resamples the groups, not the items, and BCa's acceleration comes from
leaving out one group at a time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from scipy import stats as _scipy_stats

__all__ = ["Interval", "SignTest", "bootstrap_interval", "t_interval", "paired_difference_interval", "sign_test",
           "holm"]

Method = Literal["bca", "percentile"]


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` items with an interval ``[low, high]`` at ``level``, made by ``method``
    (``"BCa bootstrap"``, ``"percentile bootstrap"`` or ``"t"``)."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95
    method: str = "BCa bootstrap"

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


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def _bca_quantiles(
    replicates: torch.Tensor, estimate: float, jackknife: torch.Tensor, level: float
) -> tuple[float, float]:
    """BCa's two quantile levels of ``replicates``: the bias correction ``z0`` from the share of
    replicates below the estimate, the acceleration ``a`` from the jackknife estimates."""
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    below = (replicates < estimate).double().mean() + 0.5 * (replicates == estimate).double().mean()
    below = below.clamp(1.0 / (len(replicates) + 1), len(replicates) / (len(replicates) + 1))
    z0 = normal.icdf(below)
    d = jackknife.mean() - jackknife
    denominator = 6 * (d**2).sum() ** 1.5
    a = (d**3).sum() / denominator if denominator > 0 else torch.tensor(0.0, dtype=torch.float64)
    tail = (1 - level) / 2
    levels = []
    tails = (torch.tensor(tail, dtype=torch.float64), torch.tensor(1 - tail, dtype=torch.float64))
    for z in (normal.icdf(tails[0]), normal.icdf(tails[1])):
        levels.append(float(normal.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))))
    return levels[0], levels[1]


def bootstrap_interval(
    values: torch.Tensor | list[float],
    *,
    groups: torch.Tensor | list[int] | None = None,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    method: Method = "bca",
) -> Interval:
    """Mean of ``values [n]`` with a seeded bootstrap interval, BCa by default.

    Each of ``resamples`` replicates draws ``n`` items with replacement (or, with ``groups [n]``
    giving each item's group id, draws the groups with replacement and keeps all their items) and
    takes the mean. ``method="percentile"`` takes the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of the replicate means; ``method="bca"`` moves both quantile levels by the bias
    correction ``z0 = Phi^-1(share of replicates below the mean)`` and the acceleration ``a``,
    computed from the jackknife means (one item, or one group, left out at a time):
    ``alpha' = Phi(z0 + (z0 + z_alpha) / (1 - a (z0 + z_alpha)))``. Constant values give a
    zero-width interval.
    """
    v = _as_values(values)
    _check_level(level)
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100 for a stable interval, got {resamples}")
    if method not in ("bca", "percentile"):
        raise ValueError(f"method must be 'bca' or 'percentile', got {method!r}")
    generator = torch.Generator().manual_seed(seed)
    if groups is None:
        picks = torch.randint(len(v), (resamples, len(v)), generator=generator)
        replicates = v[picks].mean(1)
        jackknife = (v.sum() - v) / (len(v) - 1)
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
        jackknife = (sums.sum() - sums) / (counts.sum() - counts)
    mean = float(v.mean())
    tail = (1 - level) / 2
    if float(replicates.max() - replicates.min()) == 0.0:
        return Interval(mean, mean, mean, len(v), level, "BCa bootstrap" if method == "bca" else "percentile bootstrap")
    if method == "bca":
        q_low, q_high = _bca_quantiles(replicates, mean, jackknife, level)
        label = "BCa bootstrap"
    else:
        q_low, q_high, label = tail, 1 - tail, "percentile bootstrap"
    low, high = torch.quantile(replicates, torch.tensor([q_low, q_high], dtype=v.dtype)).tolist()
    return Interval(mean, low, high, len(v), level, label)


def t_interval(
    values: torch.Tensor | list[float], *, groups: torch.Tensor | list[int] | None = None, level: float = 0.95
) -> Interval:
    """Mean of ``values [n]`` with Student's t interval: ``mean +- t_{n-1} * s / sqrt(n)``, ``s`` the
    sample standard deviation. Exact for normally distributed values; the honest choice for a
    handful of items, where a bootstrap cannot see the tails. With ``groups [n]`` (items that share
    a source), the unit is the group: the interval is that of the ``g`` group means, ``n = g``."""
    v = _as_values(values)
    _check_level(level)
    if groups is not None:
        ids = torch.as_tensor(groups).flatten()
        if ids.shape != v.shape:
            raise ValueError(f"groups must give one id per value: {list(ids.shape)} ids for {len(v)} values")
        unique, index = ids.unique(return_inverse=True)
        sums = torch.zeros(len(unique), dtype=v.dtype).index_add_(0, index, v)
        counts = torch.zeros(len(unique), dtype=v.dtype).index_add_(0, index, torch.ones_like(v))
        v = _as_values(sums / counts)
    mean, n = float(v.mean()), len(v)
    half = float(_scipy_stats.t.ppf((1 + level) / 2, n - 1)) * float(v.std()) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level, "t")


def paired_difference_interval(
    first: torch.Tensor | list[float], second: torch.Tensor | list[float], *, method: str = "bca", **options
) -> Interval:
    """The interval of the mean of ``first - second``, two methods' scores on the same ``n`` items:
    :func:`bootstrap_interval` (``method="bca"`` or ``"percentile"``, with its ``options``) or
    :func:`t_interval` (``method="t"``)."""
    a, b = _as_values(first), _as_values(second)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same length, got {len(a)} and {len(b)}")
    if method == "t":
        return t_interval(a - b, **options)
    return bootstrap_interval(a - b, method=method, **options)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SignTest:
    """Paired items: ``first`` of the ``n`` non-tied items favour the first method, ``second`` the
    other; ``ties`` were equal. ``p_value``: exact two-sided binomial test of ``first`` against
    Binomial(n, 1/2)."""

    first: int
    second: int
    ties: int
    p_value: float

    @property
    def n(self) -> int:
        """The items that are not tied."""
        return self.first + self.second

    def __str__(self) -> str:
        return f"{self.first} of {self.n} favour the first (p = {self.p_value:.3g}, two-sided sign test)"


def sign_test(
    first: torch.Tensor | list[float], second: torch.Tensor | list[float], *, tolerance: float = 0.0
) -> SignTest:
    """The sign test of two methods' scores on the same items (larger = favoured).

    Differences within ``tolerance`` of zero count as ties and are left out, as the test
    prescribes. With every one of ``n`` items on one side, the two-sided p-value is ``2 / 2^n``.
    """
    a, b = _as_values(first), _as_values(second)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same length, got {len(a)} and {len(b)}")
    d = a - b
    up, down = int((d > tolerance).sum()), int((d < -tolerance).sum())
    ties = len(d) - up - down
    p = 1.0 if up + down == 0 else float(_scipy_stats.binomtest(up, up + down, 0.5).pvalue)
    return SignTest(up, down, ties, p)


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values for ``{name: p}``: the ``i``-th smallest of ``m`` is
    multiplied by ``m - i`` (0-based ``i``), made non-decreasing, and capped at 1. A verdict with an
    adjusted p below 0.05 holds with a family-wise error rate of at most 5 %."""
    if any(not 0.0 <= p <= 1.0 for p in p_values.values()):
        raise ValueError("p-values must lie in [0, 1]")
    ordered = sorted(p_values, key=p_values.get)  # type: ignore[arg-type]
    m, running, adjusted = len(ordered), 0.0, {}
    for i, name in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p_values[name]))
        adjusted[name] = running
    return {name: adjusted[name] for name in p_values}
