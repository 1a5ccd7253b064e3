"""The five standard probe environments, pure and batched.

Tiny environments whose value function or optimal policy is known in closed form, each
isolating one part of an RL agent so a failure points at its cause (Andy Jones, "Debugging
RL, Without the Agonizing Pain", 2021; also used by CleanRL's and SB3's test suites). There
is no gymnasium original; they follow the same contract as the classic-control ports
(for example ``gymnasium/envs/classic_control/cartpole.py`` → :mod:`functional_rl.envs.cartpole`).

======  =====================  =======  ===========================  ==========================
id      observation            actions  reward                       known answer
======  =====================  =======  ===========================  ==========================
Probe1  ``0``                  1        ``+1``, 1 step               ``V = 1``: value loss/optimiser
Probe2  ``±1`` (random)        1        ``obs``, 1 step              ``V(o) = o``: value sees obs
Probe3  ``0`` then ``1``       1        ``0`` then ``+1``, 2 steps   ``V(0) = gamma, V(1) = 1``: discounting
Probe4  ``0``                  2        ``+1`` if ``a = 1`` else -1  ``pi(1) = 1``: policy gradient
Probe5  ``±1`` (random)        2        ``+1`` if ``a = (o > 0)``    ``pi(o) = (o > 0)``: policy sees obs
======  =====================  =======  ===========================  ==========================

Observations are float32 ``[B, 1]``; actions int64 ``[B]``; episodes never truncate. Every
episode ends by *termination*, so ``final_obs`` is never bootstrapped from; it is the
last observation of the episode, repeated (there is no state after the terminal one).

Example:
    >>> import functional_rl.kernel.random as jr
    >>> env = Probe4()
    >>> obs, s = env.reset(jr.key(0), env.default_params(), num_envs=2)
    >>> obs.tolist()
    [[0.0], [0.0]]
    >>> out = env.step(jr.key(1), s, torch.tensor([0, 1]), env.default_params())
    >>> out.reward.tolist(), out.terminated.tolist(), out.truncated.tolist()
    ([-1.0, 1.0], [True, True], [False, False])
"""

from __future__ import annotations

import torch

import functional_rl.kernel.random as jr
from functional_rl.envs.base import Box, Discrete, Environment, register
from functional_rl.kernel.struct import pytree_dataclass

__all__ = ["Probe1", "Probe2", "Probe3", "Probe4", "Probe5", "ProbeParams", "ProbeState"]

_OBS_SPACE = Box(low=(-1.0,), high=(1.0,), shape=(1,))


@pytree_dataclass
class ProbeParams:
    """The probes have no parameters; this empty pytree keeps the ``(key, state, action, params)`` contract.

    Example:
        >>> import torch.utils._pytree as pytree
        >>> pytree.tree_leaves(Probe1().default_params())
        []
    """


@pytree_dataclass
class ProbeState:
    """Per-env observation value ``obs`` float32 ``[B]`` and step within the episode ``time`` int64 ``[B]``.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> env = Probe3()
        >>> _, s = env.reset(jr.key(0), env.default_params(), 2)
        >>> s.obs, s.time
        (tensor([0., 0.]), tensor([0, 0]))
    """

    obs: torch.Tensor
    time: torch.Tensor


class _Probe(Environment):
    """What every probe shares: observation ``state.obs`` as ``[B, 1]``, no parameters, no time limit."""

    observation_space = _OBS_SPACE

    def default_params(self) -> ProbeParams:
        """No parameters."""
        return ProbeParams()

    def get_obs(self, state: ProbeState, params: ProbeParams) -> torch.Tensor:
        """float32 ``[B, 1]``: ``state.obs`` as a column, a copy (never a view of the state:
        a scan carry must not alias itself, and a step's outputs must not alias its inputs)."""
        return state.obs[:, None].clone()

    def truncation(self, state: ProbeState, params: ProbeParams) -> torch.Tensor:
        """Never: bool ``[B]`` all ``False`` (every episode ends by termination)."""
        return torch.zeros_like(state.time, dtype=torch.bool)


