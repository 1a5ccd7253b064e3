"""Callbacks: the shell's side effects as small objects (the reference trainer's "components").

A callback implements any of::

    on_start(state, config)        before the first iteration
    on_iteration(state, metrics)   after each iteration; metrics are Python numbers
    on_end(state)                  after the last iteration
    on_failure(state, exception)   when a step or a callback raised; state is the last good one

There is no registry: pass a list to ``functional_training_loop(callbacks=[...])``. Callbacks
never swallow exceptions; the loop re-raises after every ``on_failure`` ran.

The callbacks here, all plain objects:

==========================  =============================================================================
:class:`ConsoleLogger`      one progress line every N iterations (for logs and non-TTYs)
:class:`ProgressBar`        a tqdm bar: steps, SPS, mean return, ETA
:class:`CompileNotice`      says that the first iteration is compiling, with the elapsed seconds
:class:`SteadyRate`         (a helper) steps/s and ETA that leave out the first iteration (the compile)
:class:`JSONLWriter`        one JSON row per iteration, grouped metric names
:class:`TensorBoardWriter`  scalars under grouped names, ``step = agent_step``
:class:`WandbLogger`        Weights & Biases, offline by default (``pip install 'functional-rl[wandb]'``)
:class:`Checkpointer`       periodic (every N iterations or S seconds), final and on-failure checkpoints
:class:`Evaluator`          greedy evaluation episodes on the evaluator's own PRNG stream
:class:`PolicySaver`        policy records (params + architecture) in a :class:`~functional_rl.shell.policy_store.PolicyStore`
==========================  =============================================================================

Loggers that accept extra rows (``JSONLWriter``, ``TensorBoardWriter``, ``WandbLogger``) have
a ``write(row)`` method; the :class:`Evaluator` sends its ``eval/...`` rows there.

Example:
    >>> import io, tempfile
    >>> from functional_rl.kernel.config import PPOConfig
    >>> from functional_rl.shell.loop import functional_training_loop
    >>> cfg = PPOConfig(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, total_timesteps=64)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     ckpt = Checkpointer(d, every=1, keep_last=1)
    ...     state, _ = functional_training_loop(cfg, compile=False, callbacks=[ckpt])
    ...     [p.name for p in sorted(Path(d).iterdir())]
    ['ckpt_000000000064.frl']
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

import torch

import functional_rl.kernel.random as jr
from functional_rl.shell import checkpoint as ckpt_io

__all__ = [
    "Callback",
    "Checkpointer",
    "CompileNotice",
    "ConsoleLogger",
    "Evaluator",
    "eval_params",
    "JSONLWriter",
    "METRIC_GROUPS",
    "ProgressBar",
    "SteadyRate",
    "TensorBoardWriter",
    "WandbLogger",
    "evaluate",
    "greedy_action",
    "grouped",
    "state_policy_input",
]


class Callback(Protocol):
    """Any subset of the four hooks (see the module docstring).

    Example (a callback that records the step after every iteration of a tiny run):
        >>> from functional_rl.kernel.config import PPOConfig
        >>> from functional_rl.shell.loop import functional_training_loop
        >>> class StepRecorder:
        ...     def __init__(self):
        ...         self.steps = []
        ...     def on_iteration(self, state, metrics):
        ...         self.steps.append((int(metrics["iteration"]), int(metrics["agent_step"])))
        >>> rec = StepRecorder()
        >>> cfg = PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=32, hidden_sizes=(8,))
        >>> _ = functional_training_loop(cfg, compile=False, callbacks=[rec])
        >>> rec.steps
        [(1, 16), (2, 32)]
    """

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None:
        """Called after each iteration with the state and the metrics as Python numbers."""


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
    "nonfinite_params": "diagnostics/nonfinite_params",
    "nonfinite_obs": "diagnostics/nonfinite_obs",
}


def grouped(metrics: dict[str, float]) -> dict[str, float]:
    """Rename metrics to their dashboard groups; unknown names go under ``custom/``.

    ``agent_step`` and ``iteration`` keep their names and become ints; names that already
    contain a ``/`` are kept as they are.

    Timing comes from the shell: ``timing/iteration_s`` is the wall time of one ``step_fn``
    call; ``timing/rollout_s`` / ``timing/train_s`` (already grouped names) split it into the
    kernel's rollout steps and minibatch updates.

    Example:
        >>> grouped({"agent_step": 64.0, "iteration": 1, "episode_return": 20.0, "my_loss": 0.5, "eval/x": 1.0})
        {'agent_step': 64, 'iteration': 1, 'overview/reward': 20.0, 'custom/my_loss': 0.5, 'eval/x': 1.0}
    """
    out = {}
    for k, v in metrics.items():
        if k in ("agent_step", "iteration"):
            out[k] = int(v)
        elif "/" in k:
            out[k] = v
        else:
            out[METRIC_GROUPS.get(k, f"custom/{k}")] = v
    return out


def _fmt(x: float) -> str:
    return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:7.1f}"


class SteadyRate:
    """Steps per second and the ETA of a run, leaving out its first iteration.

    The first iteration of a process includes ``torch.compile`` (a minute on a small CPU
    with an empty cache) and eager warm-up, so a rate counted from the start reads far too
    low early on ("sps 161 ... eta 3035s" for an 85 s run). Here the clock starts when the
    first iteration *ends*: the rate is ``(steps since then) / (seconds since then)``, the
    steady rate of every later iteration, callbacks included (the wall time a user waits).
    Until a second iteration has ended there is no rate: :attr:`rate` and :meth:`eta` are
    ``None``. :class:`ConsoleLogger` and :class:`ProgressBar` both use it, so they agree.

    Args:
        clock: seconds as a float; default :func:`time.perf_counter` (a fake one in tests).

    Attributes:
        first_s: seconds from :meth:`start` to the end of the first iteration (compile
            included), or ``None`` before.

    Example (a fake clock: a 60 s compile, then 1,000 steps every 0.5 s):
        >>> t = iter([0.0, 60.0, 60.5, 61.0]).__next__
        >>> r = SteadyRate(clock=t)
        >>> r.start()
        >>> r.update(1000)
        >>> r.rate, r.first_s
        (None, 60.0)
        >>> r.update(2000); r.update(3000)
        >>> r.rate, r.eta(total=10_000)
        (2000.0, 3.5)
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.t0: float | None = None
        self.first_s: float | None = None
        self._base: tuple[float, float] | None = None  # (agent_step, time) at the end of the first iteration
        self._last: tuple[float, float] | None = None

    def start(self) -> None:
        """Start the clock (at the run's start, before the first iteration)."""
        self.t0 = self.clock()

    def update(self, agent_step: float) -> None:
        """Record that an iteration ended at ``agent_step`` steps."""
        now = self.clock()
        if self._base is None:
            self._base = (agent_step, now)
            self.first_s = None if self.t0 is None else now - self.t0
        self._last = (agent_step, now)

    @property
    def rate(self) -> float | None:
        """Steps per second since the first iteration ended; ``None`` until a second one ended."""
        if self._base is None or self._last is None:
            return None
        steps, seconds = self._last[0] - self._base[0], self._last[1] - self._base[1]
        return steps / seconds if steps > 0 and seconds > 0 else None

    def eta(self, total: float) -> float | None:
        """Seconds left to reach ``total`` steps at :attr:`rate`; ``None`` without a rate."""
        rate = self.rate
        if rate is None or self._last is None:
            return None
        return max(0.0, total - self._last[0]) / rate


