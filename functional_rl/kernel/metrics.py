"""An iteration's statistics, formed from sums that add up over the processes of a
data-parallel run (one reduction per iteration). Pure.

Example:
    >>> returns = torch.tensor([1.0, 2.0, 3.0])
    >>> explained_variance(returns - 0.5, returns)  # a constant error explains everything
    tensor(1.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree

from functional_rl.kernel.parallel import AllReduce, sum_over_processes

__all__ = ["explained_variance", "iteration_metrics", "mean_metrics", "nonfinite_count", "is_replicated"]


def explained_variance(value: torch.Tensor, returns: torch.Tensor, all_reduce: AllReduce | None = None) -> torch.Tensor:
    """``1 - Var(returns - value) / Var(returns)`` over the last axis (population variances);
    NaN if ``Var(returns) = 0``. ``[..., N] -> [...]``.

    The variances come from float64 moments (:func:`ev_moments`), which add up over the
    processes of a data-parallel run (``all_reduce``).

    Example:
        >>> returns = torch.tensor([1.0, 2.0, 3.0])
        >>> explained_variance(returns, returns), explained_variance(torch.zeros(3), returns)
        (tensor(1.), tensor(0.))
        >>> explained_variance(torch.zeros(5, 3), returns.expand(5, 3)).shape  # [5, N] -> [5]
        torch.Size([5])
    """
    moments = ev_moments(value, returns)
    moments = dict(zip(moments, sum_over_processes(list(moments.values()), all_reduce)))
    return ev_from_moments(moments).to(returns.dtype)


def ev_moments(value: torch.Tensor, returns: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Sums behind :func:`explained_variance` (float64, over the last axis ``[..., N] -> [...]``):
    ``n``, and the first and second moments of ``y = returns`` and ``r = returns - value``
    (over the entries where ``valid``, bool like ``returns``, is true, when given).

    Example:
        >>> sorted(ev_moments(torch.zeros(3), torch.ones(3)).items())[0]
        ('ev/n', tensor(3., dtype=torch.float64))
    """
    y = returns.to(torch.float64)
    r = y - value.to(torch.float64)
    n = torch.full_like(y[..., 0], y.shape[-1])
    if valid is not None:  # over the valid entries only (a multi-agent env's absent agents are left out)
        y, r = torch.where(valid, y, torch.zeros_like(y)), torch.where(valid, r, torch.zeros_like(r))
        n = valid.to(torch.float64).sum(-1)
    return {
        "ev/n": n,
        "ev/y": y.sum(-1), "ev/yy": (y * y).sum(-1), "ev/r": r.sum(-1), "ev/rr": (r * r).sum(-1),
    }


def ev_from_moments(m: dict[str, torch.Tensor]) -> torch.Tensor:
    """``1 - Var(r) / Var(y)`` from :func:`ev_moments`' sums (float64).

    Example:
        >>> ev_from_moments(ev_moments(torch.zeros(3), torch.tensor([1.0, 2.0, 3.0])))
        tensor(0., dtype=torch.float64)
    """
    n = m["ev/n"]
    var_y = m["ev/yy"] / n - (m["ev/y"] / n) ** 2
    var_r = m["ev/rr"] / n - (m["ev/r"] / n) ** 2
    return 1.0 - var_r / var_y


def nonfinite_count(tree: Any) -> torch.Tensor:
    """How many NaN/inf values the floating-point tensor leaves of ``tree`` hold (int64 0-d).

    Example:
        >>> nonfinite_count({"a": torch.tensor([1.0, float("nan")]), "b": torch.tensor([float("inf")]), "i": torch.tensor([1])})
        tensor(2)
    """
    leaves = [x for x in pytree.tree_leaves(tree) if isinstance(x, torch.Tensor) and x.is_floating_point()]
    return sum((~torch.isfinite(x)).sum() for x in leaves)


