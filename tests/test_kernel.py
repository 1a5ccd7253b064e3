"""The composed kernel: eager == compiled, no recompiles, purity, determinism.

Compiled kernels are built once per module on tiny shapes (compiling is slow on CPU).
"""

import pytest
import torch
import torch.utils._pytree as pytree

import functional_rl as frl
from functional_rl.shell.build import build

TINY = frl.PPOConfig(num_envs=4, num_steps=8, num_minibatches=2, update_epochs=2, total_timesteps=32 * 50)


def leaves(tree):
    return [x for x in pytree.tree_leaves(tree) if isinstance(x, torch.Tensor)]


def run(state, kernel, n):
    metrics = None
    for _ in range(n):
        state, metrics = frl.train_iteration(state, kernel)
    return state, metrics


@pytest.fixture(scope="module")
def compiled():
    state, kernel = build(TINY, compile=True)
    return state, kernel


def test_eager_equals_compiled(compiled):
    state0, ckernel = compiled
    _, ekernel = build(TINY, compile=False)
    s_e, m_e = run(state0, ekernel, 3)
    s_c, m_c = run(state0, ckernel, 3)
    for a, b in zip(leaves(s_e), leaves(s_c)):
        if a.is_floating_point():
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
        else:
            assert torch.equal(a, b)
    for k in ("policy_loss", "value_loss", "entropy"):
        assert torch.allclose(m_e[k], m_c[k], atol=1e-5, rtol=1e-4)
    assert int(s_c.agent_step) == 3 * TINY.batch_size and int(s_c.iteration) == 3


def test_compiled_batch_and_minibatches_equal_eager(compiled):
    state, ckernel = compiled
    _, ekernel = build(TINY, compile=False)
    state, trajectory = ekernel.rollout(state)
    hp = state.learner.hparams
    b_e, b_c = ekernel.make_batch(trajectory, hp), ckernel.make_batch(trajectory, hp)
    assert b_c.batch_size == b_e.batch_size == (TINY.batch_size,) and set(b_c.keys()) == set(b_e.keys())
    for k in b_e.keys():
        assert torch.allclose(b_c[k].float(), b_e[k].float(), atol=1e-5), k
    (key_e, mb_e), (key_c, mb_c) = (kern.epoch_minibatches(state.key, state.envs.env_ids, b_e) for kern in (ekernel, ckernel))
    assert torch.equal(key_e, key_c) and set(mb_e) == set(mb_c)
    for k in mb_e:  # same order (integer keys), same statistics
        assert torch.allclose(mb_c[k].float(), mb_e[k].float(), atol=1e-5), k


def test_no_recompile_with_a_changed_learning_rate(compiled):
    state, kernel = compiled
    state, _ = run(state, kernel, 1)  # warm: everything compiled once
    faster = state.replace(learner=state.learner.replace(hparams=state.learner.hparams.replace(learning_rate=torch.tensor(1e-3), ent_coef=torch.tensor(0.0))))
    with torch.compiler.set_stance("fail_on_recompile"):
        s2, m = run(faster, kernel, 2)
    assert float(m["learning_rate"]) != float(frl.learning_rate_at(state.learner.hparams, state.iteration, TINY.num_iterations, True))
    assert int(s2.iteration) == int(state.iteration) + 2


def test_fifty_iterations_with_the_learning_rate_annealing_never_recompile(compiled):
    """After the first iteration, 50 more run on the compiled graphs as they are: the annealed
    learning rate, the keys, the statistics and the parameters are all graph inputs."""
    state, kernel = compiled
    state, first = run(state, kernel, 1)
    rates = []
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(50):
            state, m = frl.train_iteration(state, kernel)
            rates.append(float(m["learning_rate"]))
    assert len(set(rates)) == 50 and rates[-1] < rates[0] < float(first["learning_rate"])
    assert int(state.iteration) == 51 + int(compiled[0].iteration)


def test_scheduled_hyperparameters_move_every_iteration_without_recompiling(compiled):
    """The schedules run in the glue, on the step counter: the compiled update takes the
    scheduled values as tensor inputs, so they never recompile, and the state keeps the base."""
    import dataclasses

    from functional_rl.kernel.schedules import Schedule

    state, kernel = compiled
    state, _ = run(state, kernel, 1)
    cfg = TINY.replace(schedules={"ent_coef": "cosine:end=0", "clip_coef": "linear:end=0.5"})
    scheduled = dataclasses.replace(kernel, config=cfg)  # same compiled functions, other schedules
    ent, clip = [], []
    with torch.compiler.set_stance("fail_on_recompile"):
        for _ in range(4):
            start = state.agent_step
            state, m = frl.train_iteration(state, scheduled)
            ent.append(float(m["schedule/ent_coef"]))
            clip.append(float(m["schedule/clip_coef"]))
            expect = Schedule("cosine").value(torch.tensor(TINY.ent_coef), start, TINY.total_timesteps)
            assert abs(ent[-1] - float(expect)) < 1e-7
    assert ent == sorted(ent, reverse=True) and len(set(ent)) == 4 and clip == sorted(clip, reverse=True)
    assert float(state.learner.hparams.ent_coef) == pytest.approx(TINY.ent_coef)  # the base stays in the state


