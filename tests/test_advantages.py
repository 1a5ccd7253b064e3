"""compute_advantages: the fast version equals the reference loop, and GAE's identities hold."""

import pytest
import torch
from hypothesis import given, strategies as st

from functional_rl import compute_advantages, compute_advantages_reference
from functional_rl.kernel.advantages import reverse_linear_recurrence


@st.composite
def trajectories(draw, max_t=24, max_b=5):
    T = draw(st.integers(1, max_t))
    B = draw(st.integers(1, max_b))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)  # test data only; the library never uses global RNG
    p_term = draw(st.floats(0.0, 0.5))
    p_trunc = draw(st.floats(0.0, 0.5))
    return dict(
        reward=torch.randn(T, B, generator=g),
        value=torch.randn(T, B, generator=g),
        next_value=torch.randn(T, B, generator=g),
        terminated=torch.rand(T, B, generator=g) < p_term,
        truncated=torch.rand(T, B, generator=g) < p_trunc,
    )


unit = st.floats(0.0, 1.0)


def random_traj(seed, shape, p_term, p_trunc):
    """A trajectory of random ``shape`` tensors with the given termination and truncation rates."""
    g = torch.Generator().manual_seed(seed)  # test data only
    return dict(
        reward=torch.randn(shape, generator=g), value=torch.randn(shape, generator=g),
        next_value=torch.randn(shape, generator=g), terminated=torch.rand(shape, generator=g) < p_term,
        truncated=torch.rand(shape, generator=g) < p_trunc,
    )


@given(trajectories(), unit, unit)
def test_fast_equals_reference(traj, gamma, lam):
    fast = compute_advantages(**traj, gamma=gamma, gae_lambda=lam)
    ref = compute_advantages_reference(**traj, gamma=gamma, gae_lambda=lam)
    for f, r in zip(fast, ref):
        assert torch.allclose(f, r, atol=1e-4, rtol=1e-4)


@given(st.integers(1, 300), st.integers(1, 3), st.integers(0, 2**31 - 1), st.floats(0.0, 0.5))
def test_doubling_equals_the_sequential_recurrence(T, B, seed, p_zero):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, generator=g, dtype=torch.float64)
    c = torch.rand(T, B, generator=g, dtype=torch.float64) * (torch.rand(T, B, generator=g) >= p_zero)
    expected, running = torch.zeros_like(x), torch.zeros(B, dtype=torch.float64)
    for t in reversed(range(T)):
        running = x[t] + c[t] * running
        expected[t] = running
    assert torch.allclose(reverse_linear_recurrence(x, c), expected, rtol=1e-12, atol=1e-12)


def test_gae_under_vmap_equals_each_agent_alone():
    A = 3
    traj = random_traj(3, (A, 37, 2), 0.1, 0.05)
    gammas = torch.tensor([0.9, 0.99, 0.5])
    adv, ret = torch.func.vmap(lambda tr, gam: compute_advantages(**tr, gamma=gam, gae_lambda=0.95))(traj, gammas)
    for a in range(A):
        one = compute_advantages(**{k: v[a] for k, v in traj.items()}, gamma=float(gammas[a]), gae_lambda=0.95)
        assert torch.allclose(adv[a], one[0], atol=1e-6) and torch.allclose(ret[a], one[1], atol=1e-6)


def test_compiled_gae_equals_eager_and_the_reference():
    traj = random_traj(4, (128, 4), 0.05, 0.02)
    gamma, lam = torch.tensor(0.99), torch.tensor(0.95)
    compiled = torch.compile(compute_advantages, fullgraph=True, dynamic=False)
    adv_c, ret_c = compiled(**traj, gamma=gamma, gae_lambda=lam)
    adv_e, ret_e = compute_advantages(**traj, gamma=gamma, gae_lambda=lam)
    adv_r, _ = compute_advantages_reference(**traj, gamma=0.99, gae_lambda=0.95)
    assert torch.allclose(adv_c, adv_e, atol=1e-5) and torch.allclose(ret_c, ret_e, atol=1e-5)
    assert torch.allclose(adv_c, adv_r, atol=1e-4)


