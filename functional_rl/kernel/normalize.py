"""Observation normalisation and reward scaling as pure state (``(init, update, apply)`` triples).

The statistics live in :class:`~functional_rl.kernel.state.TrainerState` (``obs_norm``,
``reward_norm``), so checkpoints carry them, ``vmap`` batches them, and a resumed run
normalises exactly as the uninterrupted one.

Running moments use the parallel update of Chan, Golub & LeVeque (1979), as gymnasium's
``RunningMeanStd`` does (initial ``count = 1e-4``). For a batch with mean ``m_b``, variance
``v_b`` and size ``n_b``::

    delta = m_b - m;  n' = n + n_b;  m' = m + delta n_b / n'
    v' = (v n + v_b n_b + delta^2 n n_b / n') / n'

The batch moments come from the sums ``n_b, S1 = sum (x - m), S2 = sum (x - m)^2`` (shifted by
the running mean, in float64): ``delta = S1 / n_b``, ``v_b = S2 / n_b - delta^2``. Sums add
up across processes, so a data-parallel run folds in the batch of all its processes' envs
(``all_reduce``, see :mod:`functional_rl.kernel.parallel`) and every process keeps the same statistics.

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

from functional_rl.kernel.parallel import AllReduce, sum_over_processes
from functional_rl.kernel.struct import pytree_dataclass

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
    """Running ``mean`` and ``var`` of shape ``[*shape]`` and a ``count`` (0-d), float64.

    Example:
        >>> m = moments_init((3,))
        >>> m.mean.shape, m.var.shape, m.count.shape, m.mean.dtype
        (torch.Size([3]), torch.Size([3]), torch.Size([]), torch.float64)
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor


@pytree_dataclass
class RewardNormState:
    """Moments of the discounted return (0-d) and the per-env return accumulator ``[B]``.

    Example:
        >>> s = reward_norm_init(4)
        >>> s.moments.mean.shape, s.discounted_return.shape
        (torch.Size([]), torch.Size([4]))
    """

    moments: RunningMoments
    discounted_return: torch.Tensor


def moments_init(shape: tuple[int, ...], epsilon: float = 1e-4) -> RunningMoments:
    """Zero mean, unit variance, ``count = epsilon`` (gymnasium's initial state).

    Returns:
        :class:`RunningMoments` with float64 ``mean``/``var`` ``[*shape]`` and ``count`` 0-d.

    Example:
        >>> m = moments_init((2,))
        >>> m.mean.tolist(), m.var.tolist(), float(m.count)
        ([0.0, 0.0], [1.0, 1.0], 0.0001)
    """
    return RunningMoments(
        mean=torch.zeros(shape, dtype=_STATS_DTYPE),
        var=torch.ones(shape, dtype=_STATS_DTYPE),
        count=torch.tensor(epsilon, dtype=_STATS_DTYPE),
    )


def moments_update(m: RunningMoments, x: torch.Tensor, all_reduce: AllReduce | None = None) -> RunningMoments:
    """Fold a batch ``x [N, *shape]`` into the moments (parallel Welford update). Pure.

    With ``all_reduce`` the batch is the union of every process's ``x``.

    Example (the tiny initial count barely moves the batch statistics):
        >>> m = moments_update(moments_init((2,)), torch.tensor([[1.0, 2.0], [3.0, 6.0]]))  # [N=2, 2]
        >>> [round(x, 3) for x in m.mean.tolist()], [round(x, 3) for x in m.var.tolist()], round(float(m.count), 4)
        ([2.0, 4.0], [1.0, 4.001], 2.0001)
    """
    d = x.to(_STATS_DTYPE) - m.mean
    n_b = torch.full((), x.shape[0], dtype=_STATS_DTYPE, device=x.device)
    n_b, s1, s2 = sum_over_processes([n_b, d.sum(0), (d * d).sum(0)], all_reduce)
    delta = s1 / n_b  # batch mean - running mean
    batch_var = torch.clamp(s2 / n_b - delta**2, min=0.0)
    total = m.count + n_b
    mean = m.mean + delta * n_b / total
    m2 = m.var * m.count + batch_var * n_b + delta**2 * m.count * n_b / total
    return RunningMoments(mean=mean, var=m2 / total, count=total)


