"""Run a PettingZoo ``ParallelEnv`` (many agents per environment) in the training loop.

:func:`from_pettingzoo` steps ``C`` copies of a parallel env with ``A`` agents each and puts
every agent of every copy in a row of the batch: row ``c * A + i`` is agent
``possible_agents[i]`` of copy ``c``, ``B = C * A`` rows in all. One policy acts for every
row (parameter sharing, as the reference trainer trains mettagrid's agents), so set
``PPOConfig.num_envs = C * A``. Like :func:`~functional_rl.envs.gymnasium_adapter.from_gymnasium`
the adapter is *impure* (``is_pure = False``): the simulator is stepped on the host between the
compiled halves of a step.

Autoreset: a copy is reset in the step its episode ends (every agent terminated or
truncated), the same-step semantics of the pure envs: ``obs`` holds the copy's reset
observations and ``final_obs`` each agent's true last observation (for bootstrapping a
truncated episode).

Agents that leave early: an agent that terminates (or truncates) before the others keeps its
row until the copy resets. From the step after it left, its row is *invalid*:
:meth:`PettingZooEnv.valid_mask` (bool ``[B]``, read before each step like an action mask)
is false there, the rollout records it as ``valid`` and training gives those rows advantage 0
and no weight in any loss, normalisation statistic or metric (no phantom transitions:
:mod:`functional_rl.kernel.rollout`). An invalid row holds the agent's last observation,
reward 0 and no ``terminated``/``truncated`` flag; its action is not sent to the env.
Agents of ``possible_agents`` absent from a reset are invalid likewise until they appear.

Per-agent episode statistics: each row keeps its agent's running return and length; an
agent's episode ends (and is counted in ``episode_return``) in the step it terminates or is
truncated, so ``episode_return`` is the mean return *per agent*.

Checks: every agent must share one observation space (a Box) and one action space
(Discrete, MultiDiscrete or Box); observations and rewards must be finite and actions in
bounds (:class:`~functional_rl.envs.gymnasium_adapter.EnvInputError` says which and where).

Limits: the simulators' state lives outside the
:class:`~functional_rl.kernel.state.TrainerState` (a checkpoint restores the agent exactly
but restarts the environments); action masks and ``info`` are not read.

Example (a toy env of two agents; agent 1 leaves after its first step):
    >>> env = from_pettingzoo(lambda: _doc_env(), num_envs=2)  # 2 copies x 2 agents = 4 rows
    >>> import functional_rl.kernel.random as jr
    >>> obs, state = env.reset(jr.key(0), None, 4)
    >>> obs.shape, env.valid_mask(state, None).tolist()
    (torch.Size([4, 1]), [True, True, True, True])
    >>> out = env.step(jr.key(1), state, torch.zeros(4, dtype=torch.int64), None)
    >>> out.terminated.tolist(), env.valid_mask(out.state, None).tolist()  # rows 1 and 3 left
    ([False, True, False, True], [True, False, True, False])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import functional_rl.kernel.random as jr
from functional_rl.envs.base import Box, Discrete, EnvStep, MultiDiscrete, env_keys
from functional_rl.envs.gymnasium_adapter import EnvInputError, _convert_space

__all__ = ["PettingZooEnv", "from_pettingzoo"]


class PettingZooEnv:
    """``C`` copies of a PettingZoo ``ParallelEnv`` behind the pure-env interface, one row per
    agent per copy (see the module docstring for the layout, autoreset and invalid rows).

    Shapes (``B = C * A``): ``obs``/``final_obs`` float32 ``[B, *obs_shape]``, ``action`` int64
    ``[B]`` (or ``[B, K]``/float ``[B, *shape]``), ``reward`` float32 ``[B]``,
    ``terminated``/``truncated`` bool ``[B]``; ``valid_mask`` bool ``[B]``. The env state is an
    int64 step counter per row ``[B]``.

    Args:
        factory: zero-argument callable returning a fresh ``ParallelEnv``.
        env_id: the name shown in logs and errors.
        num_copies: ``C``; ``None`` decides it at the first :meth:`reset` (``num_envs / A``
            copies), which is how a registered id works with any ``PPOConfig.num_envs``.
        observation_space: a space to use instead of the converted one (same shape), e.g. a
            :class:`~functional_rl.kernel.token_policy.TokenBox` for token observations.

    Example:
        >>> env = PettingZooEnv(_doc_env, "doc", num_copies=1)
        >>> env.num_agents, env.num_envs, env.is_pure
        (2, 2, False)
    """

    is_pure = False

    def __init__(self, factory: Callable[[], Any], env_id: str, num_copies: int | None = None,
                 observation_space: Box | None = None):
        self.factory = factory
        self.id = env_id
        first = factory()
        self.agents = list(first.possible_agents)
        if not self.agents:
            raise EnvInputError(f"{env_id}: the env has no possible_agents")
        self.num_agents = len(self.agents)
        obs_spaces = [first.observation_space(a) for a in self.agents]
        act_spaces = [first.action_space(a) for a in self.agents]
        for what, spaces in (("observation", obs_spaces), ("action", act_spaces)):
            if any(s != spaces[0] for s in spaces[1:]):
                raise EnvInputError(f"{env_id}: the agents have different {what} spaces ({sorted(set(map(str, spaces)))}); "
                                    f"one shared policy needs one {what} space: pad them to a common one")
        converted = _convert_space(obs_spaces[0], "observation", env_id)
        if not isinstance(converted, Box):
            raise EnvInputError(f"{env_id}: observation space must be a Box; got {obs_spaces[0]}")
        if observation_space is not None and tuple(observation_space.shape) != tuple(converted.shape):
            raise EnvInputError(f"{env_id}: observation_space {observation_space.shape} does not match the env's {converted.shape}")
        self.observation_space = observation_space or converted
        self.action_space = _convert_space(act_spaces[0], "action", env_id)
        self._action_dtype = getattr(act_spaces[0], "dtype", np.int64)
        self._envs = [first]
        self.num_copies = num_copies
        self.steps = 0
        self._obs: np.ndarray | None = None
        self._valid = torch.ones(0, dtype=torch.bool)

    @property
    def num_envs(self) -> int | None:
        """``B = C * A`` rows (``None`` until the first reset when the copies are decided then)."""
        return None if self.num_copies is None else self.num_copies * self.num_agents

    def default_params(self) -> None:
        """``None``: a PettingZoo env has no parameter pytree."""
        return None

    def valid_mask(self, state: Any, params: Any) -> torch.Tensor:
        """Bool ``[B]``: the rows whose agent is in its copy's episode and acts in the next step.

        A state restored from a checkpoint meets simulators that were never reset: they are
        reset here first (the run restarts its environments, seeded from the step count)."""
        self._ensure_reset(state)
        return self._valid

    def _ensure_reset(self, state: Any) -> None:
        if self._obs is None:
            self.reset(jr.row_keys(jr.key(0), state.reshape(-1)[:1])[0], None, int(state.shape[0]))

    def _copies_for(self, num_envs: int) -> int:
        if num_envs % self.num_agents:
            raise EnvInputError(f"{self.id}: {self.num_agents} agents per env, so num_envs (rows = copies x agents) must be "
                                f"a multiple of {self.num_agents}; got {num_envs}: set PPOConfig.num_envs accordingly")
        copies = num_envs // self.num_agents
        if self.num_copies is not None and copies != self.num_copies:
            raise EnvInputError(f"{self.id}: the adapter has {self.num_copies} copies x {self.num_agents} agents = "
                                f"{self.num_envs} rows but {num_envs} were requested; set PPOConfig.num_envs={self.num_envs}")
        return copies

    def _check_obs(self, obs: np.ndarray, where: str) -> None:
        if obs.dtype.kind == "f" and not np.isfinite(obs).all():
            rows = np.flatnonzero(~np.isfinite(obs.reshape(obs.shape[0], -1)).all(-1)).tolist()
            raise EnvInputError(f"{self.id}: non-finite observation at {where} (env step {self.steps}, rows {rows}); "
                                "check the environment or wrap it to sanitise observations")

    def _read(self, c: int, obs: dict, rows: np.ndarray) -> None:
        """Write copy ``c``'s observations (a dict by agent) into ``rows`` (its slice of the batch)."""
        for i, a in enumerate(self.agents):
            if a in obs:
                o = np.asarray(obs[a])
                if o.shape != rows.shape[1:]:
                    raise EnvInputError(f"{self.id}: agent {a!r} observed shape {o.shape}, expected {rows.shape[1:]}")
                rows[i] = o

    def reset(self, key: torch.Tensor, params: Any, num_envs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reset every copy, copy ``c`` with a seed drawn from key ``c`` (``key`` one key ``[2]``
        or per-row ``[B, 2]``: row ``c * A``'s key); builds the copies on the first call."""
        copies = self._copies_for(num_envs)
        self.num_copies = copies
        while len(self._envs) < copies:
            self._envs.append(self.factory())
        keys = env_keys(key, num_envs)[:: self.num_agents]
        seeds = (jr.bits(keys, ()) & 0x7FFFFFFF).tolist()
        shape = tuple(self.observation_space.shape)
        self._obs = np.zeros((copies, self.num_agents, *shape), dtype=np.float32)
        valid = np.zeros((copies, self.num_agents), dtype=bool)
        for c, env in enumerate(self._envs[:copies]):
            obs, _ = env.reset(seed=int(seeds[c]))
            self._read(c, obs, self._obs[c])
            valid[c] = [a in env.agents for a in self.agents]
        self.steps = 0
        flat = self._obs.reshape(num_envs, *shape)
        self._check_obs(flat, "reset")
        self._valid = torch.as_tensor(valid.reshape(-1))
        return torch.as_tensor(flat.copy()), torch.zeros(num_envs, dtype=torch.int64)

    def check_action(self, action: torch.Tensor) -> np.ndarray:
        """Validate ``action`` (``[B, *action_shape]``) and return it as a numpy array.

        Raises:
            EnvInputError: wrong shape, out-of-range or non-finite actions.
        """
        a = action.detach().cpu().numpy()
        B = self.num_envs
        if isinstance(self.action_space, Discrete):
            if a.shape != (B,) or a.min() < 0 or a.max() >= self.action_space.n:
                raise EnvInputError(f"{self.id}: actions {a.tolist()} out of bounds for Discrete({self.action_space.n}) with {B} rows")
            return a.astype(np.int64)
        if isinstance(self.action_space, MultiDiscrete):
            nvec = np.array(self.action_space.nvec)
            if a.shape != (B, len(nvec)) or (a < 0).any() or (a >= nvec).any():
                raise EnvInputError(f"{self.id}: actions {a.tolist()} out of bounds for MultiDiscrete({tuple(nvec.tolist())})")
            return a.astype(self._action_dtype)
        low, high = np.array(self.action_space.low), np.array(self.action_space.high)
        flat = a.reshape(B, -1)
        if not np.isfinite(flat).all() or (flat < low - 1e-6).any() or (flat > high + 1e-6).any():
            raise EnvInputError(f"{self.id}: actions {a.tolist()} out of bounds [{low.tolist()}, {high.tolist()}]")
        return a.astype(self._action_dtype)

    def step(self, key: torch.Tensor, state: torch.Tensor, action: torch.Tensor, params: Any) -> EnvStep:
        """One host-side step of every copy (actions of the agents in their episode only); a
        copy whose episode ended is reset with a seed from its first row's ``key``. Returns an
        :class:`~functional_rl.envs.base.EnvStep`, as a pure env's ``step``."""
        self._ensure_reset(state)
        actions = self.check_action(action)
        C, A = self.num_copies, self.num_agents
        B, shape = C * A, tuple(self.observation_space.shape)
        actions = actions.reshape(C, A, *actions.shape[1:])
        reward = np.zeros((C, A), dtype=np.float32)
        terminated = np.zeros((C, A), dtype=bool)
        truncated = np.zeros((C, A), dtype=bool)
        valid = np.zeros((C, A), dtype=bool)
        was_valid = self._valid.numpy().reshape(C, A)
        final = self._obs.copy()
        self.steps += 1
        reset_keys = None
        for c, env in enumerate(self._envs[:C]):
            acts = {a: (actions[c, i].item() if actions.ndim == 2 else actions[c, i]) for i, a in enumerate(self.agents)
                    if was_valid[c, i]}
            obs, rew, term, trunc, _ = env.step(acts)
            for i, a in enumerate(self.agents):
                if not was_valid[c, i]:
                    continue
                reward[c, i] = rew.get(a, 0.0)
                terminated[c, i] = bool(term.get(a, False))
                truncated[c, i] = bool(trunc.get(a, False)) and not terminated[c, i]
            self._read(c, obs, final[c])
            if env.agents:
                valid[c] = [a in env.agents for a in self.agents]
                # an agent that vanished without a flag ended its episode: call it truncated
                truncated[c] |= was_valid[c] & ~valid[c] & ~terminated[c]
                self._obs[c] = final[c]
            else:  # the copy's episode is over: every agent still in it ends now, then reset
                truncated[c] |= was_valid[c] & ~terminated[c]
                if reset_keys is None:
                    reset_keys = env_keys(key, B)[::A]
                obs, _ = env.reset(seed=int(jr.bits(reset_keys[c], ()).item() & 0x7FFFFFFF))
                self._obs[c] = 0.0
                self._read(c, obs, self._obs[c])
                valid[c] = [a in env.agents for a in self.agents]
        if not np.isfinite(reward).all():
            raise EnvInputError(f"{self.id}: non-finite reward {reward.reshape(-1).tolist()} at env step {self.steps}")
        final_flat, obs_flat = final.reshape(B, *shape), self._obs.reshape(B, *shape)
        self._check_obs(final_flat, "step")
        self._check_obs(obs_flat, "reset")
        self._valid = torch.as_tensor(valid.reshape(-1))
        return EnvStep(
            torch.as_tensor(obs_flat.copy()), state + 1, torch.as_tensor(reward.reshape(-1)),
            torch.as_tensor(terminated.reshape(-1)), torch.as_tensor(truncated.reshape(-1)), torch.as_tensor(final_flat),
        )

    def close(self) -> None:
        """Close every copy."""
        for env in self._envs:
            env.close()


def from_pettingzoo(env: Any, num_envs: int | None = 1, *, env_id: str | None = None,
                    observation_space: Box | None = None) -> PettingZooEnv:
    """Wrap a PettingZoo ``ParallelEnv`` for ``functional_training_loop(env=...)``: ``num_envs``
    copies, every agent of every copy a row (``PPOConfig.num_envs = num_envs * num_agents``).

    Args:
        env: a zero-argument factory returning a ``ParallelEnv`` (needed for more than one
            copy), or one ``ParallelEnv`` (one copy).
        num_envs: the number of copies ``C``; ``None`` decides it at the first reset from the
            rows asked for.
        env_id: the name in logs and errors (default: the env's ``metadata["name"]`` or class name).
        observation_space: see :class:`PettingZooEnv`.

    Returns:
        A :class:`PettingZooEnv` (impure: stepped on the host between compiled policy steps).

    Raises:
        EnvInputError: not a ParallelEnv or factory, several copies of one instance, agents
            with different spaces, or an unsupported space.

    Example:
        >>> env = from_pettingzoo(_doc_env, num_envs=3)
        >>> env.id, env.num_agents, env.num_envs, env.action_space
        ('doc', 2, 6, Discrete(n=2, dtype=torch.int64))
        >>> from_pettingzoo(_doc_env(), num_envs=2)
        Traceback (most recent call last):
            ...
        functional_rl.envs.gymnasium_adapter.EnvInputError: from_pettingzoo: 2 copies need a factory (a callable returning a fresh ParallelEnv); one instance is one copy
    """
    if hasattr(env, "possible_agents") and hasattr(env, "step"):
        if num_envs not in (None, 1):
            raise EnvInputError(f"from_pettingzoo: {num_envs} copies need a factory (a callable returning a fresh "
                                "ParallelEnv); one instance is one copy")
        instance, num_envs = env, 1
        used = [False]

        def factory():
            if used[0]:
                raise EnvInputError("from_pettingzoo: one ParallelEnv instance is one copy; pass a factory for more")
            used[0] = True
            return instance
    elif callable(env):
        factory = env
    else:
        raise EnvInputError(f"from_pettingzoo needs a ParallelEnv or a factory returning one; got {type(env).__name__}")
    if num_envs is not None and num_envs < 1:
        raise EnvInputError(f"from_pettingzoo: num_envs (copies) must be at least 1, got {num_envs}")
    out = PettingZooEnv(factory, env_id or "pettingzoo env", num_envs, observation_space)
    if env_id is None:
        first = out._envs[0]
        out.id = (getattr(first, "metadata", None) or {}).get("name") or type(first).__name__
    return out


class _DocEnv:
    """A tiny ParallelEnv for the examples: two agents, obs = the step count, agent 1 leaves
    after one step, the episode ends after three."""

    metadata = {"name": "doc"}

    def __init__(self):
        import gymnasium as gym

        self.possible_agents = ["a", "b"]
        self._obs_space, self._act_space = gym.spaces.Box(0.0, 10.0, (1,), np.float32), gym.spaces.Discrete(2)
        self.agents: list[str] = []
        self.t = 0

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return self._act_space

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return {a: np.zeros(1, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        term = {a: a == "b" or self.t >= 3 for a in self.agents}
        out = ({a: np.full(1, self.t, np.float32) for a in self.agents}, {a: 1.0 for a in self.agents}, term,
               {a: False for a in self.agents}, {a: {} for a in self.agents})
        self.agents = [a for a in self.agents if not term[a]]
        return out

    def close(self):
        pass


def _doc_env() -> _DocEnv:
    return _DocEnv()
