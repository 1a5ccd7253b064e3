"""Transcendental functions whose compiled result equals the eager one bit for bit.

``torch.compile`` generates its own code for ``tanh``, ``exp`` and ``log_softmax`` (on this
CPU: SLEEF-style vector approximations, and its own reduction order), while eager PyTorch
calls MKL's vector math and ATen's reductions. Both are accurate to about an ulp, but not the
same ulp: on ``[4, 256]`` random inputs about 1 in 400 ``tanh`` values and 1 in 10 ``exp``
values differ in the last bit. A recurrent policy feels this: its rollout runs compiled, its
training replay runs eagerly, and the log-prob training recomputes should equal, bit for
bit, the one the rollout sampled with (the first PPO ratio is then exactly 1).

Each function here is plain ``torch`` eagerly, and under ``torch.compile`` a custom operator
(``functional_rl::tanh`` ...) whose body is that same eager call, so inductor leaves it as an
external call to the ATen kernel instead of generating its own. Only the few
transcendental ops of a recurrent policy's forward pass go through here: additions,
products, ``where``, ``relu`` and matrix products are already the same compiled and eager.
Each operator has a fake (shape) implementation, a vmap rule (``train_many`` vmaps the
rollout) and an autograd formula (ATen's own backward ops).

Example:
    >>> x = torch.linspace(-3, 3, 5)
    >>> bool(torch.equal(tanh(x), torch.tanh(x))), bool(torch.equal(exp(x), torch.exp(x)))
    (True, True)
    >>> bool(torch.equal(torch.compile(tanh, fullgraph=True)(x), torch.tanh(x)))
    True
"""

from __future__ import annotations

import torch

__all__ = ["tanh", "sigmoid", "exp", "log_softmax"]


def _elementwise(name: str, eager, backward):
    """A custom op ``functional_rl::name`` that calls ``eager``, with fake, vmap and autograd rules.

    ``backward(grad, output) -> grad_input``."""

    @torch.library.custom_op(f"functional_rl::{name}", mutates_args=())
    def op(x: torch.Tensor) -> torch.Tensor:
        return eager(x)

    @op.register_fake
    def _(x):
        return torch.empty_like(x)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    op.register_autograd(lambda ctx, grad: backward(grad, ctx.saved_tensors[0]), setup_context=setup_context)
    op.register_vmap(lambda info, in_dims, x: (op(x), in_dims[0]))
    return op


_tanh = _elementwise("tanh", torch.tanh, torch.ops.aten.tanh_backward)
_sigmoid = _elementwise("sigmoid", torch.sigmoid, torch.ops.aten.sigmoid_backward)
_exp = _elementwise("exp", torch.exp, lambda grad, out: grad * out)


@torch.library.custom_op("functional_rl::log_softmax", mutates_args=())
def _log_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x, dim=-1)


@_log_softmax.register_fake
def _(x):
    return torch.empty_like(x)


def _log_softmax_setup(ctx, inputs, output):
    ctx.save_for_backward(output)


_log_softmax.register_autograd(
    lambda ctx, grad: torch.ops.aten._log_softmax_backward_data(grad, ctx.saved_tensors[0], -1, grad.dtype),
    setup_context=_log_softmax_setup,
)


def _log_softmax_vmap(info, in_dims, x):
    """The softmax axis is the last one of each example: move a trailing batch axis to the front."""
    if in_dims[0] is None or in_dims[0] != x.dim() - 1:
        return _log_softmax(x), in_dims[0]
    return _log_softmax(x.movedim(-1, 0)), 0


_log_softmax.register_vmap(_log_softmax_vmap)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """``torch.tanh(x)``, the same bits compiled as eager; any shape.

    Example:
        >>> tanh(torch.zeros(2))
        tensor([0., 0.])
    """
    return _tanh(x) if torch.compiler.is_compiling() else torch.tanh(x)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``torch.sigmoid(x) = 1 / (1 + exp(-x))``, the same bits compiled as eager; any shape.

    Example:
        >>> sigmoid(torch.zeros(2))
        tensor([0.5000, 0.5000])
    """
    return _sigmoid(x) if torch.compiler.is_compiling() else torch.sigmoid(x)


def exp(x: torch.Tensor) -> torch.Tensor:
    """``torch.exp(x)``, the same bits compiled as eager; any shape.

    Example:
        >>> exp(torch.zeros(2))
        tensor([1., 1.])
    """
    return _exp(x) if torch.compiler.is_compiling() else torch.exp(x)


def log_softmax(x: torch.Tensor) -> torch.Tensor:
    """``log softmax`` over the last axis, ``x_k - log sum_j exp(x_j)``, the same bits compiled
    as eager; ``[..., K] -> [..., K]``.

    Example:
        >>> log_softmax(torch.zeros(1, 4)).exp()
        tensor([[0.2500, 0.2500, 0.2500, 0.2500]])
    """
    return _log_softmax(x) if torch.compiler.is_compiling() else torch.log_softmax(x, dim=-1)
