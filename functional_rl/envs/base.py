"""The pure environment contract, spaces and the registry.

An environment is a stateless object with two pure, batched functions (gymnax's shape,
batched over ``num_envs`` like a vector env)::

    obs, env_state = env.reset(key, params, num_envs)
    obs, env_state, reward, terminated, truncated, info = env.step(key, env_state, action, params)

``step`` auto-resets finished environments: the returned ``obs`` is already the first
observation of the next episode, and ``info["final_obs"]`` holds the true next observation
of every env (equal to ``obs`` where the episode did not end), which is what truncation
bootstrapping needs. ``terminated`` (a true terminal state: do not bootstrap) and
``truncated`` (the time limit: bootstrap from ``final_obs``) are kept apart.

Shapes (``B = num_envs``): ``obs`` float32 ``[B, *obs_shape]``; ``action`` int64 ``[B]``
(discrete) or float32 ``[B, *action_shape]`` (continuous); ``reward`` float32 ``[B]``;
``terminated``/``truncated`` bool ``[B]``.

Keys: ``key`` is one key ``[2]`` for the whole batch or one key per env ``[B, 2]``. Every env
draws its randomness from its own key only (:func:`env_keys`; one key ``[2]`` stands for the
per-env keys ``row_keys(key, arange(B))``), so env ``b`` behaves the same whatever the batch around
it: split the batch across processes and each env still sees the same random numbers.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

import functional_rl.kernel.random as jr

__all__ = ["EnvStep", "Discrete", "Box", "Env", "register", "make", "list_envs", "UnknownEnvError", "env_keys"]


class EnvStep(NamedTuple):
    """What ``env.step`` returns for a batch of ``B`` envs.

    Attributes:
        obs: float32 ``[B, *obs_shape]``, the next observation; where an episode ended it is
            already the first observation of the next episode (auto-reset).
        state: the env state after the step (leaves ``[B, ...]``), auto-reset likewise.
        reward: float32 ``[B]``.
        terminated: bool ``[B]``, a true terminal state was reached (do not bootstrap).
        truncated: bool ``[B]``, the time limit was hit (bootstrap from ``final_obs``).
        final_obs: float32 ``[B, *obs_shape]``, the true next observation of every env (equal
            to ``obs`` where the episode did not end).
    """

    obs: torch.Tensor
    state: Any
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_obs: torch.Tensor


def env_keys(key: torch.Tensor, num_envs: int) -> torch.Tensor:
    """One PRNG key per env: int64 ``[B, 2]``.

    A batch of keys ``[B, 2]`` is returned as it is; a single key ``[2]`` stands for the keys
    ``row_keys(key, arange(B))`` of envs ``b = 0 .. B-1``. Environments draw row ``b`` of every random
    quantity from key ``b`` (``jr.uniform(keys, shape)`` is ``[B, *shape]``), which is what
    makes env ``b``'s stream independent of how many envs share its batch.

    Example:
        >>> k = jr.key(0)
        >>> keys = env_keys(k, 3)
        >>> keys.shape
        torch.Size([3, 2])
        >>> bool(torch.equal(keys[2], jr.row_keys(k, torch.tensor(2)))), bool(torch.equal(env_keys(keys, 3), keys))
        (True, True)
        >>> env_keys(keys, 4)
        Traceback (most recent call last):
            ...
        ValueError: expected one key [2] or one key per env [4, 2]; got keys of shape (3, 2)
    """
    if key.dim() == 1:
        return jr.row_keys(key, torch.arange(num_envs, dtype=torch.int64, device=key.device))
    if tuple(key.shape) != (num_envs, 2):
        raise ValueError(f"expected one key [2] or one key per env [{num_envs}, 2]; got keys of shape {tuple(key.shape)}")
    return key


@dataclasses.dataclass(frozen=True)
class Discrete:
    """``n`` actions ``{0, ..., n-1}``, int64.

    Example:
        >>> space = Discrete(3)
        >>> space.n, space.shape, space.dtype
        (3, (), torch.int64)
    """

    n: int
    dtype: torch.dtype = torch.int64

    @property
    def shape(self) -> tuple[int, ...]:
        """``()``: a discrete action is a scalar (int64 ``[B]`` for ``B`` envs)."""
        return ()


@dataclasses.dataclass(frozen=True)
class Box:
    """A box ``[low, high]`` of float32 values with a fixed shape.

    ``low``/``high`` are tuples of floats (one per element, flattened) so the space stays
    hashable and static.

    Example:
        >>> box = Box(low=(-1.0, 0.0), high=(1.0, 2.0), shape=(2,))
        >>> box.low_tensor(), box.high_tensor().shape
        (tensor([-1.,  0.]), torch.Size([2]))
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    def low_tensor(self, device: Any = None) -> torch.Tensor:
        """The lower bounds as a ``dtype`` tensor of shape ``shape`` on ``device``."""
        return torch.tensor(self.low, dtype=self.dtype, device=device).reshape(self.shape)

    def high_tensor(self, device: Any = None) -> torch.Tensor:
        """The upper bounds as a ``dtype`` tensor of shape ``shape`` on ``device``."""
        return torch.tensor(self.high, dtype=self.dtype, device=device).reshape(self.shape)


