"""Checks of a run's config that the shell makes before it writes anything.

:meth:`~functional_rl.kernel.config.PPOConfig.validate` enforces each field's rule. The
shell adds what only a runner can know or what would otherwise fail late, after a run dir
was made: the raw types of a config read from a file or ``--set`` (a JSON ``true`` is not an
integer), whether the ``device`` exists on this machine, sizes the int64 counters and the
memory can hold, and a bound on every value echoed in a message.

Example:
    >>> from functional_rl.kernel.config import PPOConfig
    >>> check_config_dict({"hidden_sizes": [True, True]})
    Traceback (most recent call last):
    ...
    functional_rl.shell.validate.ConfigError: hidden_sizes=[True, True] has type list of bool; expected a list of positive integers
    >>> check_config(PPOConfig(total_timesteps=2**63 - 1))
    Traceback (most recent call last):
    ...
    functional_rl.shell.validate.ConfigError: total_timesteps=9223372036854775807 is too large: the int64 step counter holds at most 4611686018427387904

A minibatch of one sample with ``norm_adv`` (the std of one sample is 0) is a rule of
:meth:`~functional_rl.kernel.config.PPOConfig.validate`, which the CLI reports the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from typing import Any

from functional_rl.kernel.config import MAX_ECHO, short  # one bounded repr for the config's and the CLI's messages

__all__ = ["ConfigError", "short", "check_config_dict", "check_config", "check_device",
           "MAX_ECHO", "MAX_TIMESTEPS", "MAX_BATCH", "MAX_PARAMS", "MAX_LAYERS", "MAX_EPOCHS"]

#: The largest ``total_timesteps``: the int64 step counter must hold it plus one more batch.
MAX_TIMESTEPS = 2**62
#: The largest batch (``num_envs * num_steps``) of one process.
MAX_BATCH = 2**24
#: The largest number of policy parameters (actor plus critic) the CLI builds.
MAX_PARAMS = 50_000_000
#: The most hidden layers.
MAX_LAYERS = 64
#: The most passes over one batch (PPO uses 1 to a few tens; more would run for ever).
MAX_EPOCHS = 10_000
_INT64 = 2**63


class ConfigError(ValueError):
    """A config value the shell refuses before anything is written; the message names the
    field and what to change.

    Example:
        >>> issubclass(ConfigError, ValueError)
        True
    """


def _type_name(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        inner = sorted({type(v).__name__ for v in value[:100]})
        return f"{type(value).__name__} of {'/'.join(inner)}" if inner else f"empty {type(value).__name__}"
    return type(value).__name__


def _field_types() -> dict[str, str]:
    from functional_rl.kernel.config import PPOConfig

    return {f.name: str(f.type) for f in dataclasses.fields(PPOConfig)}


def check_config_dict(d: Mapping[str, Any]) -> None:
    """Check the keys and raw value types of a flat config dict before a ``PPOConfig`` is built.

    ``bool`` is never taken for a number (JSON ``true`` is not ``1``), integers must fit int64,
    floats must be finite-convertible numbers, ``hidden_sizes`` must be a list of positive
    integers, ``device`` a string.

    Args:
        d: ``PPOConfig`` field name -> value, as read from a file or ``--set``.

    Raises:
        ConfigError: an unknown key (with a did-you-mean) or a value of the wrong type or size.

    Example:
        >>> check_config_dict({"num_envs": 4, "learning_rate": 1})
        >>> check_config_dict({"num_envs": 4.5})
        Traceback (most recent call last):
        ...
        functional_rl.shell.validate.ConfigError: num_envs=4.5 has type float; expected an integer
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"a config must be a table/object of PPOConfig fields, got {_type_name(d)}")
    types = _field_types()
    for key, value in d.items():
        if key not in types:
            name = short(key)
            close = difflib.get_close_matches(str(key)[:100], list(types), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(types)}"
            raise ConfigError(f"unknown PPOConfig key {name}{hint}")
        kind = types[key]

        def wrong(expected: str) -> ConfigError:
            return ConfigError(f"{key}={short(value)} has type {_type_name(value)}; expected {expected}")

        if kind in ("int", "int | None"):
            if value is None and kind == "int | None":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise wrong("an integer" if kind == "int" else "an integer or null")
            if not -_INT64 <= value < _INT64:
                raise ConfigError(f"{key}={short(value)} does not fit a 64-bit integer")
        elif kind in ("float", "float | None"):
            if value is None and kind == "float | None":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise wrong("a number" if kind == "float" else "a number or null")
            try:
                float(value)
            except OverflowError:
                raise ConfigError(f"{key}={short(value)} is too large for a float") from None
        elif kind == "bool":
            if not isinstance(value, bool):
                raise wrong("true or false")
        elif kind == "str":
            if not isinstance(value, str):
                raise wrong("a string")
        elif kind == "tuple[tuple[str, str], ...]":  # schedules
            if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise wrong('an object of hyperparameter names to schedule strings, e.g. {"ent_coef": "cosine:end=0"}')
        elif kind == "tuple[str, ...]":  # kickstart_teachers: one path or a list of them
            if isinstance(value, str):
                continue
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise wrong("a list of strings")
        elif kind == "tuple[int, ...]":
            if (not isinstance(value, (list, tuple)) or not value
                    or any(isinstance(h, bool) or not isinstance(h, int) for h in value)):
                raise wrong("a list of positive integers")
            if len(value) > MAX_LAYERS:
                raise ConfigError(f"{key} has {len(value)} layers; at most {MAX_LAYERS} are supported")
            if any(not 0 < h < _INT64 for h in value):
                raise ConfigError(f"{key}={short(value)} is invalid: every width must be a positive integer")
        else:  # pragma: no cover - a new PPOConfig field type needs a rule here
            raise AssertionError(f"no type rule for PPOConfig.{key}: {kind}")


