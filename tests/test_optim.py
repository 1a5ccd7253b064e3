"""Optimizers match torch.optim and stay pure."""

import pytest
import torch
import torch.utils._pytree as pytree

import functional_rl.kernel.random as jr
from functional_rl.kernel import optim


def test_adam_matches_torch_adam_over_100_steps():
    k = jr.key(0)
    params = {"w": jr.normal(k, (5, 3)), "b": jr.normal(jr.fold_in(k, 1), (3,))}
    ref = [params["w"].clone().requires_grad_(), params["b"].clone().requires_grad_()]
    torch_opt = torch.optim.Adam(ref, lr=1e-2, eps=1e-5)
    tx = optim.adam(1e-2, eps=1e-5)
    state = tx.init(params)
    for step in range(100):
        # A fixed sequence of varied gradients: the gradient of a shifting quadratic.
        target = jr.normal(jr.fold_in(k, step + 10), (5, 3))
        grads = {"w": 2 * (params["w"] - target), "b": params["b"] * torch.cos(torch.tensor(float(step)))}
        torch_opt.zero_grad()
        ref[0].grad = grads["w"].clone()
        ref[1].grad = grads["b"].clone()
        torch_opt.step()
        updates, state = tx.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    assert torch.allclose(params["w"], ref[0].detach(), atol=1e-6)
    assert torch.allclose(params["b"], ref[1].detach(), atol=1e-6)
    assert int(state[0].count) == 100


def test_clip_by_global_norm_matches_torch():
    g = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([12.0])}  # norm 13
    clipped, _ = optim.clip_by_global_norm(1.3).update(g, optim.EmptyState())
    ref = [torch.tensor([3.0, 4.0], requires_grad=True), torch.tensor([12.0], requires_grad=True)]
    ref[0].grad, ref[1].grad = g["a"].clone(), g["b"].clone()
    torch.nn.utils.clip_grad_norm_(ref, 1.3)
    assert torch.allclose(clipped["a"], ref[0].grad) and torch.allclose(clipped["b"], ref[1].grad)
    assert abs(float(optim.global_norm(clipped)) - 1.3) < 1e-5
    small, _ = optim.clip_by_global_norm(100.0).update(g, optim.EmptyState())
    assert torch.equal(small["a"], g["a"])


def test_update_does_not_mutate_inputs():
    params = {"w": torch.ones(3)}
    tx = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.1))
    state = tx.init(params)
    grads = {"w": torch.tensor([1.0, -2.0, 3.0])}
    before = (params["w"].clone(), grads["w"].clone(), state[1][0].mu["w"].clone(), state[1][0].count.clone())
    updates, new_state = tx.update(grads, state, params)
    optim.apply_updates(params, updates)
    assert torch.equal(params["w"], before[0]) and torch.equal(grads["w"], before[1])
    assert torch.equal(state[1][0].mu["w"], before[2]) and torch.equal(state[1][0].count, before[3])
    assert int(new_state[1][0].count) == 1


def _shifting_quadratic_grads(params, k, step):
    """The gradient of a quadratic whose target moves every step (a varied, fixed sequence)."""
    target = jr.normal(jr.fold_in(k, step + 10), params["w"].shape)
    return {"w": 2 * (params["w"] - target), "b": params["b"] * torch.cos(torch.tensor(float(step)))}


def test_adamw_matches_torch_adamw_over_100_steps():
    k = jr.key(1)
    params = {"w": jr.normal(k, (5, 3)), "b": jr.normal(jr.fold_in(k, 1), (3,))}
    ref = [params["w"].clone().requires_grad_(), params["b"].clone().requires_grad_()]
    torch_opt = torch.optim.AdamW(ref, lr=1e-2, eps=1e-5, weight_decay=0.1)
    tx = optim.adamw(1e-2, eps=1e-5, weight_decay=0.1)
    state = tx.init(params)
    for step in range(100):
        grads = _shifting_quadratic_grads(params, k, step)
        ref[0].grad, ref[1].grad = grads["w"].clone(), grads["b"].clone()
        torch_opt.step()
        updates, state = tx.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    assert torch.allclose(params["w"], ref[0].detach(), atol=1e-6)
    assert torch.allclose(params["b"], ref[1].detach(), atol=1e-6)
    assert not torch.allclose(params["w"], _adam_reference(k, 100), atol=1e-3)  # the decay did act