def _rate_text(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.0f}"


class ConsoleLogger:
    """Prints one progress line every ``every`` iterations and a summary at the end.

    The line shows steps done / total, steps per second, the mean episodic return of the
    iterations since the last line, and the ETA. Steps/s and the ETA are :class:`SteadyRate`'s:
    measured from the end of the first iteration, so compile time does not count (``n/a``
    until a second iteration ended). The summary gives the first iteration's seconds
    (with the compile, if any) and the steady rate separately.

    Args:
        every: iterations between lines.
        stream: where to print; default ``sys.stdout``.
        clock: seconds as a float; default :func:`time.perf_counter`.

    Example (hooks called by hand with a fake clock: 60 s of compile, then 0.5 s per iteration):
        >>> import io
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=48, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> out = io.StringIO()
        >>> log = ConsoleLogger(every=1, stream=out, clock=iter([0.0, 60.0, 60.5, 61.0, 61.0]).__next__)
        >>> log.on_start(state, cfg)
        >>> for i in (1, 2, 3):
        ...     log.on_iteration(state, {"agent_step": 16 * i, "iteration": i, "episodes": 0, "episode_return": float("nan"), "entropy": 0.693})
        >>> log.on_end(state.replace(agent_step=torch.tensor(48)))
        >>> print(out.getvalue())
        training CartPole-v1: 48 steps, 2 envs x 8 steps per iteration
        step        16/48  sps      n/a  return    n/a  entropy 0.693  eta   n/a
        step        32/48  sps       32  return    n/a  entropy 0.693  eta    0s
        step        48/48  sps       32  return    n/a  entropy 0.693  eta    0s
        done: 48 steps in 61.0s (first iteration 60.0s with any compile; then 32 steps/s); final mean episodic return n/a (episodes of the last 10 iterations)
        >>> ConsoleLogger.mean_return([(10.0, 1), (20.0, 3)])  # weighted by episode counts
        17.5
    """

    def __init__(self, every: int = 10, stream: TextIO | None = None, clock: Callable[[], float] = time.perf_counter):
        self.every = max(1, every)
        self.stream = stream or sys.stdout
        self.clock = clock
        self.steady = SteadyRate(clock)
        self._returns: list[tuple[float, float]] = []
        self.recent_returns: list[tuple[float, float]] = []

    def on_start(self, state: Any, config: Any) -> None:
        """Print the run's size and start the clock."""
        self.total = config.num_iterations * config.batch_size
        self.steady = SteadyRate(self.clock)
        self.steady.start()
        print(f"training {config.env_id}: {self.total:,} steps, {config.num_envs} envs x {config.num_steps} steps per iteration",
              file=self.stream, flush=True)

    def on_iteration(self, state: Any, m: dict[str, float]) -> None:
        """Print a progress line every ``every`` iterations."""
        self.steady.update(m["agent_step"])
        if m.get("episodes", 0) > 0 and not math.isnan(m["episode_return"]):
            self._returns.append((m["episode_return"], m["episodes"]))
            self.recent_returns = (self.recent_returns + [(m["episode_return"], m["episodes"])])[-10:]
        if m["iteration"] % self.every == 0:
            eta = self.steady.eta(self.total)
            print(
                f"step {int(m['agent_step']):>9,}/{self.total:,}  sps {_rate_text(self.steady.rate):>8}"
                f"  return {_fmt(self.mean_return(self._returns))}"
                f"  entropy {m['entropy']:.3f}  eta {'  n/a' if eta is None else f'{eta:5.0f}s'}",
                file=self.stream, flush=True,
            )
            self._returns = []

    @staticmethod
    def mean_return(pairs: list[tuple[float, float]]) -> float:
        """Episode-weighted mean of ``(mean_return, episodes)`` pairs; NaN if there are none."""
        n = sum(c for _, c in pairs)
        return sum(r * c for r, c in pairs) / n if n else float("nan")

    def on_end(self, state: Any) -> None:
        """Print the summary line: wall time, the first iteration's seconds, the steady rate, the return."""
        elapsed = self.clock() - self.steady.t0
        first = "" if self.steady.first_s is None else f" (first iteration {self.steady.first_s:.1f}s with any compile"
        if first:
            first += ")" if self.steady.rate is None else f"; then {self.steady.rate:.0f} steps/s)"
        print(
            f"done: {int(state.agent_step):,} steps in {elapsed:.1f}s{first}; "
            f"final mean episodic return {_fmt(self.mean_return(self.recent_returns)).strip()} "
            f"(episodes of the last 10 iterations)",
            file=self.stream, flush=True,
        )

    def on_failure(self, state: Any, exc: BaseException) -> None:
        """Print which iteration failed and why; the loop re-raises."""
        print(f"training failed at iteration {int(state.iteration) + 1}: {exc}", file=self.stream, flush=True)


