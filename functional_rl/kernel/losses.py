"""The PPO objective (Schulman et al. 2017) and the composition of custom losses.

For a minibatch of ``N`` transitions with ratio ``rho = exp(log pi(a|s) - log pi_old(a|s))``:

* policy loss ``L_pi = mean(max(-A rho, -A clip(rho, 1 - eps, 1 + eps)))``;
* value loss ``L_v = 0.5 mean((V - R)^2)``, or with value clipping
  ``0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))``;
* entropy ``H = mean(entropy(pi(.|s)))``;
* total ``L = L_pi - c_ent H + c_v L_v + sum_i L_i`` over custom losses ``L_i``.

Diagnostics (CleanRL): ``approx_kl = mean((rho - 1) - log rho)`` (Schulman's k3 estimator),
``clipfrac = mean(|rho - 1| > eps)``.

A custom loss is ``loss(params, batch, outputs, hp) -> Tensor | (Tensor, dict)`` where
``outputs`` is the current forward pass (so a loss never re-runs the policy). Its value is
reported under the function's ``__name__`` and its dict entries under their own keys.

The reference trainer's signature ``loss(policy, obs, actions, rewards, values, advantages)
-> Tensor`` is accepted too: :func:`adapt_loss` recognises it by its first parameter being
named ``policy`` and wraps it in :class:`SeedLoss`, which passes a :class:`BoundPolicy` (the
policy with the parameters being differentiated) and the minibatch's columns. Such a loss
runs its own forward passes; the native signature avoids that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

__all__ = ["ppo_loss", "LossFn", "BUILTIN_METRICS", "loss_name", "adapt_loss", "BoundPolicy", "SeedLoss"]

LossFn = Callable[..., Any]

BUILTIN_METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "total_loss")


def loss_name(fn: LossFn) -> str:
    """The metric name of a custom loss: its ``__name__`` (or its class name).

    Example:
        >>> def value_l2(params, batch, outputs, hp):
        ...     return 1e-3 * outputs["value"].pow(2).mean()
        >>> loss_name(value_l2)
        'value_l2'
        >>> class Penalty:
        ...     def __call__(self, params, batch, outputs, hp):
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
    hp: Any,
    clip_vloss: bool = True,
    norm_adv: bool = True,
    custom_losses: Sequence[LossFn] = (),
    adv_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip loss and its diagnostics for one minibatch. Pure.

    Args:
        params: policy parameters (differentiated).
        batch: ``obs [N, ...]``, ``action [N]|[N, D]``, ``log_prob [N]``, ``value [N]``,
            ``advantage [N]``, ``returns [N]``.
        policy: a ``Policy`` (its ``apply`` and ``distribution``).
        hp: :class:`~functional_rl.kernel.config.Hyperparams` (``clip_coef``, ``ent_coef``, ``vf_coef``).
        clip_vloss: clip the value update around the old value.
        norm_adv: normalise advantages to zero mean and unit (unbiased) std within the minibatch:
            ``A' = (A - mean) / (std + 1e-8)``.
        custom_losses: extra loss functions (module docstring); they see the raw advantages.
        adv_stats: ``(mean, std)`` 0-d tensors to normalise with instead of this minibatch's own
            (a data-parallel update passes the statistics of the whole minibatch across
            processes, see :func:`functional_rl.kernel.train.advantage_stats`).

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
        ...                    hp=Hyperparams.from_config(PPOConfig()), norm_adv=False)
        >>> float(m["policy_loss"]), float(m["clipfrac"])
        (-2.0, 0.0)
    """
    outputs = policy.apply(params, batch["obs"])
    dist = policy.distribution
    new_log_prob = dist.log_prob(outputs, batch["action"])
    entropy = dist.entropy(outputs).mean()
    log_ratio = new_log_prob - batch["log_prob"]
    ratio = torch.exp(log_ratio)

    advantage = batch["advantage"]
    if norm_adv:
        mean, std = (advantage.mean(), advantage.std()) if adv_stats is None else adv_stats
        advantage = (advantage - mean) / (std + 1e-8)
    clip = hp.clip_coef
    policy_loss = torch.maximum(-advantage * ratio, -advantage * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)).mean()

    new_value = outputs["value"]
    returns = batch["returns"]
    if clip_vloss:
        old_value = batch["value"]
        clipped = old_value + torch.clamp(new_value - old_value, -clip, clip)
        value_loss = 0.5 * torch.maximum((new_value - returns) ** 2, (clipped - returns) ** 2).mean()
    else:
        value_loss = 0.5 * ((new_value - returns) ** 2).mean()

    total = policy_loss - hp.ent_coef * entropy + hp.vf_coef * value_loss
    with torch.no_grad():
        metrics = {
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy.detach(),
            "approx_kl": ((ratio - 1.0) - log_ratio).mean().detach(),
            "clipfrac": ((ratio - 1.0).abs() > clip).to(ratio.dtype).mean().detach(),
        }
    for fn in custom_losses:
        out = fn(params, batch, outputs, hp)
        extra: dict[str, torch.Tensor] = {}
        if isinstance(out, tuple):
            out, extra = out
        name = loss_name(fn)
        for k in (name, *extra):
            if k in metrics or k == "total_loss":
                raise ValueError(f"custom loss {name!r} reports metric {k!r}, which is already taken; rename it")
        total = total + out
        metrics[name] = out.detach()
        metrics.update({k: torch.as_tensor(v).detach() for k, v in extra.items()})
    metrics["total_loss"] = total.detach()
    return total, metrics


class BoundPolicy:
    """A policy with fixed parameters, callable like a module: ``policy(obs) -> outputs``.

    Gradients flow to the parameters it was bound to, so a seed-style loss built on it is
    differentiated like any other term.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> env = make("CartPole-v1")
        >>> policy = make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(8,))
        >>> bound = BoundPolicy(policy, policy.init(jr.key(0)))
        >>> obs = torch.zeros(5, 4)  # [N, 4]
        >>> bound(obs)["logits"].shape, bound.value(obs).shape
        (torch.Size([5, 2]), torch.Size([5]))
        >>> bound.log_prob(obs, torch.zeros(5, dtype=torch.int64)).shape, bound.entropy(obs).shape
        (torch.Size([5]), torch.Size([5]))
    """

    def __init__(self, policy: Any, params: Any):
        self.policy, self.params = policy, params

    def __call__(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The forward pass ``policy.apply(params, obs)`` for ``obs [N, *obs_shape]``."""
        return self.policy.apply(self.params, obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """``V(obs)``, float ``[N]``."""
        return self.policy.value(self.params, obs)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``log pi(actions | obs)``, float ``[N]``."""
        return self.policy.distribution.log_prob(self(obs), actions)

    def entropy(self, obs: torch.Tensor) -> torch.Tensor:
        """Entropy of ``pi(. | obs)``, float ``[N]``."""
        return self.policy.distribution.entropy(self(obs))


class SeedLoss:
    """Adapter: ``loss(policy, obs, actions, rewards, values, advantages)`` -> native signature.

    Calling it as ``loss(params, batch, outputs, hp)`` passes ``BoundPolicy(policy, params)`` and
    ``batch["obs"] [N, ...]``, ``batch["action"] [N]|[N, D]``, ``batch["reward"] [N]``,
    ``batch["value"] [N]``, ``batch["advantage"] [N]`` to the wrapped function.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> env = make("CartPole-v1")
        >>> policy = make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(8,))
        >>> def mean_advantage(policy, obs, actions, rewards, values, advantages):
        ...     return advantages.mean()
        >>> loss = SeedLoss(mean_advantage, policy)
        >>> batch = {"obs": torch.zeros(4, 4), "action": torch.zeros(4, dtype=torch.int64), "reward": torch.ones(4),
        ...          "value": torch.zeros(4), "advantage": torch.tensor([1.0, 2.0, 3.0, 4.0])}
        >>> loss.__name__, loss(policy.init(jr.key(0)), batch, None, None)
        ('mean_advantage', tensor(2.5000))
    """

    def __init__(self, fn: LossFn, policy: Any):
        self.fn, self.policy = fn, policy
        self.__name__ = loss_name(fn)

    def __call__(self, params: Any, batch: Mapping[str, torch.Tensor], outputs: Any, hp: Any) -> torch.Tensor:
        """The wrapped seed-style loss on this minibatch, in the native signature; a 0-d tensor."""
        return self.fn(
            BoundPolicy(self.policy, params), batch["obs"], batch["action"], batch["reward"],
            batch["value"], batch["advantage"],
        )


def adapt_loss(fn: LossFn, policy: Any) -> LossFn:
    """Return ``fn`` in the native signature: seed-style losses (first parameter ``policy``)
    are wrapped in :class:`SeedLoss`; native ones are returned unchanged.

    Raises:
        TypeError: ``fn`` is not callable.

    Example:
        >>> def native(params, batch, outputs, hp):
        ...     return outputs["value"].pow(2).mean()
        >>> def seed_style(policy, obs, actions, rewards, values, advantages):
        ...     return policy.value(obs).pow(2).mean()
        >>> adapt_loss(native, policy=None) is native
        True
        >>> wrapped = adapt_loss(seed_style, policy=None)
        >>> type(wrapped).__name__, loss_name(wrapped)
        ('SeedLoss', 'seed_style')
        >>> adapt_loss(3, policy=None)
        Traceback (most recent call last):
            ...
        TypeError: custom loss 3 is not callable; ...
    """
    import inspect

    if not callable(fn):
        raise TypeError(f"custom loss {fn!r} is not callable; expected loss(params, batch, outputs, hp) "
                        "or loss(policy, obs, actions, rewards, values, advantages)")
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return fn
    return SeedLoss(fn, policy) if params[:1] == ["policy"] else fn