def _fixed_start(keys: torch.Tensor, value: float) -> ProbeState:
    """Every env starts at observation ``value`` (``keys`` int64 ``[B, 2]`` give ``B`` and the device)."""
    obs = torch.full((keys.shape[0],), value, dtype=torch.float32, device=keys.device)
    return ProbeState(obs, torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device))


def _sign_start(keys: torch.Tensor) -> ProbeState:
    """Every env starts at observation ``-1`` or ``+1`` with probability 1/2 each, env ``b`` from ``keys[b]``."""
    obs = torch.where(jr.uniform(keys, ()) < 0.5, -1.0, 1.0).to(torch.float32)
    return ProbeState(obs, torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device))


class _OneStepProbe(_Probe):
    """Shared mechanics of the one-step probes: start at a fixed or random observation, pay
    ``reward(obs, action)``, terminate. Subclasses set the class attributes and ``reward``."""

    id: str
    action_space: Discrete
    random_start: bool = False

    def reset_env(self, keys: torch.Tensor, params: ProbeParams) -> ProbeState:
        """Observation ``0``, or ``-1``/``+1`` with probability 1/2 each for the random-start
        probes; ``keys`` int64 ``[B, 2]``. Returns a :class:`ProbeState` ``[B]``."""
        return _sign_start(keys) if self.random_start else _fixed_start(keys, 0.0)

    def reward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """float32 ``[B]`` reward of ``action`` int64 ``[B]`` at observation ``obs`` float32 ``[B]``."""
        raise NotImplementedError

    def step_env(
        self, state: ProbeState, action: torch.Tensor, params: ProbeParams
    ) -> tuple[ProbeState, torch.Tensor, torch.Tensor]:
        """Pay :meth:`reward` and terminate. ``action``: int64 ``[B]``.

        Returns:
            ``(next_state, reward float32 [B], terminated bool [B] all True)``; the next state
            keeps the observation (the terminal one) and counts the step.
        """
        terminated = torch.ones_like(state.obs, dtype=torch.bool)
        return state.replace(time=state.time + 1), self.reward(state.obs, action), terminated


class Probe1(_OneStepProbe):
    """Constant observation ``0``, one action, reward ``+1``, one-step episodes.

    Known answer: ``V(0) = 1`` for every discount. An agent whose value does not reach 1
    has a broken value loss or optimiser.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> env = Probe1()
        >>> params = env.default_params()
        >>> obs, state = env.reset(jr.key(0), params, 3)
        >>> obs.shape, env.action_space.n
        (torch.Size([3, 1]), 1)
        >>> out = env.step(jr.key(1), state, torch.zeros(3, dtype=torch.int64), params)
        >>> out.reward, out.terminated
        (tensor([1., 1., 1.]), tensor([True, True, True]))
    """

    id = "Probe1-v0"
    action_space = Discrete(1)

    def reward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Always ``+1``."""
        return torch.ones_like(obs)


class Probe2(_OneStepProbe):
    """Random observation ``o`` in ``{-1, +1}``, one action, reward ``o``, one-step episodes.

    Known answer: ``V(o) = o``. A value that is 0 for both observations cannot see its input
    (wrong observation plumbing, or no gradient through it).

    Example (the reward equals the starting observation):
        >>> import functional_rl.kernel.random as jr
        >>> env = Probe2()
        >>> params = env.default_params()
        >>> obs, state = env.reset(jr.key(0), params, 3)
        >>> obs.shape, env.action_space.n
        (torch.Size([3, 1]), 1)
        >>> first = obs[:, 0]
        >>> out = env.step(jr.key(1), state, torch.zeros(3, dtype=torch.int64), params)
        >>> bool(torch.equal(out.reward, first)), out.terminated
        (True, tensor([True, True, True]))
    """

    id = "Probe2-v0"
    action_space = Discrete(1)
    random_start = True

    def reward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The observation itself."""
        return obs.clone()


