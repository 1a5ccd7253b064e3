"""The gymnasium adapter: same transitions as the pure env, clear errors, and it trains."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import functional_rl as frl
import functional_rl.kernel.random as jr
from functional_rl.envs import CartPoleState, EnvInputError, from_gymnasium, make
from tests.test_learning import best_windowed_return


def gym_states(adapter):
    s = np.stack([e.unwrapped.state for e in adapter.vec_env.envs]).astype(np.float32)
    return torch.from_numpy(s)


def test_adapter_matches_the_pure_cartpole_transition_for_transition():
    n = 4
    adapter = from_gymnasium("CartPole-v1", num_envs=n)
    pure = make("CartPole-v1")
    params = pure.default_params()
    obs, _ = adapter.reset(jr.key(0), None, n)
    assert torch.allclose(obs, gym_states(adapter))
    time = torch.zeros(n, dtype=torch.int64)
    actions = jr.randint(jr.key(1), (700, n), 0, 2)
    ends = {"terminated": 0, "truncated": 0}
    for t in range(700):
        s = gym_states(adapter)
        state = CartPoleState(s[:, 0], s[:, 1], s[:, 2], s[:, 3], time)
        p_obs, p_state, p_rew, p_term, p_trunc, p_final_obs = pure.step(jr.key(t), state, actions[t], params)
        a_obs, _, a_rew, a_term, a_trunc, a_final_obs = adapter.step(None, torch.zeros(()), actions[t], None)
        assert torch.equal(p_term, a_term) and torch.equal(p_trunc, a_trunc)
        assert torch.equal(p_rew, a_rew)
        assert torch.allclose(p_final_obs, a_final_obs, atol=1e-5)
        done = p_term | p_trunc
        # Where the episode went on, the next observation is the same; where it ended, both
        # returned a fresh reset observation (from different random streams).
        assert torch.allclose(p_obs[~done], a_obs[~done], atol=1e-5)
        if done.any():
            assert float(a_obs[done].abs().max()) <= 0.05
        time = p_state.time
        ends["terminated"] += int(p_term.sum())
        ends["truncated"] += int(p_trunc.sum())
    assert ends["terminated"] > 20  # many auto-resets crossed


def test_a_next_step_vector_env_is_refused_with_instructions():
    vec = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2)
    with pytest.raises(EnvInputError, match="SAME_STEP"):
        from_gymnasium(vec)


class TextObsEnv(gym.Env):
    observation_space = gym.spaces.Text(5)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        return "a", {}

    def step(self, action):
        return "a", 0.0, False, False, {}


class DictTextObsEnv(TextObsEnv):
    observation_space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,)), "name": gym.spaces.Text(5)})


class NaNEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self, bad="obs"):
        self.bad, self.t = bad, 0

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.full(2, np.nan if self.bad == "obs" and self.t == 3 else 0.0, np.float32)
        reward = float("nan") if self.bad == "reward" and self.t == 3 else 0.0
        return obs, reward, False, False, {}


def test_unsupported_space_names_what_is_supported():
    with pytest.raises(EnvInputError, match="Text is unsupported; supported spaces are Box and Discrete"):
        from_gymnasium(TextObsEnv, num_envs=2)
    with pytest.raises(EnvInputError, match=r"observation part 'name' Text\(.*\) is unsupported in a Dict/Tuple observation"):
        from_gymnasium(DictTextObsEnv, num_envs=2)


@pytest.mark.parametrize("bad", ["obs", "reward"])
def test_nan_from_the_env_names_the_env_and_step(bad):
    env = from_gymnasium(lambda: NaNEnv(bad), num_envs=2)
    env.reset(jr.key(0), None, 2)
    env.step(None, torch.zeros(()), torch.tensor([0, 1]), None)
    env.step(None, torch.zeros(()), torch.tensor([0, 1]), None)
    with pytest.raises(EnvInputError, match=r"NaNEnv: non-finite .*env step 3"):
        env.step(None, torch.zeros(()), torch.tensor([0, 1]), None)


def test_out_of_bounds_actions_are_rejected():
    env = from_gymnasium("CartPole-v1", num_envs=2)
    env.reset(jr.key(0), None, 2)
    with pytest.raises(EnvInputError, match="out of bounds for Discrete"):
        env.step(None, torch.zeros(()), torch.tensor([0, 2]), None)
    cont = from_gymnasium("Pendulum-v1", num_envs=2)
    cont.reset(jr.key(0), None, 2)
    with pytest.raises(EnvInputError, match="out of bounds"):
        cont.step(None, torch.zeros(()), torch.tensor([[0.0], [3.0]]), None)


def test_continuous_gymnasium_env_trains_a_few_iterations_with_clipped_actions():
    env = from_gymnasium("Pendulum-v1", num_envs=2)
    cfg = frl.PPOConfig(env_id="Pendulum-v1", num_envs=2, num_steps=16, num_minibatches=2, total_timesteps=64)
    state, history = frl.functional_training_loop(cfg, env=env, compile=False)
    assert int(state.agent_step) == 64 and np.isfinite(history[-1]["value_loss"])


@pytest.mark.slow
def test_cartpole_through_the_adapter_reaches_475():
    env = from_gymnasium("CartPole-v1", num_envs=8)
    state, history = frl.functional_training_loop(frl.PPOConfig(seed=1, num_envs=8), env=env, compile=True)
    assert best_windowed_return(history) >= 475.0
