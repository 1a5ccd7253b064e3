"""Prioritized minibatches: alpha = 0 is uniform sampling exactly, sampled frequencies match
the priorities (chi-square), importance weights are (N P)^-beta, and the option trains
through every path (eager, compiled, recurrent, many agents) without recompiling."""

import math

import pytest
import torch
import torch.utils._pytree as pytree
from hypothesis import given, settings, strategies as st
from scipy import stats

import functional_rl as frl
import functional_rl.kernel.random as jr
from functional_rl.kernel.iteration import iteration_hparams, run_schedules
from functional_rl.kernel.losses import clipped_policy_loss, value_loss
from functional_rl.kernel.update import PRIORITY_FLOOR, epoch_minibatches, prioritized_order
from functional_rl.shell.batched import agent_grid, unstack_state
from functional_rl.shell.build import build

CFG = frl.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=2, total_timesteps=64 * 3,
                    prioritized=True, prio_alpha=0.6, prio_beta0=0.4)


def draws(magnitude, alpha, beta, epochs, num_minibatches=1):
    """``epochs`` independent epochs' indices and weights, concatenated."""
    keys = jr.split(jr.key(7), epochs)
    out = [prioritized_order(k, magnitude, num_minibatches, alpha, beta) for k in keys]
    return torch.cat([i for i, _ in out]), torch.cat([w for _, w in out])


