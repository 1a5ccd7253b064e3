"""MLP vs LSTM vs GRU vs CNN: compile time and steps/s of each policy on its env, side by side.

One config for all (16 envs x 32 steps, 4 minibatches, 4 epochs, 1 thread): the MLP on
CartPole-v1, the LSTM and the GRU (encoder 64, core 64) on CartPoleNoVelocity-v1, the
``simple_cnn`` (dense 64) on Catch-v0. Each policy runs in a fresh process with an empty
inductor cache: the first compiled iteration (cold compile) is timed, then ``--iters``
compiled iterations, then the same number eagerly; the rollout and the update are timed
apart (the recurrent update runs eagerly even when compiling, see ``shell.build.make_kernel``).
Steps/s are reported with their ratio to the MLP's in the same run.

    python -m benchmarks.policies [--iters 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarks._common import append_results, compile_cache_env, table

CASES = {
    "mlp": ("CartPole-v1", (64, 64)),
    "lstm": ("CartPoleNoVelocity-v1", (64, 64)),
    "gru": ("CartPoleNoVelocity-v1", (64, 64)),
    "simple_cnn": ("Catch-v0", (64,)),
}

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
import functional_rl as frl
from functional_rl.shell.build import build
from functional_rl.kernel.iteration import train_on_trajectory
policy, env_id, hidden, iters = sys.argv[1], sys.argv[2], tuple(json.loads(sys.argv[3])), int(sys.argv[4])
cfg = frl.PPOConfig(env_id=env_id, policy=policy, hidden_sizes=hidden, num_envs=16, num_steps=32, num_minibatches=4,
                    update_epochs=4, learning_rate=1e-3)
out = {}
for compiled in (True, False):
    state, kernel = build(cfg, compile=compiled)
    t = time.perf_counter()
    state, m = frl.train_iteration(state, kernel)
    float(m["total_loss"])
    if compiled:
        out["first_iteration_s"] = time.perf_counter() - t
    roll = upd = 0.0
    for _ in range(iters):
        t0 = time.perf_counter()
        state, traj = kernel.rollout(state)
        float(traj["reward"].sum())
        t1 = time.perf_counter()
        state, batch, m = train_on_trajectory(state, traj, kernel)
        float(m["total_loss"])
        roll, upd = roll + t1 - t0, upd + time.perf_counter() - t1
    tag = "compiled" if compiled else "eager"
    steps = iters * cfg.num_envs * cfg.num_steps
    out[tag] = {"sps": steps / (roll + upd), "rollout_ms": 1e3 * roll / iters, "update_ms": 1e3 * upd / iters}
print("RESULT " + json.dumps(out))
"""


def run_case(policy: str, iters: int) -> dict:
    env_id, hidden = CASES[policy]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, **compile_cache_env(cache), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-c", CHILD, policy, env_id, json.dumps(hidden), str(iters)],
                              env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"{policy}: {proc.stderr[-2000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--policies", default=",".join(CASES))
    a = p.parse_args()
    results = {name: run_case(name, a.iters) for name in a.policies.split(",")}
    base = results.get("mlp")
    rows = []
    for name, r in results.items():
        c, e = r["compiled"], r["eager"]
        ratio = f"{c['sps'] / base['compiled']['sps']:.2f}x" if base else "-"
        rows.append([name, CASES[name][0], f"{r['first_iteration_s']:.0f}", f"{c['sps']:,.0f}", ratio,
                     f"{c['rollout_ms']:.0f} / {c['update_ms']:.0f}", f"{e['sps']:,.0f}", f"{e['rollout_ms']:.0f} / {e['update_ms']:.0f}"])
    body = table(["policy", "env", "first compiled iteration, cold (s)", "compiled steps/s", "vs mlp",
                  "compiled rollout / update (ms per iteration)", "eager steps/s", "eager rollout / update (ms)"], rows)
    body += ("\n\n16 envs x 32 steps, 4 minibatches x 4 epochs per iteration; one fresh process per policy with an empty "
             "inductor cache. The recurrent policies' update runs eagerly under compile too (it replays 32-step sequences; "
             "torch 2.13 cannot differentiate a scan under torch.func.grad), so their compiled column speeds up the rollout only.")
    print(body)
    append_results("Policies: MLP vs LSTM vs GRU vs CNN (benchmarks/policies.py)", body)


if __name__ == "__main__":
    main()
