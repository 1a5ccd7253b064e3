"""Optimizers match torch.optim and stay pure."""

import torch

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

    with pytest.raises(ValueError, match="optimizer='adamw' or 'muon'"):
        PPOConfig(weight_decay=0.1)
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
