"""The pure environment contract, the :class:`Environment` base class, spaces and the registry.

An environment is a stateless object with two pure, batched functions (gymnax's shape,
batched over ``num_envs`` like a vector env)::

    obs, env_state = env.reset(key, params, num_envs)
    out = env.step(key, env_state, action, params)   # an EnvStep

``step`` returns an :class:`EnvStep` ``(obs, state, reward, terminated, truncated, final_obs)``
and auto-resets finished environments: ``out.obs`` and ``out.state`` already start the next
episode where one ended, and ``out.final_obs`` holds the true next observation of every env
(equal to ``out.obs`` where the episode did not end), which is what truncation bootstrapping
needs. ``terminated`` (a true terminal state: do not bootstrap) and ``truncated`` (the time
limit: bootstrap from ``final_obs``) are kept apart. ``EnvStep`` is a named tuple, so
``obs, state, reward, terminated, truncated, final_obs = env.step(...)`` unpacks it too.

Shapes (``B = num_envs``): ``obs`` float32 ``[B, *obs_shape]``; ``action`` int64 ``[B]``
(discrete) or float32 ``[B, *action_shape]`` (continuous); ``reward`` float32 ``[B]``;
``terminated``/``truncated`` bool ``[B]``.

Keys: ``key`` is one key ``[2]`` for the whole batch or one key per env ``[B, 2]``. Every env
draws its randomness from its own key only (:func:`env_keys`; one key ``[2]`` stands for the
per-env keys ``row_keys(key, arange(B))``), so env ``b`` behaves the same whatever the batch around
it: split the batch across processes and each env still sees the same random numbers.

Writing an env: subclass :class:`Environment` and write only the env's own parts,
``reset_env`` (a fresh state from per-env keys), ``step_env`` (dynamics, reward and
termination; no reset, no time limit), ``get_obs``, the spaces, ``id`` and
``default_params``. The base class's ``reset`` and ``step`` add, once for every env, the
per-env keys, the time limit (``state.time >= params.max_steps``), the auto-reset (one
``torch.where`` over the whole state pytree) and ``final_obs``. Any other class with the
:class:`Env` protocol's attributes whose ``step`` returns an :class:`EnvStep` works as well.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

import functional_rl.kernel.random as jr
from functional_rl.kernel.struct import map_fields, tensor_leaves

__all__ = [
    "EnvStep",
    "Discrete",
    "MultiDiscrete",
    "Box",
    "Dict",
    "action_width",
    "Env",
    "Environment",
    "register",
    "make",
    "list_envs",
    "UnknownEnvError",
    "env_keys",
]


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

    Example (read the fields by name; it is still a tuple of six):
        >>> from functional_rl.envs import make
        >>> import functional_rl.kernel.random as jr
        >>> env = make("CartPole-v1")
        >>> _, state = env.reset(jr.key(0), env.default_params(), 2)
        >>> out = env.step(jr.key(1), state, torch.tensor([0, 1]), env.default_params())
        >>> out.final_obs.shape, out.reward, len(out)
        (torch.Size([2, 4]), tensor([1., 1.]), 6)
    """

    obs: torch.Tensor
    # typing.Any, not Any: the generated __new__ lives outside this module, so a bare name
    # cannot be resolved from its annotations (pdoc warns), a module path can.
    state: typing.Any
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
class MultiDiscrete:
    """``K`` discrete choices made together, choice ``k`` among ``nvec[k]`` values
    ``{0, ..., nvec[k]-1}``: int64 ``[K]`` per env (gymnasium's ``MultiDiscrete`` with a 1-D
    ``nvec``).

    Example:
        >>> space = MultiDiscrete((3, 2))
        >>> space.nvec, space.shape, action_width(space)
        ((3, 2), (2,), 5)
        >>> MultiDiscrete((3, 0))
        Traceback (most recent call last):
            ...
        ValueError: MultiDiscrete needs a non-empty nvec of positive ints, got (3, 0)
    """

    nvec: tuple[int, ...]
    dtype: torch.dtype = torch.int64

    def __post_init__(self):
        nvec = tuple(int(n) for n in self.nvec)
        if not nvec or min(nvec) < 1:
            raise ValueError(f"MultiDiscrete needs a non-empty nvec of positive ints, got {tuple(self.nvec)}")
        object.__setattr__(self, "nvec", nvec)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(K,)``: one int per choice (int64 ``[B, K]`` for ``B`` envs)."""
        return (len(self.nvec),)


def action_width(space: Any) -> int:
    """Width of an action space's policy head, one-hot encoding and sampling noise: ``n`` for
    :class:`Discrete`, ``sum(nvec)`` for :class:`MultiDiscrete` (one block of logits per
    choice), ``prod(shape)`` for :class:`Box`.

    Example:
        >>> action_width(Discrete(4)), action_width(MultiDiscrete((3, 2))), action_width(Box((0.0,) * 6, (1.0,) * 6, (2, 3)))
        (4, 5, 6)
    """
    if hasattr(space, "nvec"):
        return sum(space.nvec)
    if hasattr(space, "n"):
        return int(space.n)
    return math.prod(space.shape)


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


@dataclasses.dataclass(frozen=True)
class Dict(Box):
    """Named observation parts, seen by the kernel as ONE flat float32 Box ``[B, D]``.

    ``parts`` is a tuple of ``(name, Box)`` in a fixed order; an observation is the parts
    flattened and concatenated in that order (:meth:`join`), and :meth:`split` recovers them.
    The kernel (normalisation, the last-action input, the trajectory, minibatch indexing,
    vmap, checkpoints) handles one tensor per observation, so a Dict observation works
    wherever a Box does; a policy that wants per-key encoders reads ``parts``
    (:func:`~functional_rl.kernel.policies.make_multi_input_policy`). ``dtype`` is float32
    whatever the parts': a uint8 image part is stored as floats 0..255 and scaled by its
    encoder.

    Build one with :meth:`of` from a mapping of names to Box spaces.

    Example:
        >>> space = Dict.of({"image": Box((0.0,) * 4, (255.0,) * 4, (1, 2, 2), torch.uint8),
        ...                  "speed": Box((-1.0,), (1.0,), (1,))})
        >>> space.shape, [name for name, _ in space.parts]
        ((5,), ['image', 'speed'])
        >>> flat = space.join({"image": torch.arange(8.0).reshape(2, 1, 2, 2), "speed": torch.tensor([[0.5], [-0.5]])})
        >>> flat.shape, space.split(flat)["image"].shape  # [B, 5] <-> {"image": [B, 1, 2, 2], ...}
        (torch.Size([2, 5]), torch.Size([2, 1, 2, 2]))
    """

    parts: tuple[tuple[str, Box], ...] = ()

    @classmethod
    def of(cls, spaces: Any) -> Dict:
        """The Dict space of ``spaces`` (a mapping or ``(name, Box)`` pairs, in that order).

        Raises:
            ValueError: no parts, a part that is not a Box, or a repeated name.
        """
        items = list(spaces.items()) if hasattr(spaces, "items") else list(spaces)
        names = [str(k) for k, _ in items]
        if not items or len(set(names)) != len(names):
            raise ValueError(f"a Dict space needs at least one part and distinct names, got {names}")
        for name, space in items:
            if not isinstance(space, Box) or isinstance(space, Dict):
                raise ValueError(f"Dict part {name!r} must be a Box (flatten nested dicts into names), got {space}")
        low = tuple(v for _, b in items for v in b.low)
        high = tuple(v for _, b in items for v in b.high)
        return cls(low=low, high=high, shape=(len(low),), parts=tuple((str(k), b) for k, b in items))

    def split(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[..., D] -> {name: [..., *part.shape]}``."""
        out, start = {}, 0
        for name, box in self.parts:
            size = math.prod(box.shape)
            out[name] = obs[..., start:start + size].reshape(*obs.shape[:-1], *box.shape)
            start += size
        return out

    def join(self, parts: Any) -> torch.Tensor:
        """``{name: [B, *part.shape]} -> float32 [B, D]`` (the parts in this space's order)."""
        return torch.cat([parts[name].reshape(parts[name].shape[0], -1).to(torch.float32) for name, _ in self.parts], dim=-1)


