"""Kickstarting from a trained CartPole teacher against learning from scratch.

Three seeds each, compiled, default CartPole config: how many env steps until the mean
return over 10 iterations first reaches 475 (benchmarks/algorithms.py's measure), from
scratch, with ``kickstart_teachers=[tests/data/cartpole_teacher.frl]`` (distillation
weights 1 falling linearly to 0 over ``--kickstart-steps``), and starting from the teacher's
parameters (``initial_policy``: a fresh optimizer on the trained weights).

    python -m benchmarks.kickstart [--seeds 1,2,3] [--budget 300000] [--kickstart-steps 50000]
    python -m benchmarks.kickstart --make-teacher   # retrain the teacher record the tests use

The teacher: the default config, seed 1, 300k steps, compiled; kept only if its greedy
return is 500 in all 20 evaluation episodes (stored as the record's ``eval_score``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import functional_rl as frl
import functional_rl.kernel.random as jr
from benchmarks._common import append_results, table
from benchmarks.algorithms import windowed

TEACHER = Path(__file__).resolve().parent.parent / "tests" / "data" / "cartpole_teacher.frl"


def make_teacher() -> None:
    from functional_rl.shell.build import build
    from functional_rl.shell.callbacks import evaluate
    from functional_rl.shell.policy_store import PolicyStore

    cfg = frl.PPOConfig(total_timesteps=300_000, seed=1)
    state, _ = frl.functional_training_loop(cfg, compile=True)
    _, kernel = build(cfg, compile=False)
    returns, _ = evaluate(jr.key(0), state.learner.params, kernel.env, kernel.policy, episodes=20)
    score = float(returns.mean())
    print(f"teacher greedy returns: {returns.tolist()}")
    if score < 500.0:
        raise SystemExit(f"the teacher's greedy mean return is {score}, not 500: train it longer or with another seed")
    PolicyStore(TEACHER.parent).save(TEACHER.stem, state.learner.params, kernel.policy,
                                     {"env_id": cfg.env_id, "agent_step": int(state.agent_step), "eval_score": score}, env=kernel.env)
    print(f"wrote {TEACHER}")


def steps_to(config: frl.PPOConfig, threshold: float = 475.0, **loop_kwargs) -> tuple[int | None, float, float]:
    t0 = time.perf_counter()
    _, history = frl.functional_training_loop(config, compile=True, **loop_kwargs)
    curve = windowed(history)
    first = next((step for step, r in curve if r >= threshold), None)
    return first, max((r for _, r in curve), default=float("nan")), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--budget", type=int, default=300_000)
    p.add_argument("--kickstart-steps", type=int, default=50_000)
    p.add_argument("--make-teacher", action="store_true")
    p.add_argument("--variants", default="", help="comma-separated prefixes of the variant names (default: all)")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.make_teacher:
        make_teacher()
        return
    base = frl.PPOConfig(total_timesteps=a.budget)
    variants = {  # (config changes, loop keyword arguments)
        "from scratch": ({}, {}),
        "kickstarted": ({"kickstart_teachers": [str(TEACHER)], "kickstart_steps": a.kickstart_steps}, {}),
        "initial_policy = the teacher": ({}, {"initial_policy": str(TEACHER)}),
    }
    chosen = [v for v in variants if not a.variants or any(v.startswith(x) for x in a.variants.split(","))]
    rows, firsts = [], {name: [] for name in chosen}
    for name in chosen:
        change, loop_kwargs = variants[name]
        for seed in map(int, a.seeds.split(",")):
            first, best, wall = steps_to(base.replace(seed=seed, **change), **loop_kwargs)
            firsts[name].append(first)
            rows.append([name, seed, f"{first:,}" if first is not None else "not reached", f"{best:.1f}", f"{wall:.0f}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    summary = []
    for name, values in firsts.items():
        reached = [v for v in values if v is not None]
        median = f"{statistics.median(reached):,.0f}" if len(reached) == len(values) else "-"
        summary.append([name, f"{len(reached)}/{len(values)}", median, ", ".join(f"{v:,}" if v else "-" for v in values)])
    body = table(["variant", "seed", "env steps to mean return 475", "best 10-iteration mean return", "wall s (incl. compile)"], rows)
    body += "\n\n" + table(["variant", "seeds reaching 475", "median env steps", "per seed"], summary)
    body += (f"\n\nCartPole-v1, default config, {a.budget:,} env steps, compiled, 1 thread. Teacher: {TEACHER.name} "
             f"(greedy return 500); distillation weights 1 -> 0 over the first {a.kickstart_steps:,} env steps.")
    print(body)
    append_results("Kickstarting from a CartPole teacher (benchmarks/kickstart.py)", body)


if __name__ == "__main__":
    main()