def obs_norm_init(obs_shape: tuple[int, ...]) -> RunningMoments:
    """Statistics for observations of shape ``obs_shape``.

    Example:
        >>> obs_norm_init((4,)).mean.shape
        torch.Size([4])
    """
    return moments_init(tuple(obs_shape))


def obs_norm_update(m: RunningMoments, obs: torch.Tensor, all_reduce: AllReduce | None = None) -> RunningMoments:
    """Fold ``obs [B, *obs_shape]`` (of every process, with ``all_reduce``) into the statistics.

    Example:
        >>> m = obs_norm_update(obs_norm_init((2,)), torch.tensor([[0.0, 10.0], [2.0, 10.0]]))
        >>> [round(x, 3) for x in m.mean.tolist()]
        [1.0, 10.0]
    """
    return moments_update(m, obs, all_reduce)


def obs_norm_apply(m: RunningMoments, obs: torch.Tensor, clip: float = 10.0, eps: float = 1e-8) -> torch.Tensor:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` in ``obs.dtype``.

    Args:
        m: statistics with ``mean``/``var`` ``[*obs_shape]``.
        obs: ``[..., *obs_shape]``.

    Returns:
        Normalised observations, same shape and dtype as ``obs``.

    Example:
        >>> m = obs_norm_update(obs_norm_init((2,)), torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
        >>> z = obs_norm_apply(m, torch.tensor([[3.0, 2.0], [100.0, 4.0]]))
        >>> z.shape, z.dtype
        (torch.Size([2, 2]), torch.float32)
        >>> z.round(decimals=2)  # 100 is clipped to 10 standard deviations
        tensor([[ 1., -1.],
                [10.,  0.]])
    """
    z = (obs.to(_STATS_DTYPE) - m.mean) / torch.sqrt(m.var + eps)
    return torch.clamp(z, -clip, clip).to(obs.dtype)


def reward_norm_init(num_envs: int) -> RewardNormState:
    """Scalar return moments and a zero accumulator for ``num_envs`` envs.

    Example:
        >>> s = reward_norm_init(3)
        >>> s.discounted_return.tolist(), float(s.moments.var)
        ([0.0, 0.0, 0.0], 1.0)
    """
    return RewardNormState(moments=moments_init(()), discounted_return=torch.zeros(num_envs, dtype=_STATS_DTYPE))


def reward_norm_update(
    s: RewardNormState,
    reward: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float | torch.Tensor,
    all_reduce: AllReduce | None = None,
) -> RewardNormState:
    """Advance the discounted returns ``G`` by one step and fold them into the moments.

    ``G <- G * gamma * (1 - terminated) + r``; the moments see ``G``; then ``G`` restarts at 0
    where the episode ended (terminated or truncated).

    Args:
        s: the current state (accumulator ``[B]``).
        reward: float ``[B]``.
        terminated: bool ``[B]``.
        truncated: bool ``[B]``.
        gamma: discount, a float or 0-d tensor.
        all_reduce: in a data-parallel run, the moments see every process's ``G``.

    Example (env 1's episode ends, so its accumulator restarts at 0):
        >>> s = reward_norm_init(2)
        >>> s = reward_norm_update(s, torch.tensor([1.0, 2.0]), torch.tensor([False, True]),
        ...                        torch.tensor([False, False]), gamma=0.9)
        >>> s.discounted_return.tolist(), round(float(s.moments.mean), 3)
        ([1.0, 0.0], 1.5)
    """
    g = s.discounted_return * gamma * (1.0 - terminated.to(_STATS_DTYPE)) + reward.to(_STATS_DTYPE)
    moments = moments_update(s.moments, g, all_reduce)
    done = terminated | truncated
    return RewardNormState(moments=moments, discounted_return=torch.where(done, torch.zeros_like(g), g))


def reward_norm_apply(s: RewardNormState, reward: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``reward / sqrt(Var[G] + eps)`` in ``reward.dtype``.

    ``reward`` has any shape (usually ``[B]``); the result has the same shape and dtype.

    Example:
        >>> s = reward_norm_init(2)
        >>> s = s.replace(moments=s.moments.replace(var=torch.tensor(4.0, dtype=torch.float64)))
        >>> reward_norm_apply(s, torch.tensor([1.0, -2.0]))
        tensor([ 0.5000, -1.0000])
    """
    return (reward.to(_STATS_DTYPE) / torch.sqrt(s.moments.var + eps)).to(reward.dtype)
