"""MountainCar-v0 and MountainCarContinuous-v0 as pure, batched environments.

Dynamics, constants, termination and rewards follow gymnasium's
``gymnasium/envs/classic_control/mountain_car.py`` (Moore 1990) and
``gymnasium/envs/classic_control/continuous_mountain_car.py``, with the ``TimeLimit(200)``
and ``TimeLimit(999)`` wrappers folded in as truncation. Both share one update::

    velocity <- clip(velocity + accel * force - gravity * cos(3 position), -max_speed, max_speed)
    position <- clip(position + velocity, min_position, max_position)
    velocity <- 0                      if position == min_position and velocity < 0
    terminated = position >= goal_position and velocity >= goal_velocity

where ``accel = action - 1`` for the discrete car (actions ``{0, 1, 2}``) and
``accel = clip(action, -1, 1)`` for the continuous one.

Rewards: the discrete car pays ``-1`` per step. The continuous car pays
``100 * terminated - 0.1 * action^2``; as in gymnasium the action penalty uses the action
*before* clipping (an action of 3 costs 0.9 although it pushes like 1).

Example:
    >>> import functional_rl.kernel.random as jr
    >>> env = MountainCar()
    >>> params = env.default_params()
    >>> obs, s = env.reset(jr.key(0), params, num_envs=2)
    >>> obs.shape, obs[:, 1].tolist()
    (torch.Size([2, 2]), [0.0, 0.0])
    >>> out = env.step(jr.key(1), s, torch.tensor([0, 2]), params)
    >>> out.reward.tolist(), out.terminated.tolist()
    ([-1.0, -1.0], [False, False])
    >>> cenv = MountainCarContinuous()
    >>> obs, s = cenv.reset(jr.key(0), cenv.default_params(), num_envs=2)
    >>> out = cenv.step(jr.key(1), s, torch.tensor([[0.5], [-2.0]]), cenv.default_params())
    >>> [round(x, 6) for x in out.reward.tolist()]  # -0.1 * a^2, the unclipped action
    [-0.025, -0.4]
"""

from __future__ import annotations

import torch

import functional_rl.kernel.random as jr
from functional_rl.envs.base import Box, Discrete, Environment, register
from functional_rl.kernel.struct import pytree_dataclass

__all__ = ["MountainCar", "MountainCarContinuous", "MountainCarParams", "MountainCarState"]


@pytree_dataclass
class MountainCarParams:
    """Constants of both cars (MountainCar-v0's defaults). Floats or tensors broadcastable to ``[B]``.

    ``MountainCarContinuous.default_params()`` changes ``force`` (gymnasium's ``power``),
    ``goal_position`` and ``max_steps``.

    Example:
        >>> MountainCar().default_params().goal_position, MountainCarContinuous().default_params().goal_position
        (0.5, 0.45)
    """

    min_position: float | torch.Tensor = -1.2
    max_position: float | torch.Tensor = 0.6
    max_speed: float | torch.Tensor = 0.07
    goal_position: float | torch.Tensor = 0.5
    goal_velocity: float | torch.Tensor = 0.0
    force: float | torch.Tensor = 0.001  # velocity change per unit of push (continuous: `power`)
    gravity: float | torch.Tensor = 0.0025
    max_steps: int | torch.Tensor = 200


@pytree_dataclass
class MountainCarState:
    """Per-env ``position`` and ``velocity``, float32 ``[B]``; step count ``time`` int64 ``[B]``.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> env = MountainCar()
        >>> _, s = env.reset(jr.key(0), env.default_params(), 3)
        >>> s.position.shape, s.velocity, s.time
        (torch.Size([3]), tensor([0., 0., 0.]), tensor([0, 0, 0]))
        >>> bool(((s.position >= -0.6) & (s.position < -0.4)).all())
        True
    """

    position: torch.Tensor
    velocity: torch.Tensor
    time: torch.Tensor


