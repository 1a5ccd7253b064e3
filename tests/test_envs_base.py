"""The Environment base class: a tiny env written on it gets auto-reset, the time limit and
``final_obs`` from the base class, with hand-checked values.

``Walk`` moves a walker ``action`` (0 or 1) steps to the right, terminates on reaching
``goal = 3`` and truncates at ``max_steps = 5``. Its observation is ``(position, time)`` and
its state also carries a ``[B, 2]`` leaf (position, previous position), so the base class's
select is exercised on leaves with trailing dimensions.
"""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree

import functional_rl.kernel.random as jr
from functional_rl.envs import Box, Discrete, Env, Environment, EnvStep, env_keys
from functional_rl.kernel.struct import pytree_dataclass


@pytree_dataclass
class WalkParams:
    goal: float = 3.0
    max_steps: int = 5
    random_start: bool = False


@pytree_dataclass
class WalkState:
    position: torch.Tensor  # float32 [B]
    trail: torch.Tensor  # float32 [B, 2]: (position, previous position)
    time: torch.Tensor  # int64 [B]


class Walk(Environment):
    id = "Walk-v0"
    observation_space = Box(low=(0.0, 0.0), high=(3.0, 5.0), shape=(2,))
    action_space = Discrete(2)

    def default_params(self) -> WalkParams:
        return WalkParams()

    def reset_env(self, keys, params):
        n = keys.shape[0]
        if params.random_start:
            position = jr.uniform(keys, (), low=0.0, high=0.5)
        else:
            position = torch.zeros(n)
        return WalkState(position, torch.stack([position, position], -1), torch.zeros(n, dtype=torch.int64))

    def step_env(self, state, action, params):
        position = state.position + action.to(torch.float32)
        nxt = WalkState(position, torch.stack([position, state.position], -1), state.time + 1)
        return nxt, 10.0 * action.to(torch.float32), position >= params.goal

    def get_obs(self, state, params):
        return torch.stack([state.position, state.time.to(torch.float32)], -1)


class Endless(Walk):
    """``Walk`` without a time limit: its params have no ``max_steps``."""

    def default_params(self):
        return EndlessParams()

    def truncation(self, state, params):
        return torch.zeros_like(state.time, dtype=torch.bool)


@pytree_dataclass
class EndlessParams:
    goal: float = 3.0
    random_start: bool = False


