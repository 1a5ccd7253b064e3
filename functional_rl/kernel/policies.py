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
from functional_rl.envs.base import Box, Dict, Discrete, MultiDiscrete

__all__ = ["Policy", "make_mlp_policy", "make_cnn_policy", "make_policy", "make_multi_input_policy", "policy_from_spec", "CNN_ENCODERS", "POLICY_NAMES", "SPEC_KINDS", "orthogonal"]

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
        initial_carry: ``None`` for a feed-forward policy. A recurrent policy
            (:mod:`functional_rl.kernel.recurrent`) sets it to ``num_envs -> carry [B, C]``;
            its ``apply`` is then ``(params, obs, carry, reset) -> (outputs, carry)`` and its
            ``value`` ``(params, obs, carry, reset=None) -> [N]``.

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
    initial_carry: Callable[[int], torch.Tensor] | None = None


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


def _outputs(params: Params, head: torch.Tensor, value: torch.Tensor, continuous: bool) -> dict[str, torch.Tensor]:
    """A policy's outputs from its action head and value: ``logits``, or ``mean`` and the
    state-independent ``log_std`` (``params["log_std"]``) broadcast to the mean's shape."""
    if continuous:
        return {"value": value, "mean": head, "log_std": params["log_std"].expand_as(head)}
    return {"value": value, "logits": head}


def _heads_init(key: torch.Tensor, width: int, out_dim: int, continuous: bool) -> Params:
    """The shared-trunk heads: ``pi`` (orthogonal, gain 0.01), ``v`` (gain 1, a vector and a 0-d
    bias) and for a Box action space the state-independent ``log_std`` (zeros)."""
    k_pi, k_v = jr.split(key, 2)
    heads: Params = {"pi": _mlp_init(k_pi, [width, out_dim], 0.01, out_dim)[0], "v": _mlp_init(k_v, [width, 1], 1.0, None)[0]}
    if continuous:
        heads["log_std"] = torch.zeros(out_dim)
    return heads


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
        return _outputs(params, _mlp_apply(params["actor"], x, act), _mlp_apply(params["critic"], x, act), continuous)

    spec = {
        "kind": "mlp_actor_critic", "hidden_sizes": list(hidden_sizes), "activation": activation,
        "obs_dim": obs_dim, "action": "continuous" if continuous else "discrete", "action_dim": out_dim,
    }
    return Policy(init=init, apply=apply, value=value, distribution=dist, spec=spec)


#: Convolution stacks ``(out_channels, kernel, stride, padding)`` per layer, by name. ``nature_cnn``
#: is the encoder of Mnih et al. 2015 ("Human-level control through deep RL", and CleanRL's
#: ``ppo_atari.py``): it needs images of at least 36 x 36. ``simple_cnn`` is a small
#: stack for small grids (Catch's 10 x 5, gridworld views): 3 x 3 kernels, padded.
CNN_ENCODERS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "nature_cnn": ((32, 8, 4, 0), (64, 4, 2, 0), (64, 3, 1, 0)),
    "simple_cnn": ((16, 3, 1, 1), (32, 3, 2, 1)),
}


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _conv_features(shape: tuple[int, ...], encoder: str, what: str) -> int:
    """The flattened width of the ``encoder`` conv stack's output for an image ``(C, H, W)``.

    Raises:
        ValueError: an unknown encoder, or an image the stack shrinks below one pixel (``what``
            names the observation in the message).
    """
    if encoder not in CNN_ENCODERS:
        raise ValueError(f"unknown CNN encoder {encoder!r}; choose one of {sorted(CNN_ENCODERS)}")
    layers = CNN_ENCODERS[encoder]
    _, h, w = shape
    for _, k, stride, pad in layers:
        h, w = _conv_out(h, k, stride, pad), _conv_out(w, k, stride, pad)
    if h < 1 or w < 1:
        raise ValueError(f"the {encoder} encoder needs a larger image than {what} {tuple(shape)} "
                         f"(its layers {layers} shrink it below 1 pixel); use encoder='simple_cnn' for small grids")
    return layers[-1][0] * h * w


def _conv_init(key: torch.Tensor, in_channels: int, layers: tuple[tuple[int, int, int, int], ...]) -> list[dict[str, torch.Tensor]]:
    """A conv stack's parameters: orthogonal kernels (as ``[out, in * k * k]`` matrices, gain
    sqrt 2), zero biases."""
    conv = []
    for kk, (out_c, k, _, _) in zip(jr.split(key, len(layers)), layers):
        weight = orthogonal(kk, (out_c, in_channels * k * k), math.sqrt(2.0)).reshape(out_c, in_channels, k, k)
        conv.append({"w": weight, "b": torch.zeros(out_c)})
        in_channels = out_c
    return conv