@runtime_checkable
class Env(Protocol):
    """A pure, batched environment (see the module docstring for the contract).

    :class:`Environment` is the usual way to satisfy it; a class written from scratch works
    as long as ``step`` returns an :class:`EnvStep` and auto-resets.

    Example (a minimal one-step environment satisfying the protocol without the base class):
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
        ...         return EnvStep(obs, state, action.float(), done, ~done, obs.clone())
        >>> isinstance(Coin(), Env), isinstance(object(), Env)
        (True, False)
        >>> out = Coin().step(None, None, torch.tensor([0, 1]), None)
        >>> out.obs.shape, out.reward, out.terminated
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

    def step(self, key: torch.Tensor, state: Any, action: torch.Tensor, params: Any) -> EnvStep:
        """Advance every env one step and auto-reset the finished ones.

        Args:
            key: int64 ``[2]`` or per-env ``[B, 2]`` (see :func:`env_keys`).
            state: the env state (leaves ``[B, ...]``).
            action: int64 ``[B]`` (discrete) or float32 ``[B, *action_shape]`` (continuous).
            params: the env parameters.

        Returns:
            An :class:`EnvStep`: ``obs`` and ``final_obs`` float32 ``[B, *obs_shape]``, the new
            ``state``, ``reward`` float32 ``[B]``, ``terminated``/``truncated`` bool ``[B]``.
        """
        ...


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``mask`` bool ``[B]`` reshaped to ``[B, 1, ...]`` to broadcast against ``like`` ``[B, ...]``."""
    extra = like.dim() - mask.dim()
    return mask.reshape(mask.shape + (1,) * extra) if extra else mask


