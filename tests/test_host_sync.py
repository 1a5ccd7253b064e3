"""The hot path never reads tensor values on the host; the shell reads metrics once per iteration."""

import contextlib

import torch

import functional_rl as frl
from functional_rl.shell.build import build

SYNCS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def count_syncs():
    counts = {name: 0 for name in SYNCS}
    originals = {name: getattr(torch.Tensor, name) for name in SYNCS}

    def wrap(name):
        orig = originals[name]

        def counted(self, *args, **kwargs):
            counts[name] += 1
            return orig(self, *args, **kwargs)

        return counted

    for name in SYNCS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield counts
    finally:
        for name, orig in originals.items():
            setattr(torch.Tensor, name, orig)


CFG = frl.PPOConfig(num_envs=4, num_steps=8, num_minibatches=2, update_epochs=2, total_timesteps=32 * 4,
                    normalize_obs=True, normalize_reward=True)


def test_train_iteration_reads_no_tensor_value_on_the_host():
    state, kernel = build(CFG, compile=False)
    with count_syncs() as counts:
        state, metrics = frl.train_iteration(state, kernel)
        state, metrics = frl.train_iteration(state, kernel)
    assert sum(counts.values()) == 0, counts


def test_the_loop_transfers_metrics_once_per_iteration():
    with count_syncs() as counts:
        _, history = frl.functional_training_loop(CFG, compile=False)
    assert len(history) == 4
    # One tolist per iteration (all metrics in one transfer) plus one at start for the counters.
    assert counts["tolist"] == 4 + 1, counts
    assert sum(v for k, v in counts.items() if k != "tolist") == 0, counts
