"""Side-by-side PPO benchmark on CartPole-v1 with CleanRL's hyperparameters, one driver.

    python -m benchmarks.run            # full: throughput + time-to-475 (~10-15 min on 2 cores)
    python -m benchmarks.run --quick    # smoke check: fewer iterations, no time-to-475

Systems (each in its own subprocess, so peak RSS and imports are per system; every torch
system runs with ``torch.set_num_threads(1)``):

- functional_rl eager; functional_rl compiled (one agent);
- functional_rl ``train_many``'s vmapped kernel (``make_agents_kernel`` + ``stack_states``,
  driven like ``train_many``) with 8 / 32 / 128 seeds, compiled, and 32 seeds with the vmapped
  one-call rollout (``scan_rollout=True``); aggregate steps/s = agents x steps / s;
- Stable-Baselines3 PPO (DummyVecEnv of 8, n_steps=128, batch_size=256, n_epochs=4,
  lr linear from 2.5e-4, clip .2, gae .95, ent .01, vf .5, max_grad_norm .5, 64x64 tanh, cpu);
- a plain eager CleanRL-style PyTorch PPO (:mod:`benchmarks.cleanrl_ppo`);
- JAX anchor: rejax PPO (:mod:`benchmarks._rejax_child`), one seed and 32 seeds vmapped in one
  jitted call, if an interpreter with rejax is
  found (this one, or the one named by ``BENCH_JAX_PYTHON``).

Hyperparameters everywhere: 8 envs x 128 steps, 4 epochs x 4 minibatches, lr 2.5e-4 annealed
linearly, gamma .99, lambda .95, clip .2, ent .01, vf .5, max_grad_norm .5, 64x64 tanh MLPs.

Columns:
- steady env steps/s: after ``warmup`` iterations, over a fixed window (quick: ``measure``
  iterations; full, single agent: every remaining iteration of the 500k-step run).
- compile / first iteration: wall time of the first iteration (incl. torch.compile). For
  functional_rl "cold" runs use a fresh empty inductor cache and temp dir
  (``_common.compile_cache_env``: the precompiled headers live in the temp dir), "warm" runs the
  cache that the cold run filled.
- peak RSS: ``ru_maxrss`` of the system's process (inductor's compile worker processes
  are not included).
- time to 475: seconds from the subprocess's spawn (imports and compile included) until the
  mean return of the episodes that ended in the last 10 iterations (episode-weighted)
  first reaches 475, in a run of 500k steps (488 iterations); "final return" is that same
  mean at the end of the run.

Reference numbers for this 2-core machine (/work/shared/DESIGN.md, "Compilation"):
SB3 PPO ~6.4k steps/s; rejax ~145k steps/s single seed, ~190k aggregate over 32 vmapped
seeds, ~5 s compile; a throwaway compiled pure-torch PPO ~40k-63k steps/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ITER_STEPS = 8 * 128
TOTAL = 500_000
SOLVED = 475.0


# ----------------------------------------------------------------------------- child side
class Tracker:
    """Episode-weighted mean return over the episodes that ended in the last 10 iterations."""

    def __init__(self, t_spawn: float):
        self.t_spawn = t_spawn
        self.window: list[tuple[float, float]] = []
        self.t475: float | None = None
        self.iter_end: list[float] = []

    def add(self, ret_sum: float, episodes: float) -> None:
        self.iter_end.append(time.perf_counter())
        self.window.append((ret_sum, episodes))
        del self.window[:-10]
        if self.t475 is None and self.mean() >= SOLVED:
            self.t475 = time.time() - self.t_spawn

    def mean(self) -> float:
        n = sum(e for _, e in self.window)
        return sum(r for r, _ in self.window) / n if n else float("nan")


def _finish(spec: dict, tracker: Tracker, t_start: float, steps_per_iter: int) -> dict:
    import resource

    ends = tracker.iter_end
    w = spec["warmup"]
    last = len(ends) if spec["measure"] is None else min(len(ends), w + spec["measure"])
    out = {
        "first_s": ends[0] - t_start,
        "sps": (last - w) * steps_per_iter / (ends[last - 1] - ends[w - 1]),
        "iterations": len(ends),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "final_return": tracker.mean(),
        "t475": tracker.t475,
    }
    return out


def child_frl(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    import functional_rl as frl
    from functional_rl.shell.build import build
    from functional_rl.shell.loop import metrics_to_host

    tracker = Tracker(spec["t_spawn"])
    # spec["config"]: PPOConfig overrides (benchmarks.default_config); the comparison uses 8 envs.
    cfg = frl.PPOConfig(**{"num_envs": 8, "total_timesteps": TOTAL, **spec.get("config", {})})
    agents = spec.get("agents")
    if spec.get("loop"):  # the library's own loop (functional_training_loop), as a user runs it
        def on_iteration(state, m):
            n = m["episodes"]
            tracker.add(m["episode_return"] * n if n else 0.0, n)

        t_start = time.perf_counter()
        frl.functional_training_loop(cfg, compile=spec["compile"], callbacks=[on_iteration], max_iterations=spec["iters"])
        return _finish(spec, tracker, t_start, cfg.batch_size)
    if not agents:
        state, kernel = build(cfg, compile=spec["compile"])
        t_start = time.perf_counter()
        for _ in range(spec["iters"]):
            state, m = frl.train_iteration(state, kernel)
            h = metrics_to_host({"r": m["episode_return"], "n": m["episodes"]})  # the shell's one sync
            n = h["n"]
            tracker.add(h["r"] * n if n else 0.0, n)
            if spec.get("stop_when_solved") and tracker.t475 is not None:
                break
        return _finish(spec, tracker, t_start, cfg.batch_size)

    from functional_rl.shell.batched import agent_grid, make_agents_kernel, stack_states
    from functional_rl.envs import make

    env = make(cfg.env_id)
    policy = frl.make_mlp_policy(env.observation_space, env.action_space, cfg.hidden_sizes, cfg.activation)
    grid = agent_grid(list(range(1, agents + 1)))
    states = stack_states(cfg, env, policy, grid)
    kernel = make_agents_kernel(cfg, env, policy, compile=spec["compile"], scan_rollout=spec.get("scan", False))
    t_start = time.perf_counter()
    for _ in range(spec["iters"]):
        states, m = frl.train_iteration(states, kernel)
        r, n = torch.stack([m["episode_return"].nan_to_num(0.0) * m["episodes"], m["episodes"]]).sum(-1).tolist()
        tracker.add(r, n)  # all agents' episodes pooled
    return _finish(spec, tracker, t_start, cfg.batch_size * agents)


def child_sb3(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    tracker = Tracker(spec["t_spawn"])

    class CB(BaseCallback):
        def __init__(self):
            super().__init__()
            self.started = False
            self.ret, self.n = 0.0, 0

        def _close_iteration(self) -> None:
            tracker.add(self.ret, self.n)
            self.ret, self.n = 0.0, 0

        def _on_rollout_start(self) -> None:  # the previous iteration (rollout + train) is over
            if self.started:
                self._close_iteration()
            self.started = True

        def _on_training_end(self) -> None:
            self._close_iteration()

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                ep = info.get("episode")
                if ep is not None:
                    self.ret += float(ep["r"])
                    self.n += 1
            return True

    env = make_vec_env("CartPole-v1", n_envs=8, seed=1, vec_env_cls=DummyVecEnv)
    model = PPO(
        "MlpPolicy", env, n_steps=128, batch_size=256, n_epochs=4, learning_rate=lambda f: 2.5e-4 * f,
        gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
        policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh),
        device="cpu", seed=1, verbose=0,
    )
    t_start = time.perf_counter()
    model.learn(total_timesteps=spec["iters"] * ITER_STEPS, callback=CB())
    return _finish(spec, tracker, t_start, ITER_STEPS)


def child_cleanrl(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from benchmarks.cleanrl_ppo import Args, train

    tracker = Tracker(spec["t_spawn"])
    t_start = time.perf_counter()

    def on_iteration(it: int, ended: list[float]) -> bool:
        tracker.add(sum(ended), len(ended))
        return it >= spec["iters"]

    train(Args(total_timesteps=TOTAL), on_iteration)
    return _finish(spec, tracker, t_start, ITER_STEPS)


CHILDREN = {"frl": child_frl, "sb3": child_sb3, "cleanrl": child_cleanrl}


# ----------------------------------------------------------------------------- parent side
def spawn(kind: str, spec: dict, env: dict | None = None, timeout: float = 900) -> dict:
    spec = {**spec, "t_spawn": time.time()}
    if kind == "rejax":
        cmd = [jax_python(), str(Path(__file__).with_name("_rejax_child.py")), json.dumps(spec)]
    else:
        cmd = [sys.executable, "-m", "benchmarks.run", "--child", kind, json.dumps(spec)]
    full_env = {**os.environ, **(env or {})}
    root = str(Path(__file__).resolve().parent.parent)
    full_env["PYTHONPATH"] = root + os.pathsep + full_env.get("PYTHONPATH", "")
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=root, timeout=timeout)
    if p.returncode != 0:
        print(p.stderr[-3000:], file=sys.stderr)
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:120]}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = time.time() - t0
    print(f"  {kind} {json.dumps({k: v for k, v in spec.items() if k != 't_spawn'})} -> "
          + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in out.items()), flush=True)
    return out


def jax_python() -> str | None:
    if importlib.util.find_spec("rejax") is not None:
        return sys.executable
    cand = os.environ.get("BENCH_JAX_PYTHON")
    return cand if cand and Path(cand).exists() else None


def fmt(x, spec="{:,.0f}", none="-"):
    if x is None or (isinstance(x, float) and x != x):
        return none
    return spec.format(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations, no time-to-475")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, spec = args.child
        print(json.dumps(CHILDREN[kind](json.loads(spec))))
        return

    quick = args.quick
    solve_iters = TOTAL // ITER_STEPS  # 488
    W = 3  # warm-up iterations excluded from steady-state steps/s

    def single(measure: int) -> dict:
        # quick: warmup + measure iterations; full: the whole 500k run, steady over all but warm-up
        return {"iters": W + measure, "warmup": W, "measure": measure} if quick else {"iters": solve_iters, "warmup": W, "measure": None}

    cache = tempfile.mkdtemp(prefix="frl_bench_inductor_")
    from benchmarks._common import compile_cache_env

    cold_env = compile_cache_env(cache)
    results: dict[str, dict] = {}
    cold: dict[str, dict] = {}
    t_all = time.time()
    try:
        print("functional_rl eager", flush=True)
        results["frl eager"] = spawn("frl", {"compile": False, **single(10)})
        print("functional_rl compiled, cold inductor cache then warm", flush=True)
        cold["frl compiled"] = spawn("frl", {"compile": True, **single(30)}, cold_env)
        results["frl compiled"] = spawn("frl", {"compile": True, **single(60 if quick else 150)}, cold_env)
        print("functional_rl compiled through functional_training_loop, warm cache", flush=True)
        results["frl compiled, functional_training_loop"] = spawn("frl", {"compile": True, "loop": True, **single(60 if quick else 150)}, cold_env)
        for a, meas in ((8, 30), (32, 12), (128, 4)):
            if quick:
                meas = max(2, meas // 3)
            name = f"frl train_many {a} seeds"
            print(f"functional_rl train_many {a} seeds, cold then warm", flush=True)
            cold[name] = spawn("frl", {"compile": True, "agents": a, "iters": 2, "warmup": 1, "measure": 1}, cold_env)
            results[name] = spawn("frl", {"compile": True, "agents": a, "iters": 2 + meas, "warmup": 2, "measure": meas}, cold_env)
            if a == 32:  # the same with the vmapped one-call rollout (make_agents_kernel(scan_rollout=True))
                name = "frl train_many 32 seeds, one-call rollout"
                print(f"functional_rl {name}, cold then warm", flush=True)
                scan = {"compile": True, "agents": a, "scan": True}
                cold[name] = spawn("frl", {**scan, "iters": 2, "warmup": 1, "measure": 1}, cold_env)
                results[name] = spawn("frl", {**scan, "iters": 2 + meas, "warmup": 2, "measure": meas}, cold_env)
        print("Stable-Baselines3", flush=True)
        results["SB3 PPO"] = spawn("sb3", single(10))
        print("CleanRL-style eager PyTorch", flush=True)
        results["CleanRL-style torch (eager)"] = spawn("cleanrl", single(10))
        jp = jax_python()
        if jp is None:
            results["rejax (JAX)"] = {"error": "not measured: no interpreter with rejax (set BENCH_JAX_PYTHON)"}
        else:
            print(f"rejax via {jp}", flush=True)
            spec = {"mode": "throughput" if quick else "solve", "total": TOTAL, "throughput_total": (100 if quick else 488) * ITER_STEPS}
            results["rejax (JAX)"] = spawn("rejax", spec)
            print(f"rejax 32 seeds (jax.vmap of the jitted training) via {jp}", flush=True)
            results["rejax (JAX) 32 seeds"] = spawn("rejax", {"mode": "throughput", "seeds": 32, "throughput_total": (12 if quick else 30) * ITER_STEPS})
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    sb3 = results["SB3 PPO"].get("sps")
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append([name, r["error"], "-", "-", "-", "-", "-", "-"])
            continue
        c = cold.get(name, {})
        compile_col = (f"{fmt(c.get('first_s'), '{:.1f}')} / {fmt(r['first_s'], '{:.1f}')}" if c
                       else fmt(r["first_s"], "{:.1f}"))
        solve = "-" if quick or "seeds" in name else (fmt(r.get("t475"), "{:.1f}", "not reached"))
        if name == "frl compiled" and not quick:
            solve = f"{fmt(c.get('t475'), '{:.1f}', 'not reached')} / {solve}"
        final = "-" if quick or "seeds" in name else fmt(r.get("final_return"), "{:.1f}")
        rows.append([name, fmt(r["sps"]), fmt(r["sps"] / sb3, "{:.1f}x") if sb3 else "-", compile_col,
                     fmt(r["rss_mb"], "{:.0f}"), solve, final])
    from benchmarks._common import append_results, table

    headers = ["system (CartPole-v1, 8 envs x 128 steps)", "steady env steps/s (aggregate)", "vs SB3",
               "first iteration incl. compile, s (cold / warm cache)", "peak RSS MB",
               "time to mean return 475, s from spawn (cold / warm)", "final return (500k steps)"]
    body = table(headers, rows)
    single_sps = results["frl compiled"].get("sps")
    notes = [
        "",
        f"torch.set_num_threads(1) in every torch system. {'Quick mode: short windows, no time-to-475.' if quick else 'Full mode: steady steps/s over iterations 4..488 of the 500k-step run for single-agent systems.'}",
        f"train_many rows: {', '.join(f'{a} seeds' for a in (8, 32, 128))}, aggregate steps/s = agents x 1024 / s per iteration over a few iterations after 2 warm-up ones.",
        "rejax: constant lr (no annealing in rejax), return = its own 16-episode evaluation every 10 iterations, time to 475 interpolated within the jitted run; compile column = XLA compile of the whole run.",
        f"Whole benchmark took {time.time() - t_all:.0f} s; load average at the end {os.getloadavg()[0]:.1f} / {os.getloadavg()[1]:.1f} / {os.getloadavg()[2]:.1f} on 2 cores shared with other work.",
    ]
    rj, rj32, many = results.get("rejax (JAX)", {}), results.get("rejax (JAX) 32 seeds", {}), results.get("frl train_many 32 seeds", {})
    ratios = []
    loop_sps = results.get("frl compiled, functional_training_loop", {}).get("sps")
    if single_sps and rj.get("sps"):
        ratios.append(f"compiled single agent {single_sps / rj['sps']:.2f}x rejax's single seed"
                      + (f" ({loop_sps / rj['sps']:.2f}x through functional_training_loop)" if loop_sps else "") + " (target >= 0.5x)")
    best = max(many.get("sps") or 0, results.get("frl train_many 32 seeds, one-call rollout", {}).get("sps") or 0)
    if best and rj32.get("sps"):
        ratios.append(f"32 vmapped seeds {best / rj32['sps']:.2f}x rejax's 32 vmapped seeds (target >= 0.5x)")
    if best and single_sps:
        ratios.append(f"32 seeds aggregate {best / single_sps:.1f}x one compiled agent (target >= 3x)")
    warm475, cold475 = results["frl compiled"].get("t475"), cold.get("frl compiled", {}).get("t475")
    if warm475 and rj.get("t475"):
        ratios.append(f"time to 475 warm {warm475 / rj['t475']:.2f}x rejax's (target <= 2x)")
    if cold475:
        ratios.append(f"time to 475 cold {cold475:.0f} s (target <= 30 s)")
    if ratios:
        notes.append("Targets: " + "; ".join(ratios) + ".")
    body += "\n" + "\n".join(notes)
    print(body)
    append_results(f"run: PPO side by side{' (--quick)' if quick else ''}", body)


if __name__ == "__main__":
    main()
