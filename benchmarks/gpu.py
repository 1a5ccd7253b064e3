"""functional_rl PPO on one GPU: env steps/s of CartPole-v1 eager, compiled, and compiled with CUDA graphs.

    python -m benchmarks.gpu                  # on a CUDA machine: the full table, about 6 minutes
    python -m benchmarks.gpu --quick          # shorter windows and budget, about 4 minutes
    python -m benchmarks.gpu --device cpu --quick --no-write --envs 8,16 --eager-only   # dry run, no GPU

What it measures: the built-in pure CartPole-v1, ``PPOConfig(device=..., num_envs=N,
num_steps=T)`` with CleanRL's other hyperparameters, for N x T = 8 x 128, 512 x 32 and
4096 x 16 (the points of ``benchmarks/scaling.py``), each in three modes:

- ``eager``: ``build(cfg, compile=False)``;
- ``compiled``: ``build(cfg, compile=True)`` (``fullgraph=True, dynamic=False``; on a GPU the
  rollout is a Python loop of compiled steps);
- ``compiled, CUDA graphs``: ``build(cfg, compile=True, compile_options={"mode": "reduce-overhead"})``,
  inductor's CUDA graphs on top of the compiled functions.

Each row runs in its own process (a failed CUDA graph cannot poison the next row) on one
inductor cache directory made empty for this run, so a row's first iteration is a cold compile
(later rows may reuse kernels that earlier rows cached). Per row:

- first iteration: the wall time from ``build`` to the first metrics on the host, compile
  (and the process's CUDA initialisation) included;
- steady env steps/s: after ``--warmup`` more iterations, iterations run until ``--seconds``
  have passed (and at least ``--iterations`` of them); each iteration ends with the shell's one
  host sync (``metrics_to_host``), the window starts and ends on ``torch.cuda.synchronize()``.

A row that torch fails (every error torch raises -- dynamo and inductor compile errors, CUDA
errors, out of memory -- is a ``RuntimeError``) shows as ``failed: <ExceptionType>: <first
line>`` in the table, with the child's traceback on stderr; a row that runs past what is left
of ``--budget`` is killed and shows as failed too. Rows run in table order; once the budget is
spent the remaining rows show as skipped.

A ``mode`` in ``compile_options`` replaces the kernel's own inductor options
(``shell.build.compiler``: ``torch.compile`` takes one or the other). On a GPU the rollout
is compiled per step.

The numbers come from one run on the device the machine line names (``torch.cuda.get_device_name()``).
The table is printed and, unless ``--no-write``, appended to benchmarks/RESULTS.md with the
date, machine, versions and command. Without CUDA, ``--device cuda`` (the default) exits with
code 2 and one line on stderr: this script never reports a number it did not measure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks._common import append_results, compile_cache_env, machine_line, table
from benchmarks.scaling import ENV_POINTS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ENVS = (8, 512, 4096)
#: mode name -> (compile, compile_options)
MODES = {
    "eager": (False, None),
    "compiled": (True, None),
    "compiled, CUDA graphs (mode=reduce-overhead)": (True, {"mode": "reduce-overhead"}),
}
#: Rows get at least this many seconds; when less of the budget is left they are skipped.
MIN_ROW_S = 15


def num_steps_for(num_envs: int) -> int:
    """Rollout length for ``num_envs``: that of ``benchmarks/scaling.py``'s point with the most
    envs not above ``num_envs`` (128 for up to 511 envs, 32 from 512, 16 from 4096)."""
    fitting = [(n, t) for n, t, _ in ENV_POINTS if n <= num_envs]
    return max(fitting)[1] if fitting else ENV_POINTS[0][1]


# --- one row, in a child process -------------------------------------------------------------


def measure(spec: dict) -> dict:
    """Build and time one row (``spec``: num_envs, num_steps, mode, device, warmup, seconds,
    iterations). Returns the row's numbers, or ``{"error": ...}`` when torch fails."""
    import torch

    import functional_rl as frl
    from functional_rl.shell.build import build
    from functional_rl.shell.loop import metrics_to_host

    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(1)  # as the other CPU benchmarks

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def iterate(state, kernel):
        state, metrics = frl.train_iteration(state, kernel)
        metrics_to_host(metrics)  # the shell's one host sync per iteration
        return state

    compile_, options = MODES[spec["mode"]]
    cfg = frl.PPOConfig(num_envs=spec["num_envs"], num_steps=spec["num_steps"], device=spec["device"],
                        total_timesteps=10**10)
    try:
        t0 = time.perf_counter()
        state, kernel = build(cfg, compile=compile_, compile_options=options)
        state = iterate(state, kernel)
        sync()
        first_s = time.perf_counter() - t0
        for _ in range(spec["warmup"]):
            state = iterate(state, kernel)
        sync()
        t0, n = time.perf_counter(), 0
        while n < spec["iterations"] or time.perf_counter() - t0 < spec["seconds"]:
            state = iterate(state, kernel)
            n += 1
        sync()
        window_s = time.perf_counter() - t0
    except RuntimeError as e:  # the base of every error torch raises (compile, CUDA, out of memory)
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {first_line(e)}"}
    from torch._dynamo.utils import counters

    return {
        "sps": n * cfg.batch_size / window_s, "first_s": first_s, "iterations": n, "window_s": window_s,
        "peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
        "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
    }


def first_line(error: BaseException | str) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:160] if lines else ""


# --- the parent: rows, budget, table ---------------------------------------------------------


