"""How to compile the kernel: per-step calls or the one-call rollout, with inductor's Python or
C++ wrapper. First-iteration time (cold and warm inductor cache), where the compile time goes,
and steady steps/s side by side.

Variants (default PPOConfig, CartPole-v1, 1 thread):

- ``step``: ``rollout_step`` and the minibatch update compiled, the rollout a Python loop of
  ``num_steps`` calls (``scan_rollout=False``; inductor's Python wrapper);
- ``step+cpp``: the same with ``cpp_wrapper=True`` for both functions;
- ``scan, inductor defaults``: the rollout as one compiled call and the update, both with the
  C++ wrapper and otherwise inductor's default options (``realize_opcount_threshold`` unset:
  50 on the CPU);
- ``scan (default)``: what ``build`` compiles by default on the CPU: the one-call rollout with
  ``shell.build.ROLLOUT_OPTIONS`` and the update with ``UPDATE_OPTIONS``.

Tried and dropped: ``cpp_wrapper_build_separate=True`` (inductor builds the C++ wrapper's entry
apart from the kernels) compiled no faster cold (309 s against 290 s, both on one busy core).

Each variant's first iteration runs in a fresh process with an empty inductor cache (cold),
then in another fresh process on the cache it left (warm). The compile time is split with
``torch._dynamo.utils.compilation_time_metrics``: dynamo's bytecode tracing, AOT autograd
(tracing the functional graph), inductor's whole compile (``fx_codegen_and_compile``:
lowering, scheduling, code generation, and the C++ compiler and module loading it waits
for), and of that the C++ compiler (``compile_file``, summed over its calls, some of them in
worker processes) and loading the compiled modules. Steady steps/s of all variants are then measured in ONE process
(warm caches), alternating blocks of ``--per`` iterations for ``--rounds`` rounds; the table
gives the median of the per-round ratios to ``step`` (the machine's speed drifts between
processes by up to 1.4x, so separate-process steps/s are not compared).

    python -m benchmarks.compile_modes [--rounds 15] [--per 3] [--variants 'step;scan (default)']
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks._common import append_results, compile_cache_env, table

VARIANTS = {
    "step": {"scan_rollout": False, "options": None},
    "step+cpp": {"scan_rollout": False, "options": {"cpp_wrapper": True}},
    "scan, inductor defaults": {"scan_rollout": True, "options": {"cpp_wrapper": True, "realize_opcount_threshold": None}},
    "scan (default)": {"scan_rollout": None, "options": None},
}

COMMON = r"""
import json, sys, time, torch
torch.set_num_threads(1)
import functional_rl as frl
from functional_rl.shell.build import build
from functional_rl.shell.loop import metrics_to_host
VARIANTS = json.loads(sys.argv[1])

def make(name, state=None):
    v = VARIANTS[name]
    opts = {"options": v["options"]} if v["options"] else None
    return build(frl.PPOConfig(), state=state, compile=True, compile_options=opts, scan_rollout=v["scan_rollout"])

def iterate(state, kernel, n):
    for _ in range(n):
        state, m = frl.train_iteration(state, kernel)
        metrics_to_host(m)
    return state
"""

FIRST = COMMON + r"""
from torch._dynamo.utils import compilation_time_metrics as ctm
t0 = time.perf_counter()
state, kernel = make(sys.argv[2])
iterate(state, kernel, 1)
first = time.perf_counter() - t0
s = lambda name: sum(ctm.get(name, []))
print(json.dumps({
    "first_s": first, "compile_s": s("_compile.compile_inner"), "dynamo_s": s("bytecode_tracing"),
    "aot_s": s("create_aot_dispatcher_function") - s("compile_fx.<locals>.fw_compiler_base"),
    "inductor_s": s("fx_codegen_and_compile"),
    "cxx_s": s("compile_file"), "cxx_calls": len(ctm.get("compile_file", [])),
    "wait_s": s("async_compile.wait"), "load_s": s("PyCodeCache.load_by_key_path"),
}))
"""

STEADY = COMMON + r"""
names, rounds, per = sys.argv[2].split(";"), int(sys.argv[3]), int(sys.argv[4])
cfg = frl.PPOConfig()
runs = {}
for name in names:
    state, kernel = make(name)
    runs[name] = [iterate(state, kernel, 2), kernel]
sps = {name: [] for name in names}
for r in range(rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
        state, kernel = runs[name]
        t0 = time.perf_counter()
        runs[name][0] = iterate(state, kernel, per)
        sps[name].append(per * cfg.batch_size / (time.perf_counter() - t0))
print(json.dumps(sps))
"""


def child(code: str, cache_dir: str, *args: str) -> dict:
    env = {**os.environ, **compile_cache_env(cache_dir)}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(VARIANTS), *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({args}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per", type=int, default=3, help="iterations per block")
    ap.add_argument("--variants", default=";".join(VARIANTS), help="names separated by ';'")
    args = ap.parse_args()
    names = args.variants.split(";")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or "step" not in names:
        raise SystemExit(f"--variants must include 'step' and name only {', '.join(VARIANTS)}; got {args.variants!r}")
    started = time.perf_counter()
    first: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as root:
        caches = {n: os.path.join(root, f"v{i}") for i, n in enumerate(names)}
        for name in names:
            first[name] = {"cold": child(FIRST, caches[name], name)}
            first[name]["warm"] = child(FIRST, caches[name], name)
            print(name, json.dumps(first[name]), flush=True)
        # One cache holding every variant's graphs for the side-by-side process (the entries
        # are files named by their keys, so the caches merge by copying).
        shared = os.path.join(root, "shared")
        for name in names:
            shutil.copytree(caches[name], shared, dirs_exist_ok=True)
        sps = child(STEADY, shared, ";".join(names), str(args.rounds), str(args.per))
    rows = []
    for name in names:
        c, w = first[name]["cold"], first[name]["warm"]
        ratios = [a / b for a, b in zip(sps[name], sps["step"])]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        rows.append([
            name, f"{c['first_s']:.1f}", f"{w['first_s']:.1f}",
            f"{c['dynamo_s']:.1f} / {c['aot_s']:.1f} / {c['inductor_s']:.1f}, of which {c['cxx_s']:.1f} ({c['cxx_calls']}) and {c['load_s']:.1f}",
            f"{statistics.median(sps[name]):,.0f}", f"{statistics.median(ratios):.2f}x ({q[0]:.2f}-{q[2]:.2f})",
        ])
    body = table(
        ["variant", "first iteration, cold cache (s)", "first iteration, warm cache (s)",
         "cold compile: dynamo / AOT autograd / inductor, of which C++ compiler (calls) and module load (s)",
         "steady steps/s (median block)", "vs step, median of round ratios (quartiles)"], rows)
    body += (f"\n\n{args.rounds} rounds of {args.per} iterations per variant in one process; the C++ compiler's seconds are summed"
             f" over its calls, which overlap when the compile workers run in parallel. Whole benchmark took"
             f" {time.perf_counter() - started:.0f} s.")
    print(body)
    append_results("compile_modes: per-step vs one-call rollout, Python vs C++ wrapper", body)


if __name__ == "__main__":
    main()
