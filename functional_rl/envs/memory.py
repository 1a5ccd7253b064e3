"""Partially observed tasks, pure and batched: what a policy without memory cannot solve.

* ``CartPoleNoVelocity-v1``: CartPole-v1 (same dynamics, reward, limits) observing only the
  cart position and the pole angle, ``(x, theta)``; the velocities must be inferred from
  successive observations (the "velocity-masked" CartPole of the POMDP literature, e.g. Meng
  et al. 2021, "Memory-based Deep RL for POMDPs"; Morad et al. 2023, POPGym).
* ``MemoryCue-v0``: the first observation of an episode shows a cue ``+1`` or ``-1``; the
  following ``length - 1`` observations show nothing of it; at the last step the action
  that matches the cue pays ``+1`` and the other ``-1`` (a T-maze-style memory probe, Bakker
  2001). A memoryless policy sees the same observation at the last step whatever the cue,
  so its best expected return is 0; a policy that remembers earns 1.

Example:
    >>> import functional_rl.kernel.random as jr
    >>> env = CartPoleNoVelocity()
    >>> obs, state = env.reset(jr.key(0), env.default_params(), num_envs=3)
    >>> obs.shape, env.observation_space.shape
    (torch.Size([3, 2]), (2,))
"""

from __future__ import annotations

import torch

import functional_rl.kernel.random as jr
from functional_rl.envs.base import Box, Discrete, Environment, register
from functional_rl.envs.cartpole import CartPole, CartPoleState
from functional_rl.kernel.struct import pytree_dataclass

__all__ = ["CartPoleNoVelocity", "MemoryCue", "MemoryCueParams", "MemoryCueState"]


class CartPoleNoVelocity(CartPole):
    """CartPole-v1 observing ``(x, theta)`` only: float32 ``[B, 2]``. Everything else
    (dynamics, reward 1 per step, termination, the 500-step limit, parameters) is
    :class:`~functional_rl.envs.cartpole.CartPole`'s.

    Example:
        >>> s = CartPoleState(*torch.eye(4), torch.zeros(4, dtype=torch.int64))
        >>> CartPoleNoVelocity().get_obs(s, None)  # rows: x, x_dot, theta, theta_dot set to 1
        tensor([[1., 0.],
                [0., 0.],
                [0., 1.],
                [0., 0.]])
    """

    id = "CartPoleNoVelocity-v1"
    observation_space = Box(low=(-4.8, -0.41887903), high=(4.8, 0.41887903), shape=(2,))

    def get_obs(self, state: CartPoleState, params) -> torch.Tensor:
        """float32 ``[B, 2]``: ``(x, theta)``."""
        return torch.stack([state.x, state.theta], dim=-1)


@pytree_dataclass
class MemoryCueParams:
    """``length``: steps per episode (the cue is shown at step 0, the choice pays at step
    ``length - 1``); at least 1.

    Example:
        >>> MemoryCue().default_params().length
        8
    """

    length: int = 8


@pytree_dataclass
class MemoryCueState:
    """The episode's cue ``cue`` float32 ``[B]`` (``+1`` or ``-1``) and the step ``time``
    int64 ``[B]``.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> _, s = MemoryCue().reset(jr.key(0), MemoryCueParams(), 4)
        >>> s.cue.abs().tolist(), s.time.tolist()
        ([1.0, 1.0, 1.0, 1.0], [0, 0, 0, 0])
    """

    cue: torch.Tensor
    time: torch.Tensor


class MemoryCue(Environment):
    """Remember the first observation's sign until the last step of the episode.

    Observation float32 ``[B, 2]``: ``(cue if time == 0 else 0, 1 if time == length - 1 else
    0)``. Action int64 ``[B]`` in ``{0, 1}``: ``1`` bets the cue was ``+1``. Reward 0 except
    at the last step: ``+1`` if ``action == (cue > 0)``, else ``-1``; the episode then
    terminates (it never truncates). Optimal return 1; without memory, 0 at best.

    Example (length 2: the cue, then the choice):
        >>> import functional_rl.kernel.random as jr
        >>> env, params = MemoryCue(), MemoryCueParams(length=2)
        >>> obs, s = env.reset(jr.key(3), params, 2)
        >>> obs[:, 1].tolist(), bool((obs[:, 0].abs() == 1).all())
        ([0.0, 0.0], True)
        >>> out = env.step(jr.key(4), s, torch.tensor([0, 0]), params)  # nothing pays yet
        >>> out.reward.tolist(), out.terminated.tolist(), out.obs.tolist()
        ([0.0, 0.0], [False, False], [[0.0, 1.0], [0.0, 1.0]])
        >>> bet = (s.cue > 0).long()  # the right choice
        >>> last = env.step(jr.key(5), out.state, bet, params)
        >>> last.reward.tolist(), last.terminated.tolist()
        ([1.0, 1.0], [True, True])
    """

    id = "MemoryCue-v0"
    observation_space = Box(low=(-1.0, 0.0), high=(1.0, 1.0), shape=(2,))
    action_space = Discrete(2)

    def default_params(self) -> MemoryCueParams:
        """Episodes of 8 steps."""
        return MemoryCueParams()

    def reset_env(self, keys: torch.Tensor, params: MemoryCueParams) -> MemoryCueState:
        """Cue ``+1`` or ``-1`` with probability 1/2 each, env ``b`` from ``keys[b]`` (int64
        ``[B, 2]``); ``time`` 0."""
        cue = torch.where(jr.uniform(keys, ()) < 0.5, -1.0, 1.0).to(torch.float32)
        return MemoryCueState(cue, torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device))

    def step_env(self, state: MemoryCueState, action: torch.Tensor, params: MemoryCueParams):
        """``(next_state, reward float32 [B], terminated bool [B])``: the choice at the last
        step pays ``+-1`` and ends the episode."""
        last = state.time >= params.length - 1
        right = action == (state.cue > 0).to(action.dtype)
        reward = torch.where(last, torch.where(right, 1.0, -1.0), 0.0).to(torch.float32)
        return MemoryCueState(state.cue.clone(), state.time + 1), reward, last

    def get_obs(self, state: MemoryCueState, params: MemoryCueParams) -> torch.Tensor:
        """float32 ``[B, 2]``: the cue at step 0 (else 0), and a flag at the last step."""
        cue = torch.where(state.time == 0, state.cue, 0.0)
        flag = (state.time == params.length - 1).to(torch.float32)
        return torch.stack([cue, flag], dim=-1)

    def truncation(self, state: MemoryCueState, params: MemoryCueParams) -> torch.Tensor:
        """Never: bool ``[B]`` all ``False`` (every episode ends by termination)."""
        return torch.zeros_like(state.time, dtype=torch.bool)


register("CartPoleNoVelocity-v1", CartPoleNoVelocity)
register("MemoryCue-v0", MemoryCue)
