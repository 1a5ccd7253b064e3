"""V-trace off-policy value targets and policy-gradient advantages, with separate termination
and truncation.

Source: L. Espeholt, H. Soyer, R. Munos et al., "IMPALA: Scalable Distributed Deep-RL with
Importance Weighted Actor-Learner Architectures", ICML 2018 (arXiv:1802.01561): section 4.1,
eq. (1) (the n-step target), Remark 1 (its recursive form), Remark 2 (the ``lambda`` variant)
and section 4.2 (the policy-gradient advantage).

Layout and boundary conventions are those of :mod:`functional_rl.kernel.advantages`: time-major
``[T, B]``; ``next_value[t]`` is ``V`` of the *true* next observation of step ``t`` (the final
observation when the episode ended at ``t``, the bootstrap observation at ``t = T-1``);
termination does not bootstrap, truncation does; ``done_t = terminated_t or truncated_t`` and
nothing leaks across an episode boundary. With ``log_rho_t = log pi(a_t|x_t) - log mu(a_t|x_t)``
(target minus behaviour):

* ``rho_t = min(rho_bar, exp(log_rho_t))`` and ``c_t = lambda * min(c_bar, exp(log_rho_t))``;
* ``delta_t = rho_t * (r_t + gamma * (1 - terminated_t) * next_value_t - value_t)``;
* ``vs_t - value_t = delta_t + gamma * c_t * (1 - done_t) * (vs_{t+1} - value_{t+1})``, the term
  past ``T`` being 0 (Remark 1; solved for ``vs - value`` by
  :func:`~functional_rl.kernel.advantages.reverse_linear_recurrence`, no loop over ``t``);
* ``next_vs_t = next_value_t + (1 - done_t) * (vs_{t+1} - value_{t+1})``, the V-trace target of
  the true next observation (0 past ``T``);
* ``pg_advantage_t = rho_t * (r_t + gamma * (1 - terminated_t) * next_vs_t - value_t)``.

``next_vs`` is ``vs_{t+1}`` when ``t < T-1`` and not done, ``next_value_t`` (the bootstrap) when
truncated or at ``t = T-1``, and does not count when terminated. On a trajectory
``next_value[t] == value[t+1]`` whenever ``t < T-1`` and not done (both are ``V`` of the same
observation), so the form above is exactly ``vs_{t+1}`` there. Where inputs disagree we read the
next state's value from ``next_value[t]`` everywhere, as ``delta_t`` does, and take only the
correction ``vs_{t+1} - value_{t+1}`` from the recurrence. That keeps one choice throughout:
with ``lambda = 1`` and ``c_bar = rho_bar`` it gives ``pg_advantage == vs - value`` for any input.

With ``log_rho = 0`` and ``rho_bar = c_bar = 1`` (on-policy) ``vs`` is the GAE lambda-return of
:func:`~functional_rl.kernel.advantages.compute_advantages`. The functions here never detach:
they are pure functions of their inputs, so callers pass a detached ``log_rho`` (and values)
when the targets must not carry gradients, as IMPALA does.
"""

from __future__ import annotations

import math

import torch

from functional_rl.kernel.advantages import _shift_up, reverse_linear_recurrence

__all__ = ["compute_vtrace", "compute_vtrace_reference"]


def _check(reward, value, next_value, terminated, truncated, log_rho, rho_bar, c_bar) -> None:
    named = dict(reward=reward, value=value, next_value=next_value, terminated=terminated,
                 truncated=truncated, log_rho=log_rho)
    for name, x in named.items():
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"compute_vtrace: {name} must be a [T, B] tensor, got shape {shape}")
    for name, x in named.items():
        if x.shape != reward.shape:
            raise ValueError(f"compute_vtrace: {name} must have reward's [T, B] shape "
                             f"{tuple(reward.shape)}, got {tuple(x.shape)}")
    for name, clip in (("rho_bar", rho_bar), ("c_bar", c_bar)):
        if isinstance(clip, (int, float)) and not clip > 0:  # tensors are not read (no host sync)
            raise ValueError(f"compute_vtrace: {name} must be positive, got {clip}")


