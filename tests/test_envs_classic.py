"""The classic-control ports against gymnasium's originals, step for step.

Each test sets ``gymnasium.make(id).unwrapped.state`` to the state our batched env holds and
compares one transition (layer (d) of STYLE.md), plus the time limit, auto-reset, reset
ranges, purity, and eager == ``torch.compile(fullgraph=True)`` == ``vmap`` for every env
(the probes included, so each env's compile test lives in one parametrized test).

Tolerances. gymnasium integrates in float64; our envs in float32. Every step comparison is
run twice on the same hypothesis-drawn states (all exactly representable in float32):

* in float64 (our code accepts float64 states), at ``1e-9``: this pins the formulas; the same
  code matches gymnasium to ~1e-14. (MountainCarContinuous and Pendulum: ``1e-7``, because
  gymnasium itself computes part of their step in float32: the continuous car stores its state
  as float32 and multiplies the float32 action by ``power`` in float32, and Pendulum's
  ``3 / (m l^2) * u`` with a float32 ``u`` stays float32 under NumPy 2's promotion rules.)
* in float32, the dtype we ship, at a per-env tolerance that only has to absorb float32
  rounding. Measured on 3 000 random transitions each: MountainCar and Pendulum states differ
  by < 5e-7 and rewards (up to ~16 in size) by < 5e-6, so ``atol = rtol = 1e-5`` holds with
  margin. The Acrobot's RK4 squares velocities up to 9 pi (``dtheta^2 ~ 800`` inside the
  derivative): on 20 000 transitions its float32 velocities differ by up to 3e-3 absolute
  (1e-4 relative) and its cos/sin by 2e-5, so ``atol = rtol = 1e-3`` (a 2x margin).

Terminations decided by a threshold within rounding distance (e.g. a tip height within
1e-3 of the bar) are not compared; everything else about those rows still is.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import gymnasium
import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree
from hypothesis import given, settings
from hypothesis import strategies as st

import functional_rl.kernel.random as jr
from functional_rl.envs import (
    AcrobotState,
    Box,
    Discrete,
    MountainCarState,
    PendulumState,
    list_envs,
    make,
)

PI = math.pi
CLASSIC_IDS = ["Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Pendulum-v1"]
PROBE_IDS = ["Probe1-v0", "Probe2-v0", "Probe3-v0", "Probe4-v0", "Probe5-v0"]
#: Partially observed and pixel envs (their own semantics: tests/test_envs_memory.py).
OTHER_IDS = ["CartPoleNoVelocity-v1", "MemoryCue-v0", "Catch-v0", "MaskedChoice-v0"]


def f32(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Floats in ``[lo, hi]`` rounded to float32, so both sides start from the same numbers."""
    return st.floats(lo, hi, allow_nan=False).map(lambda x: float(np.float32(x)))


# ---------------------------------------------------------------------------------------------
# Per-env facts: state class, hypothesis strategy of one env's (state..., action), tolerances,
# gymnasium's reset range, the obs formula (to read gymnasium's float64 state), ambiguity.
# ---------------------------------------------------------------------------------------------


def _acrobot_obs(s):
    return np.array([math.cos(s[0]), math.sin(s[0]), math.cos(s[1]), math.sin(s[1]), s[2], s[3]])


def _acrobot_reset_ok(obs):
    # gymnasium: all four state variables uniform in [-0.1, 0.1].
    cos_ok = min(obs[0], obs[2]) >= math.cos(0.1) - 1e-6
    sin_ok = max(abs(obs[1]), abs(obs[3])) <= math.sin(0.1) + 1e-6
    return bool(cos_ok and sin_ok and (np.abs(obs[4:]) <= 0.1 + 1e-6).all())


def _acrobot_ambiguous(row, s_next):
    margin = -math.cos(s_next[0]) - math.cos(s_next[1] + s_next[0]) - 1.0
    return abs(margin) < 1e-3


def _mountain_car_ambiguous(goal, power, clip_action):
    def ambiguous(row, s_next):
        p0, v0, a = row
        push = min(max(a, -1.0), 1.0) * power if clip_action else (a - 1) * power
        v = min(max(v0 + push - 0.0025 * math.cos(3 * p0), -0.07), 0.07)
        p_raw = p0 + v
        p, v_next = s_next
        return abs(p - goal) < 1e-5 or (p >= goal - 1e-5 and abs(v_next) < 1e-6) or abs(p_raw + 1.2) < 1e-5

    return ambiguous


def _mountain_car_reset_ok(obs):
    # gymnasium: position uniform in [-0.6, -0.4], velocity 0.
    return -0.6 - 1e-6 <= obs[0] <= -0.4 + 1e-6 and obs[1] == 0.0


