"""Where does one compiled functional_rl iteration spend its time? (torch.profiler + cProfile)

    python -m benchmarks.profile_iteration [--agents 1] [--eager]

Builds the CleanRL CartPole config (compiled unless --eager; with --agents N the vmapped
``make_agents_kernel``), runs 3 warm-up iterations, then profiles 5 iterations with
torch.profiler (top ops by self CPU time) and 5 with cProfile (top functions by cumulative
time), and prints a split: rollout steps vs updates vs the rest, timed by wrapping the
kernel's two step functions. ``torch.set_num_threads(1)``. Prints only; no RESULTS.md entry.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import pstats
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=1)
    ap.add_argument("--eager", action="store_true")
    ap.add_argument("--envs", type=int, default=None, help="num_envs (default: the default config's)")
    ap.add_argument("--iterations", type=int, default=5)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import functional_rl as frl
    from functional_rl.shell.build import build
    from functional_rl.shell.loop import metrics_to_host

    cfg = frl.PPOConfig() if args.envs is None else frl.PPOConfig(num_envs=args.envs)
    if args.agents == 1:
        state, kernel = build(cfg, compile=not args.eager)
    else:
        from functional_rl.shell.batched import agent_grid, make_agents_kernel, stack_states
        from functional_rl.envs import make

        env = make(cfg.env_id)
        policy = frl.make_mlp_policy(env.observation_space, env.action_space)
        state = stack_states(cfg, env, policy, agent_grid(list(range(args.agents))))
        kernel = make_agents_kernel(cfg, env, policy, compile=not args.eager)

    def sync(m):
        torch.stack([v.detach().to(torch.float64).reshape(-1)[:1] for v in m.values()]).tolist()

    t0 = time.perf_counter()
    for _ in range(3):
        state, m = frl.train_iteration(state, kernel)
        sync(m)
    print(f"warm-up (3 iterations incl. compile): {time.perf_counter() - t0:.1f} s")

    # split: time spent inside the two step functions vs the glue around them
    spent = {"rollout": 0.0, "update": 0.0}
    calls = {"rollout": 0, "update": 0}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            spent[name] += time.perf_counter() - t
            calls[name] += 1
            return out
        return wrapper

    tk = dataclasses.replace(kernel, rollout=timed("rollout", kernel.rollout), update=timed("update", kernel.update))
    t0 = time.perf_counter()
    for _ in range(args.iterations):
        state, m = frl.train_iteration(state, tk)
        sync(m)
    total = time.perf_counter() - t0
    steps = args.iterations * cfg.batch_size * args.agents
    print(f"{args.iterations} iterations: {total:.3f} s, {steps / total:,.0f} env steps/s")
    for name in spent:
        print(f"  {name}: {spent[name]:.3f} s ({100 * spent[name] / total:.0f}%), {calls[name]} calls, "
              f"{1e6 * spent[name] / max(calls[name], 1):.0f} us/call")
    rest = total - sum(spent.values())
    print(f"  rest (GAE, batching, shuffles, metrics, sync): {rest:.3f} s ({100 * rest / total:.0f}%)")

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.iterations):
            state, m = frl.train_iteration(state, kernel)
            sync(m)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

    pr = cProfile.Profile()
    pr.enable()
    for _ in range(args.iterations):
        state, m = frl.train_iteration(state, kernel)
        sync(m)
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(30)
    print(s.getvalue())


if __name__ == "__main__":
    main()