@runtime_checkable
class Env(Protocol):
    """A pure, batched environment (see the module docstring for the contract).

    Example (a minimal one-step environment satisfying the protocol):
        >>> class Coin:
        ...     id = "Coin-v0"
        ...     observation_space = Box(low=(0.0,), high=(1.0,), shape=(1,))
        ...     action_space = Discrete(2)
        ...     def default_params(self):
        ...         return None
        ...     def reset(self, key, params, num_envs):
        ...         return torch.zeros(num_envs, 1), torch.zeros(num_envs, dtype=torch.int64)
        ...     def step(self, key, state, action, params):
        ...         obs, state = self.reset(key, params, action.shape[0])
        ...         done = torch.ones(action.shape[0], dtype=torch.bool)
        ...         return obs, state, action.float(), done, ~done, {"final_obs": obs}
        >>> isinstance(Coin(), Env), isinstance(object(), Env)
        (True, False)
        >>> obs, state, reward, terminated, truncated, info = Coin().step(None, None, torch.tensor([0, 1]), None)
        >>> obs.shape, reward, terminated
        (torch.Size([2, 1]), tensor([0., 1.]), tensor([True, True]))
    """

    id: str
    observation_space: Box
    action_space: Discrete | Box

    def default_params(self) -> Any:
        """The env's default parameters (a pytree, or ``None``)."""
        ...

    def reset(self, key: torch.Tensor, params: Any, num_envs: int) -> tuple[torch.Tensor, Any]:
        """Start ``num_envs`` episodes from ``key`` (int64 ``[2]`` or per-env ``[B, 2]``; see
        :func:`env_keys`).

        Returns:
            ``(obs float32 [B, *obs_shape], env_state)`` with ``B = num_envs``.
        """
        ...

    def step(
        self, key: torch.Tensor, state: Any, action: torch.Tensor, params: Any
    ) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Advance every env one step and auto-reset the finished ones.

        Args:
            key: int64 ``[2]`` or per-env ``[B, 2]`` (see :func:`env_keys`).
            state: the env state (leaves ``[B, ...]``).
            action: int64 ``[B]`` (discrete) or float32 ``[B, *action_shape]`` (continuous).
            params: the env parameters.

        Returns:
            ``(obs [B, *obs_shape], state, reward float32 [B], terminated bool [B],
            truncated bool [B], info)`` with ``info["final_obs"]`` float32 ``[B, *obs_shape]``.
        """
        ...


class UnknownEnvError(ValueError):
    """Raised by :func:`make` for an id that is not registered.

    Example:
        >>> issubclass(UnknownEnvError, ValueError)
        True
        >>> try:
        ...     make("NoSuchEnv-v0")
        ... except UnknownEnvError as e:
        ...     print(type(e).__name__, str(e).startswith("unknown environment id 'NoSuchEnv-v0'"))
        UnknownEnvError True
    """


_REGISTRY: dict[str, Callable[..., Env]] = {}


def register(env_id: str, factory: Callable[..., Env]) -> None:
    """Register a factory under ``env_id`` so :func:`make` and the CLI can build it.

    Example (register a variant; pop it again so the registry is left unchanged):
        >>> from functional_rl.envs.cartpole import CartPole
        >>> register("DocCartPole-v0", CartPole)
        >>> "DocCartPole-v0" in list_envs(), make("DocCartPole-v0").observation_space.shape
        (True, (4,))
        >>> _ = _REGISTRY.pop("DocCartPole-v0")
    """
    _REGISTRY[env_id] = factory


def list_envs() -> list[str]:
    """Sorted ids of the registered pure environments.

    >>> "CartPole-v1" in list_envs()
    True
    """
    return sorted(_REGISTRY)


def make(env_id: str, **kwargs: Any) -> Env:
    """Build a registered pure environment.

    >>> env = make("CartPole-v1")
    >>> env.action_space.n
    2
    >>> make("CartPol-v1")
    Traceback (most recent call last):
    ...
    functional_rl.envs.base.UnknownEnvError: unknown environment id 'CartPol-v1' (did you mean 'CartPole-v1'?); known ids: ...
    """
    if env_id not in _REGISTRY:
        close = difflib.get_close_matches(env_id, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownEnvError(f"unknown environment id {env_id!r}{hint}; known ids: {', '.join(list_envs())}")
    return _REGISTRY[env_id](**kwargs)
