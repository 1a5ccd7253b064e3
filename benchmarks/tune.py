"""``functional-rl tune`` on CartPole: what a small search finds and what it costs.

Runs the CLI in this process, exactly as a user would (one worker, SQLite study in a fresh
temporary dir, the space of docs/tune_space_cartpole.toml), then prints every trial (state,
score, seconds, point) and the wall time, and appends them to benchmarks/RESULTS.md. Then
trains the best config once more from ``best_config.json`` with another seed (eval of the
point, not of the trial's own seeds).

    python -m benchmarks.tune [--trials 12] [--seeds 2] [--steps 30000] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import append_results, table
from functional_rl.shell.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(argv: list[str]) -> tuple[int, str, float]:
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, out.getvalue(), time.perf_counter() - t0


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--check-steps", type=int, default=30_000, help="steps of the re-training of the best config")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        study_dir = Path(tmp) / "study"
        argv = ["tune", "CartPole-v1", "--trials", str(args.trials), "--study", "bench", "--seeds", str(args.seeds),
                "--total-timesteps", str(args.steps), "--space", str(ROOT / "docs" / "tune_space_cartpole.toml"),
                "--run-dir", str(study_dir)] + ([] if args.compile else ["--no-compile"])
        rc, out, wall = run(argv)
        print(out)
        assert rc == 0, out
        study = optuna.load_study(study_name="bench", storage=f"sqlite:///{study_dir / 'study.db'}")
        trials = sorted(study.get_trials(), key=lambda t: t.number)
        rows = []
        for t in trials:
            value = f"{t.value:.1f}" if t.value is not None else (
                f"({t.intermediate_values[max(t.intermediate_values)]:.1f} at {max(t.intermediate_values)}/10)" if t.intermediate_values else "-")
            point = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
            rows.append([t.number, t.state.name.lower(), value, f"{t.user_attrs.get('seconds', float('nan')):.0f}", point])
        best = json.loads((study_dir / "best_trial.json").read_text())
        check_dir = Path(tmp) / "check"
        rc, out, check_wall = run(["train", "CartPole-v1", "--config", str(study_dir / "best_config.json"), "--seed", "100",
                                   "--total-timesteps", str(args.check_steps), "--run-dir", str(check_dir), "--progress", "none",
                                   "--no-compile"])
        assert rc == 0, out
        metrics = [json.loads(line) for line in (check_dir / "metrics.jsonl").read_text().splitlines()]
        returns = [m["overview/reward"] for m in metrics if isinstance(m.get("overview/reward"), float)]
        tail = returns[-max(1, len(returns) // 10):]
        check = statistics.fmean(tail) if tail else float("nan")
    pruned = sum(t.state.name == "PRUNED" for t in trials)
    body = (table(["trial", "state", "score (mean return, last tenth, mean over seeds)", "seconds", "point"], rows)
            + f"\n\nCartPole-v1, {args.trials} trials x {args.seeds} seeds x {args.steps:,} env steps, one worker, "
            f"{'compiled' if args.compile else 'eager'}, 1 thread: wall {wall:.0f} s ({pruned} pruned). Best: trial "
            f"{best['number']}, score {best['value']:.1f}. Its best_config.json retrained with seed 100 for "
            f"{args.check_steps:,} steps: mean return over the last tenth {check:.1f} ({check_wall:.0f} s).")
    print(body)
    append_results("functional-rl tune on CartPole (benchmarks/tune.py)", body)


if __name__ == "__main__":
    sys.exit(main_bench())
