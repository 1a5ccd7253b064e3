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
episode ends by *termination*, so ``info["final_obs"]`` is never bootstrapped from; it is the
last observation of the episode, repeated (there is no state after the terminal one).

Example:
    >>> import functional_rl.kernel.random as jr
    >>> env = Probe4()
    >>> obs, s = env.reset(jr.key(0), env.default_params(), num_envs=2)
    >>> obs.tolist()
    [[0.0], [0.0]]
    >>> obs, s, r, term, trunc, info = env.step(jr.key(1), s, torch.tensor([0, 1]), env.default_params())
    >>> r.tolist(), term.tolist(), trunc.tolist()
    ([-1.0, 1.0], [True, True], [False, False])
"""

from __future__ import annotations

import torch
import torch.utils._pytree as pytree

import functional_rl.kernel.random as jr
from functional_rl.envs.base import Box, Discrete, EnvStep, env_keys, register
from functional_rl.kernel.struct import pytree_dataclass

__all__ = ["Probe1", "Probe2", "Probe3", "Probe4", "Probe5", "ProbeParams", "ProbeState"]

_OBS_SPACE = Box(low=(-1.0,), high=(1.0,), shape=(1,))

StepResult = tuple[torch.Tensor, "ProbeState", torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


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


def _fixed_reset(key: torch.Tensor, num_envs: int, value: float) -> tuple[torch.Tensor, ProbeState]:
    """Every env starts at observation ``value``."""
    obs = torch.full((num_envs,), value, dtype=torch.float32, device=key.device)
    # The returned obs is a copy, not a view of the state: a scan carry must not alias itself.
    return obs[:, None].clone(), ProbeState(obs, torch.zeros(num_envs, dtype=torch.int64, device=key.device))


def _sign_reset(key: torch.Tensor, num_envs: int) -> tuple[torch.Tensor, ProbeState]:
    """Every env starts at observation ``-1`` or ``+1`` with probability 1/2 each."""
    obs = torch.where(jr.uniform(env_keys(key, num_envs), ()) < 0.5, -1.0, 1.0).to(torch.float32)
    return obs[:, None].clone(), ProbeState(obs, torch.zeros(num_envs, dtype=torch.int64, device=key.device))


def _check_action(name: str, state: ProbeState, action: torch.Tensor) -> None:
    if action.shape != state.obs.shape:
        raise ValueError(f"{name}.step: action must have shape [B]=({state.obs.shape[0]},), got {tuple(action.shape)}")


def _finish(
    nxt: ProbeState, terminated: torch.Tensor, reset: tuple[torch.Tensor, ProbeState]
) -> tuple[torch.Tensor, ProbeState, torch.Tensor, dict[str, torch.Tensor]]:
    """Auto-reset the terminated envs; returns ``(obs, state, truncated, info)``."""
    reset_obs, reset_state = reset
    final_obs = nxt.obs[:, None].clone()  # never a view of the caller's state
    new_state = pytree.tree_map(lambda r, n: torch.where(terminated, r, n), reset_state, nxt)
    obs = torch.where(terminated[:, None], reset_obs, final_obs)
    return obs, new_state, torch.zeros_like(terminated), final_obs


class _OneStepProbe:
    """Shared mechanics of the one-step probes: start at a fixed or random observation, pay
    ``reward(obs, action)``, terminate, auto-reset. Subclasses set the class attributes and
    ``reward``."""

    id: str
    observation_space = _OBS_SPACE
    action_space: Discrete
    random_start: bool = False

    def default_params(self) -> ProbeParams:
        """No parameters."""
        return ProbeParams()

    def reset(self, key: torch.Tensor, params: ProbeParams, num_envs: int) -> tuple[torch.Tensor, ProbeState]:
        """Observation ``0``, or ``-1``/``+1`` with probability 1/2 each for the random-start
        probes. Returns ``(obs float32 [B, 1], state)``."""
        return _sign_reset(key, num_envs) if self.random_start else _fixed_reset(key, num_envs, 0.0)

    def reward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """float32 ``[B]`` reward of ``action`` int64 ``[B]`` at observation ``obs`` float32 ``[B]``."""
        raise NotImplementedError

    def step(self, key: torch.Tensor, state: ProbeState, action: torch.Tensor, params: ProbeParams) -> StepResult:
        """Pay :meth:`reward`, terminate, auto-reset. ``action``: int64 ``[B]``. Shapes as
        :mod:`functional_rl.envs.base`."""
        _check_action(type(self).__name__, state, action)
        terminated = torch.ones_like(state.obs, dtype=torch.bool)
        reward = self.reward(state.obs, action)
        reset = self.reset(key, params, state.obs.shape[0])
        obs, new_state, truncated, final_obs = _finish(state.replace(time=state.time + 1), terminated, reset)
        return EnvStep(obs, new_state, reward, terminated, truncated, final_obs)


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
        >>> obs, state, reward, terminated, truncated, info = env.step(jr.key(1), state, torch.zeros(3, dtype=torch.int64), params)
        >>> reward, terminated
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
        >>> obs, state, reward, terminated, truncated, info = env.step(jr.key(1), state, torch.zeros(3, dtype=torch.int64), params)
        >>> bool(torch.equal(reward, first)), terminated
        (True, tensor([True, True, True]))
    """

    id = "Probe2-v0"
    action_space = Discrete(1)
    random_start = True

    def reward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The observation itself."""
        return obs.clone()


class Probe3:
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
        >>> obs, state, reward, terminated, truncated, info = env.step(jr.key(1), state, torch.zeros(3, dtype=torch.int64), params)
        >>> reward, terminated
        (tensor([0., 0., 0.]), tensor([False, False, False]))
    """

    id = "Probe3-v0"
    observation_space = _OBS_SPACE
    action_space = Discrete(1)

    def default_params(self) -> ProbeParams:
        """No parameters."""
        return ProbeParams()

    def reset(self, key: torch.Tensor, params: ProbeParams, num_envs: int) -> tuple[torch.Tensor, ProbeState]:
        """Observation ``0``. Returns ``(obs float32 [B, 1], state)``."""
        return _fixed_reset(key, num_envs, 0.0)

    def step(self, key: torch.Tensor, state: ProbeState, action: torch.Tensor, params: ProbeParams) -> StepResult:
        """From ``0``: reward 0, next observation 1. From ``1``: reward +1, terminated.

        ``action``: int64 ``[B]`` (always 0). Shapes as :mod:`functional_rl.envs.base`.
        """
        _check_action("Probe3", state, action)
        terminated = state.time >= 1
        reward = terminated.to(torch.float32)
        # The observation counts the steps taken; at termination it stays 1 (the last obs).
        nxt = ProbeState(torch.where(terminated, state.obs, state.obs + 1.0), state.time + 1)
        reset = self.reset(key, params, state.obs.shape[0])
        obs, new_state, truncated, final_obs = _finish(nxt, terminated, reset)
        return EnvStep(obs, new_state, reward, terminated, truncated, final_obs)


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
        >>> obs, state, reward, terminated, truncated, info = env.step(jr.key(1), state, torch.tensor([0, 1, 1]), params)
        >>> reward, terminated
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
        >>> obs, state, reward, terminated, truncated, info = env.step(jr.key(1), state, action, params)
        >>> reward, terminated
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