@given(st.integers(1, 64), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_alpha_zero_is_uniform_sampling_exactly(n, seed, beta):
    """alpha = 0: the draw is floor(u N) of the same 32 random bits, every weight exactly 1,
    whatever the advantages (zeros, huge values)."""
    g = torch.Generator().manual_seed(seed)  # test data only
    magnitude = torch.rand(n, generator=g) * torch.tensor([0.0, 1.0, 1e6])[torch.randint(3, (n,), generator=g)]
    key = jr.key(seed)
    index, weight = prioritized_order(key, magnitude, 1, alpha=0.0, beta=beta)
    assert torch.equal(index, (jr.bits(key, (n,)) * n) >> 32)
    assert torch.equal(weight, torch.ones(n))


def test_sampled_frequencies_match_the_priorities():
    """40,000 draws over 10 segments: Pearson's chi-square against P_i = |A_i|^alpha / sum
    does not reject (p > 0.001), while the same counts against uniform (or against alpha = 1's
    P when alpha = 0.5) are rejected: the test has the power to see a wrong distribution."""
    magnitude = torch.tensor([0.1, 0.5, 1.0, 2.0, 3.0, 0.2, 5.0, 0.05, 1.5, 4.0])
    n, alpha = magnitude.numel(), 0.5
    index, _ = draws(magnitude, alpha, 1.0, epochs=4000)
    counts = torch.bincount(index, minlength=n).double()
    p = magnitude.double() ** alpha
    p = p / p.sum()
    total = counts.sum()
    assert stats.chisquare(counts.numpy(), (total * p).numpy()).pvalue > 1e-3
    assert stats.chisquare(counts.numpy(), torch.full((n,), float(total) / n).numpy()).pvalue < 1e-6
    p1 = magnitude.double() / magnitude.double().sum()
    assert stats.chisquare(counts.numpy(), (total * p1).numpy()).pvalue < 1e-6


def test_importance_weights_are_n_p_to_the_minus_beta_and_average_one_at_beta_one():
    magnitude = torch.tensor([1.0, 2.0, 3.0, 0.0, 10.0, 0.5, 0.5, 3.0])
    n, alpha = magnitude.numel(), 0.7
    w = magnitude.double().clamp(min=PRIORITY_FLOOR) ** alpha
    p = w / w.sum()
    for beta in (0.4, 1.0):
        index, weight = prioritized_order(jr.key(3), magnitude, 2, alpha, beta)
        assert torch.allclose(weight.double(), (n * p[index]) ** -beta, rtol=1e-6)
    _, weight = draws(magnitude.clamp(min=0.2), alpha, 1.0, epochs=3000)  # every segment with a fair chance
    assert abs(float(weight.double().mean()) - 1.0) < 0.02  # E[(N P)^-1] = sum_i P_i / (N P_i) = 1


@settings(max_examples=50)
@given(st.lists(st.floats(0.0, 1e6), min_size=2, max_size=40), st.floats(0.0, 3.0), st.floats(0.0, 1.0))
def test_any_priorities_give_valid_draws_and_finite_weights(values, alpha, beta):
    magnitude = torch.tensor(values, dtype=torch.float32)
    n = magnitude.numel() - magnitude.numel() % 2
    index, weight = prioritized_order(jr.key(1), magnitude[:n], 2, alpha, beta)
    assert index.shape == (n,) and int(index.min()) >= 0 and int(index.max()) < n
    assert bool(torch.isfinite(weight).all()) and bool((weight > 0).all())


def test_minibatch_count_must_divide_the_segments():
    with pytest.raises(ValueError, match="num_minibatches=3 must divide the 4 segments"):
        prioritized_order(jr.key(0), torch.ones(4), 3, 1.0, 1.0)


def test_weighted_losses_are_weighted_means():
    ratio, adv, w = torch.tensor([1.0, 1.5]), torch.tensor([2.0, 1.0]), torch.tensor([0.5, 2.0])
    per = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    assert torch.equal(clipped_policy_loss(ratio, adv, 0.2, w), (per * w).mean())
    v, old, ret = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([2.0, 1.0])
    assert torch.equal(value_loss(v, old, ret, None, w), 0.5 * (((v - ret) ** 2) * w).mean())
    assert torch.equal(clipped_policy_loss(ratio, adv, 0.2, torch.ones(2)), clipped_policy_loss(ratio, adv, 0.2))


def test_epoch_minibatches_draw_by_priority_and_carry_the_weights():
    """A flat batch: minibatches hold the drawn transitions and their weights; a recurrent
    batch: whole env sequences drawn by sum_t |A_t|, the weight repeated over the sequence."""
    hp = frl.Hyperparams.from_config(CFG.replace(prio_alpha=1.0, prio_beta0=1.0))
    n = 8
    batch = {k: torch.arange(float(n)) for k in ("obs", "action", "log_prob", "value", "returns", "reward")}
    batch["advantage"] = torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 5.0])
    _, mbs = epoch_minibatches(jr.key(0), torch.arange(2), batch, hp, num_minibatches=2, norm_adv=False, prioritized=True)
    assert mbs["obs"].shape == mbs["weight"].shape == (2, 4)
    assert set(mbs["obs"].flatten().tolist()) <= {3.0, 7.0}  # zero-advantage steps are (almost) never drawn
    assert torch.allclose(mbs["weight"], torch.full((2, 4), 0.25))  # (N P)^-1 = (8 * 1/2)^-1
    seq = {k: torch.arange(12.0).reshape(4, 3) for k in ("obs", "action", "log_prob", "value", "returns", "reward")}
    seq["advantage"] = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    seq["carry"], seq["reset"] = torch.zeros(4, 2), torch.zeros(4, 3, dtype=torch.bool)
    _, mbs = epoch_minibatches(jr.key(0), torch.arange(4), seq, hp, num_minibatches=2, norm_adv=True, prioritized=True)
    assert mbs["obs"].shape == mbs["weight"].shape == (2, 2, 3)
    assert torch.equal(mbs["obs"][..., 0], torch.full((2, 2), 3.0))  # only env 1 has advantages
    assert torch.allclose(mbs["weight"], torch.full((2, 2, 3), 0.25))  # (4 * 1)^-1
    with pytest.raises(ValueError, match="need the hyperparameters"):
        epoch_minibatches(jr.key(0), torch.arange(4), seq, num_minibatches=2, norm_adv=True, prioritized=True)


