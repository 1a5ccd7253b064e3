"""CartPole-v1 as a pure, batched environment.

Dynamics, constants, termination and reward follow gymnasium's
``gymnasium/envs/classic_control/cartpole.py`` (Barto, Sutton & Anderson 1983), Euler
integration, with the ``TimeLimit(500)`` wrapper folded in as truncation.

Example:
    >>> import functional_rl.kernel.random as jr
    >>> env = CartPole()
    >>> params = env.default_params()
    >>> obs, s = env.reset(jr.key(0), params, num_envs=3)
    >>> obs.shape
    torch.Size([3, 4])
    >>> out = env.step(jr.key(1), s, torch.tensor([0, 1, 0]), params)
    >>> out.reward.tolist(), out.terminated.tolist()
    ([1.0, 1.0, 1.0], [False, False, False])
"""

from __future__ import annotations

import math

import torch

from functional_rl.envs.base import Box, Discrete, Environment, register
from functional_rl.kernel.struct import pytree_dataclass
import functional_rl.kernel.random as jr

__all__ = ["CartPole", "CartPoleParams", "CartPoleState"]


@pytree_dataclass
class CartPoleParams:
    """Physical constants (gymnasium's defaults). Floats or tensors broadcastable to ``[B]``.

    Example:
        >>> p = CartPole().default_params()
        >>> p.gravity, p.max_steps
        (9.8, 500)
        >>> p.replace(gravity=torch.tensor([9.8, 3.7])).gravity.shape  # per-env values [B]
        torch.Size([2])
    """

    gravity: float | torch.Tensor = 9.8
    masscart: float | torch.Tensor = 1.0
    masspole: float | torch.Tensor = 0.1
    length: float | torch.Tensor = 0.5  # half the pole's length
    force_mag: float | torch.Tensor = 10.0
    tau: float | torch.Tensor = 0.02
    theta_threshold: float | torch.Tensor = 12 * 2 * math.pi / 360
    x_threshold: float | torch.Tensor = 2.4
    max_steps: int | torch.Tensor = 500


@pytree_dataclass
class CartPoleState:
    """Per-env physical state, each float32 ``[B]``, and the step count ``time`` int64 ``[B]``.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> env = CartPole()
        >>> _, s = env.reset(jr.key(0), env.default_params(), 3)
        >>> s.x.shape, s.theta.dtype, s.time
        (torch.Size([3]), torch.float32, tensor([0, 0, 0]))
    """

    x: torch.Tensor
    x_dot: torch.Tensor
    theta: torch.Tensor
    theta_dot: torch.Tensor
    time: torch.Tensor


