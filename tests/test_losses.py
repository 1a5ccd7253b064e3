"""ppo_loss: hand-computed fixtures, properties, custom losses."""

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, strategies as st

import functional_rl.kernel.random as jr
from functional_rl import Categorical, Hyperparams, PPOConfig, make_mlp_policy, ppo_loss
from functional_rl.envs import make


def hp(**kw):
    return Hyperparams.from_config(PPOConfig(**kw))


def table_policy():
    """Logits are a free [2] parameter; the value is obs[:, 0] * params['v'] (one scalar)."""
    return SimpleNamespace(
        apply=lambda p, o: {"logits": p["l"].expand(o.shape[0], 2), "value": o[:, 0] * p["v"]},
        distribution=Categorical(),
    )


def test_hand_computed_clipping_and_value_loss():
    # pi = softmax([log 0.55, log 0.45]) = (0.55, 0.45); old probs 0.5 each.
    # sample 0: action 0, ratio 0.55/0.5 = 1.1, A = +2: max(-2.2, -2 * 1.1) = -2.2
    # sample 1: action 1, ratio 0.45/0.5 = 0.9, A = -1: max(0.9, 0.9) = 0.9
    # policy loss = (-2.2 + 0.9) / 2 = -0.65; |r - 1| = 0.1 < 0.2, so clipfrac = 0.
    # Value: V = obs0 * v = (1, 3) with v=1; returns (0, 0); old values (0, 0), clip 0.2:
    #   unclipped (1, 9); clipped V_old + clip(V - V_old, +-0.2) = (0.2, 0.2) -> (0.04, 0.04);
    #   max -> (1, 9); 0.5 * mean = 2.5.
    # Entropy of (0.55, 0.45) = -(0.55 ln 0.55 + 0.45 ln 0.45) = 0.688139.
    # total = -0.65 - 0.01 * 0.688139 + 0.5 * 2.5 = 0.593119
    pol = table_policy()
    params = {"l": torch.log(torch.tensor([0.55, 0.45])), "v": torch.tensor(1.0)}
    batch = {
        "obs": torch.tensor([[1.0], [3.0]]),
        "action": torch.tensor([0, 1]),
        "log_prob": torch.log(torch.tensor([0.5, 0.5])),
        "value": torch.zeros(2),
        "advantage": torch.tensor([2.0, -1.0]),
        "returns": torch.zeros(2),
    }
    loss, m = ppo_loss(params, batch, policy=pol, hparams=hp(), norm_adv=False)
    assert m["policy_loss"].item() == pytest.approx(-0.65, abs=1e-6)
    assert m["value_loss"].item() == pytest.approx(2.5, abs=1e-6)
    assert m["entropy"].item() == pytest.approx(0.688139, abs=1e-5)
    assert m["clipfrac"].item() == 0.0
    assert loss.item() == pytest.approx(0.593119, abs=1e-5)
    # approx_kl = mean((r - 1) - ln r) = ((0.1 - ln 1.1) + (-0.1 - ln 0.9)) / 2
    kl = ((0.1 - math.log(1.1)) + (-0.1 - math.log(0.9))) / 2
    assert m["approx_kl"].item() == pytest.approx(kl, abs=1e-6)


def test_the_value_clip_range_is_its_own():
    # V = (1, 3), old values (0, 0), returns (5, 5): unclipped errors (16, 4).
    # vf_clip_coef 2: clipped V = (1, 2) -> errors (16, 9); max (16, 9); 0.5 * mean = 6.25.
    # unset, it is clip_coef 0.2: clipped V = (0.2, 0.2) -> (23.04, 23.04); 0.5 * mean = 11.52.
    pol = table_policy()
    params = {"l": torch.log(torch.tensor([0.55, 0.45])), "v": torch.tensor(1.0)}
    batch = {"obs": torch.tensor([[1.0], [3.0]]), "action": torch.tensor([0, 1]), "log_prob": torch.log(torch.tensor([0.5, 0.5])),
             "value": torch.zeros(2), "advantage": torch.tensor([2.0, -1.0]), "returns": torch.full((2,), 5.0)}
    _, own = ppo_loss(params, batch, policy=pol, hparams=hp(vf_clip_coef=2.0), norm_adv=False)
    _, shared = ppo_loss(params, batch, policy=pol, hparams=hp(), norm_adv=False)
    assert own["value_loss"].item() == pytest.approx(6.25, abs=1e-5)
    assert shared["value_loss"].item() == pytest.approx(11.52, abs=1e-4)
    assert own["policy_loss"].item() == shared["policy_loss"].item()  # the ratio's clip is untouched
    assert float(hp(clip_coef=0.3).vf_clip_coef) == pytest.approx(0.3)  # None follows clip_coef