def check_device(device: str) -> None:
    """Check that ``device`` names a torch device that exists on this machine.

    Raises:
        ConfigError: not a device string, a kind other than cpu/cuda/mps, or one this
            build or machine does not have.

    Example:
        >>> check_device("cpu")
        >>> check_device("banana")
        Traceback (most recent call last):
        ...
        functional_rl.shell.validate.ConfigError: device='banana' is not a torch device; use 'cpu', 'cuda', 'cuda:N' or 'mps'
    """
    import torch

    if not isinstance(device, str):
        raise ConfigError(f"device={short(device)} must be a string such as 'cpu' or 'cuda:0'")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={short(device)} is not a torch device; use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={short(device)} is not available: this torch build or machine has no CUDA GPU; "
                              "use device=cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device={short(device)} does not exist: this machine has {count} CUDA device(s) "
                              f"(cuda:0..cuda:{count - 1})")
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device={short(device)} is not available on this machine; use device=cpu")
        return
    raise ConfigError(f"device={short(device)} is not supported; use 'cpu', 'cuda', 'cuda:N' or 'mps'")


def _policy_params(config: Any, env: Any) -> int:
    """The parameter count of the default MLP actor-critic for ``env`` (a close estimate)."""
    obs = math.prod(env.observation_space.shape)
    space = env.action_space
    from functional_rl.envs.base import action_width

    actions = extra = action_width(space)  # head width; the last action's encoding has the same width
    log_std = 0 if hasattr(space, "n") or hasattr(space, "nvec") else actions
    width_in = obs + (extra if config.last_action else 0)
    total = log_std
    for out in (actions, 1):  # actor, critic
        widths = [width_in, *config.hidden_sizes, out]
        total += sum((a + 1) * b for a, b in zip(widths, widths[1:]))
    return total


def check_config(config: Any, env: Any = None) -> None:
    """The shell's checks of a built config (and its env) that ``PPOConfig.validate`` leaves out.

    Args:
        config: a :class:`~functional_rl.kernel.config.PPOConfig`.
        env: the environment it trains on; when given, the policy's size is checked too.

    Raises:
        ConfigError: the device does not exist here, ``total_timesteps`` or the batch would
            overflow the counters or memory, or the policy is too large. (A minibatch of one
            sample with ``norm_adv`` is refused by ``PPOConfig`` itself.)

    Example:
        >>> from functional_rl.kernel.config import PPOConfig
        >>> check_config(PPOConfig(total_timesteps=2**63 - 1))
        Traceback (most recent call last):
        ...
        functional_rl.shell.validate.ConfigError: total_timesteps=9223372036854775807 is too large: the int64 step counter holds at most 4611686018427387904
    """
    check_device(config.device)
    if config.total_timesteps > MAX_TIMESTEPS:
        raise ConfigError(f"total_timesteps={config.total_timesteps} is too large: the int64 step counter holds at "
                          f"most {MAX_TIMESTEPS}")
    if config.local_batch_size > MAX_BATCH:
        raise ConfigError(f"num_envs x num_steps = {config.num_envs} x {config.num_steps} = {config.local_batch_size:,} "
                          f"transitions per iteration is more than the {MAX_BATCH:,} this runner holds in memory; "
                          "lower num_envs or num_steps")
    if config.update_epochs > MAX_EPOCHS:
        raise ConfigError(f"update_epochs={config.update_epochs} is more than {MAX_EPOCHS:,} passes over each batch; "
                          "PPO uses 1 to a few tens")
    if env is not None:
        params = _policy_params(config, env)
        if params > MAX_PARAMS:
            raise ConfigError(f"hidden_sizes={short(config.hidden_sizes)} gives a policy of about {params:,} parameters, "
                              f"more than the {MAX_PARAMS:,} this runner builds; use smaller layers")
