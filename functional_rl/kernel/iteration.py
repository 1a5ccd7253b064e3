"""One training iteration, composed from the step functions of a :class:`StepFns` bundle.

One iteration (PureJaxRL's shape, with named steps instead of tuple carries)::

    state, traj  = rollout(state)                          # [T, B]
    batch        = make_batch(traj)                        # GAE, flattened [T * B]
    repeat update_epochs:
        key, mbs = epoch_minibatches(key, batch)           # [M, N / M]
        for each minibatch: learner = update(learner, mb)  # one gradient step
    metrics      = finish(update metrics, traj, batch)
    state        = state.replace(iteration = iteration + 1)

Everything here is pure and written for ONE learner; metrics come back as 0-d tensors, synced
to the host by the shell once per iteration. The glue in this module never touches a tensor
itself: it only sequences the bundle's functions, stacks per-step outputs on a new leading
axis and indexes minibatches on the leading axis. That is what lets the shell train many
learners with the same glue (:func:`functional_rl.shell.batched.make_agents_kernel`): it
wraps each step function in ``torch.func.vmap`` with the agent axis placed after the loop
axes, and no function here takes an agent-axis flag.

Examples use the doctest fixture of ``functional_rl/conftest.py`` (``cfg``: 2 envs x 4
steps, 2 minibatches; ``env``: CartPole; ``policy``: an MLP; ``state``: a fresh state).
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from tensordict import TensorDict

from functional_rl.kernel.config import PPOConfig
from functional_rl.kernel.losses import LossFn
from functional_rl.kernel.metrics import mean_metrics
from functional_rl.kernel.parallel import AllReduce
from functional_rl.kernel.schedules import Schedule, parse_schedules, scheduled_hparams
from functional_rl.kernel.state import TrainerState

__all__ = ["StepFns", "train_epoch", "train_on_trajectory", "train_iteration", "iteration_hparams", "run_schedules"]


@dataclasses.dataclass(frozen=True)
class StepFns:
    """The static half of training: the config, env, policy and the step functions bound to
    them (possibly compiled, possibly vmapped over many learners). Frozen and stateless:
    every changing value lives in :class:`~functional_rl.kernel.state.TrainerState`. Built by
    :func:`functional_rl.shell.build.make_kernel`.

    Attributes:
        rollout: ``state -> (state, trajectory [T, B])``, the iteration's ``num_steps`` steps
            (a loop of ``rollout_step``, or for a pure env on request one compiled call of
            :func:`~functional_rl.kernel.rollout.scan_rollout`).
        rollout_step: ``state -> (state, transition)`` (:func:`~functional_rl.kernel.rollout.rollout_step`).
        critic: ``(params, obs [T, B, ...]) -> V [T, B]``.
        make_batch: ``(trajectory [T, B], hparams) -> batch [N]``
            (:func:`~functional_rl.kernel.update.make_batch`).
        epoch_minibatches: ``(key, env_ids, batch) -> (key, minibatches [M, N / M])``
            (:func:`~functional_rl.kernel.update.epoch_minibatches`).
        update: ``(params, opt_state, minibatch, hparams) -> (params, opt_state, metrics)``
            (:func:`~functional_rl.kernel.update.update_minibatch` with the run's optimizer).
        finish: ``(metrics, trajectory, batch, params) -> metrics``, the iteration's statistics
            (:func:`~functional_rl.kernel.metrics.iteration_metrics`).
        learning_rate: ``(num_updates, hparams) -> lr``, the optimizer's schedule (reported).
        vtrace_batch: ``(params, batch, hparams) -> batch`` with V-trace advantages and targets
            (:func:`~functional_rl.kernel.update.vtrace_batch`), run before every epoch when
            ``config.vtrace``.
        curriculum: optional task sampler (:mod:`functional_rl.kernel.curriculum`).
        all_reduce: ``None`` in one process; in a data-parallel run a function summing a 1-D
            tensor over all processes (:func:`functional_rl.shell.distributed.process_group_sum`).
        world_size: number of processes (1 without ``torch.distributed``).

    Example:
        >>> kernel = frl.make_kernel(cfg, env, policy)
        >>> kernel.compiled
        False
        >>> state2, transition = kernel.rollout_step(state)
        >>> transition["obs"].shape, kernel.critic(state2.learner.params, state2.envs.obs).shape  # [B, 4], [B]
        (torch.Size([2, 4]), torch.Size([2]))
    """

    config: PPOConfig
    env: Any
    env_params: Any
    policy: Any
    custom_losses: tuple[LossFn, ...]
    rollout: Callable[..., Any]
    rollout_step: Callable[..., Any]
    critic: Callable[..., Any]
    make_batch: Callable[..., Any]
    epoch_minibatches: Callable[..., Any]
    update: Callable[..., Any]
    finish: Callable[..., Any]
    learning_rate: Callable[..., Any]
    compiled: bool = False
    vtrace_batch: Callable[..., Any] | None = None
    curriculum: Any = None
    all_reduce: AllReduce | None = None
    world_size: int = 1


def train_epoch(state: TrainerState, batch: TensorDict, fns: StepFns, hparams: Any = None) -> tuple[TrainerState, dict[str, torch.Tensor]]:
    """One pass over ``batch`` in ``num_minibatches`` shuffled minibatches. Pure.

    The order comes from ``state.key`` (split; the state carries the new key): every
    minibatch holds ``num_steps / num_minibatches`` random steps of every env.

    Args:
        batch: TensorDict ``[N]`` with ``MINIBATCH_KEYS``, ``N = num_envs * num_steps``.
        hparams: the hyperparameters to update with (:func:`iteration_hparams`); ``None``
            takes ``state.learner.hparams`` as they are.

    Returns:
        ``(state, metrics)`` with metrics averaged over the minibatches (over those that ran,
        with ``config.target_kl``; ``updates_run`` counts them).

    Example:
        >>> kernel = frl.make_kernel(cfg, env, policy)
        >>> state2, trajectory = frl.rollout(state, cfg.num_steps, kernel.rollout_step, kernel.critic)
        >>> batch = kernel.make_batch(trajectory, state2.learner.hparams)  # [T * B] = [8]
        >>> new_state, metrics = train_epoch(state2, batch, kernel)
        >>> int(new_state.learner.num_updates), metrics["policy_loss"].shape
        (2, torch.Size([]))
    """
    state, metrics, _ = _epoch(state, batch, fns, hparams, None)
    return state, metrics


def _epoch(state: TrainerState, batch: TensorDict, fns: StepFns, hparams: Any, stopped: torch.Tensor | None):
    """:func:`train_epoch`, carrying ``stopped`` (bool, 0-d or ``[A]``): with
    ``config.target_kl`` set, an update whose minibatch's ``approx_kl`` (averaged over
    processes) exceeds ``hparams.target_kl`` stops the iteration: the updates after it are
    computed but masked out (``torch.where`` on the parameters and the optimizer's float
    state), so nothing syncs with the host and nothing recompiles."""
    learner = state.learner
    hparams = learner.hparams if hparams is None else hparams
    extra = (hparams,) if fns.config.prioritized else ()  # the sampler reads prio_alpha / prio_beta0
    key, minibatches = fns.epoch_minibatches(state.key, state.envs.env_ids, batch, *extra)
    early = fns.config.target_kl is not None
    if early and stopped is None:
        stopped = torch.zeros_like(learner.num_updates, dtype=torch.bool)
    params, opt_state, history, ran = learner.params, learner.opt_state, [], []
    for i in range(fns.config.num_minibatches):
        new_params, new_opt_state, m = fns.update(params, opt_state, {k: v[i] for k, v in minibatches.items()}, hparams)
        history.append(m)
        if not early:
            params, opt_state = new_params, new_opt_state
            continue
        ran.append(~stopped)
        params, opt_state = _keep_where(stopped, params, new_params), _keep_where(stopped, opt_state, new_opt_state)
        stopped = stopped | (_process_mean(m["approx_kl"], fns) > hparams.target_kl)
    learner = learner.replace(params=params, opt_state=opt_state, num_updates=learner.num_updates + fns.config.num_minibatches)
    if not early:
        return state.replace(learner=learner, key=key), mean_metrics(history), stopped
    weights = torch.stack(ran).to(torch.float32)  # [M] or [M, A]
    count = weights.sum(0)
    metrics = {k: (torch.stack([h[k] for h in history]) * weights).sum(0) / count.clamp(min=1.0) for k in history[0]}
    return state.replace(learner=learner, key=key), {**metrics, "updates_run": count}, stopped


def _keep_where(stopped: torch.Tensor, old: Any, new: Any) -> Any:
    """``old`` where ``stopped`` (per agent: ``stopped`` broadcasts over each leaf's trailing
    dims), else ``new``; integer leaves (step counters) always take ``new``, so the
    optimizer's schedule stays tied to the iteration."""

    def pick(o, n):
        if not isinstance(n, torch.Tensor) or not n.is_floating_point():
            return n
        return torch.where(stopped.reshape(stopped.shape + (1,) * (n.dim() - stopped.dim())), o, n)

    return pytree.tree_map(pick, old, new)


