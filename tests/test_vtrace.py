"""compute_vtrace: the fast version equals the reference loop, and V-trace's identities hold."""

import math

import pytest
import torch
from hypothesis import given, strategies as st

from functional_rl import compute_advantages
from functional_rl.kernel.vtrace import compute_vtrace, compute_vtrace_reference


def random_traj(seed, shape, p_term, p_trunc, dtype=torch.float32, consistent=False):
    """Random ``shape`` tensors, ``log_rho`` in [-3, 3]. ``consistent``: ``next_value[t] =
    value[t+1]`` wherever the step is not done and not last, as on a real trajectory."""
    g = torch.Generator().manual_seed(seed)  # test data only
    traj = dict(
        reward=torch.randn(shape, generator=g, dtype=dtype), value=torch.randn(shape, generator=g, dtype=dtype),
        next_value=torch.randn(shape, generator=g, dtype=dtype), terminated=torch.rand(shape, generator=g) < p_term,
        truncated=torch.rand(shape, generator=g) < p_trunc, log_rho=6 * torch.rand(shape, generator=g, dtype=dtype) - 3,
    )
    if consistent:
        follows = ~(traj["terminated"] | traj["truncated"])[:-1]
        traj["next_value"][:-1] = torch.where(follows, traj["value"][1:], traj["next_value"][:-1])
    return traj


@st.composite
def trajectories(draw, dtype=torch.float32, consistent=False):
    shape = (draw(st.integers(1, 20)), draw(st.integers(1, 5)))
    seed = draw(st.integers(0, 2**31 - 1))
    return random_traj(seed, shape, draw(st.floats(0.0, 0.5)), draw(st.floats(0.0, 0.5)), dtype, consistent)


unit = st.floats(0.0, 1.0)


@given(trajectories(dtype=torch.float64), unit, unit, st.floats(0.05, 5.0), st.floats(0.05, 2.0))
def test_fast_equals_reference(traj, gamma, lam, rho_bar, c_bar):
    # float64 so that c_bar > 1 (traces that grow) stays within the 1e-5 tolerance.
    kw = dict(gamma=gamma, gae_lambda=lam, rho_bar=rho_bar, c_bar=c_bar)
    for f, r in zip(compute_vtrace(**traj, **kw), compute_vtrace_reference(**traj, **kw)):
        assert torch.allclose(f, r, atol=1e-5, rtol=1e-5)


@given(trajectories(consistent=True), unit, unit)
def test_on_policy_is_gae(traj, gamma, lam):
    traj["log_rho"] = torch.zeros_like(traj["log_rho"])
    adv, vs = compute_vtrace(**traj, gamma=gamma, gae_lambda=lam)
    _, returns = compute_advantages(**{k: v for k, v in traj.items() if k != "log_rho"}, gamma=gamma, gae_lambda=lam)
    assert torch.allclose(vs, returns, atol=1e-5)
    # next_vs as IMPALA states it: vs_{t+1} inside an episode, next_value at a truncation or at T-1.
    done = traj["terminated"] | traj["truncated"]
    next_vs = torch.where(done, traj["next_value"], torch.cat([vs[1:], traj["next_value"][-1:]]))
    expected = traj["reward"] + gamma * (~traj["terminated"]).float() * next_vs - traj["value"]
    assert torch.allclose(adv, expected, atol=1e-5)


@given(st.integers(1, 20), st.integers(0, 2**31 - 1), unit)
def test_lambda_one_no_dones_is_the_bootstrapped_discounted_return(T, seed, gamma):
    traj = random_traj(seed, (T, 2), 0.0, 0.0, dtype=torch.float64, consistent=True)
    traj["log_rho"] = torch.zeros_like(traj["log_rho"])
    _, vs = compute_vtrace(**traj, gamma=gamma)
    r, boot = traj["reward"], traj["next_value"][-1]
    for t in range(T):
        expected = sum(gamma**k * r[t + k] for k in range(T - t)) + gamma ** (T - t) * boot
        assert torch.allclose(vs[t], expected, atol=1e-9)


@given(trajectories(dtype=torch.float64), unit, st.floats(0.05, 3.0))
def test_lambda_one_and_equal_clips_give_pg_advantage_equal_to_vs_minus_value(traj, gamma, clip):
    adv, vs = compute_vtrace(**traj, gamma=gamma, rho_bar=clip, c_bar=clip)  # any inputs, consistent or not
    assert torch.allclose(adv, vs - traj["value"], atol=1e-8, rtol=1e-8)


