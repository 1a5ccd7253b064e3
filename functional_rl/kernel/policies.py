"""Policies as ``(init, apply)`` pairs of pure functions over explicit parameter pytrees.

``params = policy.init(key)`` builds a nested dict of tensors; ``outputs =
policy.apply(params, obs)`` is the forward pass (``"value"`` plus the distribution's
parameters); ``policy.distribution`` samples and scores actions from ``outputs``.
No ``nn.Module`` holds hidden state, so params can be vmapped, checkpointed and differentiated
with ``torch.func``.

The MLP actor-critic follows CleanRL's ``ppo.py``: separate actor and critic MLPs, orthogonal
initialisation with gain sqrt(2) on hidden layers, 0.01 on the policy head, 1.0 on the value
head, zero biases.

Example:
    >>> import functional_rl.kernel.random as jr
    >>> from functional_rl.envs import make
    >>> env = make("CartPole-v1")
    >>> policy = make_mlp_policy(env.observation_space, env.action_space)
    >>> params = policy.init(jr.key(0))
    >>> out = policy.apply(params, torch.zeros(5, 4))
    >>> out["logits"].shape, out["value"].shape
    (torch.Size([5, 2]), torch.Size([5]))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch

import functional_rl.kernel.random as jr
from functional_rl.kernel.distributions import Categorical, DiagGaussian, MultiCategorical
from functional_rl.envs.base import Box, Discrete, MultiDiscrete

__all__ = ["Policy", "make_mlp_policy", "orthogonal"]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Policy:
    """A policy: pure ``init``/``apply`` functions plus a distribution.

    Attributes:
        init: ``key -> params``.
        apply: ``(params, obs [N, *obs_shape]) -> outputs`` with ``outputs["value"]`` float ``[N]``.
        value: ``(params, obs) -> float [N]``, the critic alone (cheaper than ``apply``).
        distribution: :class:`~functional_rl.kernel.distributions.Categorical` or ``DiagGaussian``.
        spec: JSON-able description of the architecture (rebuilds the policy from a record).

    Example (a hand-written linear policy over 3 actions):
        >>> from functional_rl.kernel.distributions import Categorical
        >>> lin = Policy(
        ...     init=lambda key: {"w": jr.normal(key, (3, 2)), "v": torch.zeros(2)},
        ...     apply=lambda p, obs: {"logits": obs @ p["w"].T, "value": obs @ p["v"]},
        ...     value=lambda p, obs: obs @ p["v"],
        ...     distribution=Categorical(),
        ...     spec={"kind": "linear"},
        ... )
        >>> params = lin.init(jr.key(0))
        >>> out = lin.apply(params, torch.ones(5, 2))  # obs [N=5, 2]
        >>> out["logits"].shape, out["value"].shape, lin.distribution.sample(jr.key(1), out).shape
        (torch.Size([5, 3]), torch.Size([5]), torch.Size([5]))
    """

    init: Callable[[torch.Tensor], Params]
    apply: Callable[[Params, torch.Tensor], dict[str, torch.Tensor]]
    value: Callable[[Params, torch.Tensor], torch.Tensor]
    distribution: Any
    spec: dict[str, Any]


def orthogonal(key: torch.Tensor, shape: tuple[int, int], gain: float) -> torch.Tensor:
    """An orthogonal ``[out, in]`` matrix scaled by ``gain`` (Saxe et al. 2014), from ``key``.

    QR of a Gaussian matrix, with the signs of ``R``'s diagonal folded in so the result is
    uniform over orthogonal matrices.

    Example:
        >>> w = orthogonal(jr.key(0), (3, 5), gain=2.0)  # [out=3, in=5]
        >>> w.shape
        torch.Size([3, 5])
        >>> torch.allclose(w @ w.T, 4.0 * torch.eye(3), atol=1e-5)  # orthonormal rows times gain^2
        True
    """
    rows, cols = shape
    a = jr.normal(key, (max(rows, cols), min(rows, cols)))
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if rows < cols:
        q = q.T
    return gain * q[:rows, :cols].contiguous()


def _mlp_init(key: torch.Tensor, sizes: list[int], out_gain: float, out_dim: int | None) -> list[dict[str, torch.Tensor]]:
    keys = jr.split(key, len(sizes))
    layers = []
    for i in range(len(sizes) - 1):
        last = i == len(sizes) - 2
        gain = out_gain if last else math.sqrt(2.0)
        w = orthogonal(keys[i], (sizes[i + 1], sizes[i]), gain)
        layers.append({"w": w, "b": torch.zeros(sizes[i + 1])})
    if out_dim is None:
        # Scalar head stored as a vector and a 0-d bias: a [1, H] matrix has an ambiguous
        # stride on its size-1 dim, which made compiled updates recompile.
        layers[-1] = {"w": layers[-1]["w"][0].contiguous(), "b": torch.zeros(())}
    return layers


def _mlp_apply(layers: list[dict[str, torch.Tensor]], x: torch.Tensor, act: Callable) -> torch.Tensor:
    for layer in layers[:-1]:
        x = act(x @ layer["w"].T + layer["b"])
    w, b = layers[-1]["w"], layers[-1]["b"]
    return (x @ w + b) if w.dim() == 1 else (x @ w.T + b)


def _activation(name: str) -> Any:
    """``torch.tanh`` or ``torch.relu`` by name."""
    if name not in ("tanh", "relu"):
        raise ValueError(f"activation must be 'tanh' or 'relu', got {name!r}")
    return torch.tanh if name == "tanh" else torch.relu


def _action_head(action_space: Any) -> tuple[int, Any]:
    """``(head width, distribution)``: ``n`` logits and a :class:`Categorical` for Discrete,
    ``sum(nvec)`` logits and a :class:`MultiCategorical` for MultiDiscrete, ``prod(shape)``
    means and a :class:`DiagGaussian` for Box."""
    if isinstance(action_space, Discrete):
        return action_space.n, Categorical()
    if isinstance(action_space, MultiDiscrete):
        return sum(action_space.nvec), MultiCategorical(action_space.nvec)
    if isinstance(action_space, Box):
        return math.prod(action_space.shape), DiagGaussian()
    raise TypeError(f"unsupported action space {type(action_space).__name__}; supported: Discrete, MultiDiscrete, Box")


def make_mlp_policy(
    observation_space: Box,
    action_space: Discrete | MultiDiscrete | Box,
    hidden_sizes: tuple[int, ...] = (64, 64),
    activation: str = "tanh",
    obs_dim_extra: int = 0,
) -> Policy:
    """CleanRL's MLP actor-critic for a Box observation space.

    Args:
        observation_space: a :class:`Box`; observations are flattened.
        action_space: :class:`Discrete` (categorical head), :class:`MultiDiscrete` (one
            categorical per choice, ``sum(nvec)`` logits) or :class:`Box` (Gaussian head with
            a state-independent ``log_std`` parameter initialised to 0).
        hidden_sizes: widths of both MLPs.
        activation: ``"tanh"`` or ``"relu"``.
        obs_dim_extra: extra input features appended to the observation (e.g. a one-hot of
            the last action).

    Returns:
        A :class:`Policy`. ``apply(params, obs [N, *obs_shape])`` gives ``{"logits" [N, K]
        | "mean" [N, D] and "log_std" [N, D], "value" [N]}``.

    Example (a continuous action space gives a Gaussian head):
        >>> from functional_rl.envs import make
        >>> env = make("Pendulum-v1")
        >>> policy = make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(16,))
        >>> params = policy.init(jr.key(0))
        >>> out = policy.apply(params, torch.zeros(5, 3))  # obs [N=5, 3]
        >>> out["mean"].shape, out["log_std"].shape, out["value"].shape
        (torch.Size([5, 1]), torch.Size([5, 1]), torch.Size([5]))
        >>> type(policy.distribution).__name__, policy.spec["action"]
        ('DiagGaussian', 'continuous')
    """
    if not isinstance(observation_space, Box):
        raise TypeError(f"make_mlp_policy needs a Box observation space, got {type(observation_space).__name__}")
    act = _activation(activation)
    obs_dim = math.prod(observation_space.shape) + obs_dim_extra
    obs_ndim = len(observation_space.shape)
    out_dim, dist = _action_head(action_space)
    sizes = [obs_dim, *hidden_sizes]
    continuous = isinstance(action_space, Box)

    def init(key: torch.Tensor) -> Params:
        k_actor, k_critic = jr.split(key, 2)
        params: Params = {
            "actor": _mlp_init(k_actor, [*sizes, out_dim], 0.01, out_dim),
            "critic": _mlp_init(k_critic, [*sizes, 1], 1.0, None),
        }
        if continuous:
            params["log_std"] = torch.zeros(out_dim)
        return params

    def flat(obs: torch.Tensor) -> torch.Tensor:
        if obs_dim_extra or obs_ndim == 1:  # already [..., obs_dim]: policy_input flattened it to append the extra inputs
            return obs
        return obs.reshape(obs.shape[: obs.dim() - obs_ndim] + (-1,))

    def value(params: Params, obs: torch.Tensor) -> torch.Tensor:
        return _mlp_apply(params["critic"], flat(obs), act)

    def apply(params: Params, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        x = flat(obs)
        head = _mlp_apply(params["actor"], x, act)
        out = {"value": _mlp_apply(params["critic"], x, act)}
        if continuous:
            out.update(mean=head, log_std=params["log_std"].expand_as(head))
        else:
            out["logits"] = head
        return out

    spec = {
        "kind": "mlp_actor_critic", "hidden_sizes": list(hidden_sizes), "activation": activation,
        "obs_dim": obs_dim, "action": "continuous" if continuous else "discrete", "action_dim": out_dim,
    }
    return Policy(init=init, apply=apply, value=value, distribution=dist, spec=spec)
