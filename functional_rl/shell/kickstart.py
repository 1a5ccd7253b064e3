"""Teachers for kickstarting, loaded from disk (the shell's half of
:class:`~functional_rl.kernel.losses.Kickstart`; the reference trainer's ``kickstart``).

A teacher is named the way a run names its initial policy, or by a training checkpoint:

* a policy record: a name or path that :class:`~functional_rl.shell.policy_store.PolicyStore`
  resolves, or a ``file://`` URI (``?select=best`` and the rest);
* a training checkpoint ``.frl`` written by the loop (its config rebuilds the default policy);
* a run directory of ``functional-rl train`` (its latest checkpoint).

The parameters are loaded once, detached and frozen; a teacher is checked against the
student before anything is compiled: the same policy input width and action space, and a
feed-forward architecture.

Example:
    >>> import tempfile, torch
    >>> import functional_rl as frl
    >>> from functional_rl.shell.build import build
    >>> from functional_rl.shell.policy_store import PolicyStore
    >>> state, kernel = build(frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2), compile=False)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = PolicyStore(d).save("teacher", state.learner.params, kernel.policy, {}, env=kernel.env)
    ...     [(policy, params)] = load_teachers(["teacher"], env=kernel.env, student=kernel.policy, policy_store=d)
    >>> bool(torch.equal(params["critic"][0]["w"], state.learner.params["critic"][0]["w"]))
    True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from functional_rl.kernel.recurrent import is_recurrent

__all__ = ["KickstartError", "load_teacher", "load_teachers"]


class KickstartError(ValueError):
    """A teacher cannot be loaded or does not fit the student; the message says which and why."""


def load_teachers(sources: Sequence[Any], *, env: Any, student: Any, policy_store: Any = None,
                  device: str | torch.device = "cpu") -> tuple[tuple[Any, Any], ...]:
    """``((policy, params), ...)`` for every source (:func:`load_teacher`)."""
    return tuple(load_teacher(s, env=env, student=student, policy_store=policy_store, device=device) for s in sources)


def load_teacher(source: Any, *, env: Any, student: Any, policy_store: Any = None,
                 device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """One frozen teacher ``(policy, params)`` from a policy record, a record name or URI, a
    training checkpoint or a run directory (module docstring).

    Args:
        source: a :class:`~functional_rl.shell.policy_store.PolicyRecord`, a ``(policy,
            params)`` pair (taken as is, then checked), or a string / path.
        env: the student's env (a checkpoint's default policy is rebuilt for it).
        student: the student's policy (the teacher must fit it).
        policy_store: where record names are looked up (a store or a directory; default ``.``).
        device: where the teacher's parameters go (the run's device).

    Raises:
        KickstartError: nothing loadable at ``source``, or the teacher does not fit (the
            message names the mismatch).
    """
    from functional_rl.shell.policy_store import PolicyRecord, PolicyStore, PolicyStoreError

    if isinstance(source, tuple) and len(source) == 2:
        policy, params = source
        name = "teacher"
    elif isinstance(source, PolicyRecord):
        policy, params, name = source.make_policy(), source.params, source.uri
    else:
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else repr(source)
        path = Path(name).resolve() if not name.startswith("file://") else None
        checkpoint = _checkpoint_in(path) if path is not None and path.exists() else None
        if checkpoint is not None:
            policy, params = _from_checkpoint(checkpoint, env, name)
        else:
            store = policy_store if isinstance(policy_store, PolicyStore) else PolicyStore(policy_store or ".")
            try:
                record = store.load(name)
            except (PolicyStoreError, ValueError, OSError) as e:
                raise KickstartError(f"kickstart teacher {name!r}: {e}") from e
            policy, params = record.make_policy(), record.params
    _check_fits(policy, params, student, name)
    return policy, pytree.tree_map(lambda x: x.detach().to(device) if isinstance(x, torch.Tensor) else x, params)


def _checkpoint_in(path: Path) -> Path | None:
    """A training checkpoint at ``path`` (a file that is not a policy record, or a run
    directory's latest), else ``None`` (``path`` is then a policy record or a store)."""
    from functional_rl.shell import checkpoint
    from functional_rl.shell.policy_store import PolicyStoreError, _read_record

    if path.is_dir():
        from functional_rl.shell.cli import CHECKPOINT_DIR

        folder = path / CHECKPOINT_DIR
        return checkpoint.latest_checkpoint(folder) if folder.is_dir() else None
    try:
        return None if _read_record(path) is not None else path
    except (checkpoint.CheckpointError, PolicyStoreError):  # unreadable: the checkpoint loader says what it is
        return path


def _from_checkpoint(path: Path, env: Any, name: str) -> tuple[Any, Any]:
    from functional_rl.shell import checkpoint
    from functional_rl.shell.build import default_policy

    try:
        state, config, _ = checkpoint.load(path)
    except (checkpoint.CheckpointError, OSError) as e:
        raise KickstartError(f"kickstart teacher {name!r}: {e}") from e
    if config is None or not hasattr(state, "learner"):
        raise KickstartError(f"kickstart teacher {name!r}: {path} holds no training state with its config; "
                             "save the teacher as a policy record (PolicyStore.save) instead")
    return default_policy(config, env), state.learner.params


def _check_fits(policy: Any, params: Any, student: Any, name: str) -> None:
    if is_recurrent(policy):
        raise KickstartError(f"kickstart teacher {name!r} is recurrent; a teacher must be feed-forward (MLP or CNN)")
    mine, theirs = student.spec.get("obs_dim"), policy.spec.get("obs_dim")
    if mine is not None and theirs is not None and mine != theirs:
        raise KickstartError(f"kickstart teacher {name!r} takes {theirs} inputs but the student's policy input has {mine} "
                             "(the same env, last_action and observation layout are needed)")
    heads = [(p.spec.get("action"), p.spec.get("action_dim"), getattr(p.distribution, "nvec", None)) for p in (policy, student)]
    if type(policy.distribution) is not type(student.distribution) or heads[0] != heads[1]:
        raise KickstartError(f"kickstart teacher {name!r} acts in {heads[0][0]} actions of size {heads[0][1]} but the student "
                             f"in {heads[1][0]} of size {heads[1][1]}; distil between policies of the same action space")
    try:
        policy.apply(params, torch.zeros(1, policy.spec["obs_dim"]))
    except Exception as e:  # noqa: BLE001 - re-raised with the teacher named
        raise KickstartError(f"kickstart teacher {name!r}: its parameters do not run its policy ({e})") from e
