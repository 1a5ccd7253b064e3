"""Data-parallel functional_rl under torchrun: steps/s of 1 vs W processes, side by side.

Every variant is one ``torchrun --standalone`` launch of ``functional_training_loop`` on
CartPole-v1 (CleanRL sizes, ``num_envs`` per process, 1 torch thread per process); the
steps/s is the run's total (all processes) over the iterations after the first two
(compile and settling excluded; rank 0's history). Prints a table with the speed-up of W
processes over one, and the per-update cost of the collectives shows as the gap to W x.

    python -m benchmarks.distributed_sps [--procs 1 2] [--num-envs 8] [--iterations 30] [--eager] [--device cuda]

On this 2-core CPU two processes is the most that can run in parallel; with ``--device cuda``
(one GPU per process, NCCL) the same script measures a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarks._common import append_results, table

CHILD = r"""
import json, os, sys, torch
torch.set_num_threads(1)
import functional_rl as frl
num_envs, iters, compile_, device, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4], sys.argv[5]
world = int(os.environ.get("WORLD_SIZE", "1"))
cfg = frl.PPOConfig(num_envs=num_envs, device=device, total_timesteps=10**9)
state, history = frl.functional_training_loop(cfg, compile=compile_, max_iterations=iters)
if int(os.environ.get("RANK", "0")) == 0:
    steady = history[2:]
    steps = sum(h["agent_step"] - p["agent_step"] for p, h in zip(history[1:], history[2:]))
    secs = sum(h["time_s"] for h in steady)
    json.dump({"sps": steps / secs, "first_s": history[0]["time_s"], "train_s": sum(h["timing/train_s"] for h in steady),
               "rollout_s": sum(h["timing/rollout_s"] for h in steady), "secs": secs}, open(out, "w"))
"""


def run(procs: int, num_envs: int, iters: int, compile_: bool, device: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.json")
        script = os.path.join(d, "child.py")
        with open(script, "w") as f:
            f.write(CHILD)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", script,
               str(num_envs), str(iters), "1" if compile_ else "0", device, out]
        subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        with open(out) as f:
            return json.load(f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--eager", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    results = {p: run(p, args.num_envs, args.iterations, not args.eager, args.device) for p in args.procs}
    base = results[args.procs[0]]["sps"]
    rows = []
    for p, r in results.items():
        rows.append([
            str(p), str(p * args.num_envs), f"{r['sps']:,.0f}", f"{r['sps'] / base:.2f}x",
            f"{r['train_s'] / r['secs']:.0%}", f"{r['first_s']:.1f}",
        ])
    mode = "eager" if args.eager else "compiled"
    body = table(["processes", "envs in all", "env steps/s (all processes)", f"vs {args.procs[0]} process",
                  "update share of time", "first iteration (s)"], rows)
    print(body)
    append_results(f"distributed_sps: {mode}, {args.num_envs} envs per process, {args.device}, torchrun + "
                   f"{'nccl' if args.device.startswith('cuda') else 'gloo'}", body)


if __name__ == "__main__":
    main()
