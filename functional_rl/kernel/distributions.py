"""Action distributions as stateless objects over explicit parameter dicts.

A policy's forward pass returns ``outputs``, a dict of tensors: ``"logits"`` for a
categorical head, ``"mean"`` and ``"log_std"`` for a diagonal Gaussian, and ``"value"``.
A distribution reads its parameters from ``outputs`` and draws from an explicit key.

Example:
    >>> import torch, functional_rl.kernel.random as jr
    >>> d = Categorical()
    >>> out = {"logits": torch.zeros(2, 4)}
    >>> d.log_prob(out, torch.tensor([0, 3]))
    tensor([-1.3863, -1.3863])
    >>> d.entropy(out)
    tensor([1.3863, 1.3863])
    >>> d.sample(jr.key(0), out).shape
    torch.Size([2])
"""

from __future__ import annotations

import dataclasses
import math

import torch

import functional_rl.kernel.random as jr
from functional_rl.kernel import exact as _exact

__all__ = ["Categorical", "MultiCategorical", "DiagGaussian", "mask_logits", "MASKED_LOGIT"]


@dataclasses.dataclass(frozen=True)
class Categorical:
    """Categorical over ``K`` actions from ``outputs["logits"]`` float ``[..., K]``.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> d = Categorical()
        >>> out = {"logits": torch.tensor([[0.0, 2.0, 0.0], [5.0, 0.0, 0.0]])}  # [B=2, K=3]
        >>> d.mode(out), d.sample(jr.key(0), out).shape
        (tensor([1, 0]), torch.Size([2]))
        >>> d.log_prob(out, torch.tensor([1, 0])).shape, d.entropy(out).shape
        (torch.Size([2]), torch.Size([2]))
    """

    #: compute ``log softmax`` with :func:`functional_rl.kernel.exact.log_softmax`, so a
    #: compiled log-prob has the bits of an eager one (recurrent policies set it).
    exact: bool = False

    def _log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        return _exact.log_softmax(logits) if self.exact else torch.log_softmax(logits, dim=-1)

    def sample(self, key: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """int64 ``[...]`` by the Gumbel-max trick; ``key`` is one key ``[2]`` or one per row
        ``[*batch, 2]`` (the same numbers as :func:`functional_rl.kernel.random.categorical`).
        Equal to ``sample_from_noise(outputs, noise(key, logits.shape))``."""
        logits = outputs["logits"]
        return self.sample_from_noise(outputs, self.noise(key, logits.shape, logits.dtype))

    def noise(self, key: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The Gumbel noise ``g = -log(-log u)`` of :meth:`sample` for logits of ``shape``
        ``[..., K]``, drawn ahead of the forward pass (a rollout draws all its steps' noise in
        one call); ``key`` as in :meth:`sample`.

        Example (drawn ahead or inside ``sample``, the action is the same):
            >>> import functional_rl.kernel.random as jr
            >>> d, out, keys = Categorical(), {"logits": torch.randn(4, 3)}, jr.row_keys(jr.key(0), torch.arange(4))
            >>> bool(torch.equal(d.sample_from_noise(out, d.noise(keys, (4, 3))), d.sample(keys, out)))
            True
        """
        jr._check_key(key)
        u = jr._open_uniform(key, jr._row_shape(key, shape, "categorical"), dtype)
        return -torch.log(-torch.log(u))

    def sample_from_noise(self, outputs: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        """``argmax(logits + noise)``, int64 ``[...]`` for ``noise`` from :meth:`noise`.

        Example:
            >>> Categorical().sample_from_noise({"logits": torch.zeros(1, 3)}, torch.tensor([[0.0, 2.0, 1.0]]))
            tensor([1])
        """
        return torch.argmax(outputs["logits"] + noise, dim=-1)

    def mode(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Greedy action ``argmax logits``, int64 ``[...]``."""
        return torch.argmax(outputs["logits"], dim=-1)

    def log_prob(self, outputs: dict[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        """``log softmax(logits)[action]``, float ``[...]``."""
        logp = self._log_softmax(outputs["logits"])
        return torch.gather(logp, -1, action.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``-sum_a p(a) log p(a)``, float ``[...]``."""
        logp = self._log_softmax(outputs["logits"])
        return -(logp.exp() * logp).sum(-1)


    def kl(self, outputs: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> torch.Tensor:
        """``KL(p || q) = sum_k p_k (log p_k - log q_k)`` with ``p`` from ``outputs`` and ``q``
        from ``other`` (logits ``[..., K]`` each): float ``[...]``. A masked logit
        (:data:`MASKED_LOGIT`) in ``p`` has ``p_k = 0`` and adds nothing.

        Example:
            >>> d = Categorical()
            >>> p, q = {"logits": torch.log(torch.tensor([[0.5, 0.5]]))}, {"logits": torch.log(torch.tensor([[0.9, 0.1]]))}
            >>> round(float(d.kl(p, q)), 4), float(d.kl(p, p))  # 0.5 log(0.5/0.9) + 0.5 log(0.5/0.1)
            (0.5108, 0.0)
        """
        lp, lq = self._log_softmax(outputs["logits"]), self._log_softmax(other["logits"])
        return (lp.exp() * (lp - lq)).sum(-1)


_ONE = Categorical()  # a MultiCategorical's blocks are categoricals


@dataclasses.dataclass(frozen=True)
class MultiCategorical:
    """``K`` independent categoricals (a MultiDiscrete action) from ``outputs["logits"]``
    float ``[..., sum(nvec)]``: block ``k`` (``nvec[k]`` logits) is choice ``k``'s.

    ``log p(a) = sum_k log softmax(logits_k)[a_k]`` and ``H = sum_k H_k``; an action is int64
    ``[..., K]``. Sampling is the Gumbel-max trick per block, with the noise of a
    :class:`Categorical` over all ``sum(nvec)`` logits (so it is drawn the same way).

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> d = MultiCategorical((3, 2))
        >>> out = {"logits": torch.tensor([[0.0, 4.0, 0.0, 0.0, 0.0]])}  # [B=1, 3 + 2]
        >>> d.mode(out), d.sample(jr.key(0), out).shape
        (tensor([[1, 0]]), torch.Size([1, 2]))
        >>> round(float(d.log_prob(out, torch.tensor([[0, 1]]))), 4)  # log(1/(2+e^4)) + log(1/2)
        -4.7291
        >>> round(float(d.entropy({"logits": torch.zeros(1, 5)})), 4)  # log 3 + log 2
        1.7918
    """

    nvec: tuple[int, ...]
    exact: bool = False  # as Categorical.exact

    def _blocks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.shape[-1] != sum(self.nvec):
            raise ValueError(f"MultiCategorical{tuple(self.nvec)}: logits must be [..., {sum(self.nvec)}], got {tuple(x.shape)}")
        return torch.split(x, list(self.nvec), dim=-1)

    def sample(self, key: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """int64 ``[..., K]``; ``key`` one key ``[2]`` or one per row ``[*batch, 2]``."""
        logits = outputs["logits"]
        return self.sample_from_noise(outputs, self.noise(key, logits.shape, logits.dtype))

    def noise(self, key: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Gumbel noise ``[..., sum(nvec)]`` for logits of ``shape`` (as :meth:`Categorical.noise`)."""
        return _ONE.noise(key, shape, dtype)

    def sample_from_noise(self, outputs: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        """``argmax_k(logits_k + noise_k)`` per block: int64 ``[..., K]``."""
        return torch.stack([_ONE.mode({"logits": b}) for b in self._blocks(outputs["logits"] + noise)], dim=-1)

    def mode(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The greedy choice of every block: int64 ``[..., K]``."""
        return torch.stack([_ONE.mode({"logits": b}) for b in self._blocks(outputs["logits"])], dim=-1)

    def log_prob(self, outputs: dict[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        """``sum_k log softmax(logits_k)[action_k]`` for ``action`` int64 ``[..., K]``: float ``[...]``."""
        one = Categorical(self.exact)
        return sum(one.log_prob({"logits": b}, action[..., k]) for k, b in enumerate(self._blocks(outputs["logits"])))

    def entropy(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum_k H(softmax(logits_k))``: float ``[...]``."""
        one = Categorical(self.exact)
        return sum(one.entropy({"logits": b}) for b in self._blocks(outputs["logits"]))

    def kl(self, outputs: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum_k KL(p_k || q_k)`` over the blocks (independent choices): float ``[...]``.

        Example:
            >>> d = MultiCategorical((2, 3))
            >>> float(d.kl({"logits": torch.zeros(1, 5)}, {"logits": torch.zeros(1, 5)}))
            0.0
        """
        one = Categorical(self.exact)
        pairs = zip(self._blocks(outputs["logits"]), self._blocks(other["logits"]))
        return sum(one.kl({"logits": p}, {"logits": q}) for p, q in pairs)


#: The logit of an illegal action. Finite on purpose: with ``-inf`` the entropy's
#: ``p log p`` would be ``0 * -inf = nan``; with ``-1e9`` it is an exact 0 (``exp(-1e9)``
#: underflows to 0) while the log-prob of the action is ``-1e9`` and Gumbel noise (at most
#: ~40 in float32) can never lift it over a legal action's logit.
MASKED_LOGIT = -1e9


def mask_logits(outputs: dict[str, torch.Tensor], action_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``outputs`` with the logits of illegal actions set to :data:`MASKED_LOGIT`.

    Sampling, :meth:`Categorical.mode`, ``log_prob`` and ``entropy`` of the result are those
    of the distribution restricted to the legal actions (renormalised): an illegal action is
    never drawn, and its logit gets no gradient. Works for :class:`Categorical` and, with a
    mask over the concatenated blocks, :class:`MultiCategorical` (each block needs one legal
    choice). ``None`` returns ``outputs`` unchanged.

    Args:
        outputs: the policy's outputs with ``logits`` float ``[..., K]``.
        action_mask: bool ``[..., K]``, True where the action is legal; every row needs at
            least one legal action.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> out = mask_logits({"logits": torch.zeros(1, 4), "value": torch.zeros(1)}, torch.tensor([[True, False, True, False]]))
        >>> d = Categorical()
        >>> d.log_prob(out, torch.tensor([2])).exp(), round(float(d.entropy(out)), 4)  # uniform over 2 legal actions
        (tensor([0.5000]), 0.6931)
        >>> many = mask_logits({"logits": torch.zeros(64, 4)}, torch.tensor([True, False, True, False]).expand(64, 4))
        >>> sorted(set(d.sample(jr.row_keys(jr.key(0), torch.arange(64)), many).tolist()))  # only legal ones drawn
        [0, 2]
    """
    if action_mask is None:
        return outputs
    logits = outputs["logits"]
    if action_mask.shape[-1] != logits.shape[-1]:
        raise ValueError(f"action_mask has {action_mask.shape[-1]} entries per row but the policy has {logits.shape[-1]} logits")
    return {**outputs, "logits": logits.masked_fill(~action_mask.bool(), MASKED_LOGIT)}


@dataclasses.dataclass(frozen=True)
class DiagGaussian:
    """Diagonal Gaussian from ``outputs["mean"]`` and ``outputs["log_std"]``, both ``[..., D]``.

    ``log_prob`` sums over the last axis:
    ``log N(a; mu, sigma) = -sum_d [(a_d - mu_d)^2 / (2 sigma_d^2) + log sigma_d + log(2 pi) / 2]``.
    Actions are unbounded here; environments clip them to their bounds, and the log-prob is
    always of the sampled, unclipped action.

    Methods: ``sample(key, outputs)`` and ``mode(outputs)`` give float ``[..., D]``;
    ``log_prob(outputs, action [..., D])`` and ``entropy(outputs)`` give float ``[...]``.
    ``log_std`` may be a state-independent ``[D]`` that broadcasts against ``mean``.

    Example (a standard normal in two dimensions):
        >>> import functional_rl.kernel.random as jr
        >>> d = DiagGaussian()
        >>> out = {"mean": torch.zeros(3, 2), "log_std": torch.zeros(2)}  # [B=3, D=2]
        >>> d.sample(jr.key(0), out).shape, d.mode(out).shape
        (torch.Size([3, 2]), torch.Size([3, 2]))
        >>> d.log_prob(out, torch.zeros(3, 2))  # -log(2 pi)
        tensor([-1.8379, -1.8379, -1.8379])
        >>> d.entropy(out)  # 1 + log(2 pi)
        tensor([2.8379, 2.8379, 2.8379])
    """

    exact: bool = False  # log_prob's exp(log_std) by functional_rl.kernel.exact.exp (see Categorical.exact)

    def sample(self, key: torch.Tensor, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``mean + exp(log_std) * z`` with ``z ~ N(0, 1)`` from ``key``; float ``[..., D]``.

        ``key`` is one key ``[2]``, or one per row ``[*batch, 2]`` (row ``b`` of the sample
        then depends on ``key[b]`` only)."""
        mean = outputs["mean"]
        return self.sample_from_noise(outputs, self.noise(key, mean.shape, mean.dtype))

    def noise(self, key: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The standard normal ``z`` of :meth:`sample` for a mean of ``shape`` ``[..., D]``,
        drawn ahead of the forward pass; ``key`` as in :meth:`sample`.

        Example:
            >>> import functional_rl.kernel.random as jr
            >>> DiagGaussian().noise(jr.key(0), (5, 2)).shape
            torch.Size([5, 2])
        """
        return jr.normal(key, jr._row_shape(key, shape, "DiagGaussian.sample"), dtype)

    def sample_from_noise(self, outputs: dict[str, torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        """``mean + exp(log_std) * noise``, float ``[..., D]`` for ``noise`` from :meth:`noise`.

        Example:
            >>> DiagGaussian().sample_from_noise({"mean": torch.ones(1, 2), "log_std": torch.zeros(2)}, torch.tensor([[0.5, -1.0]]))
            tensor([[1.5000, 0.0000]])
        """
        return outputs["mean"] + outputs["log_std"].exp() * noise

    def mode(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean, float ``[..., D]``."""
        return outputs["mean"]

    def log_prob(self, outputs: dict[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        """``log N(action; mean, exp(log_std))`` summed over the last axis; ``action [..., D]`` -> float ``[...]``."""
        mean, log_std = outputs["mean"], outputs["log_std"]
        z = (action - mean) / (_exact.exp(log_std) if self.exact else log_std.exp())
        return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum_d (log_std_d + (1 + log(2 pi)) / 2)``, float ``[...]``."""
        log_std = outputs["log_std"] + torch.zeros_like(outputs["mean"])
        return (log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1)

    def kl(self, outputs: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> torch.Tensor:
        """``KL(p || q) = sum_d [log s_q - log s_p + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2]``
        with ``p`` from ``outputs`` and ``q`` from ``other``: float ``[...]``.

        Example (unit variances: half the squared distance of the means):
            >>> d = DiagGaussian()
            >>> p, q = {"mean": torch.zeros(1, 2), "log_std": torch.zeros(2)}, {"mean": torch.ones(1, 2), "log_std": torch.zeros(2)}
            >>> float(d.kl(p, q))
            1.0
        """
        mp, lp = outputs["mean"], outputs["log_std"] + torch.zeros_like(outputs["mean"])
        mq, lq = other["mean"], other["log_std"] + torch.zeros_like(other["mean"])
        return (lq - lp + (torch.exp(2 * lp) + (mp - mq) ** 2) / (2 * torch.exp(2 * lq)) - 0.5).sum(-1)
