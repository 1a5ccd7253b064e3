"""MaskedChoice: a probe for action masks, pure and batched.

Every step a random subset of ``K`` actions is legal (each with probability 1/2, and at least
one: the action of the lowest draw is always legal). The observation is that legal set as
floats ``[B, K]``, and the env reports it as its action mask
(``action_mask(state, params) -> bool [B, K]``, see :mod:`functional_rl.kernel.rollout`).
Action ``a`` pays ``a / (K - 1)`` if legal and ``-1`` if not, so the best policy takes the
highest legal action; episodes last ``length`` steps and end by termination.

With masks, a policy only has to learn that higher actions pay more; an illegal action is never
taken. The best return with the defaults (``K = 4``, 8 steps) is ``8 * E[max legal] / 3``,
about 5.93; a uniformly random legal action scores about 4.0 (both measured over 100k draws).

Example:
    >>> import functional_rl.kernel.random as jr
    >>> env = MaskedChoice()
    >>> obs, s = env.reset(jr.key(0), env.default_params(), num_envs=3)
    >>> mask = env.action_mask(s, env.default_params())
    >>> mask.shape, bool(mask.any(-1).all()), bool(torch.equal(obs, mask.float()))
    (torch.Size([3, 4]), True, True)
    >>> best = torch.where(mask, torch.arange(4), -1).argmax(-1)  # the highest legal action
    >>> out = env.step(jr.key(1), s, best, env.default_params())
    >>> bool((out.reward == best / 3).all())
    True
"""

from __future__ import annotations

import torch

import functional_rl.kernel.random as jr
from functional_rl.envs.base import Box, Discrete, Environment, register
from functional_rl.kernel.struct import pytree_dataclass

__all__ = ["MaskedChoice", "MaskedChoiceParams", "MaskedChoiceState"]

ACTIONS = 4


@pytree_dataclass
class MaskedChoiceParams:
    """``length``: steps per episode (at least 1).

    Example:
        >>> MaskedChoice().default_params().length
        8
    """

    length: int = 8


@pytree_dataclass
class MaskedChoiceState:
    """Each env's key for its legal sets ``mask_key`` int64 ``[B, 2]`` (drawn at reset), the
    step ``time`` int64 ``[B]`` and this step's legal set ``legal`` bool ``[B, K]``, a draw
    from ``(mask_key, time)`` made once when the state is built (the observation, the action
    mask and the reward all read it).

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> _, s = MaskedChoice().reset(jr.key(0), MaskedChoiceParams(), 2)
        >>> s.mask_key.shape, s.time.tolist(), s.legal.shape
        (torch.Size([2, 2]), [0, 0], torch.Size([2, 4]))
    """

    mask_key: torch.Tensor
    time: torch.Tensor
    legal: torch.Tensor


def _legal(mask_key: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
    """bool ``[B, K]``: action ``a`` is legal where its draw ``u_a < 1/2``, or where it is the
    lowest draw (so one action always is)."""
    u = jr.uniform(jr.row_keys(mask_key, time), (ACTIONS,))  # [B, K]
    return (u < 0.5) | torch.nn.functional.one_hot(u.argmin(-1), ACTIONS).bool()


class MaskedChoice(Environment):
    """Take the highest legal action; see the module docstring.

    Example (an illegal action pays -1):
        >>> import functional_rl.kernel.random as jr
        >>> env = MaskedChoice()
        >>> _, s = env.reset(jr.key(0), env.default_params(), 1)
        >>> mask = env.action_mask(s, env.default_params())
        >>> illegal = (~mask).long().argmax(-1) if bool((~mask).any()) else None
        >>> illegal is None or env.step(jr.key(1), s, illegal, env.default_params()).reward.tolist() == [-1.0]
        True
    """

    id = "MaskedChoice-v0"
    observation_space = Box(low=(0.0,) * ACTIONS, high=(1.0,) * ACTIONS, shape=(ACTIONS,))
    action_space = Discrete(ACTIONS)

    def default_params(self) -> MaskedChoiceParams:
        """Episodes of 8 steps."""
        return MaskedChoiceParams()

    def reset_env(self, keys: torch.Tensor, params: MaskedChoiceParams) -> MaskedChoiceState:
        """A fresh mask key per env (``keys[b]`` itself), ``time`` 0 and its legal set."""
        time = torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device)
        return MaskedChoiceState(keys.clone(), time, _legal(keys, time))

    def action_mask(self, state: MaskedChoiceState, params: MaskedChoiceParams) -> torch.Tensor:
        """bool ``[B, K]``: this step's legal actions (``state.legal``)."""
        return state.legal.clone()

    def step_env(self, state: MaskedChoiceState, action: torch.Tensor, params: MaskedChoiceParams):
        """``(next_state, reward float32 [B], terminated bool [B])``: ``a / (K - 1)`` for a
        legal action, ``-1`` for an illegal one; the episode ends after ``length`` steps."""
        legal = torch.gather(state.legal, 1, action.long()[:, None])[:, 0]
        reward = torch.where(legal, action.to(torch.float32) / (ACTIONS - 1), -1.0).to(torch.float32)
        time = state.time + 1
        return MaskedChoiceState(state.mask_key.clone(), time, _legal(state.mask_key, time)), reward, time >= params.length

    def get_obs(self, state: MaskedChoiceState, params: MaskedChoiceParams) -> torch.Tensor:
        """float32 ``[B, K]``: the legal set, 1 where legal."""
        return state.legal.to(torch.float32)

    def truncation(self, state: MaskedChoiceState, params: MaskedChoiceParams) -> torch.Tensor:
        """Never: bool ``[B]`` all ``False`` (every episode ends by termination)."""
        return torch.zeros_like(state.time, dtype=torch.bool)


register("MaskedChoice-v0", MaskedChoice)
