"""The PettingZoo adapter: one row per agent per copy, same-step autoreset, agents that leave
early masked out of training (no phantom transitions), clear errors, and it trains."""

import functools

import gymnasium as gym
import numpy as np
import pytest
import torch

pettingzoo = pytest.importorskip("pettingzoo")
from pettingzoo.utils.env import ParallelEnv  # noqa: E402

import functional_rl as frl  # noqa: E402
import functional_rl.kernel.random as jr  # noqa: E402
from functional_rl.envs import EnvInputError, from_pettingzoo  # noqa: E402
from functional_rl.kernel.losses import ppo_loss  # noqa: E402
from functional_rl.kernel.update import make_batch  # noqa: E402


class Relay(ParallelEnv):
    """Three agents; obs = [agent index, copy tag, step]; reward = 1 + action; agent 2 leaves
    (terminates) after `leave` steps, the others terminate at `length`. Optional NaN hooks."""

    metadata = {"name": "relay"}

    def __init__(self, tag=0.0, length=4, leave=1, nan_obs_at=None, nan_reward_at=None, obs_low=0.0):
        self.possible_agents = ["p0", "p1", "p2"]
        self.tag, self.length, self.leave = tag, length, leave
        self.nan_obs_at, self.nan_reward_at = nan_obs_at, nan_reward_at
        self._obs = gym.spaces.Box(obs_low, 100.0, (3,), np.float32)
        self._act = gym.spaces.Discrete(2)
        self.agents, self.t, self.seeds = [], 0, []

    def observation_space(self, agent):
        return self._obs

    def action_space(self, agent):
        return self._act

    def _o(self, a):
        o = np.array([self.possible_agents.index(a), self.tag, self.t], np.float32)
        if self.nan_obs_at == self.t:
            o[2] = np.nan
        return o

    def reset(self, seed=None, options=None):
        self.seeds.append(seed)
        self.agents, self.t = list(self.possible_agents), 0
        return {a: self._o(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        assert set(actions) == set(self.agents), (actions, self.agents)  # no action for an absent agent
        self.t += 1
        obs = {a: self._o(a) for a in self.agents}
        rew = {a: 1.0 + float(actions[a]) for a in self.agents}
        if self.nan_reward_at == self.t:
            rew["p0"] = float("nan")
        term = {a: self.t >= self.length or (a == "p2" and self.t >= self.leave) for a in self.agents}
        trunc = {a: False for a in self.agents}
        self.agents = [a for a in self.agents if not term[a]]
        return obs, rew, term, trunc, {a: {} for a in obs}


def relays(copies=2, **kw):
    return from_pettingzoo(lambda tags=iter(range(100)): Relay(tag=float(next(tags)), **kw), num_envs=copies)


def test_the_toy_env_passes_pettingzoos_own_parallel_api_test():
    from pettingzoo.test import parallel_api_test

    parallel_api_test(Relay(), num_cycles=10)


def test_row_c_times_A_plus_i_is_agent_i_of_copy_c():
    env = relays(copies=2)
    assert (env.num_agents, env.num_envs, env.id) == (3, 6, "relay")
    obs, state = env.reset(jr.key(0), None, 6)
    assert obs[:, 0].tolist() == [0, 1, 2, 0, 1, 2] and obs[:, 1].tolist() == [0, 0, 0, 1, 1, 1]
    out = env.step(jr.key(1), state, torch.tensor([0, 1, 0, 1, 1, 1]), None)
    assert out.reward.tolist() == [1, 2, 1, 2, 2, 2]  # each row's action reached its own agent


def test_agents_that_leave_are_invalid_until_their_copy_resets_same_step():
    env = relays(copies=2, length=3, leave=1)
    obs, state = env.reset(jr.key(0), None, 6)
    assert env.valid_mask(state, None).all()
    a = torch.zeros(6, dtype=torch.int64)
    out = env.step(jr.key(1), state, a, None)  # agent 2 of each copy terminates
    assert out.terminated.tolist() == [False, False, True] * 2 and out.final_obs[2, 2] == 1
    assert env.valid_mask(out.state, None).tolist() == [True, True, False] * 2
    out = env.step(jr.key(2), out.state, a, None)  # the absent rows: no reward, no flag, last obs kept
    assert out.reward.tolist() == [1, 1, 0] * 2 and not out.terminated[2] and not out.truncated[2]
    assert out.obs[2, 2] == 1
    out = env.step(jr.key(3), out.state, a, None)  # the episode ends: final obs, then the reset obs
    assert out.terminated.tolist() == [True, True, False] * 2
    assert out.final_obs[:, 2].tolist() == [3, 3, 1] * 2 and out.obs[:, 2].tolist() == [0] * 6
    assert env.valid_mask(out.state, None).all()
    seeds = [e.seeds for e in env._envs]
    assert all(len(s) == 2 and None not in s for s in seeds) and seeds[0] != seeds[1]  # seeded from the keys


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(EnvInputError, match="multiple of 3"):
        from_pettingzoo(Relay, num_envs=None).reset(jr.key(0), None, 7)
    with pytest.raises(EnvInputError, match="non-finite observation"):
        env = relays(copies=1, nan_obs_at=1)
        _, s = env.reset(jr.key(0), None, 3)
        env.step(jr.key(1), s, torch.zeros(3, dtype=torch.int64), None)
    with pytest.raises(EnvInputError, match="non-finite reward"):
        env = relays(copies=1, nan_reward_at=1)
        _, s = env.reset(jr.key(0), None, 3)
        env.step(jr.key(1), s, torch.zeros(3, dtype=torch.int64), None)
    env = relays(copies=1)
    _, s = env.reset(jr.key(0), None, 3)
    with pytest.raises(EnvInputError, match="out of bounds"):
        env.step(jr.key(1), s, torch.tensor([0, 2, 0]), None)

    class Mixed(Relay):
        def observation_space(self, agent):
            return gym.spaces.Box(0.0, 1.0, (3 if agent != "p2" else 4,), np.float32)

    with pytest.raises(EnvInputError, match="different observation spaces"):
        from_pettingzoo(Mixed, num_envs=1)
    with pytest.raises(EnvInputError, match="unsupported"):
        class TextObs(Relay):
            def observation_space(self, agent):
                return gym.spaces.Text(4)
        from_pettingzoo(TextObs, num_envs=1)
    with pytest.raises(EnvInputError, match="needs a ParallelEnv or a factory"):
        from_pettingzoo(3)


CFG = frl.PPOConfig(num_envs=6, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=6 * 8 * 3)


def test_rollout_records_valid_and_per_agent_episode_statistics():
    env = relays(copies=2, length=4, leave=1)
    policy = frl.make_mlp_policy(env.observation_space, env.action_space, (8,))
    state = frl.TrainerState.create(CFG, env, policy)
    kernel = frl.make_kernel(CFG, env, policy, compile=False)
    state, traj = frl.rollout(state, 8, kernel.rollout_step, kernel.critic)
    valid = traj["valid"]
    # agent 2 acts at steps 0 and 4 (the first of each 4-step episode); agents 0, 1 always
    assert valid[:, 2].tolist() == [True, False, False, False] * 2 and valid[:, [0, 1, 3, 4]].all()
    # episode lengths are per agent: 1 for the one that left, 4 for the others
    ended = traj["episode_length"][traj["terminated"] | traj["truncated"]]
    assert sorted(set(ended.tolist())) == [1, 4]
    assert (traj["episode_length"][~valid] == 0).all() and (traj["reward"][~valid] == 0).all()
    _, metrics = frl.train_iteration(frl.TrainerState.create(CFG, env, policy), kernel)
    assert float(metrics["episodes"]) == 12  # 2 copies x 3 agents x 2 episodes in 8 steps


def _grads(params, policy, traj, hparams):
    batch = make_batch(traj, hparams)
    def loss(p):
        return ppo_loss(p, batch, policy=policy, hparams=hparams)
    grads, metrics = torch.func.grad(loss, has_aux=True)(params)
    return grads, metrics


def test_rows_of_agents_that_left_have_no_effect_on_the_gradient():
    env = relays(copies=2, length=4, leave=1)
    policy = frl.make_mlp_policy(env.observation_space, env.action_space, (8,))
    state = frl.TrainerState.create(CFG, env, policy)
    kernel = frl.make_kernel(CFG, env, policy, compile=False)
    state, traj = frl.rollout(state, 8, kernel.rollout_step, kernel.critic)
    invalid = ~traj["valid"]
    assert invalid.any()
    hp = state.learner.hparams
    g0, m0 = _grads(state.learner.params, policy, traj, hp)
    for seed in (1, 2):
        bad = traj.clone()
        k = jr.split(jr.key(seed), 6)
        noisy = {
            "obs": jr.normal(k[0], bad["obs"].shape) * 50, "next_obs": jr.normal(k[1], bad["obs"].shape) * 50,
            "reward": jr.normal(k[2], bad["reward"].shape) * 100, "value": jr.normal(k[3], bad["value"].shape) * 100,
            "log_prob": -jr.uniform(k[4], bad["log_prob"].shape) * 20, "next_value": jr.normal(k[5], bad["value"].shape) * 100,
        }
        for name, garbage in noisy.items():
            mask = invalid.reshape(*invalid.shape, *([1] * (garbage.dim() - 2)))
            bad[name] = torch.where(mask, garbage, bad[name])
        bad["action"] = torch.where(invalid, 1 - bad["action"], bad["action"])
        g1, m1 = _grads(state.learner.params, policy, bad, hp)
        for a, b in zip(torch.utils._pytree.tree_leaves(g0), torch.utils._pytree.tree_leaves(g1)):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
        for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"):
            assert torch.allclose(m0[name], m1[name], atol=1e-6), name
    # the mask is what does it: without it, the garbage changes the gradient
    unmasked = bad.exclude("valid")
    g2, _ = _grads(state.learner.params, policy, unmasked, hp)
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in
                   zip(torch.utils._pytree.tree_leaves(g0), torch.utils._pytree.tree_leaves(g2)))


def test_pure_envs_have_no_valid_entry_and_train_as_before():
    env = frl.envs.make("CartPole-v1")
    cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2)
    policy = frl.make_mlp_policy(env.observation_space, env.action_space, (8,))
    kernel = frl.make_kernel(cfg, env, policy, compile=False)
    _, traj = frl.rollout(frl.TrainerState.create(cfg, env, policy), 4, kernel.rollout_step, kernel.critic)
    assert "valid" not in traj.keys()


def test_a_shared_policy_learns_the_toy_env():
    # reward 1 + action: the best policy always plays 1 (return 2 per step per agent).
    env = relays(copies=2, length=8, leave=3)
    cfg = frl.PPOConfig(num_envs=6, num_steps=16, num_minibatches=2, update_epochs=4, learning_rate=1e-2,
                        total_timesteps=6 * 16 * 25, seed=0)
    _, history = frl.functional_training_loop(cfg, env=env, compile=False)
    first, last = history[0]["episode_return"], history[-1]["episode_return"]
    # mean episode return per agent: 2 agents x 8 steps and 1 agent x 3 steps; random ~ 1.5 per step
    assert last > first + 1.0 and last > 1.85 * (2 * 8 + 3) / 3, (first, last)
