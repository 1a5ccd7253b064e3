"""Checks of what the library is handed, made once before training starts.

The kernel is compiled for the shapes a config and an env decide; a state, policy or callback
that does not fit them would otherwise fail deep inside a step (or, worse, train silently on
the wrong thing: a policy with 3 actions on CartPole's 2 treats action 2 as "left"). These
checks compare metadata only (shapes, dtypes, pytree structure, hook names): no training
step, no host sync. Each raises a ``ValueError`` (a mismatch of sizes) or a ``TypeError`` (the
wrong kind of object) that names the mismatch and what to do.

Where they run: :func:`~functional_rl.shell.build.build` (so :func:`functional_training_loop`
and the CLI), :func:`~functional_rl.shell.loop.train_many`, and the components of
:mod:`functional_rl.compat.components` that take a state.

Callbacks: an object with any of the hooks ``on_start(state, config)``,
``on_iteration(state, metrics)``, ``on_end(state)``, ``on_failure(state, exc)``; or a plain
function, which is used as the ``on_iteration(state, metrics)`` hook. An object with none of
the hooks is refused (with a did-you-mean for a misspelled one), and so is a hook that cannot
take its arguments.

Examples use the doctest fixture of ``functional_rl/conftest.py`` (``cfg``: 2 envs x 4
steps, 2 minibatches, hidden layer of 8; ``env``: CartPole; ``policy``: an MLP; ``state``: a
fresh state).

Example:
    >>> check_state(cfg, env, policy, state)  # fits: nothing happens
    >>> check_state(cfg.replace(num_envs=4), env, policy, state)
    Traceback (most recent call last):
    ...
    ValueError: the state holds 2 envs (state.envs.env_ids has 2 rows) but config.num_envs=4: continue it with num_envs=2, or start a fresh state for 4 envs
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree

import functional_rl.kernel.random as jr
from functional_rl.envs.base import action_width
from functional_rl.kernel.config import PPOConfig, short
from functional_rl.kernel.distributions import Categorical, DiagGaussian, MultiCategorical
from functional_rl.kernel.rollout import policy_input
from functional_rl.kernel.state import TrainerState, last_action_size

__all__ = [
    "HOOKS",
    "FunctionCallback",
    "callable_name",
    "check_callbacks",
    "check_params",
    "check_policy",
    "check_state",
    "check_step_output",
    "reference_state",
    "require_policy",
    "require_state",
]

#: The callback hooks and the arguments the loop calls them with.
HOOKS: dict[str, tuple[str, ...]] = {
    "on_start": ("state", "config"),
    "on_iteration": ("state", "metrics"),
    "on_end": ("state",),
    "on_failure": ("state", "exc"),
}


def callable_name(fn: Any) -> str:
    """The name a message uses for user code: its ``__qualname__`` (a ``functools.partial``'s
    function's, an adapted loss's wrapped function's), else its class name.

    Example:
        >>> def my_step(state, kernel):
        ...     return state, {}
        >>> callable_name(my_step), callable_name(functools.partial(my_step)), callable_name(3)
        ('my_step', 'my_step', 'int')
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    inner = getattr(fn, "fn", None)  # compat.losses.ReferenceSignatureLoss wraps the user's function
    if inner is not None and callable(inner):
        fn = inner
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


def _env_name(env: Any) -> str:
    return str(getattr(env, "id", None) or type(env).__name__)


def require_state(state: Any, where: str = "state") -> TrainerState:
    """``state`` itself if it is a :class:`~functional_rl.kernel.state.TrainerState`.

    Raises:
        TypeError: anything else (a dict, a tuple from a step function, ``None``).

    Example:
        >>> require_state(state) is state
        True
        >>> require_state({"obs": 1})
        Traceback (most recent call last):
        ...
        TypeError: state must be a TrainerState (from TrainerState.create, a checkpoint or a finished run), got dict
    """
    if not isinstance(state, TrainerState):
        raise TypeError(f"{where} must be a TrainerState (from TrainerState.create, a checkpoint or a finished run), "
                        f"got {type(state).__name__}")
    return state


def require_policy(policy: Any) -> Any:
    """``policy`` itself if it has what training calls: ``init``, ``apply``, ``value`` and
    ``distribution`` (a :class:`~functional_rl.kernel.policies.Policy` or a look-alike).

    Raises:
        TypeError: naming the first missing attribute.

    Example:
        >>> require_policy(policy) is policy
        True
        >>> require_policy(lambda obs: obs)
        Traceback (most recent call last):
        ...
        TypeError: policy must be a Policy (init, apply, value, distribution), got function without 'init'; build one with make_mlp_policy or Policy(init=..., apply=..., value=..., distribution=..., spec=...)
    """
    for attr in ("init", "apply", "value", "distribution"):
        if not hasattr(policy, attr):
            raise TypeError(f"policy must be a Policy (init, apply, value, distribution), got {type(policy).__name__} "
                            f"without {attr!r}; build one with make_mlp_policy or Policy(init=..., apply=..., "
                            "value=..., distribution=..., spec=...)")
    return policy


class _ShapeOnlyEnv:
    """A stand-in for an impure (host) env in :func:`reference_state`: resetting the real
    simulator would change its random state, so only the spaces are used."""

    is_pure = True

    def __init__(self, env: Any):
        self.observation_space, self.action_space = env.observation_space, env.action_space

    def default_params(self) -> None:
        return None

    def reset(self, keys: torch.Tensor, params: Any, num_envs: int) -> tuple[torch.Tensor, None]:
        return torch.zeros(num_envs, *self.observation_space.shape, dtype=self.observation_space.dtype), None


def reference_state(config: PPOConfig, env: Any, policy: Any, *, curriculum: Any = None, env_params: Any = None) -> TrainerState:
    """A fresh state on the CPU with the shapes and dtypes a state for this run must have.

    Built by :meth:`TrainerState.create` (pure: ``policy.init`` and the env's reset from
    their own keys; the environments' part of an impure env is a stand-in, never a reset of
    its simulator). Cache it when checking many states of one run.

    Example:
        >>> ref = reference_state(cfg, env, policy)
        >>> ref.envs.obs.shape, ref.learner.params["actor"][0]["w"].shape
        (torch.Size([2, 4]), torch.Size([8, 4]))
    """
    cpu = config if config.device == "cpu" else dataclasses.replace(config, device="cpu")
    if not getattr(env, "is_pure", True):
        env, env_params = _ShapeOnlyEnv(env), None
    return TrainerState.create(cpu, env, policy, env_params=env_params, curriculum=curriculum)


def _leaves(tree: Any) -> dict[str, Any]:
    return {pytree.keystr(path): leaf for path, leaf in pytree.tree_flatten_with_path(tree)[0]}


def _describe(leaf: Any) -> str:
    if isinstance(leaf, torch.Tensor):
        return f"a {str(leaf.dtype).replace('torch.', '')} tensor of shape {list(leaf.shape)}"
    return "None" if leaf is None else f"a {type(leaf).__name__}"


def _compare(expected: Any, got: Any, prefix: str, advice: str, skip: tuple[str, ...] = ()) -> None:
    """Raise ``ValueError`` at the first leaf of ``got`` whose path, kind, shape or dtype differs
    from ``expected``'s (paths under a prefix in ``skip`` are not compared)."""
    want, have = _leaves(expected), _leaves(got)
    for path in [*want, *(p for p in have if p not in want)]:
        if path.startswith(skip):
            continue
        if path not in have:
            raise ValueError(f"{prefix}{path} is missing (expected {_describe(want[path])}): {advice}")
        if path not in want:
            raise ValueError(f"{prefix}{path} is {_describe(have[path])}, which this run does not have: {advice}")
        w, h = want[path], have[path]
        if isinstance(w, torch.Tensor) != isinstance(h, torch.Tensor) or (
                isinstance(w, torch.Tensor) and (w.shape != h.shape or w.dtype != h.dtype)):
            raise ValueError(f"{prefix}{path} is {_describe(h)} but this run needs {_describe(w)}: {advice}")


def check_params(policy: Any, params: Any, *, reference: Any = None, where: str = "params") -> None:
    """Check that ``params`` have the structure and shapes of ``policy.init``'s.

    Args:
        policy: the policy the params are for.
        params: a parameter pytree (e.g. ``state.learner.params``, a checkpoint's).
        reference: params of the right shapes (default ``policy.init(key)``; pass them to check
            many times without re-initialising).
        where: how the message names ``params``.

    Raises:
        ValueError: a missing or extra entry, or a shape or dtype that differs; the message
            names the entry, e.g. a checkpoint of 64x64 layers under ``hidden_sizes=(32,)``.

    Example:
        >>> check_params(policy, state.learner.params)
        >>> wide = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(16,))
        >>> check_params(wide, state.learner.params)
        Traceback (most recent call last):
        ...
        ValueError: params['actor'][0]['w'] is a float32 tensor of shape [8, 4] but this run needs a float32 tensor of shape [16, 4]: ...
    """
    reference = policy.init(jr.key(0)) if reference is None else reference
    spec = getattr(policy, "spec", None)
    sizes = f" (the policy has hidden_sizes={short(spec['hidden_sizes'])})" if isinstance(spec, Mapping) and "hidden_sizes" in spec else ""
    _compare(reference, params, where,
             f"the parameters were made for a different network than this policy{sizes}; pass the policy (and "
             "hidden_sizes/activation) they were trained with, or start from fresh parameters")


def check_state(config: PPOConfig, env: Any, policy: Any, state: Any, *, curriculum: Any = None,
                env_params: Any = None, reference: TrainerState | None = None) -> None:
    """Check a state handed to the library against the config, the env and the policy.

    In order: it is a ``TrainerState``; its env count (``state.envs.env_ids`` rows) is
    ``config.num_envs``; its observations have the env's shape; it keeps a last action iff
    ``config.last_action``; it has observation / reward statistics iff ``normalize_obs`` /
    ``normalize_reward``; it has a curriculum state when a ``curriculum`` is given; its params
    have the policy's shapes; and then every other leaf (optimizer state, hyperparameters,
    counters, key, env state of a pure env) has the structure, shape and dtype of a fresh
    state (:func:`reference_state`). A data-parallel process checks its own share (after
    :func:`~functional_rl.shell.distributed.local_share` split a whole-run state).

    Args:
        config, env, policy: the run's.
        state: the state to check.
        curriculum, env_params: the run's, if any.
        reference: a cached :func:`reference_state` of this run.

    Raises:
        TypeError: ``state`` is not a ``TrainerState``, or ``policy`` not a ``Policy``.
        ValueError: the first mismatch, named, with what to do.

    Example (a state of 8 hidden units handed to a policy of 16; a last action it never kept):
        >>> check_state(cfg, env, policy, state)
        >>> check_state(cfg, env, frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(16,)), state)
        Traceback (most recent call last):
        ...
        ValueError: state.learner.params['actor'][0]['w'] is a float32 tensor of shape [8, 4] but this run needs a float32 tensor of shape [16, 4]: ...
        >>> check_state(cfg.replace(last_action=True), env, policy, state)
        Traceback (most recent call last):
        ...
        ValueError: the state keeps no last action (state.envs.last_action is None) but config.last_action=True: set last_action=False to continue this state, or start a fresh one
    """
    require_state(state)
    require_policy(policy)
    envs, learner = state.envs, state.learner
    ids = envs.env_ids
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1:
        raise ValueError(f"state.envs.env_ids must be a 1-D int64 tensor of env indices, got {_describe(ids)}")
    rows = ids.shape[0]
    if rows != config.num_envs:
        hint = ""
        if config.num_envs and rows % config.num_envs == 0 and rows > config.num_envs:
            hint = (f" (a whole-run state of {rows // config.num_envs} processes is split into shares of num_envs "
                    "only when launched with that many processes by torchrun)")
        raise ValueError(f"the state holds {rows} envs (state.envs.env_ids has {rows} rows) but "
                         f"config.num_envs={config.num_envs}: continue it with num_envs={rows}, or start a fresh state "
                         f"for {config.num_envs} envs{hint}")
    obs_shape = tuple(env.observation_space.shape)
    obs = envs.obs
    if not isinstance(obs, torch.Tensor) or tuple(obs.shape) != (rows, *obs_shape):
        raise ValueError(f"state.envs.obs is {_describe(obs)} but {_env_name(env)} observes shape {list(obs_shape)}, so "
                         f"it must be [{rows}, {', '.join(map(str, obs_shape))}]: the state was made for another "
                         "environment; pass that env, or start a fresh state")
    if config.last_action != (envs.last_action is not None):
        has = "keeps a last action (state.envs.last_action)" if config.last_action is False else \
            "keeps no last action (state.envs.last_action is None)"
        raise ValueError(f"the state {has} but config.last_action={config.last_action}: set "
                         f"last_action={not config.last_action} to continue this state, or start a fresh one")
    for present, flag, field in ((learner.obs_norm is not None, "normalize_obs", "state.learner.obs_norm"),
                                 (learner.reward_stats is not None, "normalize_reward", "state.learner.reward_stats"),
                                 (envs.discounted_return is not None, "normalize_reward", "state.envs.discounted_return")):
        want = getattr(config, flag)
        if present != want:
            has = f"has {field}" if present else f"has no {field} (None)"
            raise ValueError(f"the state {has} but config.{flag}={want}: set {flag}={present} to continue this "
                             "state, or start a fresh one")
    recurrent = getattr(policy, "initial_carry", None) is not None
    if recurrent != (envs.carry is not None):
        has = "keeps a recurrent carry (state.envs.carry)" if not recurrent else "keeps no carry (state.envs.carry is None)"
        raise ValueError(f"the state {has} but the policy is {'' if recurrent else 'not '}recurrent: continue the state "
                         "with the policy it was trained with, or start a fresh state")
    if curriculum is not None and state.curriculum is None:
        raise ValueError("a curriculum was given but the state has no curriculum state (state.curriculum is None): "
                         "start a fresh state with TrainerState.create(..., curriculum=curriculum)")
    ref = reference_state(config, env, policy, curriculum=curriculum, env_params=env_params) if reference is None else reference
    check_params(policy, learner.params, reference=ref.learner.params, where="state.learner.params")
    skip = (".learner.params",)
    if curriculum is None:
        skip += (".curriculum",)
    if not getattr(env, "is_pure", True):
        skip += (".envs",)  # the host simulator's state is not ours to rebuild; rows and obs are checked above
    _compare(ref, state, "state", "the state was made for a different config or env; pass the ones it was made "
             "with, or start a fresh state", skip)


def _action_head(env: Any) -> tuple[str, int]:
    space = env.action_space
    if hasattr(space, "n") or hasattr(space, "nvec"):
        return "discrete", action_width(space)
    return "continuous", math.prod(space.shape)


def check_policy(env: Any, policy: Any, *, config: PPOConfig | None = None, params: Any = None, obs: torch.Tensor | None = None) -> None:
    """Check that ``policy`` fits ``env``: its input width, its kind of actions and its action
    head's width.

    From ``policy.spec`` when it says (``obs_dim``, ``action``, ``action_dim``, as
    :func:`~functional_rl.kernel.policies.make_mlp_policy` writes); otherwise by one forward
    pass ``policy.apply(params, x)`` on one observation ``x`` (no gradient, no training step).

    Args:
        env: the environment.
        policy: a ``Policy`` (``init``, ``apply``, ``value``, ``distribution``).
        config: the run's config (its ``last_action`` widens the input); optional.
        params: parameters for the forward pass (default ``policy.init(key)``).
        obs: one observation ``[1, *obs_shape]`` for the forward pass (default zeros).

    Raises:
        TypeError: ``policy`` lacks ``init``/``apply``/``value``/``distribution``, or ``apply``
            does not return a dict.
        ValueError: the input width, the kind of actions or the head's width differs from the
            env's, or the forward pass fails on one observation of the env's shape.

    Example (a head of 3 actions on CartPole's 2):
        >>> check_policy(env, policy, config=cfg)
        >>> from functional_rl.envs import Discrete
        >>> three = frl.make_mlp_policy(env.observation_space, Discrete(3), hidden_sizes=(8,))
        >>> check_policy(env, three)
        Traceback (most recent call last):
        ...
        ValueError: the policy's action head has 3 outputs but CartPole-v1 has 2 discrete actions: build the policy for env.action_space (e.g. make_mlp_policy(env.observation_space, env.action_space, ...))
    """
    require_policy(policy)
    name = _env_name(env)
    kind, width = _action_head(env)
    obs_shape = tuple(env.observation_space.shape)
    extra = last_action_size(env.action_space) if config is not None and config.last_action else 0
    in_dim = math.prod(obs_shape) + extra
    fix = "build the policy for env.action_space (e.g. make_mlp_policy(env.observation_space, env.action_space, ...))"
    dist = policy.distribution
    if (kind == "discrete" and isinstance(dist, DiagGaussian)) or (kind == "continuous" and isinstance(dist, (Categorical, MultiCategorical))):
        raise ValueError(f"the policy's distribution is {type(dist).__name__} but {name} has {kind} actions: {fix}")
    nvec = getattr(env.action_space, "nvec", None)
    if isinstance(dist, (Categorical, MultiCategorical)) and getattr(dist, "nvec", None) != nvec:
        want = f"MultiCategorical({nvec})" if nvec is not None else "Categorical()"
        raise ValueError(f"the policy's distribution is {dist} but {name}'s actions {env.action_space} need {want}: {fix}")
    spec = getattr(policy, "spec", None)
    spec = spec if isinstance(spec, Mapping) else {}
    if isinstance(spec.get("obs_dim"), int) and spec["obs_dim"] != in_dim:
        la = f" + {extra} for the last action (config.last_action=True)" if extra else ""
        raise ValueError(f"the policy takes {spec['obs_dim']} inputs but {name} gives {in_dim} "
                         f"({math.prod(obs_shape)} observation values{la}): build the policy for this env"
                         f"{' with obs_dim_extra=' + str(extra) if extra else ''}")
    if spec.get("action") in ("discrete", "continuous") and spec["action"] != kind:
        raise ValueError(f"the policy has {spec['action']} actions but {name} has {kind} actions: {fix}")
    head = spec.get("action_dim")
    if not isinstance(head, int):
        head = _probe_head(env, policy, kind, in_dim, extra, params, obs)
    if head != width:
        unit = ("logits (sum of nvec)" if nvec is not None else "discrete actions") if kind == "discrete" else "action dimensions"
        raise ValueError(f"the policy's action head has {head} outputs but {name} has {width} {unit}: {fix}")


def _probe_head(env: Any, policy: Any, kind: str, in_dim: int, extra: int, params: Any, obs: torch.Tensor | None) -> int:
    """The action head's width from one forward pass on one observation."""
    if params is None:
        params = policy.init(jr.key(0))
    space = env.observation_space
    if obs is None:
        obs = torch.zeros(1, *space.shape, dtype=getattr(space, "dtype", torch.float32))
    last = torch.zeros(1, extra, dtype=torch.float32, device=obs.device) if extra else None
    x = policy_input(obs[:1], None, last)
    apply = callable_name(policy.apply)
    recurrent = getattr(policy, "initial_carry", None) is not None
    try:
        with torch.no_grad():
            if recurrent:
                out = policy.apply(params, x, policy.initial_carry(1).to(x.device), torch.ones(1, dtype=torch.bool, device=x.device))
                if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], torch.Tensor) and out[1].shape[:1] == (1,)):
                    raise TypeError(f"a recurrent policy's apply ({apply}) must return (outputs, carry [N, ...]); for one "
                                    f"observation it returned {type(out).__name__}")
                out = out[0]
            else:
                out = policy.apply(params, x)
    except (RuntimeError, IndexError) as e:  # a shape mismatch in the forward pass
        raise ValueError(f"policy.apply ({apply}) fails on one observation of {_env_name(env)} (input shape "
                         f"{list(x.shape)}, {in_dim} values): {short(str(e), 300)}; build the policy for this env's "
                         "observation space") from e
    key = "logits" if kind == "discrete" else "mean"
    if not isinstance(out, Mapping):
        raise TypeError(f"policy.apply ({apply}) returned {type(out).__name__}; it must return a dict with "
                        f"{key!r} and 'value'")
    head, value = out.get(key), out.get("value")
    if not isinstance(head, torch.Tensor) or head.dim() != 2 or head.shape[0] != 1:
        raise ValueError(f"policy.apply ({apply}) must return {key!r} of shape [N, A] for {kind} actions; for one "
                         f"observation it returned {_describe(head)}")
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != (1,):
        raise ValueError(f"policy.apply ({apply}) must return 'value' of shape [N]; for one observation it returned "
                         f"{_describe(value)}")
    return int(head.shape[-1])