class CartPole(Environment):
    """Balance a pole on a cart; reward 1 per step; 500-step limit (truncation).

    Observation float32 ``[B, 4]``: ``(x, x_dot, theta, theta_dot)``. Action int64 ``[B]``
    in ``{0, 1}``: push the cart left or right. ``reset`` and the auto-resetting ``step``
    come from :class:`~functional_rl.envs.base.Environment`.

    Example (reset 3 envs, push each cart left once):
        >>> import functional_rl.kernel.random as jr
        >>> env = CartPole()
        >>> params = env.default_params()
        >>> obs, state = env.reset(jr.key(0), params, 3)
        >>> obs.shape, env.action_space.n
        (torch.Size([3, 4]), 2)
        >>> out = env.step(jr.key(1), state, torch.zeros(3, dtype=torch.int64), params)
        >>> out.obs.shape, out.reward, out.terminated, out.truncated, out.final_obs.shape
        (torch.Size([3, 4]), tensor([1., 1., 1.]), tensor([False, False, False]), tensor([False, False, False]), torch.Size([3, 4]))
    """

    id = "CartPole-v1"
    observation_space = Box(
        low=(-4.8, -3.4028234663852886e38, -0.41887903, -3.4028234663852886e38),
        high=(4.8, 3.4028234663852886e38, 0.41887903, 3.4028234663852886e38),
        shape=(4,),
    )
    action_space = Discrete(2)

    def default_params(self) -> CartPoleParams:
        """gymnasium's constants (see :class:`CartPoleParams`)."""
        return CartPoleParams()

    def get_obs(self, state: CartPoleState, params: CartPoleParams) -> torch.Tensor:
        """float32 ``[B, 4]``: ``(x, x_dot, theta, theta_dot)``.

        >>> s = CartPoleState(*torch.eye(4), torch.zeros(4, dtype=torch.int64))
        >>> CartPole().get_obs(s, None)[1]
        tensor([0., 1., 0., 0.])
        """
        return torch.stack([state.x, state.x_dot, state.theta, state.theta_dot], dim=-1)

    def reset_env(self, keys: torch.Tensor, params: CartPoleParams) -> CartPoleState:
        """Every state variable uniform in ``[-0.05, 0.05)``; ``keys`` int64 ``[B, 2]``, one per env.

        >>> import functional_rl.kernel.random as jr
        >>> s = CartPole().reset_env(jr.split(jr.key(0), 3), CartPoleParams())
        >>> s.x.shape, bool((s.theta.abs() <= 0.05).all()), s.time
        (torch.Size([3]), True, tensor([0, 0, 0]))
        """
        u = jr.uniform(keys, (4,), low=-0.05, high=0.05).t().contiguous()  # [4, B]
        return CartPoleState(u[0], u[1], u[2], u[3], torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device))

    def dynamics(self, state: CartPoleState, action: torch.Tensor, params: CartPoleParams) -> CartPoleState:
        """One Euler step of the cart-pole equations of motion (no reset, no time limit).

        Args:
            state: :class:`CartPoleState` ``[B]``.
            action: int64 ``[B]`` in ``{0, 1}``.
            params: :class:`CartPoleParams`.

        Returns:
            The next :class:`CartPoleState` (``time`` incremented).

        >>> s = CartPoleState(*torch.zeros(4, 1), torch.zeros(1, dtype=torch.int64))
        >>> nxt = CartPole().dynamics(s, torch.tensor([1]), CartPoleParams())
        >>> round(float(nxt.x_dot[0]), 4), nxt.time  # pushed right from rest
        (0.1951, tensor([1]))
        """
        p = params
        total_mass = p.masspole + p.masscart
        polemass_length = p.masspole * p.length
        force = torch.where(action == 1, p.force_mag, -p.force_mag).to(state.x.dtype)
        costheta, sintheta = torch.cos(state.theta), torch.sin(state.theta)
        temp = (force + polemass_length * state.theta_dot**2 * sintheta) / total_mass
        thetaacc = (p.gravity * sintheta - costheta * temp) / (
            p.length * (4.0 / 3.0 - p.masspole * costheta**2 / total_mass)
        )
        xacc = temp - polemass_length * thetaacc * costheta / total_mass
        return CartPoleState(
            x=state.x + p.tau * state.x_dot,
            x_dot=state.x_dot + p.tau * xacc,
            theta=state.theta + p.tau * state.theta_dot,
            theta_dot=state.theta_dot + p.tau * thetaacc,
            time=state.time + 1,
        )

    def step_env(
        self, state: CartPoleState, action: torch.Tensor, params: CartPoleParams
    ) -> tuple[CartPoleState, torch.Tensor, torch.Tensor]:
        """:meth:`dynamics`, then reward 1 and termination when the cart or pole leaves its range.

        Args:
            state: :class:`CartPoleState` ``[B]``.
            action: int64 ``[B]`` in ``{0, 1}``.
            params: :class:`CartPoleParams`.

        Returns:
            ``(next_state, reward float32 [B], terminated bool [B])``; ``terminated`` where
            ``|x| > x_threshold`` or ``|theta| > theta_threshold``.

        >>> s = CartPoleState(torch.tensor([2.4, 0.0]), torch.tensor([1.0, 0.0]), *torch.zeros(2, 2), torch.zeros(2, dtype=torch.int64))
        >>> _, reward, terminated = CartPole().step_env(s, torch.tensor([1, 1]), CartPoleParams())
        >>> reward, terminated
        (tensor([1., 1.]), tensor([ True, False]))
        """
        nxt = self.dynamics(state, action, params)
        terminated = (
            (nxt.x < -params.x_threshold)
            | (nxt.x > params.x_threshold)
            | (nxt.theta < -params.theta_threshold)
            | (nxt.theta > params.theta_threshold)
        )
        return nxt, torch.ones_like(nxt.x), terminated


register("CartPole-v1", CartPole)