def _adam_reference(k, steps):
    params = {"w": jr.normal(k, (5, 3)), "b": jr.normal(jr.fold_in(k, 1), (3,))}
    tx = optim.adam(1e-2, eps=1e-5)
    state = tx.init(params)
    for step in range(steps):
        updates, state = tx.update(_shifting_quadratic_grads(params, k, step), state, params)
        params = optim.apply_updates(params, updates)
    return params["w"]


def _newton_schulz_reference(G, steps=5):
    """Muon's published iteration, written out as in Keller Jordan's reference code (float32 here)."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.clone()
    if G.size(0) > G.size(1):
        X = X.T
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(0) > G.size(1):
        X = X.T
    return X


def test_muon_matches_a_plain_reference_of_the_published_iteration():
    """20 steps on a [6, 4] and a [3, 7] matrix and a bias: momentum buffers, Nesterov,
    the Newton-Schulz orthogonalisation and Moonlight's 0.2 sqrt(max(m, n)) scale, written
    as a stateful loop; the bias follows Adam."""
    k = jr.key(2)
    params = {"w": jr.normal(k, (6, 4)), "u": jr.normal(jr.fold_in(k, 1), (3, 7)), "b": jr.normal(jr.fold_in(k, 2), (3,))}
    lr, wd, beta = 0.02, 0.01, 0.95
    ref = {n: p.clone() for n, p in params.items()}
    bufs = {n: torch.zeros_like(p) for n, p in params.items() if p.dim() == 2}
    adam_ref = torch.optim.AdamW([ref["b"].requires_grad_()], lr=lr, weight_decay=wd, eps=1e-8)
    tx = optim.muon(lr, weight_decay=wd, beta=beta)
    state = tx.init(params)
    for step in range(20):
        grads = {n: jr.normal(jr.fold_in(k, 100 + step * 3 + i), p.shape) for i, (n, p) in enumerate(params.items())}
        with torch.no_grad():
            for n in bufs:
                bufs[n].mul_(beta).add_(grads[n], alpha=1 - beta)
                direction = grads[n].lerp(bufs[n], beta)  # Nesterov
                o = _newton_schulz_reference(direction) * (0.2 * max(direction.shape) ** 0.5)
                ref[n].mul_(1 - lr * wd).add_(o, alpha=-lr)
        ref["b"].grad = grads["b"].clone()
        adam_ref.step()
        updates, state = tx.update(grads, state, params)
        params = optim.apply_updates(params, updates)
    for n in params:
        assert torch.allclose(params[n], ref[n].detach(), atol=1e-5), n


def test_newton_schulz_orthogonalises():
    g = jr.normal(jr.key(3), (8, 5))
    s = torch.linalg.svdvals(optim.newton_schulz(g))
    assert bool(((s > 0.6) & (s < 1.25)).all()), s  # Muon's quintic lands every singular value in ~[0.7, 1.2]
    conv = optim.newton_schulz(jr.normal(jr.key(4), (4, 2, 3, 3)))  # a conv kernel: as [4, 18]
    assert conv.shape == (4, 2, 3, 3)


def test_make_optimizer_selects_and_weight_decay_is_a_tensor_that_never_recompiles():
    import torch._dynamo

    from functional_rl.kernel.config import Hyperparams, PPOConfig

    params = {"w": torch.ones(3, 2), "b": torch.ones(3)}
    grads = {"w": torch.full((3, 2), 0.5), "b": torch.full((3,), 0.5)}
    moved = {}
    for kind in optim.OPTIMIZERS:
        cfg = PPOConfig(optimizer=kind, weight_decay=0.0 if kind == "adam" else 0.1, learning_rate=0.1, anneal_lr=False)
        tx = optim.make_optimizer(cfg)
        updates, _ = tx.update(grads, tx.init(params), params, Hyperparams.from_config(cfg))
        moved[kind] = optim.apply_updates(params, updates)
    assert not torch.allclose(moved["adam"]["w"], moved["adamw"]["w"])  # decay on top of the same Adam step
    assert torch.allclose(moved["adamw"]["w"], moved["adam"]["w"] - 0.1 * 0.1 * params["w"])
    assert not torch.allclose(moved["muon"]["w"], moved["adamw"]["w"]) and torch.allclose(moved["muon"]["b"], moved["adamw"]["b"])

    cfg = PPOConfig(optimizer="adamw", weight_decay=0.1)
    tx = optim.make_optimizer(cfg)
    step = torch.compile(lambda g, s, p, h: tx.update(g, s, p, h), fullgraph=True, dynamic=False)
    hp = Hyperparams.from_config(cfg)
    state = tx.init(params)
    outs = [step(grads, state, params, hp)[0]["w"]]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for wd in (0.0, 0.3):
            outs.append(step(grads, state, params, hp.replace(weight_decay=torch.tensor(wd)))[0]["w"])
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])


def test_optimizer_config_errors_say_what_to_do():
    import pytest

    from functional_rl.kernel.config import PPOConfig

    with pytest.raises(ValueError, match="optimizer='adamw', 'muon' or 'schedule_free_adamw'"):
        PPOConfig(weight_decay=0.1)
    with pytest.raises(ValueError, match="schedule_free_adamw replaces the learning-rate decay: set anneal_lr=False"):
        PPOConfig(optimizer="schedule_free_adamw")
    with pytest.raises(ValueError, match="schedule_free_warmup_steps"):
        PPOConfig(optimizer="schedule_free_adamw", anneal_lr=False, schedule_free_warmup_steps=-1)
    with pytest.raises(ValueError, match="must be one of 'adam', 'adamw', 'muon'"):
        PPOConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="weight_decay.*>= 0"):
        PPOConfig(optimizer="adamw", weight_decay=-1.0)
    with pytest.raises(ValueError, match="vf_clip_coef"):
        PPOConfig(vf_clip_coef=0.0)


def test_l2_terms_add_exactly_the_gradient_of_their_losses():
    k = jr.key(5)
    params = {"w": jr.normal(k, (3, 2)), "b": jr.normal(jr.fold_in(k, 1), (2,))}
    start = {n: p + 0.3 for n, p in params.items()}
    grads = {n: jr.normal(jr.fold_in(k, 7 + i), p.shape) for i, (n, p) in enumerate(params.items())}

    def loss(p):
        reg = sum((x**2).sum() for x in p.values())
        init = sum(((x - start[n]) ** 2).sum() for n, x in p.items())
        return 0.25 * reg + 0.5 * init

    want = torch.func.grad(loss)(params)
    tx = optim.chain(optim.add_l2_gradient(0.25), optim.add_l2_to_initial(0.5))
    state = (optim.EmptyState(), optim.add_l2_to_initial(0.5).init(start))
    got, _ = tx.update(grads, state, params)
    for n in params:
        assert torch.allclose(got[n], grads[n] + want[n], atol=1e-6)


def test_l2_terms_join_the_optimizer_only_when_configured_and_anchor_at_the_start():
    import functional_rl as frl
    from functional_rl.kernel.config import PPOConfig

    assert len(optim.make_optimizer(PPOConfig()).init({"w": torch.zeros(2)})) == 3  # clip, adam, schedule
    cfg = PPOConfig(l2_reg_loss_coef=0.0, l2_init_loss_coef=1.0, num_envs=2, num_steps=8, num_minibatches=2,
                    update_epochs=2, total_timesteps=64, hidden_sizes=(8,), learning_rate=1e-2)
    state = frl.TrainerState.create(cfg, frl.envs.make(cfg.env_id), frl.make_mlp_policy(frl.envs.make(cfg.env_id).observation_space,
                                                                                         frl.envs.make(cfg.env_id).action_space, (8,)))
    anchor = state.learner.opt_state[1]
    assert isinstance(anchor, optim.L2ToInitialState) and torch.equal(anchor.initial["actor"][0]["w"], state.learner.params["actor"][0]["w"])

    def drift(c):
        run = cfg.replace(l2_init_loss_coef=c)
        final, _ = frl.functional_training_loop(run, compile=False)
        start = frl.TrainerState.create(run, frl.envs.make(run.env_id), frl.make_mlp_policy(
            frl.envs.make(run.env_id).observation_space, frl.envs.make(run.env_id).action_space, (8,))).learner.params
        return float(global_norm_diff(final.learner.params, start))

    assert drift(50.0) < 0.5 * drift(0.0)  # a strong pull keeps the policy near its start


def global_norm_diff(a, b):
    import torch.utils._pytree as pytree

    return optim.global_norm(pytree.tree_map(lambda x, y: x - y, a, b))


def test_sweeping_a_piece_the_config_leaves_out_is_refused():
    import pytest

    import functional_rl as frl

    cfg = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, total_timesteps=16)
    with pytest.raises(ValueError, match="cannot sweep target_kl while the config's target_kl is None"):
        frl.train_many(cfg, seeds=[0], hparams={"target_kl": [0.01, 0.02]}, compile=False)
    states, _ = frl.train_many(cfg.replace(l2_init_loss_coef=0.0), seeds=[0], hparams={"l2_init_loss_coef": [0.0, 0.1]}, compile=False)
    assert states.learner.hparams.l2_init_loss_coef.tolist() == pytest.approx([0.0, 0.1])


class _ScheduleFreeAdamWReference:
    """Schedule-free AdamW as published (Defazio et al. 2024, Algorithm 1), written as a
    stateful loop after facebookresearch/schedule_free's ``AdamWScheduleFree.step`` (the
    per-parameter path, bias correction folded into the lr): ``y`` (the parameters) and ``z``
    updated in place, Python-float bookkeeping, ``x`` recovered as the reference's ``eval()``
    does, ``y.lerp(z, 1 - 1/b1)``."""

    def __init__(self, params, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, warmup_steps=0, weight_lr_power=2.0, r=0.0):
        self.y = {n: p.clone() for n, p in params.items()}
        self.z = {n: p.clone() for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()}
        self.b1, self.b2, self.eps, self.decay = b1, b2, eps, weight_decay
        self.warmup_steps, self.weight_lr_power, self.r = warmup_steps, weight_lr_power, r
        self.k, self.weight_sum, self.lr_max = 0, 0.0, -1.0

    def step(self, grads, base_lr):
        import math

        k, b1, b2 = self.k, self.b1, self.b2
        sched = (k + 1) / self.warmup_steps if k < self.warmup_steps else 1.0
        bias_correction2 = 1 - b2 ** (k + 1)
        lr = base_lr * sched * math.sqrt(bias_correction2)
        self.lr_max = max(lr, self.lr_max)
        weight = ((k + 1) ** self.r) * (self.lr_max ** self.weight_lr_power)
        self.weight_sum = self.weight_sum + weight
        try:
            ckp1 = weight / self.weight_sum
        except ZeroDivisionError:
            ckp1 = 0
        for n in self.y:
            y, z, v = self.y[n], self.z[n], self.v[n]
            grad = grads[n].clone()
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = v.sqrt().add_(self.eps)
            grad_normalized = grad.div_(denom)
            if self.decay != 0:
                grad_normalized.add_(y, alpha=self.decay)  # weight decay at y
            y.lerp_(end=z, weight=ckp1)
            y.add_(grad_normalized, alpha=lr * (b1 * (1 - ckp1) - 1))
            z.sub_(grad_normalized, alpha=lr)
        self.k = k + 1

    def x(self):
        return {n: self.y[n].lerp(self.z[n], 1 - 1 / self.b1) for n in self.y}


def _tiny_mlp_params(k):
    return {"w1": jr.normal(k, (4, 3)), "b1": jr.normal(jr.fold_in(k, 1), (3,)), "w2": jr.normal(jr.fold_in(k, 2), (3, 2))}


def _tiny_mlp_grads(params, k, step):
    """The gradient of a tiny tanh MLP's squared error on a fresh random batch (a varied, fixed sequence)."""
    inputs = jr.normal(jr.fold_in(k, 1000 + step), (8, 4))
    targets = jr.normal(jr.fold_in(k, 2000 + step), (8, 2))

    def loss(p):
        return ((torch.tanh(inputs @ p["w1"] + p["b1"]) @ p["w2"] - targets) ** 2).mean()

    return torch.func.grad(loss)(params)