def test_hand_computed_off_policy_example():
    # One env, T=3, gamma=0.5, lambda=1, rho_bar=1, c_bar=0.5, no dones.
    # value = [1, 2, 3], next_value = [2, 3, 4] (4 is the bootstrap), reward = [1, 1, 2].
    # ratio = [2, 0.5, 1]: rho = [1 (2 clipped), 0.5, 1], c = [0.5, 0.5, 0.5].
    # delta_2 = 1 * (2 + 0.5*4 - 3) = 1;     vs_2 - v_2 = 1;                         vs_2 = 4
    # delta_1 = 0.5 * (1 + 0.5*3 - 2) = 0.25; vs_1 - v_1 = 0.25 + 0.5*0.5*1 = 0.5;    vs_1 = 2.5
    # delta_0 = 1 * (1 + 0.5*2 - 1) = 1;     vs_0 - v_0 = 1 + 0.5*0.5*0.5 = 1.125;  vs_0 = 2.125
    # pg_2 = 1 * (2 + 0.5*4 - 3) = 1          (t = T-1: next_vs = next_value = 4)
    # pg_1 = 0.5 * (1 + 0.5*vs_2 - 2) = 0.5
    # pg_0 = 1 * (1 + 0.5*vs_1 - 1) = 1.25    (not vs_0 - v_0 = 1.125, since c_0 < rho_0)
    col = lambda *xs: torch.tensor(xs).unsqueeze(-1)  # noqa: E731
    no = torch.zeros(3, 1, dtype=torch.bool)
    args = (col(1.0, 1.0, 2.0), col(1.0, 2.0, 3.0), col(2.0, 3.0, 4.0), no, no, col(math.log(2), math.log(0.5), 0.0))
    kw = dict(gamma=0.5, gae_lambda=1.0, rho_bar=1.0, c_bar=0.5)
    for fn in (compute_vtrace, compute_vtrace_reference):
        adv, vs = fn(*args, **kw)
        assert torch.allclose(vs, col(2.125, 2.5, 4.0), atol=1e-6)
        assert torch.allclose(adv, col(1.25, 0.5, 1.0), atol=1e-6)


def test_termination_stops_bootstrapping_truncation_bootstraps():
    # One env, T=3, gamma=0.5, lambda=1, on-policy; value = next_value = 10, reward = 1.
    # t=2 truncated:  delta_2 = 1 + 0.5*10 - 10 = -4;  vs_2 = 6;   pg_2 = -4  (next_vs = 10)
    # t=1 terminated: delta_1 = 1 + 0 - 10 = -9;       vs_1 = 1;   pg_1 = -9
    # t=0:            vs_0 - 10 = -4 + 0.5*(-9) = -8.5; vs_0 = 1.5; pg_0 = 1 + 0.5*vs_1 - 10 = -8.5
    r, v, nv, lr = torch.ones(3, 1), torch.full((3, 1), 10.0), torch.full((3, 1), 10.0), torch.zeros(3, 1)
    term, trunc = torch.tensor([[False], [True], [False]]), torch.tensor([[False], [False], [True]])
    adv, vs = compute_vtrace(r, v, nv, term, trunc, lr, gamma=0.5)
    assert vs.squeeze(-1).tolist() == [1.5, 1.0, 6.0] and adv.squeeze(-1).tolist() == [-8.5, -9.0, -4.0]
    # The final observation's value is ignored at a termination and bootstraps at a truncation.
    nv2 = nv.clone()
    nv2[1:] += 4.0
    adv2, vs2 = compute_vtrace(r, v, nv2, term, trunc, lr, gamma=0.5)
    assert vs2.squeeze(-1).tolist() == [1.5, 1.0, 8.0] and adv2.squeeze(-1).tolist() == [-8.5, -9.0, -2.0]


@given(trajectories(), unit, unit, st.data())
def test_nothing_leaks_backwards_across_an_episode_boundary(traj, gamma, lam, data):
    T, B = traj["reward"].shape
    t0, b = data.draw(st.integers(0, T - 1)), data.draw(st.integers(0, B - 1))
    done = data.draw(st.sampled_from(["terminated", "truncated"]))
    traj[done] = traj[done].clone()
    traj[done][t0, b] = True
    before = compute_vtrace(**traj, gamma=gamma, gae_lambda=lam)
    changed = {k: v.clone() for k, v in traj.items()}
    for k, shift in (("reward", 100.0), ("value", 7.0), ("next_value", -50.0), ("log_rho", 1.5)):
        changed[k][t0 + 1 :, b] += shift
    after = compute_vtrace(**changed, gamma=gamma, gae_lambda=lam)
    for x, y in zip(before, after):
        assert torch.equal(x[: t0 + 1, b], y[: t0 + 1, b])