def _pendulum_obs(s):
    return np.array([math.cos(s[0]), math.sin(s[0]), s[1]])


def _pendulum_reset_ok(obs):
    # gymnasium: theta uniform in [-pi, pi] (any cos/sin), theta_dot uniform in [-1, 1].
    return abs(obs[2]) <= 1.0 + 1e-6 and abs(obs[0] ** 2 + obs[1] ** 2 - 1.0) < 1e-5


@dataclasses.dataclass(frozen=True)
class Case:
    env_id: str
    state_cls: type
    row: st.SearchStrategy  # one env: (*state floats, action)
    gym_obs: Callable[[np.ndarray], np.ndarray]  # obs from gymnasium's float64 state
    reset_ok: Callable[[np.ndarray], bool]
    ambiguous: Callable[[tuple, np.ndarray], bool]
    tol32: float
    tol64: float = 1e-9
    angle_dims: tuple[int, ...] = ()  # state entries compared modulo 2 pi


CASES = {
    "Acrobot-v1": Case(
        "Acrobot-v1",
        AcrobotState,
        st.tuples(f32(-PI, PI), f32(-PI, PI), f32(-4 * PI, 4 * PI), f32(-9 * PI, 9 * PI), st.integers(0, 2)),
        _acrobot_obs,
        _acrobot_reset_ok,
        _acrobot_ambiguous,
        tol32=1e-3,
        angle_dims=(0, 1),
    ),
    "MountainCar-v0": Case(
        "MountainCar-v0",
        MountainCarState,
        st.tuples(f32(-1.2, 0.6), f32(-0.07, 0.07), st.integers(0, 2)),
        np.asarray,
        _mountain_car_reset_ok,
        _mountain_car_ambiguous(goal=0.5, power=0.001, clip_action=False),
        tol32=1e-5,
    ),
    "MountainCarContinuous-v0": Case(
        "MountainCarContinuous-v0",
        MountainCarState,
        # Actions beyond [-1, 1] check the clipping and the unclipped action cost.
        st.tuples(f32(-1.2, 0.6), f32(-0.07, 0.07), f32(-2.0, 2.0)),
        np.asarray,
        _mountain_car_reset_ok,
        _mountain_car_ambiguous(goal=0.45, power=0.0015, clip_action=True),
        tol32=1e-5,
        tol64=1e-7,  # gymnasium rounds this env's state to float32 after every step
    ),
    "Pendulum-v1": Case(
        "Pendulum-v1",
        PendulumState,
        # theta is never wrapped by gymnasium, so several turns are legal states.
        st.tuples(f32(-10.0, 10.0), f32(-8.0, 8.0), f32(-3.0, 3.0)),
        _pendulum_obs,
        _pendulum_reset_ok,
        lambda row, s_next: False,  # no termination, every threshold is continuous
        tol32=1e-5,
        tol64=1e-7,  # gymnasium's torque term 3 / (m l^2) * u stays float32 (NumPy 2 keeps float32 * float)
    ),
}


@functools.cache
def gym_env(env_id: str):
    """One unwrapped gymnasium env per id (state is overwritten before every step)."""
    env = gymnasium.make(env_id).unwrapped
    env.reset(seed=0)
    return env


def make_state(case: Case, rows, dtype: torch.dtype, time) -> object:
    cols = list(zip(*rows))
    n_float = len(cols) - 1
    floats = [torch.tensor(c, dtype=dtype) for c in cols[:n_float]]
    return case.state_cls(*floats, torch.as_tensor(time, dtype=torch.int64))


def make_action(env, actions) -> torch.Tensor:
    if isinstance(env.action_space, Discrete):
        return torch.tensor(actions, dtype=torch.int64)
    return torch.tensor(actions, dtype=torch.float32)[:, None]


def gym_action(env, a):
    return int(a) if isinstance(env.action_space, Discrete) else np.array([a], dtype=np.float32)


def float_fields(state) -> list[torch.Tensor]:
    return [getattr(state, f) for f in type(state).__data_fields__ if f != "time"]