@given(trajectories(), unit)
def test_lambda_zero_is_the_td_error(traj, gamma):
    adv, _ = compute_advantages(**traj, gamma=gamma, gae_lambda=0.0)
    td = traj["reward"] + gamma * (~traj["terminated"]).float() * traj["next_value"] - traj["value"]
    assert torch.allclose(adv, td, atol=1e-6)


@given(trajectories(max_t=16), unit, unit, st.data())
def test_nothing_leaks_backwards_across_an_episode_boundary(traj, gamma, lam, data):
    T, B = traj["reward"].shape
    t0 = data.draw(st.integers(0, T - 1))
    b = data.draw(st.integers(0, B - 1))
    done = data.draw(st.sampled_from(["terminated", "truncated"]))
    traj[done] = traj[done].clone()
    traj[done][t0, b] = True
    before, _ = compute_advantages(**traj, gamma=gamma, gae_lambda=lam)
    changed = {k: v.clone() for k, v in traj.items()}
    changed["reward"][t0 + 1 :, b] += 100.0
    changed["next_value"][t0 + 1 :, b] -= 50.0
    after, _ = compute_advantages(**changed, gamma=gamma, gae_lambda=lam)
    assert torch.equal(before[: t0 + 1, b], after[: t0 + 1, b])


def test_hand_computed_truncation_bootstraps_termination_does_not():
    # One env, T=3, gamma=0.5, lambda=1, values 0 except next_value = 10 everywhere.
    # t=2 truncated: delta_2 = 1 + 0.5 * 10 = 6;          A_2 = 6
    # t=1 terminated: delta_1 = 1 + 0 = 1; no carry;      A_1 = 1
    # t=0 neither:   delta_0 = 1 + 0.5 * 10 = 6; A_0 = 6 + 0.5 * 1 * A_1 = 6.5
    r = torch.ones(3, 1)
    v = torch.zeros(3, 1)
    nv = torch.full((3, 1), 10.0)
    term = torch.tensor([[False], [True], [False]])
    trunc = torch.tensor([[False], [False], [True]])
    adv, ret = compute_advantages(r, v, nv, term, trunc, gamma=0.5, gae_lambda=1.0)
    assert adv.squeeze(-1).tolist() == [6.5, 1.0, 6.0]
    assert torch.equal(ret, adv + v)


def test_gamma_as_per_env_tensor_matches_scalar_runs():
    g = torch.Generator().manual_seed(0)
    traj = dict(
        reward=torch.randn(8, 2, generator=g), value=torch.randn(8, 2, generator=g),
        next_value=torch.randn(8, 2, generator=g), terminated=torch.rand(8, 2, generator=g) < 0.2,
        truncated=torch.zeros(8, 2, dtype=torch.bool),
    )
    both, _ = compute_advantages(**traj, gamma=torch.tensor([0.9, 0.5]), gae_lambda=0.8)
    for b, gam in enumerate((0.9, 0.5)):
        one, _ = compute_advantages(**traj, gamma=gam, gae_lambda=0.8)
        assert torch.allclose(both[:, b], one[:, b], atol=1e-6)


def test_inputs_are_not_mutated():
    traj = random_traj(1, (5, 3), 0.3, 0.3)
    copies = {k: v.clone() for k, v in traj.items()}
    compute_advantages(**traj, gamma=0.99, gae_lambda=0.95)
    for k in traj:
        assert torch.equal(traj[k], copies[k])


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(reward=torch.zeros(4)), r"reward must be a \[T, B\] tensor, got shape \(4,\)"),
        (dict(value=torch.zeros(4, 3)), r"share one \[T, B\] shape"),
    ],
)
def test_wrong_shapes_name_the_argument(bad, match):
    args = dict(
        reward=torch.zeros(4, 2), value=torch.zeros(4, 2), next_value=torch.zeros(4, 2),
        terminated=torch.zeros(4, 2, dtype=torch.bool), truncated=torch.zeros(4, 2, dtype=torch.bool),
    )
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        compute_advantages(**args, gamma=0.99, gae_lambda=0.95)