def test_compiled_equals_eager_and_the_reference():
    traj = random_traj(4, (8, 3), 0.1, 0.1)
    kw = dict(gamma=torch.tensor(0.99), gae_lambda=torch.tensor(0.95), rho_bar=torch.tensor(1.0), c_bar=0.9)
    compiled = torch.compile(compute_vtrace, fullgraph=True, dynamic=False)
    eager, ref = compute_vtrace(**traj, **kw), compute_vtrace_reference(**traj, **kw)
    for c, e, r in zip(compiled(**traj, **kw), eager, ref):
        assert torch.allclose(c, e, atol=1e-6) and torch.allclose(c, r, atol=1e-5)


def test_vmap_over_agents_equals_each_agent_alone():
    A = 3
    traj = random_traj(3, (A, 17, 2), 0.1, 0.05)
    gammas, rho_bars = torch.tensor([0.9, 0.99, 0.5]), torch.tensor([1.0, 2.0, 0.5])
    fn = lambda tr, g, rb: compute_vtrace(**tr, gamma=g, gae_lambda=0.95, rho_bar=rb, c_bar=0.8)  # noqa: E731
    adv, vs = torch.func.vmap(fn)(traj, gammas, rho_bars)
    for a in range(A):
        one = compute_vtrace(**{k: v[a] for k, v in traj.items()}, gamma=float(gammas[a]), gae_lambda=0.95,
                             rho_bar=float(rho_bars[a]), c_bar=0.8)
        assert torch.allclose(adv[a], one[0], atol=1e-6) and torch.allclose(vs[a], one[1], atol=1e-6)


def test_pure_inputs_unchanged_and_nothing_detached():
    traj = random_traj(1, (5, 3), 0.3, 0.3)
    traj["log_rho"].requires_grad_(True)
    copies = {k: v.detach().clone() for k, v in traj.items()}
    adv, vs = compute_vtrace(**traj, gamma=0.99, gae_lambda=0.95, rho_bar=2.0, c_bar=2.0)
    (adv.sum() + vs.sum()).backward()
    assert traj["log_rho"].grad is not None  # callers detach log_rho themselves
    for k in traj:
        assert torch.equal(traj[k].detach(), copies[k])


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(reward=torch.zeros(4)), r"reward must be a \[T, B\] tensor, got shape \(4,\)"),
        (dict(log_rho=torch.zeros(4)), r"log_rho must be a \[T, B\] tensor, got shape \(4,\)"),
        (dict(log_rho=[0.0] * 4), r"log_rho must be a \[T, B\] tensor, got shape list"),
        (dict(value=torch.zeros(4, 3)), r"value must have reward's \[T, B\] shape \(4, 2\), got \(4, 3\)"),
        (dict(log_rho=torch.zeros(3, 2)), r"log_rho must have reward's \[T, B\] shape \(4, 2\), got \(3, 2\)"),
        (dict(rho_bar=0.0), r"rho_bar must be positive, got 0.0"),
        (dict(c_bar=-1.0), r"c_bar must be positive, got -1.0"),
    ],
)
def test_bad_arguments_name_the_argument(bad, match):
    args = dict(
        reward=torch.zeros(4, 2), value=torch.zeros(4, 2), next_value=torch.zeros(4, 2),
        terminated=torch.zeros(4, 2, dtype=torch.bool), truncated=torch.zeros(4, 2, dtype=torch.bool),
        log_rho=torch.zeros(4, 2), gamma=0.99,
    )
    args.update(bad)
    for fn in (compute_vtrace, compute_vtrace_reference):
        with pytest.raises(ValueError, match=match):
            fn(**args)


# ---------------------------------------------------------------------------- in training (PPOConfig.vtrace)
def _vtrace_setup(policy_name, **kw):
    import functional_rl as frl
    from functional_rl.shell.build import build

    cfg = frl.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=2, hidden_sizes=(16,), policy=policy_name,
                        vtrace=True, **kw)
    state, kernel = build(cfg, compile=False)
    state, trajectory = kernel.rollout(state)
    return cfg, state, kernel, trajectory


