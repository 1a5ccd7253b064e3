"""``functional-rl sweep``: a grid of configs x seeds as vmapped agents, one run dir per agent, a summary.

::

    functional-rl sweep ENV_ID --seeds 0-15 [--set KEY=V1,V2,... ...] [--config FILE] [--total-timesteps N]
                               [--run-dir DIR] [--no-compile] [--smooth ema:A|window:N|none]

``--set KEY=V`` fixes a field for every agent; ``--set KEY=V1,V2`` sweeps it (values are JSON,
split at top-level commas: ``--set hidden_sizes=[32,32],[64,64]`` is two values). The grid is
the Cartesian product of the swept keys, each point trained with every seed.

- A swept **graph input** (a continuous hyperparameter in ``HYPERPARAM_NAMES``, e.g.
  ``learning_rate``, ``ent_coef``, ``gamma``: a tensor in the state) costs nothing extra:
  all its values x all seeds are agents of ONE :func:`~functional_rl.shell.loop.train_many`
  call, one compiled kernel.
- A swept **structural** key (one that changes shapes or the graph: ``num_envs``,
  ``hidden_sizes``, ``update_epochs``, a hyperparameter whose piece is off (``None``) in the
  config, ...) runs one ``train_many`` per value (its own compile).

The sweep directory (default ``runs/sweep-{env_id}-{YYYYmmdd-HHMMSS}``)::

    DIR/<point>/seed<s>/config.json       that agent's exact PPOConfig (train --config / resume / eval use it)
    DIR/<point>/seed<s>/metrics.jsonl     its rows (the CLI's grouped names, wall_time)
    DIR/<point>/seed<s>/checkpoints/      its final checkpoint (the CLI's format: eval and resume work)
    DIR/summary.json, DIR/summary.md      per point: final and best mean episodic return over seeds
                                          (mean, std, 95% bootstrap CI, n)
    DIR/sweep.png                         per point: mean curve over seeds with its 95% bootstrap CI band

``<point>`` names the swept values (``learning_rate=0.001``; ``default`` when nothing is swept).
A run's *final* return is the episode-weighted mean return of its last 10 iterations that
ended an episode (what ``train`` prints at the end), its *best* the highest such 10-iteration
window (:func:`functional_rl.shell.curves.windowed_return`).

Example:
    >>> parse_seeds("0-3,8"), split_values("[32,32],[64,64]"), point_name({"learning_rate": 0.00025, "hidden_sizes": [32, 32]})
    ([0, 1, 2, 3, 8], ['[32,32]', '[64,64]'], 'learning_rate=0.00025,hidden_sizes=32x32')
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from functional_rl.shell.cli import (
    CHECKPOINT_DIR, METRICS_FILE, UsageError, _check_config, _config_from_dict, _lock, _make_config,
    _make_env, _make_policy, _new_run_dir, _parse_value, _positive, _refuse_foreign, _smoothing, _threads,
    _write_atomic, _write_config, LOCK_FILE, X_AXES, plot_curve_groups, read_metrics,
)
from functional_rl.shell.validate import short

__all__ = ["parse_seeds", "split_values", "parse_grid", "point_name", "summarize", "add_parser", "cmd_sweep"]

#: The most agents one sweep trains (points x seeds).
MAX_AGENTS = 4096
#: Iterations in a run's final / best return window.
WINDOW = 10
SUMMARY_JSON, SUMMARY_MD, SWEEP_PNG = "summary.json", "summary.md", "sweep.png"


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0-15"`` (inclusive), ``"0,3,5"`` or a mix (``"0-3,8"``); no repeats.

    Raises:
        ValueError: an empty text or part, a reversed range, a seed given twice, a non-integer.

    Example:
        >>> parse_seeds("0-3"), parse_seeds("7"), parse_seeds("0,3,5")
        ([0, 1, 2, 3], [7], [0, 3, 5])
        >>> parse_seeds("5-2")
        Traceback (most recent call last):
            ...
        ValueError: --seeds '5-2': the range 5-2 runs backwards; write it as 2-5
    """
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"--seeds {short(text)}: an empty part; use e.g. 0-15 or 0,3,5")
        lo_text, dash, hi_text = part.partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if dash else lo
        except ValueError:
            raise ValueError(f"--seeds {short(text)}: {short(part)} is not a seed or a range A-B of non-negative integers; "
                             "use e.g. 0-15 or 0,3,5") from None
        if hi < lo:
            raise ValueError(f"--seeds {short(text)}: the range {lo}-{hi} runs backwards; write it as {hi}-{lo}")
        if hi - lo + len(seeds) >= MAX_AGENTS:
            raise ValueError(f"--seeds {short(text)}: more than {MAX_AGENTS} seeds")
        seeds.extend(range(lo, hi + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"--seeds {short(text)}: seed {repeated[0]} is given twice")
    return seeds


def split_values(text: str) -> list[str]:
    """Split a ``--set`` value at the commas outside brackets, braces and quotes.

    Example:
        >>> split_values("1e-3,2.5e-4"), split_values('[64, 64]'), split_values('"a,b",{"x": [1,2]}')
        (['1e-3', '2.5e-4'], ['[64, 64]'], ['"a,b"', '{"x": [1,2]}'])
    """
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``--set`` items to ``{key: [values]}`` (one value: fixed; several: swept), in order.

    Raises:
        UsageError: a malformed item, an empty value, a key given twice, a value repeated.

    Example:
        >>> parse_grid(["learning_rate=1e-3,2.5e-4", "num_envs=8", "hidden_sizes=[32,32]"])
        {'learning_rate': [0.001, 0.00025], 'num_envs': [8], 'hidden_sizes': [[32, 32]]}
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"malformed --set {short(item)}: expected key=value or key=v1,v2,..., "
                             "e.g. --set learning_rate=1e-3,2.5e-4")
        if key in grid:
            raise UsageError(f"--set {short(key)} is given twice; give all its values once, comma-separated")
        values = []
        for part in split_values(text):
            if not part:
                raise UsageError(f"--set {short(item)} has an empty value; e.g. --set {short(key)}=1e-3,2.5e-4")
            value = _parse_value(part)
            if any(json.dumps(value) == json.dumps(v) for v in values):
                raise UsageError(f"--set {short(key)} lists the value {short(part)} twice")
            values.append(value)
        grid[key] = values
    return grid


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "x".join(_fmt(v) for v in value)
    return "".join(c if c.isalnum() or c in "._-+" else "_" for c in str(value))


