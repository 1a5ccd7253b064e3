"""Observation normalisation and reward scaling as pure state (``(init, update, apply)`` triples).

The statistics live in :class:`~functional_rl.state.TrainerState` (``obs_norm``,
``reward_norm``), so checkpoints carry them, ``vmap`` batches them, and a resumed run
normalises exactly as the uninterrupted one.

Running moments use the parallel update of Chan, Golub & LeVeque (1979), as gymnasium's
``RunningMeanStd`` does (initial ``count = 1e-4``). For a batch with mean ``m_b``, variance
``v_b`` and size ``n_b``::

    delta = m_b - m;  n' = n + n_b;  m' = m + delta n_b / n'
    v' = (v n + v_b n_b + delta^2 n n_b / n') / n'

Observations: ``(obs - m) / sqrt(v + eps)`` clipped to ``[-clip, clip]`` (gymnasium's
``NormalizeObservation`` followed by CleanRL's clip). Rewards: gymnasium's
``NormalizeReward`` with same-step autoreset: a per-env discounted return
``G <- G gamma (1 - terminated) + r`` feeds the moments, the reward is divided by
``sqrt(Var[G] + eps)``, and ``G`` restarts at 0 after any episode end.

Example:
    >>> import torch
    >>> s = obs_norm_init((2,))
    >>> s = obs_norm_update(s, torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    >>> [round(x, 3) for x in s.mean.tolist()]
    [2.0, 4.0]
"""

from __future__ import annotations

import torch

from functional_rl.struct import pytree_dataclass

__all__ = [
    "RunningMoments",
    "RewardNormState",
    "moments_init",
    "moments_update",
    "obs_norm_init",
    "obs_norm_update",
    "obs_norm_apply",
    "reward_norm_init",
    "reward_norm_update",
    "reward_norm_apply",
]

_STATS_DTYPE = torch.float64


@pytree_dataclass
class RunningMoments:
    """Running ``mean`` and ``var`` of shape ``[*shape]`` and a ``count`` (0-d), float64."""

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor


@pytree_dataclass
class RewardNormState:
    """Moments of the discounted return (0-d) and the per-env return accumulator ``[B]``."""

    moments: RunningMoments
    discounted_return: torch.Tensor


def moments_init(shape: tuple[int, ...], epsilon: float = 1e-4) -> RunningMoments:
    """Zero mean, unit variance, ``count = epsilon`` (gymnasium's initial state)."""
    return RunningMoments(
        mean=torch.zeros(shape, dtype=_STATS_DTYPE),
        var=torch.ones(shape, dtype=_STATS_DTYPE),
        count=torch.tensor(epsilon, dtype=_STATS_DTYPE),
    )


def moments_update(m: RunningMoments, x: torch.Tensor) -> RunningMoments:
    """Fold a batch ``x [N, *shape]`` into the moments (parallel Welford update). Pure."""
    x = x.to(_STATS_DTYPE)
    n_b = x.shape[0]
    batch_mean = x.mean(0)
    batch_var = x.var(0, unbiased=False)
    delta = batch_mean - m.mean
    total = m.count + n_b
    mean = m.mean + delta * n_b / total
    m2 = m.var * m.count + batch_var * n_b + delta**2 * m.count * n_b / total
    return RunningMoments(mean=mean, var=m2 / total, count=total)


def obs_norm_init(obs_shape: tuple[int, ...]) -> RunningMoments:
    """Statistics for observations of shape ``obs_shape``."""
    return moments_init(tuple(obs_shape))


def obs_norm_update(m: RunningMoments, obs: torch.Tensor) -> RunningMoments:
    """Fold ``obs [B, *obs_shape]`` into the statistics."""
    return moments_update(m, obs)


def obs_norm_apply(m: RunningMoments, obs: torch.Tensor, clip: float = 10.0, eps: float = 1e-8) -> torch.Tensor:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` in ``obs.dtype``."""
    z = (obs.to(_STATS_DTYPE) - m.mean) / torch.sqrt(m.var + eps)
    return torch.clamp(z, -clip, clip).to(obs.dtype)


def reward_norm_init(num_envs: int) -> RewardNormState:
    """Scalar return moments and a zero accumulator for ``num_envs`` envs."""
    return RewardNormState(moments=moments_init(()), discounted_return=torch.zeros(num_envs, dtype=_STATS_DTYPE))


def reward_norm_update(
    s: RewardNormState,
    reward: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float | torch.Tensor,
) -> RewardNormState:
    """Advance the discounted returns ``G`` by one step and fold them into the moments.

    ``G <- G * gamma * (1 - terminated) + r``; the moments see ``G``; then ``G`` restarts at 0
    where the episode ended (terminated or truncated).
    """
    g = s.discounted_return * gamma * (1.0 - terminated.to(_STATS_DTYPE)) + reward.to(_STATS_DTYPE)
    moments = moments_update(s.moments, g)
    done = terminated | truncated
    return RewardNormState(moments=moments, discounted_return=torch.where(done, torch.zeros_like(g), g))


def reward_norm_apply(s: RewardNormState, reward: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``reward / sqrt(Var[G] + eps)`` in ``reward.dtype``."""
    return (reward.to(_STATS_DTYPE) / torch.sqrt(s.moments.var + eps)).to(reward.dtype)
