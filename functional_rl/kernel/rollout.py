"""Collecting experience: ``rollout_step`` (pure, one env step for all envs) and ``rollout``.

A transition (all ``[B]`` leading dims, ``B = num_envs``):

=================  ===============  =========================================================
key                dtype/shape      meaning
=================  ===============  =========================================================
obs                float [B, ...]   the policy's input: the observation (normalised if enabled),
                                    with the encoded last action appended if enabled
action             [B] or [B, D]    the sampled action (unclipped for continuous actions)
log_prob           float [B]        log pi(action | obs) under the behaviour params
value              float [B]        V(obs)
reward             float [B]        reward of the step (scaled if reward normalisation is on)
terminated         bool [B]         the step reached a terminal state
truncated          bool [B]         the step hit the time limit
next_obs           float [B, ...]   the true next observation (final obs if the episode ended),
                                    normalised with the same statistics as ``obs``
episode_return     float [B]        raw return of the episode that ended here, else 0
episode_length     int64 [B]        length of the episode that ended here, else 0
action_mask        bool [B, K]      the legal actions the policy sampled among (only for an env
                                    with ``action_mask``; training recomputes log-probs under it)
carry              float [B, C]     a recurrent policy's carry the step started from (before its
                                    reset; only for a recurrent policy)
reset              bool [B]         ``obs`` starts an episode: the carry was zeroed (recurrent only)
valid              bool [B]         the row's agent is in the episode (only for an env with
                                    ``valid_mask``, e.g. a multi-agent adapter; training and the
                                    metrics skip invalid rows)
=================  ===============  =========================================================

A multi-agent env (:func:`~functional_rl.envs.pettingzoo_adapter.from_pettingzoo`) puts every
agent of every copy in a row of the batch; an agent that left its episode early keeps its row
until the copy resets. Such an env has a method ``valid_mask(env_state, params) -> bool [B]``
(read before the step, like ``action_mask``): the rows whose agent acts in this step. An
invalid row's transition is recorded (shapes stay static) but has advantage 0 and no weight
in any loss or metric, and its running episode length does not grow.

An env may restrict the legal actions of a discrete action space: it then has a pure method
``action_mask(env_state, params) -> bool [B, K]`` (K logits: ``n``, or ``sum(nvec)`` for a
MultiDiscrete space, one legal choice per block at least). The policy samples only legal
actions (:func:`~functional_rl.kernel.distributions.mask_logits`).

``rollout`` stacks ``T`` transitions into a TensorDict with batch size ``[T, B]`` and adds
``next_value = V(next_obs)`` in one batched critic pass.

Examples use the doctest fixture of ``functional_rl/conftest.py`` (``cfg``: 2 envs x 4
steps, 2 minibatches; ``env``: CartPole; ``policy``: an MLP; ``state``: a fresh state).
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict
from torch._higher_order_ops.scan import scan
import torch.utils._pytree as pytree

import functional_rl.kernel.random as jr
from functional_rl.kernel import normalize
from functional_rl.envs.base import Box, EnvStep, action_width
from functional_rl.kernel.distributions import mask_logits
from functional_rl.kernel.parallel import AllReduce
from functional_rl.kernel.recurrent import is_recurrent

__all__ = ["rollout_step", "rollout", "rollout_draws", "scan_rollout", "policy_input", "policy_act", "record_step", "encode_action", "env_action_mask", "env_valid_mask", "bootstrap_value"]

def policy_input(obs: torch.Tensor, obs_norm: Any = None, last_action: torch.Tensor | None = None) -> torch.Tensor:
    """What the policy sees: the observation, normalised with ``obs_norm`` if given, with the
    encoded last action appended if given. The rollout, the value bootstrap and evaluation
    all build their inputs here.

    Args:
        obs: float ``[B, *obs_shape]``.
        obs_norm: :class:`~functional_rl.kernel.normalize.RunningMoments` or ``None``.
        last_action: float ``[B, K]`` or ``None``.

    Returns:
        float ``[B, *obs_shape]``, or ``[B, obs_dim + K]`` with the last action.

    Example:
        >>> policy_input(torch.ones(2, 3), last_action=torch.zeros(2, 2)).shape  # [B, 3 + 2]
        torch.Size([2, 5])
        >>> policy_input(torch.ones(2, 3)).shape
        torch.Size([2, 3])
    """
    if obs_norm is not None:
        obs = normalize.obs_norm_apply(obs_norm, obs)
    if last_action is not None:
        obs = torch.cat([obs.reshape(obs.shape[0], -1), last_action], dim=-1)
    return obs


def policy_act(
    state: Any, *, policy: Any, action_space: Any, all_reduce: AllReduce | None = None, draws: dict[str, torch.Tensor] | None = None,
    action_mask: torch.Tensor | None = None, row_group: int | None = None,
) -> dict[str, Any]:
    """The policy half of a step: normalise the observation, sample an action. Pure.

    Returns a dict with the new ``key`` and ``obs_norm``, the per-env keys ``k_env`` for the
    env step, the policy input ``obs``, ``action`` (unclipped), ``env_action`` (clipped to a
    Box's bounds), ``log_prob`` and ``value``. Env ``b``'s action and env keys are
    ``row_keys(k, state.envs.env_ids)[b]`` of this step's keys. In a data-parallel run
    ``all_reduce`` (:mod:`functional_rl.kernel.parallel`) makes the observation statistics see
    every process's observations. Shapes (``B = num_envs``): ``key`` int64 ``[2]``; ``k_env``
    int64 ``[B, 2]``; ``obs`` float ``[B, *obs_shape]`` (``[B, obs_dim + K]`` with the last
    action appended); ``action``/``env_action`` int64 ``[B]`` or float ``[B, D]``;
    ``log_prob``/``value`` float ``[B]`` (detached).

    ``draws`` (from :func:`rollout_draws`, one step's slice) gives this step's random numbers
    drawn ahead: ``noise`` (the distribution's, ``[B, K]``) and ``k_env`` (``[B, 2]``); the
    state's key is then left as it is (the caller advanced it).

    ``action_mask`` (bool ``[B, K]``, from the env's ``action_mask``) restricts sampling to
    the legal actions; it is returned as ``action_mask`` for the trajectory.

    A recurrent policy (:mod:`~functional_rl.kernel.recurrent`) also gets its carry and
    ``reset = (episode_length == 0)``, and ``carry``, ``reset`` and ``next_carry`` are
    returned. ``row_group`` (``num_envs / num_minibatches``, set by the shell) runs its forward
    pass in groups of that many envs, the row count training replays with.

    Example:
        >>> a = policy_act(state, policy=policy, action_space=env.action_space)
        >>> sorted(a)
        ['action', 'env_action', 'k_env', 'key', 'log_prob', 'obs', 'obs_norm', 'value']
        >>> a["obs"].shape, a["action"].shape, a["log_prob"].shape, a["value"].shape  # [B, 4], [B], [B], [B]
        (torch.Size([2, 4]), torch.Size([2]), torch.Size([2]), torch.Size([2]))
    """
    learner, envs = state.learner, state.envs
    if draws is None:
        key, k_act, k_env = jr.split(state.key, 3).unbind(0)
        # One key per env (folding in its global index): env b's draws never depend on the others.
        k_act = jr.row_keys(k_act, envs.env_ids)
        k_env = jr.row_keys(k_env, envs.env_ids)
    else:
        key, k_env = state.key, draws["k_env"]
    obs_norm = learner.obs_norm
    if obs_norm is not None:  # each observation enters the statistics once, then is normalised
        obs_norm = normalize.obs_norm_update(obs_norm, envs.obs, all_reduce)
    obs = policy_input(envs.obs, obs_norm, envs.last_action)
    recurrent = is_recurrent(policy)
    if recurrent:  # a new episode starts where the running length is 0: its carry is reset
        reset = envs.episode_length == 0
        outputs, next_carry = _apply_in_groups(policy, learner.params, obs, envs.carry, reset, row_group)
    else:
        outputs = policy.apply(learner.params, obs)
    outputs = mask_logits(outputs, action_mask)
    dist = policy.distribution
    action = dist.sample(k_act, outputs) if draws is None else dist.sample_from_noise(outputs, draws["noise"])
    log_prob = dist.log_prob(outputs, action)
    env_action = action
    if isinstance(action_space, Box):
        env_action = torch.clamp(action, action_space.low_tensor(action.device), action_space.high_tensor(action.device))
    out = {
        "key": key, "k_env": k_env, "obs": obs, "obs_norm": obs_norm, "action": action,
        "env_action": env_action, "log_prob": log_prob.detach(), "value": outputs["value"].detach(),
    }
    if action_mask is not None:
        out["action_mask"] = action_mask
    if recurrent:
        out.update(carry=envs.carry, reset=reset, next_carry=next_carry.detach())
    return out


def _apply_in_groups(policy: Any, params: Any, obs: torch.Tensor, carry: torch.Tensor, reset: torch.Tensor,
                     row_group: int | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A recurrent ``policy.apply`` over ``B`` rows in groups of ``row_group`` consecutive rows
    (all at once for ``None``): the row count training replays each step with, so that both
    run the same matmul kernels (see :func:`~functional_rl.kernel.recurrent.unroll`)."""
    B = obs.shape[0]
    if row_group is None or row_group >= B:
        return policy.apply(params, obs, carry, reset)
    # Fresh (aligned) copies: MKL's result can depend on where a matrix starts in memory.
    parts = [policy.apply(params, obs[i:i + row_group].clone(), carry[i:i + row_group].clone(), reset[i:i + row_group])
             for i in range(0, B, row_group)]
    outputs = {k: torch.cat([o[k] for o, _ in parts]) for k in parts[0][0]}
    return outputs, torch.cat([c for _, c in parts])


def _scale_reward(state: Any, step: EnvStep, all_reduce: AllReduce | None) -> tuple[torch.Tensor, Any, Any]:
    """The reward the learner trains on, and the new reward-scaling state
    ``(reward_stats, discounted_return)`` (both ``None`` when reward scaling is off)."""
    stats, acc = state.learner.reward_stats, state.envs.discounted_return
    if stats is None:
        return step.reward, None, None
    rn = normalize.RewardNormState(moments=stats, discounted_return=acc)
    rn = normalize.reward_norm_update(rn, step.reward, step.terminated, step.truncated, state.learner.hparams.gamma, all_reduce)
    return normalize.reward_norm_apply(rn, step.reward), rn.moments, rn.discounted_return


def _episode_stats(envs: Any, reward: torch.Tensor, done: torch.Tensor,
                   valid: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(running, ended)``: each env's running return/length after this step (0 where an
    episode ended), and the return/length of the episodes that ended here (0 elsewhere). An
    invalid row (``valid`` false: its agent is not in the episode) adds nothing."""
    if valid is None:
        ep_return = envs.episode_return + reward
        ep_length = envs.episode_length + 1
    else:
        ep_return = envs.episode_return + torch.where(valid, reward, torch.zeros_like(reward))
        ep_length = envs.episode_length + valid.to(envs.episode_length.dtype)
    running = {
        "episode_return": torch.where(done, torch.zeros_like(ep_return), ep_return),
        "episode_length": torch.where(done, torch.zeros_like(ep_length), ep_length),
    }
    ended = {
        "episode_return": torch.where(done, ep_return, torch.zeros_like(ep_return)),
        "episode_length": torch.where(done, ep_length, torch.zeros_like(ep_length)),
    }
    return running, ended


def record_step(
    state: Any, act: dict[str, Any], step: EnvStep, *, world_size: int = 1, all_reduce: AllReduce | None = None,
    action_space: Any = None,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """The bookkeeping half of a step, after the env moved. Pure.

    Scales the reward (if enabled), builds the policy input of the true next observation
    (normalised with the statistics the policy used, with this step's action appended if
    the run feeds the last action), updates running episode statistics and ``agent_step``.

    Args:
        state: the state ``act`` was computed from.
        act: the dict :func:`policy_act` returned (with ``valid`` bool ``[B]`` added for an
            env with ``valid_mask``).
        step: the env's :class:`~functional_rl.envs.base.EnvStep` (``[B]`` leading dims).
        world_size: processes stepping ``B`` envs each in a data-parallel run; ``agent_step``
            counts all of them (``+= B * world_size``, the reference trainer's
            ``record_rollout(agent_steps, world_size)``).
        all_reduce: in a data-parallel run, the reward statistics see every process's returns.
        action_space: the env's; needed to encode a MultiDiscrete last action (its ``nvec``).

    Returns:
        ``(new_state, transition)``; see the module docstring.

    Example (the two halves of :func:`rollout_step` done by hand):
        >>> a = policy_act(state, policy=policy, action_space=env.action_space)
        >>> out = env.step(a["k_env"], state.envs.env_state, a["env_action"], env.default_params())
        >>> new_state, tr = record_step(state, a, out)
        >>> int(new_state.agent_step), new_state.envs.episode_length.tolist(), tr["next_obs"].shape
        (2, [1, 1], torch.Size([2, 4]))
    """
    envs = state.envs
    done = step.terminated | step.truncated
    last_action = encoded = None
    if envs.last_action is not None:
        encoded = encode_action(act["env_action"], envs.last_action.shape[-1], getattr(action_space, "nvec", None))
        # The true next input of the same episode carries this action; a new episode starts at 0.
        last_action = torch.where(done[:, None], torch.zeros_like(encoded), encoded)
    train_reward, reward_stats, discounted_return = _scale_reward(state, step, all_reduce)
    running, ended = _episode_stats(envs, step.reward, done, act.get("valid"))
    transition = {
        "obs": act["obs"], "action": act["action"], "log_prob": act["log_prob"], "value": act["value"],
        "reward": train_reward, "terminated": step.terminated, "truncated": step.truncated,
        "next_obs": policy_input(step.final_obs, act["obs_norm"], encoded), **ended,
    }
    for name in ("action_mask", "carry", "reset", "valid"):
        if name in act:
            transition[name] = act[name]
    carry = act.get("next_carry", envs.carry)
    new_state = state.replace(
        key=act["key"],
        learner=state.learner.replace(obs_norm=act["obs_norm"], reward_stats=reward_stats),
        envs=envs.replace(obs=step.obs, env_state=step.state, last_action=last_action, discounted_return=discounted_return,
                          carry=carry, **running),
        agent_step=state.agent_step + step.reward.shape[0] * world_size,
    )
    return new_state, transition


def env_action_mask(env: Any, env_state: Any, env_params: Any) -> torch.Tensor | None:
    """The env's legal actions in ``env_state``: ``env.action_mask(env_state, env_params)``, bool
    ``[B, K]``, or ``None`` for an env without masks (all actions legal).

    Example:
        >>> from functional_rl.envs import make
        >>> import functional_rl.kernel.random as jr
        >>> masked = make("MaskedChoice-v0")
        >>> _, s = masked.reset(jr.key(0), masked.default_params(), 2)
        >>> env_action_mask(masked, s, masked.default_params()).shape, env_action_mask(env, None, None)
        (torch.Size([2, 4]), None)
    """
    fn = getattr(env, "action_mask", None)
    return None if fn is None else fn(env_state, env_params)


def env_valid_mask(env: Any, env_state: Any, env_params: Any) -> torch.Tensor | None:
    """The rows whose agent acts in the next step: ``env.valid_mask(env_state, env_params)``,
    bool ``[B]``, or ``None`` for an env without one (every row valid).

    Example:
        >>> env_valid_mask(env, None, None) is None  # CartPole: one agent per row, always there
        True
    """
    fn = getattr(env, "valid_mask", None)
    return None if fn is None else fn(env_state, env_params)


def encode_action(action: torch.Tensor, size: int, nvec: tuple[int, ...] | None = None) -> torch.Tensor:
    """The last-action input: one-hot ``[B, n]`` for int actions ``[B]``, one one-hot per
    choice concatenated ``[B, sum(nvec)]`` for MultiDiscrete actions int ``[B, K]`` (``nvec``
    needed), flattened ``[B, D]`` floats else.

    Example:
        >>> encode_action(torch.tensor([0, 2]), 3)  # int64 [B] -> one-hot [B, 3]
        tensor([[1., 0., 0.],
                [0., 0., 1.]])
        >>> encode_action(torch.tensor([[0.5], [-1.0]]), 1)  # float [B, D] -> [B, D]
        tensor([[ 0.5000],
                [-1.0000]])
        >>> encode_action(torch.tensor([[2, 0]]), 5, nvec=(3, 2))  # MultiDiscrete((3, 2))
        tensor([[0., 0., 1., 1., 0.]])
    """
    if action.dtype in (torch.int64, torch.int32):
        if action.dim() == 2:
            if nvec is None or len(nvec) != action.shape[-1] or sum(nvec) != size:
                raise ValueError(f"encode_action: a MultiDiscrete action [B, {action.shape[-1]}] needs its nvec "
                                 f"({action.shape[-1]} sizes summing to {size}), got nvec={nvec}")
            return torch.cat([torch.nn.functional.one_hot(action[:, k].long(), n) for k, n in enumerate(nvec)], dim=-1).to(torch.float32)
        return torch.nn.functional.one_hot(action.long(), size).to(torch.float32)
    return action.reshape(action.shape[0], -1).to(torch.float32)


def rollout_step(
    state: Any, *, env: Any, env_params: Any, policy: Any, curriculum: Any = None, world_size: int = 1,
    all_reduce: AllReduce | None = None, draws: dict[str, torch.Tensor] | None = None, row_group: int | None = None,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """One step of every pure environment under the current policy. Pure.

    ``policy_act`` (split ``state.key`` into next/action/env keys, sample
    ``a ~ pi(. | obs)``), then ``env.step`` (which auto-resets), then ``record_step``.

    Args:
        state: a :class:`~functional_rl.kernel.state.TrainerState` with ``envs.obs [B, ...]``.
        env: a pure environment; env_params: its parameters; policy: a ``Policy``.
        curriculum: optional task sampler (:mod:`functional_rl.kernel.curriculum`): the env runs
            with its per-env parameters, and envs whose episode ended draw their next task.
        world_size, all_reduce: see :func:`record_step` (``None``/1 in one process).
        draws: this step's random numbers drawn ahead (see :func:`policy_act`); by default
            they come from splitting ``state.key``.
        row_group: a recurrent policy's forward pass in groups of this many envs (:func:`policy_act`).

    Returns:
        ``(new_state, transition)``; see the module docstring for the transition's fields.

    Example:
        >>> new_state, tr = rollout_step(state, env=env, env_params=env.default_params(), policy=policy)
        >>> tr["obs"].shape, tr["action"].shape, tr["reward"], int(new_state.agent_step)
        (torch.Size([2, 4]), torch.Size([2]), tensor([1., 1.]), 2)
        >>> bool(torch.equal(new_state.key, state.key))  # the key advanced; ``state`` is unchanged
        False
    """
    if curriculum is not None:
        env_params = curriculum.env_params(env_params, state.curriculum)
    act = policy_act(state, policy=policy, action_space=env.action_space, all_reduce=all_reduce, draws=draws,
                     action_mask=env_action_mask(env, state.envs.env_state, env_params), row_group=row_group)
    valid = env_valid_mask(env, state.envs.env_state, env_params)
    if valid is not None:
        act = {**act, "valid": valid}
    step = env.step(act["k_env"], state.envs.env_state, act["env_action"], env_params)
    new_state, transition = record_step(state, act, step, world_size=world_size, all_reduce=all_reduce, action_space=env.action_space)
    if curriculum is not None:
        new_state = new_state.replace(curriculum=curriculum.on_step(new_state.curriculum, step.terminated | step.truncated))
    return new_state, transition


def rollout(state: Any, num_steps: int, step_fn: Any, value_fn: Any) -> tuple[Any, TensorDict]:
    """``num_steps`` calls of ``step_fn`` (``rollout_step`` bound to an env and policy,
    possibly compiled), stacked time-major.

    Args:
        state: the training state.
        num_steps: T.
        step_fn: ``state -> (state, transition)``.
        value_fn: ``(params, obs [T, B, ...]) -> float [T, B]``, the critic.

    Returns:
        ``(state, trajectory)``, ``trajectory`` a TensorDict of batch size ``[T, B]`` with the
        transition fields plus ``next_value``. (Under ``train_many`` the wrapped ``step_fn``
        returns ``[A, B]`` transitions and the trajectory is ``[T, A, B]``: time stays first.)

    Example:
        >>> kernel = frl.make_kernel(cfg, env, policy)
        >>> new_state, traj = rollout(state, 4, kernel.rollout_step, kernel.critic)
        >>> traj.batch_size, traj["obs"].shape, traj["next_value"].shape  # [T, B], [T, B, 4], [T, B]
        (torch.Size([4, 2]), torch.Size([4, 2, 4]), torch.Size([4, 2]))
        >>> int(new_state.agent_step)
        8
    """
    steps = []
    for _ in range(num_steps):
        state, transition = step_fn(state)
        steps.append(transition)
    data = {k: torch.stack([s[k] for s in steps]) for k in steps[0]}
    with torch.no_grad():
        data["next_value"] = bootstrap_value(value_fn, state, data)
    return state, TensorDict(data, batch_size=data["reward"].shape)


def bootstrap_value(value_fn: Any, state: Any, data: Any) -> torch.Tensor:
    """``V(next_obs)`` of every step of a trajectory ``[T, B]`` in one batched critic pass.

    For a recurrent policy (the trajectory has ``carry``) the critic also needs the carry
    after each step: step ``t``'s is the carry step ``t + 1`` started from, and the last
    step's is the state's (``state.envs.carry``); none is reset, since ``next_obs`` continues
    the episode (the final observation where it ended).

    Args:
        value_fn: ``(params, obs [T, B, ...]) -> [T, B]``, or for a recurrent policy
            ``(params, obs, carry [T, B, C]) -> [T, B]``.
        state: the state after the rollout; data: the stacked transitions.

    Returns:
        float ``[T, B]``.

    Example:
        >>> data = {"next_obs": torch.ones(3, 2, 4)}
        >>> bootstrap_value(lambda params, obs: obs.sum(-1), state, data)
        tensor([[4., 4.],
                [4., 4.],
                [4., 4.]])
    """
    if "carry" not in data.keys():
        return value_fn(state.learner.params, data["next_obs"])
    next_carry = torch.cat([data["carry"][1:], state.envs.carry.unsqueeze(0)])
    return value_fn(state.learner.params, data["next_obs"], next_carry)


def _key_chain(key: torch.Tensor, num_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The keys ``num_steps`` calls of :func:`policy_act` split off ``key``: ``(key after,
    k_act [T, 2], k_env [T, 2])``, as a scan (a loop of T splits would unroll when compiled)."""

    def body(k, _):
        nxt, k_act, k_env = jr.split(k, 3).unbind(0)
        return nxt.clone(), torch.stack([k_act, k_env])

    key, ks = scan(body, key.clone(), torch.zeros(num_steps))
    return key, ks[:, 0], ks[:, 1]


def rollout_draws(
    key: torch.Tensor, env_ids: torch.Tensor, num_steps: int, *, distribution: Any, action_space: Any, dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Every random number of ``num_steps`` rollout steps, drawn in a few batched calls before
    the loop: the numbers the same steps draw one at a time from the same key.

    Returns:
        ``(key, draws)``: the key after the T steps, and ``draws`` with ``noise`` float
        ``[T, B, K]`` (the distribution's: Gumbel for ``K`` discrete actions, normal for a
        ``K``-dim Box) and ``k_env`` int64 ``[T, B, 2]`` (the env's per-row keys).

    Example (step 0's slice is what the first step draws):
        >>> key, draws = rollout_draws(state.key, state.envs.env_ids, 4, distribution=policy.distribution, action_space=env.action_space)
        >>> draws["noise"].shape, draws["k_env"].shape  # [T, B, K], [T, B, 2]
        (torch.Size([4, 2, 2]), torch.Size([4, 2, 2]))
        >>> a = policy_act(state, policy=policy, action_space=env.action_space)
        >>> bool(torch.equal(a["k_env"], draws["k_env"][0]))
        True
    """
    key, k_act, k_env = _key_chain(key, num_steps)
    rows = env_ids.expand(num_steps, env_ids.shape[-1])
    k_act, k_env = jr.row_keys(k_act, rows), jr.row_keys(k_env, rows)
    return key, {"noise": distribution.noise(k_act, (*rows.shape, action_width(action_space)), dtype), "k_env": k_env}


def _moving_part(state: Any) -> tuple[Any, ...]:
    """What a rollout step changes besides the key (the learner's parameters stay)."""
    return (state.envs, state.agent_step, state.learner.obs_norm, state.learner.reward_stats, state.curriculum)


def scan_rollout(state: Any, num_steps: int, step_fn: Any, value_fn: Any, *, distribution: Any, action_space: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """:func:`rollout` as one loop that ``torch.compile`` turns into a single graph
    (``torch._higher_order_ops.scan``): the same keys, actions and transitions as ``num_steps``
    calls of ``step_fn``.

    The random numbers of all steps are drawn first (:func:`rollout_draws`), so the loop body
    is the policy's forward pass, the env's dynamics and the bookkeeping. The loop carries only
    what a step changes (:func:`_moving_part`); parameters are loop inputs.

    Args:
        step_fn: ``(state, draws=...) -> (state, transition)``, :func:`rollout_step` bound to
            an env and a policy (``draws`` one step's slice).
        value_fn: the critic ``(params, obs [T, B, ...]) -> [T, B]``.
        distribution, action_space: the policy's distribution and the env's action space
            (they decide the noise's shape).

    Returns:
        ``(state, trajectory)`` with ``trajectory`` a dict of ``[T, B, ...]`` tensors (the
        transition fields and ``next_value``).

    Example (equal, bit for bit, to the step-by-step rollout):
        >>> import functools
        >>> step = functools.partial(rollout_step, env=env, env_params=env.default_params(), policy=policy)
        >>> s1, traj = scan_rollout(state, 4, step, policy.value,
        ...                         distribution=policy.distribution, action_space=env.action_space)
        >>> s2, ref = rollout(state, 4, step, policy.value)
        >>> all(bool(torch.equal(traj[k], ref[k])) for k in ref.keys()), bool(torch.equal(s1.key, s2.key))
        (True, True)
    """
    key, draws = rollout_draws(state.key, state.envs.env_ids, num_steps, distribution=distribution, action_space=action_space)
    leaves, spec = pytree.tree_flatten(_moving_part(state))
    slots = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]  # absent parts are None

    def rebuild(tensors: list[torch.Tensor]) -> Any:
        full = list(leaves)
        for i, t in zip(slots, tensors):
            full[i] = t
        envs, agent_step, obs_norm, reward_stats, curriculum = pytree.tree_unflatten(full, spec)
        learner = state.learner.replace(obs_norm=obs_norm, reward_stats=reward_stats)
        return state.replace(envs=envs, agent_step=agent_step, learner=learner, curriculum=curriculum)

    def body(carry: list[torch.Tensor], step_draws: dict[str, torch.Tensor]):
        new_state, transition = step_fn(rebuild(carry), draws=step_draws)
        moved = [t for t in pytree.tree_leaves(_moving_part(new_state)) if isinstance(t, torch.Tensor)]
        # The loop's outputs may not alias its inputs or each other: clone.
        return [t.clone() for t in moved], {k: v.clone() for k, v in transition.items()}

    final, trajectory = scan(body, [leaves[i].clone() for i in slots], draws)
    state = rebuild(final).replace(key=key)
    with torch.no_grad():
        trajectory["next_value"] = bootstrap_value(value_fn, state, trajectory)
    return state, trajectory
