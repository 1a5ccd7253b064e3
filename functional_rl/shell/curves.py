"""Learning curves people can read: smoothing, runs on a common x grid, bootstrap confidence intervals.

Pure helpers on numpy arrays (no plotting, no files, no global randomness): ``plot`` and
``sweep`` draw with them, and they are small enough to check by hand.

- :func:`smooth`: ``"ema:A"`` (debiased exponential moving average, TensorBoard's slider),
  ``"window:N"`` (trailing mean of the last ``N`` points) or ``"none"``.
- :func:`align`: runs logged at different x (steps of several configs, wall seconds) onto
  one grid, where every run has data.
- :func:`bootstrap_ci`: the mean curve over runs and its 95% percentile bootstrap band
  (runs resampled with replacement; a seeded generator).
- :func:`summary_stats`: mean, std, bootstrap CI and count of one number per run.
- :func:`windowed_return`: the episode-weighted mean return of the last ``window`` iterations
  at each iteration (the CLI's "final mean episodic return").

Example:
    >>> import numpy as np
    >>> smooth([0.0, 2.0, 2.0], "window:2").tolist()
    [0.0, 1.0, 2.0]
    >>> mean, lo, hi = bootstrap_ci(np.array([[0.0, 1.0], [2.0, 3.0]]), n_boot=200, seed=0)
    >>> mean.tolist(), bool(np.all(lo <= mean) and np.all(mean <= hi))
    ([1.0, 2.0], True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["smooth", "parse_smoothing", "smoothing_label", "align", "bootstrap_ci", "summary_stats", "Summary",
           "windowed_return", "N_BOOT", "CI_LEVEL"]

#: Bootstrap resamples for the bands and the summary CIs.
N_BOOT = 2000
#: The confidence level of every interval here (a 95% percentile bootstrap).
CI_LEVEL = 0.95


def parse_smoothing(spec: str) -> tuple[str, float]:
    """``"ema:A"`` -> ``("ema", A)`` with ``0 <= A < 1``; ``"window:N"`` -> ``("window", N)``, ``N >= 1``;
    ``"none"`` -> ``("none", 0)``.

    Raises:
        ValueError: any other text, with the accepted forms.

    Example:
        >>> parse_smoothing("ema:0.9"), parse_smoothing("window:20"), parse_smoothing("none")
        (('ema', 0.9), ('window', 20), ('none', 0))
        >>> parse_smoothing("ema:1")
        Traceback (most recent call last):
            ...
        ValueError: smoothing 'ema:1': the EMA weight must lie in [0, 1), e.g. ema:0.9; use ema:A, window:N or none
    """
    text = str(spec).strip().lower()
    hint = "use ema:A, window:N or none"
    if text == "none":
        return ("none", 0)
    kind, _, value = text.partition(":")
    if kind == "ema":
        try:
            a = float(value)
        except ValueError:
            raise ValueError(f"smoothing {spec!r}: expected a number after 'ema:', e.g. ema:0.9; {hint}") from None
        if not (math.isfinite(a) and 0.0 <= a < 1.0):
            raise ValueError(f"smoothing {spec!r}: the EMA weight must lie in [0, 1), e.g. ema:0.9; {hint}")
        return ("ema", a)
    if kind == "window":
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"smoothing {spec!r}: expected an integer after 'window:', e.g. window:10; {hint}") from None
        if n < 1:
            raise ValueError(f"smoothing {spec!r}: the window must hold at least 1 point; {hint}")
        return ("window", n)
    raise ValueError(f"smoothing {spec!r} is not understood; {hint}")


def smoothing_label(spec: str) -> str:
    """A legend text for a smoothing spec.

    Example:
        >>> smoothing_label("ema:0.9"), smoothing_label("window:10"), smoothing_label("none")
        ('EMA 0.9', 'mean of last 10 points', 'unsmoothed')
    """
    kind, value = parse_smoothing(spec)
    return {"ema": f"EMA {value:g}", "window": f"mean of last {value} points", "none": "unsmoothed"}[kind]


def smooth(y: Sequence[float] | np.ndarray, spec: str = "ema:0.9") -> np.ndarray:
    """Smooth a curve ``y [N]`` (finite values, in x order); returns a new float64 array ``[N]``.

    - ``"ema:A"``: the debiased exponential moving average (TensorBoard's smoothing slider):
      ``m_t = A m_{t-1} + (1 - A) y_t`` with ``m_{-1} = 0``, and ``s_t = m_t / (1 - A^{t+1})``,
      so the first points are not pulled towards 0 and a constant curve stays constant.
      ``A = 0`` returns ``y``.
    - ``"window:N"``: ``s_t = mean(y[max(0, t-N+1) .. t])``, the trailing mean of the last ``N``
      points (fewer at the start); no look-ahead, like the EMA.
    - ``"none"``: a copy of ``y``.

    Example (by hand: ``m = 0, 1, 1.5``; ``1 - A^{t+1} = 0.5, 0.75, 0.875``):
        >>> smooth([0.0, 2.0, 2.0], "ema:0.5").round(4).tolist()
        [0.0, 1.3333, 1.7143]
        >>> smooth([5.0, 5.0, 5.0], "ema:0.99").round(12).tolist()
        [5.0, 5.0, 5.0]
        >>> smooth([1.0, 2.0, 3.0, 4.0], "window:3").tolist()
        [1.0, 1.5, 2.0, 3.0]
    """
    kind, value = parse_smoothing(spec)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if kind == "none" or y.size == 0:
        return y.copy()
    if kind == "window":
        n = int(value)
        c = np.concatenate([[0.0], np.cumsum(y)])
        idx = np.arange(1, y.size + 1)
        start = np.maximum(idx - n, 0)
        return (c[idx] - c[start]) / (idx - start)
    a = float(value)
    out = np.empty_like(y)
    m = 0.0
    for t, v in enumerate(y):
        m = a * m + (1.0 - a) * v
        out[t] = m / (1.0 - a ** (t + 1))
    return out


def align(curves: Sequence[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Several runs' ``(x [N_r], y [N_r])`` (x increasing) on one grid: ``(grid [N], ys [R, N])``.

    The grid is the union of the runs' x values inside the range every run covers
    (``max`` of the first x to ``min`` of the last x); each run is linearly interpolated onto
    it. Runs logged at the same steps are therefore used as they are.

    Raises:
        ValueError: no runs, an empty run, or runs whose x ranges do not overlap.

    Example:
        >>> grid, ys = align([([0, 2, 4], [0.0, 2.0, 4.0]), ([1, 3, 5], [10.0, 10.0, 10.0])])
        >>> grid.tolist(), ys.tolist()
        ([1.0, 2.0, 3.0, 4.0], [[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 10.0]])
    """
    if not curves:
        raise ValueError("no runs to align")
    xs = [np.asarray(x, dtype=np.float64).reshape(-1) for x, _ in curves]
    yv = [np.asarray(y, dtype=np.float64).reshape(-1) for _, y in curves]
    if any(x.size == 0 for x in xs):
        raise ValueError("a run has no points")
    lo, hi = max(x[0] for x in xs), min(x[-1] for x in xs)
    grid = np.unique(np.concatenate(xs))
    grid = grid[(grid >= lo) & (grid <= hi)]
    if grid.size == 0:
        raise ValueError("the runs do not overlap on the x axis")
    return grid, np.stack([np.interp(grid, x, y) for x, y in zip(xs, yv)])


def bootstrap_ci(curves: Any, n_boot: int = N_BOOT, seed: int = 0, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean over runs of ``curves [R, N]`` and its percentile bootstrap confidence band.

    Each of ``n_boot`` resamples draws ``R`` runs with replacement (whole curves, so the
    points of a run stay together) and takes their mean; ``lo``/``hi`` are the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those means at every point. A
    resample is a multinomial count vector ``w [R]`` (``sum w = R``), so the resampled means
    are ``(w / R) @ curves``. The generator is ``numpy.random.default_rng(seed)``: the same
    inputs and seed give the same band, and nothing global is touched. One run gives
    ``lo = hi = mean``.

    Args:
        curves: ``[R, N]`` (or ``[R]``: one number per run) finite values.
        n_boot: resamples (>= 1).
        seed: the generator's seed.
        level: the confidence level in (0, 1).

    Returns:
        ``(mean, lo, hi)``, each ``[N]`` (or 0-d for ``[R]`` input).

    Example:
        >>> import numpy as np
        >>> runs = np.random.default_rng(1).normal(size=(8, 3))
        >>> mean, lo, hi = bootstrap_ci(runs, n_boot=500, seed=0)
        >>> bool(np.all(lo < mean) and np.all(mean < hi)), np.allclose(mean, runs.mean(0))
        (True, True)
        >>> all(np.array_equal(a, b) for a, b in zip(bootstrap_ci(runs, 500, seed=0), (mean, lo, hi)))
        True
    """
    y = np.asarray(curves, dtype=np.float64)
    if y.ndim not in (1, 2) or y.shape[0] == 0:
        raise ValueError(f"bootstrap_ci needs curves [R, N] (or [R]) with R >= 1, got shape {tuple(y.shape)}")
    if not (isinstance(n_boot, int) and n_boot >= 1):
        raise ValueError(f"n_boot must be an int >= 1, got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    r = y.shape[0]
    flat = y.reshape(r, -1)
    mean = flat.mean(axis=0)
    if r == 1:
        lo, hi = mean.copy(), mean.copy()
    else:
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(r, np.full(r, 1.0 / r), size=n_boot) / r  # [n_boot, R]
        means = weights @ flat  # [n_boot, N]
        lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
    shape = y.shape[1:]
    return mean.reshape(shape), lo.reshape(shape), hi.reshape(shape)


class Summary(NamedTuple):
    """One number per run, summarised: ``mean``, ``std`` (sample, ``ddof=1``; 0 for one run),
    the 95% bootstrap CI of the mean ``ci_lo``, ``ci_hi``, and ``n`` runs.

    Example:
        >>> Summary(1.0, 0.0, 1.0, 1.0, 1).n
        1
    """

    mean: float
    std: float
    ci_lo: float
    ci_hi: float
    n: int


def summary_stats(values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> Summary:
    """Mean, sample std, bootstrap 95% CI of the mean (:func:`bootstrap_ci`) and count of ``values [R]``.

    Non-finite values (a run with no finished episode) are left out and not counted.

    Example:
        >>> s = summary_stats([1.0, 2.0, 3.0, 4.0], seed=0)
        >>> s.mean, round(s.std, 4), s.n, s.ci_lo <= s.mean <= s.ci_hi
        (2.5, 1.291, 4, True)
        >>> summary_stats([7.0, float("nan")])
        Summary(mean=7.0, std=0.0, ci_lo=7.0, ci_hi=7.0, n=1)
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Summary(math.nan, math.nan, math.nan, math.nan, 0)
    mean, lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=seed)
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return Summary(float(mean), std, float(lo), float(hi), int(v.size))


def windowed_return(returns: Sequence[float], episodes: Sequence[float], window: int = 10) -> np.ndarray:
    """At each iteration ``t``, the episode-weighted mean return of the last ``window``
    iterations that ended an episode, up to ``t``: ``sum(r_i e_i) / sum(e_i)``.

    ``returns [N]`` are the per-iteration mean returns (NaN where no episode ended) and
    ``episodes [N]`` the episodes ended in each iteration. NaN until an episode has ended.
    The last value is the CLI's "final mean episodic return (episodes of the last 10
    iterations)"; the maximum is the best such window.

    Example:
        >>> windowed_return([10.0, float("nan"), 20.0, 40.0], [1, 0, 3, 1], window=2).tolist()
        [10.0, 10.0, 17.5, 25.0]
    """
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    e = np.asarray(episodes, dtype=np.float64).reshape(-1)
    if r.shape != e.shape:
        raise ValueError(f"returns {r.shape} and episodes {e.shape} differ in length")
    out = np.full(r.shape, np.nan)
    kept: list[tuple[float, float]] = []
    for t in range(r.size):
        if e[t] > 0 and math.isfinite(r[t]):
            kept = (kept + [(r[t], e[t])])[-window:]
        if kept:
            out[t] = sum(a * b for a, b in kept) / sum(b for _, b in kept)
    return out