def gym_step(env_id: str, state_row, action):
    """gymnasium's transition from ``state_row`` (float64); returns (obs, reward, terminated, next state)."""
    genv = gym_env(env_id)
    genv.state = np.array(state_row, dtype=np.float64)
    obs, reward, terminated, truncated, _ = genv.step(action)
    assert truncated is False  # the unwrapped env never truncates
    return obs, float(reward), bool(terminated), np.asarray(genv.state, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Step for step against gymnasium
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", CLASSIC_IDS)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_step_matches_gymnasium(env_id, data):
    case = CASES[env_id]
    env = make(env_id)
    params = env.default_params()
    rows = data.draw(st.lists(case.row, min_size=1, max_size=4), label="rows")
    # Times just below the limit are drawn often so truncation and auto-reset are exercised.
    times = data.draw(
        st.lists(
            st.one_of(st.just(params.max_steps - 1), st.integers(0, params.max_steps - 1)),
            min_size=len(rows),
            max_size=len(rows),
        ),
        label="times",
    )
    action = make_action(env, [r[-1] for r in rows])
    expected = [gym_step(env_id, r[:-1], gym_action(env, r[-1])) for r in rows]

    for dtype, tol in ((torch.float64, case.tol64), (torch.float32, case.tol32)):
        state = make_state(case, rows, dtype, times)
        obs, nstate, reward, term, trunc, final_obs = env.step(jr.key(7), state, action, params)
        assert obs.dtype == reward.dtype == final_obs.dtype == dtype
        assert term.dtype == trunc.dtype == torch.bool
        for i, (row, (g_obs32, g_reward, g_term, g_next)) in enumerate(zip(rows, expected)):
            g_obs = case.gym_obs(g_next)
            np.testing.assert_allclose(g_obs32, g_obs, atol=1e-6)  # our reading of gymnasium's obs
            np.testing.assert_allclose(final_obs[i].double().numpy(), g_obs, atol=tol, rtol=tol)
            if not case.ambiguous(row, g_next):
                assert bool(term[i]) == g_term
                np.testing.assert_allclose(float(reward[i]), g_reward, atol=tol, rtol=tol)
            assert bool(trunc[i]) == (times[i] + 1 >= params.max_steps)
            if bool(term[i]) or bool(trunc[i]):
                # Auto-reset: a fresh episode starts; final_obs (checked above) is the true next obs.
                assert int(nstate.time[i]) == 0
                assert case.reset_ok(obs[i].double().numpy()), obs[i]
            else:
                assert int(nstate.time[i]) == times[i] + 1
                assert torch.equal(obs[i], final_obs[i])
                ours = np.array([float(x[i]) for x in float_fields(nstate)])
                diff = ours - g_next
                for d in case.angle_dims:
                    diff[d] = math.remainder(diff[d], 2 * PI)
                np.testing.assert_allclose(diff, 0.0, atol=tol + tol * np.abs(g_next).max())


# ---------------------------------------------------------------------------------------------
# Time limit, auto-reset, reset ranges
# ---------------------------------------------------------------------------------------------

# A constant action under which no episode terminates early (no or a weak torque / push).
IDLE_ACTION = {"Acrobot-v1": 1, "MountainCar-v0": 1, "MountainCarContinuous-v0": 0.1, "Pendulum-v1": 0.1}


@pytest.mark.parametrize("env_id", CLASSIC_IDS)
def test_time_limit_truncates_exactly_like_gymnasium(env_id):
    env = make(env_id)
    params = env.default_params()
    limit = gymnasium.spec(env_id).max_episode_steps
    assert params.max_steps == limit
    obs, state = env.reset(jr.key(3), params, num_envs=2)
    genv = gymnasium.make(env_id)  # with its TimeLimit wrapper
    genv.reset(seed=0)
    genv.unwrapped.state = np.array([float(x[0]) for x in float_fields(state)], dtype=np.float64)
    action = make_action(env, [IDLE_ACTION[env_id]] * 2)
    keys = jr.split(jr.key(4), limit)
    total, g_total = torch.zeros(2), 0.0
    for t in range(limit):
        obs, state, reward, term, trunc, final_obs = env.step(keys[t], state, action, params)
        g_obs, g_reward, g_term, g_trunc, _ = genv.step(gym_action(env, IDLE_ACTION[env_id]))
        total, g_total = total + reward, g_total + g_reward
        assert not term.any() and not g_term
        assert trunc.tolist() == [t == limit - 1] * 2
        assert g_trunc == (t == limit - 1)
    # The last true observation and the return agree with gymnasium's run of the same episode.
    # Rounding accumulates over an episode: measured at most 2e-4 (Pendulum's obs after 200 steps)
    # and 4e-6 relative on the return, hence 1e-3 and 1e-4.
    np.testing.assert_allclose(final_obs[0].numpy(), g_obs, atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(float(total[0]), g_total, rtol=1e-4)
    if env_id in ("Acrobot-v1", "MountainCar-v0"):
        assert float(total[0]) == -limit
    # Auto-reset after truncation.
    assert state.time.tolist() == [0, 0]
    assert all(CASES[env_id].reset_ok(o) for o in obs.double().numpy())
    assert not torch.equal(obs, final_obs)


def _terminal_batch(env_id):
    """Two envs: env 0 finishes on this step, env 1 does not. Returns (state, action, expected reward[0])."""
    t = torch.tensor
    if env_id == "Acrobot-v1":  # first link pointing up: tip height 2 > 1
        return AcrobotState(t([PI - 0.01, 0.0]), t([0.0, 0.0]), t([0.0, 0.0]), t([0.0, 0.0]), t([3, 3])), t([1, 1]), 0.0
    if env_id == "MountainCar-v0":  # past the flag and moving right
        return MountainCarState(t([0.55, -0.5]), t([0.05, 0.0]), t([3, 3])), t([2, 1]), -1.0
    if env_id == "MountainCarContinuous-v0":  # reward 100 - 0.1 * 1^2
        return MountainCarState(t([0.5, -0.5]), t([0.05, 0.0]), t([3, 3])), t([[1.0], [0.0]]), 99.9
    # Pendulum never terminates: env 0 is on its last step instead.
    return PendulumState(t([0.5, 0.5]), t([1.0, 1.0]), t([199, 3])), t([[1.0], [1.0]]), None


@pytest.mark.parametrize("env_id", CLASSIC_IDS)
def test_auto_reset_returns_reset_obs_and_true_final_obs(env_id):
    env = make(env_id)
    params = env.default_params()
    state, action, reward0 = _terminal_batch(env_id)
    obs, nstate, reward, term, trunc, final_obs = env.step(jr.key(11), state, action, params)
    done = term | trunc
    assert done.tolist() == [True, False]
    assert term.tolist() == ([False, False] if env_id == "Pendulum-v1" else [True, False])
    if reward0 is not None:
        assert float(reward[0]) == pytest.approx(reward0, abs=1e-5)
    case = CASES[env_id]
    row = [float(x[0]) for x in float_fields(state)]
    a0 = float(action[0, 0]) if action.dim() == 2 else int(action[0])
    _, g_reward, g_term, g_next = gym_step(env_id, row, gym_action(env, a0))
    assert g_term == bool(term[0])
    final0 = final_obs[0].double().numpy()
    np.testing.assert_allclose(final0, case.gym_obs(g_next), atol=case.tol32, rtol=case.tol32)
    np.testing.assert_allclose(float(reward[0]), g_reward, atol=1e-5)
    # env 0: a fresh episode; env 1: carries on, obs == final_obs.
    assert case.reset_ok(obs[0].double().numpy())
    assert not torch.allclose(obs[0], final_obs[0])
    assert nstate.time.tolist() == [0, int(state.time[1]) + 1]
    assert torch.equal(obs[1], final_obs[1])
    # The reset obs is the obs of the reset state.
    reset_obs, _ = env.reset(jr.key(11), params, 2)
    assert torch.equal(obs[0], reset_obs[0])


@pytest.mark.parametrize("env_id", CLASSIC_IDS)
def test_reset_lies_in_gymnasium_reset_range(env_id):
    env = make(env_id)
    case = CASES[env_id]
    obs, state = env.reset(jr.key(5), env.default_params(), num_envs=2048)
    assert obs.shape == (2048, *env.observation_space.shape) and obs.dtype == torch.float32
    assert state.time.tolist() == [0] * 2048
    assert all(case.reset_ok(o) for o in obs.double().numpy())
    low, high = env.observation_space.low_tensor(), env.observation_space.high_tensor()
    assert ((obs >= low) & (obs <= high)).all()
    # The predicate is gymnasium's range: gymnasium's own resets satisfy it too.
    genv = gymnasium.make(env_id)
    assert all(case.reset_ok(genv.reset(seed=s)[0].astype(np.float64)) for s in range(50))
    # Uniform over the whole range, not a corner of it: each raw state variable fills its interval.
    spans = {"Acrobot-v1": [(-0.1, 0.1)] * 4, "Pendulum-v1": [(-PI, PI), (-1.0, 1.0)]}
    spans["MountainCar-v0"] = spans["MountainCarContinuous-v0"] = [(-0.6, -0.4), (0.0, 0.0)]
    for x, (lo, hi) in zip(float_fields(state), spans[env_id]):
        assert float(x.min()) >= lo and float(x.max()) <= hi
        assert float(x.min()) <= lo + 0.01 * (hi - lo) and float(x.max()) >= hi - 0.01 * (hi - lo)
    # Same key, same episode starts; another key, other starts.
    assert torch.equal(env.reset(jr.key(5), env.default_params(), 2048)[0], obs)
    assert not torch.equal(env.reset(jr.key(6), env.default_params(), 2048)[0], obs)


# ---------------------------------------------------------------------------------------------
# Purity and compilation (every registered env, probes included)
# ---------------------------------------------------------------------------------------------


def _some_actions(env, n: int) -> torch.Tensor:
    if isinstance(env.action_space, Discrete):
        return torch.arange(n, dtype=torch.int64) % env.action_space.n
    assert isinstance(env.action_space, Box)
    # Out-of-range values included: the env clips them.
    return torch.tensor([-2.5, -0.3, 0.7, 3.0], dtype=torch.float32)[:n, None]


def _about_to_finish(env, n: int):
    """A reset state where env 1 is on its last step, so the auto-reset path is taken."""
    params = env.default_params()
    _, state = env.reset(jr.key(0), params, n)
    max_steps = getattr(params, "max_steps", None)
    if max_steps is None:  # probes end by termination after one or two steps
        return state
    return state.replace(time=torch.tensor([0, max_steps - 1, 5, 0][:n], dtype=torch.int64))


@pytest.mark.parametrize("env_id", CLASSIC_IDS)
def test_step_does_not_mutate_inputs(env_id):
    env = make(env_id)
    params = env.default_params()
    state = _about_to_finish(env, 4)
    action, key = _some_actions(env, 4), jr.key(2)
    before = pytree.tree_map(torch.clone, (key, state, action))
    out = env.step(key, state, action, params)
    after = (key, state, action)
    for b, a in zip(pytree.tree_leaves(before), pytree.tree_leaves(after)):
        assert torch.equal(a, b)
    assert bool(out[4][1])  # the auto-reset path was taken
    assert dataclasses.asdict(params) == dataclasses.asdict(env.default_params())
    # No output aliases an input: writing into the outputs leaves the inputs untouched.
    for leaf in pytree.tree_leaves(out):
        leaf.zero_() if leaf.dtype != torch.bool else leaf.fill_(False)
    for b, a in zip(pytree.tree_leaves(before), pytree.tree_leaves(after)):
        assert torch.equal(a, b)


def test_every_registered_env_is_tested_for_compilation():
    assert set(list_envs()) == set(CLASSIC_IDS + PROBE_IDS + OTHER_IDS) | {"CartPole-v1"}  # CartPole: test_cartpole.py


@pytest.mark.parametrize("env_id", CLASSIC_IDS + PROBE_IDS + OTHER_IDS)
def test_step_compiles_fullgraph_and_matches_eager(env_id):
    torch._dynamo.reset()  # each env starts from an empty dynamo cache (the cache limit is per code object)
    env = make(env_id)
    params = env.default_params()
    state = _about_to_finish(env, 4)
    action = _some_actions(env, 4)
    compiled = torch.compile(env.step, fullgraph=True, dynamic=False)
    for k in (1, 2):  # the second call steps from the first call's output state: no recompile
        with torch.compiler.set_stance("fail_on_recompile" if k == 2 else "default"):
            got = compiled(jr.key(k), state, action, params)
        want = env.step(jr.key(k), state, action, params)
        got_leaves, want_leaves = pytree.tree_leaves(got), pytree.tree_leaves(want)
        assert len(got_leaves) == len(want_leaves)
        for g, w in zip(got_leaves, want_leaves):
            assert g.dtype == w.dtype and g.shape == w.shape
            if w.is_floating_point():
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(g, w)
        state = want[1]


@pytest.mark.parametrize("env_id", CLASSIC_IDS + PROBE_IDS + OTHER_IDS)
def test_vmap_over_keys_equals_a_loop(env_id):
    """``train_many`` vmaps whole agents, envs included: 3 agents x 4 envs == 3 separate calls, bit for bit."""
    env = make(env_id)
    params = env.default_params()
    keys = jr.split(jr.key(0), 3)
    action = torch.stack([_some_actions(env, 4)] * 3)
    action = action.flip(0) if action.dtype == torch.int64 else action * torch.tensor([1.0, -1.0, 0.5])[:, None, None]
    _, states = torch.func.vmap(lambda k: env.reset(k, params, 4))(keys)
    got = torch.func.vmap(lambda k, s, a: env.step(k, s, a, params))(keys, states, action)
    for i in range(3):
        _, state_i = env.reset(keys[i], params, 4)
        want = env.step(keys[i], state_i, action[i], params)
        for g, w in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
            assert torch.equal(g[i], w)