def check_action_mask(env: Any, env_state: Any, env_params: Any = None) -> None:
    """Check an env's ``action_mask(env_state, params)`` (if it has one) on a state: bool
    ``[B, K]`` with ``K`` the policy's logits (``n``, or ``sum(nvec)``) and at least one legal
    action in every row (in every block of a MultiDiscrete space). Masks are for discrete
    actions only. Once, in the shell, before training; the rollout itself is not checked.

    Raises:
        ValueError: a wrong dtype or shape, a row without a legal action, or a mask on a Box
            action space (the message names the env and the fix).

    Example:
        >>> from functional_rl.envs import make
        >>> masked = make("MaskedChoice-v0")
        >>> _, s = masked.reset(jr.key(0), masked.default_params(), 2)
        >>> check_action_mask(masked, s, masked.default_params())
        >>> class NoneLegal:
        ...     id, action_space = "NoneLegal-v0", masked.action_space
        ...     def action_mask(self, state, params):
        ...         return torch.zeros(2, 4, dtype=torch.bool)
        >>> check_action_mask(NoneLegal(), s)
        Traceback (most recent call last):
        ...
        ValueError: NoneLegal-v0.action_mask: rows [0, 1] have no legal action; every state needs at least one (in every block of a MultiDiscrete space)
    """
    fn = getattr(env, "action_mask", None)
    if fn is None:
        return
    mask = fn(env_state, env_params)
    if mask is None:  # an env that may give masks but gives none (a gymnasium env without them)
        return
    name = _env_name(env)
    kind, width = _action_head(env)
    if kind != "discrete":
        raise ValueError(f"{name} has an action_mask but {kind} actions; masks restrict Discrete or MultiDiscrete actions only")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 2 or mask.shape[-1] != width:
        raise ValueError(f"{name}.action_mask must return bool [B, {width}] (one entry per logit), got {_describe(mask)}")
    nvec = getattr(env.action_space, "nvec", None) or (width,)
    legal = torch.stack([block.any(-1) for block in torch.split(mask, list(nvec), dim=-1)], dim=-1).all(-1)
    if not bool(legal.all()):
        rows = torch.nonzero(~legal).flatten().tolist()
        raise ValueError(f"{name}.action_mask: rows {short(rows, 100)} have no legal action; every state needs at least "
                         "one (in every block of a MultiDiscrete space)")