def compute_vtrace(
    reward: torch.Tensor,
    value: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    log_rho: torch.Tensor,
    *,
    gamma: float | torch.Tensor,
    gae_lambda: float | torch.Tensor = 1.0,
    rho_bar: float | torch.Tensor = 1.0,
    c_bar: float | torch.Tensor = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V-trace policy-gradient advantages and value targets (module docstring for the maths).

    Args:
        reward: float ``[T, B]``.
        value: float ``[T, B]``, ``V(x_t)``.
        next_value: float ``[T, B]``, ``V`` of the true next observation of step ``t``.
        terminated: bool or float ``[T, B]``.
        truncated: bool or float ``[T, B]``.
        log_rho: float ``[T, B]``, ``log pi(a_t|x_t) - log mu(a_t|x_t)``; pass it detached.
        gamma: discount, a float or a tensor broadcastable to ``[B]``.
        gae_lambda: the trace ``lambda`` of ``c_t``, likewise (1 is plain V-trace).
        rho_bar: clip of ``rho_t``, likewise; a float must be positive.
        c_bar: clip of ``c_t``, likewise; a float must be positive (IMPALA advises
            ``rho_bar >= c_bar``; not enforced).

    Returns:
        ``(pg_advantage, vs)``, both float ``[T, B]`` in ``value.dtype``.

    Example (one env, ``rho_bar=1``, ``c_bar=0.5``; the ratio 2 at t=0 is clipped to 1):
        >>> import torch
        >>> r = torch.tensor([[1.0], [1.0], [2.0]])
        >>> v = torch.tensor([[1.0], [2.0], [3.0]]); nv = torch.tensor([[2.0], [3.0], [4.0]])
        >>> no = torch.zeros(3, 1, dtype=torch.bool)
        >>> log_rho = torch.tensor([[2.0], [0.5], [1.0]]).log()
        >>> adv, vs = compute_vtrace(r, v, nv, no, no, log_rho, gamma=0.5, rho_bar=1.0, c_bar=0.5)
        >>> [round(x, 4) for x in vs.squeeze(-1).tolist()], [round(x, 4) for x in adv.squeeze(-1).tolist()]
        ([2.125, 2.5, 4.0], [1.25, 0.5, 1.0])
    """
    _check(reward, value, next_value, terminated, truncated, log_rho, rho_bar, c_bar)
    dtype = value.dtype
    ratio = log_rho.to(dtype).exp()
    rho, c = ratio.clamp(max=rho_bar), gae_lambda * ratio.clamp(max=c_bar)
    not_term = 1.0 - terminated.to(dtype)
    not_done = 1.0 - (terminated.bool() | truncated.bool()).to(dtype)
    delta = rho * (reward.to(dtype) + gamma * not_term * next_value - value)
    vs_minus_v = reverse_linear_recurrence(delta, gamma * c * not_done)
    next_vs = next_value + not_done * _shift_up(vs_minus_v, 1)
    pg_advantage = rho * (reward.to(dtype) + gamma * not_term * next_vs - value)
    return pg_advantage, value + vs_minus_v


def compute_vtrace_reference(reward, value, next_value, terminated, truncated, log_rho, *, gamma,
                             gae_lambda=1.0, rho_bar=1.0, c_bar=1.0):
    """The slow reference: an explicit loop over ``b`` and reversed ``t`` in Python floats.

    Same maths as :func:`compute_vtrace` (float64 internally); for tests. Hyperparameters are
    floats or 0-d tensors.

    Args:
        reward, value, next_value, terminated, truncated, log_rho: ``[T, B]``, as for
            :func:`compute_vtrace`.
        gamma, gae_lambda, rho_bar, c_bar: floats or 0-d tensors.

    Returns:
        ``(pg_advantage, vs)``, both ``[T, B]`` in ``value.dtype``.

    Example (agrees with the vectorised version):
        >>> import torch
        >>> import functional_rl.kernel.random as jr
        >>> k = jr.split(jr.key(0), 4)
        >>> r, v, nv, lr = (jr.normal(k[i], (5, 2)) for i in range(4))
        >>> term = torch.tensor([[False, False], [True, False], [False, False], [False, True], [False, False]])
        >>> trunc = torch.zeros(5, 2, dtype=torch.bool)
        >>> kw = dict(gamma=0.99, gae_lambda=0.95, rho_bar=1.0, c_bar=0.9)
        >>> adv, vs = compute_vtrace_reference(r, v, nv, term, trunc, lr, **kw)
        >>> fast = compute_vtrace(r, v, nv, term, trunc, lr, **kw)
        >>> torch.allclose(adv, fast[0], atol=1e-5), torch.allclose(vs, fast[1], atol=1e-5)
        (True, True)
    """
    _check(reward, value, next_value, terminated, truncated, log_rho, rho_bar, c_bar)
    rows = [x.double().tolist() for x in (reward, value, next_value, log_rho)]
    flags = [x.bool().tolist() for x in (terminated, truncated)]
    gamma, lam, rho_bar, c_bar = (float(h) for h in (gamma, gae_lambda, rho_bar, c_bar))
    T, B = reward.shape
    adv, vs = [[0.0] * B for _ in range(T)], [[0.0] * B for _ in range(T)]
    for b in range(B):
        correction = 0.0  # vs_{t+1} - value_{t+1}; 0 past T
        for t in reversed(range(T)):
            r, v, nv, lr = (x[t][b] for x in rows)
            term, done = flags[0][t][b], flags[0][t][b] or flags[1][t][b]
            ratio = math.exp(lr)
            rho, c = min(rho_bar, ratio), lam * min(c_bar, ratio)
            carry = 0.0 if done else correction
            next_vs = 0.0 if term else nv + carry
            delta = rho * (r + gamma * (0.0 if term else nv) - v)
            correction = delta + gamma * c * carry
            adv[t][b], vs[t][b] = rho * (r + gamma * next_vs - v), v + correction
    return torch.tensor(adv, dtype=value.dtype), torch.tensor(vs, dtype=value.dtype)