def point_name(point: dict[str, Any]) -> str:
    """The directory name of a grid point: ``key=value`` joined by commas (``default`` if empty).

    Example:
        >>> point_name({"learning_rate": 0.001, "num_envs": 8}), point_name({})
        ('learning_rate=0.001,num_envs=8', 'default')
    """
    return ",".join(f"{k}={_fmt(v)}" for k, v in point.items()) or "default"


# ---------------------------------------------------------------------------- summary
def _run_returns(run_dir: Path) -> tuple[list[float], list[float], list[float], list[float]]:
    """``(agent_step, overview/reward, env/episodes, wall_time)`` of a run's iteration rows."""
    steps, returns, episodes, times = [], [], [], []
    for row in read_metrics(run_dir / METRICS_FILE):
        if "iteration" not in row or not isinstance(row.get("agent_step"), (int, float)):
            continue
        r = row.get("overview/reward")
        steps.append(float(row["agent_step"]))
        returns.append(float(r) if isinstance(r, (int, float)) else math.nan)
        episodes.append(float(row.get("env/episodes") or 0.0))
        times.append(float(row.get("wall_time") or 0.0))
    return steps, returns, episodes, times


def summarize(sweep_dir: str | Path, points: list[tuple[str, dict[str, Any], list[Path]]]) -> dict[str, Any]:
    """The summary of a sweep from its runs' ``metrics.jsonl`` files.

    Args:
        sweep_dir: the sweep directory (paths in the summary are relative to it).
        points: ``[(name, swept values, [run dirs, one per seed]), ...]``.

    Returns:
        ``{"window": 10, "ci": ..., "points": [{"name", "values", "runs", "final", "best"}, ...]}``
        where ``final`` / ``best`` hold ``mean``, ``std``, ``ci_lo``, ``ci_hi``, ``n`` over seeds
        (:func:`~functional_rl.shell.curves.summary_stats`) and the per-seed ``values``.

    Example (one point, two fake runs):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     runs = []
        ...     for s, r in enumerate([10.0, 30.0]):
        ...         run = Path(d) / f"seed{s}"; run.mkdir()
        ...         _ = (run / METRICS_FILE).write_text(json.dumps({"agent_step": 8, "iteration": 1, "overview/reward": r, "env/episodes": 2}) + "\\n")
        ...         runs.append(run)
        ...     s = summarize(d, [("default", {}, runs)])
        >>> p = s["points"][0]
        >>> p["final"]["mean"], p["final"]["values"], p["best"]["n"]
        (20.0, [10.0, 30.0], 2)
    """
    import numpy as np

    from functional_rl.shell.curves import N_BOOT, summary_stats, windowed_return

    sweep_dir = Path(sweep_dir)
    out = []
    for name, values, runs in points:
        finals, bests = [], []
        for run in runs:
            _, returns, episodes, _ = _run_returns(run)
            w = windowed_return(returns, episodes, WINDOW)
            finite = w[~np.isnan(w)]
            finals.append(float(w[-1]) if w.size else math.nan)
            bests.append(float(finite.max()) if finite.size else math.nan)
        out.append({
            "name": name, "values": values, "runs": [str(r.relative_to(sweep_dir)) for r in runs],
            "final": {**summary_stats(finals)._asdict(), "values": finals},
            "best": {**summary_stats(bests)._asdict(), "values": bests},
        })
    return {"window": WINDOW, "ci": f"95% percentile bootstrap of the mean over seeds ({N_BOOT} resamples, seed 0)",
            "points": out}