def _process_mean(x: torch.Tensor, fns: StepFns) -> torch.Tensor:
    """``x`` averaged over the processes of a data-parallel run (all decide alike)."""
    if fns.all_reduce is None:
        return x
    return fns.all_reduce(x.reshape(-1)).reshape(x.shape) / fns.world_size


def train_on_trajectory(state: TrainerState, trajectory: TensorDict, fns: StepFns) -> tuple[TrainerState, TensorDict, dict[str, torch.Tensor]]:
    """The update half of an iteration: GAE, then ``update_epochs`` epochs of minibatch
    updates (with ``config.vtrace``, each epoch on V-trace targets for the current policy). Pure.

    Args:
        trajectory: TensorDict ``[T, B]`` from :func:`~functional_rl.kernel.rollout.rollout`.

    Returns:
        ``(state, batch, metrics)``: ``batch`` the flattened TensorDict ``[N]`` with
        ``advantage`` and ``returns``; ``metrics`` the loss diagnostics averaged over all
        minibatch updates plus ``learning_rate`` (the optimizer's, for this iteration) and
        ``schedule/NAME``, the value of every other scheduled hyperparameter
        (:func:`run_schedules`: ``config.schedules`` and the implicit ones) this iteration used.

    Example:
        >>> kernel = frl.make_kernel(cfg, env, policy)
        >>> state2, traj = frl.rollout(state, 4, kernel.rollout_step, kernel.critic)
        >>> state2, batch, metrics = train_on_trajectory(state2, traj, kernel)
        >>> batch.batch_size, int(state2.learner.num_updates), "learning_rate" in metrics
        (torch.Size([8]), 2, True)
    """
    hparams = iteration_hparams(state, fns.config)
    lr = fns.learning_rate(state.learner.num_updates, hparams)
    batch = fns.make_batch(trajectory, hparams)
    if fns.config.vtrace and fns.vtrace_batch is None:
        raise ValueError("config.vtrace is on but these step functions have no vtrace_batch: build them with make_kernel")
    epoch_metrics, stopped = [], None
    for _ in range(fns.config.update_epochs):
        if fns.config.vtrace:  # targets for the policy as it is now
            batch = fns.vtrace_batch(state.learner.params, batch, hparams)
        state, m, stopped = _epoch(state, batch, fns, hparams, stopped)
        epoch_metrics.append(m)
    if stopped is not None:  # target_kl: metrics over the updates that ran, and their count
        counts = torch.stack([m.pop("updates_run") for m in epoch_metrics])
        total = counts.sum(0)
        epoch_metrics = [{k: sum(m[k] * c for m, c in zip(epoch_metrics, counts)) / total.clamp(min=1.0) for k in epoch_metrics[0]}]
        epoch_metrics[0]["updates_run"] = total
    scheduled = {f"schedule/{name}": getattr(hparams, name) for name in sorted(run_schedules(fns.config)) if name != "learning_rate"}
    return state, batch, {**mean_metrics(epoch_metrics), **scheduled, "learning_rate": lr}


