"""Exact resume: train N iterations, save, load in a fresh process, train M more == N + M uninterrupted.

Bit for bit on every leaf of the state (params, optimizer moments, env state, key, counters),
eagerly and compiled. The continuation always runs in a new Python process, so nothing can
leak through module globals, caches or RNG state: everything must come from the checkpoint.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.utils._pytree as pytree

import functional_rl as frl
from functional_rl.shell import checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = frl.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=1, total_timesteps=64 * 6)

# A fresh interpreter that trains (optionally from a checkpoint) and saves the result.
SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)
    import functional_rl as frl
    from functional_rl.shell import checkpoint

    mode, compile, out = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
    if mode == "continue":  # load, train to the end of the schedule, save
        state, config, _ = checkpoint.load(sys.argv[4])
        state, _ = frl.functional_training_loop(config, state=state, compile=compile)
        checkpoint.save(out, state, config)
    else:  # "split": the first N iterations and, in the same process, the uninterrupted run
        config = frl.PPOConfig.from_dict(__import__("json").loads(sys.argv[4]))
        n = int(sys.argv[5])
        env = frl.envs.make(config.env_id)
        policy = frl.make_mlp_policy(env.observation_space, env.action_space)
        first, _ = frl.functional_training_loop(config, env=env, policy=policy, compile=compile, max_iterations=n)
        checkpoint.save(out + ".first", first, config)
        full, _ = frl.functional_training_loop(config, env=env, policy=policy, compile=compile)
        checkpoint.save(out + ".full", full, config)
    import torch._dynamo.utils
    print("graphs", torch._dynamo.utils.counters["stats"]["unique_graphs"])
    """
)


def assert_trees_equal(a, b):
    la, sa = pytree.tree_flatten(a)
    lb, sb = pytree.tree_flatten(b)
    assert sa == sb
    n_tensors = 0
    for x, y in zip(la, lb):
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
            n_tensors += 1
        else:
            assert x == y
    assert n_tensors > 10  # params, Adam moments, env state, key, counters


def _python(tmp_path, *args, timeout=300):
    script = tmp_path / "resume_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split("graphs")[-1])  # how many graphs torch.compile built


def test_eager_resume_in_a_fresh_process_is_bit_exact(tmp_path):
    first, _ = frl.functional_training_loop(TINY, compile=False, max_iterations=2)
    assert int(first.iteration) == 2 and int(first.agent_step) == 128
    checkpoint.save(tmp_path / "first.frl", first, TINY)
    assert _python(tmp_path, "continue", 0, tmp_path / "resumed.frl", tmp_path / "first.frl") == 0
    resumed, config, _ = checkpoint.load(tmp_path / "resumed.frl")
    full, history = frl.functional_training_loop(TINY, compile=False)
    assert config == TINY and int(resumed.agent_step) == 384 and int(resumed.iteration) == 6
    assert_trees_equal(resumed, full)
    # Not trivially equal: training moved every layer away from the checkpointed params.
    assert all(not torch.equal(x, y) for x, y in zip(pytree.tree_leaves(first.learner.params), pytree.tree_leaves(full.learner.params)))


@pytest.mark.slow
def test_compiled_resume_in_a_fresh_process_is_bit_exact(tmp_path):
    """One compiled pair: (first 1 iteration, uninterrupted 3) in one process, the last 2 in another."""
    cfg = TINY.replace(total_timesteps=64 * 3)
    assert _python(tmp_path, "split", 1, tmp_path / "c.frl", json.dumps(cfg.to_dict()), 1, timeout=500) >= 2
    assert _python(tmp_path, "continue", 1, tmp_path / "c.frl.resumed", tmp_path / "c.frl.first", timeout=500) >= 2
    full, _, _ = checkpoint.load(tmp_path / "c.frl.full")
    resumed, _, _ = checkpoint.load(tmp_path / "c.frl.resumed")
    first, _, _ = checkpoint.load(tmp_path / "c.frl.first")
    assert int(first.iteration) == 1 and int(resumed.iteration) == int(full.iteration) == 3
    assert_trees_equal(resumed, full)
    # Both processes ran compiled graphs (counted above); compiled agrees with eager to float tolerance.
    eager, _ = frl.functional_training_loop(cfg, compile=False)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(pytree.tree_leaves(eager.learner.params),
                                                               pytree.tree_leaves(full.learner.params)))