def test_target_kl_masks_the_updates_after_the_kl_passes_it_without_recompiling(compiled):
    """With a KL target below any moved policy's KL the iteration stops at the first update
    whose minibatch KL exceeds it (the very first has ratio 1, KL ~ 0): the parameters are
    exactly those of the updates that ran, replayed one by one, and the compiled graphs run
    as they are (the mask is applied outside them, with tensors)."""
    import dataclasses

    state, kernel = compiled
    state, _ = run(state, kernel, 1)
    stopping = dataclasses.replace(kernel, config=TINY.replace(target_kl=1e-12))
    tiny = state.replace(learner=state.learner.replace(hparams=state.learner.hparams.replace(target_kl=torch.tensor(1e-12))))
    with torch.compiler.set_stance("fail_on_recompile"):
        after, m = frl.train_iteration(tiny, stopping)
        ran = int(m["updates_run"])
        s1, trajectory = kernel.rollout(tiny)
        batch = kernel.make_batch(trajectory, tiny.learner.hparams)
        key, params, opt_state, done = s1.key, s1.learner.params, s1.learner.opt_state, 0
        while done < ran:  # replay the updates that ran
            key, mbs = kernel.epoch_minibatches(key, s1.envs.env_ids, batch)
            for i in range(min(TINY.num_minibatches, ran - done)):
                params, opt_state, _ = kernel.update(params, opt_state, {k: v[i] for k, v in mbs.items()}, s1.learner.hparams)
                done += 1
    assert 1 <= ran <= 2 < TINY.update_epochs * TINY.num_minibatches
    for a, b in zip(leaves(after.learner.params), leaves(params)):
        assert torch.equal(a, b)
    assert int(after.learner.num_updates) == int(state.learner.num_updates) + TINY.update_epochs * TINY.num_minibatches
    _, m = frl.train_iteration(state, dataclasses.replace(kernel, config=TINY.replace(target_kl=1e9)))
    assert float(m["updates_run"]) == TINY.update_epochs * TINY.num_minibatches


def test_train_iteration_is_pure_and_deterministic(compiled):
    _, kernel = build(TINY, compile=False)
    state = frl.TrainerState.create(TINY, kernel.env, kernel.policy)
    before = [x.clone() for x in leaves(state)]
    s1, m1 = frl.train_iteration(state, kernel)
    for a, b in zip(before, leaves(state)):
        assert torch.equal(a, b)  # the input state is untouched
    s2, m2 = frl.train_iteration(state, kernel)
    for a, b in zip(leaves(s1), leaves(s2)):
        assert torch.equal(a, b)  # same state -> same result, bit for bit
    assert not torch.equal(leaves(s1.learner.params)[0], leaves(state.learner.params)[0])  # it did learn something


def test_rollout_step_is_pure_and_counts_steps():
    _, kernel = build(TINY, compile=False)
    state = frl.TrainerState.create(TINY, kernel.env, kernel.policy)
    before = [x.clone() for x in leaves(state)]
    new, tr = frl.rollout_step(state, env=kernel.env, env_params=kernel.env_params, policy=kernel.policy)
    for a, b in zip(before, leaves(state)):
        assert torch.equal(a, b)
    assert int(new.agent_step) == TINY.num_envs
    assert torch.equal(tr["obs"], state.envs.obs)
    assert not torch.equal(new.key, state.key)
    out = kernel.policy.apply(state.learner.params, state.envs.obs)
    assert torch.allclose(tr["log_prob"], kernel.policy.distribution.log_prob(out, tr["action"]))


def test_train_epoch_uses_every_sample_once_per_epoch():
    seen = []
    _, kernel = build(TINY, compile=False)

    def spy(params, opt_state, mb, hparams):
        seen.append(mb["obs"].clone())
        return kernel.update(params, opt_state, mb, hparams)

    import dataclasses

    spy_kernel = dataclasses.replace(kernel, update=spy)
    state = frl.TrainerState.create(TINY, kernel.env, kernel.policy)
    state, traj = frl.rollout(state, TINY.num_steps, kernel.rollout_step, kernel.policy.value)
    from functional_rl.kernel.update import make_batch

    batch = make_batch(traj, state.learner.hparams)
    frl.train_epoch(state, batch, spy_kernel)
    assert len(seen) == TINY.num_minibatches
    got = torch.cat(seen)
    assert got.shape == batch["obs"].shape
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(got) == key(batch["obs"])


