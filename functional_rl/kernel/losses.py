"""The PPO objective (Schulman et al. 2017) and the composition of custom losses.

For a minibatch of ``N`` transitions with ratio ``rho = exp(log pi(a|s) - log pi_old(a|s))``:

* policy loss ``L_pi = mean(max(-A rho, -A clip(rho, 1 - eps, 1 + eps)))``;
* value loss ``L_v = 0.5 mean((V - R)^2)``, or with value clipping
  ``0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))``;
* entropy ``H = mean(entropy(pi(.|s)))``;
* total ``L = L_pi - c_ent H + c_v L_v + sum_i L_i`` over custom losses ``L_i``.

Diagnostics (CleanRL): ``approx_kl = mean((rho - 1) - log rho)`` (Schulman's k3 estimator),
``clipfrac = mean(|rho - 1| > eps)``.

A custom loss is ``loss(params, batch, outputs, hparams) -> Tensor | (Tensor, dict)`` where
``outputs`` is the current forward pass (so a loss never re-runs the policy). Its value is
reported under the function's ``__name__`` and its dict entries under their own keys.

The reference trainer's signature ``loss(policy, obs, actions, rewards, values, advantages)
-> Tensor`` is accepted too, adapted in the shell (:mod:`functional_rl.compat.losses`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dataclasses

import torch

from functional_rl.kernel.distributions import mask_logits
from functional_rl.kernel.recurrent import is_recurrent, unroll

__all__ = ["ppo_loss", "LossFn", "BUILTIN_METRICS", "loss_name", "normalize_advantage", "masked_mean", "clipped_policy_loss", "value_loss", "add_custom_losses", "check_loss_output", "sequence_outputs",
           "Kickstart", "kickstart_loss"]

LossFn = Callable[..., Any]

BUILTIN_METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "total_loss")


def loss_name(fn: LossFn) -> str:
    """The metric name of a custom loss: its ``__name__`` (or its class name).

    Example:
        >>> def value_l2(params, batch, outputs, hparams):
        ...     return 1e-3 * outputs["value"].pow(2).mean()
        >>> loss_name(value_l2)
        'value_l2'
        >>> class Penalty:
        ...     def __call__(self, params, batch, outputs, hparams):
        ...         return torch.zeros(())
        >>> loss_name(Penalty())
        'Penalty'
    """
    return getattr(fn, "__name__", type(fn).__name__)


def ppo_loss(
    params: Any,
    batch: Mapping[str, torch.Tensor],
    *,
    policy: Any,
    hparams: Any,
    clip_vloss: bool = True,
    norm_adv: bool = True,
    custom_losses: Sequence[LossFn] = (),
    adv_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip loss and its diagnostics for one minibatch. Pure.

    Args:
        params: policy parameters (differentiated).
        batch: ``obs [N, ...]``, ``action [N]|[N, D]``, ``log_prob [N]``, ``value [N]``,
            ``advantage [N]``, ``returns [N]``; with ``action_mask`` bool ``[N, K]`` the
            distribution is restricted to the legal actions the rollout sampled among; with
            ``weight [N]`` (prioritized minibatches' importance weights
            ``(N P_i)^-beta``) the policy and value losses are the weighted means
            ``mean(w_i l_i)`` (the entropy bonus stays unweighted); with ``valid`` bool
            ``[N]`` (a multi-agent env's rows whose agent is in the episode) every loss and
            diagnostic is a mean over the valid rows only, and an invalid row's entries,
            whatever they hold, have no effect on the loss or its gradient.
        policy: a ``Policy`` (its ``apply`` and ``distribution``).
        hparams: :class:`~functional_rl.kernel.config.Hyperparams` (``clip_coef``, ``vf_clip_coef``
            (``clip_coef`` where absent), ``ent_coef``, ``vf_coef``).
        clip_vloss: clip the value update to ``vf_clip_coef`` around the old value.
        norm_adv: normalise advantages to zero mean and unit (unbiased) std within the minibatch:
            ``A' = (A - mean) / (std + 1e-8)``.
        custom_losses: extra loss functions (module docstring); they see the raw advantages.
        adv_stats: ``(mean, std)`` 0-d tensors to normalise with instead of this minibatch's own
            (a data-parallel update passes the statistics of the whole minibatch across
            processes, see :func:`functional_rl.kernel.update.advantage_stats`).

    Returns:
        ``(loss, metrics)``: ``loss`` 0-d; ``metrics`` maps ``policy_loss``, ``value_loss``,
        ``entropy``, ``approx_kl``, ``clipfrac``, ``total_loss`` (and custom names) to
        detached 0-d tensors.

    Example (uniform policy over 2 actions, old log-prob log(1/2): ratio 1, nothing clipped,
    policy loss = -mean(A) = -(1 + 3) / 2 = -2):
        >>> from functional_rl.kernel.config import Hyperparams, PPOConfig
        >>> from functional_rl.kernel.distributions import Categorical
        >>> from types import SimpleNamespace
        >>> pol = SimpleNamespace(apply=lambda p, o: {"logits": p["l"].expand(len(o), 2), "value": o[:, 0]},
        ...                       distribution=Categorical())
        >>> batch = {"obs": torch.zeros(2, 1), "action": torch.tensor([0, 1]),
        ...          "log_prob": torch.log(torch.tensor([0.5, 0.5])), "value": torch.zeros(2),
        ...          "advantage": torch.tensor([1.0, 3.0]), "returns": torch.zeros(2)}
        >>> loss, m = ppo_loss({"l": torch.zeros(2)}, batch, policy=pol,
        ...                    hparams=Hyperparams.from_config(PPOConfig()), norm_adv=False)
        >>> float(m["policy_loss"]), float(m["clipfrac"])
        (-2.0, 0.0)
    """
    if is_recurrent(policy):
        outputs, batch = sequence_outputs(policy, params, batch)
    else:
        outputs = policy.apply(params, batch["obs"])
    outputs = mask_logits(outputs, batch["action_mask"] if "action_mask" in batch.keys() else None)
    dist = policy.distribution
    valid = batch["valid"] if "valid" in batch.keys() else None
    new_log_prob = dist.log_prob(outputs, batch["action"])
    old_log_prob, old_value, returns, advantage = batch["log_prob"], batch["value"], batch["returns"], batch["advantage"]
    if valid is not None:  # an absent agent's row: neutral stand-ins (ratio 1, no advantage, no value error)
        old_log_prob = torch.where(valid, old_log_prob, new_log_prob.detach())
        old_value = torch.where(valid, old_value, outputs["value"].detach())
        returns = torch.where(valid, returns, outputs["value"].detach())
        advantage = torch.where(valid, advantage, torch.zeros_like(advantage))
    log_ratio = new_log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    entropy = masked_mean(dist.entropy(outputs), valid)
    if norm_adv:
        advantage = normalize_advantage(advantage, adv_stats, valid)
    clip = hparams.clip_coef
    weight = batch["weight"] if "weight" in batch.keys() else None  # prioritized sampling's importance weights
    if valid is not None:  # means over the valid rows: weight valid / mean(valid)
        share = valid.to(ratio.dtype) / valid.to(ratio.dtype).mean().clamp(min=1e-8)
        weight = share if weight is None else weight * share
    policy_loss = clipped_policy_loss(ratio, advantage, clip, weight)
    vf_clip = getattr(hparams, "vf_clip_coef", clip)  # its own range (the reference trainer's vf_clip_coef)
    v_loss = value_loss(outputs["value"], old_value, returns, vf_clip if clip_vloss else None, weight)
    total = policy_loss - hparams.ent_coef * entropy + hparams.vf_coef * v_loss
    with torch.no_grad():
        metrics = {
            "policy_loss": policy_loss.detach(),
            "value_loss": v_loss.detach(),
            "entropy": entropy.detach(),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, valid).detach(),
            "clipfrac": masked_mean(((ratio - 1.0).abs() > clip).to(ratio.dtype), valid).detach(),
        }
    total, metrics = add_custom_losses(total, metrics, custom_losses, params, batch, outputs, hparams)
    metrics["total_loss"] = total.detach()
    return total, metrics


