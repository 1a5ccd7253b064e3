"""Custom losses in the reference trainer's signature, adapted to the native one.

The reference trainer's losses are ``loss(policy, obs, actions, rewards, values,
advantages) -> Tensor``. :func:`adapt_loss` recognises that signature by its first parameter
being named ``policy`` and wraps the function in :class:`ReferenceSignatureLoss`, which passes a
:class:`BoundPolicy` (the policy with the parameters being differentiated) and the
minibatch's columns. Such a loss runs its own forward passes; the native signature
``loss(params, batch, outputs, hparams)`` (:mod:`functional_rl.kernel.losses`) avoids that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from functional_rl.kernel.losses import LossFn, loss_name

__all__ = ["adapt_loss", "BoundPolicy", "ReferenceSignatureLoss"]


class BoundPolicy:
    """A policy with fixed parameters, callable like a module: ``policy(obs) -> outputs``.

    Gradients flow to the parameters it was bound to, so a reference-signature loss built on it is
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


class ReferenceSignatureLoss:
    """Adapter: ``loss(policy, obs, actions, rewards, values, advantages)`` -> native signature.

    Calling it as ``loss(params, batch, outputs, hparams)`` passes ``BoundPolicy(policy, params)`` and
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
        >>> loss = ReferenceSignatureLoss(mean_advantage, policy)
        >>> batch = {"obs": torch.zeros(4, 4), "action": torch.zeros(4, dtype=torch.int64), "reward": torch.ones(4),
        ...          "value": torch.zeros(4), "advantage": torch.tensor([1.0, 2.0, 3.0, 4.0])}
        >>> loss.__name__, loss(policy.init(jr.key(0)), batch, None, None)
        ('mean_advantage', tensor(2.5000))
    """

    def __init__(self, fn: LossFn, policy: Any):
        self.fn, self.policy = fn, policy
        self.__name__ = loss_name(fn)

    def __call__(self, params: Any, batch: Mapping[str, torch.Tensor], outputs: Any, hparams: Any) -> torch.Tensor:
        """The wrapped reference-signature loss on this minibatch, in the native signature; a 0-d tensor."""
        return self.fn(
            BoundPolicy(self.policy, params), batch["obs"], batch["action"], batch["reward"],
            batch["value"], batch["advantage"],
        )


def adapt_loss(fn: LossFn, policy: Any) -> LossFn:
    """Return ``fn`` in the native signature: reference-signature losses (first parameter ``policy``)
    are wrapped in :class:`ReferenceSignatureLoss`; native ones are returned unchanged.

    Raises:
        TypeError: ``fn`` is not callable.

    Example:
        >>> def native(params, batch, outputs, hparams):
        ...     return outputs["value"].pow(2).mean()
        >>> def reference_style(policy, obs, actions, rewards, values, advantages):
        ...     return policy.value(obs).pow(2).mean()
        >>> adapt_loss(native, policy=None) is native
        True
        >>> wrapped = adapt_loss(reference_style, policy=None)
        >>> type(wrapped).__name__, loss_name(wrapped)
        ('ReferenceSignatureLoss', 'reference_style')
        >>> adapt_loss(3, policy=None)
        Traceback (most recent call last):
            ...
        TypeError: custom loss 3 is not callable; ...
    """
    import inspect

    if not callable(fn):
        raise TypeError(f"custom loss {fn!r} is not callable; expected loss(params, batch, outputs, hparams) "
                        "or loss(policy, obs, actions, rewards, values, advantages)")
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return fn
    return ReferenceSignatureLoss(fn, policy) if params[:1] == ["policy"] else fn