def _markdown(summary: dict[str, Any], env_id: str, total: int) -> str:
    def cell(s: dict[str, Any]) -> tuple[str, str]:
        if not s["n"]:
            return "n/a", "n/a"
        return f"{s['mean']:.1f} ± {s['std']:.1f}", f"[{s['ci_lo']:.1f}, {s['ci_hi']:.1f}]"

    lines = [f"# Sweep of {env_id}: {total:,} env steps per run", "",
             f"Final: mean episodic return of a run's last {summary['window']} iterations with episodes; best: its best "
             f"such window. mean ± std over seeds; CI: {summary['ci']}.", "",
             "| point | seeds | final (mean ± std) | final 95% CI | best (mean ± std) | best 95% CI |",
             "|---|---|---|---|---|---|"]
    for p in summary["points"]:
        (fm, fc), (bm, bc) = cell(p["final"]), cell(p["best"])
        lines.append(f"| {p['name']} | {p['final']['n']} | {fm} | {fc} | {bm} | {bc} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- training
class _AgentWriters:
    """One ``metrics.jsonl`` per agent (grouped names, ``wall_time``) and the sweep's progress lines."""

    def __init__(self, run_dirs: list[Path], config: Any, every: int, stream: Any):
        from functional_rl.shell.callbacks import JSONLWriter, SteadyRate

        self.writers = [JSONLWriter(d / METRICS_FILE, wall_time=True) for d in run_dirs]
        self.config, self.every, self.stream = config, every, stream
        self.returns: list[float] = [math.nan] * len(run_dirs)
        self.steady = SteadyRate()
        self.step = 0

    def on_start(self, state: Any, config: Any) -> None:
        self.steady = type(self.steady)()
        self.steady.start()
        for w in self.writers:
            w.on_start(None, None)

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None:
        a = int(metrics["agent"])
        row = {k: v for k, v in metrics.items() if k not in ("agent", "seed") and not k.startswith("sweep/")}
        self.writers[a].on_iteration(None, row)
        if metrics.get("episodes", 0) > 0 and math.isfinite(metrics["episode_return"]):
            self.returns[a] = metrics["episode_return"]
        it, n = int(metrics["iteration"]), len(self.writers)
        if a != n - 1:
            return
        step = self.step = int(metrics["agent_step"])
        self.steady.update(step)  # steps per agent since the first iteration (compile) ended
        if it % self.every == 0 or it == self.config.num_iterations:
            rate = self.steady.rate
            finite = [r for r in self.returns if math.isfinite(r)]
            mean = f"{sum(finite) / len(finite):7.1f}" if finite else "    n/a"
            print(f"iteration {it:>5}/{self.config.num_iterations}  {n} agents x {step:>9,} steps = {n * step:>12,} "
                  f"agent-steps  {'n/a' if rate is None else f'{n * rate:,.0f}':>9} agent-steps/s  mean return {mean}",
                  file=self.stream, flush=True)

    def on_end(self, state: Any) -> None:
        self.close()
        n, rate, first = len(self.writers), self.steady.rate, self.steady.first_s
        elapsed = self.steady.clock() - self.steady.t0 if self.steady.t0 is not None else math.nan
        print(f"done: {n} agents x {self.step:,} steps = {n * self.step:,} agent-steps in {elapsed:.1f}s"
              + ("" if first is None else f" (first iteration {first:.1f}s with any compile")
              + ("" if first is None else ")" if rate is None else f"; then {n * rate:,.0f} agent-steps/s)"),
              file=self.stream, flush=True)

    def close(self) -> None:
        for w in self.writers:
            w.close()

    def on_failure(self, state: Any, exc: BaseException) -> None:
        self.close()


def _clone(tree: Any) -> Any:
    import torch
    import torch.utils._pytree as pytree

    return pytree.tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, tree)


