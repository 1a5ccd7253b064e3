"""Pendulum-v1 as a pure, batched environment.

Dynamics, constants and reward follow gymnasium's ``gymnasium/envs/classic_control/pendulum.py``
(semi-implicit Euler, ``dt = 0.05``), with the ``TimeLimit(200)`` wrapper folded in as
truncation. The pendulum never terminates. With the torque ``u = clip(action, -2, 2)``::

    reward    = -(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2)     (the state *before* the step)
    theta_dot <- clip(theta_dot + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt, -8, 8)
    theta     <- theta + theta_dot dt                                         (not wrapped, as gymnasium)

where ``angle_normalize(x) = ((x + pi) mod 2 pi) - pi`` and ``theta = 0`` is upright.

Example:
    >>> import functional_rl.kernel.random as jr
    >>> env = Pendulum()
    >>> params = env.default_params()
    >>> state = PendulumState(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0]))
    >>> obs, s, r, term, trunc, info = env.step(jr.key(1), state, torch.tensor([[3.0]]), params)
    >>> [round(x, 6) for x in r.tolist()]  # upright and still: only the torque cost, u clipped to 2
    [-0.004]
    >>> [round(x, 6) for x in obs[0].tolist()]  # theta_dot = 3 * 2 * 0.05, theta = 0.3 * 0.05
    [0.999888, 0.014999, 0.3]
"""

from __future__ import annotations

import math

import torch
import torch.utils._pytree as pytree

import functional_rl.kernel.random as jr
from functional_rl.envs.base import Box, EnvStep, env_keys, register
from functional_rl.kernel.struct import pytree_dataclass

__all__ = ["Pendulum", "PendulumParams", "PendulumState", "angle_normalize"]


@pytree_dataclass
class PendulumParams:
    """Physical constants (gymnasium's defaults). Floats or tensors broadcastable to ``[B]``.

    Example:
        >>> p = Pendulum().default_params()
        >>> p.max_torque, p.g, p.max_steps
        (2.0, 10.0, 200)
    """

    max_speed: float | torch.Tensor = 8.0
    max_torque: float | torch.Tensor = 2.0
    dt: float | torch.Tensor = 0.05
    g: float | torch.Tensor = 10.0
    m: float | torch.Tensor = 1.0
    l: float | torch.Tensor = 1.0  # noqa: E741 (gymnasium's name)
    max_steps: int | torch.Tensor = 200


@pytree_dataclass
class PendulumState:
    """Per-env angle ``theta`` (0 = upright, unwrapped) and ``theta_dot``, float32 ``[B]``;
    step count ``time`` int64 ``[B]``.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> env = Pendulum()
        >>> _, s = env.reset(jr.key(0), env.default_params(), 3)
        >>> s.theta.shape, s.theta_dot.dtype, s.time
        (torch.Size([3]), torch.float32, tensor([0, 0, 0]))
    """

    theta: torch.Tensor
    theta_dot: torch.Tensor
    time: torch.Tensor


def angle_normalize(x: torch.Tensor) -> torch.Tensor:
    """Wrap angles into ``[-pi, pi)``: ``((x + pi) mod 2 pi) - pi`` (floored modulo, as numpy).

    Args:
        x: float tensor of any shape.

    Returns:
        A tensor like ``x``.

    >>> angle_normalize(torch.tensor([0.5, 4.0, -4.0]))
    tensor([ 0.5000, -2.2832,  2.2832])
    """
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