def _recomputed_log_rho(kernel, params, data, recurrent):
    from functional_rl.kernel.distributions import mask_logits
    from functional_rl.kernel.losses import sequence_outputs

    outputs, flat = sequence_outputs(kernel.policy, params, data) if recurrent else (kernel.policy.apply(params, data["obs"]), data)
    outputs = mask_logits(outputs, flat.get("action_mask"))
    return (kernel.policy.distribution.log_prob(outputs, flat["action"]) - flat["log_prob"]).detach()


@pytest.mark.parametrize("policy_name", ["mlp", "lstm"])
def test_vtrace_targets_are_gae_for_the_acting_policy_and_correct_a_moved_one(policy_name):
    """Before any update the ratio is 1 and V-trace's targets are GAE's; after an epoch they
    are compute_vtrace's for the ratio of the updated policy, and no longer GAE's."""
    import functional_rl as frl
    from functional_rl.kernel.update import batch_arrays

    cfg, state, kernel, trajectory = _vtrace_setup(policy_name, vtrace_rho_clip=1.0, vtrace_c_clip=1.0)
    hp = state.learner.hparams
    gae = kernel.make_batch(trajectory, hp)
    fresh = kernel.vtrace_batch(state.learner.params, gae, hp)
    assert torch.allclose(fresh["advantage"], gae["advantage"], atol=1e-5) and torch.allclose(fresh["returns"], gae["returns"], atol=1e-5)

    moved, _ = frl.train_epoch(state, gae, kernel)
    tight = hp.replace(vtrace_rho_clip=torch.tensor(0.9), vtrace_c_clip=torch.tensor(0.8))
    after = kernel.vtrace_batch(moved.learner.params, gae, tight)
    recurrent = policy_name == "lstm"
    data = batch_arrays(trajectory, hp)
    log_rho = _recomputed_log_rho(kernel, moved.learner.params, data, recurrent)
    T, B = cfg.num_steps, cfg.num_envs
    tb = (lambda x: x.reshape(B, T).t()) if recurrent else (lambda x: x.reshape(T, B))
    adv, vs = compute_vtrace_reference(*(tb(data[k]) for k in ("reward", "value", "next_value", "terminated", "truncated")),
                                       tb(log_rho), gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, rho_bar=0.9, c_bar=0.8)
    assert torch.allclose(tb(after["returns"]), vs, atol=1e-4)
    assert torch.allclose(tb(after["advantage"]), vs - tb(data["value"]), atol=1e-4)  # v_s - V, not rho-weighted
    assert not torch.allclose(after["advantage"], gae["advantage"], atol=1e-3)
    assert torch.equal(after["value"], gae["value"]) and torch.equal(after["action"], gae["action"])


def test_compiled_vtrace_targets_equal_eager_and_moving_clips_never_recompile():
    from functional_rl.shell.build import build

    cfg, state, eager, trajectory = _vtrace_setup("mlp")
    _, compiled = build(cfg, compile=True)
    hp = state.learner.hparams
    batch = eager.make_batch(trajectory, hp)
    want = eager.vtrace_batch(state.learner.params, batch, hp)
    got = compiled.vtrace_batch(state.learner.params, batch, hp)
    assert torch.allclose(got["advantage"], want["advantage"], atol=1e-5)
    with torch.compiler.set_stance("fail_on_recompile"):
        for rho, c in ((0.5, 0.5), (2.0, 0.9)):
            clipped = hp.replace(vtrace_rho_clip=torch.tensor(rho), vtrace_c_clip=torch.tensor(c))
            got = compiled.vtrace_batch(state.learner.params, batch, clipped)
            assert torch.allclose(got["returns"], eager.vtrace_batch(state.learner.params, batch, clipped)["returns"], atol=1e-5)


def test_training_with_vtrace_runs_one_agent_and_many_alike():
    import functional_rl as frl
    from functional_rl.shell.batched import unstack_state

    cfg = frl.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=3, total_timesteps=64 * 2, hidden_sizes=(16,),
                        vtrace=True, vtrace_rho_clip=0.8)
    single, history = frl.functional_training_loop(cfg.replace(seed=3), compile=False)
    states, histories = frl.train_many(cfg, seeds=[2, 3], compile=False)
    mine = unstack_state(states, 1)
    assert torch.allclose(mine.learner.params["actor"][0]["w"], single.learner.params["actor"][0]["w"], atol=1e-5)
    assert histories[1][-1]["total_loss"] == pytest.approx(history[-1]["total_loss"], rel=1e-4)
    with pytest.raises(ValueError, match="vtrace_rho_clip"):
        frl.PPOConfig(vtrace=True, vtrace_rho_clip=0.0)