class FunctionCallback:
    """A plain function ``fn(state, metrics)`` used as a callback's ``on_iteration`` hook.

    Example:
        >>> seen = []
        >>> cb = FunctionCallback(lambda state, metrics: seen.append(metrics["iteration"]))
        >>> cb.on_iteration(None, {"iteration": 1.0}); seen
        [1.0]
    """

    def __init__(self, fn: Callable[[Any, dict[str, float]], Any]):
        self.fn = fn

    def on_iteration(self, state: Any, metrics: dict[str, float]) -> None:
        """Call the function with the state and this iteration's metrics."""
        self.fn(state, metrics)

    def __repr__(self) -> str:
        return f"FunctionCallback({callable_name(self.fn)})"


def _check_hook(cb: Any, hook_name: str, hook: Any) -> None:
    args = HOOKS[hook_name]
    where = f"callback {type(cb).__name__}.{hook_name}" if not isinstance(cb, FunctionCallback) else \
        f"callback function {callable_name(cb.fn)}"
    if not callable(hook):
        raise TypeError(f"{where} is {type(hook).__name__}, not a method; define {hook_name}({', '.join(args)})")
    target = cb.fn if isinstance(cb, FunctionCallback) else hook
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    try:
        sig.bind(*args)
    except TypeError as e:
        raise TypeError(f"{where}{sig} cannot be called as {hook_name}({', '.join(args)}): {e}") from None