@functools.lru_cache(maxsize=64)
def run_schedules(config: PPOConfig) -> Mapping[str, Schedule]:
    """Every schedule a run applies: ``config.schedules``, plus the implicit ones of options
    that anneal by definition unless the config schedules them itself:

    * ``prioritized``: ``prio_beta0: linear:end=1/prio_beta0`` (beta from ``prio_beta0`` to 1
      over the run, as prioritized replay anneals it);
    * ``kickstart_teachers``: ``kickstart_coef`` and ``kickstart_value_coef``:
      ``linear:end=0`` over ``kickstart_steps`` (the whole run when ``None``), so the student
      ends on its own.

    Example:
        >>> c = PPOConfig(prioritized=True, prio_beta0=0.5, kickstart_teachers=("t.pt",), kickstart_steps=1000)
        >>> {k: s.to_string() for k, s in sorted(run_schedules(c).items())}
        {'kickstart_coef': 'linear:total=1000', 'kickstart_value_coef': 'linear:total=1000', 'prio_beta0': 'linear:end=2.0'}
    """
    schedules = dict(parse_schedules(config.schedules))
    if config.prioritized and "prio_beta0" not in schedules:
        schedules["prio_beta0"] = Schedule("linear", end_factor=1.0 / config.prio_beta0)
    if config.kickstart_teachers:
        for name in ("kickstart_coef", "kickstart_value_coef"):
            schedules.setdefault(name, Schedule("linear", end_factor=0.0, total_steps=config.kickstart_steps))
    return types.MappingProxyType(schedules)  # cached per config: read-only, so no caller can change another's