def _shape_spec(shape: tuple[int, ...]) -> str:
    """``"[B]"`` for ``()``, ``"[B, 1]"`` for ``(1,)``: how an action shape reads in an error."""
    return "[" + ", ".join(["B", *map(str, shape)]) + "]"


class Environment:
    """Base class of the pure envs: ``reset`` and ``step`` written once, the env writes the rest.

    A subclass sets ``id``, ``observation_space`` and ``action_space`` and writes:

    * ``default_params()``: the parameter pytree.
    * ``reset_env(keys, params) -> state``: fresh states from one key per env, keys int64
      ``[B, 2]``; env ``b`` draws only from ``keys[b]`` (``jr.uniform(keys, shape)`` is
      ``[B, *shape]``).
    * ``step_env(state, action, params) -> (next_state, reward, terminated)``: the dynamics,
      reward float ``[B]`` and termination bool ``[B]`` of one step, with no reset and no time
      limit; it advances the step count ``time`` int64 ``[B]`` if the env has one.
    * ``get_obs(state, params) -> obs``: float ``[B, *obs_shape]``.
    * optionally ``truncation(state, params) -> bool [B]``: the default is the time limit
      ``state.time >= params.max_steps``; override it for an env without one.

    The returned state is always built fresh (``torch.where``), but ``reward`` and the
    observations are returned as ``step_env`` and ``get_obs`` made them: make them new tensors,
    never views of their inputs (clone a leaf that is passed through), so that a step's
    outputs never alias its inputs.

    Example (a counter that terminates on reaching 3 and truncates at ``max_steps``):
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.kernel.struct import pytree_dataclass
        >>> @pytree_dataclass
        ... class CountParams:
        ...     max_steps: int = 4
        >>> @pytree_dataclass
        ... class CountState:
        ...     count: torch.Tensor
        ...     time: torch.Tensor
        >>> class Count(Environment):
        ...     id = "Count-v0"
        ...     observation_space = Box(low=(0.0,), high=(3.0,), shape=(1,))
        ...     action_space = Discrete(2)
        ...     def default_params(self):
        ...         return CountParams()
        ...     def reset_env(self, keys, params):
        ...         zeros = torch.zeros(keys.shape[0], dtype=torch.int64)
        ...         return CountState(zeros, zeros.clone())
        ...     def step_env(self, state, action, params):
        ...         nxt = CountState(state.count + action, state.time + 1)
        ...         return nxt, action.float(), nxt.count >= 3
        ...     def get_obs(self, state, params):
        ...         return state.count[:, None].float()
        >>> env, params = Count(), CountParams()
        >>> obs, state = env.reset(jr.key(0), params, 2)
        >>> for _ in range(3):
        ...     out = env.step(jr.key(1), state, torch.tensor([1, 0]), params)
        ...     state = out.state
        >>> out.terminated, out.final_obs[:, 0], out.obs[:, 0], out.state.time
        (tensor([ True, False]), tensor([3., 0.]), tensor([0., 0.]), tensor([0, 3]))
        >>> out = env.step(jr.key(2), state, torch.tensor([1, 0]), params)  # env 1 hits max_steps
        >>> out.terminated, out.truncated, out.state.time
        (tensor([False, False]), tensor([False,  True]), tensor([1, 0]))
        >>> env.step(jr.key(3), state, torch.tensor([[1], [0]]), params)
        Traceback (most recent call last):
            ...
        ValueError: Count.step: action must have shape [B]=(2,), got (2, 1)
    """

    id: str
    observation_space: Box
    action_space: Discrete | Box

    def default_params(self) -> Any:
        """The env's default parameters (a pytree). Every subclass writes this."""
        raise NotImplementedError(f"{type(self).__name__} must define default_params()")

    def reset_env(self, keys: torch.Tensor, params: Any) -> Any:
        """Fresh states for ``B = keys.shape[0]`` envs. Every subclass writes this.

        Args:
            keys: int64 ``[B, 2]``, one PRNG key per env (env ``b`` draws from ``keys[b]`` only).
            params: the env parameters.

        Returns:
            The env state, leaves ``[B, ...]``, with ``time = 0`` if the env counts steps.
        """
        raise NotImplementedError(f"{type(self).__name__} must define reset_env(keys, params)")

    def step_env(self, state: Any, action: torch.Tensor, params: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """One step of the env's own dynamics: no reset, no time limit. Every subclass writes this.

        Args:
            state: the env state, leaves ``[B, ...]``.
            action: int64 ``[B]`` (discrete) or float32 ``[B, *action_shape]`` (continuous),
                already checked against ``action_space.shape``.
            params: the env parameters.

        Returns:
            ``(next_state, reward float [B], terminated bool [B])``; ``next_state.time`` is
            ``state.time + 1`` if the env counts steps.
        """
        raise NotImplementedError(f"{type(self).__name__} must define step_env(state, action, params)")

    def get_obs(self, state: Any, params: Any) -> torch.Tensor:
        """The observation of ``state``: float ``[B, *obs_shape]``. Every subclass writes this."""
        raise NotImplementedError(f"{type(self).__name__} must define get_obs(state, params)")

    def truncation(self, state: Any, params: Any) -> torch.Tensor:
        """The time limit: bool ``[B]``, ``state.time >= params.max_steps`` (``state`` after the step).

        Override it for an env without a time limit (return all ``False``) or with another rule.

        >>> from functional_rl.envs import CartPole, CartPoleState
        >>> s = CartPoleState(*torch.zeros(4, 2), time=torch.tensor([499, 500]))
        >>> CartPole().truncation(s, CartPole().default_params())
        tensor([False,  True])
        """
        time, max_steps = getattr(state, "time", None), getattr(params, "max_steps", None)
        if time is None or max_steps is None:
            raise TypeError(
                f"{type(self).__name__}: the default time limit needs a step count state.time (int64 [B]) "
                "and params.max_steps; add them, or override truncation(state, params) "
                "(return torch.zeros(B, dtype=torch.bool) for an env that never truncates)"
            )
        return time >= max_steps

    def reset(self, key: torch.Tensor, params: Any, num_envs: int) -> tuple[torch.Tensor, Any]:
        """Start ``num_envs`` episodes.

        Args:
            key: int64 ``[2]`` (one key for the batch) or ``[B, 2]`` (one per env); see :func:`env_keys`.
            params: the env parameters.
            num_envs: ``B``.

        Returns:
            ``(obs float32 [B, *obs_shape], state)``.
        """
        state = self.reset_env(env_keys(key, num_envs), params)
        return self.get_obs(state, params), state

    def step(self, key: torch.Tensor, state: Any, action: torch.Tensor, params: Any) -> EnvStep:
        """Advance every env one step; auto-reset the finished ones.

        Runs :meth:`step_env`, then :meth:`truncation`, then :meth:`reset` with ``key``, and
        selects per env between the reset and the stepped state over the whole state pytree.

        Args:
            key: int64 ``[2]`` or per-env ``[B, 2]``, used only for the auto-reset.
            state: the env state, leaves ``[B, ...]``.
            action: int64 ``[B]`` (discrete) or float32 ``[B, *action_shape]`` (continuous).
            params: the env parameters.

        Returns:
            An :class:`EnvStep`: ``obs`` float32 ``[B, *obs_shape]`` (the reset observation where
            ``terminated | truncated``), the new ``state``, ``reward`` float32 ``[B]``,
            ``terminated``/``truncated`` bool ``[B]`` and ``final_obs`` float32
            ``[B, *obs_shape]`` (the observation of the stepped state, before any reset).

        Raises:
            ValueError: ``action`` is not ``[B, *action_space.shape]``.
        """
        self._check_action(state, action)
        nxt, reward, terminated = self.step_env(state, action, params)
        truncated = self.truncation(nxt, params)
        final_obs = self.get_obs(nxt, params)
        reset_obs, reset_state = self.reset(key, params, terminated.shape[0])
        done = terminated | truncated
        new_state = map_fields(lambda r, n: torch.where(_rows(done, n), r, n), reset_state, nxt)
        obs = torch.where(_rows(done, final_obs), reset_obs, final_obs)
        return EnvStep(obs, new_state, reward, terminated, truncated, final_obs)

    def _check_action(self, state: Any, action: torch.Tensor) -> None:
        """Raise a ``ValueError`` unless ``action`` is ``[B, *action_space.shape]`` (``B`` from ``state``)."""
        leaves = [x for x in tensor_leaves(state) if x.dim() > 0]
        if not leaves:
            return
        expected = (leaves[0].shape[0], *self.action_space.shape)
        if tuple(action.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}.step: action must have shape {_shape_spec(self.action_space.shape)}"
                f"={expected}, got {tuple(action.shape)}"
            )


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
_HOST_IDS: set[str] = set()


