"""Eager vs compiled functional_rl PPO on CartPole-v1 (CleanRL defaults): steps/s and compile time.

Each variant runs in its own subprocess; "cold" compiles use an empty inductor cache
directory, "warm" ones the cache the cold run left. Prints a table and appends it to
benchmarks/RESULTS.md.

    python -m benchmarks.cartpole_sps [--iterations 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarks._common import append_results, compile_cache_env, table

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
import functional_rl as frl
from functional_rl.shell.build import build
from functional_rl.shell.loop import metrics_to_host
compile_ = sys.argv[1] == "1"; iters = int(sys.argv[2])
cfg = frl.PPOConfig()
state, kernel = build(cfg, compile=compile_)
t0 = time.perf_counter()
state, m = frl.train_iteration(state, kernel); metrics_to_host(m)
first = time.perf_counter() - t0
state, m = frl.train_iteration(state, kernel); metrics_to_host(m)  # settle
t0 = time.perf_counter()
for _ in range(iters):
    state, m = frl.train_iteration(state, kernel)
    metrics_to_host(m)  # the shell's one sync per iteration
dt = time.perf_counter() - t0
print(json.dumps({"first_s": first, "sps": iters * cfg.batch_size / dt}))
"""


def run(compile_: bool, iters: int, cache_dir: str) -> dict:
    env = {**os.environ, **compile_cache_env(cache_dir)}
    out = subprocess.run([sys.executable, "-c", CHILD, "1" if compile_ else "0", str(iters)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        eager = run(False, max(10, args.iterations // 4), cache)
        cold = run(True, args.iterations, cache)
        warm = run(True, args.iterations, cache)
    rows = [
        ["eager", f"{eager['sps']:,.0f}", "1.00x", "-"],
        ["compiled (cold cache)", f"{cold['sps']:,.0f}", f"{cold['sps'] / eager['sps']:.2f}x", f"{cold['first_s']:.1f}"],
        ["compiled (warm cache)", f"{warm['sps']:,.0f}", f"{warm['sps'] / eager['sps']:.2f}x", f"{warm['first_s']:.1f}"],
    ]
    body = table(["variant (8 envs x 128 steps)", "env steps/s", "vs eager", "first iteration incl. compile (s)"], rows)
    print(body)
    append_results("cartpole_sps: eager vs compiled, CleanRL CartPole config", body)


if __name__ == "__main__":
    main()
