"""Curricula as pure task samplers whose state lives in ``TrainerState.curriculum``.

A curriculum chooses environment parameters *per episode* from a distribution that changes
with training progress. It is a frozen object with pure methods:

* ``init(key, num_envs) -> CurriculumState``: the first task of every env;
* ``env_params(base, cs)``: the env parameters for this step (per-env ``[B]`` values);
* ``on_step(cs, done) -> cs``: envs whose episode just ended draw their next task;
* ``update(cs, metrics) -> cs``: once per iteration, move the distribution with progress.

Because the state is a pytree inside ``TrainerState``, checkpoints carry it and a resumed run
samples the same tasks. Its random stream is its own key, so adding a curriculum never
changes the training key stream.

Example (CartPole's pole half-length drawn per episode from a range that widens from
``[0.5, 0.5]`` to ``[0.25, 1.0]`` in 4 steps of 0.25 each time the iteration's mean return
reaches 100):
    >>> import torch, functional_rl.kernel.random as jr
    >>> cur = RangeCurriculum("length", start=(0.5, 0.5), end=(0.25, 1.0), threshold=100.0, step=0.25)
    >>> cs = cur.init(jr.key(0), num_envs=3)
    >>> cs.values.tolist()
    [0.5, 0.5, 0.5]
    >>> cs = cur.update(cs, {"episode_return": torch.tensor(150.0)})
    >>> [round(float(x), 4) for x in cur.bounds(cs.level)]
    [0.4375, 0.625]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

import functional_rl.kernel.random as jr
from functional_rl.kernel.struct import pytree_dataclass

__all__ = ["CurriculumState", "RangeCurriculum"]


@pytree_dataclass
class CurriculumState:
    """``values`` float32 ``[B]`` (each env's current task), ``level`` float32 0-d in [0, 1],
    ``key`` the curriculum's own PRNG key.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> cur = RangeCurriculum("gravity", start=(9.8, 9.8), end=(5.0, 15.0), threshold=100.0)
        >>> cs = cur.init(jr.key(0), num_envs=4)
        >>> cs.values.shape, cs.level, cs.key.shape  # [B], 0-d, [2]
        (torch.Size([4]), tensor(0.), torch.Size([2]))
    """

    values: torch.Tensor
    level: torch.Tensor
    key: torch.Tensor


@dataclasses.dataclass(frozen=True)
class RangeCurriculum:
    """One env parameter drawn uniformly per episode from a range that widens with progress.

    The range is ``lerp(start, end, level)`` (both bounds); ``level`` rises by ``step`` (up to
    1) in each iteration whose mean episodic return is at least ``threshold``.

    Attributes:
        name: the env parameter field (e.g. ``"length"`` or ``"gravity"`` of ``CartPoleParams``).
        start: ``(low, high)`` at level 0.
        end: ``(low, high)`` at level 1.
        threshold: mean episodic return that advances the level.
        step: level increment per successful iteration.

    Example (per-env CartPole pole lengths; only the envs whose episode ended draw again):
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import CartPole
        >>> cur = RangeCurriculum("length", start=(0.4, 0.6), end=(0.2, 1.0), threshold=100.0, step=0.5)
        >>> cs = cur.init(jr.key(0), num_envs=3)
        >>> params = cur.env_params(CartPole().default_params(), cs)
        >>> params.length.shape, bool(((params.length >= 0.4) & (params.length < 0.6)).all())
        (torch.Size([3]), True)
        >>> new = cur.on_step(cs, torch.tensor([True, False, False]))
        >>> (new.values == cs.values).tolist()
        [False, True, True]
        >>> cs = cur.update(cs, {"episode_return": torch.tensor(120.0)})
        >>> float(cs.level), [round(float(b), 2) for b in cur.bounds(cs.level)]
        (0.5, [0.3, 0.8])
    """

    name: str
    start: tuple[float, float]
    end: tuple[float, float]
    threshold: float
    step: float = 0.1

    def bounds(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)`` at ``level``."""
        low = self.start[0] + (self.end[0] - self.start[0]) * level
        high = self.start[1] + (self.end[1] - self.start[1]) * level
        return low, high

    def _draw(self, key: torch.Tensor, level: torch.Tensor, n: int) -> torch.Tensor:
        low, high = self.bounds(level)
        return jr.uniform(key, (n,), low=low, high=high)

    def init(self, key: torch.Tensor, num_envs: int) -> CurriculumState:
        """The first task of each of ``num_envs`` envs, drawn at level 0 from ``key`` (int64 ``[2]``).

        Returns a :class:`CurriculumState` with ``values`` float32 ``[num_envs]``.
        """
        level = torch.zeros(())
        k_draw, k_next = jr.split(key, 2).unbind(0)
        return CurriculumState(values=self._draw(k_draw, level, num_envs), level=level, key=k_next)

    def env_params(self, base: Any, cs: CurriculumState) -> Any:
        """``base`` with the curriculum's field replaced by the per-env values ``[B]``."""
        return base.replace(**{self.name: cs.values})

    def on_step(self, cs: CurriculumState, done: torch.Tensor) -> CurriculumState:
        """Envs whose episode ended (``done [B]``) draw their next task."""
        k_draw, k_next = jr.split(cs.key, 2).unbind(0)
        fresh = self._draw(k_draw, cs.level, cs.values.shape[0])
        return cs.replace(values=torch.where(done, fresh, cs.values), key=k_next.contiguous())

    def update(self, cs: CurriculumState, metrics: dict[str, torch.Tensor]) -> CurriculumState:
        """Raise the level if this iteration's mean return reached the threshold (NaN: no)."""
        reached = (metrics["episode_return"] >= self.threshold).to(cs.level.dtype)
        return cs.replace(level=torch.clamp(cs.level + self.step * reached, 0.0, 1.0))

    def metrics(self, cs: CurriculumState) -> dict[str, torch.Tensor]:
        """``curriculum/level``, ``curriculum/low`` and ``curriculum/high`` as 0-d tensors."""
        low, high = self.bounds(cs.level)
        return {"curriculum/level": cs.level, "curriculum/low": torch.as_tensor(low), "curriculum/high": torch.as_tensor(high)}