def _conv_apply(conv: list[dict[str, torch.Tensor]], x: torch.Tensor, layers: tuple[tuple[int, int, int, int], ...]) -> torch.Tensor:
    """``[N, C, H, W] -> [N, features]``: the conv stack with ReLUs, flattened."""
    for layer, (_, _, stride, pad) in zip(conv, layers):
        x = torch.relu(torch.nn.functional.conv2d(x, layer["w"], layer["b"], stride=stride, padding=pad))
    return x.flatten(1)


def make_cnn_policy(
    observation_space: Box,
    action_space: Discrete | MultiDiscrete | Box,
    encoder: str = "simple_cnn",
    hidden_sizes: tuple[int, ...] = (512,),
    obs_dim_extra: int = 0,
) -> Policy:
    """A convolutional actor-critic for image observations ``[C, H, W]`` (CleanRL's Atari agent).

    One shared trunk, as in CleanRL's ``ppo_atari.py``: the conv ``encoder`` (ReLU after each
    layer, :data:`CNN_ENCODERS`), flattened, then dense ReLU layers of ``hidden_sizes``; a
    policy head (orthogonal gain 0.01) and a value head (gain 1) read the last hidden layer.
    Conv and hidden weights are orthogonal with gain sqrt(2) (a conv kernel
    ``[out, in, k, k]`` is orthogonal as the matrix ``[out, in * k * k]``), biases zero.

    Observation scaling: a ``uint8`` space is divided by 255 inside the forward pass (the
    rollout stores the observations as floats of 0..255); a float space is taken as is.

    Args:
        observation_space: a :class:`Box` of shape ``(C, H, W)``.
        action_space: as for :func:`make_mlp_policy`.
        encoder: a key of :data:`CNN_ENCODERS`.
        hidden_sizes: widths of the dense layers after the encoder (at least one).
        obs_dim_extra: extra flat features appended to the flattened image (e.g. the encoded
            last action, :func:`~functional_rl.kernel.rollout.policy_input`); they join the
            encoder's features before the dense layers.

    Returns:
        A :class:`Policy`; ``apply(params, obs [*N, C, H, W])`` (or ``[*N, C*H*W + extra]``
        with extra features) gives ``{"logits" [*N, K] (or "mean"/"log_std"), "value" [*N]}``.

    Raises:
        ValueError: the observation is not 3-d, the image is too small for the encoder, or an
            unknown encoder name.

    Example (Catch's 1 x 10 x 5 image, three actions):
        >>> from functional_rl.envs import make
        >>> env = make("Catch-v0")
        >>> policy = make_cnn_policy(env.observation_space, env.action_space, hidden_sizes=(32,))
        >>> params = policy.init(jr.key(0))
        >>> out = policy.apply(params, torch.zeros(4, 1, 10, 5))  # [N=4, C, H, W]
        >>> out["logits"].shape, out["value"].shape, policy.spec["encoder"]
        (torch.Size([4, 3]), torch.Size([4]), 'simple_cnn')
    """
    if not isinstance(observation_space, Box) or len(observation_space.shape) != 3:
        raise ValueError(f"make_cnn_policy needs a Box observation of shape (C, H, W), got {observation_space}; "
                         "use make_mlp_policy (policy='mlp') for flat observations")
    if encoder not in CNN_ENCODERS:
        raise ValueError(f"unknown CNN encoder {encoder!r}; choose one of {sorted(CNN_ENCODERS)}")
    if not hidden_sizes:
        raise ValueError("make_cnn_policy needs at least one dense layer after the encoder (hidden_sizes)")
    c = observation_space.shape[0]
    layers = CNN_ENCODERS[encoder]
    features = _conv_features(observation_space.shape, encoder, "the observation") + obs_dim_extra
    image_size = math.prod(observation_space.shape)
    scale = 1.0 / 255.0 if observation_space.dtype == torch.uint8 else 1.0
    out_dim, dist = _action_head(action_space)
    continuous = isinstance(action_space, Box)

    def init(key: torch.Tensor) -> Params:
        k_conv, k_dense, k_heads = jr.split(key, 3)
        return {
            "conv": _conv_init(k_conv, c, layers),
            "dense": _mlp_init(k_dense, [features, *hidden_sizes, 1], 1.0, None)[:-1],  # hidden layers only
            **_heads_init(k_heads, hidden_sizes[-1], out_dim, continuous),
        }

    def trunk(params: Params, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[: obs.dim() - (1 if obs_dim_extra else 3)]
        flat = obs.reshape(-1, image_size + obs_dim_extra) if obs_dim_extra else obs.reshape(-1, image_size)
        x = _conv_apply(params["conv"], flat[:, :image_size].reshape(-1, *observation_space.shape) * scale, layers)
        if obs_dim_extra:
            x = torch.cat([x, flat[:, image_size:]], dim=-1)
        for layer in params["dense"]:
            x = torch.relu(x @ layer["w"].T + layer["b"])
        return x.reshape(*lead, x.shape[-1])

    def value(params: Params, obs: torch.Tensor) -> torch.Tensor:
        return _mlp_apply([params["v"]], trunk(params, obs), torch.relu)

    def apply(params: Params, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        x = trunk(params, obs)
        return _outputs(params, _mlp_apply([params["pi"]], x, torch.relu), _mlp_apply([params["v"]], x, torch.relu), continuous)

    spec = {
        "kind": "cnn_actor_critic", "encoder": encoder, "hidden_sizes": list(hidden_sizes),
        "obs_dim": image_size + obs_dim_extra, "action": "continuous" if continuous else "discrete", "action_dim": out_dim,
    }
    return Policy(init=init, apply=apply, value=value, distribution=dist, spec=spec)


def make_multi_input_policy(
    observation_space: Dict,
    action_space: Discrete | MultiDiscrete | Box,
    hidden_sizes: tuple[int, ...] = (64, 64),
    activation: str = "tanh",
    key_features: int = 64,
    cnn: str = "simple_cnn",
    obs_dim_extra: int = 0,
) -> Policy:
    """An actor-critic with one encoder per part of a :class:`~functional_rl.envs.base.Dict`
    observation, their features concatenated (SB3's ``MultiInputPolicy`` / ``CombinedExtractor``).

    Each part gets its own encoder: an image part ``[C, H, W]`` the conv stack ``cnn``
    (:data:`CNN_ENCODERS`, ReLU, flattened; a uint8 part divided by 255), any other part a
    dense layer of ``key_features`` units with ``activation`` on the flattened values. The
    features of all parts, then the extra inputs (the encoded last action), go through a
    shared trunk of ``hidden_sizes`` and a policy head (gain 0.01) and a value head (gain 1).
    Weights are orthogonal (gain sqrt 2 inside), biases zero.

    Args:
        observation_space: a :class:`~functional_rl.envs.base.Dict`.
        action_space: as for :func:`make_mlp_policy`.
        hidden_sizes: the trunk's widths (may be empty: the heads read the features).
        key_features: width of each non-image part's encoder.
        cnn: the conv stack of image parts.
        obs_dim_extra: extra flat inputs after the Dict observation.

    Returns:
        A :class:`Policy`; ``apply(params, obs [*N, D (+ extra)])`` with ``D`` the Dict's flat width.

    Example (an image and a vector, encoded apart):
        >>> from functional_rl.envs.base import Dict
        >>> space = Dict.of({"view": Box((0.0,) * 50, (1.0,) * 50, (2, 5, 5)), "goal": Box((-1.0,) * 2, (1.0,) * 2, (2,))})
        >>> policy = make_multi_input_policy(space, Discrete(4), hidden_sizes=(32,), key_features=8)
        >>> params = policy.init(jr.key(0))
        >>> sorted(params["encoders"]), policy.apply(params, torch.zeros(3, 52))["logits"].shape
        (['goal', 'view'], torch.Size([3, 4]))
    """
    if not isinstance(observation_space, Dict):
        raise TypeError(f"make_multi_input_policy needs a Dict observation space (envs.base.Dict), got {type(observation_space).__name__}")
    if cnn not in CNN_ENCODERS:
        raise ValueError(f"unknown CNN encoder {cnn!r}; choose one of {sorted(CNN_ENCODERS)}")
    act = _activation(activation)
    layers = CNN_ENCODERS[cnn]
    widths = {name: _conv_features(box.shape, cnn, f"Dict part {name!r}") if len(box.shape) == 3 else key_features
              for name, box in observation_space.parts}
    features = sum(widths.values()) + obs_dim_extra
    flat_dim = observation_space.shape[0]
    out_dim, dist = _action_head(action_space)
    continuous = isinstance(action_space, Box)
    trunk_sizes = [features, *hidden_sizes]

    def init(key: torch.Tensor) -> Params:
        k_enc, k_trunk, k_heads = jr.split(key, 3)
        encoders = {}
        for kk, (name, box) in zip(jr.split(k_enc, len(observation_space.parts)), observation_space.parts):
            if len(box.shape) == 3:
                encoders[name] = _conv_init(kk, box.shape[0], layers)
            else:
                encoders[name] = _mlp_init(kk, [math.prod(box.shape), key_features, 1], 1.0, None)[:1]
        return {
            "encoders": encoders,
            "trunk": _mlp_init(k_trunk, [*trunk_sizes, 1], 1.0, None)[:-1],
            **_heads_init(k_heads, trunk_sizes[-1], out_dim, continuous),
        }

    def trunk(params: Params, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-1]
        flat = obs.reshape(-1, flat_dim + obs_dim_extra)
        parts, feats = observation_space.split(flat[:, :flat_dim]), []
        for name, box in observation_space.parts:
            x = parts[name]
            if len(box.shape) == 3:
                feats.append(_conv_apply(params["encoders"][name], x * (1.0 / 255.0) if box.dtype == torch.uint8 else x, layers))
            else:
                layer = params["encoders"][name][0]
                feats.append(act(x.reshape(x.shape[0], -1) @ layer["w"].T + layer["b"]))
        if obs_dim_extra:
            feats.append(flat[:, flat_dim:])
        x = torch.cat(feats, dim=-1)
        for layer in params["trunk"]:
            x = act(x @ layer["w"].T + layer["b"])
        return x.reshape(*lead, x.shape[-1])

    def value(params: Params, obs: torch.Tensor) -> torch.Tensor:
        return _mlp_apply([params["v"]], trunk(params, obs), act)

    def apply(params: Params, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        x = trunk(params, obs)
        return _outputs(params, _mlp_apply([params["pi"]], x, act), _mlp_apply([params["v"]], x, act), continuous)

    spec = {
        "kind": "multi_input_actor_critic", "hidden_sizes": list(hidden_sizes), "activation": activation,
        "key_features": key_features, "cnn": cnn, "parts": [[name, list(box.shape)] for name, box in observation_space.parts],
        "obs_dim": flat_dim + obs_dim_extra, "action": "continuous" if continuous else "discrete", "action_dim": out_dim,
    }
    return Policy(init=init, apply=apply, value=value, distribution=dist, spec=spec)


#: Policy names :func:`make_policy` builds (``PPOConfig.policy``, ``AgentConfig.name``).
POLICY_NAMES = ("mlp", *CNN_ENCODERS, "lstm", "gru", "multi_input", "token", "token_pool")


def make_policy(
    name: str, observation_space: Box, action_space: Any, hidden_sizes: tuple[int, ...] = (64, 64),
    activation: str = "tanh", obs_dim_extra: int = 0,
) -> Policy:
    """The policy called ``name`` (:data:`POLICY_NAMES`) for these spaces.

    ``"mlp"`` is :func:`make_mlp_policy` (``hidden_sizes`` both MLPs' widths, ``activation``);
    ``"simple_cnn"`` and ``"nature_cnn"`` are :func:`make_cnn_policy` with that encoder
    (``hidden_sizes`` the dense layers after it; ReLU throughout, ``activation`` unused);
    ``"lstm"`` and ``"gru"`` are :func:`~functional_rl.kernel.recurrent.make_recurrent_policy`
    with that core: ``hidden_sizes[-1]`` is the core's width and the layers before it the
    encoder's (``(64, 128)``: one 64-wide encoder layer, a 128-wide core); ``"multi_input"``
    is :func:`make_multi_input_policy` for a :class:`~functional_rl.envs.base.Dict`
    observation (one encoder per part; ``hidden_sizes`` the shared trunk); ``"token"`` and
    ``"token_pool"`` are :func:`~functional_rl.kernel.token_policy.make_token_policy` (grid or
    pooled encoder) for a :class:`~functional_rl.kernel.token_policy.TokenBox` observation
    (mettagrid's tokens).

    Example:
        >>> from functional_rl.envs import make
        >>> env = make("Catch-v0")
        >>> make_policy("simple_cnn", env.observation_space, env.action_space, (64,)).spec["kind"]
        'cnn_actor_critic'
        >>> make_policy("transformer", env.observation_space, env.action_space)
        Traceback (most recent call last):
            ...
        ValueError: unknown policy 'transformer'; choose one of 'gru', 'lstm', 'mlp', 'multi_input', 'nature_cnn', 'simple_cnn', 'token', 'token_pool', or pass your own Policy
        >>> make_policy("lstm", make("CartPole-v1").observation_space, env.action_space, (32, 64)).initial_carry(2).shape
        torch.Size([2, 128])
    """
    if name == "mlp":
        return make_mlp_policy(observation_space, action_space, hidden_sizes, activation, obs_dim_extra=obs_dim_extra)
    if name in CNN_ENCODERS:
        return make_cnn_policy(observation_space, action_space, name, hidden_sizes, obs_dim_extra=obs_dim_extra)
    if name in ("lstm", "gru"):
        from functional_rl.kernel.recurrent import make_recurrent_policy

        if not hidden_sizes:
            raise ValueError(f"policy {name!r} needs hidden_sizes with at least one width (the last is the core's)")
        return make_recurrent_policy(observation_space, action_space, name, hidden_sizes[-1], tuple(hidden_sizes[:-1]),
                                     activation, obs_dim_extra=obs_dim_extra)
    if name in ("token", "token_pool"):
        from functional_rl.kernel.token_policy import make_token_policy

        return make_token_policy(observation_space, action_space, "grid" if name == "token" else "pool", hidden_sizes,
                                 obs_dim_extra=obs_dim_extra)
    if name == "multi_input":
        return make_multi_input_policy(observation_space, action_space, hidden_sizes, activation, obs_dim_extra=obs_dim_extra)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(map(repr, sorted(POLICY_NAMES)))}, or pass your own Policy")


#: The spec kinds :func:`policy_from_spec` rebuilds.
SPEC_KINDS = ("mlp_actor_critic", "cnn_actor_critic", "recurrent_actor_critic", "multi_input_actor_critic", "token_actor_critic")


def policy_from_spec(spec: dict[str, Any], observation_space: Box, action_space: Any) -> Policy:
    """Rebuild the policy a :attr:`Policy.spec` describes, for these spaces (policy records).

    Raises:
        ValueError: a spec of a kind this module does not build, or one the spaces do not fit
            (the rebuilt spec differs).

    Example:
        >>> from functional_rl.envs import make
        >>> env = make("CartPole-v1")
        >>> policy = make_mlp_policy(env.observation_space, env.action_space, (8,))
        >>> policy_from_spec(policy.spec, env.observation_space, env.action_space).spec == policy.spec
        True
    """
    kind = spec.get("kind")
    extra = int(spec.get("obs_dim", 0)) - math.prod(getattr(observation_space, "shape", (0,)))
    if extra < 0:
        raise ValueError(f"the observation space {observation_space} is wider than the policy's {spec.get('obs_dim')} inputs")
    if kind == "mlp_actor_critic":
        policy = make_mlp_policy(observation_space, action_space, tuple(spec["hidden_sizes"]), spec["activation"], obs_dim_extra=extra)
    elif kind == "cnn_actor_critic":
        policy = make_cnn_policy(observation_space, action_space, spec["encoder"], tuple(spec["hidden_sizes"]), obs_dim_extra=extra)
    elif kind == "recurrent_actor_critic":
        from functional_rl.kernel.recurrent import make_recurrent_policy

        policy = make_recurrent_policy(observation_space, action_space, spec["core"], spec["hidden_size"],
                                       tuple(spec["encoder_sizes"]), spec["activation"], obs_dim_extra=extra,
                                       cnn=spec.get("cnn"))
    elif kind == "multi_input_actor_critic":
        policy = make_multi_input_policy(observation_space, action_space, tuple(spec["hidden_sizes"]), spec["activation"],
                                         spec["key_features"], spec["cnn"], obs_dim_extra=extra)
    elif kind == "token_actor_critic":
        from functional_rl.kernel.token_policy import make_token_policy

        policy = make_token_policy(observation_space, action_space, spec["encoder"], tuple(spec["hidden_sizes"]),
                                   spec["embed_dim"], obs_dim_extra=extra)
    else:
        raise ValueError(f"cannot rebuild a policy of kind {kind!r}; only {', '.join(map(repr, SPEC_KINDS))} "
                         "are built here: build the policy yourself and use the record's params")
    if policy.spec != spec:
        raise ValueError(f"the spaces {observation_space} / {action_space} do not fit the policy spec {spec} (rebuilt: {policy.spec})")
    return policy
