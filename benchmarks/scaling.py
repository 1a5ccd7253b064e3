"""functional_rl compiled PPO throughput as the batch grows: envs per agent, and vmapped agents.

    python -m benchmarks.scaling [--quick]

Two curves, each point in its own subprocess (``torch.set_num_threads(1)``, compiled with
``fullgraph=True, dynamic=False``, the default inductor cache):

- one agent, num_envs in (8, 64, 512, 4096); num_steps 128, 128, 32, 16 (so the big batches
  stay a few hundred ms per iteration), 4 minibatches, 4 epochs, CleanRL hyperparameters;
- 8 envs x 128 steps per agent, vmapped over 1, 8, 32, 128 seeds (``make_agents_kernel``,
  what ``train_many`` runs); aggregate steps/s = agents x 1024 / s.

Steps/s is measured after 2 warm-up iterations over a fixed window of iterations; the table
also gives the first iteration's time (incl. compile). Draws benchmarks/scaling.png and
appends the table to benchmarks/RESULTS.md.

Reference (/work/shared/DESIGN.md, "Compilation", same 2-core machine, a throwaway pure-torch
PPO): 64 / 512 envs 157k / 200k steps/s; vmap over 8 / 32 / 128 agents 106k / 149k / 177k
total; rejax (JAX) ~145k single seed, ~190k aggregate over 32 seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ENV_POINTS = [(8, 128, 60), (64, 128, 12), (512, 32, 8), (4096, 16, 4)]  # (num_envs, num_steps, measured iterations)
SEED_POINTS = [(1, 60), (8, 20), (32, 8), (128, 3)]  # (agents, measured iterations)
WARMUP = 2


def child(spec: dict) -> dict:
    import resource

    import torch

    torch.set_num_threads(1)
    import functional_rl as frl
    from functional_rl.shell.build import build
    from functional_rl.shell.loop import metrics_to_host

    cfg = frl.PPOConfig(num_envs=spec["num_envs"], num_steps=spec["num_steps"], total_timesteps=10_000_000)
    agents = spec["agents"]
    if agents == 1:
        state, kernel = build(cfg, compile=True)

        def sync(m):
            metrics_to_host(m)
    else:
        from functional_rl.shell.batched import agent_grid, make_agents_kernel, stack_states
        from functional_rl.envs import make

        env = make(cfg.env_id)
        policy = frl.make_mlp_policy(env.observation_space, env.action_space, cfg.hidden_sizes, cfg.activation)
        grid = agent_grid(list(range(1, agents + 1)))
        state = stack_states(cfg, env, policy, grid)
        kernel = make_agents_kernel(cfg, env, policy, compile=True)

        def sync(m):
            torch.stack([v.to(torch.float64).expand(agents) for v in m.values()]).tolist()

    t0 = time.perf_counter()
    ends = []
    for _ in range(WARMUP + spec["measure"]):
        state, m = frl.train_iteration(state, kernel)
        sync(m)
        ends.append(time.perf_counter())
    steps = cfg.batch_size * agents
    return {
        "first_s": ends[0] - t0,
        "sps": spec["measure"] * steps / (ends[-1] - ends[WARMUP - 1]),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def spawn(spec: dict) -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--child", json.dumps(spec)],
                       capture_output=True, text=True, env=env, cwd=root, timeout=900)
    if p.returncode != 0:
        print(p.stderr[-3000:], file=sys.stderr)
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:100]}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"  {spec} -> {out}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a third of the measured iterations")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    div = 3 if args.quick else 1
    t_all = time.time()
    env_rows, seed_rows = [], []
    for n, t, meas in ENV_POINTS:
        r = spawn({"num_envs": n, "num_steps": t, "agents": 1, "measure": max(2, meas // div)})
        env_rows.append((n, t, r))
    for a, meas in SEED_POINTS:
        r = spawn({"num_envs": 8, "num_steps": 128, "agents": a, "measure": max(2, meas // div)})
        seed_rows.append((a, r))

    from benchmarks._common import append_results, table

    def cells(r):
        if "error" in r:
            return [r["error"], "-", "-"]
        return [f"{r['sps']:,.0f}", f"{r['first_s']:.1f}", f"{r['rss_mb']:.0f}"]

    rows = [[f"1 agent, {n} envs x {t} steps", *cells(r)] for n, t, r in env_rows]
    rows += [[f"{a} agents (vmapped), 8 envs x 128 steps each" if a > 1 else "1 agent (plain kernel, no vmap), 8 envs x 128 steps",
              *cells(r)] for a, r in seed_rows]
    body = table(["configuration (compiled)", "env steps/s (aggregate)", "first iteration incl. compile (s)", "peak RSS MB"], rows)
    load = os.getloadavg()
    body += (f"\n\ntorch.set_num_threads(1); default inductor cache; 2 warm-up iterations, then a fixed window "
             f"(60/12/8/4 iterations over envs, 60/20/8/3 over agents{', divided by 3 (--quick)' if args.quick else ''}). "
             f"Load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (2 cores, shared). "
             f"Took {time.time() - t_all:.0f} s. Plot: benchmarks/scaling.png.")
    print(body)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    pts = [(n, r["sps"]) for n, _, r in env_rows if "sps" in r]
    axes[0].plot([p[0] for p in pts], [p[1] for p in pts], "o-")
    axes[0].set(xscale="log", xlabel="num_envs (one agent)", ylabel="env steps/s", title="functional_rl compiled: envs")
    pts = [(a, r["sps"]) for a, r in seed_rows if "sps" in r]
    axes[1].plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="C1")
    axes[1].set(xscale="log", xlabel="vmapped agents (8 envs each)", ylabel="aggregate env steps/s", title="functional_rl compiled: agents")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(Path(__file__).with_name("scaling.png"), dpi=100)
    append_results(f"scaling: functional_rl compiled steps/s over envs and vmapped agents{' (--quick)' if args.quick else ''}", body)


if __name__ == "__main__":
    main()
