"""Generalised advantage estimation (Schulman et al. 2016) with separate termination and truncation.

Layout is time-major ``[T, B]``. For each step ``t``:

* ``next_value[t]`` is ``V`` of the *true* next observation of step ``t`` (the final
  observation when the episode ended at ``t``; the bootstrap observation at ``t = T-1``);
* ``delta_t = r_t + gamma * (1 - terminated_t) * next_value_t - value_t`` (truncation
  bootstraps, termination does not);
* ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}`` with ``done_t = terminated_t or
  truncated_t`` and ``A_T = 0`` (nothing leaks across an episode boundary);
* ``returns_t = A_t + value_t`` (the lambda-return, the value target).

:func:`compute_advantages` is the fast, vectorised version (one reverse pass of two fused
ops per step over the whole batch); :func:`compute_advantages_reference` is the slow loop over
every ``(t, b)`` in Python floats that the tests compare it with.
"""

from __future__ import annotations

import torch

__all__ = ["compute_advantages", "compute_advantages_reference"]


def _check(reward, value, next_value, terminated, truncated) -> None:
    named = {
        "reward": reward,
        "value": value,
        "next_value": next_value,
        "terminated": terminated,
        "truncated": truncated,
    }
    for name, x in named.items():
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"compute_advantages: {name} must be a [T, B] tensor, got shape {shape}")
    shapes = {name: tuple(x.shape) for name, x in named.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"compute_advantages: all inputs must share one [T, B] shape, got {shapes}")


def compute_advantages(
    reward: torch.Tensor,
    value: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    *,
    gamma: float | torch.Tensor,
    gae_lambda: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and lambda-returns (see the module docstring for the maths).

    Args:
        reward: float ``[T, B]``.
        value: float ``[T, B]``, ``V(obs_t)`` under the behaviour parameters.
        next_value: float ``[T, B]``, ``V`` of the true next observation of step ``t``.
        terminated: bool or float ``[T, B]``.
        truncated: bool or float ``[T, B]``.
        gamma: discount, a float or a tensor broadcastable to ``[B]``.
        gae_lambda: GAE lambda, likewise.

    Returns:
        ``(advantage, returns)``, both float ``[T, B]``.

    Example (one env, episode terminates at t=1; with lambda=1 and gamma=1 the advantage is the
    undiscounted reward-to-go minus the value, and it does not look past the boundary):
        >>> r = torch.tensor([[1.0], [1.0], [1.0]])
        >>> v = torch.zeros(3, 1); nv = torch.zeros(3, 1)
        >>> term = torch.tensor([[False], [True], [False]])
        >>> adv, ret = compute_advantages(r, v, nv, term, torch.zeros_like(term), gamma=1.0, gae_lambda=1.0)
        >>> adv.squeeze(-1).tolist()
        [2.0, 1.0, 1.0]
    """
    _check(reward, value, next_value, terminated, truncated)
    dtype = value.dtype
    not_term = 1.0 - terminated.to(dtype)
    not_done = 1.0 - (terminated.bool() | truncated.bool()).to(dtype)
    delta = reward.to(dtype) + gamma * not_term * next_value - value
    decay = gamma * gae_lambda * not_done
    steps = []
    running = torch.zeros_like(delta[0])
    for t in range(delta.shape[0] - 1, -1, -1):
        running = delta[t] + decay[t] * running
        steps.append(running)
    advantage = torch.stack(steps[::-1])
    return advantage, advantage + value


def compute_advantages_reference(reward, value, next_value, terminated, truncated, *, gamma, gae_lambda):
    """The slow reference: an explicit loop over ``b`` and reversed ``t`` in Python floats.

    Same signature and maths as :func:`compute_advantages` (float64 internally); for tests.
    All inputs are ``[T, B]``; returns ``(advantage, returns)``, both ``[T, B]`` in
    ``value.dtype``.

    Example (agrees with the vectorised version):
        >>> import functional_rl.kernel.random as jr
        >>> k = jr.split(jr.key(0), 3)
        >>> r, v, nv = jr.normal(k[0], (5, 2)), jr.normal(k[1], (5, 2)), jr.normal(k[2], (5, 2))
        >>> term = torch.tensor([[False, False], [True, False], [False, False], [False, True], [False, False]])
        >>> trunc = torch.zeros(5, 2, dtype=torch.bool)
        >>> adv, ret = compute_advantages_reference(r, v, nv, term, trunc, gamma=0.99, gae_lambda=0.95)
        >>> adv.shape, ret.shape
        (torch.Size([5, 2]), torch.Size([5, 2]))
        >>> fast, _ = compute_advantages(r, v, nv, term, trunc, gamma=0.99, gae_lambda=0.95)
        >>> torch.allclose(adv, fast, atol=1e-5)
        True
    """
    _check(reward, value, next_value, terminated, truncated)
    T, B = reward.shape
    adv = [[0.0] * B for _ in range(T)]
    for b in range(B):
        a_next = 0.0
        for t in reversed(range(T)):
            term = bool(terminated[t, b])
            done = term or bool(truncated[t, b])
            delta = float(reward[t, b]) + float(gamma) * (0.0 if term else float(next_value[t, b])) - float(value[t, b])
            a_next = delta + (0.0 if done else float(gamma) * float(gae_lambda) * a_next)
            adv[t][b] = a_next
    advantage = torch.tensor(adv, dtype=value.dtype)
    return advantage, advantage + value
