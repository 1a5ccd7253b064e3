"""Smoothing, alignment, bootstrap confidence intervals and summary statistics of learning curves (shell/curves.py)."""

import math

import numpy as np
import pytest

from functional_rl.shell.curves import (
    align, bootstrap_ci, parse_smoothing, smooth, summary_stats, windowed_return,
)


def test_ema_is_debiased_and_matches_the_hand_computation():
    y = [4.0, 0.0, 8.0]
    a = 0.75
    # m_t = a m_{t-1} + (1 - a) y_t from m = 0; s_t = m_t / (1 - a^{t+1})
    m0 = 0.25 * 4.0
    m1 = 0.75 * m0 + 0.25 * 0.0
    m2 = 0.75 * m1 + 0.25 * 8.0
    expected = [m0 / (1 - 0.75), m1 / (1 - 0.75 ** 2), m2 / (1 - 0.75 ** 3)]
    np.testing.assert_allclose(smooth(y, f"ema:{a}"), expected, rtol=1e-12)
    assert smooth(y, "ema:0")[1] == 0.0  # weight 0: the curve itself
    np.testing.assert_allclose(smooth(np.full(50, 3.0), "ema:0.9"), 3.0, rtol=1e-12)  # no pull towards 0


def test_window_is_the_trailing_mean():
    y = [1.0, 5.0, 3.0, 7.0, 0.0]
    assert smooth(y, "window:2").tolist() == [1.0, 3.0, 4.0, 5.0, 3.5]
    assert smooth(y, "window:1").tolist() == y
    assert smooth(y, "window:100").tolist() == [1.0, 3.0, 3.0, 4.0, 3.2]
    out = smooth(y, "none")
    assert out.tolist() == y and out is not y


@pytest.mark.parametrize("spec, message", [
    ("ema:1.0", "must lie in [0, 1)"), ("ema:x", "expected a number"), ("window:0", "at least 1 point"),
    ("window:2.5", "expected an integer"), ("gauss:3", "not understood"),
])
def test_bad_smoothing_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        parse_smoothing(spec)


def test_align_interpolates_on_the_overlap():
    grid, ys = align([([0, 10, 20], [0.0, 10.0, 20.0]), ([5, 15, 25], [1.0, 1.0, 1.0])])
    assert grid.tolist() == [5.0, 10.0, 15.0, 20.0]
    assert ys.tolist() == [[5.0, 10.0, 15.0, 20.0], [1.0, 1.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match="do not overlap"):
        align([([0, 1], [0, 0]), ([2, 3], [0, 0])])


def test_bootstrap_ci_contains_the_mean_and_narrows_with_more_runs():
    rng = np.random.default_rng(123)
    few, many = rng.normal(10.0, 2.0, size=(4, 30)), rng.normal(10.0, 2.0, size=(64, 30))
    widths = []
    for runs in (few, many):
        mean, lo, hi = bootstrap_ci(runs, n_boot=1000, seed=0)
        np.testing.assert_allclose(mean, runs.mean(axis=0))
        assert np.all(lo <= mean) and np.all(mean <= hi) and np.all(lo < hi)
        widths.append(float(np.mean(hi - lo)))
    # The band of the mean shrinks like 1/sqrt(R): 16x the runs, about a quarter of the width.
    assert widths[1] < 0.5 * widths[0]
    # About 2 * 1.96 * sigma / sqrt(R) for the many runs (sigma = 2).
    assert 0.7 < widths[1] / (2 * 1.96 * 2.0 / math.sqrt(64)) < 1.3


def test_bootstrap_is_seeded_and_touches_no_global_state():
    runs = np.random.default_rng(5).normal(size=(6, 10))
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    a = bootstrap_ci(runs, n_boot=300, seed=7)
    assert np.random.random() == before  # the global generator was not advanced
    b = bootstrap_ci(runs, n_boot=300, seed=7)
    c = bootstrap_ci(runs, n_boot=300, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_one_run_has_a_zero_width_band():
    mean, lo, hi = bootstrap_ci(np.array([[1.0, 2.0]]))
    assert mean.tolist() == lo.tolist() == hi.tolist() == [1.0, 2.0]


def test_summary_stats():
    s = summary_stats([2.0, 4.0, 6.0, 8.0], n_boot=1000, seed=0)
    assert s.mean == 5.0 and s.n == 4
    assert s.std == pytest.approx(np.std([2, 4, 6, 8], ddof=1))
    assert 2.0 <= s.ci_lo < 5.0 < s.ci_hi <= 8.0
    assert summary_stats([2.0, 4.0, 6.0, 8.0], n_boot=1000, seed=0) == s
    empty = summary_stats([float("nan")])
    assert empty.n == 0 and math.isnan(empty.mean)


def test_windowed_return_weighs_by_episodes_and_skips_iterations_without_one():
    r = [float("nan"), 10.0, 20.0, float("nan"), 50.0]
    e = [0, 1, 3, 0, 1]
    w = windowed_return(r, e, window=2)
    assert math.isnan(w[0])
    assert w[1:].tolist() == [10.0, (10 + 60) / 4, (10 + 60) / 4, (60 + 50) / 4]