def run_row(spec: dict, timeout: float, cache_dir: str) -> dict:
    """Run ``measure(spec)`` in a fresh process; kill its process group after ``timeout`` s."""
    env = {**os.environ, **compile_cache_env(cache_dir),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--child", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and its compile workers
        proc.communicate()
        return {"error": f"TimeoutExpired: no result within {timeout:.0f} s (what was left of --budget)"}
    result = json.loads(out.strip().splitlines()[-1]) if proc.returncode == 0 and out.strip() else None
    if result is None or "error" in result:
        print(err[-4000:], file=sys.stderr)
    if result is None:
        return {"error": f"exit code {proc.returncode}: {first_line(err.strip().splitlines()[-1] if err.strip() else '')}"}
    return result


def run_all(specs: list[dict], budget_s: float) -> list[dict]:
    """Each spec's result in order, within ``budget_s`` seconds in all."""
    results = []
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="frl-gpu-bench-inductor-") as cache_dir:
        for spec in specs:
            left = budget_s - (time.time() - start)
            if left < MIN_ROW_S:
                results.append({"skipped": f"skipped: the --budget of {budget_s:.0f} s was spent"})
                continue
            result = run_row(spec, left, cache_dir)
            print(f"  {spec['num_envs']} envs x {spec['num_steps']} steps, {spec['mode']}: {result}", flush=True)
            results.append(result)
    return results


def cells(result: dict, eager_sps: float | None) -> list[str]:
    """The table cells of one row after its label."""
    if "skipped" in result:
        return [result["skipped"], "-", "-", "-", "-", ""]
    if "error" in result:
        return [f"failed: {result['error']}", "-", "-", "-", "-", ""]
    ratio = f"{result['sps'] / eager_sps:.2f}x" if eager_sps else "-"
    peak = f"{result['peak_mb']:,.0f}" if result["peak_mb"] is not None else "-"
    notes = f"{result['cudagraph_skips']} CUDA graph skips (see stderr)" if result["cudagraph_skips"] else ""
    return [f"{result['sps']:,.0f}", ratio, f"{result['first_s']:.1f}", str(result["iterations"]), peak, notes]


def report(specs: list[dict], results: list[dict]) -> str:
    eager = {s["num_envs"]: r.get("sps") for s, r in zip(specs, results) if s["mode"] == "eager"}
    rows = [[f"{s['num_envs']} x {s['num_steps']}", s["mode"], *cells(r, eager.get(s["num_envs"]))]
            for s, r in zip(specs, results)]
    return table(["envs x steps", "mode", "env steps/s", "vs eager", "first iteration incl. compile (s)",
                  "measured iterations", "peak GPU memory MB", "notes"], rows)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "CPU"


def require_device(device: str) -> None:
    """Exit 2 with one line when ``device`` is CUDA and this torch has no usable GPU."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"benchmarks.gpu: CUDA is not available (torch {torch.__version__}, "
              f"{'no GPU found' if torch.version.cuda else 'a build without CUDA'}); "
              "run it on a CUDA machine, or pass --device cpu for a dry run of the script", file=sys.stderr)
        sys.exit(2)


def parse_envs(text: str) -> list[int]:
    try:
        envs = [int(x) for x in text.split(",")]
    except ValueError:
        envs = []
    if not envs or min(envs) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, e.g. 8,512; got {text!r}")
    return envs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n", 1)[0])
    ap.add_argument("--device", default="cuda", help="torch device (default cuda; cpu for a dry run)")
    ap.add_argument("--envs", type=parse_envs, default=list(DEFAULT_ENVS), help="num_envs per row, e.g. 8,512,4096")
    ap.add_argument("--eager-only", action="store_true", help="only the eager rows (no compile)")
    ap.add_argument("--quick", action="store_true", help="a shorter window per row (--seconds 1.5) and --budget 240")
    ap.add_argument("--seconds", type=float, help="measured window per row in seconds (default 3, --quick 1.5)")
    ap.add_argument("--iterations", type=int, default=3, help="at least this many measured iterations per row")
    ap.add_argument("--warmup", type=int, default=2, help="iterations after the first one before the window")
    ap.add_argument("--budget", type=float, help="seconds for the whole run, compiles included (default 360, --quick 240)")
    ap.add_argument("--no-write", action="store_true", help="print the table only, do not append to RESULTS.md")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.seconds is None:
        args.seconds = 1.5 if args.quick else 3.0
    if args.budget is None:
        args.budget = 240.0 if args.quick else 360.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    require_device(args.device)
    modes = ["eager"] if args.eager_only else list(MODES)
    specs = [{"num_envs": n, "num_steps": num_steps_for(n), "mode": m, "device": args.device, "warmup": args.warmup,
              "seconds": args.seconds, "iterations": args.iterations} for n in args.envs for m in modes]
    started = time.time()
    results = run_all(specs, args.budget)
    name = device_name(args.device)
    body = report(specs, results)
    body += (f"\n\nPPO on CartPole-v1 (built-in pure env), CleanRL hyperparameters, device {args.device} ({name}). "
             f"One run; each row in its own process, inductor cache empty at the start of the run. Per row: the first "
             f"iteration (build to first metrics on the host, compile included), {args.warmup} warm-up iterations, then "
             f"a window of at least {args.iterations} iterations and {args.seconds:g} s (on a GPU between "
             f"torch.cuda.synchronize() calls). Took {time.time() - started:.0f} s (--budget {args.budget:.0f}).")
    print(f"Machine: {machine_line()}")
    print(body)
    if not args.no_write:
        append_results(f"gpu: PPO steps/s on {name}, eager / compiled / CUDA graphs{' (--quick)' if args.quick else ''}",
                       body)


if __name__ == "__main__":
    main()