def test_hand_computed_ratio_outside_the_clip_range():
    # pi(0) = 0.9, old 0.5: ratio 1.8 > 1.2. A = +1: max(-1.8, -1.2) = -1.2 (clipped, no gradient).
    # A = -1 on the same sample: max(1.8, 1.2) = 1.8 (unclipped, pessimistic). clipfrac 1.
    pol = table_policy()
    params = {"l": torch.log(torch.tensor([0.9, 0.1])), "v": torch.tensor(0.0)}
    base = {
        "obs": torch.zeros(1, 1), "action": torch.tensor([0]), "log_prob": torch.log(torch.tensor([0.5])),
        "value": torch.zeros(1), "returns": torch.zeros(1),
    }
    _, m_pos = ppo_loss(params, {**base, "advantage": torch.tensor([1.0])}, policy=pol, hparams=hp(), norm_adv=False)
    _, m_neg = ppo_loss(params, {**base, "advantage": torch.tensor([-1.0])}, policy=pol, hparams=hp(), norm_adv=False)
    assert m_pos["policy_loss"].item() == pytest.approx(-1.2, abs=1e-6)
    assert m_neg["policy_loss"].item() == pytest.approx(1.8, abs=1e-5)
    assert m_pos["clipfrac"].item() == 1.0
    g = torch.func.grad(lambda p: ppo_loss(p, {**base, "advantage": torch.tensor([1.0])}, policy=pol, hparams=hp(),
                                            norm_adv=False, clip_vloss=False)[1]["policy_loss"] * 0 +
                        ppo_loss(p, {**base, "advantage": torch.tensor([1.0])}, policy=pol, hparams=hp(ent_coef=0.0),
                                 norm_adv=False, clip_vloss=False)[0])(params)
    # Clipped branch: no policy gradient; value loss is 0 at v=0 with obs 0 -> all-zero gradient.
    assert torch.count_nonzero(g["l"]) == 0


@st.composite
def minibatches(draw):
    n = draw(st.integers(2, 32))
    seed = draw(st.integers(0, 2**31 - 1))
    return n, seed


@given(minibatches())
def test_ratio_one_means_no_clipping_and_policy_loss_is_minus_mean_advantage(mb):
    n, seed = mb
    env = make("CartPole-v1")
    policy = make_mlp_policy(env.observation_space, env.action_space)
    k1, k2, k3, k4 = jr.split(jr.key(seed), 4).unbind(0)
    params = policy.init(k1)
    obs = jr.normal(k2, (n, 4))
    out = policy.apply(params, obs)
    action = policy.distribution.sample(k3, out)
    batch = {
        "obs": obs, "action": action, "log_prob": policy.distribution.log_prob(out, action),
        "value": out["value"], "advantage": jr.normal(k4, (n,)), "returns": out["value"],
    }
    copies = {k: v.clone() for k, v in batch.items()}
    _, m = ppo_loss(params, batch, policy=policy, hparams=hp(), norm_adv=False)
    assert m["clipfrac"].item() == 0.0
    assert m["approx_kl"].abs().item() < 1e-6
    assert m["policy_loss"].item() == pytest.approx(-batch["advantage"].mean().item(), abs=1e-5)
    for k in batch:  # inputs untouched
        assert torch.equal(batch[k], copies[k])


def test_custom_loss_gradient_adds_exactly_and_reports_metrics():
    env = make("CartPole-v1")
    policy = make_mlp_policy(env.observation_space, env.action_space)
    k1, k2, k3 = jr.split(jr.key(0), 3).unbind(0)
    params = policy.init(k1)
    obs = jr.normal(k2, (16, 4))
    out = policy.apply(params, obs)
    batch = {
        "obs": obs, "action": torch.arange(16) % 2, "log_prob": torch.full((16,), -0.7),
        "value": out["value"] * 0.5, "advantage": jr.normal(k3, (16,)), "returns": out["value"] + 1.0,
    }

    def value_l2(params, batch, outputs, hp):
        loss = 0.1 * (outputs["value"] ** 2).mean()
        return loss, {"value_sq": (outputs["value"] ** 2).mean()}

    def grad(fn):
        return torch.func.grad(lambda p: fn(p)[0], has_aux=False)(params)

    g_with = grad(lambda p: ppo_loss(p, batch, policy=policy, hparams=hp(), custom_losses=[value_l2]))
    g_without = grad(lambda p: ppo_loss(p, batch, policy=policy, hparams=hp()))
    g_alone = grad(lambda p: value_l2(p, batch, policy.apply(p, batch["obs"]), hp()))
    import torch.utils._pytree as pytree

    for a, b, c in zip(*(pytree.tree_leaves(g) for g in (g_with, g_without, g_alone))):
        assert torch.allclose(a - b, c, atol=1e-6)
    assert any(c.abs().max() > 0 for c in pytree.tree_leaves(g_alone))  # the check is not vacuous
    _, m = ppo_loss(params, batch, policy=policy, hparams=hp(), custom_losses=[value_l2])
    assert m["value_l2"].item() == pytest.approx(0.1 * (out["value"] ** 2).mean().item(), rel=1e-5)
    assert m["value_sq"].item() == pytest.approx((out["value"] ** 2).mean().item(), rel=1e-5)


def test_custom_loss_metric_name_clash_is_an_error():
    pol = table_policy()
    params = {"l": torch.zeros(2), "v": torch.tensor(0.0)}
    batch = {"obs": torch.zeros(2, 1), "action": torch.tensor([0, 1]), "log_prob": torch.full((2,), -0.69),
             "value": torch.zeros(2), "advantage": torch.ones(2), "returns": torch.zeros(2)}

    def entropy(params, batch, outputs, hp):
        return outputs["logits"].sum() * 0

    with pytest.raises(ValueError, match="'entropy', which is already taken"):
        ppo_loss(params, batch, policy=pol, hparams=hp(), custom_losses=[entropy])