def register(env_id: str, factory: Callable[..., Env], host: bool = False) -> None:
    """Register a factory under ``env_id`` so :func:`make` and the CLI can build it.

    ``host=True`` marks an id whose env steps a host simulator (``is_pure = False``, e.g. the
    ``mettagrid/*`` adapters): :func:`make` builds it like any other, but :func:`list_envs`
    lists it only when asked for host envs.

    Example (register a variant; pop it again so the registry is left unchanged):
        >>> from functional_rl.envs.cartpole import CartPole
        >>> register("DocCartPole-v0", CartPole)
        >>> "DocCartPole-v0" in list_envs(), make("DocCartPole-v0").observation_space.shape
        (True, (4,))
        >>> _ = _REGISTRY.pop("DocCartPole-v0")
    """
    _REGISTRY[env_id] = factory
    if host:
        _HOST_IDS.add(env_id)
    else:
        _HOST_IDS.discard(env_id)


def list_envs(host: bool = False) -> list[str]:
    """Sorted ids of the registered pure environments; with ``host=True`` also the ids of
    host-simulator envs (``mettagrid/small``, ...), which :func:`make` builds all the same.

    >>> "CartPole-v1" in list_envs(), "mettagrid/small" in list_envs(), "mettagrid/small" in list_envs(host=True)
    (True, False, True)
    """
    return sorted(k for k in _REGISTRY if host or k not in _HOST_IDS)


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
        raise UnknownEnvError(f"unknown environment id {env_id!r}{hint}; known ids: {', '.join(list_envs(host=True))}")
    return _REGISTRY[env_id](**kwargs)
