"""Recurrent policies: LSTM and GRU cores in plain tensor ops, with an explicit carry.

A recurrent :class:`~functional_rl.kernel.policies.Policy` has ``initial_carry`` set and a
step-wise ``apply``::

    carry0          = policy.initial_carry(num_envs)            # float [B, C], zeros
    outputs, carry  = policy.apply(params, obs, carry, reset)   # obs [B, ...], reset bool [B]
    value           = policy.value(params, obs, carry, reset)   # float [B]

``reset[b]`` says that ``obs[b]`` is the first observation of an episode: the carry of row
``b`` is zeroed before the step. The carry is one tensor ``[B, C]`` (an LSTM's ``(h, c)``
side by side, ``C = 2H``; a GRU's ``h``, ``C = H``), so it is a plain leaf of the training
state (``state.envs.carry``): checkpointed, vmapped over agents and split over processes like
any per-env leaf.

The rollout hands the policy the carry it left at the previous step and ``reset =
(episode_length == 0)``, and stores the carry each step started from. Training replays whole
env sequences: :func:`unroll` runs ``apply`` over the ``T`` steps of a minibatch of envs from
the carry stored at the first step, with the stored resets, and backpropagates through all
``T`` steps (truncated backprop over the rollout). The recomputed log-probs equal the
rollout's (``tests/test_recurrent.py`` checks it bit for bit, eager and compiled). For the
compiled rollout to give the eager replay's bits, the cores, a ``tanh`` encoder and the
action distribution call their transcendental functions through :mod:`functional_rl.kernel.exact`.

The cores follow PyTorch's ``nn.LSTMCell`` / ``nn.GRUCell`` equations (below); weights are
orthogonal with gain 1 and biases zero, as CleanRL's ``ppo_atari_lstm.py`` initialises its
LSTM. Weights are transposed with ``.t()``, not ``.T``: the rollout calls ``apply`` once per
group of envs, and inside a compiled ``scan`` each ``.T`` of a parameter became a separate
graph input aliasing the others, which the scan refuses.

Example:
    >>> import functional_rl.kernel.random as jr
    >>> from functional_rl.envs import make
    >>> env = make("CartPoleNoVelocity-v1")
    >>> policy = make_recurrent_policy(env.observation_space, env.action_space, core="lstm", hidden_size=16)
    >>> params = policy.init(jr.key(0))
    >>> carry = policy.initial_carry(3)  # [B=3, 2H]
    >>> out, carry = policy.apply(params, torch.zeros(3, 2), carry, torch.ones(3, dtype=torch.bool))
    >>> out["logits"].shape, out["value"].shape, carry.shape
    (torch.Size([3, 2]), torch.Size([3]), torch.Size([3, 32]))
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

import functional_rl.kernel.random as jr
from functional_rl.envs.base import Box
from functional_rl.kernel import exact

__all__ = ["RECURRENT_CORES", "lstm_init", "lstm_step", "gru_init", "gru_step", "make_recurrent_policy", "unroll", "is_recurrent"]

Params = dict[str, Any]


def is_recurrent(policy: Any) -> bool:
    """Whether ``policy`` carries state between steps (it has an ``initial_carry``).

    Example:
        >>> from types import SimpleNamespace
        >>> is_recurrent(SimpleNamespace(initial_carry=None)), is_recurrent(SimpleNamespace(initial_carry=lambda n: torch.zeros(n, 4)))
        (False, True)
    """
    return getattr(policy, "initial_carry", None) is not None


def _recurrent_weights(key: torch.Tensor, in_dim: int, hidden: int, gates: int) -> Params:
    """``w_ih [G*H, in]``, ``w_hh [G*H, H]`` (each gate's block orthogonal, gain 1), zero biases."""
    k_ih, k_hh = jr.split(key, 2)
    from functional_rl.kernel.policies import orthogonal

    w_ih = torch.cat([orthogonal(k, (hidden, in_dim), 1.0) for k in jr.split(k_ih, gates)])
    w_hh = torch.cat([orthogonal(k, (hidden, hidden), 1.0) for k in jr.split(k_hh, gates)])
    return {"w_ih": w_ih, "w_hh": w_hh, "b_ih": torch.zeros(gates * hidden), "b_hh": torch.zeros(gates * hidden)}


def lstm_init(key: torch.Tensor, in_dim: int, hidden: int) -> Params:
    """LSTM cell parameters: ``w_ih [4H, in]``, ``w_hh [4H, H]``, ``b_ih``/``b_hh [4H]``
    (gate order i, f, g, o as in ``nn.LSTMCell``).

    Example:
        >>> p = lstm_init(jr.key(0), 3, 8)
        >>> p["w_ih"].shape, p["w_hh"].shape, p["b_ih"].shape
        (torch.Size([32, 3]), torch.Size([32, 8]), torch.Size([32]))
    """
    return _recurrent_weights(key, in_dim, hidden, 4)


def lstm_step(p: Params, x: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
    """One LSTM step. ``x [N, in]``, ``carry [N, 2H]`` = ``(h, c)`` side by side -> ``[N, 2H]``.

    ``i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh)``;
    ``c' = sigmoid(f) c + sigmoid(i) tanh(g)``; ``h' = sigmoid(o) tanh(c')``.

    Example (equal to ``torch.nn.LSTMCell`` with the same weights):
        >>> p = lstm_init(jr.key(0), 3, 4)
        >>> cell = torch.nn.LSTMCell(3, 4)
        >>> with torch.no_grad():
        ...     for name in p:
        ...         _ = getattr(cell, name.replace("w_", "weight_").replace("b_", "bias_")).copy_(p[name])
        >>> x, h, c = jr.normal(jr.key(1), (2, 3)), jr.normal(jr.key(2), (2, 4)), jr.normal(jr.key(3), (2, 4))
        >>> h2, c2 = cell(x, (h, c))
        >>> bool(torch.allclose(lstm_step(p, x, torch.cat([h, c], -1)), torch.cat([h2, c2], -1), atol=1e-6))
        True
    """
    return _lstm_recur(p, _input_projection(p, x), carry)


def _input_projection(p: Params, x: torch.Tensor) -> torch.Tensor:
    """``x W_ih^T + b_ih``: the part of a step that does not depend on the carry (computed for
    all steps of a sequence at once by :func:`unroll`)."""
    return x @ p["w_ih"].t() + p["b_ih"]


def _lstm_recur(p: Params, xw: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
    h, c = carry.chunk(2, dim=-1)
    z = xw + h @ p["w_hh"].t() + p["b_hh"]
    i, f, g, o = z.chunk(4, dim=-1)
    c = exact.sigmoid(f) * c + exact.sigmoid(i) * exact.tanh(g)
    h = exact.sigmoid(o) * exact.tanh(c)
    return torch.cat([h, c], dim=-1)


def gru_init(key: torch.Tensor, in_dim: int, hidden: int) -> Params:
    """GRU cell parameters: ``w_ih [3H, in]``, ``w_hh [3H, H]``, ``b_ih``/``b_hh [3H]`` (gate
    order r, z, n as in ``nn.GRUCell``).

    Example:
        >>> gru_init(jr.key(0), 3, 8)["w_hh"].shape
        torch.Size([24, 8])
    """
    return _recurrent_weights(key, in_dim, hidden, 3)


def gru_step(p: Params, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One GRU step. ``x [N, in]``, ``h [N, H]`` -> ``[N, H]``.

    ``r = sigmoid(x_r + h_r)``, ``z = sigmoid(x_z + h_z)``, ``n = tanh(x_n + r h_n)``,
    ``h' = (1 - z) n + z h``, with ``x_* = x W_i*^T + b_i*`` and ``h_* = h W_h*^T + b_h*``.

    Example (equal to ``torch.nn.GRUCell`` with the same weights):
        >>> p = gru_init(jr.key(0), 3, 4)
        >>> cell = torch.nn.GRUCell(3, 4)
        >>> with torch.no_grad():
        ...     for name in p:
        ...         _ = getattr(cell, name.replace("w_", "weight_").replace("b_", "bias_")).copy_(p[name])
        >>> x, h = jr.normal(jr.key(1), (2, 3)), jr.normal(jr.key(2), (2, 4))
        >>> bool(torch.allclose(gru_step(p, x, h), cell(x, h), atol=1e-6))
        True
    """
    return _gru_recur(p, _input_projection(p, x), h)


def _gru_recur(p: Params, xw: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    xr, xz, xn = xw.chunk(3, dim=-1)
    hr, hz, hn = (h @ p["w_hh"].t() + p["b_hh"]).chunk(3, dim=-1)
    r, z = exact.sigmoid(xr + hr), exact.sigmoid(xz + hz)
    n = exact.tanh(xn + r * hn)
    return (1.0 - z) * n + z * h


#: ``name -> (init, recurrent part of a step (after the input projection), carry width per hidden unit)``.
RECURRENT_CORES = {"lstm": (lstm_init, _lstm_recur, 2), "gru": (gru_init, _gru_recur, 1)}


def make_recurrent_policy(
    observation_space: Box,
    action_space: Any,
    core: str = "lstm",
    hidden_size: int = 128,
    encoder_sizes: tuple[int, ...] = (64,),
    activation: str = "tanh",
    obs_dim_extra: int = 0,
    cnn: str | None = "simple_cnn",
) -> Any:
    """A recurrent actor-critic: encoder -> LSTM/GRU core -> policy and value heads.

    The shape of CleanRL's ``ppo_atari_lstm.py`` agent: an image observation ``[C, H, W]``
    first goes through the conv stack ``cnn`` (:data:`~functional_rl.kernel.policies.CNN_ENCODERS`,
    ReLU, flattened; a uint8 space divided by 255), any other is flattened; extra inputs such
    as the last action are appended; dense layers of ``encoder_sizes`` (orthogonal, gain
    sqrt 2, ``activation``) lead to the core; the policy head (gain 0.01) and the value head
    (gain 1) read the core's output ``h``.

    Args:
        observation_space: a :class:`Box`: an image ``(C, H, W)`` or any shape (flattened).
        action_space: Discrete, MultiDiscrete or Box (as :func:`~functional_rl.kernel.policies.make_mlp_policy`).
        core: ``"lstm"`` or ``"gru"`` (:data:`RECURRENT_CORES`).
        hidden_size: ``H``, the core's width; the carry is ``[B, 2H]`` (LSTM) or ``[B, H]`` (GRU).
        encoder_sizes: dense layers before the core (may be empty).
        activation: of the encoder, ``"tanh"`` or ``"relu"``.
        obs_dim_extra: extra flat inputs appended to the observation.
        cnn: the conv stack for an image observation; ``None`` flattens images too.

    Returns:
        A :class:`~functional_rl.kernel.policies.Policy` with ``initial_carry(n) -> zeros [n, C]``,
        ``apply(params, obs [*N, ...], carry [*N, C], reset bool [*N]) -> (outputs, carry)`` and
        ``value(params, obs, carry, reset=None) -> [*N]`` (any leading dims ``*N``).

    Example (the carry remembers: the same observation gives other logits after other inputs):
        >>> from functional_rl.envs import make
        >>> env = make("MemoryCue-v0")
        >>> policy = make_recurrent_policy(env.observation_space, env.action_space, core="gru", hidden_size=8)
        >>> params = policy.init(jr.key(0))
        >>> no = torch.zeros(2, dtype=torch.bool)
        >>> _, c1 = policy.apply(params, torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), policy.initial_carry(2), ~no)
        >>> out, _ = policy.apply(params, torch.zeros(2, 2), c1, no)
        >>> bool(torch.equal(out["logits"][0], out["logits"][1]))
        False
        >>> catch = make("Catch-v0")  # an image [1, 10, 5]: a conv stack before the core
        >>> pixels = make_recurrent_policy(catch.observation_space, catch.action_space, hidden_size=8)
        >>> sorted(pixels.init(jr.key(0))), pixels.spec["cnn"]
        (['conv', 'core', 'encoder', 'pi', 'v'], 'simple_cnn')
    """
    from functional_rl.kernel.policies import (
        CNN_ENCODERS, Policy, _action_head, _activation, _conv_apply, _conv_features, _conv_init, _heads_init, _mlp_init, _outputs,
    )

    if not isinstance(observation_space, Box):
        raise TypeError(f"make_recurrent_policy needs a Box observation space, got {type(observation_space).__name__}")
    if core not in RECURRENT_CORES:
        raise ValueError(f"unknown recurrent core {core!r}; choose one of {sorted(RECURRENT_CORES)}")
    if hidden_size < 1:
        raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
    core_init, core_step, width = RECURRENT_CORES[core]
    act = exact.tanh if _activation(activation) is torch.tanh else torch.relu
    obs_dim = math.prod(observation_space.shape) + obs_dim_extra
    obs_ndim = 1 if obs_dim_extra else len(observation_space.shape)
    out_dim, dist = _action_head(action_space)
    dist = dataclasses.replace(dist, exact=True)  # compiled rollout log-probs = the eager replay's, bit for bit
    continuous = isinstance(action_space, Box)
    image = cnn is not None and len(observation_space.shape) == 3
    image_size = math.prod(observation_space.shape)
    scale = 1.0 / 255.0 if observation_space.dtype == torch.uint8 else 1.0
    features = (_conv_features(observation_space.shape, cnn, "the observation") + obs_dim_extra) if image else obs_dim
    enc = [features, *encoder_sizes]
    carry_size = width * hidden_size

    def init(key: torch.Tensor) -> Params:
        k_enc, k_core, k_heads = jr.split(key, 3)
        params = {
            # the encoder's layers all hidden (a dummy 1-wide head is dropped)
            "encoder": _mlp_init(k_enc, [*enc, 1], 1.0, None)[:-1],
            "core": core_init(k_core, enc[-1], hidden_size),
            **_heads_init(k_heads, hidden_size, out_dim, continuous),
        }
        if image:
            params["conv"] = _conv_init(jr.fold_in(k_enc, 1), observation_space.shape[0], CNN_ENCODERS[cnn])
        return params

    def initial_carry(num_envs: int) -> torch.Tensor:
        return torch.zeros(num_envs, carry_size)

    def encode(params: Params, obs: torch.Tensor) -> torch.Tensor:
        """``[*N, ...] -> [prod(N), 4H or 3H]``: encoder and input projection (no carry)."""
        x = obs.reshape(-1, obs_dim)
        if image:
            pixels = x[:, :image_size].reshape(-1, *observation_space.shape) * scale
            x = torch.cat([_conv_apply(params["conv"], pixels, CNN_ENCODERS[cnn]), x[:, image_size:]], dim=-1)
        for layer in params["encoder"]:
            x = act(x @ layer["w"].t() + layer["b"])
        return _input_projection(params["core"], x)

    def recur(params: Params, xw: torch.Tensor, carry: torch.Tensor, reset: torch.Tensor | None) -> torch.Tensor:
        carry = carry.reshape(-1, carry_size)
        if reset is not None:
            carry = torch.where(reset.reshape(-1, 1), torch.zeros_like(carry), carry)
        return core_step(params["core"], xw, carry)

    def heads(params: Params, h: torch.Tensor) -> dict[str, torch.Tensor]:
        return _outputs(params, h @ params["pi"]["w"].t() + params["pi"]["b"], critic(params, h), continuous)

    def critic(params: Params, h: torch.Tensor) -> torch.Tensor:
        return h @ params["v"]["w"] + params["v"]["b"]

    def apply(params: Params, obs: torch.Tensor, carry: torch.Tensor, reset: torch.Tensor | None = None):
        lead = obs.shape[: obs.dim() - obs_ndim]
        carry = recur(params, encode(params, obs), carry, reset)
        out = heads(params, carry[:, :hidden_size])
        return {k: v.reshape(*lead, *v.shape[1:]) for k, v in out.items()}, carry.reshape(*lead, carry_size)

    def value(params: Params, obs: torch.Tensor, carry: torch.Tensor, reset: torch.Tensor | None = None) -> torch.Tensor:
        lead = obs.shape[: obs.dim() - obs_ndim]
        carry = recur(params, encode(params, obs), carry, reset)
        return critic(params, carry[:, :hidden_size]).reshape(lead)

    spec = {
        "kind": "recurrent_actor_critic", "core": core, "hidden_size": hidden_size, "encoder_sizes": list(encoder_sizes),
        "cnn": cnn if image else None,
        "activation": activation, "obs_dim": obs_dim, "action": "continuous" if continuous else "discrete", "action_dim": out_dim,
    }
    return Policy(init=init, apply=apply, value=value, distribution=dist, spec=spec, initial_carry=initial_carry)


def unroll(policy: Any, params: Any, obs: torch.Tensor, carry: torch.Tensor, reset: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run a recurrent policy over whole sequences: outputs of every step, ``[N, T, ...]``.

    Step ``t`` calls ``policy.apply(params, obs[:, t], carry, reset[:, t])`` with the carry
    step ``t - 1`` returned (``carry`` for ``t = 0``); gradients flow through all ``T`` steps.
    Every step runs on ``N`` contiguous rows, as the rollout's forward passes do (it splits
    its ``B`` envs into groups of ``N``, :func:`~functional_rl.kernel.rollout.policy_act`):
    a BLAS may sum a matmul of ``N`` rows in another order than one of ``B`` rows (seen here
    for 3 vs 15 rows of 2 inputs), so equal row counts are what makes the replayed log-probs
    equal the sampled ones bit for bit. The encoder is therefore not hoisted out of the loop
    over all ``N x T`` rows, which would be about twice as fast but only equal to rounding.
    A Python loop: under ``torch.compile`` it unrolls into ``T`` copies of the step, so keep
    ``num_steps`` of recurrent runs moderate when compiling (see ``benchmarks/RESULTS.md``).

    Args:
        obs: ``[N, T, ...]`` policy inputs of ``N`` env sequences.
        carry: ``[N, C]``, the carry the first step started from.
        reset: bool ``[N, T]``, where an episode starts.

    Returns:
        The outputs dict with every entry ``[N, T, ...]``.

    Example:
        >>> from functional_rl.envs import make
        >>> env = make("MemoryCue-v0")
        >>> policy = make_recurrent_policy(env.observation_space, env.action_space, hidden_size=8)
        >>> params = policy.init(jr.key(0))
        >>> obs, reset = jr.normal(jr.key(1), (3, 5, 2)), torch.zeros(3, 5, dtype=torch.bool)
        >>> out = unroll(policy, params, obs, policy.initial_carry(3), reset)
        >>> out["logits"].shape, out["value"].shape  # [N, T, K], [N, T]
        (torch.Size([3, 5, 2]), torch.Size([3, 5]))
        >>> step2, _ = policy.apply(params, obs[:, 0], policy.initial_carry(3), reset[:, 0])
        >>> bool(torch.equal(out["logits"][:, 0], step2["logits"]))
        True
    """
    if reset.dim() != 2 or obs.shape[:2] != reset.shape:
        raise ValueError(f"unroll needs obs [N, T, ...] and reset [N, T], got obs {list(obs.shape)} and reset {list(reset.shape)}")
    obs, reset = obs.transpose(0, 1), reset.transpose(0, 1)  # time-major
    carry = carry.clone()
    steps = []
    for t in range(reset.shape[0]):
        # a fresh (aligned) copy of each step's rows, as the rollout passes: MKL's result can
        # depend on where a matrix starts in memory
        out, carry = policy.apply(params, obs[t].clone(memory_format=torch.contiguous_format), carry, reset[t])
        steps.append(out)
    return {k: torch.stack([s[k] for s in steps], dim=1) for k in steps[0]}