class Probe3(_Probe):
    """Two-step episodes: observation ``0`` then ``1``; reward ``0`` then ``+1``; one action.

    Known answer, with discount ``gamma``: ``V(0) = gamma``, ``V(1) = 1``. Values that are both
    1 (or both ``gamma``) point at broken discounting or a bootstrap across the episode end.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> env = Probe3()
        >>> params = env.default_params()
        >>> obs, state = env.reset(jr.key(0), params, 3)
        >>> obs.shape, env.action_space.n
        (torch.Size([3, 1]), 1)
        >>> out = env.step(jr.key(1), state, torch.zeros(3, dtype=torch.int64), params)
        >>> out.reward, out.terminated
        (tensor([0., 0., 0.]), tensor([False, False, False]))
    """

    id = "Probe3-v0"
    action_space = Discrete(1)

    def reset_env(self, keys: torch.Tensor, params: ProbeParams) -> ProbeState:
        """Observation ``0``; ``keys`` int64 ``[B, 2]``. Returns a :class:`ProbeState` ``[B]``."""
        return _fixed_start(keys, 0.0)

    def step_env(
        self, state: ProbeState, action: torch.Tensor, params: ProbeParams
    ) -> tuple[ProbeState, torch.Tensor, torch.Tensor]:
        """From ``0``: reward 0, next observation 1. From ``1``: reward +1, terminated.

        ``action``: int64 ``[B]`` (always 0). Returns ``(next_state, reward float32 [B],
        terminated bool [B])``.
        """
        terminated = state.time >= 1
        reward = terminated.to(torch.float32)
        # The observation counts the steps taken; at termination it stays 1 (the last obs).
        nxt = ProbeState(torch.where(terminated, state.obs, state.obs + 1.0), state.time + 1)
        return nxt, reward, terminated


class Probe4(_OneStepProbe):
    """Observation ``0``, two actions, reward ``+1`` for action 1 and ``-1`` for action 0, one step.

    Known answer: the optimal policy always picks action 1 (``V* = 1``; a uniform policy has
    ``V = 0``). A policy that does not move there has a broken policy gradient.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> env = Probe4()
        >>> params = env.default_params()
        >>> obs, state = env.reset(jr.key(0), params, 3)
        >>> obs.shape, env.action_space.n
        (torch.Size([3, 1]), 2)
        >>> out = env.step(jr.key(1), state, torch.tensor([0, 1, 1]), params)
        >>> out.reward, out.terminated
        (tensor([-1.,  1.,  1.]), tensor([True, True, True]))
    """

    id = "Probe4-v0"
    action_space = Discrete(2)

    def reward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``+1`` for action 1, ``-1`` for action 0."""
        return torch.where(action == 1, 1.0, -1.0).to(torch.float32)


class Probe5(_OneStepProbe):
    """Random observation ``o`` in ``{-1, +1}``, two actions, reward ``+1`` if the action matches the sign.

    Action 1 matches ``+1`` and action 0 matches ``-1``; a mismatch pays ``-1``. One-step
    episodes. Known answer: the optimal policy is ``a = 1 if o > 0 else 0`` (``V* = 1`` for
    both observations). A policy that learns Probe4 but not this one ignores its input.

    Example (acting on the observation's sign always pays +1):
        >>> import functional_rl.kernel.random as jr
        >>> env = Probe5()
        >>> params = env.default_params()
        >>> obs, state = env.reset(jr.key(0), params, 3)
        >>> obs.shape, env.action_space.n
        (torch.Size([3, 1]), 2)
        >>> action = (obs[:, 0] > 0).long()  # int64 [B]
        >>> out = env.step(jr.key(1), state, action, params)
        >>> out.reward, out.terminated
        (tensor([1., 1., 1.]), tensor([True, True, True]))
    """

    id = "Probe5-v0"
    action_space = Discrete(2)
    random_start = True

    def reward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``+1`` if ``action == (obs > 0)`` else ``-1``."""
        return torch.where(action == (obs > 0).to(action.dtype), 1.0, -1.0).to(torch.float32)


register("Probe1-v0", Probe1)
register("Probe2-v0", Probe2)
register("Probe3-v0", Probe3)
register("Probe4-v0", Probe4)
register("Probe5-v0", Probe5)
