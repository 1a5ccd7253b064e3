"""The partially observed envs (CartPoleNoVelocity, MemoryCue) and the pixel env (Catch):
their semantics, and that what they hide is really hidden. Compile and vmap checks live with
every other env in tests/test_envs_classic.py."""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree
from hypothesis import given, settings
from hypothesis import strategies as st

import functional_rl.kernel.random as jr
from functional_rl.envs import CartPole, CartPoleNoVelocity, Catch, CatchState, MemoryCue, MemoryCueParams, make


def run_episodes(env, params, policy, num_envs, steps, seed=0):
    """Step ``num_envs`` envs for ``steps`` steps with ``policy(obs, state) -> action``;
    returns the per-step rewards, terminations and observations ``[steps, B, ...]``."""
    obs, state = env.reset(jr.key(seed), params, num_envs)
    rewards, dones, observations = [], [], [obs]
    for t in range(steps):
        out = env.step(jr.fold_in(jr.key(seed + 1), t), state, policy(obs, state), params)
        obs, state = out.obs, out.state
        rewards.append(out.reward)
        dones.append(out.terminated | out.truncated)
        observations.append(obs)
    return torch.stack(rewards), torch.stack(dones), torch.stack(observations)


def test_cartpole_no_velocity_is_cartpole_observing_position_and_angle():
    full, masked = CartPole(), CartPoleNoVelocity()
    params = full.default_params()
    assert make("CartPoleNoVelocity-v1").observation_space.shape == (2,)
    obs_f, s_f = full.reset(jr.key(0), params, 64)
    obs_m, s_m = masked.reset(jr.key(0), params, 64)
    episodes = 0
    for t in range(300):  # random pushes: many episodes end and auto-reset on the way
        a = jr.randint(jr.fold_in(jr.key(7), t), (64,), 0, 2)
        out_f = full.step(jr.fold_in(jr.key(1), t), s_f, a, params)
        out_m = masked.step(jr.fold_in(jr.key(1), t), s_m, a, params)
        for g, w in zip(pytree.tree_leaves(out_m.state), pytree.tree_leaves(out_f.state)):
            assert torch.equal(g, w)
        assert torch.equal(out_m.obs, out_f.obs[:, [0, 2]]) and torch.equal(out_m.final_obs, out_f.final_obs[:, [0, 2]])
        assert torch.equal(out_m.reward, out_f.reward) and torch.equal(out_m.terminated, out_f.terminated)
        episodes += int(out_m.terminated.sum())
        s_f, s_m = out_f.state, out_m.state
    assert episodes > 64


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**20))
def test_memory_cue_pays_only_a_policy_that_remembers(length, seed):
    env, params, B = MemoryCue(), MemoryCueParams(length=length), 256
    remember = lambda obs, state: (state.cue > 0).long()  # noqa: E731 (reads the hidden cue)
    rewards, dones, obs = run_episodes(env, params, remember, B, 3 * length, seed)
    assert torch.equal(dones, (torch.arange(3 * length) % length == length - 1)[:, None].expand(-1, B))
    assert torch.equal(rewards.sum(0), torch.full((B,), 3.0))  # +1 per episode, 0 elsewhere
    assert torch.equal(rewards != 0, dones)
    # What a memoryless policy sees at the decision step does not depend on the cue ...
    cues = obs[0, :, 0]
    if length > 1:
        last = obs[length - 1]
        assert torch.equal(last[cues > 0][:1].expand(int((cues < 0).sum()), -1), last[cues < 0])
        # ... so any fixed answer earns about 0 on average.
        always_one, _, _ = run_episodes(env, params, lambda o, s: torch.ones(B, dtype=torch.int64), B, length, seed)
        assert abs(float(always_one.sum(0).mean())) < 0.3
    assert set(cues.tolist()) <= {-1.0, 1.0}


def test_memory_cue_cues_are_balanced_and_keyed():
    env, params = MemoryCue(), MemoryCueParams()
    obs, _ = env.reset(jr.key(3), params, 4096)
    assert abs(float(obs[:, 0].mean())) < 0.05
    assert torch.equal(env.reset(jr.key(3), params, 4096)[0], obs)
    assert not torch.equal(env.reset(jr.key(4), params, 4096)[0], obs)


def follow_the_ball(obs, state):
    return (torch.sign(state.ball_x - state.paddle_x) + 1).long()  # 0 left, 1 stay, 2 right


@pytest.mark.parametrize("rows, columns", [(10, 5), (6, 9), (2, 1)])
def test_catch_pays_plus_one_for_a_catch_and_ends_on_the_bottom_row(rows, columns):
    env, B = Catch(rows, columns), 128
    params = env.default_params()
    rewards, dones, obs = run_episodes(env, params, follow_the_ball, B, 3 * (rows - 1))
    assert obs.shape[2:] == (1, rows, columns) == env.observation_space.shape
    assert torch.equal(dones, (torch.arange(3 * (rows - 1)) % (rows - 1) == rows - 2)[:, None].expand(-1, B))
    if columns <= rows - 1:  # the paddle can always reach the ball in time
        assert torch.equal(rewards.sum(0), torch.full((B,), 3.0))
    assert torch.equal(rewards != 0, dones)
    assert torch.equal(obs.sum(dim=(2, 3, 4)), torch.full(obs.shape[:2], 2.0))  # ball + paddle, never overlapping before the end


def test_catch_random_play_scores_about_minus_six_tenths_and_the_picture_is_right():
    env = Catch()
    params = env.default_params()
    rand = lambda obs, state: jr.randint(jr.fold_in(jr.key(11), int(state.ball_y.sum())), (obs.shape[0],), 0, 3)  # noqa: E731
    rewards, dones, _ = run_episodes(env, params, rand, 4096, 9)
    assert bool(dones[-1].all()) and -0.75 < float(rewards.sum(0).mean()) < -0.45
    s = CatchState(torch.tensor([3]), torch.tensor([4]), torch.tensor([1]))
    image = env.get_obs(s, params)[0, 0]
    assert image[4, 3] == 1 and image[9, 1] == 1 and image.sum() == 2


def test_catch_refuses_a_grid_without_room_to_fall():
    with pytest.raises(ValueError, match="rows >= 2"):
        Catch(rows=1)
