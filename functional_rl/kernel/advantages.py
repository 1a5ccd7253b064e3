"""Generalised advantage estimation (Schulman et al. 2016) with separate termination and truncation.

Layout is time-major ``[T, B]``. For each step ``t``:

* ``next_value[t]`` is ``V`` of the *true* next observation of step ``t`` (the final
  observation when the episode ended at ``t``; the bootstrap observation at ``t = T-1``);
* ``delta_t = r_t + gamma * (1 - terminated_t) * next_value_t - value_t`` (truncation
  bootstraps, termination does not);
* ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}`` with ``done_t = terminated_t or
  truncated_t`` and ``A_T = 0`` (nothing leaks across an episode boundary);
* ``returns_t = A_t + value_t`` (the lambda-return, the value target).

:func:`compute_advantages` is the fast, vectorised version; :func:`compute_advantages_reference`
is the slow loop over every ``(t, b)`` in Python floats that the tests compare it with.

The fast version solves the reverse linear recurrence ``A_t = delta_t + c_t A_{t+1}`` (``c_t =
gamma * lambda * (1 - done_t)``) by recursive doubling instead of a loop over ``t``: after the
round with span ``k`` each ``a_t`` holds ``sum_{j=t}^{t+k-1} (prod_{i=t}^{j-1} c_i) delta_j`` and
each ``c_t`` holds ``prod_{i=t}^{t+k-1} c_i``, and one round doubles the span:

    a_t <- a_t + c_t * a_{t+k},    c_t <- c_t * c_{t+k}    (terms past T are 0)

so ``ceil(log2 T)`` rounds of three whole-tensor ops give every ``A_t`` (7 rounds for T = 128,
against 128 dependent steps). There is no Python loop over time to unroll and no ``scan``
operator, so the same code runs eagerly, under ``torch.compile`` (a small graph that compiles
in seconds) and under ``vmap``. It sums the same terms as the loop in another order, so the
two agree to float rounding (``tests/test_advantages.py``).
"""

from __future__ import annotations

import torch

__all__ = ["compute_advantages", "compute_advantages_reference", "reverse_linear_recurrence"]


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
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and lambda-returns (see the module docstring for the maths).

    With ``valid`` (bool ``[T, B]``: the row's agent was in the episode at step ``t``; a
    multi-agent env's agents that left early are invalid) the recursion is
    ``A_t = valid_t * (delta_t + c_t A_{t+1})``: an invalid step has advantage 0 and return
    ``value_t``, and nothing of it (even NaN) reaches a valid step.

    Args:
        reward: float ``[T, B]``.
        value: float ``[T, B]``, ``V(obs_t)`` under the behaviour parameters.
        next_value: float ``[T, B]``, ``V`` of the true next observation of step ``t``.
        terminated: bool or float ``[T, B]``.
        truncated: bool or float ``[T, B]``.
        gamma: discount, a float or a tensor broadcastable to ``[B]``.
        gae_lambda: GAE lambda, likewise.
        valid: optional bool ``[T, B]``; ``None`` is every step valid.

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
        >>> valid = torch.tensor([[True], [True], [False]])  # the agent left after step 1
        >>> r2 = torch.tensor([[1.0], [1.0], [float("nan")]])  # what its absent row holds does not matter
        >>> compute_advantages(r2, v, nv, term, torch.zeros_like(term), gamma=1.0, gae_lambda=1.0, valid=valid)[0].squeeze(-1).tolist()
        [2.0, 1.0, 0.0]
    """
    _check(reward, value, next_value, terminated, truncated)
    dtype = value.dtype
    not_term = 1.0 - terminated.to(dtype)
    not_done = 1.0 - (terminated.bool() | truncated.bool()).to(dtype)
    delta = reward.to(dtype) + gamma * not_term * next_value - value
    decay = (gamma * gae_lambda) * not_done
    if valid is not None:  # an invalid step contributes nothing and cuts the recursion
        valid = valid.bool()
        delta = torch.where(valid, delta, torch.zeros_like(delta))
        decay = torch.where(valid, decay, torch.zeros_like(decay))
    advantage = reverse_linear_recurrence(delta, decay)
    if valid is not None:
        return advantage, torch.where(valid, advantage + value, value)
    return advantage, advantage + value


def reverse_linear_recurrence(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``y_t = x_t + c_t * y_{t+1}`` with ``y_T = 0``, over the leading (time) axis, by recursive
    doubling (module docstring): ``ceil(log2 T)`` rounds, no loop over ``t``.

    Args:
        x: float ``[T, ...]``.
        c: float ``[T, ...]``, same shape.

    Returns:
        ``y``, float ``[T, ...]``.

    Example (a discounted reward-to-go that stops at the episode end after step 1):
        >>> x = torch.tensor([1.0, 1.0, 1.0, 1.0])
        >>> c = torch.tensor([0.5, 0.0, 0.5, 0.5])
        >>> reverse_linear_recurrence(x, c).tolist()
        [1.5, 1.0, 1.5, 1.0]
    """
    if x.shape != c.shape:
        raise ValueError(f"reverse_linear_recurrence: x and c must share a shape, got {tuple(x.shape)} and {tuple(c.shape)}")
    T, span = x.shape[0], 1
    while span < T:
        x = x + c * _shift_up(x, span)
        if 2 * span < T:  # the last round's products are never read
            c = c * _shift_up(c, span)
        span *= 2
    return x


def _shift_up(x: torch.Tensor, k: int) -> torch.Tensor:
    """``out[t] = x[t + k]`` for ``t + k < T``, else 0 (leading axis)."""
    return torch.cat([x[k:], torch.zeros_like(x[:k])])


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