def sequence_outputs(policy: Any, params: Any, batch: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A recurrent policy's outputs over a minibatch of env sequences, and the minibatch,
    both flattened to ``[N * T]`` (row ``n * T + t``).

    The policy is unrolled (:func:`~functional_rl.kernel.recurrent.unroll`) from the carry
    the first step started from, ``batch["carry"]``, with the stored episode starts
    ``batch["reset"]``.

    Args:
        batch: ``[N, T, ...]`` entries (``obs``, ``action``, ..., ``reset [N, T]``), the first
            carry ``carry [N, C]``, and possibly 0-d ones (``adv_mean``), which are kept.

    Returns:
        ``(outputs, batch)``: outputs entries ``[N * T, ...]``; every ``[N, T, ...]`` batch
        entry reshaped to ``[N * T, ...]``, ``carry`` dropped.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.recurrent import make_recurrent_policy
        >>> env = make("MemoryCue-v0")
        >>> pol = make_recurrent_policy(env.observation_space, env.action_space, hidden_size=4)
        >>> mb = {"obs": torch.zeros(3, 5, 2), "carry": torch.zeros(3, 8), "reset": torch.zeros(3, 5, dtype=torch.bool),
        ...       "action": torch.zeros(3, 5, dtype=torch.int64), "adv_mean": torch.zeros(())}
        >>> out, flat = sequence_outputs(pol, pol.init(jr.key(0)), mb)
        >>> out["logits"].shape, flat["action"].shape, flat["adv_mean"].shape, "carry" in flat
        (torch.Size([15, 2]), torch.Size([15]), torch.Size([]), False)
    """
    if "carry" not in batch.keys() or "reset" not in batch.keys():
        raise ValueError("a recurrent policy trains on env sequences with 'carry' and 'reset' entries; this minibatch has "
                         f"{sorted(batch.keys())}: collect the trajectory with the recurrent policy's rollout")
    reset = batch["reset"]
    lead = reset.shape
    outputs = unroll(policy, params, batch["obs"], batch["carry"], reset)
    flat = {k: v.flatten(0, 1) if v.dim() >= 2 and v.shape[:2] == lead else v for k, v in batch.items() if k != "carry"}
    return {k: v.flatten(0, 1) for k, v in outputs.items()}, flat


def normalize_advantage(advantage: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None,
                        valid: torch.Tensor | None = None) -> torch.Tensor:
    """``(A - mean) / (std + 1e-8)`` with ``stats = (mean, std)``, default ``A``'s own
    (unbiased std; over the rows where ``valid [N]``, bool, is true when given and ``stats`` is
    not). ``[N] -> [N]``.

    Example:
        >>> normalize_advantage(torch.tensor([1.0, 3.0]))  # mean 2, std sqrt(2)
        tensor([-0.7071,  0.7071])
        >>> normalize_advantage(torch.tensor([1.0, 3.0, 0.0]), valid=torch.tensor([True, True, False]))[:2]
        tensor([-0.7071,  0.7071])
    """
    if stats is not None:
        mean, std = stats
    elif valid is None:
        mean, std = advantage.mean(), advantage.std()
    else:
        mean = masked_mean(advantage, valid)
        n = valid.sum().clamp(min=2).to(advantage.dtype)
        var = torch.where(valid, (advantage - mean) ** 2, torch.zeros_like(advantage)).sum() / (n - 1)
        std = var.sqrt()
    return (advantage - mean) / (std + 1e-8)


def masked_mean(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The mean of ``x [N]`` over the rows where ``valid [N]`` (bool) is true (all rows for
    ``None``); 0 when no row is valid. An invalid row's value, even NaN, does not reach the
    result or its gradient.

    Example:
        >>> masked_mean(torch.tensor([1.0, 3.0, float("nan")]), torch.tensor([True, True, False]))
        tensor(2.)
    """
    if valid is None:
        return x.mean()
    return torch.where(valid, x, torch.zeros_like(x)).sum() / valid.sum().clamp(min=1).to(x.dtype)


def _mean(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    # where, not x * w: a row of weight 0 contributes exactly nothing, even if x is not finite there
    return x.mean() if weight is None else torch.where(weight != 0, x * weight, torch.zeros_like(x)).mean()


def clipped_policy_loss(ratio: torch.Tensor, advantage: torch.Tensor, clip: torch.Tensor | float,
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """PPO's clipped surrogate ``mean(max(-A rho, -A clip(rho, 1 - eps, 1 + eps)))``, 0-d,
    for ``ratio``/``advantage`` float ``[N]``; with ``weight [N]`` (prioritized sampling's
    importance weights) the mean is ``mean(w_i l_i)``.

    Example (A = 1: a ratio above 1 + eps earns no more than 1 + eps):
        >>> clipped_policy_loss(torch.tensor([1.5]), torch.tensor([1.0]), 0.2)
        tensor(-1.2000)
        >>> clipped_policy_loss(torch.tensor([1.5]), torch.tensor([1.0]), 0.2, weight=torch.tensor([0.5]))
        tensor(-0.6000)
    """
    return _mean(torch.maximum(-advantage * ratio, -advantage * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)), weight)


def value_loss(value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, clip: torch.Tensor | float | None,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """``0.5 mean((V - R)^2)``, or with ``clip`` (CleanRL's ``clip_vloss``)
    ``0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))``; 0-d for ``[N]``
    inputs; with ``weight [N]`` each term is weighted as in :func:`clipped_policy_loss`.

    Example (V moved from 0 to 1 towards R = 2; clipped at 0.2 the pessimistic term is 1.8^2):
        >>> v, old, ret = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0])
        >>> value_loss(v, old, ret, None), value_loss(v, old, ret, 0.2)
        (tensor(0.5000), tensor(1.6200))
    """
    if clip is None:
        return 0.5 * _mean((value - returns) ** 2, weight)
    clipped = old_value + torch.clamp(value - old_value, -clip, clip)
    return 0.5 * _mean(torch.maximum((value - returns) ** 2, (clipped - returns) ** 2), weight)


def _loss_label(fn: LossFn) -> str:
    """The user's function as a message names it: its ``__qualname__`` (an adapted
    reference-signature loss's wrapped function's), else :func:`loss_name`."""
    inner = getattr(fn, "fn", None)
    target = inner if callable(inner) else fn
    name = getattr(target, "__qualname__", None)
    return name if isinstance(name, str) else loss_name(fn)


def check_loss_output(fn: LossFn, out: Any) -> tuple[torch.Tensor, Mapping[str, Any]]:
    """``(value, extra metrics)`` of what a custom loss returned, checked against its contract:
    a 0-d floating-point tensor, or a pair ``(that tensor, dict of metrics)`` whose metrics are
    strings mapped to tensors or Python numbers of one value each.

    The checks read only Python types and tensor metadata (dtype, shape), which are static
    under ``torch.func.grad``, ``vmap`` and ``torch.compile``: no host sync, nothing traced.

    Raises:
        TypeError: a Python number, a non-tensor, an integer/bool tensor, a tuple that is not
            a pair or whose second item is not a dict, a metric that is not a number; the
            message names the loss function.
        ValueError: a tensor (or metric) with more than one value.

    Example:
        >>> def per_sample(params, batch, outputs, hparams):
        ...     return outputs["value"] ** 2
        >>> check_loss_output(per_sample, torch.zeros(3))
        Traceback (most recent call last):
        ...
        ValueError: custom loss per_sample returned a tensor of shape [3]; a loss must be a 0-d tensor: reduce it, e.g. with .mean()
        >>> check_loss_output(per_sample, 0.5)
        Traceback (most recent call last):
        ...
        TypeError: custom loss per_sample returned float; a loss must be a 0-d floating-point tensor computed from params or outputs (a Python number has no gradient)
        >>> check_loss_output(per_sample, (torch.tensor(0.5), {"raw": 5.0}))
        (tensor(0.5000), {'raw': 5.0})
    """
    name = _loss_label(fn)
    rule = "return a 0-d floating-point tensor, or a pair (tensor, dict of metrics)"
    extra: Any = {}
    if isinstance(out, tuple):
        if len(out) != 2:
            raise TypeError(f"custom loss {name} returned a tuple of {len(out)} items; {rule}")
        out, extra = out
        if not isinstance(extra, Mapping):
            raise TypeError(f"custom loss {name} returned (loss, {type(extra).__name__}); the second item must be a "
                            "dict of metric name -> tensor or number")
    if isinstance(out, (bool, int, float)):
        raise TypeError(f"custom loss {name} returned {type(out).__name__}; a loss must be a 0-d floating-point tensor "
                        "computed from params or outputs (a Python number has no gradient)")
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"custom loss {name} returned {type(out).__name__}; {rule}")
    if not out.dtype.is_floating_point:
        raise TypeError(f"custom loss {name} returned a tensor of dtype {str(out.dtype).replace('torch.', '')}; a loss must "
                        "be floating-point (an integer has no gradient): compute it in float")
    if out.dim() != 0:
        raise ValueError(f"custom loss {name} returned a tensor of shape {list(out.shape)}; a loss must be a 0-d "
                         "tensor: reduce it, e.g. with .mean()")
    for k, v in extra.items():
        if not isinstance(k, str):
            raise TypeError(f"custom loss {name} reports a metric named {type(k).__name__} {k!r:.60}; names must be strings")
        if isinstance(v, bool) or not isinstance(v, (int, float, torch.Tensor)):
            raise TypeError(f"custom loss {name} reports metric {k!r:.60} as {type(v).__name__}; a metric must be a "
                            "tensor or a number")
        if isinstance(v, torch.Tensor) and v.numel() != 1:
            raise ValueError(f"custom loss {name} reports metric {k!r:.60} of shape {list(v.shape)}; a metric holds "
                             "one value: reduce it, e.g. with .mean()")
    return out, extra


def add_custom_losses(
    total: torch.Tensor, metrics: dict[str, torch.Tensor], custom_losses: Sequence[LossFn],
    params: Any, batch: Mapping[str, torch.Tensor], outputs: Any, hparams: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Add each ``loss(params, batch, outputs, hparams)`` to ``total`` (0-d) and its value and
    extra metrics to ``metrics`` (a new dict), under the loss's name.

    Raises:
        ValueError: a custom loss reports a metric name that is already taken, or breaks its
            contract (:func:`check_loss_output`: also ``TypeError``).

    Example:
        >>> def l2(params, batch, outputs, hparams):
        ...     return torch.tensor(0.5), {"l2/raw": torch.tensor(5.0)}
        >>> total, m = add_custom_losses(torch.tensor(1.0), {}, [l2], None, None, None, None)
        >>> total, sorted(m)
        (tensor(1.5000), ['l2', 'l2/raw'])
    """
    metrics = dict(metrics)
    for fn in custom_losses:
        out, extra = check_loss_output(fn, fn(params, batch, outputs, hparams))
        name = loss_name(fn)
        for k in (name, *extra):
            if k in metrics or k == "total_loss":
                raise ValueError(f"custom loss {name!r} reports metric {k!r}, which is already taken; rename it")
        total = total + out
        metrics[name] = out.detach()
        metrics.update({k: torch.as_tensor(v).detach().reshape(()) for k, v in extra.items()})
    return total, metrics


@dataclasses.dataclass(frozen=True)
class Kickstart:
    """The kickstarting loss (Schmitt et al. 2018, "Kickstarting Deep Reinforcement
    Learning") as a custom loss: distil frozen teacher policies into the student. Pure.

    For teachers ``j = 1..J`` with action distributions ``pi_j`` and values ``V_j`` on the
    minibatch's observations (the student's policy input, action masks applied to both)::

        L = (1 / J) sum_j [ c_a mean_i KL(pi_j(.|s_i) || pi(.|s_i)) + c_v mean_i (V(s_i) - V_j(s_i))^2 ]

    with ``c_a = hparams.kickstart_coef`` and ``c_v = hparams.kickstart_value_coef``
    (tensors in the state: a schedule moves them without recompiling; by default they fall
    linearly to 0, see :func:`~functional_rl.kernel.iteration.run_schedules`). KL(teacher ||
    student) is the forward KL: the student is pushed to cover every action the teacher
    takes. No gradient flows into the teachers. Reported as ``kickstart`` (the weighted
    loss), ``kickstart/kl`` and ``kickstart/value_mse`` (unweighted, averaged over teachers).

    Attributes:
        teachers: ``((policy, params), ...)``; each policy feed-forward, taking the same
            policy input and acting in the same action space as the student.

    Example (a teacher that is the student itself: both terms are 0):
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.config import Hyperparams, PPOConfig
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> env = make("CartPole-v1")
        >>> pol = make_mlp_policy(env.observation_space, env.action_space, (8,))
        >>> params = pol.init(jr.key(0))
        >>> loss = kickstart_loss([(pol, params)])
        >>> obs = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
        >>> value, m = loss(params, {"obs": obs}, pol.apply(params, obs), Hyperparams.from_config(PPOConfig()))
        >>> float(value), float(m["kickstart/kl"]), float(m["kickstart/value_mse"])
        (0.0, 0.0, 0.0)
    """

    teachers: tuple[tuple[Any, Any], ...]
    __name__ = "kickstart"

    def __post_init__(self) -> None:
        if not self.teachers:
            raise ValueError("kickstart_loss needs at least one (policy, params) teacher")
        for policy, _ in self.teachers:
            if is_recurrent(policy):
                raise ValueError("a kickstart teacher must be feed-forward: a recurrent teacher would need its own carry "
                                 "through the rollout; distil from an MLP or CNN teacher")

    def __call__(self, params: Any, batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor], hparams: Any):
        mask = batch["action_mask"] if "action_mask" in batch.keys() else None
        kls, mses = [], []
        for policy, teacher_params in self.teachers:
            with torch.no_grad():
                teacher = mask_logits(policy.apply(teacher_params, batch["obs"]), mask)
            kls.append(policy.distribution.kl(teacher, outputs).mean())
            mses.append(((outputs["value"] - teacher["value"]) ** 2).mean())
        kl, mse = torch.stack(kls).mean(), torch.stack(mses).mean()
        loss = hparams.kickstart_coef * kl + hparams.kickstart_value_coef * mse
        return loss, {"kickstart/kl": kl.detach(), "kickstart/value_mse": mse.detach()}


def kickstart_loss(teachers: Sequence[tuple[Any, Any]]) -> Kickstart:
    """:class:`Kickstart` over ``teachers``, ``[(policy, params), ...]``: a custom loss to pass
    in ``custom_losses`` (``PPOConfig.kickstart_teachers`` adds it for stored teachers:
    :func:`functional_rl.shell.kickstart.load_teachers`).

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> env = make("CartPole-v1")
        >>> pol = make_mlp_policy(env.observation_space, env.action_space, (8,))
        >>> kickstart_loss([(pol, pol.init(jr.key(1)))]).__name__
        'kickstart'
    """
    return Kickstart(tuple((policy, params) for policy, params in teachers))
