"""One process of a small data-parallel CartPole run, for tests/test_distributed.py.

Run under ``torchrun --nproc-per-node W tests/distributed_worker.py ...`` (or with
``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set by hand). Every rank trains with
:func:`functional_training_loop`; rank 0 writes the returned whole-run state and history
to ``--out`` and, with ``--ckpt-dir``, checkpoints every iteration. ``--features`` turns on
observation/reward normalisation and the last-action input (state that is per env or reduced); ``--policy lstm`` trains a recurrent policy. ``--die-at N`` makes
rank 1 exit abruptly in iteration ``N``; ``--hang-at N`` makes it stop answering.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from functional_rl.shell import checkpoint
from functional_rl.shell.callbacks import Checkpointer
from functional_rl.kernel.config import PPOConfig
from functional_rl.shell.loop import functional_training_loop
from functional_rl.kernel.iteration import train_iteration


def small_config(num_envs: int, **changes) -> PPOConfig:
    """The config of every distributed test: tiny network, short rollouts, two epochs."""
    return PPOConfig(
        num_envs=num_envs, num_steps=16, num_minibatches=2, update_epochs=2, hidden_sizes=(16,),
        total_timesteps=16 * 4 * 8, learning_rate=3e-3, **changes,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--envs", type=int, required=True)
    p.add_argument("--iters", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--ckpt-dir")
    p.add_argument("--resume")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--die-at", type=int)
    p.add_argument("--hang-at", type=int)
    p.add_argument("--features", action="store_true", help="observation/reward normalisation and the last action")
    p.add_argument("--policy", default="mlp", help="PPOConfig.policy (e.g. lstm: minibatches of whole env sequences)")
    a = p.parse_args()
    features = dict(normalize_obs=True, normalize_reward=True, last_action=True) if a.features else {}
    if a.policy != "mlp":
        features["policy"] = a.policy
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))

    def step_fn(state, kernel):
        it = int(state.iteration) + 1
        if rank == 1 and a.die_at == it:
            os._exit(17)
        if rank == 1 and a.hang_at == it:
            time.sleep(3600)
        return train_iteration(state, kernel)

    state = checkpoint.load(a.resume)[0] if a.resume else None
    callbacks = [Checkpointer(a.ckpt_dir, every=1, keep_last=10)] if a.ckpt_dir else []
    state, history = functional_training_loop(
        small_config(a.envs, **features), state=state, step_fn=step_fn, callbacks=callbacks, compile=a.compile,
        max_iterations=a.iters,
    )
    if rank == 0:
        checkpoint.save(a.out, state, small_config(a.envs, **features))
        with open(a.out + ".json", "w") as f:
            json.dump(history, f)


if __name__ == "__main__":
    main()
