"""`functional-rl train` against `functional_training_loop` without callbacks: steady steps/s.

The same config (the default PPOConfig on CartPole-v1, one torch thread) runs three ways,
each in its own subprocess, interleaved and repeated:

- ``library``: ``functional_training_loop(config)`` with no callbacks but a timestamp;
- ``cli``: ``functional-rl train CartPole-v1`` with its defaults (log lines, metrics.jsonl,
  TensorBoard, a checkpoint at the start, every 60 s and at the end), run in process through
  ``functional_rl.shell.cli.main`` with the same timestamp appended as the last callback;
- ``cli --checkpoint-every 1``: the CLI's old default cadence, a checkpoint every iteration.

Each CLI callback's ``on_iteration`` is also timed in the child (milliseconds per
iteration and share of the iteration), which isolates the CLI's own per-iteration cost
from the noise of other processes on a shared machine. The timestamp callback records ``(agent_step, perf_counter())`` after every iteration's
callbacks, so the rate includes what the CLI does per iteration. Steady steps/s =
``(last step - step after iteration 1) / (seconds between them)``: the first iteration
(compile, warm-up) is left out, as are the CLI's set-up and its final checkpoint and plot.
Prints a table with the ratio to the library and appends it to benchmarks/RESULTS.md.

    python -m benchmarks.cli_overhead [--total-timesteps 61440] [--repeats 2] [--compiled]

``--compiled`` adds one compiled pair (library, cli) after the eager runs; the first of them
may compile with an empty inductor cache, which the steady rate leaves out either way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import compile_cache_env

VARIANTS = {
    "library": [],
    "cli": [],
    "cli --checkpoint-every 1": ["--checkpoint-every", "1"],
}


class _Stamp:
    """Records ``(agent_step, perf_counter(), process_time())`` after each iteration (the last callback)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, float]] = []

    def on_iteration(self, state, metrics) -> None:
        self.rows.append((int(metrics["agent_step"]), time.perf_counter(), time.process_time()))