class CompileNotice:
    """Says, while the first iteration runs (compiles), that it is compiling and for how long.

    ``on_start`` prints :attr:`MESSAGE`; then a daemon thread prints the elapsed seconds every
    ``every_s`` seconds until the first iteration ends, when ``on_iteration`` prints how long
    it took. The thread reads only the clock and writes text: it touches no tensor, so it adds
    no host sync, and the GIL is free for the compiler between its lines (a wake-up every few
    seconds). Only the first iteration of the call is announced; ``on_end``/``on_failure``
    stop the thread if that iteration never ended.

    Args:
        stream: where to write; default ``sys.stdout``.
        every_s: seconds between "still compiling" lines; ``None`` for none (only the first
            and the last line).
        above_bar: write with ``tqdm.write`` so that a :class:`ProgressBar` on the same terminal
            is redrawn below the line instead of torn.
        clock: seconds as a float; default :func:`time.monotonic`.

    Example (no thread, a fake clock; :meth:`tick` is what the thread calls):
        >>> import io
        >>> out = io.StringIO()
        >>> notice = CompileNotice(stream=out, every_s=None, clock=iter([0.0, 5.0, 42.0]).__next__)
        >>> notice.on_start(None, None)
        >>> notice.tick()
        >>> notice.on_iteration(None, {"iteration": 1})
        >>> print(out.getvalue())
        compiling the training step (first run only; cached for the next)...
          still compiling: 5 s
        first iteration done in 42.0 s (compile included); steps/s from here on leave it out
    """

    MESSAGE = "compiling the training step (first run only; cached for the next)..."

    def __init__(self, stream: TextIO | None = None, every_s: float | None = 5.0, above_bar: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        if every_s is not None and not (isinstance(every_s, (int, float)) and math.isfinite(every_s) and every_s > 0):
            raise ValueError(f"CompileNotice: every_s must be None or a positive number of seconds, got {every_s!r}")
        self.stream = stream
        self.every_s = every_s
        self.above_bar = above_bar
        self.clock = clock
        self.t0: float | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        if self.above_bar:
            from tqdm import tqdm

            tqdm.write(line, file=stream)
            stream.flush()
        else:
            print(line, file=stream, flush=True)

    def on_start(self, state: Any, config: Any) -> None:
        """Print the message and start the thread that prints the elapsed seconds."""
        self.t0 = self.clock()
        self._done.clear()
        self._write(self.MESSAGE)
        if self.every_s is not None:
            self._thread = threading.Thread(target=self._run, name="frl-compile-notice", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.every_s):
            self.tick()

    def tick(self) -> None:
        """Print the seconds since ``on_start`` (the thread calls this every ``every_s`` seconds)."""
        if self.t0 is not None and not self._done.is_set():
            self._write(f"  still compiling: {self.clock() - self.t0:.0f} s")

    def _stop(self) -> None:
        self._done.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None:
        """After the first iteration: stop the thread and print how long it took."""
        if self.t0 is None or self._done.is_set():
            return
        self._stop()
        self._write(f"first iteration done in {self.clock() - self.t0:.1f} s (compile included); "
                    "steps/s from here on leave it out")

    def on_end(self, state: Any) -> None:
        """Stop the thread (if the first iteration never ended)."""
        self._stop()

    def on_failure(self, state: Any, exc: BaseException) -> None:
        """Stop the thread; the loop re-raises ``exc``."""
        self._stop()


class JSONLWriter:
    """Appends one JSON object per iteration to ``path`` (grouped metric names), flushed each line.

    With ``wall_time=True`` every row also gets ``wall_time``: seconds since this writer's
    ``on_start`` (just before the first iteration, so its compile is included) plus
    ``wall_time_start`` (a resumed run passes its last row's ``wall_time``, so the column keeps
    growing across processes). ``clock`` is the time source (default :func:`time.perf_counter`).

    Example:
        >>> import json, tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     w = JSONLWriter(Path(d) / "logs" / "metrics.jsonl")
        ...     w.on_iteration(None, {"agent_step": 16.0, "iteration": 1, "episode_return": float("nan"), "entropy": 0.69})
        ...     w.write({"agent_step": 16, "eval/mean_return": 42.0})
        ...     w.close()
        ...     rows = [json.loads(line) for line in (Path(d) / "logs" / "metrics.jsonl").read_text().splitlines()]
        >>> rows
        [{'agent_step': 16, 'iteration': 1, 'overview/reward': None, 'losses/entropy': 0.69},
         {'agent_step': 16, 'eval/mean_return': 42.0}]

    Example (``wall_time`` with a fake clock, continuing a resumed run's 100 s):
        >>> times = iter([5.0, 7.5]).__next__
        >>> with tempfile.TemporaryDirectory() as d:
        ...     w = JSONLWriter(Path(d) / "m.jsonl", wall_time=True, wall_time_start=100.0, clock=times)
        ...     w.on_start(None, None)
        ...     w.on_iteration(None, {"agent_step": 16.0, "iteration": 1})
        ...     w.close()
        ...     (Path(d) / "m.jsonl").read_text()
        '{"agent_step": 16, "iteration": 1, "wall_time": 102.5}\\n'
    """

    def __init__(self, path: str | Path, group: bool = True, *, wall_time: bool = False, wall_time_start: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter):
        self.path = Path(path)
        self.group = group
        self.wall_time = wall_time
        self.wall_time_start = float(wall_time_start)
        self.clock = clock
        self._t0: float | None = None
        self._f: TextIO | None = None

    def on_start(self, state: Any, config: Any) -> None:
        """Create the parent directory, open the file in append mode and start the ``wall_time`` clock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        if self._t0 is None:
            self._t0 = self.clock()

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None:
        """Append the iteration's metrics as one row (grouped names unless ``group=False``)."""
        self.write(grouped(metrics) if self.group else dict(metrics))

    def write(self, row: dict[str, Any]) -> None:
        """Append one row as a JSON line (NaN/inf become ``null``) and flush it."""
        if self._f is None:
            self.on_start(None, None)
        if self.wall_time:
            row = {**row, "wall_time": round(self.wall_time_start + self.clock() - self._t0, 6)}
        # NaN is not JSON; write null.
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        """Close the file (a later ``write`` reopens it in append mode)."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def on_end(self, state: Any) -> None:
        """Close the file."""
        self.close()

    def on_failure(self, state: Any, exc: BaseException) -> None:
        """Close the file (every row written so far is on disk); the loop re-raises."""
        self.close()


def _finite_items(row: dict[str, Any]) -> list[tuple[str, float]]:
    """``(name, value)`` for every finite number in ``row`` except the counters."""
    out = []
    for k, v in row.items():
        if k in ("agent_step", "iteration") or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out.append((k, float(v)))
    return out


class ProgressBar:
    """A tqdm progress bar over environment steps, with SPS, the mean return and the ETA.

    The bar counts ``agent_step`` up to ``num_iterations * batch_size``; the postfix shows
    steps/s and the ETA of :class:`SteadyRate` (from the end of the first iteration on, so
    compile time does not count; the same numbers as :class:`ConsoleLogger`, instead of
    tqdm's own rate, which would count it) and the mean episodic return of the last
    ``window`` iterations that finished an episode.

    Args:
        stream: where to draw; default ``sys.stderr``.
        disable: ``None`` (tqdm's default: off when ``stream`` is not a TTY), ``True`` or ``False``.
        window: iterations in the running mean return.
        mininterval: least seconds between redraws.
        clock: seconds as a float for :class:`SteadyRate`; default :func:`time.perf_counter`.

    Example:
        >>> import io
        >>> from functional_rl.kernel.config import PPOConfig
        >>> from functional_rl.shell.loop import functional_training_loop
        >>> out = io.StringIO()
        >>> cfg = PPOConfig(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, total_timesteps=64)
        >>> _ = functional_training_loop(cfg, compile=False, callbacks=[ProgressBar(stream=out, disable=False)])
        >>> "64/64" in out.getvalue()
        True
    """

    #: tqdm's layout without its own rate and ETA (the postfix carries the steady ones).
    BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, stream: TextIO | None = None, disable: bool | None = None, window: int = 10,
                 mininterval: float = 0.5, clock: Callable[[], float] = time.perf_counter):
        self.stream = stream
        self.disable = disable
        self.window = max(1, window)
        self.mininterval = mininterval
        self.clock = clock
        self.steady = SteadyRate(clock)
        self.bar: Any = None
        self._step = 0
        self._returns: list[tuple[float, float]] = []

    def on_start(self, state: Any, config: Any) -> None:
        """Open the bar at the state's ``agent_step`` (so a resumed run starts part-way)."""
        from tqdm import tqdm

        self._step = int(state.agent_step)
        self.total = config.num_iterations * config.batch_size
        self.steady = SteadyRate(self.clock)
        self.steady.start()
        self.bar = tqdm(
            total=self.total, initial=self._step, unit="step", bar_format=self.BAR_FORMAT,
            desc=config.env_id, file=self.stream if self.stream is not None else sys.stderr, disable=self.disable,
            mininterval=self.mininterval, dynamic_ncols=True, postfix="sps=n/a, eta=n/a",
        )

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None:
        """Advance the bar to ``metrics["agent_step"]`` and refresh the postfix."""
        if self.bar is None:
            return
        step = int(metrics["agent_step"])
        self.steady.update(step)
        if metrics.get("episodes", 0) > 0 and math.isfinite(metrics.get("episode_return", math.nan)):
            self._returns = (self._returns + [(metrics["episode_return"], metrics["episodes"])])[-self.window:]
        ret = ConsoleLogger.mean_return(self._returns)
        eta = self.steady.eta(self.total)
        self.bar.set_postfix({"sps": _rate_text(self.steady.rate), "eta": "n/a" if eta is None else f"{eta:.0f}s",
                              "ret": "n/a" if math.isnan(ret) else f"{ret:.1f}"}, refresh=False)
        self.bar.update(step - self._step)
        self._step = step

    def close(self) -> None:
        """Close the bar (idempotent)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_end(self, state: Any) -> None:
        """Close the bar."""
        self.close()

    def on_failure(self, state: Any, exc: BaseException) -> None:
        """Close the bar; the loop re-raises ``exc``."""
        self.close()


class TensorBoardWriter:
    """Writes every finite metric as a TensorBoard scalar under its grouped name.

    The x-axis is ``agent_step`` (comparable across ``num_envs`` and resumes). Uses
    :class:`torch.utils.tensorboard.SummaryWriter`, created lazily in ``on_start``.

    Args:
        log_dir: the event-file directory (created if missing).
        purge_step: on a resumed run, the step of the checkpoint it resumed from plus one:
            events at or after it, written by the interrupted run, are dropped.
        flush_secs: seconds between flushes of the event file.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     tb = TensorBoardWriter(d)
        ...     tb.write({"agent_step": 64, "overview/reward": 21.5})
        ...     tb.close()
        ...     any(p.name.startswith("events.out.tfevents") for p in Path(d).iterdir())
        True
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None, flush_secs: int = 10):
        self.log_dir = Path(log_dir)
        self.purge_step = purge_step
        self.flush_secs = flush_secs
        self.writer: Any = None

    def _open(self) -> Any:
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # pragma: no cover - tensorboard is a dev dependency
                raise ImportError("TensorBoardWriter needs tensorboard: pip install tensorboard") from e
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.log_dir), purge_step=self.purge_step, flush_secs=self.flush_secs)
        return self.writer

    def on_start(self, state: Any, config: Any) -> None:
        """Open the writer and record the config as text (``config`` tag)."""
        writer = self._open()
        if config is not None and hasattr(config, "to_dict"):
            writer.add_text("config", "```\n" + json.dumps(config.to_dict(), indent=2) + "\n```", int(state.agent_step))

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None:
        """Write the iteration's metrics under their grouped names."""
        self.write(grouped(metrics))

    def write(self, row: dict[str, Any]) -> None:
        """Write each finite number of ``row`` as a scalar at ``step = row["agent_step"]``."""
        writer = self._open()
        step = int(row["agent_step"])
        for name, value in _finite_items(row):
            writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush and close the event file (idempotent)."""
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None

    def on_end(self, state: Any) -> None:
        """Flush and close."""
        self.close()

    def on_failure(self, state: Any, exc: BaseException) -> None:
        """Flush and close, so the events up to the failure are on disk."""
        self.close()


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as e:
        raise ImportError(
            "WandbLogger needs the wandb package, which is not installed: "
            "pip install 'functional-rl[wandb]' (or pip install wandb)"
        ) from e
    return wandb


class WandbLogger:
    """Logs grouped metrics to Weights & Biases, offline by default (no account, no network).

    ``wandb`` is imported when the logger is created; a missing package raises an
    ``ImportError`` that says to ``pip install 'functional-rl[wandb]'``. Offline runs are
    uploaded later with ``wandb sync``.

    Args:
        project: the W&B project name.
        mode: ``"offline"`` (default), ``"online"`` or ``"disabled"``.
        name: the run's display name; default W&B's.
        dir: where W&B writes its files; default W&B's (``./wandb``).
        config: a config to record; default the one given to ``on_start``.
        **init_kwargs: passed on to ``wandb.init`` (``group``, ``tags``, ``id``, ``resume``, ...).

    Raises:
        ImportError: if ``wandb`` is not installed.

    Example (with a stand-in ``wandb`` module, so it runs without the package or a network):
        >>> import sys, types
        >>> from unittest import mock
        >>> logged = []
        >>> class FakeRun:
        ...     def log(self, row, step):
        ...         logged.append((step, row))
        ...     def finish(self, exit_code=0):
        ...         logged.append(("finish", exit_code))
        >>> fake = types.SimpleNamespace(init=lambda **kwargs: FakeRun())
        >>> with mock.patch.dict(sys.modules, {"wandb": fake}):
        ...     logger = WandbLogger("demo", mode="disabled")
        >>> logger.on_start(None, {"lr": 0.001})
        >>> logger.on_iteration(None, {"agent_step": 64, "iteration": 1, "episode_return": 20.0, "entropy": float("nan")})
        >>> logger.on_end(None)
        >>> logged  # NaN metrics are dropped
        [(64, {'overview/reward': 20.0}), ('finish', 0)]
    """

    def __init__(self, project: str, mode: str = "offline", name: str | None = None, dir: str | Path | None = None,
                 config: Any = None, **init_kwargs: Any):
        self.wandb = _import_wandb()
        self.project, self.mode, self.name, self.dir, self.config = project, mode, name, dir, config
        self.init_kwargs = init_kwargs
        self.run: Any = None

    def on_start(self, state: Any, config: Any) -> None:
        """Start the W&B run with the config as its ``config``."""
        cfg = self.config if self.config is not None else config
        cfg_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else cfg
        kwargs = {"project": self.project, "mode": self.mode, "config": cfg_dict, **self.init_kwargs}
        if self.name is not None:
            kwargs["name"] = self.name
        if self.dir is not None:
            Path(self.dir).mkdir(parents=True, exist_ok=True)
            kwargs["dir"] = str(self.dir)
        self.run = self.wandb.init(**kwargs)

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None:
        """Log the iteration's grouped metrics at ``step = agent_step``."""
        self.write(grouped(metrics))

    def write(self, row: dict[str, Any]) -> None:
        """Log each finite number of ``row`` at ``step = row["agent_step"]``."""
        if self.run is None:
            raise RuntimeError("WandbLogger.write before on_start: pass the logger to functional_training_loop")
        self.run.log(dict(_finite_items(row)), step=int(row["agent_step"]))

    def on_end(self, state: Any) -> None:
        """Finish the run."""
        if self.run is not None:
            self.run.finish()
            self.run = None

    def on_failure(self, state: Any, exc: BaseException) -> None:
        """Finish the run with exit code 1 (marked failed)."""
        if self.run is not None:
            self.run.finish(exit_code=1)
            self.run = None