def _dynamics(
    state: MountainCarState, accel: torch.Tensor, params: MountainCarParams
) -> tuple[MountainCarState, torch.Tensor]:
    """The shared car update (module docstring); returns the next state and ``terminated`` bool ``[B]``."""
    p = params
    velocity = state.velocity + accel * p.force - p.gravity * torch.cos(3 * state.position)
    velocity = torch.clamp(velocity, -p.max_speed, p.max_speed)
    position = torch.clamp(state.position + velocity, p.min_position, p.max_position)
    # The left wall is inelastic: the car stops there.
    velocity = torch.where((position == p.min_position) & (velocity < 0), torch.zeros_like(velocity), velocity)
    terminated = (position >= p.goal_position) & (velocity >= p.goal_velocity)
    return MountainCarState(position, velocity, state.time + 1), terminated


class _Car(Environment):
    """What both cars share: the observation space, ``reset_env`` and ``get_obs``."""

    observation_space = Box(low=(-1.2, -0.07), high=(0.6, 0.07), shape=(2,))

    def reset_env(self, keys: torch.Tensor, params: MountainCarParams) -> MountainCarState:
        """Fresh states: position uniform in ``[-0.6, -0.4)``, velocity 0, ``time = 0``.

        Args:
            keys: int64 ``[B, 2]``, one PRNG key per env.
            params: :class:`MountainCarParams` (unused by the reset distribution).

        Returns:
            A :class:`MountainCarState` ``[B]``.

        >>> import functional_rl.kernel.random as jr
        >>> s = MountainCar().reset_env(jr.split(jr.key(0), 2), MountainCarParams())
        >>> bool(((s.position >= -0.6) & (s.position < -0.4)).all()), s.velocity, s.time
        (True, tensor([0., 0.]), tensor([0, 0]))
        """
        position = jr.uniform(keys, (), low=-0.6, high=-0.4)
        time = torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device)
        return MountainCarState(position, torch.zeros_like(position), time)

    def get_obs(self, state: MountainCarState, params: MountainCarParams) -> torch.Tensor:
        """float32 ``[B, 2]``: ``(position, velocity)``.

        >>> s = MountainCarState(torch.tensor([-0.5]), torch.tensor([0.01]), torch.tensor([0]))
        >>> MountainCar().get_obs(s, MountainCarParams())
        tensor([[-0.5000,  0.0100]])
        """
        return torch.stack([state.position, state.velocity], dim=-1)


class MountainCar(_Car):
    """Drive an under-powered car up the right hill (MountainCar-v0); reward -1 per step; 200-step limit.

    Observation float32 ``[B, 2]``: ``(position, velocity)``. Action int64 ``[B]`` in
    ``{0, 1, 2}``: push left, no push, push right. ``reset`` and the auto-resetting ``step``
    come from :class:`~functional_rl.envs.base.Environment`.

    Example (reset 3 envs, push left once):
        >>> import functional_rl.kernel.random as jr
        >>> env = MountainCar()
        >>> params = env.default_params()
        >>> obs, state = env.reset(jr.key(0), params, 3)
        >>> obs.shape, env.action_space.n
        (torch.Size([3, 2]), 3)
        >>> out = env.step(jr.key(1), state, torch.zeros(3, dtype=torch.int64), params)
        >>> out.obs.shape, out.reward, out.terminated, out.truncated
        (torch.Size([3, 2]), tensor([-1., -1., -1.]), tensor([False, False, False]), tensor([False, False, False]))
    """

    id = "MountainCar-v0"
    action_space = Discrete(3)

    def default_params(self) -> MountainCarParams:
        """gymnasium's MountainCar-v0 constants."""
        return MountainCarParams()

    def step_env(
        self, state: MountainCarState, action: torch.Tensor, params: MountainCarParams
    ) -> tuple[MountainCarState, torch.Tensor, torch.Tensor]:
        """The car update with push ``action - 1``; reward ``-1``; termination at the goal.

        Args:
            state: :class:`MountainCarState` ``[B]``.
            action: int64 ``[B]`` in ``{0, 1, 2}``.
            params: :class:`MountainCarParams`.

        Returns:
            ``(next_state, reward float32 [B] (always -1), terminated bool [B])``.

        >>> s = MountainCarState(torch.tensor([0.49, -0.5]), torch.tensor([0.05, 0.0]), torch.tensor([0, 0]))
        >>> _, reward, terminated = MountainCar().step_env(s, torch.tensor([2, 1]), MountainCarParams())
        >>> reward, terminated
        (tensor([-1., -1.]), tensor([ True, False]))
        """
        accel = (action - 1).to(state.position.dtype)
        nxt, terminated = _dynamics(state, accel, params)
        return nxt, torch.full_like(nxt.position, -1.0), terminated