def _child(kind: str, compile_: bool, total: int, out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    stamp = _Stamp()
    if kind == "library":
        import functional_rl as frl

        frl.functional_training_loop(frl.PPOConfig(env_id="CartPole-v1", total_timesteps=total), compile=compile_,
                                     callbacks=[stamp])
    else:
        from functional_rl.shell import cli

        make = cli._callbacks

        def with_stamp(*args, **kwargs):
            return [*make(*args, **kwargs), stamp]

        def timed(*args, **kwargs):  # the seconds each callback's on_iteration takes, in this process
            callbacks = with_stamp(*args, **kwargs)
            for cb in callbacks[:-1]:
                hook = getattr(cb, "on_iteration", None)
                if hook is not None:
                    cb.on_iteration = _timed_hook(hook, type(cb).__name__, hook_s)
            return callbacks

        hook_s: dict[str, list[float]] = {}
        cli._callbacks = timed
        with tempfile.TemporaryDirectory() as d:
            argv = ["train", "CartPole-v1", "--total-timesteps", str(total), "--run-dir", str(Path(d) / "run"),
                    "--progress", "log", *VARIANTS[kind]] + ([] if compile_ else ["--no-compile"])
            rc = cli.main(argv)
        if rc != 0:
            raise SystemExit(f"functional-rl {' '.join(argv)} exited {rc}")
        out.write_text(json.dumps({"rows": stamp.rows, "hooks": hook_s}))
        return
    out.write_text(json.dumps({"rows": stamp.rows, "hooks": {}}))


def _timed_hook(hook, name: str, into: dict[str, list[float]]):
    def timed(state, metrics):
        t0 = time.perf_counter()
        hook(state, metrics)
        into.setdefault(name, []).append(time.perf_counter() - t0)

    return timed


def steady_sps(rows: list[tuple[int, float, float]], clock: int = 1) -> float:
    """Steps per second from the end of the first iteration to the end of the last:
    ``clock=1`` wall seconds, ``clock=2`` CPU seconds of the process (blind to other
    processes on the machine, and to time spent waiting on fsync).

    Example:
        >>> steady_sps([(1024, 60.5, 1.0), (2048, 60.625, 1.125), (3072, 60.75, 1.5)])
        8192.0
        >>> steady_sps([(1024, 60.5, 1.0), (2048, 60.625, 1.125), (3072, 60.75, 1.5)], clock=2)
        4096.0
    """
    first, last = rows[0], rows[-1]
    return (last[0] - first[0]) / (last[clock] - first[clock])


def _run(kind: str, compile_: bool, total: int, cache: str) -> tuple[float, float, dict[str, float]]:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "stamps.json"
        env = {**os.environ, **compile_cache_env(cache)}
        proc = subprocess.run([sys.executable, "-m", "benchmarks.cli_overhead", "--child", kind, "--total-timesteps",
                               str(total), *(["--compiled"] if compile_ else []), "--out", str(out)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} ({'compiled' if compile_ else 'eager'}) failed:\n{proc.stdout[-2000:]}\n"
                               f"{proc.stderr[-4000:]}")
        data = json.loads(out.read_text())
        rows = data["rows"]
        # ms per iteration in each callback's on_iteration, iterations after the first
        hooks = {name: 1e3 * sum(ts[1:]) / max(1, len(ts) - 1) for name, ts in data["hooks"].items()}
        iteration_ms = 1e3 * (rows[-1][1] - rows[0][1]) / max(1, len(rows) - 1)
        return steady_sps(rows, 1), steady_sps(rows, 2), {"iteration": iteration_ms, **hooks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total-timesteps", type=int, default=61_440, help="steps per eager run (default 60 iterations)")
    ap.add_argument("--compiled-timesteps", type=int, default=204_800, help="steps per compiled run")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the eager variants")
    ap.add_argument("--compiled", action="store_true", help="also one compiled pair (library, cli)")
    ap.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.compiled, args.compiled_timesteps if args.compiled else args.total_timesteps, args.out)
        return

    from benchmarks._common import append_results, table

    started = time.perf_counter()
    results: dict[tuple[str, str], list[tuple[float, float, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as cache:
        for r in range(args.repeats):
            for kind in VARIANTS:
                sps = _run(kind, False, args.total_timesteps, cache)
                results.setdefault(("eager", kind), []).append(sps)
                print(f"eager    {kind:26s} repeat {r + 1}: {sps[0]:9,.0f} steps/s, {sps[1]:9,.0f} per CPU-s, ms {sps[2]}",
                      flush=True)
        if args.compiled:
            for kind in ("library", "cli"):
                sps = _run(kind, True, args.compiled_timesteps, cache)
                results.setdefault(("compiled", kind), []).append(sps)
                print(f"compiled {kind:26s}: {sps[0]:9,.0f} steps/s, {sps[1]:9,.0f} per CPU-s, ms {sps[2]}", flush=True)

    rows = []
    for mode in ("eager", "compiled"):
        base = results.get((mode, "library"))
        for kind in VARIANTS:
            runs = results.get((mode, kind))
            if not runs:
                continue
            wall, cpu = max(r[0] for r in runs), max(r[1] for r in runs)
            wall0, cpu0 = max(r[0] for r in base), max(r[1] for r in base)
            hooks = {}
            for r in runs:
                for name, ms in r[2].items():
                    hooks.setdefault(name, []).append(ms)
            it_ms = statistics.median(hooks.pop("iteration"))
            cb_ms = sum(statistics.median(v) for v in hooks.values())
            detail = ", ".join(f"{n} {statistics.median(v):.2f}" for n, v in hooks.items())
            share = f"{cb_ms:.2f} ms = {100 * cb_ms / it_ms:.1f}% ({detail})" if hooks else "-"
            rows.append([f"{kind} ({mode})", f"{wall:,.0f}", f"{wall / wall0:.3f}x",
                         f"{statistics.median(r[0] for r in runs) / statistics.median(r[0] for r in base):.3f}x",
                         f"{cpu:,.0f}", f"{cpu / cpu0:.3f}x", share, " / ".join(f"{r[0]:,.0f}" for r in runs)])
    headers = ["variant (CartPole-v1, default PPOConfig, 1 thread)", "steady steps/s (best run)", "vs library (best)",
               "vs library (median)", "steady steps per CPU-s (best)", "vs library (CPU)",
               "callbacks' on_iteration per iteration, ms and share of the iteration (median)", "each run, steps/s"]
    body = (table(headers, rows)
            + f"\n\nSteady = from the end of iteration 1 to the end of the last iteration, the callbacks of every "
              f"iteration included; best of the runs (other processes share this CPU; the best run is the least disturbed), "
              f"and steps per CPU-second of the process (blind to them, and to fsync waits); "
              f"eager runs {args.total_timesteps:,} steps, {args.repeats} interleaved repeats; "
              + (f"compiled runs {args.compiled_timesteps:,} steps, one each (the first compile of the pair may "
                 "have had an empty inductor cache; the first iteration is left out either way). "
                 if args.compiled else "no compiled pair. ")
            + "The callbacks column times each CLI callback's on_iteration in the same process (the "
              "Checkpointer's share includes its saves), a measure of the CLI's overhead that other processes on "
              "the machine disturb far less than a comparison of two runs. "
              "Target: the CLI within 10% of the library (>= 0.90x). "
              f"Whole benchmark took {time.perf_counter() - started:.0f} s.")
    print()
    print(body)
    if not args.no_results:
        append_results("cli_overhead: functional-rl train vs functional_training_loop", body)


if __name__ == "__main__":
    main()