def _train_group(config: Any, env: Any, seeds: list[int], graph: dict[str, list[Any]], agents: list[dict[str, Any]],
                 run_dirs: list[Path], agent_configs: list[Any], args: argparse.Namespace) -> None:
    """One ``train_many`` call over ``graph`` x ``seeds``; then every agent's final checkpoint."""
    from functional_rl.shell import checkpoint
    from functional_rl.shell.batched import unstack_state
    from functional_rl.shell.callbacks import CompileNotice
    from functional_rl.shell.loop import NonFiniteError, train_many

    compile = not args.no_compile
    callbacks: list[Any] = [_AgentWriters(run_dirs, config, args.log_every, sys.stdout)]
    if compile:
        callbacks.insert(0, CompileNotice(stream=sys.stdout, every_s=5.0))
    try:
        states, _ = train_many(config, seeds, graph or None, env=env, policy=_make_policy(config, env),
                               callbacks=callbacks, compile=compile)
    except NonFiniteError as e:
        raise UsageError(f"training diverged: {e}") from e
    for i, (run_dir, cfg) in enumerate(zip(run_dirs, agent_configs)):
        state = _clone(unstack_state(states, i))
        step, iteration = int(state.agent_step), int(state.iteration)
        checkpoint.save(checkpoint.checkpoint_path(run_dir / CHECKPOINT_DIR, step), state, cfg,
                        {"agent_step": step, "iteration": iteration, "reason": "end", "compile": compile})


class _Plan(NamedTuple):
    """What a sweep will train: the shared config, the env, the seeds, the swept keys split into
    graph inputs and structural keys, and one group per ``train_many`` call:
    ``(config, agents, [(point, seed, agent config), ...])``."""

    base: Any
    env: Any
    seeds: list[int]
    swept: dict[str, list[Any]]
    graph: dict[str, list[Any]]
    structural: dict[str, list[Any]]
    groups: list[tuple[Any, list[dict[str, Any]], list[tuple[dict[str, Any], int, Any]]]]


def _plan(args: argparse.Namespace) -> _Plan:
    """Parse and check everything before a file is written (a UsageError names what is wrong)."""
    from functional_rl.kernel.config import HYPERPARAM_NAMES, PPOConfig

    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        raise UsageError(str(e)) from None
    grid = parse_grid(args.set or [])
    if "seed" in grid:
        raise UsageError("--set seed: give the seeds with --seeds, e.g. --seeds 0-15")
    fields = set(PPOConfig().to_dict())
    swept = {k: v for k, v in grid.items() if len(v) > 1}
    for key in swept:
        if key not in fields:
            raise UsageError(f"--set {short(key)}: unknown config key; see PPOConfig's fields (functional-rl train --help)")
    fixed = argparse.Namespace(config=args.config, env_id=args.env_id, total_timesteps=args.total_timesteps, seed=None,
                               set=[f"{k}={json.dumps(v[0])}" for k, v in grid.items() if len(v) == 1])
    base = _make_config(fixed)
    env = _make_env(base.env_id)
    _check_config(base, env)
    # A continuous hyperparameter is a graph input unless its piece is switched by None (then it is structural).
    graph = {k: v for k, v in swept.items() if k in HYPERPARAM_NAMES and getattr(base, k) is not None and None not in v}
    structural = {k: v for k, v in swept.items() if k not in graph}
    groups = [_group(base, env, seeds, graph, dict(zip(structural, values)), list(swept))
              for values in itertools.product(*structural.values())]
    total = sum(len(agents) for _, agents, _ in groups)
    if total > MAX_AGENTS:
        raise UsageError(f"the sweep has {total:,} agents (points x seeds), more than {MAX_AGENTS:,}; sweep fewer")
    return _Plan(base, env, seeds, swept, graph, structural, groups)