@pytest.mark.parametrize(
    "lr_kind, kwargs",
    [
        ("float", dict()),
        ("tensor", dict(weight_decay=0.1)),
        ("callable", dict(warmup_steps=10, weight_decay=0.05)),
        ("callable", dict(warmup_steps=7, b1=0.8, b2=0.99, eps=1e-6, weight_lr_power=1.0, r=0.5)),
    ],
)
def test_schedule_free_adamw_matches_a_plain_reference_of_the_published_algorithm(lr_kind, kwargs):
    """100 steps on a tiny MLP: the parameters (y) and schedule_free_eval_params (x) equal the
    reference loop's, with and without warmup and weight decay; the callable learning rate
    decays from step 50 (so the max-lr weighting matters) and is read from hparams."""
    k = jr.key(11)
    params = _tiny_mlp_params(k)
    ref = _ScheduleFreeAdamWReference(params, **kwargs)
    base = 0.02

    exact = base if lr_kind == "float" else float(torch.tensor(base))  # a tensor rate is float32's 0.02

    def lr_at(step):
        return exact * (1.0 if step < 50 else 0.5) if lr_kind == "callable" else exact

    learning_rate = {
        "float": base,
        "tensor": torch.tensor(base),
        "callable": lambda count, hparams: hparams["lr"] * torch.where(count < 50, 1.0, 0.5),
    }[lr_kind]
    tx = optim.schedule_free_adamw(learning_rate, **kwargs)
    hparams = {"lr": torch.tensor(base)}
    state = tx.init(params)
    for step in range(100):
        grads = _tiny_mlp_grads(params, k, step)
        ref.step(grads, lr_at(step))
        updates, state = tx.update(grads, state, params, hparams)
        params = optim.apply_updates(params, updates)
    x = optim.schedule_free_eval_params(state, params)
    for n in params:
        torch.testing.assert_close(params[n], ref.y[n], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(state.z[n], ref.z[n], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x[n], ref.x()[n], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(x[n], params[n], atol=1e-4)  # x and y are different points
    assert int(state.count) == 100
    assert float(state.weight_sum) == pytest.approx(ref.weight_sum, rel=1e-12)
    assert float(state.lr_max) == pytest.approx(ref.lr_max, rel=1e-12)


def test_schedule_free_adamw_with_b1_zero_is_adam_without_momentum_and_x_the_lr2_weighted_average():
    """With b1 = 0, y = z, and z's step gamma_t g / sqrt(v_t) = lr g / sqrt(v_t / (1 - b2^t)) is
    torch.optim.Adam's with betas (0, b2) and eps 0; x_{T+1} = sum_t w_t z_{t+1} / sum_t w_t
    with w_t = lrmax_t^2 = lr^2 (1 - b2^t) (increasing, so the max is the last)."""
    k = jr.key(12)
    params = _tiny_mlp_params(k)
    lr, b2 = 0.01, 0.99
    ref = [params[n].clone().requires_grad_() for n in params]
    torch_opt = torch.optim.Adam(ref, lr=lr, betas=(0.0, b2), eps=0.0)
    tx = optim.schedule_free_adamw(lr, b1=0.0, b2=b2, eps=0.0)
    state = tx.init(params)
    weighted = {n: torch.zeros_like(p) for n, p in params.items()}
    total = 0.0
    for step in range(60):
        grads = _tiny_mlp_grads(params, k, step)
        for p, n in zip(ref, params):
            p.grad = grads[n].clone()
        torch_opt.step()
        updates, state = tx.update(grads, state, params)
        params = optim.apply_updates(params, updates)
        w = lr**2 * (1 - b2 ** (step + 1))
        total += w
        for n, p in zip(params, ref):
            torch.testing.assert_close(params[n], p.detach(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(state.z[n], params[n], rtol=1e-6, atol=1e-7)  # y = z
            weighted[n] = weighted[n] + w * p.detach().double()
    x = optim.schedule_free_eval_params(state, params)
    for n in params:
        torch.testing.assert_close(x[n], (weighted[n] / total).float(), rtol=1e-5, atol=1e-6)


def _stack(trees):
    return pytree.tree_map(lambda *xs: torch.stack(xs), *trees)


def test_schedule_free_adamw_under_vmap_equals_separate_runs():
    """3 parameter sets, each with its own learning rate and weight decay (hparams batched too),
    stepped by one vmapped update: equal to 3 separate runs."""
    k = jr.key(13)
    sets = [_tiny_mlp_params(jr.fold_in(k, i)) for i in range(3)]
    hps = [{"lr": torch.tensor(lr), "wd": torch.tensor(wd)} for lr, wd in ((0.01, 0.0), (0.03, 0.1), (0.1, 0.01))]
    tx = optim.chain(optim.clip_by_global_norm(1.0), optim.schedule_free_adamw(
        lambda count, hp: hp["lr"], weight_decay=lambda hp: hp["wd"], warmup_steps=5))
    singles = [(p, tx.init(p)) for p in sets]
    params, state, hparams = _stack(sets), _stack([s for _, s in singles]), _stack(hps)
    vmapped_init = torch.func.vmap(tx.init)(params)
    for a, b in zip(pytree.tree_leaves(vmapped_init), pytree.tree_leaves(state)):
        assert torch.equal(a, b)
    step = torch.func.vmap(tx.update)
    for t in range(15):
        grads = _stack([_tiny_mlp_grads(p, jr.fold_in(k, i), t) for i, (p, _) in enumerate(singles)])
        updates, state = step(grads, state, params, hparams)
        params = optim.apply_updates(params, updates)
        for i, (p, s) in enumerate(singles):
            u, s = tx.update(_tiny_mlp_grads(p, jr.fold_in(k, i), t), s, p, hps[i])
            singles[i] = (optim.apply_updates(p, u), s)
    x = optim.schedule_free_eval_params(state, params)
    for i, (p, s) in enumerate(singles):
        xi = optim.schedule_free_eval_params(s, p)
        for n in p:
            torch.testing.assert_close(params[n][i], p[n], rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(x[n][i], xi[n], rtol=1e-6, atol=1e-7)
    assert state[1].count.tolist() == [15, 15, 15]


def test_schedule_free_adamw_compiles_fullgraph_and_a_new_learning_rate_never_recompiles():
    import torch._dynamo

    k = jr.key(14)
    params = {"w": jr.normal(k, (3, 2)), "b": jr.normal(jr.fold_in(k, 1), (2,))}
    tx = optim.chain(optim.clip_by_global_norm(1.0), optim.schedule_free_adamw(
        lambda count, hp: hp["lr"], weight_decay=lambda hp: hp["wd"], warmup_steps=3))
    step = torch.compile(lambda g, s, p, h: tx.update(g, s, p, h), fullgraph=True, dynamic=False)
    eager_params, eager_state = params, tx.init(params)
    state = tx.init(params)
    lrs = (0.05, 0.02, 0.1, 0.0, 0.07)
    for t, lr in enumerate(lrs):
        hp = {"lr": torch.tensor(lr), "wd": torch.tensor(0.01 * t)}
        grads = {n: jr.normal(jr.fold_in(k, 10 + 2 * t + i), p.shape) for i, (n, p) in enumerate(params.items())}
        with torch._dynamo.config.patch(error_on_recompile=t > 0):
            updates, state = step(grads, state, params, hp)
        params = optim.apply_updates(params, updates)
        u, eager_state = tx.update(grads, eager_state, eager_params, hp)
        eager_params = optim.apply_updates(eager_params, u)
        for n in params:
            torch.testing.assert_close(params[n], eager_params[n], rtol=1e-5, atol=1e-6)
    x, eager_x = optim.schedule_free_eval_params(state, params), optim.schedule_free_eval_params(eager_state, eager_params)
    for n in params:
        torch.testing.assert_close(x[n], eager_x[n], rtol=1e-5, atol=1e-6)
    assert int(state[1].count) == len(lrs) and float(state[1].lr_max) > 0


def test_schedule_free_adamw_minimises_a_least_squares_problem_with_a_constant_learning_rate():
    k = jr.key(15)
    a, b = jr.normal(k, (32, 6)), jr.normal(jr.fold_in(k, 1), (32,))

    def loss(p):
        return ((a @ p["w"] - b) ** 2).mean()

    best = loss({"w": torch.linalg.lstsq(a, b.unsqueeze(1)).solution.squeeze(1)})
    params = {"w": 3.0 * torch.ones(6)}
    tx = optim.schedule_free_adamw(0.1)
    state = tx.init(params)
    start = loss(params)
    for _ in range(300):
        updates, state = tx.update(torch.func.grad(loss)(params), state, params)
        params = optim.apply_updates(params, updates)
    end_x = loss(optim.schedule_free_eval_params(state, params))
    end_y = loss(params)
    assert float(end_x - best) < 1e-3 * float(start - best), (float(start), float(end_x), float(best))
    assert float(end_y - best) < 1e-3 * float(start - best)


def test_schedule_free_adamw_is_pure_and_eval_params_finds_its_state():
    params = {"w": torch.ones(3)}
    tx = optim.chain(optim.add_l2_gradient(0.1), optim.clip_by_global_norm(1.0), optim.schedule_free_adamw(0.1, weight_decay=0.1))
    state = tx.init(params)
    grads = {"w": torch.tensor([1.0, -2.0, 3.0])}
    before = [x.clone() for x in pytree.tree_leaves((params, grads, state))]
    updates, new_state = tx.update(grads, state, params)
    for old, now in zip(before, pytree.tree_leaves((params, grads, state))):
        assert torch.equal(old, now)
    assert isinstance(new_state[2], optim.ScheduleFreeAdamWState) and int(new_state[2].count) == 1
    assert optim.schedule_free_eval_params(new_state, params) is new_state[2].x
    assert optim.schedule_free_eval_params(new_state[2], params) is new_state[2].x
    adam_state = optim.adam(0.1).init(params)
    assert optim.schedule_free_eval_params(adam_state, params) is params  # no schedule-free state: train = eval point
    with pytest.raises(ValueError, match="2 schedule-free states"):
        optim.schedule_free_eval_params((new_state[2], new_state[2]), params)
    with pytest.raises(ValueError, match="needs the parameters"):
        optim.schedule_free_adamw(0.1).update(grads, optim.schedule_free_adamw(0.1).init(params))
    # A zero learning rate: no weight, c = 0 (the reference's ZeroDivisionError branch), nothing moves.
    sf = optim.schedule_free_adamw(0.0)
    u, s = sf.update(grads, sf.init(params), params)
    assert torch.equal(u["w"], torch.zeros(3)) and float(s.weight_sum) == 0.0 and torch.equal(s.x["w"], params["w"])



def test_make_optimizer_builds_schedule_free_adamw_reading_lr_decay_and_warmup_from_config_and_hparams():
    from functional_rl.kernel.config import Hyperparams, PPOConfig

    cfg = PPOConfig(optimizer="schedule_free_adamw", learning_rate=0.1, weight_decay=0.1, anneal_lr=False)
    params = {"w": torch.tensor([1.0, -2.0]), "b": torch.zeros(())}
    grads = {"w": torch.tensor([0.3, -0.3]), "b": torch.tensor(0.1)}
    hp = Hyperparams.from_config(cfg)
    tx = optim.make_optimizer(cfg)
    state = tx.init(params)
    assert len(state) == 2 and isinstance(state[1], optim.ScheduleFreeAdamWState)  # (clip, schedule-free): no scale_by_schedule
    want_tx = optim.chain(optim.clip_by_global_norm(cfg.max_grad_norm),
                          optim.schedule_free_adamw(0.1, eps=cfg.adam_eps, weight_decay=0.1))
    want_state = want_tx.init(params)
    for t in range(3):
        h = hp.replace(learning_rate=torch.tensor(0.1))
        updates, state = tx.update(grads, state, params, h)
        want, want_state = want_tx.update(grads, want_state, params, h)
        for n in params:
            torch.testing.assert_close(updates[n], want[n])
    # The learning rate is read from hparams: a new one changes the step.
    other, _ = tx.update(grads, state, params, hp.replace(learning_rate=torch.tensor(0.01)))
    assert not torch.allclose(other["w"], updates["w"])
    # schedule_free_warmup_steps: the first step is (lr / warmup_steps) Adam's,
    # gamma_1 g / (sqrt(v_1) + eps) with gamma_1 = lr' sqrt(1 - b2), sqrt(v_1) = sqrt(1 - b2) |g|.
    no_decay = hp.replace(weight_decay=torch.tensor(0.0))
    root = (1 - 0.999) ** 0.5

    def first_step(lr):
        return -lr * root * grads["w"] / (root * grads["w"].abs() + cfg.adam_eps)

    warm = optim.make_optimizer(cfg.replace(schedule_free_warmup_steps=4))
    torch.testing.assert_close(warm.update(grads, warm.init(params), params, no_decay)[0]["w"], first_step(0.1 / 4))
    cold = optim.make_optimizer(cfg)
    torch.testing.assert_close(cold.update(grads, cold.init(params), params, no_decay)[0]["w"], first_step(0.1))
    # The L2 terms still come first.
    with_l2 = optim.make_optimizer(cfg.replace(l2_reg_loss_coef=0.1, l2_init_loss_coef=0.2))
    assert [type(s).__name__ for s in with_l2.init(params)] == ["EmptyState", "L2ToInitialState", "EmptyState", "ScheduleFreeAdamWState"]


def test_a_schedule_free_run_is_evaluated_and_saved_at_the_average_x(tmp_path):
    """Evaluation, policy records and the CLI's eval read eval_params(state): with
    schedule-free AdamW that is the optimizer's x, not the training point y."""
    import functional_rl as frl
    from functional_rl.shell.callbacks import eval_params
    from functional_rl.shell.policy_store import PolicyStore

    cfg = frl.PPOConfig(num_envs=2, num_steps=16, num_minibatches=2, total_timesteps=96, optimizer="schedule_free_adamw",
                        anneal_lr=False, learning_rate=1e-2)
    state, _ = frl.functional_training_loop(cfg, compile=False, policy_store=str(tmp_path))
    x = optim.schedule_free_eval_params(state.learner.opt_state, state.learner.params)
    assert eval_params(state) is x
    assert not torch.equal(x["actor"][0]["w"], state.learner.params["actor"][0]["w"])
    record = PolicyStore(tmp_path).load(PolicyStore(tmp_path).uri)
    assert torch.equal(record.params["actor"][0]["w"], x["actor"][0]["w"])