def check_callbacks(callbacks: Any) -> list[Any]:
    """The callbacks to fire, checked: ``None`` is no callbacks; a plain function becomes an
    ``on_iteration(state, metrics)`` hook (:class:`FunctionCallback`); a single callback object
    may be given without a list.

    Raises:
        TypeError: a class instead of an instance; an object with none of the hooks
            (``on_start``, ``on_iteration``, ``on_end``, ``on_failure``), with a did-you-mean
            for a misspelled one such as ``on_iter``; a hook whose signature cannot take its
            arguments.

    Example:
        >>> check_callbacks(None)
        []
        >>> check_callbacks([print])[0]
        FunctionCallback(print)
        >>> class Logger:
        ...     def on_iter(self, state, metrics):
        ...         pass
        >>> check_callbacks([Logger()])
        Traceback (most recent call last):
        ...
        TypeError: callback Logger has none of the hooks on_start, on_iteration, on_end, on_failure, so it would never be called; rename on_iter to on_iteration
    """
    if callbacks is None:
        return []
    if not isinstance(callbacks, Iterable) or isinstance(callbacks, (str, bytes, Mapping)) or any(
            getattr(callbacks, h, None) is not None for h in HOOKS):
        callbacks = [callbacks]
    out = []
    for cb in callbacks:
        if isinstance(cb, type):
            raise TypeError(f"callback {cb.__name__} is a class; pass an instance, e.g. {cb.__name__}(...)")
        hooks = {h: getattr(cb, h) for h in HOOKS if getattr(cb, h, None) is not None}
        if not hooks:
            names = [a for a in dir(cb) if not a.startswith("__")]
            near = {a: difflib.get_close_matches(a, list(HOOKS), n=1, cutoff=0.6) for a in names
                    if a.startswith("on") or difflib.get_close_matches(a, list(HOOKS), n=1, cutoff=0.8)}
            near = {a: m[0] for a, m in near.items() if m}
            if callable(cb) and not near:
                cb = FunctionCallback(cb)
                hooks = {"on_iteration": cb.on_iteration}
            else:
                hint = "; ".join(f"rename {a} to {m}" for a, m in near.items()) or \
                    "give it one of these methods, or pass a function fn(state, metrics) to be called every iteration"
                raise TypeError(f"callback {type(cb).__name__} has none of the hooks {', '.join(HOOKS)}, so it would "
                                f"never be called; {hint}")
        for name, hook in hooks.items():
            _check_hook(cb, name, hook)
        out.append(cb)
    return out


