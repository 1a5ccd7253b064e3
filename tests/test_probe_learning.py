"""PPO learns each probe environment's known value function or optimal policy in seconds.

Each probe isolates one part of the agent (value fitting, observation use, discounting,
policy gradient, observation-dependent policy), so a failure here points at its cause.
"""

import pytest
import torch

import functional_rl as frl
from functional_rl.shell.build import build

GAMMA = 0.9


def train(env_id):
    cfg = frl.PPOConfig(
        env_id=env_id, num_envs=16, num_steps=8, num_minibatches=2, update_epochs=4,
        total_timesteps=16 * 8 * 60, learning_rate=5e-3, anneal_lr=False, ent_coef=0.0,
        gamma=GAMMA, seed=0,
    )
    state, _ = frl.functional_training_loop(cfg, compile=False)
    _, kernel = build(cfg, compile=False)
    return state, kernel.policy


def outputs(policy, state, obs):
    out = policy.apply(state.learner.params, torch.tensor(obs).reshape(-1, 1))
    return out["value"], torch.softmax(out["logits"], -1) if "logits" in out else None


def test_probe1_value_is_one():
    state, policy = train("Probe1-v0")
    v, _ = outputs(policy, state, [0.0])
    assert float(v[0]) == pytest.approx(1.0, abs=0.05)


def test_probe2_value_follows_the_observation():
    state, policy = train("Probe2-v0")
    v, _ = outputs(policy, state, [-1.0, 1.0])
    assert v.tolist() == pytest.approx([-1.0, 1.0], abs=0.1)


def test_probe3_discounting():
    state, policy = train("Probe3-v0")
    v, _ = outputs(policy, state, [0.0, 1.0])
    assert v.tolist() == pytest.approx([GAMMA, 1.0], abs=0.04)  # no discounting would give 1.0


def test_probe4_policy_gradient_picks_the_rewarded_action():
    state, policy = train("Probe4-v0")
    v, p = outputs(policy, state, [0.0])
    assert float(p[0, 1]) > 0.95
    assert float(v[0]) == pytest.approx(1.0, abs=0.15)


def test_probe5_policy_depends_on_the_observation():
    state, policy = train("Probe5-v0")
    v, p = outputs(policy, state, [-1.0, 1.0])
    assert float(p[0, 0]) > 0.95 and float(p[1, 1]) > 0.95
    assert v.tolist() == pytest.approx([1.0, 1.0], abs=0.15)