def rows(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_auto_reset_time_limit_and_final_obs_by_hand():
    env, params = Walk(), WalkParams()
    assert isinstance(env, Env)
    obs, state = env.reset(jr.key(0), params, 3)
    assert torch.equal(obs, torch.zeros(3, 2)) and state.time.tolist() == [0, 0, 0]
    # env 0 always walks (terminates at step 3), env 1 never does (truncated at step 5),
    # env 2 alternates (reaches the goal on step 5: terminated and truncated together).
    actions = [torch.tensor([1, 0, a]) for a in (1, 0, 1, 0, 1)]
    outs = []
    for t, action in enumerate(actions):
        out = env.step(jr.key(t + 1), state, action, params)
        assert type(out) is EnvStep
        outs.append(out)
        state = out.state

    # Step 3: env 0 reaches the goal. final_obs is the goal state; obs and state are a fresh start.
    o3 = outs[2]
    assert o3.terminated.tolist() == [True, False, False] and o3.truncated.tolist() == [False, False, False]
    assert torch.equal(o3.final_obs, rows([3, 3], [0, 3], [2, 3]))
    assert torch.equal(o3.obs, rows([0, 0], [0, 3], [2, 3]))
    assert o3.state.position.tolist() == [0, 0, 2] and o3.state.time.tolist() == [0, 3, 3]
    assert torch.equal(o3.state.trail, rows([0, 0], [0, 0], [2, 1]))
    assert o3.reward.tolist() == [10, 0, 10]

    # Step 5: env 1 hits the time limit, env 2 the goal on the limit; env 0 is 2 steps into its new episode.
    o5 = outs[4]
    assert o5.terminated.tolist() == [False, False, True] and o5.truncated.tolist() == [False, True, True]
    assert torch.equal(o5.final_obs, rows([2, 2], [0, 5], [3, 5]))
    assert torch.equal(o5.obs, rows([2, 2], [0, 0], [0, 0]))
    assert o5.state.time.tolist() == [2, 0, 0]
    assert torch.equal(o5.state.trail, rows([2, 1], [0, 0], [0, 0]))

    # Where no episode ended, obs == final_obs and nothing was reset.
    for out in outs[:2] + outs[3:4]:
        assert not (out.terminated | out.truncated).any()
        assert torch.equal(out.obs, out.final_obs)


def test_reset_draws_env_b_from_key_b():
    env, params = Walk(), WalkParams(random_start=True)
    keys = jr.split(jr.key(4), 3)
    obs, state = env.reset(keys, params, 3)
    for b in range(3):
        obs_b, state_b = env.reset(keys[b : b + 1], params, 1)
        assert torch.equal(obs[b : b + 1], obs_b) and torch.equal(state.position[b : b + 1], state_b.position)
    # One key [2] stands for the per-env keys env_keys(key, B).
    assert torch.equal(env.reset(jr.key(4), params, 3)[0], env.reset(env_keys(jr.key(4), 3), params, 3)[0])
    # The auto-reset draws from the step key the same way.
    state = state.replace(position=torch.full((3,), 2.5))
    out = env.step(keys, state, torch.tensor([1, 0, 1]), params)
    assert out.terminated.tolist() == [True, False, True]
    fresh, _ = env.reset(keys, params, 3)
    assert torch.equal(out.obs[[0, 2]], fresh[[0, 2]])


def test_step_never_mutates_or_aliases_its_inputs():
    env, params = Walk(), WalkParams(random_start=True)
    _, state = env.reset(jr.key(0), params, 3)
    state = state.replace(position=torch.tensor([2.0, 0.5, 0.0]), time=torch.tensor([1, 4, 0]))
    key, action = jr.key(2), torch.tensor([1, 1, 0])
    before = pytree.tree_map(torch.clone, (key, state, action))
    out = env.step(key, state, action, params)
    assert out.terminated.tolist() == [True, False, False] and out.truncated.tolist() == [False, True, False]
    for b, a in zip(pytree.tree_leaves(before), pytree.tree_leaves((key, state, action))):
        assert torch.equal(a, b)
    for leaf in pytree.tree_leaves(out):  # writing into the outputs leaves the inputs untouched
        leaf.fill_(False) if leaf.dtype == torch.bool else leaf.zero_()
    for b, a in zip(pytree.tree_leaves(before), pytree.tree_leaves((key, state, action))):
        assert torch.equal(a, b)


def test_vmap_over_stacked_states_equals_a_loop():
    env, params = Walk(), WalkParams(random_start=True)
    keys = jr.split(jr.key(1), 2)
    _, states = torch.func.vmap(lambda k: env.reset(k, params, 3))(keys)
    states = states.replace(time=torch.tensor([[0, 4, 2], [4, 0, 1]]))
    action = torch.tensor([[1, 0, 1], [0, 1, 1]])
    got = torch.func.vmap(lambda k, s, a: env.step(k, s, a, params))(keys, states, action)
    for i in range(2):
        want = env.step(keys[i], pytree.tree_map(lambda x: x[i], states), action[i], params)
        for g, w in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
            assert torch.equal(g[i], w)


def test_an_env_without_a_time_limit_overrides_truncation():
    _, state = Endless().reset(jr.key(0), EndlessParams(), 2)
    out = Endless().step(jr.key(1), state.replace(time=torch.tensor([10**6, 0])), torch.tensor([0, 1]), EndlessParams())
    assert out.truncated.tolist() == [False, False] and out.state.time.tolist() == [10**6 + 1, 1]
    # Without the override the default time limit says what it needs.
    with pytest.raises(TypeError, match=r"Walk: the default time limit needs .*params.max_steps.*override truncation"):
        Walk().step(jr.key(1), state, torch.tensor([0, 1]), EndlessParams())


def test_errors_name_what_to_fix():
    env, params = Walk(), WalkParams()
    _, state = env.reset(jr.key(0), params, 3)
    with pytest.raises(ValueError, match=r"Walk.step: action must have shape \[B\]=\(3,\), got \(3, 1\)"):
        env.step(jr.key(1), state, torch.zeros(3, 1, dtype=torch.int64), params)

    class Continuous(Walk):
        action_space = Box(low=(-1.0,), high=(1.0,), shape=(1,))

    with pytest.raises(ValueError, match=r"Continuous.step: action must have shape \[B, 1\]=\(3, 1\), got \(3,\)"):
        Continuous().step(jr.key(1), state, torch.zeros(3), params)

    class Half(Environment):
        action_space = Discrete(2)

    with pytest.raises(NotImplementedError, match=r"Half must define reset_env\(keys, params\)"):
        Half().reset(jr.key(0), None, 2)
    with pytest.raises(NotImplementedError, match=r"Half must define step_env\(state, action, params\)"):
        Half().step(jr.key(0), state, torch.zeros(3, dtype=torch.int64), None)
    with pytest.raises(NotImplementedError, match=r"Half must define default_params\(\)"):
        Half().default_params()