def check_step_output(step_fn: Any, out: Any, agents: int | None = None) -> tuple[TrainerState, Mapping[str, torch.Tensor]]:
    """``(state, metrics)`` from what a ``step_fn`` returned, checked: a ``TrainerState`` and a
    mapping of metric names to tensors of one value each (``[A]`` under ``train_many`` with
    ``agents = A``). Metadata only: no host sync.

    Raises:
        TypeError: not a pair, not a ``TrainerState``, not a mapping, or a metric that is not a
            tensor; the message names ``step_fn``.
        ValueError: a metric tensor with more than one value per learner.

    Example:
        >>> def my_step(state, kernel):
        ...     return state
        >>> check_step_output(my_step, state)
        Traceback (most recent call last):
        ...
        TypeError: step_fn my_step returned TrainerState; it must return a pair (state, metrics): the new TrainerState and a dict of metric tensors
        >>> check_step_output(my_step, (state, {"loss": torch.tensor(1.0)}))[1]
        {'loss': tensor(1.)}
    """
    name = callable_name(step_fn)
    rule = "it must return a pair (state, metrics): the new TrainerState and a dict of metric tensors"
    if not isinstance(out, tuple) or len(out) != 2:
        what = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
        raise TypeError(f"step_fn {name} returned {what}; {rule}")
    state, metrics = out
    if not isinstance(state, TrainerState):
        raise TypeError(f"step_fn {name} returned ({type(state).__name__}, ...) as its state; {rule}")
    if not isinstance(metrics, Mapping):
        raise TypeError(f"step_fn {name} returned (state, {type(metrics).__name__}) as its metrics; {rule}")
    for k, v in metrics.items():
        if not isinstance(k, str):
            raise TypeError(f"step_fn {name} returned a metric named {short(k)}; metric names must be strings")
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"step_fn {name} returned metric {short(k)} as {type(v).__name__}; metrics must be "
                            "tensors (torch.as_tensor(value)), so the loop moves them to the host in one transfer")
        if v.numel() != 1 and (agents is None or tuple(v.shape) != (agents,)):
            per = f"one value per agent ([{agents}])" if agents is not None else "one value (0-d)"
            raise ValueError(f"step_fn {name} returned metric {short(k)} of shape {list(v.shape)}; a metric holds {per}: "
                             "reduce it (e.g. .mean())")
    return state, metrics
