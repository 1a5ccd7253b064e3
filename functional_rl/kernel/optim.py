"""Optimizers as optax-shaped ``(init, update)`` pairs of pure functions.

A :class:`GradientTransformation` has ``init(params) -> state`` and
``update(updates, state, params=None) -> (updates, state)``; :func:`chain` composes them and
:func:`apply_updates` adds the result to the parameters. Nothing is mutated. Hyperparameters
may be Python floats or 0-d tensors; build the transformation inside a compiled function from
tensor arguments and changing them never recompiles.

Example (one Adam step from zero state; ``m_hat = g``, ``v_hat = g^2``, so the step is
``-lr * g / (|g| + eps)``):
    >>> import torch
    >>> params = {"w": torch.tensor([1.0, -2.0])}
    >>> tx = chain(clip_by_global_norm(10.0), adam(0.1))
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": torch.tensor([0.5, -0.5])}, state, params)
    >>> apply_updates(params, updates)["w"]
    tensor([ 0.9000, -1.9000])
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.utils._pytree as pytree

from functional_rl.kernel.struct import pytree_dataclass

__all__ = [
    "GradientTransformation",
    "ScaleByAdamState",
    "EmptyState",
    "scale_by_adam",
    "scale",
    "scale_by_learning_rate",
    "clip_by_global_norm",
    "chain",
    "adam",
    "apply_updates",
    "global_norm",
]


class GradientTransformation(NamedTuple):
    """A pair of pure functions ``init(params)`` and ``update(updates, state, params)``.

    ``params`` and ``updates`` are pytrees of tensors with matching shapes.

    Example:
        >>> import torch
        >>> sgd = GradientTransformation(
        ...     init=lambda params: EmptyState(),
        ...     update=lambda updates, state, params=None: ({k: -0.5 * g for k, g in updates.items()}, state),
        ... )
        >>> params = {"w": torch.tensor([1.0, 2.0])}
        >>> updates, _ = sgd.update({"w": torch.tensor([2.0, 2.0])}, sgd.init(params), params)
        >>> apply_updates(params, updates)["w"]
        tensor([0., 1.])
    """

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any], tuple[Any, Any]]


@pytree_dataclass
class EmptyState:
    """State of a stateless transformation.

    Example:
        >>> import torch, torch.utils._pytree as pytree
        >>> pytree.tree_leaves(scale(2.0).init({"w": torch.zeros(3)}))
        []
        >>> type(scale(2.0).init({"w": torch.zeros(3)})).__name__
        'EmptyState'
    """


@pytree_dataclass
class ScaleByAdamState:
    """Adam's state: step ``count`` (int64 0-d) and first/second moments shaped like params.

    Example:
        >>> import torch
        >>> s = scale_by_adam().init({"w": torch.zeros(2, 3)})
        >>> s.count, s.mu["w"].shape, s.nu["w"].shape
        (tensor(0), torch.Size([2, 3]), torch.Size([2, 3]))
    """

    count: torch.Tensor
    mu: Any
    nu: Any


def _map(fn, *trees):
    return pytree.tree_map(fn, *trees)


def global_norm(tree: Any) -> torch.Tensor:
    """``sqrt(sum_i ||x_i||^2)`` over all tensor leaves; float 0-d.

    Example:
        >>> import torch
        >>> global_norm({"a": torch.tensor([3.0]), "b": torch.tensor([[4.0]])})
        tensor(5.)
    """
    leaves = [x for x in pytree.tree_leaves(tree) if isinstance(x, torch.Tensor)]
    return torch.sqrt(sum((x.float() ** 2).sum() for x in leaves))


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam's preconditioning (Kingma & Ba 2015), torch.optim.Adam's formula.

    ``m_t = b1 m_{t-1} + (1-b1) g``; ``v_t = b2 v_{t-1} + (1-b2) g^2``;
    update ``= m_t / (1-b1^t) / (sqrt(v_t / (1-b2^t)) + eps)``.

    Example (the first step is ``g / (|g| + eps)``, i.e. the sign of ``g``):
        >>> import torch
        >>> tx = scale_by_adam()
        >>> params = {"w": torch.zeros(2)}
        >>> updates, state = tx.update({"w": torch.tensor([0.3, -2.0])}, tx.init(params), params)
        >>> updates["w"].round(decimals=4), state.count
        (tensor([ 1., -1.]), tensor(1))
    """

    def init(params):
        zeros = _map(torch.zeros_like, params)
        return ScaleByAdamState(count=torch.zeros((), dtype=torch.int64), mu=zeros, nu=_map(torch.zeros_like, params))

    def update(updates, state, params=None):
        count = state.count + 1
        # The operation order of torch.optim.Adam (lerp for m, bias corrections in float64,
        # eps added after dividing sqrt(v) by sqrt(bc2)), so results agree to rounding.
        mu = _map(lambda m, g: torch.lerp(m, g, 1 - b1), state.mu, updates)
        nu = _map(lambda v, g: v * b2 + (1 - b2) * g * g, state.nu, updates)
        t = count.to(torch.float64)
        bc1 = (1 - torch.pow(torch.as_tensor(b1, dtype=torch.float64, device=t.device), t)).to(torch.float32)
        bc2_sqrt = torch.sqrt(1 - torch.pow(torch.as_tensor(b2, dtype=torch.float64, device=t.device), t)).to(torch.float32)
        out = _map(lambda m, v: (m / (torch.sqrt(v) / bc2_sqrt + eps)) / bc1, mu, nu)
        return out, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init, update)