class Pendulum:
    """Swing up and hold an inverted pendulum; reward is minus a quadratic cost; 200-step limit.

    Observation float32 ``[B, 3]``: ``(cos theta, sin theta, theta_dot)``. Action float32
    ``[B, 1]``: the torque, clipped to ``[-2, 2]`` by the env. Never terminates.

    Example (actions are float torques ``[B, 1]``; rewards are never positive):
        >>> import functional_rl.kernel.random as jr
        >>> env = Pendulum()
        >>> params = env.default_params()
        >>> obs, state = env.reset(jr.key(0), params, 3)
        >>> obs.shape, env.action_space.shape
        (torch.Size([3, 3]), (1,))
        >>> obs, state, reward, terminated, truncated, info = env.step(jr.key(1), state, torch.zeros(3, 1), params)
        >>> obs.shape, reward.shape, bool((reward <= 0).all()), terminated
        (torch.Size([3, 3]), torch.Size([3]), True, tensor([False, False, False]))
    """

    id = "Pendulum-v1"
    observation_space = Box(low=(-1.0, -1.0, -8.0), high=(1.0, 1.0, 8.0), shape=(3,))
    action_space = Box(low=(-2.0,), high=(2.0,), shape=(1,))

    def default_params(self) -> PendulumParams:
        """gymnasium's constants (see :class:`PendulumParams`)."""
        return PendulumParams()

    @staticmethod
    def obs(state: PendulumState) -> torch.Tensor:
        """float32 ``[B, 3]``: ``(cos theta, sin theta, theta_dot)``."""
        return torch.stack([torch.cos(state.theta), torch.sin(state.theta), state.theta_dot], dim=-1)

    def reset(self, key: torch.Tensor, params: PendulumParams, num_envs: int) -> tuple[torch.Tensor, PendulumState]:
        """Start ``num_envs`` episodes: ``theta`` uniform in ``[-pi, pi)``, ``theta_dot`` in ``[-1, 1)``.

        Args:
            key: PRNG key, int64 ``[2]`` or per-env ``[B, 2]``.
            params: :class:`PendulumParams` (unused by the reset distribution).
            num_envs: ``B``.

        Returns:
            ``(obs, state)``: float32 ``[B, 3]`` and a :class:`PendulumState` at ``time = 0``.
        """
        u = jr.uniform(env_keys(key, num_envs), (2,), low=-1.0, high=1.0).t().contiguous()  # [2, B]
        time = torch.zeros(num_envs, dtype=torch.int64, device=key.device)
        state = PendulumState(math.pi * u[0], u[1], time)
        return self.obs(state), state

    def step(
        self, key: torch.Tensor, state: PendulumState, action: torch.Tensor, params: PendulumParams
    ) -> tuple[torch.Tensor, PendulumState, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Advance every env one step; auto-reset at the time limit (see :mod:`functional_rl.envs.base`).

        Args:
            key: PRNG key, int64 ``[2]`` or per-env ``[B, 2]``, used only for the auto-reset.
            state: :class:`PendulumState` ``[B]``.
            action: float32 ``[B, 1]``, the torque (clipped to ``[-max_torque, max_torque]``).
            params: :class:`PendulumParams`.

        Returns:
            ``(obs, state, reward, terminated, truncated, info)``: obs float32 ``[B, 3]`` (reset
            obs where truncated), reward float32 ``[B]``, terminated bool ``[B]`` (always
            false), truncated bool ``[B]``, ``info["final_obs"]`` float32 ``[B, 3]``.
        """
        p = params
        num_envs = state.theta.shape[0]
        if action.shape != (num_envs, 1):
            raise ValueError(f"Pendulum.step: action must have shape [B, 1]=({num_envs}, 1), got {tuple(action.shape)}")
        th, thdot = state.theta, state.theta_dot
        u = torch.clamp(action[:, 0].to(th.dtype), -p.max_torque, p.max_torque)
        reward = -(angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * u**2)
        new_thdot = thdot + (3 * p.g / (2 * p.l) * torch.sin(th) + 3.0 / (p.m * p.l**2) * u) * p.dt
        new_thdot = torch.clamp(new_thdot, -p.max_speed, p.max_speed)
        nxt = PendulumState(th + new_thdot * p.dt, new_thdot, state.time + 1)
        terminated = torch.zeros_like(state.time, dtype=torch.bool)
        truncated = nxt.time >= p.max_steps
        final_obs = self.obs(nxt)
        reset_obs, reset_state = self.reset(key, params, num_envs)
        new_state = pytree.tree_map(lambda r, n: torch.where(truncated, r, n), reset_state, nxt)
        obs = torch.where(truncated[:, None], reset_obs, final_obs)
        return EnvStep(obs, new_state, reward, terminated, truncated, final_obs)


register("Pendulum-v1", Pendulum)
