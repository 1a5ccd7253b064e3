"""Schedules for any continuous hyperparameter, as pure functions of a step counter.

A :class:`Schedule` is static config (plain Python values, JSON-able, parsed from a short CLI
string); ``schedule.factor(step)`` is a float32 tensor computed from the step *tensor*, so a
compiled function that takes the step as an input never recompiles as training advances, and
``schedule.value(base, step)`` is ``base * factor``, vmappable over a sweep of ``base`` values.
The kinds are those of the reference trainer's ``lr_scheduler`` (warmup steps, then linear,
cosine, exponential or logarithmic decay), for the learning rate or any other hyperparameter.

With ``W = warmup_steps``, ``S = max(W, start_step)`` (where the decay begins), ``T`` the total
steps and ``e = end_factor``, the progress is ``p = clamp((step - S) / (T - S), 0, 1)`` and

* constant:    ``1``
* linear:      ``1 + (e - 1) p``
* cosine:      ``e + (1 - e) (1 + cos(pi p)) / 2`` (SGDR's annealing without restarts:
  Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017)
* exponential: ``e ** p`` (geometric from 1 to ``e``; ``e > 0``)
* logarithmic: ``1 + (e - 1) log(1 + (E - 1) p)`` with ``E = exp(1)``: ``log(1 + (E - 1) p)``
  runs from 0 at ``p = 0`` to 1 at ``p = 1`` and is concave, so the value moves fastest
  at the start and settles slowly onto ``e`` (the mirror of exponential decay, which is
  convex), with no extra rate parameter to choose;

then, during warmup (``step < W``), times ``(step + 1) / W``: the ramp rises linearly to 1 at
step ``W - 1`` and the first step (step 0) already gets ``1 / W``, never 0. Steps count from 0
(step ``i`` is the ``i``-th update or iteration); negative steps count as 0. Between ``W`` and
``start_step`` the factor holds at 1. With ``end_factor = 0``, no warmup and ``T`` the run's
iteration count, linear is CleanRL's annealing (:func:`~functional_rl.kernel.config.learning_rate_at`).

Example (cosine to 0.1 over 100 steps after 10 steps of warmup):
    >>> import torch
    >>> s = Schedule.parse("cosine:end=0.1,warmup=10,total=110")
    >>> [round(float(s.factor(torch.tensor(i))), 4) for i in (0, 9, 10, 60, 110, 500)]
    [0.1, 1.0, 1.0, 0.55, 0.1, 0.1]
    >>> s.value(torch.tensor([2.0, 4.0]), torch.tensor(60))  # a sweep of two base values
    tensor([1.1000, 2.2000])
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

import torch

from functional_rl.kernel.config import short

__all__ = ["KINDS", "OPTIONS", "Schedule", "step_range_gate", "parse_schedules", "scheduled_hparams"]

#: The schedule kinds, in the order the docs list them.
KINDS = ("constant", "linear", "cosine", "exponential", "logarithmic")

#: CLI option name -> :class:`Schedule` field (``"cosine:end=0.1,warmup=1000"``).
OPTIONS = {"end": "end_factor", "warmup": "warmup_steps", "start": "start_step", "total": "total_steps"}

_DECAYS = {
    "linear": lambda p, e: 1 + (e - 1) * p,
    "cosine": lambda p, e: e + (1 - e) * (1 + torch.cos(math.pi * p)) / 2,
    "exponential": lambda p, e: torch.pow(e, p),
    "logarithmic": lambda p, e: 1 + (e - 1) * torch.log1p((math.e - 1) * p),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A multiplier of a hyperparameter as a function of the step (static config).

    Attributes:
        kind: one of :data:`KINDS`.
        end_factor: the factor at the end (``>= 0``; ``> 0`` for ``"exponential"``; above 1
            makes the value grow); ignored by ``"constant"``.
        warmup_steps: steps of linear ramp ``(step + 1) / warmup_steps`` before the schedule.
        start_step: the step where the decay begins, if later than the warmup's end.
        total_steps: the step where the decay reaches ``end_factor``; ``None`` takes the
            ``total_steps`` passed to :meth:`factor` / :meth:`value` (the run's length).

    Example:
        >>> Schedule("linear", end_factor=0.5, total_steps=10)
        Schedule(kind='linear', end_factor=0.5, warmup_steps=0, start_step=0, total_steps=10)
        >>> Schedule("cosin")
        Traceback (most recent call last):
            ...
        ValueError: Schedule.kind='cosin' is invalid: must be one of 'constant', 'linear', 'cosine', 'exponential', 'logarithmic' (did you mean 'cosine'?)
    """

    kind: str = "constant"
    end_factor: float = 0.0
    warmup_steps: int = 0
    start_step: int = 0
    total_steps: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> None:
            raise ValueError(f"Schedule.{name}={short(getattr(self, name))} is invalid: {rule}")

        if not isinstance(self.kind, str) or self.kind not in KINDS:
            close = difflib.get_close_matches(str(self.kind), KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            bad("kind", f"must be one of {', '.join(map(repr, KINDS))}{hint}")
        e = self.end_factor
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
            bad("end_factor", "must be a finite number >= 0 (the factor the schedule ends at)")
        if self.kind == "exponential" and e <= 0:
            bad("end_factor", "must be > 0 for kind 'exponential' (a geometric decay never reaches 0): "
                "give a small value such as 'exponential:end=0.01', or use 'linear' or 'cosine' to reach 0")
        for name in ("warmup_steps", "start_step"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                bad(name, "must be an integer >= 0")
        if self.total_steps is not None:
            if not _is_int(self.total_steps):
                bad("total_steps", "must be an integer, or None to take the run's length")
            if self.total_steps <= self.decay_start:
                bad("total_steps", f"must be > max(warmup_steps, start_step) = {self.decay_start} (the decay needs "
                    "at least one step): raise total_steps or shorten the warmup")

    @property
    def decay_start(self) -> int:
        """``max(warmup_steps, start_step)``, the step where the decay begins.

        >>> Schedule("linear", warmup_steps=5, start_step=3).decay_start
        5
        """
        return max(self.warmup_steps, self.start_step)

    def factor(self, step: torch.Tensor, total_steps: int | None = None) -> torch.Tensor:
        """The multiplier at ``step``: float32, ``step``'s shape, in ``[0, max(1, end_factor)]``.

        Args:
            step: integer (or float) tensor of any shape, steps counted from 0.
            total_steps: the run's length in steps, used when ``self.total_steps`` is None.

        Example (linear to 0 over 4 steps, CleanRL's annealing of 4 iterations):
            >>> import torch
            >>> Schedule("linear").factor(torch.arange(6), total_steps=4)
            tensor([1.0000, 0.7500, 0.5000, 0.2500, 0.0000, 0.0000])
            >>> Schedule(warmup_steps=4).factor(torch.arange(6))  # constant after warmup
            tensor([0.2500, 0.5000, 0.7500, 1.0000, 1.0000, 1.0000])
        """
        s = step.to(torch.float32).clamp(min=0.0)
        if self.kind == "constant":
            f = torch.ones_like(s)
        else:
            total, begin, e = self._total(total_steps), self.decay_start, float(self.end_factor)
            p = ((s - begin) / (total - begin)).clamp(0.0, 1.0)
            f = _DECAYS[self.kind](p, e).clamp(min(1.0, e), max(1.0, e))  # rounding never leaves [e, 1]
        if self.warmup_steps:
            f = f * ((s + 1) / self.warmup_steps).clamp(max=1.0)
        return f

    def value(self, base: torch.Tensor, step: torch.Tensor, total_steps: int | None = None) -> torch.Tensor:
        """``base * factor(step, total_steps)``: the hyperparameter at ``step`` (shapes broadcast).

        Example:
            >>> import torch
            >>> Schedule("exponential", end_factor=0.01, total_steps=2).value(torch.tensor(0.5), torch.tensor(1))
            tensor(0.0500)
        """
        return base * self.factor(step, total_steps)

    def _total(self, total_steps: int | None) -> int:
        total = self.total_steps if self.total_steps is not None else total_steps
        if total is None:
            raise ValueError(f"Schedule(kind={self.kind!r}) needs its length: set Schedule.total_steps "
                             "('total=N' on the command line) or pass total_steps= to factor / value")
        if not _is_int(total) or total <= self.decay_start:
            raise ValueError(f"total_steps={short(total)} is invalid: must be an integer > max(warmup_steps, "
                             f"start_step) = {self.decay_start}")
        return total

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields.

        >>> Schedule("cosine", end_factor=0.1).to_dict()
        {'kind': 'cosine', 'end_factor': 0.1, 'warmup_steps': 0, 'start_step': 0, 'total_steps': None}
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schedule:
        """Build from a dict of fields, rejecting unknown keys with a did-you-mean hint.

        >>> Schedule.from_dict({"kind": "linear", "end_factor": 0.5}).end_factor
        0.5
        >>> Schedule.from_dict({"warmup": 3})
        Traceback (most recent call last):
            ...
        ValueError: unknown Schedule key 'warmup' (did you mean 'warmup_steps'?)
        """
        names = [f.name for f in dataclasses.fields(cls)]
        for k in d:
            if k not in names:
                close = difflib.get_close_matches(str(k), names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(names)}"
                raise ValueError(f"unknown Schedule key {k!r}{hint}")
        return cls(**d)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Parse ``KIND[:OPTION=VALUE,...]``, options ``end`` (float), ``warmup``, ``start``,
        ``total`` (integers; ``1e6`` is accepted for a whole number).

        Example:
            >>> Schedule.parse("cosine:end=0.1,warmup=1000")
            Schedule(kind='cosine', end_factor=0.1, warmup_steps=1000, start_step=0, total_steps=None)
            >>> Schedule.parse("linear:ends=0")
            Traceback (most recent call last):
                ...
            ValueError: schedule 'linear:ends=0': unknown option 'ends' (did you mean 'end'?); options: end=FLOAT, warmup=INT, start=INT, total=INT
        """
        kind, _, rest = str(text).strip().partition(":")
        kind, fields = kind.strip(), {}
        if kind not in KINDS:
            raise ValueError(f"schedule {text!r}: unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        usage = "options: end=FLOAT, warmup=INT, start=INT, total=INT"
        for item in filter(None, (x.strip() for x in rest.split(","))):
            name, eq, raw = (x.strip() for x in item.partition("="))
            if name not in OPTIONS:
                close = difflib.get_close_matches(name, OPTIONS, n=1)
                raise ValueError(f"schedule {text!r}: unknown option {name!r}"
                                 + (f" (did you mean {close[0]!r}?)" if close else "") + f"; {usage}")
            if not eq or OPTIONS[name] in fields:
                raise ValueError(f"schedule {text!r}: option {name!r} " + ("needs a value" if not eq else "given twice")
                                 + f"; {usage}")
            fields[OPTIONS[name]] = _number(text, name, raw)
        return cls(kind, **fields)

    def to_string(self) -> str:
        """The CLI string :meth:`parse` reads back (options left at their default omitted).

        >>> Schedule.parse("cosine:warmup=1000,end=0.1").to_string()
        'cosine:end=0.1,warmup=1000'
        """
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        opts = [f"{o}={getattr(self, f)!r}" for o, f in OPTIONS.items() if getattr(self, f) != defaults[f]]
        return self.kind + (":" + ",".join(opts) if opts else "")


def _number(text: str, name: str, raw: str) -> float | int:
    """``raw`` as the option's type: a float for ``end``, a whole number for the others."""
    try:
        x = float(raw)
        if name == "end":
            return x
        if x.is_integer():
            return int(raw) if raw.lstrip("+-").isdigit() else int(x)
    except (ValueError, OverflowError):
        pass
    kind = "a number" if name == "end" else "a whole number"
    raise ValueError(f"schedule {text!r}: option {name!r} must be {kind}, got {raw!r}")


def step_range_gate(step: torch.Tensor, start: int | None = None, end: int | None = None) -> torch.Tensor:
    """1.0 where ``start <= step < end``, else 0.0: float32, ``step``'s shape.

    ``None`` leaves that side open. Multiply a loss term by it to switch the term on for a
    range of steps without branching on the step's value (so no recompile as it advances).

    Example:
        >>> import torch
        >>> step_range_gate(torch.arange(6), start=2, end=4)
        tensor([0., 0., 1., 1., 0., 0.])
        >>> step_range_gate(torch.tensor(7), start=5)
        tensor(1.)
    """
    if start is not None and end is not None and end <= start:
        raise ValueError(f"step_range_gate: end={short(end)} must be > start={short(start)} "
                         "(the range [start, end) is empty)")
    on = torch.ones_like(step, dtype=torch.bool)
    if start is not None:
        on = on & (step >= start)
    if end is not None:
        on = on & (step < end)
    return on.to(torch.float32)


def parse_schedules(schedules: Any) -> dict[str, Schedule]:
    """``{hyperparameter name: Schedule}`` from ``PPOConfig.schedules``'s pairs of name and
    schedule string (or any mapping of names to strings or :class:`Schedule` objects).

    Raises:
        ValueError: a name that is not a continuous hyperparameter (with a did-you-mean) or a
            schedule string :meth:`Schedule.parse` refuses.

    Example:
        >>> parse_schedules({"ent_coef": "cosine:end=0"})["ent_coef"].kind
        'cosine'
        >>> try:
        ...     parse_schedules({"ent_coeff": "linear"})
        ... except ValueError as e:
        ...     print(str(e).split(":")[0])
        cannot schedule 'ent_coeff' (did you mean 'ent_coef'?)
    """
    from functional_rl.kernel.config import HYPERPARAM_NAMES

    items = schedules.items() if isinstance(schedules, dict) else schedules
    out: dict[str, Schedule] = {}
    for name, spec in items:
        if name not in HYPERPARAM_NAMES:
            close = difflib.get_close_matches(str(name), HYPERPARAM_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"cannot schedule {short(name)}{hint}: schedules apply to the continuous hyperparameters "
                             f"{', '.join(HYPERPARAM_NAMES)}")
        out[name] = spec if isinstance(spec, Schedule) else Schedule.parse(spec)
    return out


def scheduled_hparams(hparams: Any, schedules: dict[str, Schedule], step: torch.Tensor, total_steps: int) -> Any:
    """The hyperparameters at ``step``: each scheduled one is ``base * schedule.factor(step)``,
    the others are ``hparams``'s own. Pure; ``step`` int64 0-d (or ``[A]`` with ``[A]``
    hyperparameters under ``train_many``).

    The base values stay in the state; the scheduled ones are recomputed from the step each
    iteration, so resuming from a checkpoint continues the schedule exactly and a changing
    value never recompiles (it is a tensor input of the compiled update).

    Example (the entropy coefficient halfway through a linear decay to 0):
        >>> from functional_rl.kernel.config import Hyperparams, PPOConfig
        >>> hp = Hyperparams.from_config(PPOConfig(ent_coef=0.01))
        >>> now = scheduled_hparams(hp, {"ent_coef": Schedule("linear")}, torch.tensor(500), total_steps=1000)
        >>> round(float(now.ent_coef), 6), float(now.gamma) == float(hp.gamma)
        (0.005, True)
    """
    if not schedules:
        return hparams
    return hparams.replace(**{n: s.value(getattr(hparams, n), step, total_steps).to(getattr(hparams, n).dtype)
                              for n, s in schedules.items()})
