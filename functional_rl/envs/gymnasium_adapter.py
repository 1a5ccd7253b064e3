"""Run any gymnasium environment in the training loop.

:func:`from_gymnasium` wraps an env id, an env factory or a gymnasium ``VectorEnv`` into an
object with the pure envs' interface (``id``, spaces, ``default_params``, ``reset``,
``step``), but stepping a real, stateful simulator: it is *impure*, flagged by
``is_pure = False``. ``make_kernel`` then compiles only the pure halves of a step
(``policy_act`` and ``record_step``) and calls the simulator between them, on the host:
the env call is the one side effect.

Autoreset: gymnasium 1.x vector envs reset a finished sub-env on the *next* ``step`` call by
default, which would put a fake transition (action ignored, reward 0) into the batch. The
adapter builds its vector env with ``AutoresetMode.SAME_STEP``, which matches the pure envs:
the returned ``obs`` is already the reset observation and the :class:`~functional_rl.envs.base.EnvStep`'s
``final_obs`` (read from gymnasium's ``info["final_obs"]``) holds the true last observation,
used to bootstrap truncated episodes. A ``VectorEnv`` passed in must
use same-step autoreset too (the error says how to build one).

Spaces: Box and Discrete observations (a Box keeps its shape, e.g. images); ``Dict`` and
``Tuple`` observations are flattened into one float Box, part after part in the space's order
(a Box part flattened, a Discrete part one-hot, a MultiBinary part as 0/1): per-key
identity encoders concatenated. Actions: Discrete, MultiDiscrete and Box.

Action masks: the legal actions of the next step are read from a ``Dict`` observation's
``"action_mask"`` entry (taken out of the observation the policy sees) or from
``info["action_mask"]``, bool or 0/1 ``[B, K]``; ``action_mask(state, params)`` returns the
latest one (``None`` when the env gives none), and the rollout samples among them.

Limits: the simulator's state lives outside :class:`~functional_rl.kernel.state.TrainerState`, so a
checkpoint of a gymnasium run restores the agent exactly but restarts the environments.

Example:
    >>> env = from_gymnasium("CartPole-v1", num_envs=2)
    >>> import functional_rl.kernel.random as jr
    >>> obs, _ = env.reset(jr.key(0), env.default_params(), 2)
    >>> obs.shape, env.action_space.n
    (torch.Size([2, 4]), 2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import functional_rl.kernel.random as jr
from functional_rl.envs.base import Box, Dict, Discrete, EnvStep, MultiDiscrete, env_keys

__all__ = ["GymnasiumEnv", "from_gymnasium", "EnvInputError"]


class EnvInputError(ValueError):
    """An environment produced or received something the library cannot train on.

    Example:
        >>> issubclass(EnvInputError, ValueError)
        True
        >>> from_gymnasium(42)
        Traceback (most recent call last):
            ...
        functional_rl.envs.gymnasium_adapter.EnvInputError: from_gymnasium needs an env id, a factory or a VectorEnv; got int
    """


def _convert_space(space: Any, what: str, env_id: str) -> Box | Discrete | MultiDiscrete:
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        if int(space.start) != 0:
            raise EnvInputError(f"{env_id}: {what} space Discrete(start={space.start}) is unsupported; only start=0")
        return Discrete(int(space.n))
    if isinstance(space, gym.spaces.MultiDiscrete) and what == "action":
        if space.nvec.ndim != 1 or np.any(space.start != 0):
            raise EnvInputError(f"{env_id}: action space {space} is unsupported; only a 1-D nvec starting at 0")
        return MultiDiscrete(tuple(int(n) for n in space.nvec))
    if isinstance(space, gym.spaces.Box):
        low = np.broadcast_to(space.low, space.shape).astype(np.float64).ravel()
        high = np.broadcast_to(space.high, space.shape).astype(np.float64).ravel()
        return Box(low=tuple(low.tolist()), high=tuple(high.tolist()), shape=tuple(space.shape))
    raise EnvInputError(
        f"{env_id}: {what} space {type(space).__name__} is unsupported; supported spaces are "
        f"Box and Discrete, MultiDiscrete for actions, and Dict/Tuple of Box/Discrete/MultiBinary for observations"
    )


MASK_KEY = "action_mask"


def _flattener(space: Any, path: str, env_id: str) -> tuple[list[tuple[str, Box]], Callable[[Any], np.ndarray]]:
    """``(parts, fn)`` of a Dict/Tuple observation part: ``parts`` the leaves as ``(name,
    Box)`` (a Box keeps its shape and uint8 dtype, a Discrete becomes a one-hot Box, nested
    names joined by dots), ``fn`` maps the part's batch ``[B, ...]`` to floats ``[B, width]``."""
    import gymnasium as gym

    name = path.lstrip(".") or "obs"
    if isinstance(space, gym.spaces.Box):
        low = np.broadcast_to(space.low, space.shape).astype(np.float64).ravel().tolist()
        high = np.broadcast_to(space.high, space.shape).astype(np.float64).ravel().tolist()
        dtype = torch.uint8 if space.dtype == np.uint8 else torch.float32
        box = Box(low=tuple(low), high=tuple(high), shape=tuple(int(d) for d in space.shape), dtype=dtype)
        return [(name, box)], lambda x: np.asarray(x, dtype=np.float32).reshape(np.shape(x)[0], -1)
    if isinstance(space, gym.spaces.Discrete):
        n, start = int(space.n), int(space.start)
        box = Box(low=(0.0,) * n, high=(1.0,) * n, shape=(n,))
        return [(name, box)], lambda x: np.eye(n, dtype=np.float32)[np.asarray(x).astype(np.int64) - start]
    if isinstance(space, gym.spaces.MultiBinary) and len(space.shape) == 1:
        n = int(space.shape[0])
        box = Box(low=(0.0,) * n, high=(1.0,) * n, shape=(n,))
        return [(name, box)], lambda x: np.asarray(x, dtype=np.float32).reshape(np.shape(x)[0], -1)
    parts: list[tuple[Any, Any]]
    if isinstance(space, gym.spaces.Dict):
        parts = [(k, s) for k, s in space.spaces.items() if not (path == "" and k == MASK_KEY)]
    elif isinstance(space, gym.spaces.Tuple):
        parts = list(enumerate(space.spaces))
    else:
        raise EnvInputError(f"{env_id}: observation part {name!r} {space} is unsupported in a Dict/Tuple "
                            "observation; parts may be Box, Discrete, MultiBinary, Dict or Tuple")
    subs = [(k, _flattener(s, f"{path}.{k}", env_id)) for k, s in parts]
    if not subs:
        raise EnvInputError(f"{env_id}: the observation {space} has no part to observe besides its action mask")
    leaves = [leaf for _, (ps, _) in subs for leaf in ps]
    return leaves, lambda x: np.concatenate([fn(x[k]) for k, (_, fn) in subs], axis=1)


