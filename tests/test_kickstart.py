"""Kickstarting: the distillation loss (KL(teacher || student) + value MSE), teachers loaded
from records, checkpoints and run dirs, weights that fall to 0 on a schedule, and a student
that learns CartPole faster from a trained teacher than from scratch."""

import math
from pathlib import Path

import pytest
import torch
import torch.utils._pytree as pytree

import functional_rl as frl
import functional_rl.kernel.random as jr
from functional_rl.envs import make
from functional_rl.kernel.distributions import Categorical, DiagGaussian, MultiCategorical
from functional_rl.kernel.losses import Kickstart, kickstart_loss
from functional_rl.shell import checkpoint
from functional_rl.shell.build import build
from functional_rl.shell.kickstart import KickstartError, load_teacher
from functional_rl.shell.policy_store import PolicyStore

#: A CartPole policy record (default MLP 64x64) trained to mean return ~500 by
#: ``python -m benchmarks.kickstart --make-teacher`` (300k steps, seed 1).
TEACHER = Path(__file__).parent / "data" / "cartpole_teacher.frl"
CFG = frl.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=2, total_timesteps=64 * 3)


def hparams(**kw):
    return frl.Hyperparams.from_config(CFG).replace(**{k: torch.tensor(v) for k, v in kw.items()})


def test_categorical_and_gaussian_kl_equal_torch_distributions():
    g = torch.Generator().manual_seed(0)  # test data only
    p, q = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    want = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=p), torch.distributions.Categorical(logits=q))
    assert torch.allclose(Categorical().kl({"logits": p}, {"logits": q}), want, atol=1e-6)
    blocks = MultiCategorical((2, 3)).kl({"logits": p}, {"logits": q})
    parts = [torch.distributions.kl_divergence(torch.distributions.Categorical(logits=a), torch.distributions.Categorical(logits=b))
             for a, b in zip(p.split([2, 3], -1), q.split([2, 3], -1))]
    assert torch.allclose(blocks, parts[0] + parts[1], atol=1e-6)
    m1, m2, s1, s2 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g), torch.randn(3, generator=g), torch.randn(3, generator=g)
    want = torch.distributions.kl_divergence(torch.distributions.Normal(m1, s1.exp()), torch.distributions.Normal(m2, s2.exp())).sum(-1)
    assert torch.allclose(DiagGaussian().kl({"mean": m1, "log_std": s1}, {"mean": m2, "log_std": s2}), want, atol=1e-5)


def test_loss_is_weighted_kl_plus_value_mse_averaged_over_teachers_and_only_the_student_learns():
    env = make("CartPole-v1")
    pol = frl.make_mlp_policy(env.observation_space, env.action_space, (8,))
    student, t1, t2 = (pol.init(jr.key(i)) for i in range(3))
    obs = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    loss = kickstart_loss([(pol, t1), (pol, t2)])
    hp = hparams(kickstart_coef=0.5, kickstart_value_coef=0.25)
    out = pol.apply(student, obs)
    value, m = loss(student, {"obs": obs}, out, hp)
    kls = [Categorical().kl(pol.apply(t, obs), out).mean() for t in (t1, t2)]
    mses = [((out["value"] - pol.apply(t, obs)["value"]) ** 2).mean() for t in (t1, t2)]
    assert torch.allclose(value, 0.5 * (kls[0] + kls[1]) / 2 + 0.25 * (mses[0] + mses[1]) / 2)
    assert torch.allclose(m["kickstart/kl"], (kls[0] + kls[1]) / 2) and torch.allclose(m["kickstart/value_mse"], (mses[0] + mses[1]) / 2)
    grads = torch.func.grad(lambda p: loss(p, {"obs": obs}, pol.apply(p, obs), hp)[0])(student)
    assert all(float(g.abs().sum()) > 0 for g in pytree.tree_leaves(grads))
    zero, _ = loss(student, {"obs": obs}, out, hparams(kickstart_coef=0.0, kickstart_value_coef=0.0))
    assert float(zero) == 0.0
    with pytest.raises(ValueError, match="at least one"):
        Kickstart(())


