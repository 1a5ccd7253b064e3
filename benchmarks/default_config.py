"""Which CartPole setting should be the default: wall time to mean return 475, over seeds.

    python -m benchmarks.default_config [--seeds 1 2 3 4 5] [--envs 4 8]

Each run is ``functional_rl`` compiled (the library default), one thread, in its own process
(:func:`benchmarks.run.child_frl`), with CleanRL's CartPole hyperparameters except the number
of envs: ``num_envs`` x 128 steps, 4 epochs x 4 minibatches, lr 2.5e-4 annealed over 500k
steps. A run stops when the mean return of the episodes that ended in the last 10 iterations
first reaches 475 (:class:`benchmarks.run.Tracker`), or at 500k steps.

For every seed and setting, interleaved (seed 1 with 4 envs, seed 1 with 8 envs, ...): a cold
run (an empty inductor cache of its own, so every graph is compiled) and a warm run (the same
cache, now full). "time to 475" is seconds from the process's spawn (imports and compile
included); "steps to 475" counts env steps. CleanRL's own CartPole setting is 4 envs x 128
steps (``cleanrl/ppo.py``, Huang et al. 2022).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile

from benchmarks._common import append_results, compile_cache_env, table
from benchmarks.run import TOTAL, fmt, spawn


def run_one(num_envs: int, seed: int, cache_env: dict) -> dict:
    spec = {"compile": True, "iters": TOTAL // (num_envs * 128), "warmup": 3, "measure": None,
            "stop_when_solved": True, "config": {"num_envs": num_envs, "seed": seed}}
    out = spawn("frl", spec, cache_env, timeout=1800)
    if "error" not in out:
        out["steps475"] = out["iterations"] * num_envs * 128 if out.get("t475") is not None else None
    return out


def summary(runs: list[dict], key: str, spec: str = "{:.1f}") -> str:
    vals = [r[key] for r in runs if r.get(key) is not None]
    if not vals:
        return "not reached"
    missing = len(runs) - len(vals)
    text = f"{fmt(statistics.median(vals), spec)} ({fmt(min(vals), spec)}-{fmt(max(vals), spec)})"
    return text + (f", {missing} not reached" if missing else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--envs", type=int, nargs="+", default=[4, 8])
    args = ap.parse_args()
    results: dict[tuple[int, str], list[dict]] = {(n, m): [] for n in args.envs for m in ("cold", "warm")}
    for seed in args.seeds:
        for n in args.envs:
            cache = tempfile.mkdtemp(prefix="frl_default_cfg_")
            try:
                cache_env = compile_cache_env(cache)
                print(f"seed {seed}, {n} envs: cold then warm", flush=True)
                results[(n, "cold")].append(run_one(n, seed, cache_env))
                results[(n, "warm")].append(run_one(n, seed, cache_env))
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    rows = []
    for (n, mode), runs in results.items():
        ok = [r for r in runs if "error" not in r]
        errors = [r["error"] for r in runs if "error" in r]
        rows.append([f"{n} envs x 128 steps", mode, f"{len(ok)}/{len(runs)}", summary(ok, "t475"),
                     summary(ok, "steps475", "{:,.0f}"), summary(ok, "first_s"), summary(ok, "sps", "{:,.0f}")]
                    + ([f"errors: {errors}"] if errors else []))
    per_seed = [[str(s)] + [fmt(results[(n, m)][i].get("t475"), "{:.1f}", "not reached") for n in args.envs for m in ("cold", "warm")]
                for i, s in enumerate(args.seeds)]
    body = "\n\n".join([
        table(["setting", "cache", "runs", "time to 475, s from spawn: median (min-max)", "env steps to 475",
               "first iteration, s", "steps/s"], rows),
        "Per seed, time to 475 (s):\n\n" + table(["seed"] + [f"{n} envs {m}" for n in args.envs for m in ("cold", "warm")], per_seed),
        f"Seeds {args.seeds}; compiled, 1 thread, runs interleaved by seed; a run stops at 475 or {TOTAL:,} steps. "
        "steps/s is over the whole run after 3 warm-up iterations.",
    ])
    print(body)
    append_results("Default config: time to mean return 475, 4 vs 8 envs", body)


if __name__ == "__main__":
    main()
