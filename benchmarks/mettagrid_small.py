"""Learning on mettagrid/small: random-action reward per agent, a training curve (mean episode
reward per agent against wall time), the two token encoders at equal wall time, and agent-steps/s
of the whole training loop next to random-action stepping through the adapter and through
mettagrid's own PettingZoo env.

    nice -n 5 python -m benchmarks.mettagrid_small --seconds 600 --compare-seconds 90

Writes docs/mettagrid_small.png and appends a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import functional_rl as frl
import functional_rl.kernel.random as jr
from benchmarks._common import append_results, table
from functional_rl.envs import make
from functional_rl.kernel.iteration import train_iteration
from functional_rl.shell.build import build

ROOT = Path(__file__).resolve().parents[1]


def config(policy: str, seed: int = 0) -> frl.PPOConfig:
    """The training config of the curve: 16 copies x 4 agents = 64 rows, 32-step rollouts (an
    episode of 64 steps ends every other iteration), lr 2e-3 (constant), gamma 0.95."""
    return frl.PPOConfig(env_id="mettagrid/small", num_envs=64, num_steps=32, num_minibatches=2, update_epochs=4,
                         learning_rate=2e-3, gamma=0.95, ent_coef=0.01, policy=policy, hidden_sizes=(128,),
                         total_timesteps=10**9, seed=seed)


def random_reward(episodes: int = 64) -> tuple[float, float, float]:
    """(mean episode reward per agent under random actions, agent-steps/s through the adapter,
    agent-steps/s through mettagrid's own env)."""
    env = make("mettagrid/small", num_envs=16)
    A, B = env.num_agents, env.num_envs
    _, state = env.reset(jr.key(0), None, B)
    total, ended, steps = 0.0, 0, 0
    t0 = time.perf_counter()
    while ended < episodes * A:
        action = jr.randint(jr.key(steps + 1), (B,), 0, env.action_space.n)
        out = env.step(jr.key(steps + 1), state, action, None)
        total += float(out.reward.sum())
        ended += int((out.terminated | out.truncated).sum())
        steps += 1
    adapter_sps = steps * B / (time.perf_counter() - t0)
    native = env._envs[0]
    rng = np.random.default_rng(0)
    native.reset(seed=0)
    n, t0 = 0, time.perf_counter()
    while n < steps * B:
        if not native.agents:
            native.reset()
        native.step({a: int(rng.integers(5)) for a in native.agents})
        n += A
    native_sps = n / (time.perf_counter() - t0)
    return total / ended, adapter_sps, native_sps


def train(policy: str, seconds: float, seed: int = 0) -> tuple[list[tuple[float, float]], float]:
    """A run of ``seconds`` wall time: ([(wall s, mean episode reward per agent)], agent-steps/s)."""
    cfg = config(policy, seed)
    state, kernel = build(cfg, env=make("mettagrid/small"), compile=False)
    curve, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        state, metrics = train_iteration(state, kernel)
        if np.isfinite(float(metrics["episode_return"])):  # NaN: no episode ended in this iteration
            curve.append((time.perf_counter() - t0, float(metrics["episode_return"])))
    return curve, int(state.agent_step) / (time.perf_counter() - t0)


def smooth(curve, k=5):
    v = np.array([r for _, r in curve])
    return np.convolve(v, np.ones(k) / k, mode="valid") if len(v) >= k else v


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600.0, help="wall time of the training curve")
    p.add_argument("--compare-seconds", type=float, default=90.0, help="wall time of each encoder in the comparison")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rand, adapter_sps, native_sps = random_reward()
    print(f"random: {rand:.2f} per agent per episode; stepping {adapter_sps:,.0f} agent-steps/s (adapter), {native_sps:,.0f} (native)")
    compare = {}
    for policy in ("token", "token_pool"):
        curve, sps = train(policy, args.compare_seconds)
        compare[policy] = (float(np.mean([r for _, r in curve[-5:]])), sps)
        print(policy, compare[policy])
    curve, loop_sps = train("token", args.seconds)

    def first_time(factor):
        s = smooth(curve)
        hit = np.flatnonzero(s >= factor * rand)
        return f"{curve[hit[0] + 4][0]:.0f}" if len(hit) else "not reached"

    final = float(np.mean([r for _, r in curve[-5:]]))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([t for t, _ in curve], [r for _, r in curve], lw=0.8, alpha=0.4, color="C0")
    ax.plot([t for t, _ in curve[4:]], smooth(curve), color="C0", label="PPO, token grid encoder")
    ax.axhline(rand, color="gray", ls="--", label=f"random actions ({rand:.1f})")
    ax.axhline(3 * rand, color="gray", ls=":", label="3x random")
    ax.set_xlabel("wall time (s), 1 CPU thread")
    ax.set_ylabel("episode reward per agent")
    ax.set_title("mettagrid/small: 4 agents, shared policy, 16 copies")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "mettagrid_small.png", dpi=110)
    rows = [
        ["random actions", f"{rand:.2f}", "", "", f"{adapter_sps:,.0f} (adapter) / {native_sps:,.0f} (mettagrid env)"],
        ["PPO token grid", f"{final:.2f}", first_time(3), first_time(10), f"{loop_sps:,.0f} (whole training loop)"],
    ]
    body = table(["policy", "episode reward per agent (last 5 points)", "s to 3x random", "s to 10x random", "agent-steps/s"], rows)
    body += "\n\nEncoders at equal wall time " + f"({args.compare_seconds:.0f} s each, same config):\n\n" + table(
        ["encoder", "reward per agent (last 5 points)", "agent-steps/s"],
        [[k, f"{r:.2f}", f"{s:,.0f}"] for k, (r, s) in compare.items()])
    body += (f"\n\nmettagrid/small (9x9 room, 4 agents, 6 heart sources, 64-step episodes), 16 copies x 4 agents = 64 rows, "
             f"32-step rollouts, 2 minibatches x 4 epochs, lr 2e-3, gamma 0.95, eager (no compile), {args.threads} torch thread; "
             f"training curve {args.seconds:.0f} s. Run under `nice -n 5` on a machine shared with other jobs: "
             "absolute rates are noisy, the ratios were measured in the same run.")
    print(body)
    append_results("Learning on mettagrid/small (benchmarks/mettagrid_small.py)", body)


if __name__ == "__main__":
    main()
