"""The PPO update: ``update_minibatch``, ``train_epoch`` and ``train_iteration`` (the default
``step_fn``), plus :class:`Kernel`, the frozen bundle of static parts a step needs.

One iteration (PureJaxRL's shape, with named steps instead of tuple carries)::

    lr          = schedule(state.iteration)
    state, traj = rollout(state)                       # [T, B]
    adv, ret    = compute_advantages(traj)             # [T, B]
    batch       = flatten(traj + adv + ret)            # [T * B]
    repeat update_epochs: state, m = train_epoch(state, batch, lr)
    state       = state.replace(iteration = iteration + 1)

Everything is pure; metrics come back as 0-d tensors, synced to the host by the shell once.

Data parallel (``torch.distributed``): every process runs this same code on its own envs; the
kernel's only contact with the others is ``Kernel.all_reduce``, an injected function that sums
a 1-D tensor over processes (``None`` in one process: nothing is reduced). It sums the
gradients (then divided by ``world_size``), the advantage-normalisation moments of each
minibatch and the iteration's metrics, so a run of ``W`` processes with ``B`` envs each
computes what one process with ``W * B`` envs computes, to float rounding: per-env key
streams (``state.env_ids``) and minibatches stratified by env make the two see the same
transitions in the same minibatches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from tensordict import TensorDict

import functional_rl.kernel.random as jr
from functional_rl.kernel.advantages import compute_advantages
from functional_rl.kernel.config import PPOConfig, learning_rate_at
from functional_rl.kernel.losses import LossFn, adapt_loss, ppo_loss
from functional_rl.kernel.optim import apply_updates, global_norm
from functional_rl.kernel.parallel import AllReduce, sum_over_processes
from functional_rl.kernel.rollout import policy_act, record_step, rollout, rollout_step
from functional_rl.kernel.state import TrainerState, make_optimizer

__all__ = [
    "Kernel", "make_kernel", "update_minibatch", "train_epoch", "train_on_trajectory", "train_iteration",
    "explained_variance", "minibatch_order", "advantage_stats", "MINIBATCH_KEYS",
]

MINIBATCH_KEYS = ("obs", "action", "log_prob", "value", "advantage", "returns", "reward")


@dataclasses.dataclass(frozen=True)
class Kernel:
    """The static half of a training step: what does not change during a run.

    Holds the config, env, env params, policy, custom losses and the (possibly compiled)
    step functions. Frozen and stateless: all changing data lives in ``TrainerState``.

    Attributes:
        rollout_step: ``state -> (state, transition)``.
        update: ``(params, opt_state, minibatch, hp, lr) -> (params, opt_state, metrics)``.
        num_agents: ``None`` for one agent; ``A`` when the functions are vmapped over a
            leading agent axis of every state leaf (see :func:`functional_rl.vmap.train_many`).
        value: the critic ``(params, obs) -> V``; default ``policy.value``.
        curriculum: optional task sampler (:mod:`functional_rl.kernel.curriculum`).
        all_reduce: ``None`` in one process; in a data-parallel run a function summing a 1-D
            tensor over all processes (:func:`functional_rl.shell.distributed.process_group_sum`).
        world_size: number of processes (1 without ``torch.distributed``).

    Example:
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2, update_epochs=1, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> kernel = make_kernel(cfg, env, policy)
        >>> kernel.compiled, kernel.agent_dims, kernel.num_agents
        (False, 0, None)
        >>> state, transition = kernel.rollout_step(state)
        >>> transition["obs"].shape, kernel.critic(state.params, state.obs).shape  # [B, 4], [B]
        (torch.Size([2, 4]), torch.Size([2]))
    """

    config: PPOConfig
    env: Any
    env_params: Any
    policy: Any
    custom_losses: tuple[LossFn, ...]
    rollout_step: Callable[..., Any]
    update: Callable[..., Any]
    compiled: bool = False
    num_agents: int | None = None
    value: Callable[..., Any] | None = None
    curriculum: Any = None
    all_reduce: AllReduce | None = None
    world_size: int = 1

    @property
    def agent_dims(self) -> int:
        """0 for one agent; 1 when every tensor has a leading agent axis (``train_many``)."""
        return 0 if self.num_agents is None else 1

    def critic(self, params: Any, obs: torch.Tensor) -> torch.Tensor:
        """``V(obs)`` for ``obs [T, B, ...]`` (or ``[A, T, B, ...]`` with agents)."""
        return (self.value or self.policy.value)(params, obs)


def advantage_stats(advantage: torch.Tensor, all_reduce: AllReduce | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std of advantages ``[..., N]`` over the last axis and all processes:
    float32 ``[...]`` each (0-d for one minibatch).

    ``mean = S1 / n`` and ``std = sqrt((S2 - S1 * mean) / (n - 1))`` from the sums
    ``n, S1 = sum A, S2 = sum A^2`` (accumulated in float64 so the subtraction does not lose the
    variance) added up over processes; in one process this is ``A.mean(), A.std()``.

    Example:
        >>> adv = torch.tensor([1.0, 2.0, 3.0, 6.0])
        >>> mean, std = advantage_stats(adv)
        >>> round(float(mean), 4), round(float(std), 4), round(float(adv.std()), 4)
        (3.0, 2.1602, 2.1602)
        >>> other = torch.tensor([2.0, 9.0, 45.0], dtype=torch.float64)  # n, sum, sum of squares of [3, 6]
        >>> mean, std = advantage_stats(adv[:2], lambda buf: buf + other)  # a stand-in for a second process
        >>> round(float(mean), 4), round(float(std), 4)
        (3.0, 2.1602)
    """
    a = advantage.to(torch.float64)
    n = torch.full(a.shape[:-1], a.shape[-1], dtype=torch.float64, device=a.device)
    n, s1, s2 = sum_over_processes([torch.stack([n, a.sum(-1), (a * a).sum(-1)])], all_reduce)[0].unbind(0)
    mean = s1 / n
    var = torch.clamp((s2 - s1 * mean) / (n - 1), min=0.0)
    return mean.to(advantage.dtype), var.sqrt().to(advantage.dtype)