def test_scan_rollout_equals_the_step_loop_eager_and_compiled():
    """The one-call rollout draws the same numbers: eager it equals the per-step loop bit for
    bit; compiled, the actions are equal and the floats agree to tolerance, and a second call
    (the learning rate moved) does not recompile."""
    cfg = TINY.replace(normalize_obs=True, normalize_reward=True)
    state, loop_kernel = build(cfg, compile=False)
    _, eager = build(cfg, state=state, compile=False, scan_rollout=True)
    _, compiled = build(cfg, state=state, compile=True, scan_rollout=True)
    s_ref, ref = loop_kernel.rollout(state)
    s_eager, traj = eager.rollout(state)
    for k in ref.keys():
        assert torch.equal(traj[k], ref[k]), k
    for a, b in zip(leaves(s_eager), leaves(s_ref)):
        assert torch.equal(a, b)
    s_comp, traj_c = compiled.rollout(state)
    assert torch.equal(traj_c["action"], ref["action"]) and torch.equal(s_comp.key, s_ref.key)
    for k in ref.keys():
        assert torch.allclose(traj_c[k].double(), ref[k].double(), atol=1e-5, rtol=1e-4), k
    moved = s_comp.replace(learner=s_comp.learner.replace(hparams=s_comp.learner.hparams.replace(learning_rate=torch.tensor(1e-3))))
    with torch.compiler.set_stance("fail_on_recompile"):
        s2, _ = compiled.rollout(moved)
    assert int(s2.agent_step) == 2 * cfg.batch_size


@pytest.mark.parametrize("env_id", frl.envs.list_envs())
def test_scan_rollout_equals_the_step_loop_for_every_pure_env(env_id):
    """Every registered pure env (discrete and continuous actions, envs that end every step),
    with the last action fed back and observation normalisation: the one-call rollout draws
    the same keys and produces the same transitions as the per-step loop, bit for bit."""
    cfg = TINY.replace(env_id=env_id, last_action=True, normalize_obs=True)
    state, loop_kernel = build(cfg, compile=False)
    _, scan_kernel = build(cfg, state=state, compile=False, scan_rollout=True)
    s_ref, ref = loop_kernel.rollout(state)
    s_scan, traj = scan_kernel.rollout(state)
    assert set(traj.keys()) == set(ref.keys())
    for k in ref.keys():
        assert torch.equal(traj[k], ref[k]), k
    for a, b in zip(leaves(s_scan), leaves(s_ref)):
        assert torch.equal(a, b)


def test_the_loop_skips_guards_once_steady_and_trains_exactly_as_with_them(monkeypatch):
    """After two iterations that compiled nothing new, the loop's built-in step runs without
    guard evaluation (shell.loop._SteadyGuards); the numbers are those of a guarded run."""
    import functional_rl.shell.loop as loop

    cfg = TINY.replace(total_timesteps=TINY.batch_size * 5)
    stances = []
    real = torch.compiler.set_stance

    def spy(*args, **kwargs):
        stances.append(kwargs.get("skip_guard_eval_unsafe", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.compiler, "set_stance", spy)
    state, history = frl.functional_training_loop(cfg, compile=True)
    assert stances == [True, True, True]  # iterations 3, 4 and 5

    stances.clear()
    monkeypatch.setattr(loop._SteadyGuards, "step_done", lambda self: None)  # guards on throughout
    ref_state, ref_history = frl.functional_training_loop(cfg, compile=True)
    assert stances == []
    assert all(torch.equal(a, b) for a, b in zip(leaves(state), leaves(ref_state)))
    drop = ("sps", "time_s", "timing/rollout_s", "timing/train_s")
    for row, ref in zip(history, ref_history, strict=True):
        assert {k: v for k, v in row.items() if k not in drop}.keys() == {k for k in ref if k not in drop}
        assert all(row[k] == ref[k] or (row[k] != row[k] and ref[k] != ref[k]) for k in ref if k not in drop)  # NaN == NaN


def test_a_compile_mode_replaces_the_kernels_inductor_options(monkeypatch):
    """torch.compile refuses ``mode`` next to ``options``: the user's mode wins over the
    options the kernel gives its one-call rollout and update."""
    from functional_rl.shell.build import compiler

    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.append(kw) or fn)
    compiler(True, {"mode": "reduce-overhead"})(len, options={"cpp_wrapper": True})
    compiler(True)(len, options={"cpp_wrapper": True})
    assert seen[0] == {"fullgraph": True, "dynamic": False, "mode": "reduce-overhead"}
    assert seen[1]["options"] == {"cpp_wrapper": True} and "mode" not in seen[1]
