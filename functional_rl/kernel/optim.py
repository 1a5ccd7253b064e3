"""Optimizers as optax-shaped ``(init, update)`` pairs of pure functions.

A :class:`GradientTransformation` has ``init(params) -> state`` and
``update(updates, state, params=None, hparams=None) -> (updates, state)``; :func:`chain`
composes them and :func:`apply_updates` adds the result to the parameters. Nothing is mutated.

A hyperparameter of a transformation is a Python float, a 0-d tensor, or a function of the
run's :class:`~functional_rl.kernel.config.Hyperparams` (``hparams -> tensor``) read at every
``update`` (optax's ``inject_hyperparams`` idea without copying them into the optimizer
state): the optimizer is built once per run, the values stay tensors in the training state,
and changing them never recompiles. :func:`make_optimizer` is PPO's optimizer built that way,
with its learning-rate schedule driven by its own update count.

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

import math
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
    "ScaleByScheduleState",
    "scale_by_schedule",
    "make_optimizer",
    "learning_rate_schedule",
    "add_decayed_weights",
    "adamw",
    "newton_schulz",
    "ScaleByMuonState",
    "scale_by_muon",
    "muon",
    "OPTIMIZERS",
    "add_l2_gradient",
    "L2ToInitialState",
    "add_l2_to_initial",
    "ScheduleFreeAdamWState",
    "schedule_free_adamw",
    "schedule_free_eval_params",
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
    update: Callable[..., tuple[Any, Any]]


def _resolve(value: Any, hparams: Any) -> Any:
    """A hyperparameter's value now: ``value(hparams)`` for a function, else ``value``."""
    return value(hparams) if callable(value) else value


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
    """``sqrt(sum_i ||x_i||^2)`` over all tensor leaves; float 0-d (0 for a tree without any,
    e.g. a policy's empty list of encoder layers).

    Example:
        >>> import torch
        >>> global_norm({"a": torch.tensor([3.0]), "b": torch.tensor([[4.0]])})
        tensor(5.)
        >>> global_norm({"encoder": []})
        tensor(0.)
    """
    leaves = [x for x in pytree.tree_leaves(tree) if isinstance(x, torch.Tensor)]
    if not leaves:
        return torch.zeros(())
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

    def update(updates, state, params=None, hparams=None):
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