def iteration_hparams(state: TrainerState, config: Any) -> Any:
    """The hyperparameters this iteration's update uses: ``state.learner.hparams`` with
    ``config.schedules`` applied at the env step the iteration started from
    (``agent_step - batch_size``; :func:`~functional_rl.kernel.schedules.scheduled_hparams`),
    and that step as ``hparams.step``, so a custom loss can gate or schedule itself by it.
    Pure; the state keeps the base values.

    Example (the entropy bonus decays linearly to 0 over the run):
        >>> c = cfg.replace(schedules={"ent_coef": "linear:end=0"}, total_timesteps=80)
        >>> half = state.replace(agent_step=torch.tensor(40 + c.batch_size))
        >>> round(float(iteration_hparams(half, c).ent_coef), 6), round(float(half.learner.hparams.ent_coef), 6)
        (0.005, 0.01)
    """
    step = (state.agent_step - config.batch_size).clamp(min=0)
    hparams = state.learner.hparams.replace(step=step.to(torch.int64))
    schedules = run_schedules(config)
    if not schedules:
        return hparams
    return scheduled_hparams(hparams, schedules, step, config.total_timesteps)


def train_iteration(state: TrainerState, fns: StepFns) -> tuple[TrainerState, dict[str, torch.Tensor]]:
    """The default ``step_fn``: rollout, GAE, ``update_epochs`` epochs. Pure.

    Returns:
        ``(state, metrics)`` with 0-d tensor metrics (``[A]`` each when ``fns`` trains ``A``
        learners at once): the loss diagnostics averaged over all minibatch updates,
        ``explained_variance``, ``learning_rate``, ``episode_return`` and ``episode_length``
        (means over the episodes that ended in this iteration; NaN if none), ``episodes``
        (how many ended), ``nonfinite_params`` and ``nonfinite_obs`` (counts).

    Example (one tiny iteration: 4 steps of 2 envs, one epoch of 2 minibatches):
        >>> kernel = frl.make_kernel(cfg, env, policy)
        >>> state2, metrics = train_iteration(state, kernel)
        >>> int(state2.iteration), int(state2.learner.num_updates), int(state2.agent_step)
        (1, 2, 8)
        >>> metrics["total_loss"].shape, float(metrics["nonfinite_params"])
        (torch.Size([]), 0.0)
    """
    state, trajectory = fns.rollout(state)
    state, batch, metrics = train_on_trajectory(state, trajectory, fns)
    metrics = fns.finish(metrics, trajectory, batch, state.learner.params)
    if fns.curriculum is not None:
        cs = fns.curriculum.update(state.curriculum, metrics)
        state = state.replace(curriculum=cs)
        metrics.update(fns.curriculum.metrics(cs))
    return state.replace(iteration=state.iteration + 1), metrics
