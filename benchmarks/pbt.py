"""Population-based training on CartPole: does exploit/explore rescue a population whose
learning rates start log-uniform in [1e-5, 1e-1], and what does a PBT step cost?

Learning (``--seeds``): a population of 8 (default config, 4 envs x 128 steps, compiled
kernel), learning rates drawn log-uniformly from [1e-5, 1e-1] with PBT seed s and member
seeds s*100 + i, trained ``--budget`` env steps per member, with PBT (exploit every 10
iterations, fraction 0.25, perturb x0.8 / x1.2) and without (the same starting values, no
exploit step). Reported per population: the best member's best 10-iteration mean return and
the env steps where it first reached 475 (benchmarks/algorithms.py's measure), and the
median over members of the final 10-iteration mean return.

Speed (``--speed``): 32 members, the time of one exploit/explore step (eager, as
``train_population`` runs it) against one vmapped training iteration.

    python -m benchmarks.pbt [--seeds 0,1,2] [--budget 150000] [--speed]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import functional_rl as frl
import functional_rl.kernel.random as jr
from benchmarks._common import append_results, table
from benchmarks.algorithms import windowed
from functional_rl.kernel.pbt import exploit_explore_learner, parse_space
from functional_rl.shell.population import population_state, train_population

SPACE = {"learning_rate": [1e-5, 1e-1]}


def final_mean(history: list[dict]) -> float:
    curve = windowed(history)
    return curve[-1][1] if curve else math.nan


def learning(seeds: list[int], budget: int) -> str:
    rows = []
    summary = {"with PBT": [], "without": []}
    for s in seeds:
        config = frl.PPOConfig(total_timesteps=budget, seed=100 * s)
        for name, every in (("with PBT", 10), ("without", config.num_iterations)):
            t0 = time.perf_counter()
            result = train_population(config, 8, SPACE, exploit_every=every, seed=s, compile=True)
            wall = time.perf_counter() - t0
            curves = [windowed(h) for h in result.histories]
            bests = [max((r for _, r in c), default=-math.inf) for c in curves]
            firsts = [next((step for step, r in c if r >= 475), None) for c in curves]
            reached = [f for f in firsts if f is not None]
            finals = [final_mean(h) for h in result.histories]
            median = statistics.median([f if math.isfinite(f) else 0.0 for f in finals])
            summary[name].append(median)
            rows.append([name, s, f"{max(bests):.1f}", f"{min(reached):,}" if reached else "not reached", f"{median:.1f}",
                         len(result.lineage), f"{wall:.0f}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    body = table(["population", "seed", "best member: best 10-iteration mean return", "best member: env steps to 475",
                  "median final return over members", "exploit copies", "wall s (incl. compile)"], rows)
    body += (f"\n\nCartPole-v1, 8 members, learning rates log-uniform in [1e-5, 1e-1], {budget:,} env steps per member, "
             "compiled kernel, 1 thread. Median final return, mean over seeds: with PBT "
             f"{statistics.mean(summary['with PBT']):.1f}, without {statistics.mean(summary['without']):.1f}.")
    return body


def speed(population: int = 32, repeats: int = 20) -> str:
    from functional_rl.shell.batched import make_agents_kernel

    config = frl.PPOConfig()
    state = population_state(config, population, SPACE, 10)
    env = frl.envs.make(config.env_id)
    policy = frl.make_mlp_policy(env.observation_space, env.action_space)
    kernel = make_agents_kernel(config, env, policy, compile=True)
    agents = state.agents
    for _ in range(3):  # compile and warm up
        agents, m = frl.train_iteration(agents, kernel)
        float(m["total_loss"].sum())
    t0 = time.perf_counter()
    for _ in range(repeats):
        agents, m = frl.train_iteration(agents, kernel)
        float(m["total_loss"].sum())
    iteration = (time.perf_counter() - t0) / repeats
    space = parse_space(SPACE)
    scores = jr.uniform(jr.key(0), (population,))
    learner = agents.learner
    exploit_explore_learner(jr.key(0), learner, scores, space)
    t0 = time.perf_counter()
    for i in range(repeats):
        learner, source, _ = exploit_explore_learner(jr.key(i), learner, scores, space)
        int(source.sum())
    step = (time.perf_counter() - t0) / repeats
    rows = [[population, f"{iteration * 1e3:.1f}", f"{step * 1e3:.2f}", f"{100 * step / iteration:.2f}%"]]
    body = table(["members", "one iteration (ms)", "one PBT step, eager (ms)", "step / iteration"], rows)
    body += ("\n\nDefault CartPole config (4 envs x 128 steps per member), compiled vmapped kernel, 1 thread; a PBT step "
             "runs once every exploit_every iterations, so its share of the run is this ratio / exploit_every.")
    print(body)
    return body


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=int, default=150_000)
    p.add_argument("--speed", action="store_true", help="only the cost of a PBT step")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.speed:
        append_results("PBT step cost at 32 members (benchmarks/pbt.py --speed)", speed())
        return
    body = learning([int(s) for s in a.seeds.split(",")], a.budget)
    print(body)
    append_results("Population-based training on CartPole (benchmarks/pbt.py)", body)


if __name__ == "__main__":
    main()
