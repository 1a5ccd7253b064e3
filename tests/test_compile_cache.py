"""Compiled graphs holding a ``scan`` are stored in and loaded from inductor's on-disk cache by
a new process, and the cache key sees the scanned body (no wrong graph is ever loaded).

Each case runs fresh Python processes sharing one temporary ``TORCHINDUCTOR_CACHE_DIR``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

TOY = r"""
import json, sys, torch
from torch._dynamo.utils import counters
from torch._higher_order_ops.scan import scan
from functional_rl.shell.build import compiler
c = float(sys.argv[1])

def f(x, xs):
    def body(carry, x):
        y = carry * c + x
        return y.clone(), y.clone()
    return scan(body, x, xs)

final, ys = compiler(True)(f)(torch.ones(3), torch.ones(4, 3))
print(json.dumps({"final": final.tolist(), "hits": counters["inductor"]["fxgraph_cache_hit"],
                  "misses": counters["inductor"]["fxgraph_cache_miss"],
                  "bypass": counters["inductor"]["fxgraph_cache_bypass"]}))
"""

ROLLOUT = r"""
import json, torch
from torch._dynamo.utils import counters
import functional_rl as frl
from functional_rl.shell.build import build
cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2)
state, kernel = build(cfg, compile=True, scan_rollout=True)
state, traj = kernel.rollout(state)
print(json.dumps({"action": traj["action"].tolist(), "hits": counters["inductor"]["fxgraph_cache_hit"],
                  "misses": counters["inductor"]["fxgraph_cache_miss"],
                  "bypass": counters["inductor"]["fxgraph_cache_bypass"]}))
"""


def _child(code: str, cache_dir: str, *args: str) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir, "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "0"}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_scan_graphs_are_cached_by_their_body(tmp_path):
    """Two scans that differ only inside the body: the second is not served the first's graph
    (it would give the first body's numbers), and a later process loads the first's."""
    cache = str(tmp_path / "cache")
    # y <- c * y + 1, four times from y = 1
    two = _child(TOY, cache, "2")
    three = _child(TOY, cache, "3")
    two_again = _child(TOY, cache, "2")
    assert two["final"] == two_again["final"] == [31.0] * 3 and three["final"] == [121.0] * 3
    assert two["misses"] >= 1 and three["misses"] >= 1 and three["hits"] == 0
    assert two_again["hits"] >= 1 and two_again["misses"] == 0
    assert two["bypass"] == three["bypass"] == two_again["bypass"] == 0


@pytest.mark.slow
def test_a_new_process_loads_the_one_call_rollout_from_the_cache(tmp_path):
    cache = str(tmp_path / "cache")
    cold = _child(ROLLOUT, cache)
    warm = _child(ROLLOUT, cache)
    assert cold["bypass"] == 0 and cold["misses"] >= 1
    assert warm["misses"] == 0 and warm["hits"] >= 1, warm
    assert warm["action"] == cold["action"]
