"""Population-based training's exploit and explore (Jaderberg et al. 2017, "Population
Based Training of Neural Networks") as one pure function of a stacked population. Pure.

A population is ``A`` learners stacked on a leading axis (``train_many``'s layout: every
leaf of :class:`~functional_rl.kernel.state.LearnerState` is ``[A, ...]``). Every few
iterations the members are ranked by a score (their recent mean return):

* **exploit**: each member in the bottom ``fraction`` copies the whole learner (parameters,
  optimizer moments and step counts, normalisation statistics, hyperparameters) of a member
  drawn uniformly from the top ``fraction``; as a gather over the agent axis, every other
  member gathers itself, so its learner is unchanged bit for bit;
* **explore**: each copied member then moves every searched hyperparameter: with probability
  ``resample_prob`` it is drawn afresh from its range (log-uniform for a ``log`` range), else
  multiplied by one of ``perturb``'s factors, and clipped to the range; a hyperparameter
  searched over a list of choices is drawn afresh from the list.

Env states and keys are not part of a learner: a member keeps its own envs and random stream.
Everything is tensor maths with static shapes (ranks by ``argsort``, copies by index, moves
by ``torch.where``), so the step compiles once and never recompiles.

Example (4 members, the worst copies the best and perturbs its learning rate):
    >>> import torch, functional_rl.kernel.random as jr
    >>> space = {"learning_rate": Range(1e-5, 1e-1, log=True)}
    >>> lr = torch.tensor([1e-3, 2e-3, 3e-3, 4e-3])
    >>> new, source, exploited = exploit_explore(jr.key(0), {"lr": lr}, torch.tensor([9.0, 5.0, 1.0, 7.0]),
    ...     space, get=lambda t: {"learning_rate": t["lr"]}, put=lambda t, h: {"lr": h["learning_rate"]})
    >>> source.tolist(), exploited.tolist()
    ([0, 1, 0, 3], [False, False, True, False])
    >>> round(float(new["lr"][2] / lr[0]), 4) in (0.8, 1.2) or 1e-5 <= float(new["lr"][2]) <= 1e-1
    True
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree

import functional_rl.kernel.random as jr

__all__ = ["Range", "Choices", "parse_space", "exploit_explore", "exploit_explore_learner", "sample_initial", "nan_mean_scores"]


@dataclasses.dataclass(frozen=True)
class Range:
    """A continuous search range ``[low, high]``; ``log`` draws and reads it on a log scale.

    Example:
        >>> [f"{v:.3g}" for v in Range(1e-5, 1e-1, log=True).sample(torch.tensor([0.0, 0.5, 1.0]))]
        ['1e-05', '0.001', '0.1']
    """

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"a PBT range needs finite low <= high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale PBT range needs low > 0, got {self.low}")

    def sample(self, u: torch.Tensor) -> torch.Tensor:
        """The value at quantile ``u`` in ``[0, 1]`` (float32, shaped like ``u``)."""
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return torch.exp(lo + (hi - lo) * u)
        return self.low + (self.high - self.low) * u

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.low, self.high)


@dataclasses.dataclass(frozen=True)
class Choices:
    """A finite set of values of a continuous hyperparameter (e.g. ``gamma`` in
    ``(0.98, 0.99, 0.995)``); explore draws a new one uniformly.

    Example:
        >>> Choices((0.98, 0.99)).sample(torch.tensor([0.1, 0.9])).tolist()
        [0.9800000190734863, 0.9900000095367432]
    """

    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.values or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in self.values):
            raise ValueError(f"PBT choices must be a non-empty list of finite numbers, got {self.values!r}")

    def sample(self, u: torch.Tensor) -> torch.Tensor:
        table = torch.tensor(self.values, dtype=torch.float32, device=u.device)
        return table[(u * len(self.values)).long().clamp(max=len(self.values) - 1)]


Space = Mapping[str, Any]


def parse_space(spec: Mapping[str, Any], names: Sequence[str] | None = None) -> dict[str, Range | Choices]:
    """A search space from plain values: ``[low, high]`` (a :class:`Range`, log scale when
    ``high / low >= 100`` and ``low > 0``), ``{"low": .., "high": .., "log": bool}``, or
    ``{"choices": [...]}``; :class:`Range` / :class:`Choices` are taken as they are.

    ``names`` are the keys a space may hold (default: the continuous hyperparameters that PBT
    can move, ``HYPERPARAM_NAMES``); ``functional-rl tune`` passes every numeric ``PPOConfig``
    field it can search.

    Example:
        >>> parse_space({"learning_rate": [1e-5, 1e-1], "ent_coef": {"low": 0.0, "high": 0.02}, "gamma": {"choices": [0.98, 0.99]}})
        {'learning_rate': Range(low=1e-05, high=0.1, log=True), 'ent_coef': Range(low=0.0, high=0.02, log=False), 'gamma': Choices(values=(0.98, 0.99))}
        >>> parse_space({"update_epochs": {"choices": [2, 4]}}, names=["update_epochs"])
        {'update_epochs': Choices(values=(2.0, 4.0))}
        >>> parse_space({"learnig_rate": [1e-5, 1e-1]}, names=["learning_rate", "ent_coef"])
        Traceback (most recent call last):
        ...
        ValueError: cannot search 'learnig_rate' (did you mean 'learning_rate'?); choose from learning_rate, ent_coef
    """
    from functional_rl.kernel.config import HYPERPARAM_NAMES

    allowed = HYPERPARAM_NAMES if names is None else tuple(names)
    what = "PBT space" if names is None else "search space"
    out: dict[str, Range | Choices] = {}
    for name, value in spec.items():
        if name not in allowed:
            if names is None:
                raise ValueError(f"cannot search {name!r} with PBT: it is not a continuous hyperparameter; choose from {', '.join(HYPERPARAM_NAMES)}")
            close = difflib.get_close_matches(str(name), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"cannot search {name!r}{hint}; choose from {', '.join(allowed)}")
        if isinstance(value, (Range, Choices)):
            out[name] = value
        elif isinstance(value, Mapping) and "choices" in value:
            choices = value["choices"]
            if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in choices):
                raise ValueError(f"{what} for {name!r}: choices must be a list of numbers, got {choices!r}")
            out[name] = Choices(tuple(float(v) for v in choices))
        elif isinstance(value, Mapping):
            missing = [k for k in ("low", "high") if k not in value]
            extra = sorted(set(value) - {"low", "high", "log"})
            if missing or extra:
                raise ValueError(f"{what} for {name!r} must be {{low, high, log}} or {{choices: [...]}}, got {value!r}")
            low, high = _number(name, value["low"], what), _number(name, value["high"], what)
            out[name] = Range(low, high, bool(value.get("log", low > 0 and high / low >= 100)))
        elif isinstance(value, Sequence) and len(value) == 2 and not isinstance(value, str):
            low, high = _number(name, value[0], what), _number(name, value[1], what)
            out[name] = Range(low, high, low > 0 and high / low >= 100)
        else:
            raise ValueError(f"{what} for {name!r} must be [low, high], {{low, high, log}} or {{choices: [...]}}, got {value!r}")
    return out


def _number(name: str, value: Any, what: str) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} for {name!r}: a range's ends must be numbers, got {value!r}") from None


def sample_initial(key: torch.Tensor, space: Mapping[str, Range | Choices], population: int) -> dict[str, list[float]]:
    """Every member's starting value of every searched hyperparameter, drawn from ``key``
    (log-uniform for a log range): ``{name: [A values]}``.

    Example:
        >>> values = sample_initial(jr.key(0), {"learning_rate": Range(1e-5, 1e-1, log=True)}, 8)
        >>> len(values["learning_rate"]), all(1e-5 <= v <= 1e-1 for v in values["learning_rate"])
        (8, True)
    """
    out = {}
    for i, (name, dist) in enumerate(sorted(space.items())):
        u = jr.uniform(jr.fold_in(key, i), (population,))
        out[name] = [float(v) for v in dist.sample(u)]
    return out


def nan_mean_scores(returns: torch.Tensor) -> torch.Tensor:
    """The score of each member: the mean of its finite recent returns ``[K, A] -> [A]``
    (``-inf`` for a member with none: it ranks last).

    Example:
        >>> nan_mean_scores(torch.tensor([[1.0, float("nan")], [3.0, float("nan")]]))
        tensor([2., -inf])
    """
    finite = torch.isfinite(returns)
    total = torch.where(finite, returns, torch.zeros_like(returns)).sum(0)
    count = finite.sum(0)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, -math.inf))


def exploit_explore(
    key: torch.Tensor,
    learner: Any,
    scores: torch.Tensor,
    space: Mapping[str, Range | Choices],
    *,
    get: Callable[[Any], Mapping[str, torch.Tensor]],
    put: Callable[[Any, Mapping[str, torch.Tensor]], Any],
    fraction: float = 0.25,
    perturb: Sequence[float] = (0.8, 1.2),
    resample_prob: float = 0.25,
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """One PBT step on a stacked population (module docstring). Pure.

    Args:
        key: int64 ``[2]``, this step's key.
        learner: any pytree whose tensor leaves are ``[A, ...]`` (a stacked ``LearnerState``).
        scores: float ``[A]``, higher is better (NaN ranks last).
        space: ``{name: Range | Choices}``, the searched hyperparameters.
        get: ``learner -> {name: [A] tensor}``, the searched hyperparameters' values.
        put: ``(learner, {name: [A] tensor}) -> learner`` with those values replaced.
        fraction: the share of the population in the bottom (and in the top), at least one
            member each; static.
        perturb: the factors a perturbed value is multiplied by, one drawn per value.
        resample_prob: the chance a value is drawn afresh from its range instead.

    Returns:
        ``(learner, source int64 [A], exploited bool [A])``: member ``i`` now holds the
        learner of ``source[i]`` (itself unless exploited) with explored hyperparameters.

    Example (a plain dict as the "learner"; the 2 worst of 8 copy from the 2 best):
        >>> hp = {"ent_coef": torch.linspace(0.0, 0.07, 8)}
        >>> new, source, exploited = exploit_explore(jr.key(2), hp, torch.arange(8.0), {"ent_coef": Range(0.0, 0.1)},
        ...                                          get=lambda t: t, put=lambda t, v: v)
        >>> exploited.tolist()[:3], all(s in (6, 7) for s in source[:2].tolist()), source[2:].tolist()
        ([True, True, False], True, [2, 3, 4, 5, 6, 7])
    """
    A = scores.shape[0]
    n = max(1, int(fraction * A))
    if 2 * n > A:
        raise ValueError(f"PBT fraction={fraction} of a population of {A} leaves no member between bottom and top; lower it")
    scores = torch.where(torch.isnan(scores), torch.full_like(scores, -math.inf), scores)
    order = torch.argsort(scores, stable=True)  # ascending: the worst first
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(A, device=order.device))
    exploited = rank < n
    # Every draw of the step from one call of the keyed hash (each call is a large part of
    # the compiled graph): row 0 picks the sources, rows 1 + 3i .. 3 + 3i move value i.
    names = sorted(space)
    u = jr.uniform(key, (1 + 3 * len(names), A))
    top = order[A - n:]  # [n]
    pick = (u[0] * n).long().clamp(max=n - 1)
    source = torch.where(exploited, top[pick], torch.arange(A, device=order.device))
    copied = pytree.tree_map(lambda x: x[source] if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == A else x, learner)
    values = dict(get(copied))
    factors = torch.tensor(list(perturb), dtype=torch.float32, device=scores.device)
    moved = {}
    for i, name in enumerate(names):
        dist = space[name]
        old = values[name]
        fresh = dist.sample(u[1 + 3 * i]).to(old.dtype)
        if isinstance(dist, Range):
            resample = u[2 + 3 * i] < resample_prob
            factor = factors[(u[3 + 3 * i] * len(perturb)).long().clamp(max=len(perturb) - 1)].to(old.dtype)
            new = torch.where(resample, fresh, dist.clip(old * factor))
        else:
            new = fresh
        moved[name] = torch.where(exploited, new, old)
    return put(copied, moved), source, exploited


def exploit_explore_learner(key: torch.Tensor, learner: Any, scores: torch.Tensor, space: Mapping[str, Range | Choices],
                            **kwargs: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """:func:`exploit_explore` on a stacked :class:`~functional_rl.kernel.state.LearnerState`,
    whose ``hparams`` hold the searched hyperparameters.

    Example:
        >>> import functional_rl as frl
        >>> from functional_rl.shell.batched import agent_grid, stack_states
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2)
        >>> env = frl.envs.make("CartPole-v1"); policy = frl.make_mlp_policy(env.observation_space, env.action_space)
        >>> states = stack_states(cfg, env, policy, agent_grid([0, 1, 2, 3]))
        >>> learner, source, exploited = exploit_explore_learner(jr.key(1), states.learner, torch.tensor([3.0, 0.0, 1.0, 2.0]),
        ...                                                      {"ent_coef": Range(0.0, 0.05)})
        >>> source.tolist(), bool(torch.equal(learner.params["actor"][0]["w"][1], states.learner.params["actor"][0]["w"][0]))
        ([0, 0, 2, 3], True)
    """
    return exploit_explore(
        key, learner, scores, space,
        get=lambda lr: {name: getattr(lr.hparams, name) for name in space},
        put=lambda lr, values: lr.replace(hparams=lr.hparams.replace(**values)),
        **kwargs,
    )
