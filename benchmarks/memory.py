"""Does functional_rl compiled training leak? Train for N minutes and watch the RSS.

    python -m benchmarks.memory [--minutes 10]

One process, ``torch.set_num_threads(1)``, the CleanRL CartPole config compiled. It loops over
iterations (one ``metrics_to_host`` per iteration, like the shell); when the run's
``total_timesteps`` is used up it rebuilds the kernel with double the total and continues
from the returned state (``build(config, state=state)``; that recompiles, mostly from the
inductor cache, so rebuilds are part of what is measured). RSS (psutil) is sampled every
~10 s. Reports start / end / max RSS and the least-squares slope in MB/min over the samples
after the first minute, and appends the table to benchmarks/RESULTS.md.

"Flat" here means |slope| < 1 MB/min after the first minute (our threshold; no external
reference).
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples")
    args = ap.parse_args()

    import psutil
    import torch

    torch.set_num_threads(1)
    import functional_rl as frl
    from functional_rl.shell.build import build
    from functional_rl.shell.loop import metrics_to_host

    proc = psutil.Process()
    rss = lambda: proc.memory_info().rss / 2**20  # noqa: E731
    t0 = time.perf_counter()
    samples = [(0.0, rss())]
    total = 500_000
    cfg = frl.PPOConfig(total_timesteps=total)
    state, kernel = build(cfg, compile=True)
    rebuilds, iterations, steps, last_ret = 0, 0, 0, float("nan")
    done = int(state.iteration)  # iterations the state has done; tracked on the host, no extra sync
    next_sample = args.interval
    deadline = args.minutes * 60
    while True:
        if done >= cfg.num_iterations:
            total *= 2
            cfg = cfg.replace(total_timesteps=total)
            state, kernel = build(cfg, state=state, compile=True)
            rebuilds += 1
        state, m = frl.train_iteration(state, kernel)
        h = metrics_to_host({"r": m["episode_return"], "n": m["episodes"]})
        if h["n"]:
            last_ret = h["r"]
        iterations += 1
        done += 1
        steps += cfg.batch_size
        now = time.perf_counter() - t0
        if now >= next_sample:
            samples.append((now, rss()))
            next_sample += args.interval
            if len(samples) % 6 == 0:
                print(f"{now / 60:5.1f} min  RSS {samples[-1][1]:.1f} MB  steps {steps:,}  return {last_ret:.0f}", flush=True)
        if now >= deadline:
            break
    samples.append((time.perf_counter() - t0, rss()))

    late = [(t / 60, r) for t, r in samples if t >= 60]
    if len(late) >= 2:
        mt = sum(t for t, _ in late) / len(late)
        mr = sum(r for _, r in late) / len(late)
        slope = sum((t - mt) * (r - mr) for t, r in late) / sum((t - mt) ** 2 for t, _ in late)
    else:
        slope = float("nan")
    after1 = [r for t, r in samples if t >= 60]
    from benchmarks._common import append_results, table

    rows = [[f"{args.minutes:g}", f"{steps:,}", f"{iterations:,}", str(rebuilds), f"{samples[0][1]:.1f}",
             f"{after1[0] if after1 else float('nan'):.1f}", f"{samples[-1][1]:.1f}", f"{max(r for _, r in samples):.1f}",
             f"{slope:+.2f}", "yes" if abs(slope) < 1.0 else "no"]]
    body = table(["minutes", "env steps", "iterations", "kernel rebuilds", "RSS start MB (before build)", "RSS at 1 min MB",
                  "RSS end MB", "RSS max MB", "slope after 1 min (MB/min)", "flat (|slope| < 1 MB/min)"], rows)
    load = os.getloadavg()
    body += (f"\n\nCompiled functional_rl PPO, CleanRL CartPole config, torch.set_num_threads(1); RSS sampled every "
             f"{args.interval:g} s ({len(samples)} samples); last mean episode return {last_ret:.0f}; "
             f"load average at the end {load[0]:.1f} (2 shared cores).\n\nSamples (min, MB): "
             + ", ".join(f"{t / 60:.1f}:{r:.0f}" for t, r in samples))
    print(body)
    append_results(f"memory: RSS over {args.minutes:g} minutes of compiled training", body)


if __name__ == "__main__":
    main()