def update_minibatch(
    params: Any,
    opt_state: Any,
    minibatch: dict[str, torch.Tensor],
    hp: Any,
    lr: torch.Tensor,
    *,
    policy: Any,
    config: PPOConfig,
    custom_losses: Sequence[LossFn] = (),
    all_reduce: AllReduce | None = None,
    world_size: int = 1,
) -> tuple[Any, Any, dict[str, torch.Tensor]]:
    """One gradient step on ``ppo_loss``: ``torch.func.grad``, global-norm clip, Adam. Pure.

    In a data-parallel run (``all_reduce`` given) the advantages are normalised with the
    statistics of the whole minibatch across processes and the gradient is the mean over
    processes, ``g = (1 / W) sum_r g_r``, before clipping and Adam, so every process takes
    the same step on the same parameters. :func:`train_epoch` passes the normalisation
    statistics in as ``minibatch["adv_mean"]``/``["adv_std"]`` (formed for the whole epoch
    at once: one collective per epoch instead of one per minibatch); without them they are
    computed here.

    Args:
        params, opt_state: current parameters and optimizer state.
        minibatch: ``MINIBATCH_KEYS`` tensors with leading dim ``N = minibatch_size``.
        hp: :class:`Hyperparams`; lr: float 0-d learning rate for this step.
        all_reduce, world_size: see :class:`Kernel`.

    Returns:
        ``(params, opt_state, metrics)``; metrics are ``ppo_loss``'s plus
        :func:`gradient_stats` (of the averaged gradient, before clipping).

    Example (one step on a batch of ``N = 4`` transitions):
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2, update_epochs=1, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> mb = {"obs": torch.zeros(4, 4), "action": torch.tensor([0, 1, 0, 1]),
        ...       "log_prob": torch.full((4,), -0.6931), "value": torch.zeros(4),
        ...       "advantage": torch.tensor([1.0, -1.0, 1.0, -1.0]), "returns": torch.ones(4),
        ...       "reward": torch.ones(4)}
        >>> params, opt_state, m = update_minibatch(state.params, state.opt_state, mb, state.hparams,
        ...                                         torch.tensor(1e-3), policy=policy, config=cfg)
        >>> int(opt_state[1].count), m["total_loss"].shape, "grad_norm" in m
        (1, torch.Size([]), True)
        >>> bool(torch.equal(params["critic"][-1]["b"], state.params["critic"][-1]["b"]))  # the critic moved
        False
    """

    adv_stats = None
    if config.norm_adv:
        if "adv_mean" in minibatch:
            adv_stats = (minibatch["adv_mean"], minibatch["adv_std"])
        else:
            adv_stats = advantage_stats(minibatch["advantage"], all_reduce)

    def loss_fn(p):
        return ppo_loss(
            p, minibatch, policy=policy, hp=hp, clip_vloss=config.clip_vloss,
            norm_adv=config.norm_adv, custom_losses=custom_losses, adv_stats=adv_stats,
        )

    grads, metrics = torch.func.grad(loss_fn, has_aux=True)(params)
    if all_reduce is not None:
        leaves, spec = pytree.tree_flatten(grads)
        grads = pytree.tree_unflatten([g / world_size for g in sum_over_processes(leaves, all_reduce)], spec)
    tx = make_optimizer(config, learning_rate=lr, max_grad_norm=hp.max_grad_norm)
    updates, opt_state = tx.update(grads, opt_state, params)
    metrics = {**metrics, **gradient_stats(grads)}
    return apply_updates(params, updates), opt_state, metrics