def test_masked_actions_add_nothing_to_the_kl():
    """With an action mask the teacher's illegal actions get probability 0 (the student's
    outputs arrive masked already), so the KL is that of the legal actions alone."""
    env = make("MaskedChoice-v0")
    pol = frl.make_mlp_policy(env.observation_space, env.action_space, (8,))
    student, teacher = pol.init(jr.key(0)), pol.init(jr.key(1))
    obs = torch.randn(5, pol.spec["obs_dim"], generator=torch.Generator().manual_seed(2))
    mask = torch.ones(5, pol.spec["action_dim"], dtype=torch.bool)
    mask[:, 0] = False
    from functional_rl.kernel.distributions import mask_logits

    out = mask_logits(pol.apply(student, obs), mask)
    _, m = kickstart_loss([(pol, teacher)])(student, {"obs": obs, "action_mask": mask}, out, hparams())
    legal = lambda o: {"logits": o["logits"][:, 1:]}  # noqa: E731
    want = Categorical().kl(legal(pol.apply(teacher, obs)), legal(pol.apply(student, obs))).mean()
    assert torch.allclose(m["kickstart/kl"], want, atol=1e-6)


def test_teachers_load_from_a_record_a_checkpoint_and_a_run_dir(tmp_path):
    state, kernel = build(CFG, compile=False)
    params = pytree.tree_map(lambda p: p + 0.5, state.learner.params)
    PolicyStore(tmp_path / "store").save("t", params, kernel.policy, {}, env=kernel.env)
    ckpt = checkpoint.save(checkpoint.checkpoint_path(tmp_path / "run" / "checkpoints", 64),
                           state.replace(learner=state.learner.replace(params=params)), CFG)
    sources = ["t", str(tmp_path / "store" / "t.frl"), f"file://{tmp_path / 'store'}", str(ckpt), str(tmp_path / "run")]
    for source in sources:
        _, loaded = load_teacher(source, env=kernel.env, student=kernel.policy, policy_store=tmp_path / "store")
        for a, b in zip(pytree.tree_leaves(loaded), pytree.tree_leaves(params)):
            assert torch.equal(a, b), source
    with pytest.raises(KickstartError, match="kickstart teacher 'nothing_here'"):
        load_teacher("nothing_here", env=kernel.env, student=kernel.policy, policy_store=tmp_path / "store")


def test_a_teacher_that_does_not_fit_the_student_is_refused_by_name(tmp_path):
    state, kernel = build(CFG, compile=False)
    acro = make("Acrobot-v1")
    other = frl.make_mlp_policy(acro.observation_space, acro.action_space)
    with pytest.raises(KickstartError, match="takes 6 inputs but the student's policy input has 4"):
        load_teacher((other, other.init(jr.key(0))), env=kernel.env, student=kernel.policy)
    three = frl.make_mlp_policy(kernel.env.observation_space, frl.envs.Discrete(3))
    with pytest.raises(KickstartError, match="of size 3 but the student"):
        load_teacher((three, three.init(jr.key(0))), env=kernel.env, student=kernel.policy)
    lstm = frl.make_recurrent_policy(kernel.env.observation_space, kernel.env.action_space, hidden_size=4)
    with pytest.raises(KickstartError, match="is recurrent"):
        load_teacher((lstm, lstm.init(jr.key(0))), env=kernel.env, student=kernel.policy)


def test_config_teachers_add_the_loss_and_its_weights_fall_to_zero(tmp_path):
    """``kickstart_teachers`` in the config: the kernel distils from them, the metrics report
    the terms, and both weights follow the implicit linear schedule to 0 at kickstart_steps."""
    cfg = CFG.replace(kickstart_teachers=[str(TEACHER)], kickstart_steps=128, total_timesteps=64 * 4)
    state, history = frl.functional_training_loop(cfg, compile=False)
    coefs = [h["schedule/kickstart_coef"] for h in history]
    assert coefs == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert [h["schedule/kickstart_value_coef"] for h in history] == pytest.approx([0.01 * c for c in coefs])
    assert all(h["kickstart/kl"] > 0 and math.isfinite(h["kickstart/value_mse"]) for h in history)
    assert history[2]["kickstart"] == 0.0
    with pytest.raises(KickstartError, match="kickstart teacher"):
        frl.functional_training_loop(CFG.replace(kickstart_teachers=[str(tmp_path / "missing.frl")]), compile=False)


