"""Normalisation statistics match gymnasium's wrappers; they live in the state and train."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers.utils import RunningMeanStd

import functional_rl as frl
from functional_rl.kernel import normalize as nz


def test_obs_moments_match_gymnasium_running_mean_std():
    rng = np.random.default_rng(0)
    ref = RunningMeanStd(shape=(3,))
    ours = nz.obs_norm_init((3,))
    for step in range(200):
        batch = rng.normal(loc=[1.0, -5.0, 100.0], scale=[0.1, 3.0, 20.0], size=(8, 3)).astype(np.float32)
        ref.update(batch)
        ours = nz.obs_norm_update(ours, torch.from_numpy(batch))
        if step % 50 == 0 or step == 199:
            np.testing.assert_allclose(ours.mean.numpy(), ref.mean, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ours.var.numpy(), ref.var, rtol=1e-5, atol=1e-5)
            assert float(ours.count) == pytest.approx(ref.count)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    expected = np.clip((x - ref.mean) / np.sqrt(ref.var + 1e-8), -10, 10)
    np.testing.assert_allclose(nz.obs_norm_apply(ours, torch.from_numpy(x)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_reward_scaling_matches_gymnasium_normalize_reward_same_step():
    num_envs = 4
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("CartPole-v1") for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    wrapped = gym.wrappers.vector.NormalizeReward(envs, gamma=0.9)
    wrapped.reset(seed=0)
    ours = nz.reward_norm_init(num_envs)
    rng = np.random.default_rng(1)
    ends = 0
    for _ in range(300):
        _, r, term, trunc, _ = wrapped.step(rng.integers(0, 2, size=num_envs))
        raw = torch.ones(num_envs)  # CartPole's raw reward is 1 every step
        ours = nz.reward_norm_update(ours, raw, torch.from_numpy(term), torch.from_numpy(trunc), 0.9)
        np.testing.assert_allclose(nz.reward_norm_apply(ours, raw).numpy(), r, rtol=1e-5, atol=1e-5)
        ends += int((term | trunc).sum())
    np.testing.assert_allclose(float(ours.moments.var), wrapped.return_rms.var, rtol=1e-5)
    assert ends > 10  # the comparison crossed many episode boundaries


def test_statistics_live_in_the_state_and_update_in_the_rollout():
    cfg = frl.PPOConfig(num_envs=4, num_steps=8, num_minibatches=2, total_timesteps=32 * 2,
                        normalize_obs=True, normalize_reward=True)
    state, history = frl.functional_training_loop(cfg, compile=False)
    # Reset obs are folded in by each rollout step: 2 iterations x 8 steps x 4 envs.
    assert float(state.learner.obs_norm.count) == pytest.approx(64 + 1e-4)
    assert float(state.learner.reward_stats.count) == pytest.approx(64 + 1e-4)
    assert float(state.learner.obs_norm.var.min()) > 0 and not torch.equal(state.learner.obs_norm.mean, torch.zeros(4))
    assert all(np.isfinite(h["value_loss"]) for h in history)


def test_normalised_rollout_feeds_the_policy_what_training_sees():
    cfg = frl.PPOConfig(num_envs=3, num_steps=4, num_minibatches=1, normalize_obs=True)
    from functional_rl.shell.build import build

    state, kernel = build(cfg, compile=False)
    new, tr = frl.rollout_step(state, env=kernel.env, env_params=kernel.env_params, policy=kernel.policy)
    expected_obs = nz.obs_norm_apply(new.learner.obs_norm, state.envs.obs)
    assert torch.equal(tr["obs"], expected_obs)
    out = kernel.policy.apply(state.learner.params, expected_obs)
    assert torch.allclose(tr["log_prob"], kernel.policy.distribution.log_prob(out, tr["action"]))
    assert torch.equal(state.learner.obs_norm.count, nz.obs_norm_init((4,)).count)  # input untouched