def scale(factor: float | torch.Tensor) -> GradientTransformation:
    """Multiply updates by ``factor``.

    Example:
        >>> import torch
        >>> tx = scale(3.0)
        >>> tx.update({"w": torch.tensor([1.0, -2.0])}, tx.init(None))[0]["w"]
        tensor([ 3., -6.])
    """

    def update(updates, state, params=None):
        return _map(lambda u: factor * u, updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


def scale_by_learning_rate(learning_rate: float | torch.Tensor) -> GradientTransformation:
    """Multiply updates by ``-learning_rate`` (gradient descent).

    Example:
        >>> import torch
        >>> tx = scale_by_learning_rate(0.5)
        >>> tx.update({"w": torch.tensor([1.0, -2.0])}, tx.init(None))[0]["w"]
        tensor([-0.5000,  1.0000])
    """
    return scale(-learning_rate)


def clip_by_global_norm(max_norm: float | torch.Tensor) -> GradientTransformation:
    """Rescale updates so their global norm is at most ``max_norm``.

    ``g <- g * min(1, max_norm / ||g||)`` (torch's ``clip_grad_norm_`` uses
    ``max_norm / (||g|| + 1e-6)``; the difference is below float precision for ||g|| >> 1e-6).

    Example:
        >>> import torch
        >>> tx = clip_by_global_norm(1.0)
        >>> clipped, _ = tx.update({"w": torch.tensor([3.0, 4.0])}, tx.init(None))
        >>> clipped["w"], global_norm(clipped)
        (tensor([0.6000, 0.8000]), tensor(1.0000))
        >>> tx.update({"w": torch.tensor([0.3, 0.4])}, tx.init(None))[0]["w"]  # under the limit: unchanged
        tensor([0.3000, 0.4000])
    """

    def update(updates, state, params=None):
        norm = global_norm(updates)
        factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        return _map(lambda u: u * factor, updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply transformations in order; the state is a tuple of their states.

    Example:
        >>> import torch
        >>> tx = chain(clip_by_global_norm(1.0), scale(-0.1))
        >>> state = tx.init({"w": torch.zeros(2)})
        >>> len(state)
        2
        >>> tx.update({"w": torch.tensor([30.0, 40.0])}, state)[0]["w"]
        tensor([-0.0600, -0.0800])
    """

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None):
        new_state = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)


def adam(learning_rate: float | torch.Tensor, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam: ``chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(learning_rate))``.

    Example (minimise ``w^2``; the first step moves ``w`` by exactly ``-lr * sign(grad)``):
        >>> import torch
        >>> params = {"w": torch.tensor([1.0, -1.0])}
        >>> tx = adam(0.1)
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": 2 * params["w"]}, state, params)
        >>> apply_updates(params, updates)["w"]
        tensor([ 0.9000, -0.9000])
    """
    return chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(learning_rate))


def apply_updates(params: Any, updates: Any) -> Any:
    """``params + updates`` leaf by leaf (new tensors; inputs untouched).

    Leaves of ``updates`` must be broadcastable to (usually: shaped like) those of ``params``;
    the result keeps each parameter's dtype.

    Example:
        >>> import torch
        >>> params = {"w": torch.ones(2), "b": torch.zeros(())}
        >>> new = apply_updates(params, {"w": torch.tensor([0.5, -0.5]), "b": torch.tensor(1.0)})
        >>> new["w"], new["b"], params["w"]
        (tensor([1.5000, 0.5000]), tensor(1.), tensor([1., 1.]))
    """
    return _map(lambda p, u: p + u.to(p.dtype), params, updates)
