"""The five probe environments: exact observations, rewards and episode boundaries.

Every number here is exact (the probes only produce -1, 0 and +1), so the comparisons are
``torch.equal`` / ``==``. Compilation (eager == compiled) is tested for all envs in
``test_envs_classic.py::test_step_compiles_fullgraph_and_matches_eager``.
"""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree
from hypothesis import given, settings
from hypothesis import strategies as st

import functional_rl.kernel.random as jr
from functional_rl.envs import Box, Discrete, Probe1, Probe2, Probe3, Probe4, Probe5, ProbeState, make

PROBES = {"Probe1-v0": Probe1, "Probe2-v0": Probe2, "Probe3-v0": Probe3, "Probe4-v0": Probe4, "Probe5-v0": Probe5}
N_ACTIONS = {"Probe1-v0": 1, "Probe2-v0": 1, "Probe3-v0": 1, "Probe4-v0": 2, "Probe5-v0": 2}


def col(*values: float) -> torch.Tensor:
    """float32 ``[B, 1]`` observations."""
    return torch.tensor(values, dtype=torch.float32)[:, None]


@pytest.mark.parametrize("env_id", list(PROBES))
def test_registry_spaces_and_reset(env_id):
    env = make(env_id)
    assert isinstance(env, PROBES[env_id]) and env.id == env_id
    assert isinstance(env.observation_space, Box) and env.observation_space.shape == (1,)
    assert isinstance(env.action_space, Discrete) and env.action_space.n == N_ACTIONS[env_id]
    obs, state = env.reset(jr.key(0), env.default_params(), num_envs=256)
    assert obs.shape == (256, 1) and obs.dtype == torch.float32
    assert state.time.tolist() == [0] * 256
    assert torch.equal(obs[:, 0], state.obs)
    low, high = env.observation_space.low_tensor(), env.observation_space.high_tensor()
    assert ((obs >= low) & (obs <= high)).all()
    values = set(obs[:, 0].tolist())
    if env_id in ("Probe2-v0", "Probe5-v0"):
        assert values == {-1.0, 1.0}
        # A fair coin: 256 draws, the count of +1 within 4.5 standard deviations (8) of 128.
        assert abs(int((obs > 0).sum()) - 128) <= 36
    else:
        assert values == {0.0}


def test_probe1_reward_one_and_one_step_episodes():
    env = Probe1()
    p = env.default_params()
    obs, s = env.reset(jr.key(0), p, 3)
    for k in range(3):  # V(0) = 1: every step is a whole episode paying +1
        obs, s, r, term, trunc, final_obs = env.step(jr.key(k), s, torch.zeros(3, dtype=torch.int64), p)
        assert r.tolist() == [1.0, 1.0, 1.0] and r.dtype == torch.float32
        assert term.tolist() == [True] * 3 and trunc.tolist() == [False] * 3
        assert torch.equal(obs, col(0, 0, 0)) and torch.equal(final_obs, col(0, 0, 0))
        assert s.time.tolist() == [0, 0, 0]


def test_probe2_reward_equals_observation():
    env = Probe2()
    p = env.default_params()
    s = ProbeState(torch.tensor([-1.0, 1.0, 1.0, -1.0]), torch.zeros(4, dtype=torch.int64))
    obs, s2, r, term, trunc, final_obs = env.step(jr.key(1), s, torch.zeros(4, dtype=torch.int64), p)
    assert r.tolist() == [-1.0, 1.0, 1.0, -1.0]  # V(o) = o
    assert term.all() and not trunc.any()
    assert torch.equal(final_obs, col(-1, 1, 1, -1))  # the terminal obs, repeated
    # The next episode's observation is a fresh draw: the reset of the same key.
    reset_obs, reset_state = env.reset(jr.key(1), p, 4)
    assert torch.equal(obs, reset_obs) and torch.equal(s2.obs, reset_state.obs)
    assert set(obs[:, 0].tolist()) <= {-1.0, 1.0}