def gradient_stats(grads: Any) -> dict[str, torch.Tensor]:
    """Gradient statistics as 0-d tensors (before clipping).

    ``grad_norm`` (global L2 norm), ``grad/norm/<group>`` for each top-level parameter group
    (``actor``, ``critic``, ...), and ``grad/mean`` / ``grad/var``: the mean and (population)
    variance of all gradient elements pooled.
    """
    flat = torch.cat([g.reshape(-1) for g in pytree.tree_leaves(grads) if isinstance(g, torch.Tensor)])
    stats = {"grad_norm": global_norm(grads), "grad/mean": flat.mean(), "grad/var": flat.var(unbiased=False)}
    if isinstance(grads, dict):
        for name, group in grads.items():
            stats[f"grad/norm/{name}"] = global_norm(group)
    return stats


def _mean_metrics(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([m[k] for m in items]).mean(0) for k in items[0]}


def train_epoch(state: TrainerState, batch: TensorDict, kernel: Kernel, lr: torch.Tensor) -> tuple[TrainerState, dict[str, torch.Tensor]]:
    """One pass over ``batch`` in ``num_minibatches`` shuffled minibatches. Pure.

    The order comes from ``state.key`` (split; the state carries the new key) through
    :func:`minibatch_order`: every minibatch holds ``num_steps / num_minibatches`` random
    steps of every env. With ``norm_adv`` the advantage statistics of all the epoch's
    minibatches are formed up front (summed over processes in one reduction) and handed to
    each update.

    Args:
        batch: TensorDict ``[N]`` with ``MINIBATCH_KEYS``, ``N = num_envs * num_steps``.
        lr: float 0-d.

    Returns:
        ``(state, metrics)`` with metrics averaged over the minibatches.

    Example:
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2, update_epochs=1, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> kernel = make_kernel(cfg, env, policy)
        >>> state, trajectory = frl.rollout(state, cfg.num_steps, kernel.rollout_step, kernel.critic)
        >>> batch = make_batch(trajectory, state.hparams)  # [T * B] = [8]
        >>> batch.batch_size
        torch.Size([8])
        >>> new_state, metrics = train_epoch(state, batch, kernel, torch.tensor(1e-3))
        >>> int(new_state.update), metrics["policy_loss"].shape
        (2, torch.Size([]))
    """
    cfg = kernel.config
    ax = kernel.agent_dims
    key, k_perm = jr.split(state.key, 2).unbind(-2)
    key = key.contiguous()  # [A, 2] views of [A, 2, 2] would change strides between calls
    n = batch.batch_size[ax]
    perm = minibatch_order(k_perm, state.env_ids, n // state.env_ids.shape[-1], cfg.num_minibatches)  # [N], or [A, N] for a batch of keys
    if ax == 0:
        shuffled = {k: batch[k][perm] for k in MINIBATCH_KEYS}
    else:
        rows = torch.arange(perm.shape[0], device=perm.device)[:, None]
        shuffled = {k: batch[k][rows, perm] for k in MINIBATCH_KEYS}
    size = n // cfg.num_minibatches
    if cfg.norm_adv:  # every minibatch's statistics, over all processes, in one reduction
        mean, std = advantage_stats(shuffled["advantage"].unflatten(ax, (cfg.num_minibatches, size)), kernel.all_reduce)
    params, opt_state = state.params, state.opt_state
    history = []
    for i in range(cfg.num_minibatches):
        mb = {k: v.narrow(ax, i * size, size) for k, v in shuffled.items()}
        if cfg.norm_adv:
            mb.update(adv_mean=mean.select(ax, i), adv_std=std.select(ax, i))
        params, opt_state, m = kernel.update(params, opt_state, mb, state.hparams, lr)
        history.append(m)
    state = state.replace(params=params, opt_state=opt_state, key=key, update=state.update + cfg.num_minibatches)
    return state, _mean_metrics(history)


def minibatch_order(key: torch.Tensor, env_ids: torch.Tensor, num_steps: int, num_minibatches: int) -> torch.Tensor:
    """The order in which an epoch visits a flattened ``[T * B]`` batch (index ``t * B + b``).

    Env ``b`` shuffles its own ``T`` steps with the key ``row_keys(key, env_ids)[b]``; minibatch
    ``m`` takes the steps ``m * s .. m * s + s - 1`` of every env's shuffle (``s = T / M``),
    env-major. Each minibatch is thus a random sample stratified by env (``s`` steps of each),
    and, because an env's shuffle depends only on its global index, the minibatch ``m`` of a
    data-parallel process is exactly its envs' share of minibatch ``m`` of one process
    running all the envs.

    Args:
        key: int64 ``[2]`` (or ``[A, 2]``, one per agent).
        env_ids: int64 ``[B]`` (or ``[A, B]``), the envs' global indices.
        num_steps: ``T``.
        num_minibatches: ``M``; must divide ``T``.

    Returns:
        int64 ``[T * B]`` (or ``[A, T * B]``) whose consecutive slices of ``s * B`` are the minibatches.

    Example (T = 4 steps of B = 2 envs in M = 2 minibatches):
        >>> import functional_rl.kernel.random as jr
        >>> order = minibatch_order(jr.key(0), torch.arange(2), num_steps=4, num_minibatches=2)
        >>> sorted(order.tolist()) == list(range(8))
        True
        >>> [sorted(i % 2 for i in mb) for mb in order.reshape(2, 4).tolist()]  # 2 steps of each env
        [[0, 0, 1, 1], [0, 0, 1, 1]]
        >>> second = minibatch_order(jr.key(0), torch.tensor([1]), 4, 2)  # env 1 alone, as in a second process
        >>> [[i // 2 for i in mb if i % 2 == 1] for mb in order.reshape(2, 4).tolist()] == second.reshape(2, 2).tolist()
        True
    """
    if num_steps % num_minibatches:
        raise ValueError(f"num_minibatches={num_minibatches} must divide num_steps={num_steps}")
    B, s = env_ids.shape[-1], num_steps // num_minibatches
    lead = env_ids.shape[:-1]
    keys = jr.row_keys(key, env_ids)  # [..., B, 2]: one shuffle per env
    steps = torch.argsort(jr.bits(keys, (num_steps,)), dim=-1, stable=True)  # [..., B, T]
    flat = steps * B + torch.arange(B, device=steps.device)[:, None]  # index t * B + b
    flat = flat.reshape(*lead, B, num_minibatches, s).transpose(-3, -2)  # [..., M, B, s]
    return flat.reshape(*lead, num_steps * B)


def explained_variance(value: torch.Tensor, returns: torch.Tensor, all_reduce: AllReduce | None = None) -> torch.Tensor:
    """``1 - Var(returns - value) / Var(returns)`` over the last axis (population variances);
    NaN if ``Var(returns) = 0``. ``[..., N] -> [...]``.

    The variances come from float64 moments (:func:`_ev_moments`), which add up over the
    processes of a data-parallel run (``all_reduce``).

    Example:
        >>> returns = torch.tensor([1.0, 2.0, 3.0])
        >>> explained_variance(returns, returns), explained_variance(torch.zeros(3), returns)
        (tensor(1.), tensor(0.))
        >>> explained_variance(torch.zeros(5, 3), returns.expand(5, 3)).shape  # [5, N] -> [5]
        torch.Size([5])
    """
    moments = _ev_moments(value, returns)
    moments = dict(zip(moments, sum_over_processes(list(moments.values()), all_reduce)))
    return _ev_from_moments(moments).to(returns.dtype)


def _ev_moments(value: torch.Tensor, returns: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sums behind :func:`explained_variance` (float64, over the last axis): ``n``, and the first
    and second moments of ``y = returns`` and ``r = returns - value``."""
    y = returns.to(torch.float64)
    r = y - value.to(torch.float64)
    return {
        "ev/n": torch.full_like(y[..., 0], y.shape[-1]),
        "ev/y": y.sum(-1), "ev/yy": (y * y).sum(-1), "ev/r": r.sum(-1), "ev/rr": (r * r).sum(-1),
    }


def _ev_from_moments(m: dict[str, torch.Tensor]) -> torch.Tensor:
    n = m["ev/n"]
    var_y = m["ev/yy"] / n - (m["ev/y"] / n) ** 2
    var_r = m["ev/rr"] / n - (m["ev/r"] / n) ** 2
    return 1.0 - var_r / var_y


def _nonfinite_count(tree: Any) -> torch.Tensor:
    leaves = [x for x in pytree.tree_leaves(tree) if isinstance(x, torch.Tensor) and x.is_floating_point()]
    return sum((~torch.isfinite(x)).sum() for x in leaves)


def make_batch(trajectory: TensorDict, hp: Any, agent_dims: int = 0) -> TensorDict:
    """Add ``advantage`` and ``returns`` (GAE) to a ``[T, B]`` trajectory and flatten to ``[T*B]``.

    With ``agent_dims=1`` the trajectory is ``[A, T, B]`` and ``hp`` holds ``[A]`` values; the
    agents are folded into the env axis for GAE (``[T, A*B]``, per-env gamma and lambda), which
    is exact because GAE never mixes envs. Returns ``[A, T*B]``.
    """
    names = ("reward", "value", "next_value", "terminated", "truncated")
    if agent_dims == 0:
        args = [trajectory[k] for k in names]
        gamma, lam = hp.gamma, hp.gae_lambda
    else:
        A, T, B = trajectory.batch_size
        args = [trajectory[k].transpose(0, 1).reshape(T, A * B) for k in names]
        gamma, lam = hp.gamma.repeat_interleave(B), hp.gae_lambda.repeat_interleave(B)
    advantage, returns = compute_advantages(*args, gamma=gamma, gae_lambda=lam)
    if agent_dims:
        advantage = advantage.reshape(T, A, B).transpose(0, 1)
        returns = returns.reshape(T, A, B).transpose(0, 1)
    data = trajectory.clone(recurse=False)
    data["advantage"] = advantage
    data["returns"] = returns
    return data.reshape(-1) if agent_dims == 0 else data.reshape(trajectory.batch_size[0], -1)


def train_on_trajectory(state: TrainerState, trajectory: TensorDict, kernel: Kernel) -> tuple[TrainerState, TensorDict, dict[str, torch.Tensor]]:
    """The update half of an iteration: the scheduled learning rate, GAE, ``update_epochs``
    epochs of minibatch updates. Pure.

    Args:
        trajectory: TensorDict ``[T, B]`` (``[A, T, B]`` with agents) from :func:`rollout`.

    Returns:
        ``(state, batch, metrics)``: ``batch`` the flattened TensorDict ``[N]`` with
        ``advantage`` and ``returns``; ``metrics`` the loss diagnostics averaged over all
        minibatch updates plus ``learning_rate``.

    Example:
        >>> import functional_rl as frl
        >>> from functional_rl.shell.loop import build
        >>> state, kernel = build(frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2, update_epochs=1), compile=False)
        >>> state, traj = frl.rollout(state, 4, kernel.rollout_step, kernel.critic)
        >>> state, batch, metrics = train_on_trajectory(state, traj, kernel)
        >>> batch.batch_size, int(state.update), "learning_rate" in metrics
        (torch.Size([8]), 2, True)
    """
    cfg = kernel.config
    lr = learning_rate_at(state.hparams, state.iteration, cfg.num_iterations, cfg.anneal_lr)
    batch = make_batch(trajectory, state.hparams, kernel.agent_dims)
    epoch_metrics = []
    for _ in range(cfg.update_epochs):
        state, m = train_epoch(state, batch, kernel, lr)
        epoch_metrics.append(m)
    return state, batch, {**_mean_metrics(epoch_metrics), "learning_rate": lr}


def train_iteration(state: TrainerState, kernel: Kernel) -> tuple[TrainerState, dict[str, torch.Tensor]]:
    """The default ``step_fn``: rollout, GAE, ``update_epochs`` epochs. Pure.

    With an agent-batched kernel (``kernel.num_agents``) every metric has shape ``[A]``.

    Returns:
        ``(state, metrics)`` with 0-d tensor metrics: the loss diagnostics averaged over all
        minibatch updates, ``explained_variance``, ``learning_rate``, ``episode_return`` and
        ``episode_length`` (means over the episodes that ended in this iteration; NaN if none),
        ``episodes`` (how many ended), ``nonfinite_params`` and ``nonfinite_obs`` (counts).

    Example (one tiny iteration: 4 steps of 2 envs, one epoch of 2 minibatches):
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2, update_epochs=1, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> kernel = make_kernel(cfg, env, policy)
        >>> state, metrics = train_iteration(state, kernel)
        >>> int(state.iteration), int(state.update), int(state.agent_step)
        (1, 2, 8)
        >>> metrics["total_loss"].shape, float(metrics["nonfinite_params"])
        (torch.Size([]), 0.0)
    """
    cfg = kernel.config
    state, trajectory = rollout(state, cfg.num_steps, kernel.rollout_step, kernel.critic, time_dim=kernel.agent_dims)
    state, batch, metrics = train_on_trajectory(state, trajectory, kernel)
    metrics = _iteration_metrics(metrics, trajectory, batch, state, kernel)
    if kernel.curriculum is not None:
        cs = kernel.curriculum.update(state.extra["curriculum"], metrics)
        state = state.replace(extra={**state.extra, "curriculum": cs})
        metrics.update(kernel.curriculum.metrics(cs))
    return state.replace(iteration=state.iteration + 1), metrics


def _is_replicated(name: str) -> bool:
    """Metrics every process already holds identically (computed from averaged gradients)."""
    return name == "learning_rate" or name.startswith("grad")


def _iteration_metrics(metrics: dict[str, torch.Tensor], trajectory: TensorDict, batch: TensorDict, state: TrainerState, kernel: Kernel) -> dict[str, torch.Tensor]:
    """Add the iteration's statistics to the update's metrics, over all processes.

    Everything is formed from sums reduced in ONE call of ``kernel.all_reduce`` per dtype:
    loss diagnostics are averaged over processes (their minibatches are of equal size),
    episode statistics are ``sum / count`` over every process's finished episodes, and the
    explained variance comes from the moments of ``returns`` and ``returns - value``.
    """
    W = kernel.world_size
    done = (trajectory["terminated"] | trajectory["truncated"]).to(torch.float32)
    local = {k: v / W for k, v in metrics.items() if not _is_replicated(k)}
    sums = {
        **local,
        "episodes": done.sum(dim=(-2, -1)),
        "episode_return": trajectory["episode_return"].sum(dim=(-2, -1)),
        "episode_length": trajectory["episode_length"].to(torch.float32).sum(dim=(-2, -1)),
        "nonfinite_obs": _nonfinite_count(trajectory["obs"]).to(torch.float32) + _nonfinite_count(trajectory["reward"]),
        **_ev_moments(batch["value"], batch["returns"]),
    }
    sums = dict(zip(sums, sum_over_processes(list(sums.values()), kernel.all_reduce)))
    episodes = sums["episodes"]
    return {
        **metrics,
        **{k: sums[k] for k in local},
        "explained_variance": _ev_from_moments(sums).to(torch.float32),
        "episode_return": sums["episode_return"] / episodes,
        "episode_length": sums["episode_length"] / episodes,
        "episodes": episodes,
        "nonfinite_params": _nonfinite_count(state.params).to(torch.float32),
        "nonfinite_obs": sums["nonfinite_obs"],
    }


def make_kernel(
    config: PPOConfig,
    env: Any,
    policy: Any,
    *,
    env_params: Any = None,
    custom_losses: Sequence[LossFn] = (),
    compile: bool = False,
    compile_options: dict[str, Any] | None = None,
    curriculum: Any = None,
    all_reduce: AllReduce | None = None,
    world_size: int = 1,
) -> Kernel:
    """Bind the static parts and optionally ``torch.compile`` the step functions.

    ``all_reduce`` and ``world_size`` make a data-parallel kernel (see :class:`Kernel`); the
    collectives then run inside the compiled update (functional collectives trace).

    With ``compile=True`` the per-step ``rollout_step`` and ``update_minibatch`` are each
    compiled with ``fullgraph=True, dynamic=False`` (never a loop unrolled over all steps).
    For an impure env (``env.is_pure is False``, e.g. a gymnasium adapter) the step is
    ``policy_act`` (compiled) -> host ``env.step`` -> ``record_step`` (compiled).

    Example:
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2, update_epochs=1, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> kernel = make_kernel(cfg, env, policy, compile=False)
        >>> kernel.env.id, kernel.compiled
        ('CartPole-v1', False)
        >>> state, transition = kernel.rollout_step(state)
        >>> transition["action"].shape, transition["reward"].shape, int(state.agent_step)
        (torch.Size([2]), torch.Size([2]), 2)
    """
    env_params = env.default_params() if env_params is None else env_params
    custom_losses = tuple(adapt_loss(fn, policy) for fn in custom_losses)
    pure_env = getattr(env, "is_pure", True)
    if curriculum is not None and not pure_env:
        raise ValueError(f"a curriculum needs a pure environment; {getattr(env, 'id', env)!r} steps a host simulator")

    opts = {"fullgraph": True, "dynamic": False, **(compile_options or {})}
    maybe_compile = (lambda fn: torch.compile(fn, **opts)) if compile else (lambda fn: fn)

    def update_fn(params, opt_state, minibatch, hp, lr):
        return update_minibatch(
            params, opt_state, minibatch, hp, lr, policy=policy, config=config, custom_losses=custom_losses,
            all_reduce=all_reduce, world_size=world_size,
        )

    if pure_env:

        def step(state):
            return rollout_step(
                state, env=env, env_params=env_params, policy=policy, curriculum=curriculum,
                world_size=world_size, all_reduce=all_reduce,
            )

        step = maybe_compile(step)
    else:
        # An impure (host) env: compile the pure halves, call the simulator between them.
        act = maybe_compile(lambda state: policy_act(state, policy=policy, action_space=env.action_space, all_reduce=all_reduce))
        record = maybe_compile(lambda *args: record_step(*args, world_size=world_size, all_reduce=all_reduce))

        def step(state):
            a = act(state)
            next_obs, env_state, reward, terminated, truncated, final_obs = env.step(a["k_env"], state.env_state, a["env_action"], env_params)
            return record(state, a, next_obs, env_state, reward, terminated, truncated, final_obs)

    return Kernel(
        config=config, env=env, env_params=env_params, policy=policy, custom_losses=custom_losses,
        rollout_step=step, update=maybe_compile(update_fn), compiled=compile, curriculum=curriculum,
        all_reduce=all_reduce, world_size=world_size,
    )