class GymnasiumEnv:
    """A gymnasium ``VectorEnv`` (same-step autoreset) behind the pure-env interface.

    ``reset``/``step`` ignore ``params`` and use ``key`` only to seed ``reset``. ``step``
    returns an int64 step counter as its env state.

    Shapes are the pure envs' (``B = num_envs``): ``obs`` float32 ``[B, *obs_shape]``,
    ``action`` int64 ``[B]`` or float32 ``[B, *action_shape]``, ``reward`` float32 ``[B]``,
    ``terminated``/``truncated`` bool ``[B]``.

    Example (wrap a same-step-autoreset vector env; reset and step it once):
        >>> import gymnasium as gym
        >>> import functional_rl.kernel.random as jr
        >>> vec = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2,
        ...                                autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        >>> env = GymnasiumEnv(vec, "CartPole-v1")
        >>> env.is_pure, env.num_envs, env.observation_space.shape
        (False, 2, (4,))
        >>> obs, state = env.reset(jr.key(0), env.default_params(), 2)
        >>> out = env.step(jr.key(1), state, torch.zeros(2, dtype=torch.int64), None)
        >>> out.obs.shape, out.reward, out.terminated, int(out.state), out.final_obs.shape
        (torch.Size([2, 4]), tensor([1., 1.]), tensor([False, False]), 1, torch.Size([2, 4]))
        >>> env.close()
    """

    is_pure = False

    def __init__(self, vec_env: Any, env_id: str):
        import gymnasium as gym

        mode = vec_env.metadata.get("autoreset_mode")
        if mode != gym.vector.AutoresetMode.SAME_STEP:
            raise EnvInputError(
                f"{env_id}: the vector env uses autoreset mode {mode}, which puts a fake reset step into the batch; "
                f"build it with autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP, e.g. "
                f"gymnasium.make_vec(id, num_envs, vector_kwargs={{'autoreset_mode': AutoresetMode.SAME_STEP}}), "
                f"or pass the env id to from_gymnasium"
            )
        self.vec_env = vec_env
        self.id = env_id
        self.num_envs = vec_env.num_envs
        space = vec_env.single_observation_space
        self._flatten = None
        self._mask_in_obs = isinstance(space, gym.spaces.Dict) and MASK_KEY in space.spaces
        if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):
            parts, self._flatten = _flattener(space, "", env_id)
            self.observation_space = Dict.of(parts)
        else:
            self.observation_space = _convert_space(space, "observation", env_id)
        if not isinstance(self.observation_space, Box):
            raise EnvInputError(f"{env_id}: observation space must be a Box (or a Dict/Tuple of parts); got {space}")
        self.action_space = _convert_space(vec_env.single_action_space, "action", env_id)
        self.steps = 0
        self._mask: torch.Tensor | None = None

    def action_mask(self, state: Any, params: Any) -> torch.Tensor | None:
        """The legal actions of the next step, bool ``[B, K]``, from the latest observation's
        ``"action_mask"`` or ``info["action_mask"]``; ``None`` when the env gives none."""
        return self._mask

    def _read_mask(self, obs: Any, info: dict[str, Any]) -> None:
        raw = obs[MASK_KEY] if self._mask_in_obs else info.get(MASK_KEY)
        if raw is None:
            self._mask = None
            return
        mask = torch.as_tensor(np.asarray(raw).astype(bool)).reshape(self.num_envs, -1)
        if not bool(mask.any(-1).all()):
            raise EnvInputError(f"{self.id}: an action mask without any legal action (env step {self.steps}): {mask.tolist()}")
        self._mask = mask

    def default_params(self) -> None:
        """``None``: a gymnasium env has no parameter pytree."""
        return None

    def _obs(self, obs: Any, where: str) -> torch.Tensor:
        out = torch.as_tensor(np.asarray(obs if self._flatten is None else self._flatten(obs)), dtype=torch.float32)
        if not torch.isfinite(out).all():
            raise EnvInputError(
                f"{self.id}: non-finite observation at {where} (env step {self.steps}): {out.tolist()}; "
                f"check the environment or wrap it to sanitise observations"
            )
        return out

    def reset(self, key: torch.Tensor, params: Any, num_envs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reset sub-env ``b`` with a seed drawn from its own key (a host-side call; ``key`` is
        one key ``[2]`` or per-env ``[B, 2]``, see :func:`~functional_rl.envs.base.env_keys`)."""
        if num_envs != self.num_envs:
            raise EnvInputError(f"{self.id}: the vector env has {self.num_envs} envs but {num_envs} were requested; "
                                f"set PPOConfig.num_envs={self.num_envs}")
        seeds = (jr.bits(env_keys(key, num_envs), ()) & 0x7FFFFFFF).tolist()
        obs, info = self.vec_env.reset(seed=seeds)
        self.steps = 0
        self._read_mask(obs, info)
        return self._obs(obs, "reset"), torch.zeros((), dtype=torch.int64)

    def check_action(self, action: torch.Tensor) -> np.ndarray:
        """Validate ``action`` (int64 ``[B]`` or float ``[B, *action_shape]``) and convert it for gymnasium.

        Returns a numpy array of the vector env's action dtype.

        Raises:
            EnvInputError: wrong shape, out-of-range or non-finite actions.
        """
        a = action.detach().cpu().numpy()
        if isinstance(self.action_space, Discrete):
            if a.shape != (self.num_envs,) or a.min() < 0 or a.max() >= self.action_space.n:
                raise EnvInputError(f"{self.id}: actions {a.tolist()} out of bounds for Discrete({self.action_space.n}) "
                                    f"with {self.num_envs} envs")
            return a.astype(np.int64)
        if isinstance(self.action_space, MultiDiscrete):
            nvec = np.array(self.action_space.nvec)
            if a.shape != (self.num_envs, len(nvec)) or (a < 0).any() or (a >= nvec).any():
                raise EnvInputError(f"{self.id}: actions {a.tolist()} out of bounds for MultiDiscrete({tuple(nvec.tolist())}) "
                                    f"with {self.num_envs} envs")
            return a.astype(self.vec_env.single_action_space.dtype)
        low, high = np.array(self.action_space.low), np.array(self.action_space.high)
        flat = a.reshape(self.num_envs, -1)
        if not np.isfinite(flat).all() or (flat < low - 1e-6).any() or (flat > high + 1e-6).any():
            raise EnvInputError(f"{self.id}: actions {a.tolist()} out of bounds [{low.tolist()}, {high.tolist()}]")
        return a.astype(self.vec_env.single_action_space.dtype)

    def step(self, key: torch.Tensor, state: torch.Tensor, action: torch.Tensor, params: Any):
        """One host-side step of every sub-env; returns an :class:`~functional_rl.envs.base.EnvStep`, as a pure env's ``step``."""
        obs, reward, terminated, truncated, info = self.vec_env.step(self.check_action(action))
        self.steps += 1
        reward_t = torch.as_tensor(np.asarray(reward), dtype=torch.float32)
        if not torch.isfinite(reward_t).all():
            raise EnvInputError(f"{self.id}: non-finite reward {reward_t.tolist()} at env step {self.steps}")
        obs_t = self._obs(obs, "step")
        self._read_mask(obs, info)
        final = obs_t.clone()
        ended = info.get("_final_obs")
        if ended is not None and np.any(ended):
            for i in np.flatnonzero(ended):
                final[i] = self._final_obs(info["final_obs"][i])
        return EnvStep(
            obs_t, state + 1, reward_t,
            torch.as_tensor(np.asarray(terminated), dtype=torch.bool),
            torch.as_tensor(np.asarray(truncated), dtype=torch.bool),
            final,
        )

    def _final_obs(self, one: Any) -> torch.Tensor:
        """One sub-env's last observation (unbatched, as gymnasium's ``info["final_obs"][i]``)."""
        if self._flatten is None:
            return self._obs(one, "episode end")
        import gymnasium as gym

        batch = gym.vector.utils.concatenate(self.vec_env.single_observation_space, [one],
                                             gym.vector.utils.create_empty_array(self.vec_env.single_observation_space, 1))
        return self._obs(batch, "episode end")[0]

    def close(self) -> None:
        """Close the underlying vector env (and its sub-envs)."""
        self.vec_env.close()


def from_gymnasium(env: str | Callable[[], Any] | Any, num_envs: int = 4, **make_kwargs: Any) -> GymnasiumEnv:
    """Wrap a gymnasium env for ``functional_training_loop(env=...)``.

    Args:
        env: an env id (``"LunarLander-v3"``), a zero-argument factory returning a
            ``gymnasium.Env``, or a ``gymnasium.vector.VectorEnv`` built with same-step autoreset.
        num_envs: how many copies (ignored for a VectorEnv, which has its own count).
        make_kwargs: passed to ``gymnasium.make`` for an id.

    Returns:
        A :class:`GymnasiumEnv` (impure: stepped on the host between compiled policy steps).

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> env = from_gymnasium("Pendulum-v1", num_envs=3)
        >>> env.id, env.action_space.shape
        ('Pendulum-v1', (1,))
        >>> obs, state = env.reset(jr.key(0), None, 3)
        >>> out = env.step(jr.key(1), state, torch.zeros(3, 1), None)
        >>> out.obs.shape, out.reward.shape, out.reward.dtype
        (torch.Size([3, 3]), torch.Size([3]), torch.float32)
        >>> env.close()
    """
    import gymnasium as gym

    if isinstance(env, gym.vector.VectorEnv):
        return GymnasiumEnv(env, getattr(env.spec, "id", None) or type(env).__name__)
    if isinstance(env, str):
        env_id = env
        factory = lambda: gym.make(env_id, **make_kwargs)  # noqa: E731
    elif callable(env):
        factory = env
        env_id = "gymnasium env"
    else:
        raise EnvInputError(f"from_gymnasium needs an env id, a factory or a VectorEnv; got {type(env).__name__}")
    vec = gym.vector.SyncVectorEnv([factory for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    if not isinstance(env, str):
        env_id = getattr(vec.envs[0].spec, "id", None) or type(vec.envs[0].unwrapped).__name__
    return GymnasiumEnv(vec, env_id)
