"""Acrobot-v1 as a pure, batched environment.

Dynamics, constants, termination and reward follow gymnasium's
``gymnasium/envs/classic_control/acrobot.py`` (Sutton 1996; Sutton & Barto's book): the
"book" equations of motion, one fourth-order Runge-Kutta step of ``dt = 0.2`` per action,
angles wrapped into ``[-pi, pi]`` and angular velocities clipped to ``[-4 pi, 4 pi]`` and
``[-9 pi, 9 pi]`` after the step, no torque noise (gymnasium's default
``torque_noise_max = 0``), and the ``TimeLimit(500)`` wrapper folded in as truncation.

The reward is ``-1`` per step and ``0`` on the step that reaches the goal height
``-cos(theta1) - cos(theta1 + theta2) > 1`` (which terminates the episode).

Example:
    >>> import functional_rl.kernel.random as jr
    >>> env = Acrobot()
    >>> params = env.default_params()
    >>> obs, s = env.reset(jr.key(0), params, num_envs=3)
    >>> obs.shape, obs.dtype
    (torch.Size([3, 6]), torch.float32)
    >>> out = env.step(jr.key(1), s, torch.tensor([0, 1, 2]), params)
    >>> out.reward.tolist(), out.terminated.tolist(), out.truncated.tolist(), out.state.time.tolist()
    ([-1.0, -1.0, -1.0], [False, False, False], [False, False, False], [1, 1, 1])
"""

from __future__ import annotations

import math

import torch

import functional_rl.kernel.random as jr
from functional_rl.envs.base import Box, Discrete, Environment, register
from functional_rl.kernel.struct import pytree_dataclass

__all__ = ["Acrobot", "AcrobotParams", "AcrobotState"]


@pytree_dataclass
class AcrobotParams:
    """Physical constants (gymnasium's defaults). Floats or tensors broadcastable to ``[B]``.

    Example:
        >>> p = Acrobot().default_params()
        >>> p.dt, p.link_length_1, p.max_steps
        (0.2, 1.0, 500)
    """

    dt: float | torch.Tensor = 0.2  # integration step [s]
    link_length_1: float | torch.Tensor = 1.0  # [m]
    link_mass_1: float | torch.Tensor = 1.0  # [kg]
    link_mass_2: float | torch.Tensor = 1.0  # [kg]
    link_com_pos_1: float | torch.Tensor = 0.5  # centre of mass of link 1 [m]
    link_com_pos_2: float | torch.Tensor = 0.5  # centre of mass of link 2 [m]
    link_moi: float | torch.Tensor = 1.0  # moment of inertia of both links
    gravity: float | torch.Tensor = 9.8
    max_vel_1: float | torch.Tensor = 4 * math.pi
    max_vel_2: float | torch.Tensor = 9 * math.pi
    max_steps: int | torch.Tensor = 500


@pytree_dataclass
class AcrobotState:
    """Per-env state: joint angles and velocities, float32 ``[B]``; step count ``time`` int64 ``[B]``.

    ``theta1`` is the angle of the first link from straight down, ``theta2`` the angle of the
    second link relative to the first.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> env = Acrobot()
        >>> _, s = env.reset(jr.key(0), env.default_params(), 3)
        >>> s.theta1.shape, s.dtheta2.dtype, s.time
        (torch.Size([3]), torch.float32, tensor([0, 0, 0]))
    """

    theta1: torch.Tensor
    theta2: torch.Tensor
    dtheta1: torch.Tensor
    dtheta2: torch.Tensor
    time: torch.Tensor


