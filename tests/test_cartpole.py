"""The pure CartPole step for step against gymnasium's CartPole-v1."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import functional_rl.kernel.random as jr
from functional_rl.envs import CartPoleState, UnknownEnvError, list_envs, make

# gymnasium integrates in float64 and returns float32 observations; we integrate in float32.
# One Euler step from |state| <= 5 differs by a few float32 ulps: 1e-5 absolute is ~100 ulps.
ATOL = 1e-5

states = st.tuples(
    st.floats(-2.4, 2.4), st.floats(-3.0, 3.0), st.floats(-0.2, 0.2), st.floats(-3.0, 3.0)
)


@given(st.lists(st.tuples(states, st.integers(0, 1)), min_size=1, max_size=8))
def test_one_step_matches_gymnasium(cases):
    env = make("CartPole-v1")
    params = env.default_params()
    ref = gym.make("CartPole-v1").unwrapped
    ref.reset(seed=0)
    s = torch.tensor([c[0] for c in cases], dtype=torch.float32)
    action = torch.tensor([c[1] for c in cases])
    state = CartPoleState(s[:, 0], s[:, 1], s[:, 2], s[:, 3], torch.zeros(len(cases), dtype=torch.int64))
    obs, _, reward, term, trunc, final_obs = env.step(jr.key(0), state, action, params)
    for i, (s0, a) in enumerate(cases):
        ref.state = np.array(s[i].tolist(), dtype=np.float64)
        ref.steps_beyond_terminated = None  # gymnasium gives 0 reward after an unreset termination
        r_obs, r_rew, r_term, r_trunc, _ = ref.step(a)
        np.testing.assert_allclose(final_obs[i].numpy(), r_obs, atol=ATOL)
        assert float(reward[i]) == r_rew
        # The threshold test can flip only when the state is within rounding of the boundary.
        near = abs(abs(r_obs[0]) - 2.4) < 1e-5 or abs(abs(r_obs[2]) - 12 * 2 * math.pi / 360) < 1e-5
        if not near:
            assert bool(term[i]) == r_term
        assert not bool(trunc[i])


def test_episodes_match_gymnasium_from_the_same_start():
    env = make("CartPole-v1")
    params = env.default_params()
    ref = gym.make("CartPole-v1")
    r_obs, _ = ref.reset(seed=3)
    start = torch.tensor(r_obs)
    state = CartPoleState(*start.reshape(4, 1).unbind(0), torch.zeros(1, dtype=torch.int64))
    actions = jr.randint(jr.key(1), (600,), 0, 2)
    for t, a in enumerate(actions.tolist()):
        _, state_next, reward, term, trunc, final_obs = env.step(jr.fold_in(jr.key(2), t), state, torch.tensor([a]), params)
        r_obs, r_rew, r_term, r_trunc, _ = ref.step(a)
        np.testing.assert_allclose(final_obs[0].numpy(), r_obs, atol=1e-4)
        assert (bool(term[0]), bool(trunc[0])) == (r_term, r_trunc)
        if r_term or r_trunc:
            assert t + 1 < 500 or r_trunc
            break
        # continue from gymnasium's exact state so float drift cannot accumulate
        s = torch.tensor(ref.unwrapped.state, dtype=torch.float32)
        state = CartPoleState(*s.reshape(4, 1).unbind(0), state_next.time)
    else:
        pytest.fail("episode did not end")


def test_time_limit_truncates_at_exactly_500_and_auto_resets():
    env = make("CartPole-v1")
    params = env.default_params()
    obs, state = env.reset(jr.key(0), params, 3)
    # Hold the cart at rest upright by resetting the physics each step; only time advances.
    for t in range(500):
        state = state.replace(x=torch.zeros(3), x_dot=torch.zeros(3), theta=torch.zeros(3), theta_dot=torch.zeros(3))
        obs, state, reward, term, trunc, final_obs = env.step(jr.key(t + 1), state, torch.tensor([0, 1, 0]), params)
        if t < 499:
            assert not trunc.any() and not term.any()
    assert trunc.all() and not term.any()
    # Auto-reset: the new obs is a fresh reset (|v| <= 0.05), time restarts, final_obs is the true next obs.
    assert float(obs.abs().max()) <= 0.05
    assert torch.equal(state.time, torch.zeros(3, dtype=torch.int64))
    assert not torch.equal(final_obs, obs)


def test_termination_resets_only_the_finished_env():
    env = make("CartPole-v1")
    params = env.default_params()
    _, state = env.reset(jr.key(0), params, 2)
    state = state.replace(x=torch.tensor([2.399, 0.0]), x_dot=torch.tensor([1.0, 0.0]))
    obs, new, _, term, trunc, final_obs = env.step(jr.key(1), state, torch.tensor([1, 1]), params)
    assert term.tolist() == [True, False]
    assert float(final_obs[0, 0]) > 2.4 and abs(float(obs[0, 0])) <= 0.05
    assert torch.equal(obs[1], final_obs[1])
    assert new.time.tolist() == [0, 1]


def test_reset_range_and_determinism():
    env = make("CartPole-v1")
    obs, _ = env.reset(jr.key(5), env.default_params(), 1000)
    assert float(obs.abs().max()) <= 0.05 and float(obs.std()) > 0.02
    obs2, _ = env.reset(jr.key(5), env.default_params(), 1000)
    assert torch.equal(obs, obs2)


def test_step_does_not_mutate_inputs():
    env = make("CartPole-v1")
    _, state = env.reset(jr.key(0), env.default_params(), 4)
    leaves = [x.clone() for x in (state.x, state.x_dot, state.theta, state.theta_dot, state.time)]
    action = torch.tensor([0, 1, 1, 0])
    env.step(jr.key(1), state, action, env.default_params())
    for a, b in zip(leaves, (state.x, state.x_dot, state.theta, state.theta_dot, state.time)):
        assert torch.equal(a, b)
    assert action.tolist() == [0, 1, 1, 0]


def test_unknown_id_lists_known_ids():
    with pytest.raises(UnknownEnvError, match="known ids: .*CartPole-v1"):
        make("NoSuchEnv-v0")
    assert "CartPole-v1" in list_envs()
