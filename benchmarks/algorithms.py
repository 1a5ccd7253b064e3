"""The algorithm options on and off: do CartPole and Acrobot still reach their thresholds?

Each row is one compiled training run of 500k env steps with one option switched on at a
sensible setting, beside the defaults (Adam, GAE, constant coefficients) in the same run of
this script: the optimizers (AdamW, Muon, with decoupled weight decay), V-trace targets
recomputed every epoch, an entropy coefficient on a cosine schedule to 0, a value clip
range apart from the ratio's, and early stopping at a KL target. Reported: the best mean return over 10 consecutive iterations
(as ``tests/test_learning.py`` measures it) and the env steps at which it first reached the
threshold (CartPole 475, Acrobot -100). One seed per row: a row says that the option
learns, not that it learns faster (seed-to-seed spread on CartPole is about 2x in steps).

    python -m benchmarks.algorithms [--seeds 1] [--envs cartpole,acrobot] [--variants adam,adamw,...]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import functional_rl as frl
from benchmarks._common import append_results, table
from functional_rl.shell.presets import acrobot_config

VARIANTS = {
    "adam (default)": {},
    "adamw, weight_decay 1e-4": {"optimizer": "adamw", "weight_decay": 1e-4},
    "muon, weight_decay 1e-4": {"optimizer": "muon", "weight_decay": 1e-4},
    "muon, lr 1e-3, weight_decay 1e-4": {"optimizer": "muon", "weight_decay": 1e-4, "learning_rate": 1e-3},
    "vtrace (rho 1, c 1)": {"vtrace": True},
    "ent_coef cosine to 0": {"schedules": {"ent_coef": "cosine:end=0"}},
    "vf_clip_coef 0.5": {"vf_clip_coef": 0.5},
    "target_kl 0.02": {"target_kl": 0.02},
    "target_kl 0.005": {"target_kl": 0.005},
    "prioritized alpha 0.6, beta0 0.4": {"prioritized": True, "prio_alpha": 0.6, "prio_beta0": 0.4},
    "schedule_free_adamw, lr 2.5e-4": {"optimizer": "schedule_free_adamw", "anneal_lr": False},
    "schedule_free_adamw, lr 1e-3": {"optimizer": "schedule_free_adamw", "anneal_lr": False, "learning_rate": 1e-3},
    "l2_reg_loss_coef 1e-4": {"l2_reg_loss_coef": 1e-4},
    "l2_init_loss_coef 1e-3": {"l2_init_loss_coef": 1e-3},
}
ENVS = {
    "cartpole": (lambda seed: frl.PPOConfig(seed=seed, total_timesteps=500_000), 475.0),
    "acrobot": (lambda seed: acrobot_config(seed=seed, total_timesteps=500_000), -100.0),
}


def windowed(history: list[dict], window: int = 10) -> list[tuple[int, float]]:
    """``(agent_step, mean return of the episodes that ended in the last `window` iterations)``."""
    out = []
    for i in range(window - 1, len(history)):
        rows = [h for h in history[i - window + 1 : i + 1] if h["episodes"] > 0]
        n = sum(h["episodes"] for h in rows)
        if n >= 8:
            out.append((int(history[i]["agent_step"]), sum(h["episode_return"] * h["episodes"] for h in rows) / n))
    return out


def run(variant: dict, env: str, seed: int) -> tuple[float, int | None, float, float]:
    make, threshold = ENVS[env]
    config = make(seed).replace(**variant)
    t0 = time.perf_counter()
    _, history = frl.functional_training_loop(config, compile=True)
    curve = windowed(history)
    best = max((r for _, r in curve), default=-math.inf)
    first = next((step for step, r in curve if r >= threshold), None)
    updates = sum(h.get("updates_run", config.update_epochs * config.num_minibatches) for h in history) / len(history)
    return best, first, time.perf_counter() - t0, updates


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="1")
    p.add_argument("--envs", default=",".join(ENVS))
    p.add_argument("--variants", default="", help="comma-separated prefixes of the variant names (default: all)")
    a = p.parse_args()
    torch.set_num_threads(1)
    chosen = [v for v in VARIANTS if not a.variants or any(v.startswith(x) for x in a.variants.split(","))]
    rows = []
    for env in a.envs.split(","):
        for name in chosen:
            for seed in map(int, a.seeds.split(",")):
                best, first, wall, updates = run(VARIANTS[name], env, seed)
                rows.append([env, name, seed, f"{best:.1f}", f"{first:,}" if first is not None else "not reached",
                             f"{updates:.1f}", f"{wall:.0f}"])
                print(" | ".join(map(str, rows[-1])), flush=True)
    body = table(["env", "option", "seed", "best 10-iteration mean return", "env steps to threshold",
                  "updates per iteration (mean)", "wall s (incl. compile)"], rows)
    seeds = a.seeds.split(",")
    if len(seeds) > 1:  # one line per (env, option) over the seeds
        summary = []
        for env in a.envs.split(","):
            for name in chosen:
                mine = [r for r in rows if r[0] == env and r[1] == name]
                steps = [int(r[4].replace(",", "")) for r in mine if r[4] != "not reached"]
                median = f"{statistics.median(steps):,.0f}" if len(steps) == len(mine) else "-"
                summary.append([env, name, f"{len(steps)}/{len(mine)}", median, ", ".join(r[4] for r in mine),
                                ", ".join(r[3] for r in mine)])
        body += "\n\n" + table(["env", "option", "seeds reaching threshold", "median env steps", "per seed",
                                  "best mean return per seed"], summary)
    body += (f"\n\nThresholds: CartPole-v1 475, Acrobot-v1 -100, within 500k env steps; compiled, 1 thread; seeds {a.seeds}. "
             "Seed-to-seed spread is about 2x in steps: a median over 3 seeds is a rough ranking at best.")
    print(body)
    append_results("Algorithm options: learning with each switched on (benchmarks/algorithms.py)", body)


if __name__ == "__main__":
    main()
