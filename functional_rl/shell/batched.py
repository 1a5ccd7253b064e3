"""Many agents at once: a leading agent axis on every state leaf, and vmapped kernels.

PureJaxRL's trick in PyTorch: ``torch.func.vmap`` of the per-step functions over a stack of
independent states, then ``torch.compile`` of the vmapped function (compile(vmap(f)), never
vmap of a compiled function). The glue in :func:`~functional_rl.kernel.train.train_iteration` only
needs to know that there is one more leading axis (``kernel.agent_dims == 1``).

Example:
    >>> import functional_rl as frl
    >>> from functional_rl.envs import make
    >>> cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2)
    >>> env = make(cfg.env_id)
    >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space)
    >>> agents = agent_grid([0, 1], {"learning_rate": [1e-3, 3e-4]})
    >>> len(agents), agents[1]
    (4, {'seed': 1, 'learning_rate': 0.001})
    >>> states = stack_states(cfg, env, policy, agents)
    >>> states.obs.shape, states.hparams.learning_rate.tolist()
    (torch.Size([4, 2, 4]), [0.0010000000474974513, 0.0010000000474974513, 0.0003000000142492354, 0.0003000000142492354])
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree

from functional_rl.kernel.config import HYPERPARAM_NAMES, Hyperparams, PPOConfig
from functional_rl.kernel.state import TrainerState
from functional_rl.kernel.train import Kernel, make_kernel

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


def stack_states(config: PPOConfig, env: Any, policy: Any, agents: Sequence[Mapping[str, Any]], env_params: Any = None) -> TrainerState:
    """One fresh state per agent (its seed and hyperparameters), stacked on a leading axis.

    Each agent's hyperparameters are validated through ``PPOConfig``, so a bad value in a
    sweep is reported with its field name.

    Every tensor leaf gains a leading agent axis ``[A, ...]``.

    Example:
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2, update_epochs=1, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> states = stack_states(cfg, env, policy, agent_grid([0, 1, 2]))
        >>> states.obs.shape, states.key.shape, states.hparams.gamma.shape  # [A, B, 4], [A, 2], [A]
        (torch.Size([3, 2, 4]), torch.Size([3, 2]), torch.Size([3]))
    """
    states = []
    for agent in agents:
        cfg = config.replace(**agent)
        states.append(TrainerState.create(cfg, env, policy, env_params=env_params, hparams=Hyperparams.from_config(cfg)))
    return pytree.tree_map(lambda *xs: torch.stack(xs) if isinstance(xs[0], torch.Tensor) else xs[0], *states)


def unstack_state(states: TrainerState, i: int) -> TrainerState:
    """Agent ``i``'s state (a view into the stacked tensors).

    Example (agent ``i`` of a stack equals the state built alone from its seed):
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2, update_epochs=1, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> states = stack_states(cfg, env, policy, agent_grid([0, 1]))
        >>> one = unstack_state(states, 1)
        >>> one.obs.shape, one.key.shape
        (torch.Size([2, 4]), torch.Size([2]))
        >>> bool(torch.equal(one.obs, frl.init_state(cfg.replace(seed=1), env, policy).obs))
        True
    """
    return pytree.tree_map(lambda x: x[i] if isinstance(x, torch.Tensor) else x, states)


def make_agents_kernel(
    config: PPOConfig,
    env: Any,
    policy: Any,
    num_agents: int,
    *,
    env_params: Any = None,
    custom_losses: Sequence[Any] = (),
    compile: bool = True,
    compile_options: dict[str, Any] | None = None,
) -> Kernel:
    """A kernel whose step functions map over a leading agent axis (``torch.func.vmap``).

    Each vmapped function is its own ``def`` so that each compiled function has its own code
    object (all ``vmap(f)`` wrappers share one, which would make them share one dynamo cache).

    Example (two agents trained for one iteration in lockstep, uncompiled):
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2, update_epochs=1, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> from functional_rl.kernel.train import train_iteration
        >>> states = stack_states(cfg, env, policy, agent_grid([0, 1]))
        >>> kernel = make_agents_kernel(cfg, env, policy, 2, compile=False)
        >>> kernel.agent_dims, kernel.num_agents
        (1, 2)
        >>> states, metrics = train_iteration(states, kernel)
        >>> states.iteration.tolist(), metrics["total_loss"].shape  # one value per agent: [A]
        ([1, 1], torch.Size([2]))
    """
    if not getattr(env, "is_pure", True):
        raise ValueError(f"train_many needs a pure environment; {getattr(env, 'id', env)!r} steps a host simulator")
    base = make_kernel(config, env, policy, env_params=env_params, custom_losses=custom_losses, compile=False)

    def agents_rollout_step(state):
        # Absent optional parts (obs_norm=None, ...) are pytree leaves that vmap must skip.
        dims = pytree.tree_map(lambda x: 0 if isinstance(x, torch.Tensor) else None, state)
        new_state, transition = torch.func.vmap(base.rollout_step, in_dims=(dims,), out_dims=(dims, 0))(state)
        # The split keys come out as strided views of [A, 3, 2]; a changing stride recompiles.
        return new_state.replace(key=new_state.key.contiguous()), transition

    def agents_update(params, opt_state, minibatch, hp, lr):
        return torch.func.vmap(base.update)(params, opt_state, minibatch, hp, lr)

    def agents_value(params, obs):
        return torch.func.vmap(policy.value)(params, obs)

    step, update, value = agents_rollout_step, agents_update, agents_value
    if compile:
        opts = {"fullgraph": True, "dynamic": False, **(compile_options or {})}
        step, update = torch.compile(step, **opts), torch.compile(update, **opts)
    return Kernel(
        config=config, env=env, env_params=base.env_params, policy=policy, custom_losses=base.custom_losses,
        rollout_step=step, update=update, compiled=compile, num_agents=num_agents, value=value,
    )