class MountainCarContinuous(_Car):
    """The mountain car with a continuous push (MountainCarContinuous-v0); 999-step limit.

    Observation float32 ``[B, 2]``: ``(position, velocity)``. Action float32 ``[B, 1]``, the
    push, clipped to ``[-1, 1]`` by the env. Reward ``100`` on reaching ``position >= 0.45``
    (terminal) minus ``0.1 * action^2`` (unclipped action, as gymnasium). ``reset`` and the
    auto-resetting ``step`` come from :class:`~functional_rl.envs.base.Environment`.

    Example (actions are float ``[B, 1]``; zero force costs nothing):
        >>> import functional_rl.kernel.random as jr
        >>> env = MountainCarContinuous()
        >>> params = env.default_params()
        >>> obs, state = env.reset(jr.key(0), params, 3)
        >>> obs.shape, env.action_space.shape
        (torch.Size([3, 2]), (1,))
        >>> out = env.step(jr.key(1), state, torch.zeros(3, 1), params)
        >>> out.obs.shape, out.reward, out.terminated
        (torch.Size([3, 2]), tensor([0., 0., 0.]), tensor([False, False, False]))
    """

    id = "MountainCarContinuous-v0"
    action_space = Box(low=(-1.0,), high=(1.0,), shape=(1,))

    def default_params(self) -> MountainCarParams:
        """gymnasium's MountainCarContinuous-v0 constants: ``power = 0.0015``, goal at 0.45, 999 steps."""
        return MountainCarParams(force=0.0015, goal_position=0.45, max_steps=999)

    def step_env(
        self, state: MountainCarState, action: torch.Tensor, params: MountainCarParams
    ) -> tuple[MountainCarState, torch.Tensor, torch.Tensor]:
        """The car update with push ``clip(action, -1, 1)``; reward ``100 * terminated - 0.1 * action^2``.

        Args:
            state: :class:`MountainCarState` ``[B]``.
            action: float32 ``[B, 1]``, any real value (clipped to ``[-1, 1]`` for the push; the
                penalty uses the unclipped value, as gymnasium).
            params: :class:`MountainCarParams`.

        Returns:
            ``(next_state, reward float32 [B], terminated bool [B])``.

        >>> env = MountainCarContinuous()
        >>> s = MountainCarState(torch.tensor([0.44, -0.5]), torch.tensor([0.05, 0.0]), torch.tensor([0, 0]))
        >>> _, reward, terminated = env.step_env(s, torch.tensor([[1.0], [-2.0]]), env.default_params())
        >>> reward, terminated
        (tensor([99.9000, -0.4000]), tensor([ True, False]))
        """
        a = action[:, 0].to(state.position.dtype)
        nxt, terminated = _dynamics(state, torch.clamp(a, -1.0, 1.0), params)
        reward = 100.0 * terminated.to(a.dtype) - 0.1 * a**2
        return nxt, reward, terminated


register("MountainCar-v0", MountainCar)
register("MountainCarContinuous-v0", MountainCarContinuous)
