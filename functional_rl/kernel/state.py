"""The training state: one frozen pytree holding everything needed to continue a run.

Example:
    >>> from functional_rl.kernel.config import PPOConfig
    >>> from functional_rl.envs import make
    >>> from functional_rl.kernel.policies import make_mlp_policy
    >>> cfg = PPOConfig(num_envs=2)
    >>> env = make(cfg.env_id)
    >>> policy = make_mlp_policy(env.observation_space, env.action_space)
    >>> state = TrainerState.create(cfg, env, policy)
    >>> state.envs.obs.shape, int(state.agent_step)
    (torch.Size([2, 4]), 0)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree

import functional_rl.kernel.random as jr
from functional_rl.kernel import normalize
from functional_rl.kernel.config import Hyperparams, PPOConfig
from functional_rl.kernel.optim import make_optimizer
from functional_rl.kernel.struct import pytree_dataclass

__all__ = ["TrainerState", "LearnerState", "EnvsState", "init_state", "last_action_size"]


def last_action_size(action_space: Any) -> int:
    """Width of the encoded last action: ``n`` (one-hot) for Discrete, ``sum(nvec)`` (a one-hot
    per choice) for MultiDiscrete, ``prod(shape)`` for Box.

    Example:
        >>> from functional_rl.envs import Box, Discrete, MultiDiscrete
        >>> last_action_size(Discrete(3)), last_action_size(Box(low=(0.0,) * 6, high=(1.0,) * 6, shape=(2, 3)))
        (3, 6)
        >>> last_action_size(MultiDiscrete((3, 2)))
        5
    """
    from functional_rl.envs.base import action_width

    return action_width(action_space)


@pytree_dataclass
class LearnerState:
    """What defines a learner: its parameters, optimizer state, hyperparameters and the
    statistics its inputs are normalised with. Every leaf is the same on every process of a
    data-parallel run.

    Attributes:
        params: policy parameters (nested dict of tensors).
        opt_state: optimizer state (:func:`~functional_rl.kernel.optim.make_optimizer`'s).
        hparams: :class:`~functional_rl.kernel.config.Hyperparams`, 0-d float32 tensors.
        num_updates: int64 0-d, completed minibatch updates.
        obs_norm: observation statistics (:class:`~functional_rl.kernel.normalize.RunningMoments`
            ``[*obs_shape]``), or ``None``.
        reward_stats: moments of the discounted return that rewards are scaled by (0-d
            ``RunningMoments``), or ``None``.

    Example (``cfg``, ``env``, ``policy``: the doctest fixture of ``functional_rl/conftest.py``):
        >>> learner = TrainerState.create(cfg.replace(normalize_obs=True), env, policy).learner
        >>> int(learner.num_updates), learner.obs_norm.mean.shape, learner.reward_stats is None
        (0, torch.Size([4]), True)
    """

    params: Any
    opt_state: Any
    hparams: Hyperparams
    num_updates: torch.Tensor
    obs_norm: Any = None
    reward_stats: Any = None


@pytree_dataclass
class EnvsState:
    """The environments a learner acts in: every leaf has a leading env axis ``[B, ...]``, so
    a data-parallel run gathers or splits this part row-wise (a ``tree_map``).

    Attributes:
        env_state: the environments' state pytree, leaves ``[B, ...]``.
        obs: float32 ``[B, *obs_shape]``, the current (raw) observation.
        episode_return: float32 ``[B]``, return of each env's running episode.
        episode_length: int64 ``[B]``, length of each env's running episode.
        env_ids: int64 ``[B]``, each env's index in the whole run (``0 .. B-1`` in one
            process; rank ``r`` of a data-parallel run owns ``r*B .. r*B+B-1``). Every random
            draw of env ``b`` (its actions, its resets, its minibatch slots) folds in
            ``env_ids[b]``, so an env sees the same numbers however the envs are split
            across processes.
        last_action: float32 ``[B, K]``, the encoded previous action fed to the policy
            (``config.last_action``), or ``None``.
        discounted_return: float64 ``[B]``, each env's running discounted return that reward
            scaling tracks (``config.normalize_reward``), or ``None``.
        carry: a recurrent policy's carry ``[B, C]`` after each env's latest step (not yet
            reset where an episode ended: the next step resets it, see
            :mod:`~functional_rl.kernel.recurrent`), or ``None`` for a feed-forward policy.

    Example (``cfg``, ``env``: the doctest fixture of ``functional_rl/conftest.py``):
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(8,), obs_dim_extra=2)
        >>> envs = TrainerState.create(cfg.replace(last_action=True), env, policy).envs
        >>> envs.obs.shape, envs.env_ids.tolist(), envs.last_action.shape  # [B, 4], [B], [B, K]
        (torch.Size([2, 4]), [0, 1], torch.Size([2, 2]))
    """

    env_state: Any
    obs: torch.Tensor
    episode_return: torch.Tensor
    episode_length: torch.Tensor
    env_ids: torch.Tensor
    last_action: Any = None
    discounted_return: Any = None
    carry: Any = None


@pytree_dataclass
class TrainerState:
    """Immutable training state (a pytree; update it with ``state.replace(...)``).

    Attributes:
        learner: :class:`LearnerState` (params, optimizer state, hyperparameters, statistics).
        envs: :class:`EnvsState` (env state, observations, episode statistics, env ids).
        key: int64 ``[2]``, the run's PRNG key; every draw splits it.
        agent_step: int64 0-d, environment steps taken (all envs, all ranks).
        iteration: int64 0-d, completed training iterations.
        curriculum: the curriculum's state (:mod:`functional_rl.kernel.curriculum`), or ``None``.

    Example:
        >>> from functional_rl.kernel.config import PPOConfig
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> cfg = PPOConfig(num_envs=2, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = TrainerState.create(cfg, env, policy)
        >>> state.envs.obs.shape, state.key.shape, state.envs.episode_return.shape  # [B, 4], [2], [B]
        (torch.Size([2, 4]), torch.Size([2]), torch.Size([2]))
        >>> int(state.iteration), state.learner.obs_norm is None
        (0, True)
        >>> later = state.replace(iteration=state.iteration + 1)  # a new state; the old one is unchanged
        >>> int(later.iteration), int(state.iteration)
        (1, 0)
    """

    learner: LearnerState
    envs: EnvsState
    key: torch.Tensor
    agent_step: torch.Tensor
    iteration: torch.Tensor
    curriculum: Any = None

    @classmethod
    def create(
        cls,
        config: PPOConfig,
        env: Any,
        policy: Any,
        *,
        key: torch.Tensor | None = None,
        env_params: Any = None,
        hparams: Hyperparams | None = None,
        curriculum: Any = None,
        env_offset: int = 0,
    ) -> TrainerState:
        """Initial state: fresh params from ``key`` (default ``jr.key(config.seed)``), reset envs.

        The key is split into (params, env reset, run) streams, so the same seed gives the
        same state everywhere. Env ``b`` gets the global index ``env_offset + b`` and resets
        from ``row_keys(k_env, env_offset + b)``: rank ``r`` of a data-parallel run passes
        ``env_offset = r * num_envs`` and its envs start exactly where envs
        ``r*num_envs ..`` of a one-process run with all the envs start. Everything is built on
        the CPU and moved to ``config.device``, so a CUDA run starts from exactly the CPU
        run's initial state.
        """
        key = jr.key(config.seed) if key is None else key
        k_params, k_env, k_run = jr.split(key, 3).unbind(0)
        env_params = env.default_params() if env_params is None else env_params
        params = policy.init(k_params)
        env_ids = torch.arange(env_offset, env_offset + config.num_envs, dtype=torch.int64)
        obs, env_state = env.reset(jr.row_keys(k_env, env_ids), env_params, config.num_envs)
        zero = torch.zeros((), dtype=torch.int64)
        reward_norm = normalize.reward_norm_init(config.num_envs) if config.normalize_reward else None
        learner = LearnerState(
            params=params,
            opt_state=make_optimizer(config).init(params),
            hparams=Hyperparams.from_config(config) if hparams is None else hparams,
            num_updates=zero.clone(),
            obs_norm=normalize.obs_norm_init(env.observation_space.shape) if config.normalize_obs else None,
            reward_stats=None if reward_norm is None else reward_norm.moments,
        )
        envs = EnvsState(
            env_state=env_state,
            obs=obs,
            episode_return=torch.zeros(config.num_envs),
            episode_length=torch.zeros(config.num_envs, dtype=torch.int64),
            env_ids=env_ids,
            last_action=torch.zeros(config.num_envs, last_action_size(env.action_space)) if config.last_action else None,
            discounted_return=None if reward_norm is None else reward_norm.discounted_return,
            carry=policy.initial_carry(config.num_envs) if getattr(policy, "initial_carry", None) is not None else None,
        )
        # The curriculum has its own stream: adding one leaves the training key stream unchanged.
        cur = None if curriculum is None else curriculum.init(jr.fold_in(key, 0x0C0FFEE), config.num_envs)
        state = cls(learner=learner, envs=envs, key=k_run, agent_step=zero, iteration=zero.clone(), curriculum=cur)
        return state.to(config.device)

    def to(self, device: str | torch.device) -> TrainerState:
        """Every tensor leaf on ``device`` (a new state; this one is untouched)."""
        return pytree.tree_map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, self)


def init_state(config: PPOConfig, env: Any, policy: Any, **kwargs: Any) -> TrainerState:
    """Alias of :meth:`TrainerState.create`.

    Example (same seed, same state):
        >>> from functional_rl.kernel.config import PPOConfig
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> cfg = PPOConfig(num_envs=2, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> a, b = init_state(cfg, env, policy), init_state(cfg, env, policy)
        >>> bool(torch.equal(a.envs.obs, b.envs.obs)), a.envs.obs.shape
        (True, torch.Size([2, 4]))
        >>> c = init_state(cfg, env, policy, key=jr.key(123))
        >>> bool(torch.equal(a.envs.obs, c.envs.obs))
        False
    """
    return TrainerState.create(config, env, policy, **kwargs)
