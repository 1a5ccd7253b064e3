"""MultiDiscrete actions: the product-of-categoricals distribution, a pure env and a gymnasium
env trained with them (eager and compiled, last action fed back), and the checks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import functional_rl as frl
import functional_rl.kernel.random as jr
from functional_rl.envs import Box, Environment, MultiDiscrete, from_gymnasium
from functional_rl.envs.gymnasium_adapter import EnvInputError
from functional_rl.kernel.distributions import Categorical, MultiCategorical
from functional_rl.kernel.struct import pytree_dataclass
from functional_rl.shell.build import build
from functional_rl.shell.checks import check_policy


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(0, 2**20))
def test_multi_categorical_is_a_product_of_categoricals(nvec, seed):
    d, B = MultiCategorical(tuple(nvec)), 6
    logits = jr.normal(jr.key(seed), (B, sum(nvec))) * 3
    blocks = torch.split(logits, nvec, dim=-1)
    out = {"logits": logits}
    action = d.sample(jr.key(seed + 1), out)
    assert action.shape == (B, len(nvec)) and action.dtype == torch.int64
    assert ((action >= 0) & (action < torch.tensor(nvec))).all()
    c = Categorical()
    want_lp = sum(c.log_prob({"logits": b}, action[:, k]) for k, b in enumerate(blocks))
    torch.testing.assert_close(d.log_prob(out, action), want_lp)
    torch.testing.assert_close(d.entropy(out), sum(c.entropy({"logits": b}) for b in blocks))
    assert torch.equal(d.mode(out), torch.stack([b.argmax(-1) for b in blocks], dim=-1))
    noise = d.noise(jr.key(seed + 1), logits.shape)
    assert torch.equal(d.sample_from_noise(out, noise), action)
    per_block = torch.stack([c.sample_from_noise({"logits": b}, n) for b, n in zip(blocks, torch.split(noise, nvec, -1))], -1)
    assert torch.equal(action, per_block)


def test_multi_categorical_samples_with_the_right_frequencies():
    d = MultiCategorical((3, 2))
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, 1.0]]).expand(40_000, -1)
    a = d.sample(jr.row_keys(jr.key(0), torch.arange(40_000)), {"logits": logits})
    for k, block in enumerate(torch.split(logits[0], [3, 2])):
        freq = torch.bincount(a[:, k], minlength=block.numel()).float() / a.shape[0]
        torch.testing.assert_close(freq, torch.softmax(block, -1), atol=0.01, rtol=0)


def test_wrong_width_logits_are_refused():
    with pytest.raises(ValueError, match=r"logits must be \[\.\.\., 5\], got \(2, 4\)"):
        MultiCategorical((3, 2)).mode({"logits": torch.zeros(2, 4)})


@pytree_dataclass
class CoinsParams:
    pass


@pytree_dataclass
class CoinsState:
    coins: torch.Tensor  # [B, 2] in {-1, +1}
    time: torch.Tensor


class Coins(Environment):
    """Two coins shown; choice 0 (of 2) pays 1 for naming coin 0, choice 1 (of 3) pays 1 for
    answering 2 when coin 1 is heads and 0 when tails (1 never pays). One step per episode."""

    id = "Coins-v0"
    observation_space = Box(low=(-1.0, -1.0), high=(1.0, 1.0), shape=(2,))
    action_space = MultiDiscrete((2, 3))

    def default_params(self):
        return CoinsParams()

    def reset_env(self, keys, params):
        coins = torch.where(jr.uniform(keys, (2,)) < 0.5, -1.0, 1.0)
        return CoinsState(coins, torch.zeros(keys.shape[0], dtype=torch.int64))

    def step_env(self, state, action, params):
        heads = state.coins > 0
        reward = (action[:, 0] == heads[:, 0].long()).float() + (action[:, 1] == 2 * heads[:, 1].long()).float()
        return CoinsState(state.coins.clone(), state.time + 1), reward, torch.ones_like(heads[:, 0])

    def get_obs(self, state, params):
        return state.coins.clone()

    def truncation(self, state, params):
        return torch.zeros_like(state.time, dtype=torch.bool)


CFG = frl.PPOConfig(num_envs=16, num_steps=16, num_minibatches=2, update_epochs=4, learning_rate=3e-3,
                    total_timesteps=16 * 16 * 60, hidden_sizes=(32,), last_action=True)


def test_ppo_learns_a_multi_discrete_task():
    _, history = frl.functional_training_loop(CFG, env=Coins(), compile=False)
    returns = [float(m["episode_return"]) for m in history[-5:]]
    assert min(returns) > 1.8, returns  # random play earns 0.5 + 1/3


def test_compiled_iterations_equal_eager_with_the_last_action_fed_back():
    cfg = CFG.replace(num_envs=4, num_steps=8, total_timesteps=4 * 8 * 10)
    state, eager = build(cfg, env=Coins(), compile=False)
    _, compiled = build(cfg, env=Coins(), state=state, compile=True)
    s_e, s_c = state, state
    for _ in range(2):
        s_e, m_e = frl.train_iteration(s_e, eager)
        s_c, m_c = frl.train_iteration(s_c, compiled)
    assert torch.equal(s_e.envs.last_action, s_c.envs.last_action) and s_e.envs.last_action.shape == (4, 5)
    torch.testing.assert_close(m_e["policy_loss"], m_c["policy_loss"], atol=1e-5, rtol=1e-4)


def test_a_single_categorical_policy_is_refused_for_multi_discrete_actions():
    env = Coins()
    flat = frl.make_mlp_policy(env.observation_space, frl.envs.Discrete(5), hidden_sizes=(8,))
    with pytest.raises(ValueError, match=r"need MultiCategorical\(\(2, 3\)\)"):
        check_policy(env, flat)


class GymCoins(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.MultiDiscrete([2, 3])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.coins = self.np_random.choice([-1.0, 1.0], size=2).astype(np.float32)
        return self.coins.copy(), {}

    def step(self, action):
        heads = self.coins > 0
        reward = float(action[0] == int(heads[0])) + float(action[1] == 2 * int(heads[1]))
        return self.coins.copy(), reward, True, False, {}


def test_the_gymnasium_adapter_accepts_multi_discrete_actions():
    env = from_gymnasium(GymCoins, num_envs=4)
    assert env.action_space == MultiDiscrete((2, 3))
    _, history = frl.functional_training_loop(CFG.replace(num_envs=4, total_timesteps=4 * 16 * 3), env=env, compile=False)
    assert len(history) == 3 and all(np.isfinite(float(m["policy_loss"])) for m in history)
    with pytest.raises(EnvInputError, match=r"out of bounds for MultiDiscrete\(\(2, 3\)\)"):
        env.check_action(torch.tensor([[0, 3]] * 4))
