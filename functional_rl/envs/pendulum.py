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
    >>> out = env.step(jr.key(1), state, torch.tensor([[3.0]]), params)
    >>> [round(x, 6) for x in out.reward.tolist()]  # upright and still: only the torque cost, u clipped to 2
    [-0.004]
    >>> [round(x, 6) for x in out.obs[0].tolist()]  # theta_dot = 3 * 2 * 0.05, theta = 0.3 * 0.05
    [0.999888, 0.014999, 0.3]
"""

from __future__ import annotations

import math

import torch

import functional_rl.kernel.random as jr
from functional_rl.envs.base import Box, Environment, register
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


class Pendulum(Environment):
    """Swing up and hold an inverted pendulum; reward is minus a quadratic cost; 200-step limit.

    Observation float32 ``[B, 3]``: ``(cos theta, sin theta, theta_dot)``. Action float32
    ``[B, 1]``: the torque, clipped to ``[-2, 2]`` by the env. Never terminates. ``reset``
    and the auto-resetting ``step`` come from :class:`~functional_rl.envs.base.Environment`.

    Example (actions are float torques ``[B, 1]``; rewards are never positive):
        >>> import functional_rl.kernel.random as jr
        >>> env = Pendulum()
        >>> params = env.default_params()
        >>> obs, state = env.reset(jr.key(0), params, 3)
        >>> obs.shape, env.action_space.shape
        (torch.Size([3, 3]), (1,))
        >>> out = env.step(jr.key(1), state, torch.zeros(3, 1), params)
        >>> out.obs.shape, out.reward.shape, bool((out.reward <= 0).all()), out.terminated
        (torch.Size([3, 3]), torch.Size([3]), True, tensor([False, False, False]))
    """

    id = "Pendulum-v1"
    observation_space = Box(low=(-1.0, -1.0, -8.0), high=(1.0, 1.0, 8.0), shape=(3,))
    action_space = Box(low=(-2.0,), high=(2.0,), shape=(1,))

    def default_params(self) -> PendulumParams:
        """gymnasium's constants (see :class:`PendulumParams`)."""
        return PendulumParams()

    def get_obs(self, state: PendulumState, params: PendulumParams) -> torch.Tensor:
        """float32 ``[B, 3]``: ``(cos theta, sin theta, theta_dot)``.

        >>> s = PendulumState(torch.tensor([0.0]), torch.tensor([0.5]), torch.tensor([0]))
        >>> Pendulum().get_obs(s, PendulumParams())
        tensor([[1.0000, 0.0000, 0.5000]])
        """
        return torch.stack([torch.cos(state.theta), torch.sin(state.theta), state.theta_dot], dim=-1)

    def reset_env(self, keys: torch.Tensor, params: PendulumParams) -> PendulumState:
        """Fresh states: ``theta`` uniform in ``[-pi, pi)``, ``theta_dot`` in ``[-1, 1)``, ``time = 0``.

        Args:
            keys: int64 ``[B, 2]``, one PRNG key per env.
            params: :class:`PendulumParams` (unused by the reset distribution).

        Returns:
            A :class:`PendulumState` ``[B]``.

        >>> import functional_rl.kernel.random as jr
        >>> s = Pendulum().reset_env(jr.split(jr.key(0), 2), PendulumParams())
        >>> bool((s.theta_dot.abs() <= 1).all()), s.time
        (True, tensor([0, 0]))
        """
        u = jr.uniform(keys, (2,), low=-1.0, high=1.0).t().contiguous()  # [2, B]
        time = torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device)
        return PendulumState(math.pi * u[0], u[1], time)

    def step_env(
        self, state: PendulumState, action: torch.Tensor, params: PendulumParams
    ) -> tuple[PendulumState, torch.Tensor, torch.Tensor]:
        """One semi-implicit Euler step (module docstring); the reward is the cost of the state *before* it.

        Args:
            state: :class:`PendulumState` ``[B]``.
            action: float32 ``[B, 1]``, the torque (clipped to ``[-max_torque, max_torque]``).
            params: :class:`PendulumParams`.

        Returns:
            ``(next_state, reward float32 [B], terminated bool [B])``; ``terminated`` is always
            false (only the time limit ends an episode).

        >>> s = PendulumState(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0]))
        >>> nxt, reward, terminated = Pendulum().step_env(s, torch.tensor([[-3.0]]), PendulumParams())
        >>> [round(x, 6) for x in reward.tolist()], terminated, nxt.time
        ([-0.004], tensor([False]), tensor([1]))
        """
        p = params
        th, thdot = state.theta, state.theta_dot
        u = torch.clamp(action[:, 0].to(th.dtype), -p.max_torque, p.max_torque)
        reward = -(angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * u**2)
        new_thdot = thdot + (3 * p.g / (2 * p.l) * torch.sin(th) + 3.0 / (p.m * p.l**2) * u) * p.dt
        new_thdot = torch.clamp(new_thdot, -p.max_speed, p.max_speed)
        nxt = PendulumState(th + new_thdot * p.dt, new_thdot, state.time + 1)
        return nxt, reward, torch.zeros_like(state.time, dtype=torch.bool)


register("Pendulum-v1", Pendulum)