def scale(factor: Any) -> GradientTransformation:
    """Multiply updates by ``factor`` (a number, a tensor or ``hparams -> tensor``).

    Example:
        >>> import torch
        >>> tx = scale(3.0)
        >>> tx.update({"w": torch.tensor([1.0, -2.0])}, tx.init(None))[0]["w"]
        tensor([ 3., -6.])
    """

    def update(updates, state, params=None, hparams=None):
        f = _resolve(factor, hparams)
        return _map(lambda u: f * u, updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


def scale_by_learning_rate(learning_rate: Any) -> GradientTransformation:
    """Multiply updates by ``-learning_rate`` (gradient descent); ``learning_rate`` is a
    number, a tensor or ``hparams -> tensor``.

    Example:
        >>> import torch
        >>> tx = scale_by_learning_rate(0.5)
        >>> tx.update({"w": torch.tensor([1.0, -2.0])}, tx.init(None))[0]["w"]
        tensor([-0.5000,  1.0000])
    """
    if callable(learning_rate):
        return scale(lambda hparams: -learning_rate(hparams))
    return scale(-learning_rate)


def clip_by_global_norm(max_norm: Any) -> GradientTransformation:
    """Rescale updates so their global norm is at most ``max_norm`` (a number, a tensor or
    ``hparams -> tensor``).

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

    def update(updates, state, params=None, hparams=None):
        norm = global_norm(updates)
        factor = torch.clamp(_resolve(max_norm, hparams) / (norm + 1e-6), max=1.0)
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

    def update(updates, state, params=None, hparams=None):
        new_state = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params, hparams)
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


def add_decayed_weights(weight_decay: Any) -> GradientTransformation:
    """``updates + weight_decay * params`` (decoupled weight decay, Loshchilov & Hutter 2019).

    Put it after the preconditioner and before the learning-rate scaling, so the parameters
    shrink by ``lr * weight_decay`` per step whatever the gradient (AdamW, not Adam with an
    L2 term). ``weight_decay`` is a number, a tensor or ``hparams -> tensor``; every leaf is
    decayed, as ``torch.optim.AdamW`` does.

    Example:
        >>> import torch
        >>> tx = add_decayed_weights(0.1)
        >>> tx.update({"w": torch.tensor([1.0, 1.0])}, tx.init(None), {"w": torch.tensor([10.0, -10.0])})[0]["w"]
        tensor([2., 0.])
    """

    def update(updates, state, params=None, hparams=None):
        if params is None:
            raise ValueError("add_decayed_weights needs the parameters: call update(updates, state, params)")
        wd = _resolve(weight_decay, hparams)
        return _map(lambda u, p: u + wd * p, updates, params), state

    return GradientTransformation(lambda params: EmptyState(), update)


def add_l2_gradient(coef: Any) -> GradientTransformation:
    """Add the gradient of the L2 loss ``coef * sum_i ||p_i||^2``: ``g + 2 coef p`` (the
    reference trainer's ``l2_reg_loss_coef``; ``coef`` a number, a tensor or ``hparams -> tensor``).

    Put it first in a chain, where the loss's own gradient would be (before clipping and
    Adam), so it is exactly an L2 term in the loss.

    Example:
        >>> import torch
        >>> tx = add_l2_gradient(0.5)
        >>> tx.update({"w": torch.zeros(2)}, tx.init(None), {"w": torch.tensor([1.0, -2.0])})[0]["w"]
        tensor([ 1., -2.])
    """

    def update(updates, state, params=None, hparams=None):
        if params is None:
            raise ValueError("add_l2_gradient needs the parameters: call update(updates, state, params)")
        c = _resolve(coef, hparams)
        return _map(lambda g, p: g + 2 * c * p, updates, params), state

    return GradientTransformation(lambda params: EmptyState(), update)


@pytree_dataclass
class L2ToInitialState:
    """The parameters :func:`add_l2_to_initial` pulls toward: a copy of those it was initialised with.

    Example:
        >>> import torch
        >>> add_l2_to_initial(0.1).init({"w": torch.ones(2)}).initial["w"]
        tensor([1., 1.])
    """

    initial: Any


def add_l2_to_initial(coef: Any) -> GradientTransformation:
    """Add the gradient of ``coef * sum_i ||p_i - p0_i||^2``, ``p0`` the parameters at
    ``init``: ``g + 2 coef (p - p0)`` (the reference trainer's ``l2_init_loss_coef``, which
    keeps a policy near where it started, e.g. a pretrained one). ``p0`` lives in this
    transformation's state, so it is checkpointed and vmapped with the optimizer.

    Example (no loss gradient: the step points back to the start):
        >>> import torch
        >>> tx = add_l2_to_initial(1.0)
        >>> state = tx.init({"w": torch.tensor([1.0, 1.0])})
        >>> tx.update({"w": torch.zeros(2)}, state, {"w": torch.tensor([2.0, 0.0])})[0]["w"]
        tensor([ 2., -2.])
    """

    def init(params):
        return L2ToInitialState(initial=_map(lambda p: p.detach().clone(), params))

    def update(updates, state, params=None, hparams=None):
        if params is None:
            raise ValueError("add_l2_to_initial needs the parameters: call update(updates, state, params)")
        c = _resolve(coef, hparams)
        return _map(lambda g, p, p0: g + 2 * c * (p - p0), updates, params, state.initial), state

    return GradientTransformation(init, update)


def adamw(learning_rate: Any, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: Any = 1e-2) -> GradientTransformation:
    """AdamW (Loshchilov & Hutter 2019): ``chain(scale_by_adam, add_decayed_weights,
    scale_by_learning_rate)``, i.e. ``p <- p - lr * (adam_update + weight_decay * p)``, the
    update of ``torch.optim.AdamW`` (equal to float rounding; ``tests/test_optim.py``).

    Example (no gradient: only the decay moves the weights, by ``lr * wd * p``):
        >>> import torch
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> tx = adamw(0.1, weight_decay=0.5)
        >>> updates, _ = tx.update({"w": torch.zeros(2)}, tx.init(params), params)
        >>> apply_updates(params, updates)["w"]
        tensor([ 0.9500, -1.9000])
    """
    return chain(scale_by_adam(b1, b2, eps), add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate))


#: Newton-Schulz coefficients ``(a, b, c)`` of Muon's quintic iteration (Keller Jordan, "Muon:
#: An optimizer for hidden layers in neural networks", 2024, kellerjordan.github.io/posts/muon).
MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """An approximately orthogonal matrix with ``g``'s singular vectors: ``~ U V^T`` for
    ``g = U S V^T``, ``[m, n] -> [m, n]`` (a conv kernel ``[m, ...]`` is treated as ``[m, prod(...)]``).

    ``X_0 = g / ||g||_F`` (transposed when ``m > n``), then ``steps`` times
    ``A = X X^T``, ``X <- a X + (b A + c A^2) X`` with :data:`MUON_COEFFICIENTS`, which push
    every singular value into about ``[0.7, 1.2]`` in 5 steps (the quintic trades exactness
    for speed, as Muon does).

    Example (a diagonal matrix's singular vectors are the identity's):
        >>> import torch
        >>> newton_schulz(torch.diag(torch.tensor([3.0, 0.5]))).diag().round(decimals=1)
        tensor([0.7000, 1.0000])
    """
    a, b, c = MUON_COEFFICIENTS
    x = g.reshape(g.shape[0], -1)
    tall = x.shape[0] > x.shape[1]
    x = x.t() if tall else x
    x = x / (torch.linalg.vector_norm(x) + eps)
    for _ in range(steps):
        s = x @ x.t()
        x = a * x + (b * s + c * s @ s) @ x
    return (x.t() if tall else x).reshape(g.shape)


@pytree_dataclass
class ScaleByMuonState:
    """Muon's state: the momentum of every leaf and the Adam state used for the vectors.

    Example:
        >>> import torch
        >>> s = scale_by_muon().init({"w": torch.zeros(3, 2), "b": torch.zeros(3)})
        >>> s.momentum["w"].shape, s.adam.count
        (torch.Size([3, 2]), tensor(0))
    """

    momentum: Any
    adam: Any


def scale_by_muon(beta: float = 0.95, nesterov: bool = True, ns_steps: int = 5, b1: float = 0.9, b2: float = 0.999,
                  eps: float = 1e-8) -> GradientTransformation:
    """Muon's preconditioning for matrices (``ndim >= 2``), Adam's for the other leaves.

    For a matrix ``G [m, n]``: ``M <- beta M + (1 - beta) G``; with ``nesterov`` the
    direction is ``D = (1 - beta) G + beta M`` (else ``M``); the update is
    ``newton_schulz(D) * 0.2 * sqrt(max(m, n))``. The last factor is Moonlight's (Liu et al.
    2025, "Muon is Scalable for LLM Training"): it gives the update the RMS of an Adam update,
    so one learning rate serves the matrices and the Adam-driven biases and vectors (on the
    small CartPole and Acrobot networks that rate was best about 4x Adam's own:
    ``python -m benchmarks.algorithms``).
    The Adam state is kept for every leaf for simplicity (its matrix entries go unused).

    Example (the update of a matrix has every singular value near ``0.2 sqrt(max(m, n))``):
        >>> import torch
        >>> tx = scale_by_muon()
        >>> params = {"w": torch.zeros(4, 4)}
        >>> u, _ = tx.update({"w": torch.diag(torch.tensor([5.0, 1.0, 0.5, 0.1]))}, tx.init(params), params)
        >>> bool(((torch.linalg.svdvals(u["w"]) / 0.4 - 1).abs() < 0.35).all())
        True
    """
    adam = scale_by_adam(b1, b2, eps)

    def init(params):
        return ScaleByMuonState(momentum=_map(torch.zeros_like, params), adam=adam.init(params))

    def direction(g, m):
        d = torch.lerp(g, m, beta) if nesterov else m
        return newton_schulz(d, ns_steps) * (0.2 * math.sqrt(max(g.shape[0], g[0].numel())))

    def update(updates, state, params=None, hparams=None):
        adam_updates, adam_state = adam.update(updates, state.adam, params, hparams)
        momentum = _map(lambda m, g: torch.lerp(m, g, 1 - beta) if g.dim() >= 2 else m, state.momentum, updates)
        out = _map(lambda g, m, a: direction(g, m) if g.dim() >= 2 else a, updates, momentum, adam_updates)
        return out, ScaleByMuonState(momentum=momentum, adam=adam_state)

    return GradientTransformation(init, update)


def muon(learning_rate: Any, weight_decay: Any = 0.0, beta: float = 0.95, nesterov: bool = True) -> GradientTransformation:
    """Muon with decoupled weight decay: ``chain(scale_by_muon, add_decayed_weights, scale_by_learning_rate)``.

    Example (a step on a matrix and a bias):
        >>> import torch
        >>> params = {"w": torch.ones(2, 3), "b": torch.zeros(2)}
        >>> tx = muon(0.01)
        >>> updates, state = tx.update({"w": torch.randn(2, 3), "b": torch.ones(2)}, tx.init(params), params)
        >>> updates["w"].shape, updates["b"]  # the bias takes Adam's first step, -lr * sign(g)
        (torch.Size([2, 3]), tensor([-0.0100, -0.0100]))
    """
    return chain(scale_by_muon(beta, nesterov), add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate))


@pytree_dataclass
class ScheduleFreeAdamWState:
    """State of :func:`schedule_free_adamw`.

    ``count`` (int64 0-d): updates done; ``z`` and ``x`` (shaped like params): the base
    iterate and its weighted average (``x`` is what :func:`schedule_free_eval_params`
    returns); ``nu`` (shaped like params): Adam's second moment; ``weight_sum`` and ``lr_max``
    (float64 0-d): ``W_t = sum_i w_i`` and ``max_i gamma_i`` of the averaging weights.

    Example (``z = x =`` the initial params; the sums start at 0):
        >>> import torch
        >>> s = schedule_free_adamw(0.1).init({"w": torch.tensor([1.0, 2.0])})
        >>> s.count, s.z["w"], s.x["w"], s.nu["w"], s.weight_sum, s.lr_max
        (tensor(0), tensor([1., 2.]), tensor([1., 2.]), tensor([0., 0.]), tensor(0., dtype=torch.float64), tensor(0., dtype=torch.float64))
    """

    count: torch.Tensor
    z: Any
    x: Any
    nu: Any
    weight_sum: torch.Tensor
    lr_max: torch.Tensor


def _first_device(tree: Any) -> torch.device | None:
    leaves = [x for x in pytree.tree_leaves(tree) if isinstance(x, torch.Tensor)]
    return leaves[0].device if leaves else None


def schedule_free_adamw(learning_rate: Any, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: Any = 0.0,
                        warmup_steps: int = 0, weight_lr_power: float = 2.0, r: float = 0.0) -> GradientTransformation:
    """Schedule-free AdamW (Defazio et al. 2024, "The Road Less Scheduled", arXiv 2405.15682,
    Algorithm 1; facebookresearch/schedule_free's ``AdamWScheduleFree``).

    No learning-rate schedule is needed: the parameters the optimizer moves (those the
    gradient is taken at) are ``y``, an interpolation between a plain AdamW-like iterate
    ``z`` (no first moment) and ``x``, a running weighted average of the ``z``; ``x`` is the
    point to evaluate and deploy (:func:`schedule_free_eval_params`). Given the gradient
    ``g_t`` at ``y_t`` (``params``), ``t = count + 1`` (1 for the first update):

    .. code-block:: text

        gamma_t  = lr(count) * min(1, t / warmup_steps) * sqrt(1 - b2^t)   (no warmup factor when warmup_steps = 0)
        v_t      = b2 v_{t-1} + (1 - b2) g_t^2
        z_{t+1}  = z_t - gamma_t * (g_t / (sqrt(v_t) + eps) + weight_decay * y_t)
        lrmax_t  = max(lrmax_{t-1}, gamma_t)
        w_t      = t^r * lrmax_t^weight_lr_power,   W_t = W_{t-1} + w_t
        c_{t+1}  = w_t / W_t                        (0 while W_t = 0, e.g. a zero learning rate)
        x_{t+1}  = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}
        y_{t+1}  = (1 - b1) z_{t+1} + b1 x_{t+1}

    from ``z_1 = x_1 = y_1 =`` the params at ``init``, ``v_0 = 0``, ``W_0 = lrmax_0 = 0``; so
    ``x_{T+1} = sum_t w_t z_{t+1} / sum_t w_t`` (once ``W_T > 0``). As in the paper and the reference, the warmup
    and Adam's bias correction ``sqrt(1 - b2^t)`` are folded into ``gamma_t``, which also
    drives the averaging weights (facebookresearch's later releases, and optax's
    ``schedule_free_adamw``, divide ``v`` by ``1 - b2^t`` instead and weight by the
    uncorrected rate: not the same iterates). The weight decay is decoupled and taken at
    ``y``, as in the reference. The returned update is ``y_{t+1} - params``, ``y_{t+1}``
    computed from the new ``z`` and ``x``, so ``apply_updates`` lands on it and ``y`` never
    drifts from ``(1 - b1) z + b1 x``; keeping ``x`` in the state (rather than recovering it
    as ``(y - (1 - b1) z) / b1``) makes it exact and lets ``b1 = 0`` (then ``y = z``) work.
    Learning rates are ``>= 0``.

    This is one transformation rather than optax's ``schedule_free(base, ...)`` wrapper around
    an AdamW chain: the published variant's ``gamma_t`` (with Adam's bias correction) is both
    the ``z`` step and the averaging weight, which a generic wrapper cannot see. It makes the
    final update itself: chain it after gradient transforms (clipping, L2 terms), never before
    a learning-rate scaling. Scalars are kept as tensors, no Python branch reads a tensor, and
    inputs are never modified: it runs under ``torch.compile(fullgraph=True)`` and
    ``torch.func.vmap``, and a learning rate read from ``hparams`` changes without recompiling.

    Args:
        learning_rate: the base rate ``lr``: a number, a 0-d tensor, or a function
            ``(count, hparams) -> tensor`` of the updates done before this one (int64 0-d)
            and the run's hyperparameters, e.g. :func:`learning_rate_schedule`'s.
        b1: interpolation ``y = (1 - b1) z + b1 x`` (the paper's momentum), in ``[0, 1)``.
        b2, eps: Adam's second-moment decay and denominator term.
        weight_decay: a number, a tensor or ``hparams -> tensor``.
        warmup_steps: linear warmup of ``lr`` over the first ``warmup_steps`` updates (static int).
        weight_lr_power: the averaging weight is ``lrmax_t^weight_lr_power`` (0: uniform).
        r: polynomial weighting ``t^r`` of the average (the reference's ``r``; default 0).

    Returns:
        A :class:`GradientTransformation` whose state is a :class:`ScheduleFreeAdamWState`
        and whose update, for gradients shaped like ``params``, is shaped like ``params``.
        ``update`` needs ``params`` (``y_t``).

    Example (the first step is Adam's, ``-lr * sign(g)``, and puts ``x = y = z``; the second
    averages, ``c_3 = w_2 / (w_1 + w_2) = (1 - b2^2) / (2 - b2 - b2^2) ~ 2/3``: ``x`` lags
    behind ``z`` and ``y = 0.1 z + 0.9 x`` lies between them):
        >>> import torch
        >>> params = {"w": torch.tensor([1.0, -1.0])}
        >>> tx = schedule_free_adamw(0.1)
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": torch.tensor([0.5, -2.0])}, state, params)
        >>> params = apply_updates(params, updates)
        >>> params["w"], schedule_free_eval_params(state, params)["w"]
        (tensor([ 0.9000, -0.9000]), tensor([ 0.9000, -0.9000]))
        >>> updates, state = tx.update({"w": torch.tensor([0.5, -2.0])}, state, params)
        >>> params = apply_updates(params, updates)
        >>> state.z["w"], schedule_free_eval_params(state, params)["w"], params["w"]
        (tensor([ 0.8000, -0.8000]), tensor([ 0.8333, -0.8333]), tensor([ 0.8300, -0.8300]))
    """
    if not 0.0 <= b1 < 1.0:
        raise ValueError(f"schedule_free_adamw: b1 must be in [0, 1), got {b1}")
    if warmup_steps < 0:
        raise ValueError(f"schedule_free_adamw: warmup_steps must be >= 0, got {warmup_steps}")

    def init(params):
        device = _first_device(params)
        zeros = torch.zeros((), dtype=torch.float64, device=device)
        return ScheduleFreeAdamWState(
            count=torch.zeros((), dtype=torch.int64, device=device),
            z=_map(lambda p: p.detach().clone(), params),
            x=_map(lambda p: p.detach().clone(), params),
            nu=_map(torch.zeros_like, params),
            weight_sum=zeros,
            lr_max=zeros.clone(),
        )

    def update(updates, state, params=None, hparams=None):
        if params is None:
            raise ValueError("schedule_free_adamw needs the parameters (y): call update(updates, state, params)")
        lr = learning_rate(state.count, hparams) if callable(learning_rate) else learning_rate
        # The scalar bookkeeping in float64, as the reference's Python floats.
        t = (state.count + 1).to(torch.float64)
        b2_t = torch.pow(torch.as_tensor(b2, dtype=torch.float64, device=t.device), t)
        gamma = torch.as_tensor(lr, dtype=torch.float64, device=t.device) * torch.sqrt(1 - b2_t)
        if warmup_steps > 0:
            gamma = gamma * torch.clamp(t / warmup_steps, max=1.0)
        lr_max = torch.maximum(state.lr_max, gamma)
        weight = torch.pow(t, r) * torch.pow(lr_max, weight_lr_power)
        weight_sum = state.weight_sum + weight
        positive = weight_sum > 0
        # c = w / W, 0 while W = 0 (the reference's ZeroDivisionError branch), with no 0/0 computed.
        safe_sum = torch.where(positive, weight_sum, torch.ones_like(weight_sum))
        ckp1 = torch.where(positive, weight / safe_sum, torch.zeros_like(weight_sum))
        wd = _resolve(weight_decay, hparams)

        nu = _map(lambda v, g: v * b2 + (1 - b2) * g * g, state.nu, updates)
        step = _map(lambda g, v, y: g / (torch.sqrt(v) + eps) + wd * y, updates, nu, params)
        z = _map(lambda z_, d: z_ - gamma.to(d.dtype) * d, state.z, step)
        x = _map(lambda x_, z_: torch.lerp(x_, z_, ckp1.to(z_.dtype)), state.x, z)
        out = _map(lambda z_, x_, y: torch.lerp(z_, x_, b1) - y, z, x, params)
        new_state = ScheduleFreeAdamWState(count=state.count + 1, z=z, x=x, nu=nu, weight_sum=weight_sum, lr_max=lr_max)
        return out, new_state

    return GradientTransformation(init, update)


def schedule_free_eval_params(opt_state: Any, params: Any) -> Any:
    """The parameters to evaluate or deploy: the averaged sequence ``x`` of
    :func:`schedule_free_adamw` (``params``, the optimizer's ``y = (1 - b1) z + b1 x``, are
    where gradients are taken). ``x`` is kept in the state, so this is exact (no division by
    ``b1``) and needs ``params`` only when there is no schedule-free state.

    ``opt_state`` is the transformation's own :class:`ScheduleFreeAdamWState` or any pytree
    holding one, e.g. a :func:`chain`'s tuple of states (the state :func:`make_optimizer`
    builds for ``optimizer="schedule_free_adamw"``) or a stacked, vmapped one (then ``x`` is
    stacked likewise). Without a schedule-free state (any other optimizer) the model is
    evaluated where it trains: ``params`` is returned as is. Pure: nothing is copied or modified.

    Args:
        opt_state: the optimizer state.
        params: the current parameters (``y``), a pytree of tensors.

    Returns:
        A pytree shaped like ``params``.

    Raises:
        ValueError: when ``opt_state`` holds more than one schedule-free state.

    Example (three steps of a chain; with no schedule-free state, the params themselves):
        >>> import torch
        >>> params = {"w": torch.tensor([1.0, -1.0])}
        >>> tx = chain(clip_by_global_norm(1.0), schedule_free_adamw(0.1))
        >>> state = tx.init(params)
        >>> for _ in range(3):
        ...     updates, state = tx.update({"w": torch.tensor([1.0, -1.0])}, state, params)
        ...     params = apply_updates(params, updates)
        >>> params["w"], schedule_free_eval_params(state, params)["w"]
        (tensor([ 0.7600, -0.7600]), tensor([ 0.7667, -0.7667]))
        >>> schedule_free_eval_params(adam(0.1).init(params), params)["w"]
        tensor([ 0.7600, -0.7600])
    """
    found = [s for s in pytree.tree_leaves(opt_state, is_leaf=lambda n: isinstance(n, ScheduleFreeAdamWState))
             if isinstance(s, ScheduleFreeAdamWState)]
    if not found:
        return params
    if len(found) > 1:
        raise ValueError(f"schedule_free_eval_params: the optimizer state holds {len(found)} schedule-free states; pass the one to use")
    return found[0].x


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


@pytree_dataclass
class ScaleByScheduleState:
    """State of :func:`scale_by_schedule`: the number of updates done, ``count`` int64 0-d.

    Example:
        >>> scale_by_schedule(lambda count, hparams: 0.1).init(None).count
        tensor(0)
    """

    count: torch.Tensor


def scale_by_schedule(step_size: Callable[[torch.Tensor, Any], Any]) -> GradientTransformation:
    """Multiply updates by ``step_size(count, hparams)``, ``count`` the updates done before
    this one (int64 0-d, the transformation's own state).

    Example (a step size that halves every update):
        >>> import torch
        >>> tx = scale_by_schedule(lambda count, hparams: 0.5 ** count.to(torch.float32))
        >>> state = tx.init(None)
        >>> u1, state = tx.update({"w": torch.tensor([4.0])}, state)
        >>> u2, state = tx.update({"w": torch.tensor([4.0])}, state)
        >>> u1["w"], u2["w"], state.count
        (tensor([4.]), tensor([2.]), tensor(2))
    """

    def init(params):
        return ScaleByScheduleState(count=torch.zeros((), dtype=torch.int64))

    def update(updates, state, params=None, hparams=None):
        factor = step_size(state.count, hparams)
        return _map(lambda u: factor * u, updates), ScaleByScheduleState(count=state.count + 1)

    return GradientTransformation(init, update)


def learning_rate_schedule(config: Any) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """PPO's learning rate as a function ``lr(count, hparams)`` of the updates done so far.

    Update ``u`` (counted from 0) belongs to iteration ``i = u // U``, ``U = update_epochs *
    num_minibatches``, and uses ``learning_rate_at(hparams, i, num_iterations, anneal_lr)``
    (:func:`~functional_rl.kernel.config.learning_rate_at`, CleanRL's linear decay): the
    learning rate is constant within an iteration.

    Example (lr 1.0 over 4 iterations of 2 updates each, annealed):
        >>> import torch
        >>> from functional_rl.kernel.config import Hyperparams, PPOConfig
        >>> config = PPOConfig(learning_rate=1.0, num_envs=1, num_steps=4, num_minibatches=2, update_epochs=1, total_timesteps=16)
        >>> lr = learning_rate_schedule(config)
        >>> [float(lr(torch.tensor(u), Hyperparams.from_config(config))) for u in range(8)]
        [1.0, 1.0, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25]
    """
    from functional_rl.kernel.config import learning_rate_at

    per_iteration = config.update_epochs * config.num_minibatches
    num_iterations, anneal = config.num_iterations, config.anneal_lr

    def learning_rate(count: torch.Tensor, hparams: Any) -> torch.Tensor:
        return learning_rate_at(hparams, count // per_iteration, num_iterations, anneal)

    return learning_rate


def make_optimizer(config: Any) -> GradientTransformation:
    """PPO's optimizer, built once per run: clip by global norm, the preconditioner of
    ``config.optimizer``, the scheduled step.

    ``chain(clip_by_global_norm(hparams.max_grad_norm), scale_by_adam(eps=config.adam_eps),
    scale_by_schedule(-lr))`` with ``lr`` the :func:`learning_rate_schedule` of the
    optimizer's own update count. ``"adamw"`` adds :func:`add_decayed_weights` of
    ``hparams.weight_decay`` after Adam; ``"muon"`` puts :func:`scale_by_muon` in Adam's place
    (and decays likewise); ``"schedule_free_adamw"`` is ``chain(clip_by_global_norm,
    schedule_free_adamw(lr, eps=config.adam_eps, weight_decay=hparams.weight_decay,
    warmup_steps=config.schedule_free_warmup_steps))``, the schedule-free transformation making the final update itself (no
    ``scale_by_schedule``; evaluate at :func:`schedule_free_eval_params`). ``config.l2_reg_loss_coef`` / ``l2_init_loss_coef`` (when not
    ``None``) put :func:`add_l2_gradient` / :func:`add_l2_to_initial` first, as L2 terms of
    the loss would be. The learning rate and the clip norm are read from
    ``hparams`` at every update, so they can change (or be swept under vmap) without
    rebuilding anything or recompiling.

    Args:
        config: a :class:`~functional_rl.kernel.config.PPOConfig` (static sizes, ``adam_eps``,
            ``anneal_lr``).

    Example (learning rate 0.1; Adam's first step is the sign of the gradient):
        >>> import torch
        >>> from functional_rl.kernel.config import Hyperparams, PPOConfig
        >>> config = PPOConfig(learning_rate=0.1)
        >>> tx = make_optimizer(config)
        >>> params = {"w": torch.tensor([1.0, -1.0])}
        >>> state = tx.init(params)
        >>> len(state)  # (clip, adam, schedule) states
        3
        >>> updates, state = tx.update({"w": torch.tensor([0.2, -0.2])}, state, params, Hyperparams.from_config(config))
        >>> apply_updates(params, updates)["w"], state[2].count
        (tensor([ 0.9000, -0.9000]), tensor(1))
    """
    learning_rate = learning_rate_schedule(config)
    kind = getattr(config, "optimizer", "adam")
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {kind!r}; choose one of {', '.join(map(repr, OPTIMIZERS))}")
    # L2 terms, when the config switches them on, are gradients of the loss: before clipping.
    l2 = []
    if getattr(config, "l2_reg_loss_coef", None) is not None:
        l2.append(add_l2_gradient(lambda hparams: hparams.l2_reg_loss_coef))
    if getattr(config, "l2_init_loss_coef", None) is not None:
        l2.append(add_l2_to_initial(lambda hparams: hparams.l2_init_loss_coef))
    if kind == "schedule_free_adamw":  # makes the final update itself: no scale_by_schedule after it
        return chain(
            *l2,
            clip_by_global_norm(lambda hparams: hparams.max_grad_norm),
            schedule_free_adamw(
                learning_rate=learning_rate,
                eps=config.adam_eps,
                weight_decay=lambda hparams: hparams.weight_decay,
                warmup_steps=config.schedule_free_warmup_steps,
            ),
        )
    decay = add_decayed_weights(lambda hparams: hparams.weight_decay)
    steps = {
        "adam": (scale_by_adam(eps=config.adam_eps),),  # no decay (PPOConfig refuses weight_decay > 0 with adam)
        "adamw": (scale_by_adam(eps=config.adam_eps), decay),
        "muon": (scale_by_muon(eps=config.adam_eps), decay),
    }[kind]
    return chain(
        *l2,
        clip_by_global_norm(lambda hparams: hparams.max_grad_norm),
        *steps,
        scale_by_schedule(lambda count, hparams: -learning_rate(count, hparams)),
    )


#: ``PPOConfig.optimizer`` values :func:`make_optimizer` builds.
OPTIMIZERS = ("adam", "adamw", "muon", "schedule_free_adamw")
