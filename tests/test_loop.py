"""The shell: history, callbacks, failures, NaN detection, custom losses and step functions."""

import math

import pytest
import torch

import functional_rl as frl

SMALL = frl.PPOConfig(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, total_timesteps=32 * 3)

REQUIRED = (
    "agent_step", "episode_return", "episode_length", "policy_loss", "value_loss", "entropy",
    "approx_kl", "clipfrac", "explained_variance", "sps",
)


class Recorder:
    def __init__(self, fail_at=None):
        self.events = []
        self.fail_at = fail_at

    def on_start(self, state, config):
        self.events.append(("start", int(state.iteration)))

    def on_iteration(self, state, metrics):
        self.events.append(("iteration", metrics["iteration"]))
        if self.fail_at == metrics["iteration"]:
            raise RuntimeError("callback broke")

    def on_end(self, state):
        self.events.append(("end", int(state.iteration)))

    def on_failure(self, state, exc):
        self.events.append(("failure", int(state.iteration), str(exc)))


def test_history_has_the_documented_metrics_as_python_numbers():
    rec = Recorder()
    state, history = frl.functional_training_loop(SMALL, compile=False, callbacks=[rec])
    assert len(history) == 3
    for i, h in enumerate(history):
        for k in REQUIRED:
            assert isinstance(h[k], float), k
        assert h["agent_step"] == 32 * (i + 1)
        assert h["sps"] > 0
        assert h["iteration"] == i + 1
        # Phase timing: both phases took time and fit inside the iteration's wall time.
        assert 0 < h["timing/rollout_s"] and 0 < h["timing/train_s"]
        assert h["timing/rollout_s"] + h["timing/train_s"] <= h["time_s"]
    assert rec.events == [("start", 0), ("iteration", 1), ("iteration", 2), ("iteration", 3), ("end", 3)]
    assert int(state.agent_step) == 96


def test_episode_return_is_nan_when_no_episode_ended_and_counts_otherwise():
    state, history = frl.functional_training_loop(SMALL.replace(num_steps=4, total_timesteps=8), compile=False)
    assert math.isnan(history[0]["episode_return"]) and history[0]["episodes"] == 0.0
    _, history = frl.functional_training_loop(SMALL.replace(num_steps=64, total_timesteps=128), compile=False)
    # A random CartPole policy ends an episode within 64 steps (mean length ~22).
    assert history[0]["episodes"] >= 2 and 8 <= history[0]["episode_return"] <= 64
    assert history[0]["episode_return"] == history[0]["episode_length"]  # reward 1 per step


def test_a_failing_callback_reports_to_all_and_is_reraised():
    bad, other = Recorder(fail_at=2), Recorder()
    with pytest.raises(RuntimeError, match="callback broke"):
        frl.functional_training_loop(SMALL, compile=False, callbacks=[bad, other])
    assert other.events[-1] == ("failure", 2, "callback broke")
    assert ("end", 3) not in other.events


def test_nan_loss_stops_with_the_iteration_and_metric_named():
    def poisoned(state, kernel):
        state, metrics = frl.train_iteration(state, kernel)
        if int(state.iteration) == 2:
            metrics = {**metrics, "value_loss": torch.tensor(float("nan"))}
        return state, metrics

    rec = Recorder()
    with pytest.raises(frl.NonFiniteError, match=r"iteration 2: metric 'value_loss' is nan"):
        frl.functional_training_loop(SMALL, compile=False, step_fn=poisoned, callbacks=[rec])
    # The failure hook sees the last good state (after iteration 1), not the poisoned one.
    assert rec.events[-1][:2] == ("failure", 1)


def test_nan_from_a_huge_learning_rate_is_caught():
    cfg = SMALL.replace(learning_rate=1e38, max_grad_norm=1e38, anneal_lr=False, total_timesteps=32 * 6)

    def explode(params, batch, outputs, hp):
        return (outputs["value"] * 1e30).pow(2).mean()

    with pytest.raises(frl.NonFiniteError, match="iteration 1"):
        frl.functional_training_loop(cfg, compile=False, custom_losses=[explode])


def test_custom_loss_metric_appears_in_history():
    def value_l2(params, batch, outputs, hp):
        return 1e-3 * (outputs["value"] ** 2).mean()

    _, history = frl.functional_training_loop(SMALL, compile=False, custom_losses=[value_l2])
    assert all(h["value_l2"] >= 0 for h in history) and history[-1]["value_l2"] > 0


def test_custom_step_fn_is_used():
    calls = []

    def step(state, kernel):
        calls.append(int(state.iteration))
        return frl.train_iteration(state, kernel)

    frl.functional_training_loop(SMALL, compile=False, step_fn=step)
    assert calls == [0, 1, 2]


def test_resume_from_a_state_continues_the_count():
    state, _ = frl.functional_training_loop(SMALL.replace(total_timesteps=64), compile=False)
    state2, history = frl.functional_training_loop(SMALL, compile=False, state=state)
    assert [h["iteration"] for h in history] == [3]
    assert int(state2.agent_step) == 96
