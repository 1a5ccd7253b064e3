"""Many agents at once: a leading agent axis on every state leaf, and vmapped kernels.

PureJaxRL's trick in PyTorch: ``torch.func.vmap`` of the per-step functions over a stack of
independent states, then ``torch.compile`` of the vmapped function (compile(vmap(f)), never
vmap of a compiled function). The kernel is written for one learner; the glue in
:func:`~functional_rl.kernel.iteration.train_iteration` runs unchanged on the wrapped
functions (:func:`make_agents_kernel`).

Examples use the doctest fixture of ``functional_rl/conftest.py`` (``cfg``: 2 envs x 4
steps, 2 minibatches; ``env``: CartPole; ``policy``: an MLP; ``state``: a fresh state).

Example:
    >>> agents = agent_grid([0, 1], {"learning_rate": [1e-3, 3e-4]})
    >>> len(agents), agents[1]
    (4, {'seed': 1, 'learning_rate': 0.001})
    >>> states = stack_states(cfg, env, policy, agents)
    >>> states.envs.obs.shape, states.learner.hparams.learning_rate.tolist()
    (torch.Size([4, 2, 4]), [0.0010000000474974513, 0.0010000000474974513, 0.0003000000142492354, 0.0003000000142492354])
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from tensordict import TensorDict

from functional_rl.kernel.config import HYPERPARAM_NAMES, Hyperparams, PPOConfig
from functional_rl.kernel.iteration import StepFns
from functional_rl.kernel.recurrent import is_recurrent
from functional_rl.kernel.rollout import rollout
from functional_rl.kernel.state import TrainerState
from functional_rl.kernel.update import batch_arrays, vtrace_batch
from functional_rl.shell.build import (
    RANDOM_OPTIONS, ROLLOUT_OPTIONS, as_batch, as_trajectory, compiler, inductor_options, make_kernel, one_call_rollout, plain_args,
)

__all__ = ["agent_grid", "stack_states", "unstack_state", "make_agents_kernel"]


def agent_grid(seeds: Sequence[int], hparams: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]] | None = None) -> list[dict[str, Any]]:
    """The agents of a sweep: every hyperparameter point crossed with every seed.

    Args:
        seeds: one run per seed.
        hparams: ``None``; a dict of lists (a grid: their Cartesian product); or a list of
            dicts (explicit points). Keys are continuous hyperparameters
            (``learning_rate``, ``gamma``, ``gae_lambda``, ``clip_coef``, ``ent_coef``,
            ``vf_coef``, ``max_grad_norm``).

    Returns:
        One dict per agent, ``{"seed": s, **point}``, point-major: agent
        ``p * len(seeds) + i`` has point ``p`` and seed ``seeds[i]``.

    Example:
        >>> agent_grid([0, 1], {"learning_rate": [1e-3, 3e-4]})
        [{'seed': 0, 'learning_rate': 0.001}, {'seed': 1, 'learning_rate': 0.001},
         {'seed': 0, 'learning_rate': 0.0003}, {'seed': 1, 'learning_rate': 0.0003}]
        >>> agent_grid([7], [{"gamma": 0.9}, {"gamma": 0.99}])
        [{'seed': 7, 'gamma': 0.9}, {'seed': 7, 'gamma': 0.99}]
        >>> agent_grid([0], {"num_envs": [1, 2]})
        Traceback (most recent call last):
            ...
        ValueError: cannot sweep 'num_envs': it is not a continuous hyperparameter; choose from ...
    """
    if hparams is None:
        points: list[dict[str, float]] = [{}]
    elif isinstance(hparams, Mapping):
        names = list(hparams)
        points = [dict(zip(names, values)) for values in itertools.product(*(hparams[n] for n in names))]
    else:
        points = [dict(p) for p in hparams]
    for p in points:
        for name in p:
            if name not in HYPERPARAM_NAMES:
                raise ValueError(f"cannot sweep {name!r}: it is not a continuous hyperparameter; choose from {', '.join(HYPERPARAM_NAMES)}")
    if not seeds:
        raise ValueError("train_many needs at least one seed")
    return [{"seed": int(s), **p} for p in points for s in seeds]


#: Hyperparameters whose ``None`` in the config switches a piece off for the whole run.
OPTIONAL_HYPERPARAMS = ("target_kl", "l2_reg_loss_coef", "l2_init_loss_coef")


def stack_states(config: PPOConfig, env: Any, policy: Any, agents: Sequence[Mapping[str, Any]], env_params: Any = None) -> TrainerState:
    """One fresh state per agent (its seed and hyperparameters), stacked on a leading axis.

    Each agent's hyperparameters are validated through ``PPOConfig``, so a bad value in a
    sweep is reported with its field name.

    Every tensor leaf gains a leading agent axis ``[A, ...]``.

    Example:
        >>> states = stack_states(cfg, env, policy, agent_grid([0, 1, 2]))
        >>> states.envs.obs.shape, states.key.shape, states.learner.hparams.gamma.shape  # [A, B, 4], [A, 2], [A]
        (torch.Size([3, 2, 4]), torch.Size([3, 2]), torch.Size([3]))
    """
    for name in OPTIONAL_HYPERPARAMS:  # None leaves the piece out of the graph for every agent
        if getattr(config, name) is None and any(agent.get(name) is not None for agent in agents):
            raise ValueError(f"cannot sweep {name} while the config's {name} is None (the piece is off for all agents): "
                             f"set {name} in the config (any value) to sweep it")
    for names, switch, on in ((("prio_alpha", "prio_beta0"), "prioritized=True", config.prioritized),
                              (("kickstart_coef", "kickstart_value_coef"), "kickstart_teachers", bool(config.kickstart_teachers))):
        swept = [n for n in names if any(n in agent for agent in agents)]
        if swept and not on:
            raise ValueError(f"cannot sweep {swept[0]}: the piece it weighs is off for all agents; set {switch} in the config")
    states = []
    for agent in agents:
        cfg = config.replace(**agent)
        states.append(TrainerState.create(cfg, env, policy, env_params=env_params, hparams=Hyperparams.from_config(cfg)))
    return pytree.tree_map(lambda *xs: torch.stack(xs) if isinstance(xs[0], torch.Tensor) else xs[0], *states)


def unstack_state(states: TrainerState, i: int) -> TrainerState:
    """Agent ``i``'s state (a view into the stacked tensors).

    Example (agent ``i`` of a stack equals the state built alone from its seed):
        >>> states = stack_states(cfg, env, policy, agent_grid([0, 1]))
        >>> one = unstack_state(states, 1)
        >>> one.envs.obs.shape, one.key.shape
        (torch.Size([2, 4]), torch.Size([2]))
        >>> bool(torch.equal(one.envs.obs, frl.init_state(cfg.replace(seed=1), env, policy).envs.obs))
        True
    """
    return pytree.tree_map(lambda x: x[i] if isinstance(x, torch.Tensor) else x, states)


def _vmapped(fn: Any, in_dims: Any, out_dims: Any = 0) -> Any:
    """``torch.func.vmap(fn, in_dims, out_dims)`` behind its own ``def``, so each compiled
    wrapper has its own code object (all ``vmap(f)`` wrappers share one, which would make them
    share one dynamo cache). TensorDict arguments are passed to ``fn`` as plain dicts."""

    def agents(*args):
        args = tuple(dict(a.items()) if isinstance(a, TensorDict) else a for a in args)
        dims = tuple(_tensor_dims(a, d) for a, d in zip(args, in_dims))
        return torch.func.vmap(fn, in_dims=dims, out_dims=out_dims)(*args)

    return agents


def _tensor_dims(tree: Any, dim: int) -> Any:
    """``dim`` for every tensor leaf of ``tree``, ``None`` for the rest (absent optional parts
    such as ``obs_norm=None`` are pytree leaves that vmap must skip)."""
    return pytree.tree_map(lambda x: dim if isinstance(x, torch.Tensor) else None, tree)


def make_agents_kernel(
    config: PPOConfig,
    env: Any,
    policy: Any,
    *,
    env_params: Any = None,
    custom_losses: Sequence[Any] = (),
    compile: bool = True,
    compile_options: dict[str, Any] | None = None,
    scan_rollout: bool | None = None,
) -> StepFns:
    """The one-learner step functions, each wrapped in ``torch.func.vmap`` over a leading
    agent axis of the state: batch by wrapping, so the kernel's glue
    (:func:`~functional_rl.kernel.iteration.train_iteration`) runs unchanged.

    The glue stacks per-step outputs on a new leading axis and indexes minibatches on the
    leading axis, so each wrapper puts the agent axis right after those loop axes: a
    rollout step returns ``[A, B]`` transitions (stacked to ``[T, A, B]``), the critic and
    ``make_batch`` map over axis 1 of a ``[T, A, B]`` trajectory, and ``epoch_minibatches``
    returns ``[M, A, N / M]`` minibatches. Compiled as ``compile(vmap(f))`` (never
    ``vmap(compile(f))``, which torch does not support).

    ``scan_rollout=True`` vmaps the one-call rollout
    (:func:`~functional_rl.kernel.rollout.scan_rollout`) instead of the step: one compiled
    call per iteration for all agents, returning ``[T, A, B]`` trajectories. ``None`` (the
    default) chooses it when compiling on the CPU: 32 agents of the default CartPole config
    ran 1.20x the aggregate steps/s of the per-step loop and compiled in 104 s instead of 178 s
    cold (``python -m benchmarks.run``, benchmarks/RESULTS.md).

    Example (two agents trained for one iteration in lockstep, uncompiled):
        >>> from functional_rl.kernel.iteration import train_iteration
        >>> states = stack_states(cfg, env, policy, agent_grid([0, 1]))
        >>> kernel = make_agents_kernel(cfg, env, policy, compile=False)
        >>> states, metrics = train_iteration(states, kernel)
        >>> states.iteration.tolist(), metrics["total_loss"].shape  # one value per agent: [A]
        ([1, 1], torch.Size([2]))
    """
    if not getattr(env, "is_pure", True):
        raise ValueError(f"train_many needs a pure environment; {getattr(env, 'id', env)!r} steps a host simulator")
    one = make_kernel(config, env, policy, env_params=env_params, custom_losses=custom_losses, compile=False, vmappable=True)
    if scan_rollout is None:
        scan_rollout = compile and torch.device(config.device).type == "cpu"

    def agents_rollout_step(state):
        dims = _tensor_dims(state, 0)
        new_state, transition = torch.func.vmap(one.rollout_step, in_dims=(dims,), out_dims=(dims, 0))(state)
        # The split keys come out as strided views of [A, 3, 2]; a changing stride recompiles.
        return new_state.replace(key=new_state.key.contiguous()), transition

    update = _vmapped(one.update, in_dims=(0, 0, 0, 0))

    def agents_update(params, opt_state, minibatch, hparams):
        return update(params, opt_state, minibatch, hparams)

    maybe_compile = compiler(compile, compile_options)
    # The critic maps over axis 1 of [T, A, B] observations (and of a recurrent policy's carries).
    critic_dims = (0, 1, 1) if is_recurrent(policy) else (0, 1)
    step, critic = maybe_compile(agents_rollout_step), _vmapped(one.critic, in_dims=critic_dims, out_dims=1)
    run_rollout = functools.partial(rollout, num_steps=config.num_steps, step_fn=step, value_fn=critic)
    if scan_rollout:
        whole = one_call_rollout(config, env, policy, one.rollout_step)

        def agents_rollout(state):
            dims = _tensor_dims(state, 0)
            new_state, trajectory = torch.func.vmap(whole, in_dims=(dims,), out_dims=(dims, 1))(state)
            return new_state.replace(key=new_state.key.contiguous()), trajectory

        # The C++ wrapper's code for the vmapped scan segfaults when called (torch 2.13, CPU):
        # the agents' rollout keeps inductor's Python wrapper.
        run_rollout = as_trajectory(maybe_compile(agents_rollout, options=inductor_options({**ROLLOUT_OPTIONS, "cpp_wrapper": False}, compile_options)))
    revalue = _vmapped(functools.partial(vtrace_batch, policy=policy, num_steps=config.num_steps), in_dims=(0, 0, 0))
    return dataclasses.replace(
        one,
        rollout=run_rollout,
        rollout_step=step,
        critic=critic,
        make_batch=as_batch(maybe_compile(_vmapped(batch_arrays, in_dims=(1, 0))), batch_ndim=2),
        epoch_minibatches=plain_args(maybe_compile(_contiguous_key(
            _vmapped(one.epoch_minibatches, in_dims=(0, 0, 0, 0)[:4 if config.prioritized else 3], out_dims=(0, 1))),
            options=inductor_options(RANDOM_OPTIONS, compile_options))),
        update=agents_update if is_recurrent(policy) else maybe_compile(agents_update),  # as make_kernel
        vtrace_batch=as_batch(revalue if is_recurrent(policy) or not config.vtrace else maybe_compile(revalue), batch_ndim=2),
        finish=_vmapped(one.finish, in_dims=(0, 1, 0, 0)),
        compiled=compile,
    )


def _contiguous_key(fn: Any) -> Any:
    """Wrap a vmapped ``epoch_minibatches``: the keys come out of ``vmap`` as a strided view
    ``[A, 2]`` of ``[A, 2, 2]``, and a key whose stride changes between calls recompiles the
    next rollout."""

    def minibatches(key, env_ids, batch, *hparams):
        key, mbs = fn(key, env_ids, batch, *hparams)
        return key.contiguous(), mbs

    return minibatches