def test_compiled_update_with_a_teacher_equals_eager_and_never_recompiles_as_the_weight_moves():
    """The minibatch update with the distillation loss compiles (the frozen teacher's tensors
    are constants of the graph), equals the eager update, and takes new weights as inputs."""
    cfg = CFG.replace(kickstart_teachers=[str(TEACHER)], hidden_sizes=(8,))
    state, kernel = build(cfg, compile=False)
    state, trajectory = kernel.rollout(state)
    batch = kernel.make_batch(trajectory, state.learner.hparams)
    _, mbs = kernel.epoch_minibatches(state.key, state.envs.env_ids, batch)
    mb = {k: v[0] for k, v in mbs.items()}
    compiled = torch.compile(kernel.update, fullgraph=True, dynamic=False)
    learner = state.learner
    compiled(learner.params, learner.opt_state, mb, learner.hparams)
    with torch.compiler.set_stance("fail_on_recompile"):
        for coef in (0.7, 0.0):
            hp = learner.hparams.replace(kickstart_coef=torch.tensor(coef), kickstart_value_coef=torch.tensor(coef / 2))
            p_c, _, m_c = compiled(learner.params, learner.opt_state, mb, hp)
            p_e, _, m_e = kernel.update(learner.params, learner.opt_state, mb, hp)
            assert torch.allclose(m_c["kickstart"], m_e["kickstart"], rtol=1e-5, atol=1e-7)
            assert torch.allclose(m_c["kickstart/kl"], m_e["kickstart/kl"], rtol=1e-5) and float(m_e["kickstart/kl"]) > 0
            for a, b in zip(pytree.tree_leaves(p_c), pytree.tree_leaves(p_e)):
                assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(m_e["kickstart"]) == 0.0


def test_many_agents_distil_like_their_single_runs():
    cfg = CFG.replace(kickstart_teachers=[str(TEACHER)])
    states, _ = frl.train_many(cfg, seeds=[0, 1], compile=False)
    from functional_rl.shell.batched import unstack_state

    for i, seed in enumerate((0, 1)):
        single, _ = frl.functional_training_loop(cfg.replace(seed=seed), compile=False)
        for a, b in zip(pytree.tree_leaves(single.learner.params), pytree.tree_leaves(unstack_state(states, i).learner.params)):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_a_kickstarted_student_learns_cartpole_faster_than_from_scratch():
    """Three seeds each, 24k env steps (vmapped agents, eager): distilling the trained teacher
    (weights falling to 0 over the first 16k steps) lifts the students' mean return well
    above the same students trained from scratch. benchmarks/kickstart.py measures steps to
    return 475 over a longer budget."""
    base = frl.PPOConfig(total_timesteps=24_576, num_envs=4, num_steps=128)
    kick = base.replace(kickstart_teachers=[str(TEACHER)], kickstart_steps=16_384)
    means = {}
    for name, cfg in (("scratch", base), ("kickstart", kick)):
        _, histories = frl.train_many(cfg, seeds=[1, 2, 3], compile=False)
        last = [sum(h["episode_return"] for h in hist[-6:]) / 6 for hist in histories]
        means[name] = sum(last) / 3
    # Measured: 160 against 99 (per seed 183, 154, 142 against 119, 107, 70).
    assert means["kickstart"] > 1.3 * means["scratch"] and min(means.values()) > 0, means


def test_cli_trains_with_a_teacher_and_refuses_a_missing_one_before_writing(tmp_path, capsys):
    from functional_rl.shell.cli import main

    run = tmp_path / "run"
    args = ["train", "CartPole-v1", "--total-timesteps", "1024", "--no-compile", "--progress", "none", "--run-dir"]
    assert main([*args, str(run), "--set", f"kickstart_teachers={TEACHER}", "--set", "kickstart_steps=512"]) == 0
    rows = [line for line in (run / "metrics.jsonl").read_text().splitlines() if "kickstart/kl" in line]
    assert len(rows) == 2
    missing = tmp_path / "missing"
    assert main([*args, str(missing), "--set", f"kickstart_teachers={tmp_path / 'nope.frl'}"]) == 2
    assert "--set kickstart_teachers: kickstart teacher" in capsys.readouterr().err and not missing.exists()
