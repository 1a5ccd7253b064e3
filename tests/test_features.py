"""Last action in the policy input, curricula, seed-signature losses and gradient statistics."""

import pytest
import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree

import functional_rl as frl
import functional_rl.kernel.random as jr
from functional_rl.shell import checkpoint
from functional_rl.kernel.curriculum import RangeCurriculum
from functional_rl.shell.build import build
from functional_rl.kernel.update import make_batch

SMALL = frl.PPOConfig(num_envs=4, num_steps=32, num_minibatches=2, update_epochs=1, total_timesteps=128 * 3)


def test_last_action_is_fed_reset_and_stored_for_training():
    cfg = SMALL.replace(last_action=True)
    state, kernel = build(cfg, compile=False)
    assert state.envs.last_action.shape == (4, 2)
    state, traj = frl.rollout(state, 64, kernel.rollout_step, kernel.critic)
    obs, act = traj["obs"], traj["action"]
    done = traj["terminated"] | traj["truncated"]
    assert obs.shape == (64, 4, 6) and done.any()
    # Step 0 of the run and the first step of every new episode see "no previous action".
    assert torch.equal(obs[0, :, 4:], torch.zeros(4, 2))
    for t in range(1, 64):
        expected = torch.where(done[t - 1][:, None], torch.zeros(4, 2), F.one_hot(act[t - 1], 2).float())
        assert torch.equal(obs[t, :, 4:], expected)
    # The value bootstrap input carries the action that led there.
    assert torch.equal(traj["next_obs"][:, :, 4:], F.one_hot(act, 2).float())
    # Training sees exactly what the rollout saw: the recomputed log-prob equals the stored one.
    out = kernel.policy.apply(state.learner.params, obs)
    assert torch.allclose(kernel.policy.distribution.log_prob(out, act), traj["log_prob"], atol=1e-6)
    batch = make_batch(traj, state.learner.hparams)
    assert batch["obs"].shape == (256, 6)
    _, history = frl.functional_training_loop(cfg, compile=False)
    assert len(history) == 3


def test_curriculum_widens_as_return_rises_and_is_checkpointed(tmp_path):
    cur = RangeCurriculum("length", start=(0.5, 0.5), end=(0.2, 1.0), threshold=15.0, step=0.5)
    state, history = frl.functional_training_loop(SMALL, compile=False, curriculum=cur)
    levels = [h["curriculum/level"] for h in history]
    returns = [h["episode_return"] for h in history]
    # The level rises by 0.5 in each iteration whose mean return reached the threshold.
    expected, level = [], 0.0
    for r in returns:
        level = min(1.0, level + (0.5 if r >= 15.0 else 0.0))
        expected.append(level)
    assert levels == expected and levels[-1] > 0
    assert history[-1]["curriculum/low"] == pytest.approx(0.5 - 0.3 * levels[-1])
    # Envs drew their tasks from the widened range after episodes ended.
    values = state.curriculum.values
    assert not torch.all(values == 0.5)
    low, high = cur.bounds(torch.tensor(levels[-2] if len(levels) > 1 else 0.0))
    assert float(values.min()) >= 0.2 - 1e-6 and float(values.max()) <= 1.0 + 1e-6
    # The curriculum never touches the training key stream.
    plain, _ = frl.functional_training_loop(SMALL, compile=False, max_iterations=1)
    with_cur, _ = frl.functional_training_loop(SMALL, compile=False, curriculum=RangeCurriculum("length", (0.5, 0.5), (0.5, 0.5), 1e9), max_iterations=1)
    for a, b in zip(pytree.tree_leaves(plain.learner.params), pytree.tree_leaves(with_cur.learner.params)):
        assert torch.equal(a, b)
    # The curriculum state is part of the checkpoint.
    path = checkpoint.save(tmp_path / "c.frl", state, SMALL)
    loaded, _, _ = checkpoint.load(path)
    assert torch.equal(loaded.curriculum.values, values)
    assert torch.equal(loaded.curriculum.level, state.curriculum.level)


def test_curriculum_sampling_follows_the_level():
    cur = RangeCurriculum("gravity", start=(9.8, 9.8), end=(5.0, 15.0), threshold=0.0, step=1.0)
    cs = cur.init(jr.key(0), 4000)
    assert torch.all(cs.values == torch.tensor(9.8))
    cs = cur.update(cs, {"episode_return": torch.tensor(1.0)})
    cs = cur.on_step(cs, torch.ones(4000, dtype=torch.bool))
    assert 5.0 <= float(cs.values.min()) < 5.1 and 14.9 < float(cs.values.max()) < 15.0
    assert float(cs.values.mean()) == pytest.approx(10.0, abs=0.15)
    kept = cur.on_step(cs, torch.zeros(4000, dtype=torch.bool))
    assert torch.equal(kept.values, cs.values)


def test_seed_and_native_loss_signatures_in_one_run():
    def curiosity_loss(policy, obs, actions, rewards, values, advantages):
        # seed signature: the policy is bound to the parameters being differentiated
        return 1e-3 * (policy.value(obs) - rewards).pow(2).mean()

    def diversity_loss(policy, obs, actions, rewards, values, advantages):
        return -1e-3 * policy.entropy(obs).mean()

    def value_l2(params, batch, outputs, hp):
        return 1e-4 * (outputs["value"] ** 2).mean()

    _, history = frl.functional_training_loop(SMALL, compile=False, custom_losses=[curiosity_loss, diversity_loss, value_l2])
    h = history[-1]
    assert h["curiosity_loss"] > 0 and h["diversity_loss"] < 0 and h["value_l2"] > 0

    # The adapter's gradient equals the gradient of the same maths written natively.
    state, kernel = build(SMALL.replace(num_minibatches=1), compile=False)
    state, traj = frl.rollout(state, 8, kernel.rollout_step, kernel.critic)
    batch = make_batch(traj, state.learner.hparams)
    mb = {k: batch[k] for k in ("obs", "action", "log_prob", "value", "advantage", "returns", "reward")}
    from functional_rl.compat.losses import adapt_loss

    seed = adapt_loss(curiosity_loss, kernel.policy)
    g_seed = torch.func.grad(lambda p: seed(p, mb, None, state.learner.hparams))(state.learner.params)
    g_native = torch.func.grad(lambda p: 1e-3 * (kernel.policy.value(p, mb["obs"]) - mb["reward"]).pow(2).mean())(state.learner.params)
    for a, b in zip(pytree.tree_leaves(g_seed), pytree.tree_leaves(g_native)):
        assert torch.allclose(a, b)
    assert float(sum(x.abs().sum() for x in pytree.tree_leaves(g_seed["critic"]))) > 0


def test_gradient_statistics_are_reported_per_group():
    # One minibatch update, so the reported norms are not averages over updates.
    _, history = frl.functional_training_loop(SMALL.replace(num_minibatches=1), compile=False, max_iterations=1)
    h = history[0]
    for k in ("grad_norm", "grad/norm/actor", "grad/norm/critic", "grad/mean", "grad/var"):
        assert k in h
    # The global norm is the root of the summed squared group norms.
    assert h["grad_norm"] ** 2 == pytest.approx(h["grad/norm/actor"] ** 2 + h["grad/norm/critic"] ** 2, rel=1e-4)
    assert h["grad/var"] > 0