def mean_metrics(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Metric-wise mean over a list of metric dicts (e.g. one per minibatch update).

    Example:
        >>> mean_metrics([{"loss": torch.tensor(1.0)}, {"loss": torch.tensor(3.0)}])
        {'loss': tensor(2.)}
    """
    return {k: torch.stack([m[k] for m in items]).mean(0) for k in items[0]}


def is_replicated(name: str) -> bool:
    """Metrics every process already holds identically (computed from averaged gradients).

    Example:
        >>> is_replicated("grad_norm"), is_replicated("policy_loss")
        (True, False)
    """
    return name == "learning_rate" or name.startswith("grad")


def iteration_metrics(
    metrics: dict[str, torch.Tensor], trajectory: Any, batch: Any, params: Any, *,
    world_size: int = 1, all_reduce: AllReduce | None = None,
) -> dict[str, torch.Tensor]:
    """Add the iteration's statistics to the update's metrics, over all processes.

    Everything is formed from sums reduced in ONE call of ``all_reduce`` per dtype: loss
    diagnostics are averaged over processes (their minibatches are of equal size), episode
    statistics are ``sum / count`` over every process's finished episodes, and the explained
    variance comes from the moments of ``returns`` and ``returns - value``.

    Args:
        metrics: the update's 0-d metrics.
        trajectory: ``[T, B]`` with ``terminated``, ``truncated``, ``episode_return``,
            ``episode_length``, ``obs``, ``reward``.
        batch: ``[N]`` with ``value`` and ``returns``.
        params: the parameters after the update (counted for NaN/inf).

    Returns:
        ``metrics`` plus ``explained_variance``, ``episode_return``, ``episode_length`` (means
        over the episodes that ended; NaN if none), ``episodes``, ``nonfinite_params`` and
        ``nonfinite_obs`` (NaN/inf observations or rewards in the rollout), all 0-d.

    Example:
        >>> done = torch.tensor([[False, True], [True, False]])  # [T=2, B=2]
        >>> traj = {"terminated": done, "truncated": torch.zeros(2, 2, dtype=torch.bool),
        ...         "episode_return": torch.tensor([[0.0, 3.0], [5.0, 0.0]]),
        ...         "episode_length": torch.tensor([[0, 3], [5, 0]]), "obs": torch.zeros(2, 2, 4), "reward": torch.ones(2, 2)}
        >>> batch = {"value": torch.zeros(4), "returns": torch.arange(4.0)}
        >>> m = iteration_metrics({}, traj, batch, {"w": torch.zeros(2)})
        >>> float(m["episode_return"]), float(m["episodes"]), float(m["explained_variance"])
        (4.0, 2.0, 0.0)
    """
    done = (trajectory["terminated"] | trajectory["truncated"]).to(torch.float32)
    local = {k: v / world_size for k, v in metrics.items() if not is_replicated(k)}
    sums = {
        **local,
        "episodes": done.sum(dim=(-2, -1)),
        "episode_return": trajectory["episode_return"].sum(dim=(-2, -1)),
        "episode_length": trajectory["episode_length"].to(torch.float32).sum(dim=(-2, -1)),
        "nonfinite_obs": nonfinite_count(trajectory["obs"]).to(torch.float32) + nonfinite_count(trajectory["reward"]),
        **ev_moments(batch["value"].reshape(-1), batch["returns"].reshape(-1),  # [N], or [B, T] sequences
                     batch["valid"].reshape(-1) if "valid" in batch.keys() else None),
    }
    sums = dict(zip(sums, sum_over_processes(list(sums.values()), all_reduce)))
    episodes = sums["episodes"]
    return {
        **metrics,
        **{k: sums[k] for k in local},
        "explained_variance": ev_from_moments(sums).to(torch.float32),
        "episode_return": sums["episode_return"] / episodes,
        "episode_length": sums["episode_length"] / episodes,
        "episodes": episodes,
        "nonfinite_params": nonfinite_count(params).to(torch.float32),
        "nonfinite_obs": sums["nonfinite_obs"],
    }