def _group(base: Any, env: Any, seeds: list[int], graph: dict[str, list[Any]], spoint: dict[str, Any], names: list[str]):
    """One ``train_many`` call: the config with the structural values ``spoint``, its agents
    (``graph`` x ``seeds``) and each agent's point, seed and exact config."""
    from functional_rl.shell.batched import agent_grid, stack_states

    where = f"--set {point_name(spoint)}"
    config = _config_from_dict({**base.to_dict(), **spoint}, where) if spoint else base
    _check_config(config, env, where=where)
    try:
        agents = agent_grid(seeds, graph or None)
        stack_states(config, env, _make_policy(config, env), agents)  # a swept value breaking its rule, named
    except ValueError as e:
        raise UsageError(f"--set: {e}") from e
    members = []
    for agent in agents:
        point = {**spoint, **{k: agent[k] for k in graph}}
        point = {k: point[k] for k in names}  # the order of --set
        members.append((point, agent["seed"], _config_from_dict({**config.to_dict(), **agent}, f"--set {point_name(point)}")))
    return config, agents, members


def _write_summary(sweep_dir: Path, plan: _Plan, points: dict[str, tuple[dict[str, Any], list[Path]]],
                   args: argparse.Namespace) -> None:
    """summary.json, summary.md (also printed) and sweep.png of the finished runs."""
    base = plan.base
    summary = summarize(sweep_dir, [(name, point, runs) for name, (point, runs) in points.items()])
    summary = {"env_id": base.env_id, "seeds": plan.seeds, "total_timesteps": base.total_timesteps, **summary}
    _write_atomic(sweep_dir / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
    markdown = _markdown(summary, base.env_id, base.total_timesteps)
    _write_atomic(sweep_dir / SUMMARY_MD, markdown)
    curves = [(name, [c for c in (_curve(r, args.x) for r in runs) if c[0]]) for name, (_, runs) in points.items()]
    curves = [(name, runs) for name, runs in curves if runs]
    if curves:
        plot_curve_groups(curves, sweep_dir / SWEEP_PNG, smooth=args.smooth, xlabel=X_AXES[args.x][1],
                          title=f"{base.env_id}, {base.total_timesteps:,} steps per run: {len(plan.seeds)} seeds per point",
                          show_runs=False)
    print(markdown, end="", flush=True)
    print(f"wrote {sweep_dir / SUMMARY_JSON}, {sweep_dir / SUMMARY_MD}" + (f", {sweep_dir / SWEEP_PNG}" if curves else ""))


def cmd_sweep(args: argparse.Namespace) -> int:
    """``functional-rl sweep``: train the grid x seeds, write the run dirs, the summary and the plot."""
    import torch

    torch.set_num_threads(args.threads)
    plan = _plan(args)
    base, structural = plan.base, plan.structural
    sweep_dir = Path(args.run_dir) if args.run_dir else Path("runs") / f"sweep-{base.env_id}-{time.strftime('%Y%m%d-%H%M%S')}"
    _new_run_dir(sweep_dir)
    lock = _lock(sweep_dir)
    try:
        _refuse_foreign(sweep_dir, ignore=(LOCK_FILE,))  # written by another process before we locked
        print(f"sweep dir: {sweep_dir}", flush=True)
        n_points = math.prod(len(v) for v in plan.swept.values())
        print(f"sweep {base.env_id}: {n_points} point{'s' if n_points != 1 else ''} x {len(plan.seeds)} seeds = "
              f"{sum(len(g[1]) for g in plan.groups)} agents"
              + (f"; graph inputs {', '.join(plan.graph)} in one train_many call" if plan.graph else "")
              + (f"; structural {', '.join(structural)}: one train_many per value" if structural else ""), flush=True)
        points: dict[str, tuple[dict[str, Any], list[Path]]] = {}
        for config, agents, members in plan.groups:
            run_dirs = []
            for point, seed, agent_config in members:
                run_dir = sweep_dir / point_name(point) / f"seed{seed}"
                run_dir.mkdir(parents=True)
                _write_config(run_dir, agent_config)
                run_dirs.append(run_dir)
                points.setdefault(point_name(point), (point, []))[1].append(run_dir)
            print(f"training {len(agents)} agents x {config.batch_size:,} steps/iter ({config.num_envs} envs x {config.num_steps} "
                  f"steps) x {config.num_iterations} iterations = {len(agents) * config.num_iterations * config.batch_size:,} "
                  "agent-steps" + ("" if not structural else f" [{point_name({k: members[0][0][k] for k in structural})}]"),
                  flush=True)
            try:
                _train_group(config, plan.env, plan.seeds, plan.graph, agents, run_dirs, [m[2] for m in members], args)
            except KeyboardInterrupt:
                print(f"functional-rl: interrupted; the metrics written so far are in {sweep_dir} (the agents of the "
                      "interrupted call have no checkpoint)", file=sys.stderr)
                return 130
        _write_summary(sweep_dir, plan, points, args)
    finally:
        lock.release()
    return 0


def _curve(run_dir: Path, x: str) -> tuple[list[float], list[float]]:
    steps, returns, _, times = _run_returns(run_dir)
    xs = steps if x == "steps" else times
    keep = [i for i, r in enumerate(returns) if math.isfinite(r)]
    return [xs[i] for i in keep], [returns[i] for i in keep]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``sweep`` on the CLI's sub-command parsers; returns its parser.

    Example:
        >>> from functional_rl.shell.cli import build_parser
        >>> args = build_parser().parse_args(["sweep", "CartPole-v1", "--seeds", "0-7", "--set", "learning_rate=1e-3,2.5e-4"])
        >>> args.seeds, args.set, args.func is cmd_sweep
        ('0-7', ['learning_rate=1e-3,2.5e-4'], True)
    """
    p = sub.add_parser("sweep", help="a grid of configs x seeds as vmapped agents: run dirs, summary and CI plot",
                       description="Train every point of the --set grid with every seed as vmapped agents (train_many). "
                                   "Continuous hyperparameters are swept in one compiled call; structural keys "
                                   "(shapes, graph) run one call per value. Writes DIR/<point>/seed<s>/ (config.json, "
                                   "metrics.jsonl, checkpoints/), summary.json, summary.md and sweep.png.")
    p.add_argument("env_id", help="environment id (a pure env), see `functional-rl list-envs`")
    p.add_argument("--seeds", required=True, metavar="SEEDS", help="seeds: a range 0-15, a list 0,3,5, or both (0-3,8)")
    p.add_argument("--set", action="append", metavar="KEY=V1,V2", help="fix (one value) or sweep (several, comma-separated "
                   "JSON values) a config field; repeatable. e.g. --set learning_rate=1e-3,2.5e-4")
    p.add_argument("--config", metavar="FILE", help="a .toml or .json file of PPOConfig fields")
    p.add_argument("--total-timesteps", type=_positive, dest="total_timesteps", metavar="N", help="env steps per agent")
    p.add_argument("--run-dir", dest="run_dir", help="the sweep directory (default runs/sweep-{env_id}-{YYYYmmdd-HHMMSS})")
    p.add_argument("--no-compile", action="store_true", help="run eagerly (no torch.compile)")
    p.add_argument("--smooth", type=_smoothing, default="ema:0.9", metavar="ema:A|window:N|none",
                   help="smoothing of each run's curve in sweep.png (default ema:0.9)")
    p.add_argument("--x", choices=tuple(X_AXES), default="steps", help="x axis of sweep.png (default steps)")
    p.add_argument("--log-every", type=_positive, default=10, dest="log_every", metavar="N", help="iterations between progress lines")
    p.add_argument("--threads", type=_threads, default=1, metavar="T", help="torch intra-op threads")
    p.set_defaults(func=cmd_sweep)
    return p
