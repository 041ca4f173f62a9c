"""Bootstrap intervals, checked against closed forms and a second implementation written here."""
import math

import numpy as np
import pytest
import torch

from xai_helpers.stats import bootstrap_interval, paired_difference_interval


def test_interval_matches_a_numpy_bootstrap():
    values = torch.arange(20, dtype=torch.float64) ** 1.5
    interval = bootstrap_interval(values, resamples=4000, seed=3)
    # Second implementation: numpy resampling with its own generator, so only the statistics agree.
    rng = np.random.default_rng(0)
    means = values.numpy()[rng.integers(0, 20, (4000, 20))].mean(1)
    low, high = np.quantile(means, [0.025, 0.975])
    width = high - low
    assert interval.mean == pytest.approx(float(values.mean()))
    assert interval.low == pytest.approx(low, abs=0.1 * width) and interval.high == pytest.approx(high, abs=0.1 * width)


def test_interval_width_follows_the_standard_error():
    values = torch.randn(400, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    interval = bootstrap_interval(values)
    expected = 2 * 1.96 * values.std().item() / math.sqrt(400)
    assert interval.high - interval.low == pytest.approx(expected, rel=0.15)
    assert interval.low < interval.mean < interval.high and interval.n == 400


def test_same_seed_same_interval_and_constant_values_have_zero_width():
    values = [0.1, 0.5, 0.2, 0.9, 0.4]
    assert bootstrap_interval(values, seed=5) == bootstrap_interval(values, seed=5)
    constant = bootstrap_interval([0.3] * 10)
    assert constant.low == pytest.approx(0.3) and constant.high == pytest.approx(0.3)


def test_paired_difference_removes_shared_spread():
    base = torch.linspace(0, 10, 30, dtype=torch.float64)          # a large spread between items
    better = base + 0.1                                              # a small, consistent gain
    unpaired = bootstrap_interval(better) , bootstrap_interval(base)
    assert unpaired[0].low < unpaired[1].high                        # the separate intervals overlap
    paired = paired_difference_interval(better, base)
    assert paired.excludes(0.0) and paired.mean == pytest.approx(0.1)


def test_grouped_bootstrap_resamples_groups():
    # Group 0 holds nine zeros, group 1 a single one. Drawing two groups gives a replicate mean of
    # 0 (both group 0), 1/10 (one of each) or 1 (both group 1), so the 95 % interval is [0, 1];
    # resampling the ten items instead would almost never give a mean above 0.5.
    values = torch.tensor([0.0] * 9 + [1.0], dtype=torch.float64)
    grouped = bootstrap_interval(values, groups=[0] * 9 + [1], resamples=1000)
    assert grouped.low == pytest.approx(0.0) and grouped.high == pytest.approx(1.0)
    assert bootstrap_interval(values, resamples=1000).high < 0.5


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 2 values"):
        bootstrap_interval([1.0])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="one id per value"):
        bootstrap_interval([1.0, 2.0, 3.0], groups=[0, 1])
    with pytest.raises(ValueError, match="same length"):
        paired_difference_interval([1.0, 2.0], [1.0, 2.0, 3.0])


def test_format_applies_the_spec_to_all_three_numbers():
    interval = bootstrap_interval([0.0, 1.0, 0.5, 0.25])
    text = f"{interval:.1f}"
    assert text == f"{interval.mean:.1f} [{interval.low:.1f}, {interval.high:.1f}]" and str(interval).count(".") == 3