def test_beta_anneals_from_beta0_to_one_over_the_run_unless_scheduled():
    state, _ = build(CFG, compile=False)
    betas = []
    for step in (0, CFG.total_timesteps // 2, CFG.total_timesteps):
        s = state.replace(agent_step=torch.tensor(step + CFG.batch_size))
        betas.append(float(iteration_hparams(s, CFG).prio_beta0))
    assert betas == pytest.approx([0.4, 0.7, 1.0])
    mine = CFG.replace(schedules={"prio_beta0": "constant"})
    assert run_schedules(mine)["prio_beta0"].kind == "constant"
    assert not run_schedules(CFG.replace(prioritized=False))


def test_prioritized_training_runs_eager_recurrent_and_reports_beta():
    state, history = frl.functional_training_loop(CFG, compile=False)
    assert [round(h["schedule/prio_beta0"], 4) for h in history] == [0.4, 0.6, 0.8]
    assert all(math.isfinite(h["total_loss"]) for h in history)
    lstm = CFG.replace(env_id="MemoryCue-v0", policy="lstm", hidden_sizes=(8,), num_minibatches=2)
    _, history = frl.functional_training_loop(lstm, compile=False)
    assert len(history) == 3 and all(math.isfinite(h["total_loss"]) for h in history)


def test_alpha_zero_beta_one_trains_like_uniform_sampling_with_replacement():
    """With alpha = 0 the loss weights are exactly 1: the update is the unweighted PPO loss on
    uniformly drawn minibatches, so changing beta changes nothing at all."""
    uniform = CFG.replace(prio_alpha=0.0)
    a, _ = frl.functional_training_loop(uniform, compile=False)
    b, _ = frl.functional_training_loop(uniform.replace(prio_beta0=1.0), compile=False)
    for x, y in zip(pytree.tree_leaves(a.learner.params), pytree.tree_leaves(b.learner.params)):
        assert torch.equal(x, y)


def test_compiled_sampler_equals_eager_and_never_recompiles_when_alpha_and_beta_move():
    hp = frl.Hyperparams.from_config(CFG)
    batch = {k: torch.arange(32.0) for k in ("obs", "action", "log_prob", "value", "returns", "reward")}
    batch["advantage"] = torch.linspace(-2.0, 3.0, 32)
    eager = lambda key, h: epoch_minibatches(key, torch.arange(4), batch, h, num_minibatches=2, norm_adv=True, prioritized=True)  # noqa: E731
    compiled = torch.compile(eager, fullgraph=True)
    compiled(jr.key(0), hp)
    with torch.compiler.set_stance("fail_on_recompile"):
        for alpha, beta in ((0.0, 0.3), (1.0, 0.9), (2.5, 1.0)):
            h = hp.replace(prio_alpha=torch.tensor(alpha), prio_beta0=torch.tensor(beta))
            (ke, me), (kc, mc) = eager(jr.key(1), h), compiled(jr.key(1), h)
            assert torch.equal(ke, kc) and torch.equal(me["obs"], mc["obs"])
            assert torch.allclose(me["weight"], mc["weight"], rtol=1e-6)


def test_many_agents_with_prioritized_minibatches_equal_their_single_runs():
    grid = {"prio_alpha": [0.0, 1.0]}
    states, _ = frl.train_many(CFG, seeds=[0], hparams=grid, compile=False)
    for i, agent in enumerate(agent_grid([0], grid)):
        single, _ = frl.functional_training_loop(CFG.replace(**agent), compile=False)
        mine = unstack_state(states, i)
        for a, b in zip(pytree.tree_leaves(single), pytree.tree_leaves(mine)):
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
            elif isinstance(a, torch.Tensor):
                assert torch.equal(a, b)


def test_config_checks_the_prioritization_fields():
    with pytest.raises(ValueError, match="prio_beta0=0.0 is invalid"):
        CFG.replace(prio_beta0=0.0)
    with pytest.raises(ValueError, match="prio_alpha=-1.0 is invalid"):
        CFG.replace(prio_alpha=-1.0)
    with pytest.raises(ValueError, match="prioritized=1 is invalid"):
        CFG.replace(prioritized=1)


def test_a_sweep_of_a_switched_off_piece_is_refused():
    with pytest.raises(ValueError, match="cannot sweep prio_alpha: .* set prioritized=True"):
        frl.train_many(CFG.replace(prioritized=False), seeds=[0], hparams={"prio_alpha": [0.5, 1.0]}, compile=False)
    with pytest.raises(ValueError, match="cannot sweep kickstart_coef: .* set kickstart_teachers"):
        frl.train_many(CFG, seeds=[0], hparams={"kickstart_coef": [0.5, 1.0]}, compile=False)
