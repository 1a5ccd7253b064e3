"""The impure shell: ``functional_training_loop`` runs pure steps and does the side effects.

It is the one place that syncs with the host (once per iteration: all metrics in one
transfer), measures time, calls callbacks and turns failures into a checkpoint-friendly
report. The kernel it drives is pure: ``state, metrics = step_fn(state, kernel)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from functional_rl.kernel.config import PPOConfig
from functional_rl.kernel.iteration import StepFns, train_iteration
from functional_rl.kernel.losses import LossFn, loss_name
from functional_rl.kernel.state import TrainerState
from functional_rl.shell.callbacks import PolicySaver
from functional_rl.shell.build import build, resolve_env_policy
from functional_rl.shell.checks import check_callbacks, check_policy, check_step_output, require_state
from functional_rl.shell.policy_store import start_from
from functional_rl.kernel.optim import make_optimizer

__all__ = [
    "functional_training_loop",
    "train_many",
    "NonFiniteError",
    "metrics_to_host",
    "CHECKED_METRICS",
]

# Loss metrics that must stay finite; a NaN/inf in any of them stops training.
CHECKED_METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "total_loss", "grad_norm")


class NonFiniteError(FloatingPointError):
    """A loss, gradient, parameter or observation became NaN or infinite.

    Example:
        >>> _check_finite(3, {"value_loss": float("nan")}, [], "CartPole-v1")
        Traceback (most recent call last):
        ...
        functional_rl.shell.loop.NonFiniteError: iteration 3: metric 'value_loss' is nan; training stopped. ...
    """


def metrics_to_host(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """All 0-d metric tensors to Python floats in ONE device-to-host transfer.

    Example:
        >>> metrics_to_host({"loss": torch.tensor(0.5), "steps": torch.tensor(64)})
        {'loss': 0.5, 'steps': 64.0}
    """
    names = list(metrics)
    if not names:
        return {}
    values = torch.stack([metrics[n].detach().to(torch.float64).reshape(()) for n in names]).tolist()
    return dict(zip(names, values))


def _check_finite(iteration: int, host: dict[str, float], custom: Sequence[str], env_id: str = "the environment", who: str | None = None) -> None:
    try:
        _check_finite_row(iteration, host, custom, env_id)
    except NonFiniteError as e:
        if who is None:
            raise
        raise NonFiniteError(f"{who}: {e}") from None


def _check_finite_row(iteration: int, host: dict[str, float], custom: Sequence[str], env_id: str) -> None:
    for name in (*CHECKED_METRICS, *custom):
        if name in host and not math.isfinite(host[name]):
            raise NonFiniteError(
                f"iteration {iteration}: metric {name!r} is {host[name]}; training stopped. "
                "Lower the learning rate, check rewards/observations for NaN or extreme values, "
                "or enable normalize_obs / normalize_reward."
            )
    if host.get("nonfinite_params", 0.0) > 0:
        raise NonFiniteError(
            f"iteration {iteration}: {int(host['nonfinite_params'])} parameter values are NaN/inf; training stopped. "
            "Lower the learning rate or max_grad_norm."
        )
    if host.get("nonfinite_obs", 0.0) > 0:
        raise NonFiniteError(
            f"iteration {iteration}: {env_id} produced {int(host['nonfinite_obs'])} NaN/inf observations or "
            "rewards during this iteration's rollout; check the environment's dynamics and parameters."
        )


def _fire(callbacks: Sequence[Any], name: str, *args: Any) -> None:
    """Call hook ``name`` on every callback that has it. A dict argument (the iteration's
    metrics) is copied for each callback, so one that changes it changes neither the history
    nor what the next callback sees."""
    for cb in callbacks:
        hook = getattr(cb, name, None)
        if hook is not None:
            hook(*(dict(a) if isinstance(a, dict) else a for a in args))


def _report_failure(callbacks: Sequence[Any], last_good: Any, exc: BaseException) -> None:
    """Every callback's ``on_failure(last_good, exc)``, even if one of them fails too: such a
    failure is noted on ``exc`` (which the caller re-raises), never dropped."""
    for cb in callbacks:
        hook = getattr(cb, "on_failure", None)
        if hook is None:
            continue
        try:
            hook(last_good, exc)
        except BaseException as cb_exc:
            exc.add_note(f"on_failure of {type(cb).__name__} also failed: {cb_exc!r}")


class _PhaseTimer:
    """Host wall time spent in the kernel's rollout steps and minibatch updates.

    Wraps ``kernel.rollout`` and ``kernel.update`` (shell side; the kernel stays pure).
    On a CPU compiled calls are synchronous, so the split is exact. On a GPU it measures
    launch time only: reading it would need a device sync per phase, which the loop avoids.
    """

    def __init__(self) -> None:
        self.rollout = self.train = 0.0

    def reset(self) -> None:
        self.rollout = self.train = 0.0

    def seconds(self) -> dict[str, float]:
        return {"timing/rollout_s": self.rollout, "timing/train_s": self.train}

    def wrap(self, kernel: StepFns) -> StepFns:
        rollout, update = kernel.rollout, kernel.update

        def timed_rollout(state):
            t0 = time.perf_counter()
            out = rollout(state)
            self.rollout += time.perf_counter() - t0
            return out

        def timed_update(*args):
            t0 = time.perf_counter()
            out = update(*args)
            self.train += time.perf_counter() - t0
            return out

        return dataclasses.replace(kernel, rollout=timed_rollout, update=timed_update)


class _SteadyGuards:
    """Run a compiled kernel's iterations without evaluating torch.compile's guards, once they
    are known to pass.

    Every call of a compiled function first checks its guards (the dtype, shape, stride and
    device of every input tensor, deep pytrees here): 40-90 us a call, about 7% of a default
    CartPole iteration on a 2-core CPU (``benchmarks/RESULTS.md``). In the loop those inputs
    are the kernel's own outputs, whose layout is fixed once the second iteration has run. So
    when the second iteration compiled nothing new, the later iterations run under
    ``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``. Only the step runs under it,
    never a callback, and only for the built-in ``train_iteration`` of a compiled kernel on a
    pure env in one process (a user's ``step_fn`` may call the kernel with other inputs, and a
    host simulator's observations are new tensors each step, made outside the kernel).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.iterations, self.frames, self.skip = enabled, 0, None, False

    def stance(self) -> Any:
        """The context the next step runs in."""
        return torch.compiler.set_stance("default", skip_guard_eval_unsafe=True) if self.skip else contextlib.nullcontext()

    def step_done(self) -> None:
        if not self.enabled or self.skip:
            return
        frames = torch._dynamo.utils.counters["frames"]["total"]  # frames dynamo was asked to compile
        self.iterations += 1
        self.skip = self.iterations >= 2 and frames == self.frames
        self.frames = frames


def functional_training_loop(
    config: Any = None,
    *,
    ppo_config: Any = None,
    env: Any = None,
    policy: Any = None,
    state: TrainerState | None = None,
    step_fn: Callable[[TrainerState, StepFns], tuple[TrainerState, dict[str, torch.Tensor]]] | None = None,
    custom_losses: Sequence[LossFn] = (),
    callbacks: Sequence[Any] = (),
    compile: bool = True,
    env_params: Any = None,
    max_iterations: int | None = None,
    compile_options: dict[str, Any] | None = None,
    curriculum: Any = None,
    scan_rollout: bool | None = None,
    policy_store: Any = None,
    initial_policy: Any = None,
) -> tuple[TrainerState, list[dict[str, float]]]:
    """Train until ``config.num_iterations`` iterations are done; return ``(state, history)``.

    Args:
        config: the run's :class:`PPOConfig`; or, as the reference trainer writes it, a nested
            :class:`~functional_rl.compat.training_config.TrainingConfig` or its
            ``TrainerConfig`` section (with ``ppo_config`` and ``policy=AgentConfig(...)``;
            :func:`~functional_rl.compat.training_config.run_config` lowers them).
        ppo_config: the nested config's ``PPOSection`` (or a whole ``PPOConfig`` when
            ``config`` is not given).
        env: a pure env or an id; default ``envs.make(config.env_id)``.
        policy: a ``Policy``, or an ``AgentConfig`` naming the architecture; default the
            policy ``config.policy`` names (CleanRL's MLP actor-critic) for the env's spaces.
        state: a state to continue from (e.g. a loaded checkpoint); default a fresh one.
        step_fn: ``(state, kernel) -> (state, metrics)``; default :func:`train_iteration`.
        custom_losses: extra ``loss(params, batch, outputs, hparams)`` terms.
        callbacks: objects with any of ``on_start(state, config)``,
            ``on_iteration(state, metrics)``, ``on_end(state)``, ``on_failure(state, exc)``, or
            plain functions ``fn(state, metrics)`` called as ``on_iteration``; ``None`` is none.
            Each callback gets its own copy of the metrics. An object with none of the hooks
            (e.g. a misspelled ``on_iter``) is refused (:func:`~functional_rl.shell.checks.check_callbacks`).
        compile: ``torch.compile`` the rollout step and the minibatch update.
        env_params: environment parameters; default ``env.default_params()``.
        max_iterations: stop after this many iterations in this call (the schedule still
            follows ``config.total_timesteps``, so a later call resumes it exactly).
        compile_options: extra ``torch.compile`` options, e.g. ``{"mode": "reduce-overhead"}``
            for CUDA graphs on a GPU (``config.device="cuda"``).
        curriculum: a task sampler (:mod:`functional_rl.kernel.curriculum`) choosing env params per
            episode; its state lives in ``state.curriculum``.
        scan_rollout: run a pure env's rollout as one compiled call (``True``), as a loop of
            compiled steps (``False``), or choose (``None``: one call when compiled on the CPU
            in one process; :func:`~functional_rl.shell.build.make_kernel`).
        policy_store: a :class:`~functional_rl.shell.policy_store.PolicyStore` (or a directory):
            the final policy is saved there as a record (:class:`~functional_rl.shell.callbacks.PolicySaver`;
            add a ``PolicySaver(every=N)`` callback for periodic ones).
        initial_policy: start a fresh run from a stored policy's parameters (the reference
            trainer's ``initial_policy``): a :class:`~functional_rl.shell.policy_store.PolicyRecord`,
            or a name, path or ``file://`` URI resolved by ``policy_store`` (default: the
            current directory); :func:`~functional_rl.shell.policy_store.start_from`. Not
            with ``state``, which already has its parameters.

    Data parallel: launched by ``torchrun`` (or inside an initialised default process group)
    the loop trains one share of a data-parallel run (:mod:`functional_rl.shell.distributed`):
    ``num_envs`` envs per process, gradients and statistics reduced over processes, callbacks
    on rank 0 only. ``state`` may be a whole-run state (a checkpoint): each process takes its
    envs. Every process returns the whole run's state.

    Returns:
        ``(state, history)``: the final state and one dict of Python numbers per iteration
        with ``iteration``, ``agent_step``, ``sps``, ``episode_return``, ``episode_length``,
        the loss diagnostics, ``explained_variance`` and ``learning_rate``.

    Raises:
        ValueError: ``state`` or ``policy`` does not fit the config or the env (env count,
            observation shape, action head, parameter shapes, last action, normalisation
            statistics: :mod:`functional_rl.shell.checks`), checked before training.
        TypeError: a callback without hooks, a ``step_fn`` that is not callable or returns
            something other than ``(TrainerState, dict of tensors)``, a custom loss breaking
            its contract (the messages name the user's function).
        NonFiniteError: a loss, gradient, parameter or observation became NaN/inf (the
            message names the iteration and the metric). Any exception from a step or a
            callback is re-raised after every callback's ``on_failure`` ran with the last good state.
        DistributedError: in a data-parallel run, another process died or stopped answering
            (raised from the collective's error), or the config does not work across processes.

    Example:
        >>> cfg = PPOConfig(total_timesteps=256, num_envs=2, num_steps=64)
        >>> state, history = functional_training_loop(cfg, compile=False)
        >>> len(history), int(state.agent_step)
        (2, 256)
    """
    from functional_rl.compat.training_config import run_config
    from functional_rl.shell import distributed

    config, policy = run_config(config, ppo_config, policy)
    callbacks = check_callbacks(callbacks)
    if step_fn is not None and not callable(step_fn):
        raise TypeError(f"step_fn must be a function (state, kernel) -> (state, metrics), got {type(step_fn).__name__}")
    if state is not None:
        require_state(state)
        if initial_policy is not None:
            raise ValueError("initial_policy starts a fresh run from a stored policy; the given state (a checkpoint?) "
                             "already has its parameters: pass one of them")
    replica = distributed.setup(config.device)
    try:
        if replica is not None:
            config = distributed.check_config(config, replica, curriculum=curriculum)
            if state is not None:
                state = distributed.local_share(state, replica, config.num_envs).to(config.device)
            if not replica.is_main:
                callbacks = ()  # rank 0 logs, evaluates and checkpoints the whole run
        state, kernel = build(
            config, env=env, policy=policy, state=state, custom_losses=custom_losses, compile=compile,
            env_params=env_params, compile_options=compile_options, curriculum=curriculum, replica=replica,
            scan_rollout=scan_rollout,
        )
        if initial_policy is not None:
            state = start_from(state, initial_policy, policy_store, make_optimizer(config))
        if policy_store is not None and (replica is None or replica.is_main):
            callbacks = (*callbacks, PolicySaver(policy_store, kernel.policy, kernel.env))
        return _run(config, state, kernel, train_iteration if step_fn is None else step_fn, callbacks, max_iterations, replica=replica)
    finally:
        distributed.shutdown(replica)


def _host_rows(metrics: dict[str, torch.Tensor], agents: Sequence[dict[str, Any]] | None) -> list[dict[str, float]]:
    """The iteration's metrics as Python numbers in ONE device-to-host transfer: one row for a
    single learner, one per agent (metrics ``[A]``) under ``train_many``."""
    if agents is None:
        return [metrics_to_host(metrics)]
    names = list(metrics)
    table = torch.stack([metrics[n].detach().to(torch.float64).expand(len(agents)) for n in names]).tolist()
    return [{n: table[j][a] for j, n in enumerate(names)} for a in range(len(agents))]


def _run(
    config: PPOConfig, state: TrainerState, kernel: StepFns, step_fn: Callable[..., Any], callbacks: Sequence[Any],
    max_iterations: int | None, *, replica: Any = None, agents: Sequence[dict[str, Any]] | None = None,
) -> tuple[TrainerState, list[Any]]:
    """The iteration loop of :func:`functional_training_loop` (one process's share of it) and
    of :func:`train_many` (``agents``: one history and one callback row per agent).

    Returns ``(state, history)``: ``history`` one row per iteration, or with ``agents`` one
    such list per agent.
    """
    from functional_rl.shell import distributed

    timer = _PhaseTimer()
    kernel = timer.wrap(kernel)
    custom_names = [loss_name(fn) for fn in kernel.custom_losses]
    env_id = getattr(kernel.env, "id", "the environment")
    histories: list[list[dict[str, float]]] = [[] for _ in (agents or [None])]

    def whole(s: TrainerState) -> TrainerState:  # the whole run's state (all processes' envs)
        return s if replica is None else distributed.gather_envs(s, replica)

    guards = _SteadyGuards(kernel.compiled and step_fn is train_iteration and replica is None
                           and getattr(kernel.env, "is_pure", True))
    last_good = None
    try:
        last_good = whole(state)
        _fire(callbacks, "on_start", last_good, config)
        iteration, agent_step = (int(v) for v in torch.stack([state.iteration, state.agent_step]).reshape(2, -1)[:, 0].tolist())
        stop = config.num_iterations if max_iterations is None else min(config.num_iterations, iteration + max_iterations)
        while iteration < stop:
            t0 = time.perf_counter()
            timer.reset()
            with guards.stance():
                state, metrics = check_step_output(step_fn, step_fn(state, kernel), None if agents is None else len(agents))
            guards.step_done()
            rows = _host_rows({**metrics, "agent_step": state.agent_step}, agents)
            elapsed = time.perf_counter() - t0
            for a, host in enumerate(rows):
                host.update(iteration=iteration + 1, time_s=elapsed, **timer.seconds())
                host["sps"] = (host["agent_step"] - agent_step) / max(elapsed, 1e-9)
                if agents is not None:
                    host.update(agent=a, seed=agents[a]["seed"], **{f"sweep/{k}": v for k, v in agents[a].items() if k != "seed"})
                _check_finite(iteration + 1, host, custom_names, env_id, who=None if agents is None else f"agent {a} ({agents[a]})")
            iteration, agent_step = iteration + 1, int(rows[0]["agent_step"])
            last_good = whole(state)
            for history, host in zip(histories, rows):
                history.append(host)
                _fire(callbacks, "on_iteration", last_good, host)
        _fire(callbacks, "on_end", last_good)
    except BaseException as exc:
        error = distributed.lost_process_error(exc, replica) or exc
        if last_good is not None:
            _report_failure(callbacks, last_good, error)
        if error is exc:
            raise
        raise error from exc
    return last_good, histories if agents is not None else histories[0]


def train_many(
    config: PPOConfig,
    seeds: Sequence[int],
    hparams: Any = None,
    *,
    env: Any = None,
    policy: Any = None,
    custom_losses: Sequence[LossFn] = (),
    callbacks: Sequence[Any] = (),
    compile: bool = True,
    env_params: Any = None,
    max_iterations: int | None = None,
    scan_rollout: bool | None = None,
) -> tuple[TrainerState, list[list[dict[str, float]]]]:
    """Train many independent agents in one process, vmapped over a leading agent axis.

    The agents are every hyperparameter point crossed with every seed
    (:func:`functional_rl.shell.batched.agent_grid`, point-major). Agent ``i`` computes what a
    single run with its seed and hyperparameters computes: same keys, same maths, batched.
    Hyperparameters are tensors in the state, so a sweep never recompiles. The kernel is the
    one-learner kernel wrapped in ``vmap`` (:func:`functional_rl.shell.batched.make_agents_kernel`)
    and the loop is :func:`functional_training_loop`'s.

    Args:
        config: the shared config (static sizes; default hyperparameter values).
        seeds: seeds of the runs.
        hparams: ``None``, a grid ``{"learning_rate": [...], ...}`` or a list of points.
        env, policy, custom_losses, compile, env_params, max_iterations, scan_rollout: as in
            :func:`functional_training_loop` (the env must be pure).
        callbacks: as in :func:`functional_training_loop` (checked the same way), called once
            per agent per iteration with that agent's metrics, which carry
            ``agent`` (its index), ``seed`` and the swept values as ``sweep/<name>``; ``sps``
            counts that agent's steps.

    Returns:
        ``(states, histories)``: the stacked final state (use
        :func:`functional_rl.shell.batched.unstack_state`) and one history per agent.

    Raises:
        ValueError: the policy does not fit the env (input width, action head), checked
            before training; a swept value breaks its ``PPOConfig`` rule.
        TypeError: a callback without hooks, a policy that is not a ``Policy``, a custom loss
            breaking its contract (named).

    Example:
        >>> cfg = PPOConfig(num_envs=2, num_steps=16, num_minibatches=2, total_timesteps=64)
        >>> states, histories = train_many(cfg, seeds=[0, 1], compile=False)
        >>> len(histories), len(histories[0]), states.agent_step.tolist()
        (2, 2, [64, 64])
    """
    from functional_rl.shell.batched import agent_grid, make_agents_kernel, stack_states

    from functional_rl.shell.batched import unstack_state
    from functional_rl.shell.checks import require_policy

    callbacks = check_callbacks(callbacks)
    env, policy = resolve_env_policy(config, env, policy)
    agents = agent_grid(seeds, hparams)
    require_policy(policy)
    states = stack_states(config, env, policy, agents, env_params=env_params)
    first = unstack_state(states, 0)
    check_policy(env, policy, config=config, params=first.learner.params, obs=first.envs.obs[:1])
    kernel = make_agents_kernel(config, env, policy, env_params=env_params,
                                custom_losses=custom_losses, compile=compile, scan_rollout=scan_rollout)
    return _run(config, states, kernel, train_iteration, callbacks, max_iterations, agents=agents)