_CKPT_NAME = re.compile(r"^ckpt_(\d{12,})" + re.escape(ckpt_io.EXTENSION) + r"$")


class Checkpointer:
    """Saves the training state periodically (every ``every`` iterations or ``every_s`` seconds), at the end, and on failure.

    Files are :func:`functional_rl.shell.checkpoint.checkpoint_path` ``(directory, agent_step)``,
    written atomically by :func:`functional_rl.shell.checkpoint.save` with the config and the
    metadata ``{"agent_step", "iteration", "reason", **metadata}``; ``reason`` is
    ``"start"``, ``"periodic"``, ``"end"`` or ``"failure"``. A step already saved is not
    written twice. After each save only the ``keep_last`` highest-step checkpoints in
    ``directory`` are kept.

    Cadence: with ``every_s`` a periodic save happens after the first iteration that ends at
    least ``every_s`` seconds after the previous save (or the start); with ``every`` after
    every ``every``-th iteration; given both, whichever comes first; given neither, every
    iteration (``every=1``). A save hashes, fsyncs and renames every tensor (tens of ms for
    a small net), so saving every iteration can cost a fifth of a fast run's time; a
    time-based cadence bounds both that cost and the work a ``SIGKILL`` can lose.

    ``on_failure`` saves the last good state the loop hands it (the state after the last
    iteration that completed and passed the finite checks), so a crash, a ``Ctrl-C`` or a
    ``SIGTERM`` turned into an exception loses nothing; the loop then re-raises. With
    ``save_on_start`` the starting state is saved too (unless a checkpoint of its step is
    already there, as when resuming from it), so a run killed before its first periodic save
    still has a checkpoint to resume from.

    Args:
        directory: the checkpoint folder (created on the first save).
        every: iterations between periodic saves (>= 1), or ``None``.
        keep_last: how many checkpoints to keep; ``None`` keeps all.
        config: the config stored in each file; default the one given to ``on_start``.
        metadata: extra JSON-able metadata stored in each file.
        every_s: seconds between periodic saves (> 0), or ``None``.
        save_on_start: also save the state ``on_start`` hands over (reason ``"start"``).
        clock: seconds as a float for ``every_s``; default :func:`time.monotonic`.

    Attributes:
        saved: paths written by this object, in order (pruned files included).

    Example (``every=2`` and ``keep_last=2`` over four iterations, hooks called by hand):
        >>> import tempfile
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=32, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     ckpt = Checkpointer(d, every=2, keep_last=2)
        ...     ckpt.on_start(state, cfg)
        ...     for i in range(1, 5):
        ...         s = state.replace(agent_step=torch.tensor(16 * i), iteration=torch.tensor(i))
        ...         ckpt.on_iteration(s, {"iteration": i})
        ...     ckpt.on_end(s)  # step 64 was just saved: not written twice
        ...     names = [p.name for p in ckpt.checkpoints()]
        ...     restored, config, meta = ckpt_io.load(ckpt.saved[-1])
        >>> names, len(ckpt.saved)
        (['ckpt_000000000032.frl', 'ckpt_000000000064.frl'], 2)
        >>> int(restored.iteration), config == cfg, meta
        (4, True, {'agent_step': 64, 'iteration': 4, 'reason': 'periodic'})

    Example (``every_s=60`` with a fake clock: the start, then a save once 60 s have passed):
        >>> times = iter([0.0, 30.0, 61.0, 61.0, 90.0]).__next__
        >>> with tempfile.TemporaryDirectory() as d:
        ...     ckpt = Checkpointer(d, every_s=60, save_on_start=True, clock=times)
        ...     ckpt.on_start(state, cfg)
        ...     for i in range(1, 4):
        ...         ckpt.on_iteration(state.replace(agent_step=torch.tensor(16 * i), iteration=torch.tensor(i)), {"iteration": i})
        ...     [p.name for p in ckpt.checkpoints()]
        ['ckpt_000000000000.frl', 'ckpt_000000000032.frl']
    """

    def __init__(self, directory: str | Path, every: int | None = None, keep_last: int | None = None, config: Any = None,
                 metadata: dict[str, Any] | None = None, *, every_s: float | None = None, save_on_start: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        if every is None and every_s is None:
            every = 1
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"Checkpointer: every must be None or an int >= 1, got {every!r}")
        if every_s is not None and (isinstance(every_s, bool) or not isinstance(every_s, (int, float))
                                    or not math.isfinite(every_s) or every_s <= 0):
            raise ValueError(f"Checkpointer: every_s must be None or a finite number of seconds > 0, got {every_s!r}")
        if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
            raise ValueError(f"Checkpointer: keep_last must be None or an int >= 1, got {keep_last!r}")
        self.directory = Path(directory)
        self.every = every
        self.every_s = every_s
        self.save_on_start = save_on_start
        self.clock = clock
        self.keep_last = keep_last
        self.config = config
        self.metadata = dict(metadata or {})
        self.saved: list[Path] = []
        self._last_step: int | None = None
        self._last_t: float | None = None

    def on_start(self, state: Any, config: Any) -> None:
        """Remember the run's config (unless one was given), start the clock of ``every_s``, and
        with ``save_on_start`` save the starting state unless its step has a checkpoint already."""
        if self.config is None:
            self.config = config
        if self.save_on_start:
            step = int(state.agent_step)
            if ckpt_io.checkpoint_path(self.directory, step).exists():
                self._last_step = step  # resumed from it: never rewritten
            else:
                self.save(state, "start")
        self._last_t = self.clock()

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None:
        """Save when the iteration count is a multiple of ``every`` or ``every_s`` seconds have passed."""
        due = self.every is not None and int(metrics["iteration"]) % self.every == 0
        if not due and self.every_s is not None:
            if self._last_t is None:
                self._last_t = self.clock()
            due = self.clock() - self._last_t >= self.every_s
        if due:
            self.save(state, "periodic")
            if self.every_s is not None:
                self._last_t = self.clock()

    def on_end(self, state: Any) -> None:
        """Save the final state."""
        self.save(state, "end")

    def on_failure(self, state: Any, exc: BaseException) -> None:
        """Save the last good state; the loop re-raises ``exc`` afterwards."""
        self.save(state, "failure")

    def save(self, state: Any, reason: str = "manual") -> Path:
        """Write ``state`` now (unless its step was just saved) and prune; return the path."""
        step = int(state.agent_step)
        path = ckpt_io.checkpoint_path(self.directory, step)
        if step == self._last_step and path.exists():
            return path
        meta = {"agent_step": step, "iteration": int(state.iteration), "reason": reason, **self.metadata}
        ckpt_io.save(path, state, self.config, meta)
        self._last_step = step
        self.saved.append(path)
        self._prune()
        return path

    def checkpoints(self) -> list[Path]:
        """The checkpoints in ``directory``, oldest (lowest step) first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _CKPT_NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def _prune(self) -> None:
        if self.keep_last is None:
            return
        for old in self.checkpoints()[: -self.keep_last]:
            old.unlink(missing_ok=True)


def greedy_action(policy: Any, params: Any, env: Any, env_state: Any, env_params: Any, x: torch.Tensor,
                  carry: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The greedy action of a policy input ``x [B, D]`` and the next carry (``None`` for a
    feed-forward policy): the env's action mask applied, the distribution's mode, a Box action
    clipped to the space's bounds. :func:`evaluate` and ``eval --video`` act with it.

    Example:
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> env = make("Pendulum-v1"); params = env.default_params()
        >>> policy = make_mlp_policy(env.observation_space, env.action_space)
        >>> obs, s = env.reset(jr.key(0), params, 2)
        >>> a, c = greedy_action(policy, policy.init(jr.key(1)), env, s, params, obs, None)
        >>> a.shape, bool((a.abs() <= 2.0).all()), c
        (torch.Size([2, 1]), True, None)
    """
    from functional_rl.envs.base import Box
    from functional_rl.kernel.distributions import mask_logits
    from functional_rl.kernel.rollout import env_action_mask

    if carry is not None:
        outputs, carry = policy.apply(params, x, carry, None)
    else:
        outputs = policy.apply(params, x)
    outputs = mask_logits(outputs, env_action_mask(env, env_state, env_params))
    action = policy.distribution.mode(outputs)
    if isinstance(env.action_space, Box):
        action = torch.clamp(action, env.action_space.low_tensor(action.device), env.action_space.high_tensor(action.device))
    return action, carry


