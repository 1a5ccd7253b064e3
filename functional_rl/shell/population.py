"""Population-based training in one process: ``train_many``'s vmapped agents, with
:func:`~functional_rl.kernel.pbt.exploit_explore_learner` between iterations.

Every ``exploit_every`` iterations the members are ranked by the mean of their finite
episode returns over those iterations; the bottom ``fraction`` copy a top member's learner
and explore its hyperparameters (:mod:`functional_rl.kernel.pbt`). The whole run is a
:class:`PopulationState` (the stacked agents, PBT's own key and the window of recent
returns), so a checkpoint of it resumes exactly, exploit steps included.

Example (4 members of a tiny CartPole run, an exploit step every 2 iterations):
    >>> import functional_rl as frl
    >>> cfg = frl.PPOConfig(num_envs=2, num_steps=16, num_minibatches=2, total_timesteps=32 * 4)
    >>> result = train_population(cfg, 4, {"learning_rate": [1e-4, 1e-2]}, exploit_every=2, compile=False)
    >>> len(result.histories), len(result.histories[0]), int(result.state.agents.iteration[0])
    (4, 4, 4)
    >>> sorted(result.lineage[0])
    ['after', 'agent_step', 'before', 'iteration', 'member', 'score', 'source', 'source_score']
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

import functional_rl.kernel.random as jr
from functional_rl.kernel.config import PPOConfig
from functional_rl.kernel.iteration import train_iteration
from functional_rl.kernel.pbt import exploit_explore_learner, nan_mean_scores, parse_space, sample_initial
from functional_rl.kernel.state import TrainerState
from functional_rl.kernel.struct import pytree_dataclass

__all__ = ["PopulationState", "PopulationResult", "train_population", "population_state"]


@pytree_dataclass
class PopulationState:
    """A PBT run: ``agents`` (a stacked ``[A]`` :class:`~functional_rl.kernel.state.TrainerState`),
    ``key`` (int64 ``[2]``, PBT's own stream) and ``recent`` (float ``[K, A]``: each member's
    mean episode return in the last ``K = exploit_every`` iterations, NaN where none ended).

    Example:
        >>> import functional_rl as frl
        >>> s = population_state(frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2), 3, {"ent_coef": [0.0, 0.1]}, 5)
        >>> s.recent.shape, s.agents.learner.hparams.ent_coef.shape
        (torch.Size([5, 3]), torch.Size([3]))
    """

    agents: TrainerState
    key: torch.Tensor
    recent: torch.Tensor


@dataclasses.dataclass
class PopulationResult:
    """What :func:`train_population` returns: the final ``state``, one metrics ``histories``
    list per member, and the ``lineage``: one dict per exploit (``iteration``, ``agent_step``,
    ``member``, ``source``, ``score``, ``source_score``, and the searched hyperparameters
    ``before`` and ``after``)."""

    state: PopulationState
    histories: list[list[dict[str, float]]]
    lineage: list[dict[str, Any]]

    @property
    def best(self) -> int:
        """The member with the highest score over the last window (its mean recent return)."""
        return int(torch.argmax(nan_mean_scores(self.state.recent)))


def population_state(config: PPOConfig, population: int, hparams: Mapping[str, Any], exploit_every: int, *,
                     seed: int = 0, env: Any = None, policy: Any = None, env_params: Any = None) -> PopulationState:
    """A fresh population: member ``i`` runs with seed ``config.seed + i`` and starting
    hyperparameters drawn from the space (:func:`~functional_rl.kernel.pbt.sample_initial`,
    key ``seed``)."""
    from functional_rl.shell.batched import stack_states
    from functional_rl.shell.build import resolve_env_policy

    space = parse_space(hparams)
    env, policy = resolve_env_policy(config, env, policy)
    values = sample_initial(jr.key(seed), space, population)
    agents = [{"seed": config.seed + i, **{n: v[i] for n, v in values.items()}} for i in range(population)]
    stacked = stack_states(config, env, policy, agents, env_params=env_params)
    return PopulationState(agents=stacked, key=jr.fold_in(jr.key(seed), 1), recent=torch.full((exploit_every, population), math.nan))


def train_population(
    config: PPOConfig,
    population: int,
    hparams: Mapping[str, Any],
    *,
    exploit_every: int,
    fraction: float = 0.25,
    perturb: Sequence[float] = (0.8, 1.2),
    resample_prob: float = 0.25,
    seed: int = 0,
    env: Any = None,
    policy: Any = None,
    env_params: Any = None,
    compile: bool = True,
    compile_step: bool | None = None,
    state: PopulationState | None = None,
    max_iterations: int | None = None,
    on_iteration: Any = None,
) -> PopulationResult:
    """Population-based training (Jaderberg et al. 2017) of ``population`` members on one
    vmapped kernel (``train_many``'s), for ``config.num_iterations`` iterations.

    Args:
        config: the shared config (static sizes; defaults of the unsearched hyperparameters).
        population: ``A``, the number of members.
        hparams: the search space ``{name: [low, high] | {low, high, log} | {choices}}``
            (:func:`~functional_rl.kernel.pbt.parse_space`): starting values are drawn from
            it, explore keeps values inside it.
        exploit_every: ``K``, iterations between exploit steps (the score window).
        fraction, perturb, resample_prob: as in :func:`~functional_rl.kernel.pbt.exploit_explore`.
        seed: PBT's seed (starting values, exploit and explore draws); member ``i`` trains
            with seed ``config.seed + i``.
        compile: compile the training kernel (once; moving hyperparameters never recompile).
        compile_step: compile the exploit/explore step (``fullgraph``; it never recompiles:
            scores, keys and hyperparameters are tensor inputs). ``None`` (default): as
            ``compile``. It compiles in about 20 s on a 2-core CPU (all its random numbers
            come from one call of the keyed hash, the costly part of a graph to compile).
        state: a :class:`PopulationState` to continue (e.g. loaded from a checkpoint): the
            run resumes exactly.
        max_iterations: stop after this many iterations (the rest can be resumed).
        on_iteration: ``f(state, rows, lineage_entries)`` called after every iteration on the
            host (``rows``: one metrics dict per member), for logging and checkpoints.

    Returns:
        A :class:`PopulationResult`.

    Example (4 members, one exploit step after iteration 2 of 3; the worst member copied):
        >>> import functional_rl as frl
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=16, num_minibatches=2, total_timesteps=32 * 3)
        >>> result = train_population(cfg, 4, {"ent_coef": [0.0, 0.05]}, exploit_every=2, compile=False)
        >>> [(e["iteration"], e["member"] != e["source"]) for e in result.lineage]
        [(2, True)]
    """
    from functional_rl.shell.batched import make_agents_kernel
    from functional_rl.shell.build import resolve_env_policy
    from functional_rl.shell.loop import _host_rows

    if exploit_every < 1:
        raise ValueError(f"exploit_every must be >= 1, got {exploit_every}")
    space = parse_space(hparams)
    env, policy = resolve_env_policy(config, env, policy)
    if state is None:
        state = population_state(config, population, hparams, exploit_every, seed=seed, env=env, policy=policy, env_params=env_params)
    elif state.recent.shape != (exploit_every, population):
        raise ValueError(f"the population state holds {tuple(state.recent.shape)} recent returns; this run has "
                         f"exploit_every={exploit_every} and population={population}")
    kernel = make_agents_kernel(config, env, policy, env_params=env_params, compile=compile)
    step = functools.partial(exploit_explore_learner, space=space, fraction=fraction, perturb=tuple(perturb), resample_prob=resample_prob)
    if compile if compile_step is None else compile_step:
        step = torch.compile(step, fullgraph=True, dynamic=False)
    names = sorted(space)
    agents = [{"seed": 0}] * population
    histories: list[list[dict[str, float]]] = [[] for _ in range(population)]
    lineage: list[dict[str, Any]] = []
    iteration = int(state.agents.iteration[0])
    stop = config.num_iterations if max_iterations is None else min(config.num_iterations, iteration + max_iterations)
    slots = torch.arange(exploit_every)[:, None]
    while iteration < stop:
        agents_state, metrics = train_iteration(state.agents, kernel)
        slot = iteration % exploit_every
        recent = torch.where(slots == slot, metrics["episode_return"].to(state.recent.dtype)[None], state.recent)
        state = state.replace(agents=agents_state, recent=recent)
        iteration += 1
        rows = _host_rows({**metrics, "agent_step": agents_state.agent_step}, agents)
        for member, row in enumerate(rows):
            row.update(iteration=iteration, member=member, **{f"hparam/{n}": float(getattr(agents_state.learner.hparams, n)[member]) for n in names})
            histories[member].append(row)
        entries = []
        if iteration % exploit_every == 0 and iteration < config.num_iterations:
            key, k = jr.split(state.key, 2).unbind(0)
            scores = nan_mean_scores(state.recent)
            before = {n: getattr(state.agents.learner.hparams, n) for n in names}
            learner, source, exploited = step(k, state.agents.learner, scores)
            state = state.replace(agents=state.agents.replace(learner=learner), key=key.contiguous())
            entries = _lineage(iteration, int(rows[0]["agent_step"]), scores, source, exploited, before,
                               {n: getattr(learner.hparams, n) for n in names})
            lineage.extend(entries)
        if on_iteration is not None:
            on_iteration(state, rows, entries)
    return PopulationResult(state=state, histories=histories, lineage=lineage)


def _lineage(iteration: int, agent_step: int, scores: torch.Tensor, source: torch.Tensor, exploited: torch.Tensor,
             before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One host transfer: the exploit step's records (who copied whom, with the
    hyperparameters before and after)."""
    names = sorted(before)
    table = torch.stack([scores.double(), source.double(), exploited.double(), *(before[n].double() for n in names),
                         *(after[n].double() for n in names)]).tolist()
    out = []
    for i, was in enumerate(table[2]):
        if not was:
            continue
        j = int(table[1][i])
        out.append({
            "iteration": iteration, "agent_step": agent_step, "member": i, "source": j,
            "score": table[0][i], "source_score": table[0][j],
            "before": {n: table[3 + k][i] for k, n in enumerate(names)},
            "after": {n: table[3 + len(names) + k][i] for k, n in enumerate(names)},
        })
    return out
