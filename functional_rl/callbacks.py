"""Callbacks: the shell's side effects as small objects (the reference trainer's "components").

A callback implements any of::

    on_start(state, config)        before the first iteration
    on_iteration(state, metrics)   after each iteration; metrics are Python numbers
    on_end(state)                  after the last iteration
    on_failure(state, exception)   when a step or a callback raised; state is the last good one

There is no registry: pass a list to ``functional_training_loop(callbacks=[...])``. Callbacks
never swallow exceptions; the loop re-raises after every ``on_failure`` ran.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

__all__ = ["Callback", "ConsoleLogger", "JSONLWriter", "METRIC_GROUPS", "grouped"]


class Callback(Protocol):
    """Any subset of the four hooks (see the module docstring)."""

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None: ...


# Metric names grouped the way the reference trainer's dashboards group them.
METRIC_GROUPS = {
    "sps": "overview/sps",
    "episode_return": "overview/reward",
    "policy_loss": "losses/policy_loss",
    "value_loss": "losses/value_loss",
    "entropy": "losses/entropy",
    "approx_kl": "losses/approx_kl",
    "clipfrac": "losses/clipfrac",
    "explained_variance": "losses/explained_variance",
    "total_loss": "losses/total_loss",
    "learning_rate": "optimizer/lr",
    "grad_norm": "grad/global_norm",
    "episode_length": "env/episode_length",
    "episodes": "env/episodes",
    "time_s": "timing/iteration_s",
}


def grouped(metrics: dict[str, float]) -> dict[str, float]:
    """Rename metrics to their dashboard groups; unknown names go under ``custom/``."""
    out = {}
    for k, v in metrics.items():
        if k in ("agent_step", "iteration"):
            out[k] = v
        elif "/" in k:
            out[k] = v
        else:
            out[METRIC_GROUPS.get(k, f"custom/{k}")] = v
    return out


def _fmt(x: float) -> str:
    return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:7.1f}"


class ConsoleLogger:
    """Prints one progress line every ``every`` iterations and a summary at the end.

    The line shows steps done / total, SPS, the mean episodic return of the iterations since
    the last line, and the ETA.
    """

    def __init__(self, every: int = 10, stream: TextIO | None = None):
        self.every = max(1, every)
        self.stream = stream or sys.stdout
        self._returns: list[tuple[float, float]] = []
        self.recent_returns: list[tuple[float, float]] = []

    def on_start(self, state: Any, config: Any) -> None:
        self.total = config.num_iterations * config.batch_size
        self.t0 = time.perf_counter()
        self.start_step = None
        print(f"training {config.env_id}: {self.total:,} steps, {config.num_envs} envs x {config.num_steps} steps per iteration",
              file=self.stream, flush=True)

    def on_iteration(self, state: Any, m: dict[str, float]) -> None:
        if self.start_step is None:
            self.start_step = m["agent_step"] - m.get("sps", 0) * m.get("time_s", 0)
        if m.get("episodes", 0) > 0 and not math.isnan(m["episode_return"]):
            self._returns.append((m["episode_return"], m["episodes"]))
            self.recent_returns = (self.recent_returns + [(m["episode_return"], m["episodes"])])[-10:]
        if m["iteration"] % self.every == 0:
            elapsed = time.perf_counter() - self.t0
            done = m["agent_step"] - self.start_step
            rate = done / max(elapsed, 1e-9)
            eta = (self.total - m["agent_step"]) / max(rate, 1e-9)
            print(
                f"step {int(m['agent_step']):>9,}/{self.total:,}  sps {rate:8.0f}  return {_fmt(self.mean_return(self._returns))}"
                f"  entropy {m['entropy']:.3f}  eta {eta:5.0f}s",
                file=self.stream, flush=True,
            )
            self._returns = []

    @staticmethod
    def mean_return(pairs: list[tuple[float, float]]) -> float:
        n = sum(c for _, c in pairs)
        return sum(r * c for r, c in pairs) / n if n else float("nan")

    def on_end(self, state: Any) -> None:
        elapsed = time.perf_counter() - self.t0
        print(
            f"done: {int(state.agent_step):,} steps in {elapsed:.1f}s; "
            f"final mean episodic return {_fmt(self.mean_return(self.recent_returns)).strip()} "
            f"(episodes of the last 10 iterations)",
            file=self.stream, flush=True,
        )

    def on_failure(self, state: Any, exc: BaseException) -> None:
        print(f"training failed at iteration {int(state.iteration) + 1}: {exc}", file=self.stream, flush=True)


class JSONLWriter:
    """Appends one JSON object per iteration to ``path`` (grouped metric names), flushed each line."""

    def __init__(self, path: str | Path, group: bool = True):
        self.path = Path(path)
        self.group = group
        self._f: TextIO | None = None

    def on_start(self, state: Any, config: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None:
        if self._f is None:
            self.on_start(state, None)
        row = grouped(metrics) if self.group else dict(metrics)
        # NaN is not JSON; write null.
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def on_end(self, state: Any) -> None:
        self.close()

    def on_failure(self, state: Any, exc: BaseException) -> None:
        self.close()
