"""Two checkouts of functional_rl side by side in ONE process: training steps/s, interleaved.

A change that must not slow the kernel (a refactor) is checked here. Separate processes
per tree were tried first and could not resolve a 10% difference on this 2-core machine:
the same tree varied by 1.4x from one process to the next. So both trees run in one
process: the baseline's package is copied under another name (``functional_rl_base``),
both build the default CartPole config (compiled or eager), and blocks of ``--per``
iterations alternate, base then new, for ``--rounds`` rounds. Drift of the machine's speed
hits both sides of a round alike; the report is the median of the per-round ratios and its
quartiles.

    git worktree add /tmp/base <commit>
    python -m benchmarks.ab --base /tmp/base [--rounds 40] [--eager]
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import append_results, table

ALIAS = "functional_rl_base"


def import_renamed(checkout: Path, into: Path):
    """Copy ``checkout/functional_rl`` to ``into/functional_rl_base`` with every import
    renamed, and import it."""
    dest = into / ALIAS
    shutil.copytree(checkout / "functional_rl", dest, ignore=shutil.ignore_patterns("__pycache__"))
    for path in dest.rglob("*.py"):
        path.write_text(re.sub(r"\bfunctional_rl\b", ALIAS, path.read_text()))
    sys.path.insert(0, str(into))
    return importlib.import_module(ALIAS)


def entry_points(pkg_name: str):
    """``(build, metrics_to_host, train_iteration, PPOConfig)`` of either layout."""
    pkg = importlib.import_module(pkg_name)
    try:
        build = importlib.import_module(f"{pkg_name}.shell.build").build
        to_host = importlib.import_module(f"{pkg_name}.shell.loop").metrics_to_host
    except ImportError:  # the layout before functional_rl/kernel + functional_rl/shell
        loop = importlib.import_module(f"{pkg_name}.loop")
        build, to_host = loop.build, loop.metrics_to_host
    return build, to_host, pkg.train_iteration, pkg.PPOConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="path of the baseline checkout")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--per", type=int, default=3, help="iterations per block")
    ap.add_argument("--eager", action="store_true", help="compare eager instead of compiled")
    args = ap.parse_args()
    torch.set_num_threads(1)
    compile_ = not args.eager
    with tempfile.TemporaryDirectory() as tmp:
        import_renamed(Path(args.base).resolve(), Path(tmp))
        sides = {}
        for name in (ALIAS, "functional_rl"):
            build, to_host, iterate, Config = entry_points(name)
            t0 = time.perf_counter()
            state, kernel = build(Config(), compile=compile_)
            for _ in range(3):
                state, m = iterate(state, kernel)
                to_host(m)
            sides[name] = {"state": state, "kernel": kernel, "iterate": iterate, "to_host": to_host,
                           "first_s": time.perf_counter() - t0, "times": [], "batch": Config().batch_size}
        for _ in range(args.rounds):
            for side in sides.values():
                t0 = time.perf_counter()
                for _ in range(args.per):
                    side["state"], m = side["iterate"](side["state"], side["kernel"])
                    side["to_host"](m)
                side["times"].append(time.perf_counter() - t0)
    base, new = sides[ALIAS], sides["functional_rl"]
    ratios = [b / n for b, n in zip(base["times"], new["times"])]
    q1, med, q3 = statistics.quantiles(ratios, n=4)

    def sps(side):
        return f"{side['batch'] * args.per / statistics.median(side['times']):,.0f}"

    mode = "compiled" if compile_ else "eager"
    rows = [[f"{mode}, steps/s (median block)", sps(base), sps(new), f"{med:.3f}x (quartiles {q1:.3f}-{q3:.3f})"]]
    body = table(["default CartPole config, 1 thread", f"base ({args.base})", "new (this checkout)", "new / base (median of round ratios)"], rows)
    body += f"\n\n{args.rounds} rounds of {args.per} iterations each, base then new, in one process."
    print(body)
    append_results(f"ab: this checkout vs {args.base}, {mode}, interleaved in one process", body)


if __name__ == "__main__":
    main()