def _wrap(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """gymnasium's ``wrap``: shift ``x`` by whole periods ``high - low`` into ``[low, high]``.

    gymnasium subtracts the period in a ``while x > high`` loop; ``ceil`` counts the same
    number of subtractions without data-dependent control flow.

    >>> _wrap(torch.tensor([4.0, -4.0, 1.0, 7.0]), -math.pi, math.pi)
    tensor([-2.2832,  2.2832,  1.0000,  0.7168])
    """
    period = high - low
    x = torch.where(x > high, x - period * torch.ceil((x - high) / period), x)
    return torch.where(x < low, x + period * torch.ceil((low - x) / period), x)


class Acrobot(Environment):
    """Swing the tip of a two-link chain above the bar; reward -1 per step; 500-step limit.

    Observation float32 ``[B, 6]``: ``(cos t1, sin t1, cos t2, sin t2, dt1, dt2)``.
    Action int64 ``[B]`` in ``{0, 1, 2}``: torque ``-1, 0, +1`` on the joint between the links.
    ``reset`` and the auto-resetting ``step`` come from :class:`~functional_rl.envs.base.Environment`.

    Example (reset 3 envs, apply torque -1 once):
        >>> import functional_rl.kernel.random as jr
        >>> env = Acrobot()
        >>> params = env.default_params()
        >>> obs, state = env.reset(jr.key(0), params, 3)
        >>> obs.shape, env.action_space.n
        (torch.Size([3, 6]), 3)
        >>> out = env.step(jr.key(1), state, torch.zeros(3, dtype=torch.int64), params)
        >>> out.obs.shape, out.reward, out.terminated, out.state.time
        (torch.Size([3, 6]), tensor([-1., -1., -1.]), tensor([False, False, False]), tensor([1, 1, 1]))
    """

    id = "Acrobot-v1"
    observation_space = Box(
        low=(-1.0, -1.0, -1.0, -1.0, -4 * math.pi, -9 * math.pi),
        high=(1.0, 1.0, 1.0, 1.0, 4 * math.pi, 9 * math.pi),
        shape=(6,),
    )
    action_space = Discrete(3)

    def default_params(self) -> AcrobotParams:
        """gymnasium's constants (see :class:`AcrobotParams`)."""
        return AcrobotParams()

    def get_obs(self, state: AcrobotState, params: AcrobotParams) -> torch.Tensor:
        """The observation of ``state``.

        Returns:
            float32 ``[B, 6]``: ``(cos theta1, sin theta1, cos theta2, sin theta2, dtheta1, dtheta2)``.

        >>> s = AcrobotState(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.zeros(1), torch.zeros(1, dtype=torch.int64))
        >>> Acrobot().get_obs(s, AcrobotParams()).tolist()
        [[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]]
        """
        return torch.stack(
            [
                torch.cos(state.theta1),
                torch.sin(state.theta1),
                torch.cos(state.theta2),
                torch.sin(state.theta2),
                state.dtheta1,
                state.dtheta2,
            ],
            dim=-1,
        )

    def reset_env(self, keys: torch.Tensor, params: AcrobotParams) -> AcrobotState:
        """Fresh states: every state variable uniform in ``[-0.1, 0.1)``, ``time = 0``.

        Args:
            keys: int64 ``[B, 2]``, one PRNG key per env.
            params: :class:`AcrobotParams` (unused by the reset distribution).

        Returns:
            An :class:`AcrobotState` ``[B]``.

        >>> import functional_rl.kernel.random as jr
        >>> s = Acrobot().reset_env(jr.split(jr.key(0), 2), AcrobotParams())
        >>> bool((s.theta1.abs() <= 0.1).all()), s.time
        (True, tensor([0, 0]))
        """
        u = jr.uniform(keys, (4,), low=-0.1, high=0.1).t().contiguous()  # [4, B]
        time = torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device)
        return AcrobotState(u[0], u[1], u[2], u[3], time)

    @staticmethod
    def derivatives(
        theta1: torch.Tensor,
        theta2: torch.Tensor,
        dtheta1: torch.Tensor,
        dtheta2: torch.Tensor,
        torque: torch.Tensor,
        params: AcrobotParams,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Time derivatives of ``(theta1, theta2, dtheta1, dtheta2)``: the "book" equations.

        With ``d1 = m1 lc1^2 + m2 (l1^2 + lc2^2 + 2 l1 lc2 cos t2) + I1 + I2``,
        ``d2 = m2 (lc2^2 + l1 lc2 cos t2) + I2``, ``phi2 = m2 lc2 g cos(t1 + t2 - pi/2)`` and
        ``phi1 = -m2 l1 lc2 dt2^2 sin t2 - 2 m2 l1 lc2 dt2 dt1 sin t2 + (m1 lc1 + m2 l1) g cos(t1 - pi/2) + phi2``::

            ddt2 = (a + d2/d1 phi1 - m2 l1 lc2 dt1^2 sin t2 - phi2) / (m2 lc2^2 + I2 - d2^2/d1)
            ddt1 = -(d2 ddt2 + phi1) / d1

        Args:
            theta1, theta2, dtheta1, dtheta2: float32 ``[B]``.
            torque: float32 ``[B]``, the applied torque ``a``.
            params: :class:`AcrobotParams`.

        Returns:
            ``(dtheta1, dtheta2, ddtheta1, ddtheta2)``, each float32 ``[B]``.
        """
        p = params
        m1, m2, l1 = p.link_mass_1, p.link_mass_2, p.link_length_1
        lc1, lc2, i1, i2, g = p.link_com_pos_1, p.link_com_pos_2, p.link_moi, p.link_moi, p.gravity
        cos2, sin2 = torch.cos(theta2), torch.sin(theta2)
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos2) + i1 + i2
        d2 = m2 * (lc2**2 + l1 * lc2 * cos2) + i2
        # gymnasium's cos(x - pi/2) forms (= sin x) are kept so the rounding matches its code.
        phi2 = m2 * lc2 * g * torch.cos(theta1 + theta2 - math.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * sin2
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
            + (m1 * lc1 + m2 * l1) * g * torch.cos(theta1 - math.pi / 2)
            + phi2
        )
        ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * sin2 - phi2) / (
            m2 * lc2**2 + i2 - d2**2 / d1
        )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return dtheta1, dtheta2, ddtheta1, ddtheta2

    def dynamics(self, state: AcrobotState, action: torch.Tensor, params: AcrobotParams) -> AcrobotState:
        """One RK4 step of length ``dt``, then wrap the angles and clip the velocities.

        ``y' = y + dt/6 (k1 + 2 k2 + 2 k3 + k4)`` with ``k1 = f(y)``, ``k2 = f(y + dt/2 k1)``,
        ``k3 = f(y + dt/2 k2)``, ``k4 = f(y + dt k3)``; the torque is held constant. No reset, no
        time limit (``time`` is incremented).

        Args:
            state: :class:`AcrobotState` ``[B]``.
            action: int64 ``[B]`` in ``{0, 1, 2}``.
            params: :class:`AcrobotParams`.

        Returns:
            The next :class:`AcrobotState`.
        """
        torque = (action - 1).to(state.theta1.dtype)  # gymnasium's AVAIL_TORQUE = [-1, 0, +1]
        dt = params.dt
        y = (state.theta1, state.theta2, state.dtheta1, state.dtheta2)

        def f(z):
            return self.derivatives(*z, torque, params)

        k1 = f(y)
        k2 = f(tuple(yi + dt / 2.0 * ki for yi, ki in zip(y, k1)))
        k3 = f(tuple(yi + dt / 2.0 * ki for yi, ki in zip(y, k2)))
        k4 = f(tuple(yi + dt * ki for yi, ki in zip(y, k3)))
        t1, t2, v1, v2 = (
            yi + dt / 6.0 * (a + 2 * b + 2 * c + d) for yi, a, b, c, d in zip(y, k1, k2, k3, k4)
        )
        return AcrobotState(
            theta1=_wrap(t1, -math.pi, math.pi),
            theta2=_wrap(t2, -math.pi, math.pi),
            dtheta1=torch.clamp(v1, -params.max_vel_1, params.max_vel_1),
            dtheta2=torch.clamp(v2, -params.max_vel_2, params.max_vel_2),
            time=state.time + 1,
        )

    def step_env(
        self, state: AcrobotState, action: torch.Tensor, params: AcrobotParams
    ) -> tuple[AcrobotState, torch.Tensor, torch.Tensor]:
        """:meth:`dynamics`, then termination at the goal height and reward ``0`` there, else ``-1``.

        Args:
            state: :class:`AcrobotState` ``[B]``.
            action: int64 ``[B]`` in ``{0, 1, 2}``.
            params: :class:`AcrobotParams`.

        Returns:
            ``(next_state, reward float32 [B], terminated bool [B])``; ``terminated`` where
            ``-cos(theta1) - cos(theta1 + theta2) > 1``.

        >>> s = AcrobotState(torch.tensor([3.0, 0.0]), *torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))
        >>> _, reward, terminated = Acrobot().step_env(s, torch.tensor([1, 1]), AcrobotParams())
        >>> reward, terminated
        (tensor([ 0., -1.]), tensor([ True, False]))
        """
        nxt = self.dynamics(state, action, params)
        terminated = -torch.cos(nxt.theta1) - torch.cos(nxt.theta2 + nxt.theta1) > 1.0
        reward = torch.where(terminated, 0.0, -1.0).to(nxt.theta1.dtype)
        return nxt, reward, terminated


register("Acrobot-v1", Acrobot)
