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
