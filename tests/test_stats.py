"""Bootstrap intervals, checked against closed forms and a second implementation written here."""
import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from xai_helpers.stats import bootstrap_interval, holm, paired_difference_interval, sign_test, t_interval


def test_percentile_interval_matches_a_numpy_bootstrap():
    values = torch.arange(20, dtype=torch.float64) ** 1.5
    interval = bootstrap_interval(values, resamples=4000, seed=3, method="percentile")
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
    grouped = bootstrap_interval(values, groups=[0] * 9 + [1], resamples=1000, method="percentile")
    assert grouped.low == pytest.approx(0.0) and grouped.high == pytest.approx(1.0)
    assert bootstrap_interval(values, resamples=1000, method="percentile").high < 0.5


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


def test_bca_matches_scipy_on_skewed_data():
    # Second implementation: scipy.stats.bootstrap's BCa, with its own resampling stream.
    values = torch.tensor(np.random.default_rng(4).exponential(size=40))
    ours = bootstrap_interval(values, resamples=20000, seed=1)
    theirs = scipy_stats.bootstrap((values.numpy(),), np.mean, n_resamples=20000, method="BCa",
                                   random_state=np.random.default_rng(2)).confidence_interval
    width = theirs.high - theirs.low
    assert ours.method == "BCa bootstrap"
    assert ours.low == pytest.approx(theirs.low, abs=0.05 * width)
    assert ours.high == pytest.approx(theirs.high, abs=0.05 * width)
    # Right-skewed data: BCa moves the interval to the right of the percentile interval.
    percentile = bootstrap_interval(values, resamples=20000, seed=1, method="percentile")
    assert ours.high > percentile.high and ours.low > percentile.low


def test_grouped_bca_uses_the_group_jackknife():
    # Ten groups of three equal values: resampling groups is resampling ten values, so the grouped
    # interval equals the ungrouped interval of the ten group means.
    means = torch.tensor(np.random.default_rng(5).normal(size=10))
    grouped = bootstrap_interval(means.repeat_interleave(3), groups=torch.arange(10).repeat_interleave(3), seed=2)
    plain = bootstrap_interval(means, seed=2)
    assert grouped.low == pytest.approx(plain.low, rel=1e-9) and grouped.high == pytest.approx(plain.high, rel=1e-9)


def test_bca_covers_about_95_percent_and_percentile_less_at_small_n():
    # Exponential samples of n = 8 (true mean 1): BCa and t come closer to 95 % than the percentile
    # bootstrap, which covers clearly less (Efron & Tibshirani 1993, ch. 14).
    rng = np.random.default_rng(0)
    covered = {"bca": 0, "percentile": 0, "t": 0}
    trials = 300
    for trial in range(trials):
        values = torch.tensor(rng.exponential(size=8))
        for method in ("bca", "percentile"):
            i = bootstrap_interval(values, resamples=1000, seed=trial, method=method)
            covered[method] += i.low <= 1.0 <= i.high
        i = t_interval(values)
        covered["t"] += i.low <= 1.0 <= i.high
    rate = {k: v / trials for k, v in covered.items()}
    assert rate["percentile"] < 0.9 and rate["bca"] > rate["percentile"] + 0.02, rate


def test_t_interval_is_the_closed_form():
    values = torch.tensor([0.2, 0.5, 0.4, 0.9, 0.1, 0.3], dtype=torch.float64)
    i = t_interval(values)
    half = scipy_stats.t.ppf(0.975, 5) * values.std().item() / math.sqrt(6)
    assert i.method == "t" and i.n == 6
    assert i.low == pytest.approx(values.mean().item() - half) and i.high == pytest.approx(values.mean().item() + half)
    assert paired_difference_interval(values + 1, values, method="t").low == pytest.approx(1.0)


def test_sign_test_counts_and_exact_p_value():
    first, second = [3.0, 2.0, 5.0, 4.0, 1.0], [1.0, 1.0, 1.0, 1.0, 0.0]
    result = sign_test(first, second)
    assert (result.first, result.second, result.ties, result.n) == (5, 0, 0, 5)
    assert result.p_value == pytest.approx(2 / 2**5)          # five of five cannot reach p < 0.05
    assert "5 of 5" in str(result)
    tied = sign_test([1.0, 2.0, 3.0], [1.0, 1.0, 4.0])
    assert (tied.first, tied.second, tied.ties) == (1, 1, 1) and tied.p_value == pytest.approx(1.0)
    assert sign_test([1.0] * 3, [1.0] * 3).p_value == 1.0


def test_holm_steps_down_and_stays_monotone():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5})
    # Sorted: a 0.01 x 4 = 0.04; c 0.03 x 3 = 0.09; b 0.04 x 2 = 0.08 -> raised to 0.09; d 0.5 x 1.
    assert adjusted == pytest.approx({"a": 0.04, "b": 0.09, "c": 0.09, "d": 0.5})
    assert holm({"x": 0.6, "y": 0.7}) == pytest.approx({"x": 1.0, "y": 1.0})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm({"x": 1.5})


def test_grouped_t_interval_is_the_interval_of_the_group_means():
    values = torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0, 7.0], dtype=torch.float64)
    groups = [0, 0, 1, 1, 2, 2]
    grouped = t_interval(values, groups=groups)
    means = t_interval([2.0, 2.0, 6.0])
    assert grouped.n == 3 and grouped.low == pytest.approx(means.low) and grouped.high == pytest.approx(means.high)