def evaluate(
    key: torch.Tensor,
    params: Any,
    env: Any,
    policy: Any,
    *,
    episodes: int = 10,
    env_params: Any = None,
    max_steps: int = 100_000,
    obs_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    last_action_size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``episodes`` greedy episodes in parallel (one per env) and return their returns.

    Actions are ``policy.distribution.mode`` (argmax logits, among the legal actions for an
    env with action masks, or the Gaussian mean clipped to the action box). Each env's first episode counts; the loop stops when all have ended or
    after ``max_steps`` steps (unfinished episodes then count with their partial return).
    Eager, under ``torch.no_grad``; the only randomness (env resets and dynamics) comes from
    ``key``.

    Args:
        key: int64 ``[2]``, the evaluation key.
        params: the policy parameters.
        env: a pure environment; env_params: its parameters (default ``env.default_params()``).
        policy: a ``Policy``.
        episodes: E, how many episodes.
        max_steps: a cap on episode length.
        obs_fn: maps raw observations to policy inputs (e.g. a fixed observation normalizer).
        last_action_size: for a policy trained with ``config.last_action``: the width of the
            encoded previous action appended to its input (zeros at an episode's start), as in
            the rollout; 0 (default) for none. :func:`state_policy_input` gives both from a state.

    Returns:
        ``(returns, lengths)``: float32 ``[E]`` and int64 ``[E]``. For a multi-agent env
        (:func:`~functional_rl.envs.pettingzoo_adapter.from_pettingzoo`) each row is one agent's
        episode and ``E`` is rounded up to whole copies (a multiple of ``env.num_agents``).

    Example:
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> env = make("CartPole-v1")
        >>> policy = make_mlp_policy(env.observation_space, env.action_space)
        >>> params = policy.init(jr.key(0))
        >>> r1, n1 = evaluate(jr.key(7), params, env, policy, episodes=3)
        >>> r2, n2 = evaluate(jr.key(7), params, env, policy, episodes=3)
        >>> r1.shape, bool(torch.equal(r1, r2)), bool(torch.equal(r1, n1.float()))
        (torch.Size([3]), True, True)
    """
    from functional_rl.kernel.rollout import encode_action, policy_input

    if episodes < 1:
        raise ValueError(f"evaluate: episodes must be >= 1, got {episodes}")
    env_params = env.default_params() if env_params is None else env_params
    agents = getattr(env, "num_agents", 1)  # a multi-agent adapter: whole copies, one episode per agent
    episodes += -episodes % agents
    k_reset, key = jr.split(key, 2).unbind(0)
    with torch.no_grad():
        obs, env_state = env.reset(k_reset, env_params, episodes)
        returns = torch.zeros(episodes, dtype=torch.float32, device=obs.device)
        lengths = torch.zeros(episodes, dtype=torch.int64, device=obs.device)
        done = torch.zeros(episodes, dtype=torch.bool, device=obs.device)
        last_action = torch.zeros(episodes, last_action_size, device=obs.device)
        recurrent = getattr(policy, "initial_carry", None) is not None
        carry = policy.initial_carry(episodes).to(obs.device) if recurrent else None
        for _ in range(max_steps):
            key, k_step = jr.split(key, 2).unbind(0)
            x = policy_input(obs if obs_fn is None else obs_fn(obs), last_action=last_action if last_action_size else None)
            action, carry = greedy_action(policy, params, env, env_state, env_params, x, carry)  # carry: zero at the start
            step = env.step(k_step, env_state, action, env_params)
            obs, env_state, reward, terminated, truncated = step.obs, step.state, step.reward, step.terminated, step.truncated
            alive = ~done
            returns = returns + torch.where(alive, reward.to(returns.dtype), torch.zeros_like(returns))
            lengths = lengths + alive.to(torch.int64)
            ended = terminated | truncated
            if last_action_size:  # as in the rollout: the next input carries this action, 0 after a reset
                encoded = encode_action(action, last_action_size, getattr(env.action_space, "nvec", None))
                last_action = torch.where(ended[:, None], torch.zeros_like(encoded), encoded)
            done = done | ended
            if bool(done.all()):  # a host sync per step: the evaluator is eager shell code
                break
    return returns, lengths


def eval_params(state: Any) -> Any:
    """The parameters to evaluate, save and ship: ``state.learner.params``, or with
    ``optimizer="schedule_free_adamw"`` the optimizer's averaged sequence ``x``
    (:func:`~functional_rl.kernel.optim.schedule_free_eval_params`), which the paper evaluates.

    Example:
        >>> import functional_rl as frl
        >>> from functional_rl.shell.build import build
        >>> state, _ = build(frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2), compile=False)
        >>> eval_params(state) is state.learner.params
        True
    """
    from functional_rl.kernel.optim import schedule_free_eval_params

    return schedule_free_eval_params(state.learner.opt_state, state.learner.params)


def state_policy_input(state: Any) -> dict[str, Any]:
    """How the policy of ``state`` sees the world, as :func:`evaluate` keyword arguments.

    ``obs_fn``: the state's observation normalizer with its statistics frozen if
    ``state.learner.obs_norm`` is set, else ``None`` (raw observations). ``last_action_size``:
    the width of ``state.envs.last_action`` if the run feeds the last action, else 0. Both
    end in :func:`~functional_rl.kernel.rollout.policy_input`, as in the rollout.

    Example:
        >>> state_policy_input(state)
        {'obs_fn': None, 'last_action_size': 0}
    """
    from functional_rl.kernel.rollout import policy_input

    obs_norm = state.learner.obs_norm
    obs_fn = None
    if obs_norm is not None:

        def obs_fn(obs: torch.Tensor) -> torch.Tensor:
            return policy_input(obs, obs_norm)

    last_action = state.envs.last_action
    return {"obs_fn": obs_fn, "last_action_size": 0 if last_action is None else int(last_action.shape[-1])}


class Evaluator:
    """Every ``every`` iterations, greedy episodes with the current params, on its own PRNG stream.

    The evaluation key of iteration ``i`` is ``fold_in(key(seed), i)``: it depends only on the
    evaluator's seed and the iteration, never on the training state's key, which it does not
    read or advance. So training with or without an evaluator gives bit-identical states, and
    the evaluation of iteration ``i`` is the same in an uninterrupted and a resumed run.

    Each evaluation appends a row ``{"iteration", "agent_step", "eval/mean_return",
    "eval/std_return"`` (population std over episodes) ``, "eval/min_return",
    "eval/max_return", "eval/mean_length", "eval/episodes"}`` to :attr:`results` and passes it
    to ``writer.write`` (e.g. a :class:`JSONLWriter`, :class:`TensorBoardWriter`), if given.

    Args:
        env: a pure environment or an env id.
        policy: the ``Policy`` being trained.
        every: iterations between evaluations (>= 1); the last iteration is always evaluated.
        episodes: episodes per evaluation.
        seed: the evaluator's seed.
        env_params: evaluation env parameters; default ``env.default_params()``.
        writer: an object, or a sequence of objects, with ``write(row)``.
        max_steps: a cap on episode length.
        obs_fn: ``(state, obs) -> policy input``; default: the state's observation normalizer
            (frozen, not updated) when it has one, else the raw obs (:func:`state_policy_input`).
            The encoded last action is appended when the state carries one.

    Attributes:
        results: the rows of all evaluations so far.

    Example (the evaluation is reproducible and leaves the training key alone):
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=32, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> ev = Evaluator(env, policy, every=1, episodes=3, seed=0)
        >>> row = ev.run(state)
        >>> sorted(row)
        ['agent_step', 'eval/episodes', 'eval/max_return', 'eval/mean_length', 'eval/mean_return',
         'eval/min_return', 'eval/std_return', 'iteration']
        >>> row["eval/episodes"], row == Evaluator(env, policy, episodes=3, seed=0).run(state), len(ev.results)
        (3.0, True, 1)
    """

    def __init__(self, env: Any, policy: Any, every: int = 10, episodes: int = 10, seed: int = 0, *,
                 env_params: Any = None, writer: Any = None, max_steps: int = 100_000,
                 obs_fn: Callable[[Any, torch.Tensor], torch.Tensor] | None = None):
        if isinstance(env, str):
            from functional_rl.envs import make

            env = make(env)
        if every < 1 or episodes < 1:
            raise ValueError(f"Evaluator: every and episodes must be >= 1, got every={every}, episodes={episodes}")
        self.env, self.policy = env, policy
        self.every, self.episodes, self.seed = every, episodes, seed
        self.env_params = env.default_params() if env_params is None else env_params
        self.writers: Sequence[Any] = () if writer is None else (writer if isinstance(writer, (list, tuple)) else (writer,))
        self.max_steps = max_steps
        self.obs_fn = obs_fn
        self.results: list[dict[str, float]] = []
        self._num_iterations: int | None = None

    def on_start(self, state: Any, config: Any) -> None:
        """Remember the run's length so the last iteration is always evaluated."""
        self._num_iterations = getattr(config, "num_iterations", None)

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None:
        """Evaluate when the iteration is a multiple of ``every`` or the last one."""
        it = int(metrics["iteration"])
        if it % self.every == 0 or it == self._num_iterations:
            self.run(state)

    def run(self, state: Any) -> dict[str, float]:
        """Evaluate the learner now (:func:`eval_params`: its parameters, or a schedule-free
        optimizer's average ``x``); record and write the row, and return it."""
        iteration = int(state.iteration)
        inputs = state_policy_input(state)
        if self.obs_fn is not None:
            inputs["obs_fn"] = lambda obs: self.obs_fn(state, obs)
        returns, lengths = evaluate(
            jr.fold_in(jr.key(self.seed), iteration), eval_params(state), self.env, self.policy,
            episodes=self.episodes, env_params=self.env_params, max_steps=self.max_steps, **inputs,
        )
        r = returns.to(torch.float64)
        row = {
            "iteration": iteration,
            "agent_step": int(state.agent_step),
            "eval/mean_return": float(r.mean()),
            "eval/std_return": float(r.std(correction=0)),
            "eval/min_return": float(r.min()),
            "eval/max_return": float(r.max()),
            "eval/mean_length": float(lengths.to(torch.float64).mean()),
            "eval/episodes": float(self.episodes),
        }
        self.results.append(row)
        for w in self.writers:
            w.write(row)
        return row


class PolicySaver:
    """Saves the learner's policy as records of a :class:`~functional_rl.shell.policy_store.PolicyStore`
    every ``every`` iterations and at the end (the reference trainer's policy store in the loop).

    Record ``"{prefix}.{iteration:06d}"`` holds :func:`eval_params` of the state (the
    parameters, or a schedule-free optimizer's average ``x``), the policy's spec and
    metadata ``epoch`` (the iteration), ``agent_step``, ``episode_return`` (the iteration's
    mean, when episodes ended) and ``env_id``; ``store.load(store.uri)`` gives the latest.
    ``functional_training_loop(policy_store=...)`` adds one with ``every=0`` (the end only).

    Args:
        store: a ``PolicyStore`` or a directory for one.
        policy: the :class:`~functional_rl.kernel.policies.Policy` the params belong to.
        env: the env (its spaces and id go into the record).
        every: iterations between records; 0 saves only the final one.
        prefix: the records' name prefix.

    Example:
        >>> import tempfile
        >>> from functional_rl.kernel.config import PPOConfig
        >>> from functional_rl.shell.loop import functional_training_loop
        >>> from functional_rl.shell.policy_store import PolicyStore
        >>> cfg = PPOConfig(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, total_timesteps=96)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = functional_training_loop(cfg, compile=False, policy_store=PolicyStore(d))
        ...     record = PolicyStore(d).load(Path(d).as_uri())
        >>> record.name, record.epoch, record.metadata["agent_step"]
        ('policy.000003', 3, 96)
    """

    def __init__(self, store: Any, policy: Any, env: Any, *, every: int = 0, prefix: str = "policy"):
        from functional_rl.shell.policy_store import PolicyStore

        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"PolicySaver every={every!r} is invalid: give an iteration count >= 0 (0: only at the end)")
        self.store = store if isinstance(store, PolicyStore) else PolicyStore(store)
        self.policy, self.env, self.every, self.prefix = policy, env, every, prefix
        self.last: dict[str, Any] = {}
        self.saved_iteration: int | None = None

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None:
        self.last = metrics
        if self.every and int(metrics["iteration"]) % self.every == 0:
            self._save(state)

    def on_end(self, state: Any) -> None:
        if self.last and self.saved_iteration != int(self.last["iteration"]):
            self._save(state)

    def _save(self, state: Any) -> None:
        iteration = int(self.last["iteration"])
        meta = {"epoch": iteration, "agent_step": int(self.last["agent_step"])}
        if math.isfinite(self.last.get("episode_return", math.nan)):
            meta["episode_return"] = float(self.last["episode_return"])
        self.store.save(f"{self.prefix}.{iteration:06d}", eval_params(state), self.policy, meta, env=self.env, overwrite=True)
        self.saved_iteration = iteration
