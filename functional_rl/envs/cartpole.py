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
    >>> obs, s, r, term, trunc, info = env.step(jr.key(1), s, torch.tensor([0, 1, 0]), params)
    >>> r.tolist(), term.tolist()
    ([1.0, 1.0, 1.0], [False, False, False])
"""

from __future__ import annotations

import math

import torch

from functional_rl.envs.base import Box, Discrete, EnvStep, env_keys, register
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


class CartPole:
    """Balance a pole on a cart; reward 1 per step; 500-step limit (truncation).

    Example (reset 3 envs, push each cart left once):
        >>> import functional_rl.kernel.random as jr
        >>> env = CartPole()
        >>> params = env.default_params()
        >>> obs, state = env.reset(jr.key(0), params, 3)
        >>> obs.shape, env.action_space.n
        (torch.Size([3, 4]), 2)
        >>> obs, state, reward, terminated, truncated, info = env.step(
        ...     jr.key(1), state, torch.zeros(3, dtype=torch.int64), params)
        >>> obs.shape, reward, terminated, truncated, info["final_obs"].shape
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

    @staticmethod
    def obs(state: CartPoleState) -> torch.Tensor:
        """float32 ``[B, 4]``: ``(x, x_dot, theta, theta_dot)``."""
        return torch.stack([state.x, state.x_dot, state.theta, state.theta_dot], dim=-1)

    def reset(self, key: torch.Tensor, params: CartPoleParams, num_envs: int) -> tuple[torch.Tensor, CartPoleState]:
        """Every state variable uniform in ``[-0.05, 0.05)``."""
        u = jr.uniform(env_keys(key, num_envs), (4,), low=-0.05, high=0.05).t().contiguous()  # [4, B]
        state = CartPoleState(u[0], u[1], u[2], u[3], torch.zeros(num_envs, dtype=torch.int64, device=key.device))
        return self.obs(state), state

    def dynamics(self, state: CartPoleState, action: torch.Tensor, params: CartPoleParams) -> CartPoleState:
        """One Euler step of the cart-pole equations of motion (no reset, no time limit)."""
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

    def step(self, key, state: CartPoleState, action: torch.Tensor, params: CartPoleParams):
        """Advance every env one step; auto-reset the finished ones (see ``envs.base``)."""
        nxt = self.dynamics(state, action, params)
        terminated = (
            (nxt.x < -params.x_threshold)
            | (nxt.x > params.x_threshold)
            | (nxt.theta < -params.theta_threshold)
            | (nxt.theta > params.theta_threshold)
        )
        truncated = nxt.time >= params.max_steps
        reward = torch.ones_like(nxt.x)
        final_obs = self.obs(nxt)
        reset_obs, reset_state = self.reset(key, params, state.x.shape[0])
        done = terminated | truncated
        new_state = CartPoleState(
            *(torch.where(done, r, n) for r, n in zip(
                (reset_state.x, reset_state.x_dot, reset_state.theta, reset_state.theta_dot, reset_state.time),
                (nxt.x, nxt.x_dot, nxt.theta, nxt.theta_dot, nxt.time),
            ))
        )
        obs = torch.where(done[:, None], reset_obs, final_obs)
        return EnvStep(obs, new_state, reward, terminated, truncated, final_obs)


register("CartPole-v1", CartPole)