def test_probe3_two_step_episodes_and_discounting():
    env = Probe3()
    p = env.default_params()
    obs, s = env.reset(jr.key(0), p, 2)
    a = torch.zeros(2, dtype=torch.int64)
    trace = []
    for k in range(4):  # two whole episodes
        prev = obs
        obs, s, r, term, trunc, final_obs = env.step(jr.key(k), s, a, p)
        trace.append((prev[0, 0].item(), r[0].item(), term[0].item(), final_obs[0, 0].item(), obs[0, 0].item()))
        assert not trunc.any()
    # (obs, reward, terminated, final_obs, next obs): 0 -> 1 pays 0; 1 -> end pays +1, then reset to 0.
    assert trace == [(0.0, 0.0, False, 1.0, 1.0), (1.0, 1.0, True, 1.0, 0.0)] * 2
    # The known values: V(1) = r = 1, V(0) = 0 + gamma * V(1) = gamma.
    gamma = 0.99
    rewards = [t[1] for t in trace[:2]]
    assert rewards[0] + gamma * rewards[1] == gamma and rewards[1] == 1.0


def test_probe3_envs_out_of_phase_stay_independent():
    env = Probe3()
    s = ProbeState(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    obs, s, r, term, trunc, final_obs = env.step(jr.key(0), s, torch.zeros(2, dtype=torch.int64), env.default_params())
    assert r.tolist() == [0.0, 1.0] and term.tolist() == [False, True]
    assert torch.equal(obs, col(1, 0)) and torch.equal(final_obs, col(1, 1))
    assert s.time.tolist() == [1, 0] and s.obs.tolist() == [1.0, 0.0]


def test_probe4_reward_depends_on_action_only():
    env = Probe4()
    p = env.default_params()
    _, s = env.reset(jr.key(0), p, 4)
    obs, s, r, term, trunc, final_obs = env.step(jr.key(1), s, torch.tensor([0, 1, 1, 0]), p)
    assert r.tolist() == [-1.0, 1.0, 1.0, -1.0]  # optimal policy: always action 1, V* = 1
    assert term.all() and not trunc.any()
    assert torch.equal(obs, col(0, 0, 0, 0)) and torch.equal(final_obs, col(0, 0, 0, 0))


@settings(max_examples=50, deadline=None)
@given(
    obs=st.lists(st.sampled_from([-1.0, 1.0]), min_size=1, max_size=8).flatmap(
        lambda o: st.tuples(st.just(o), st.lists(st.integers(0, 1), min_size=len(o), max_size=len(o)))
    )
)
def test_probe5_reward_is_plus_one_iff_action_matches_sign(obs):
    values, actions = obs
    env = Probe5()
    s = ProbeState(torch.tensor(values), torch.zeros(len(values), dtype=torch.int64))
    new_obs, s2, r, term, trunc, final_obs = env.step(jr.key(3), s, torch.tensor(actions), env.default_params())
    expected = [1.0 if a == (1 if o > 0 else 0) else -1.0 for o, a in zip(values, actions)]
    assert r.tolist() == expected
    assert term.all() and not trunc.any()
    assert final_obs[:, 0].tolist() == values
    assert set(new_obs[:, 0].tolist()) <= {-1.0, 1.0}
    # The optimal policy a = (o > 0) earns +1 everywhere; its opposite -1 everywhere.
    best = torch.tensor([1 if o > 0 else 0 for o in values])
    assert env.step(jr.key(3), s, best, env.default_params())[2].tolist() == [1.0] * len(values)
    assert env.step(jr.key(3), s, 1 - best, env.default_params())[2].tolist() == [-1.0] * len(values)


@pytest.mark.parametrize("env_id", list(PROBES))
def test_step_does_not_mutate_inputs(env_id):
    env = make(env_id)
    p = env.default_params()
    _, state = env.reset(jr.key(0), p, 4)
    state = state.replace(time=state.time + torch.tensor([0, 1, 0, 1]))  # Probe3: both phases
    action, key = torch.arange(4) % env.action_space.n, jr.key(5)
    before = pytree.tree_map(torch.clone, (key, state, action))
    out = env.step(key, state, action, p)
    for b, a in zip(pytree.tree_leaves(before), pytree.tree_leaves((key, state, action))):
        assert torch.equal(a, b)
    # No output aliases an input: writing into the outputs leaves the inputs untouched.
    for leaf in pytree.tree_leaves(out):
        leaf.zero_() if leaf.dtype != torch.bool else leaf.fill_(False)
    for b, a in zip(pytree.tree_leaves(before), pytree.tree_leaves((key, state, action))):
        assert torch.equal(a, b)


@pytest.mark.parametrize("env_id", list(PROBES))
def test_wrong_action_shape_raises(env_id):
    env = make(env_id)
    _, state = env.reset(jr.key(0), env.default_params(), 3)
    with pytest.raises(ValueError, match=r"action must have shape \[B\]=\(3,\)"):
        env.step(jr.key(1), state, torch.zeros(3, 1, dtype=torch.int64), env.default_params())
