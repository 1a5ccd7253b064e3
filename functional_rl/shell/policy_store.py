"""Named policy records on disk: save trained parameters, find them by URI, rebuild the policy.

A *policy record* (the reference trainer's ``PolicyRecord``) is one ``.frl`` file written by
:func:`functional_rl.shell.checkpoint.save`: the parameter pytree as safetensors, and in the JSON
metadata the policy's ``spec``, the observation and action spaces and the caller's metadata
(``epoch``, ``agent_step``, ``eval_score``, ``env_id``, ...). Loading verifies the SHA-256 and
runs no code (no pickle). :meth:`PolicyRecord.make_policy` rebuilds the
:class:`~functional_rl.kernel.policies.Policy` from the spec and the spaces, so a loaded record acts
exactly like the saved policy: the same outputs, bit for bit, for the same observations.

Records are found by name (``store.load("run_a")``), by path, or by ``file://`` URI:

==========================================  ===================================================
``file:///abs/dir/name.frl``                that record
``file:///abs/dir``                         the latest record in ``dir`` (highest ``agent_step``)
``file:///abs/dir?select=latest``           the same
``file:///abs/dir?select=best``             the highest ``eval_score``
``file:///abs/dir?select=best&metric=m``    the highest metadata value ``m``
==========================================  ===================================================

Ties are broken by the higher ``agent_step``, then ``epoch``, then the later name. Only
``.frl`` files that are policy records count; training checkpoints in the same directory are
skipped. Selecting reads every record of the directory (a few small files per run).

This module does I/O: it belongs to the shell, never to a pure step.

Example:
    >>> import tempfile, torch
    >>> import functional_rl.kernel.random as jr
    >>> from functional_rl.envs import make
    >>> from functional_rl.kernel.policies import make_mlp_policy
    >>> env = make("CartPole-v1")
    >>> policy = make_mlp_policy(env.observation_space, env.action_space, (16,))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     store = PolicyStore(d)
    ...     for step, score in ((100, 20.0), (200, 15.0)):
    ...         params = policy.init(jr.key(step))
    ...         _ = store.save(f"cartpole_{step}", params, policy, {"agent_step": step, "eval_score": score, "env_id": env.id})
    ...     latest = store.load(store.uri)
    ...     best = store.load(store.uri + "?select=best")
    ...     obs = torch.zeros(3, 4)
    ...     same = torch.equal(latest.make_policy().apply(latest.params, obs)["logits"],
    ...                        policy.apply(policy.init(jr.key(200)), obs)["logits"])
    >>> latest.name, best.name, best.eval_score, same
    ('cartpole_200', 'cartpole_100', 20.0, True)
"""

from __future__ import annotations

import builtins
import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import torch.utils._pytree as pytree

from functional_rl.shell import checkpoint as ckpt_io
from functional_rl.envs.base import Box, Dict, Discrete, MultiDiscrete
from functional_rl.kernel.policies import SPEC_KINDS, Policy, policy_from_spec

__all__ = ["PolicyRecord", "PolicyStore", "PolicyStoreError", "encode_space", "decode_space", "RECORD_KIND", "start_from"]

#: ``metadata["kind"]`` of a policy-record file (what tells it from a training checkpoint).
RECORD_KIND = "functional_rl.policy_record"
RECORD_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class PolicyStoreError(LookupError):
    """A URI or name that selects no record, or a record that cannot be rebuilt.

    Example:
        >>> import tempfile
        >>> issubclass(PolicyStoreError, LookupError)
        True
        >>> with tempfile.TemporaryDirectory() as d:
        ...     PolicyStore(d).load("missing")
        Traceback (most recent call last):
            ...
        functional_rl.shell.policy_store.PolicyStoreError: file://...missing.frl: no such policy record...
    """


# ---------------------------------------------------------------------------- spaces
def _enc_float(x: float) -> float | str:
    # JSON has no inf/nan; store them as strings so the metadata stays strict JSON.
    return x if math.isfinite(x) else repr(float(x))


def _dec_float(x: float | str) -> float:
    return float(x)


def encode_space(space: Box | Discrete | MultiDiscrete) -> dict[str, Any]:
    """A JSON-able description of a :class:`Box` or :class:`Discrete` space.

    Example:
        >>> encode_space(Discrete(3))
        {'type': 'Discrete', 'n': 3, 'dtype': 'int64'}
        >>> decode_space(encode_space(Box((-1.0,), (float("inf"),), (1,)))).high
        (inf,)
    """
    dtype = str(space.dtype).removeprefix("torch.")
    if isinstance(space, Discrete):
        return {"type": "Discrete", "n": int(space.n), "dtype": dtype}
    if isinstance(space, MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": [int(n) for n in space.nvec], "dtype": dtype}
    if isinstance(space, Dict):
        return {"type": "Dict", "parts": [[name, encode_space(box)] for name, box in space.parts]}
    if isinstance(space, Box):
        return {
            "type": "Box",
            "low": [_enc_float(float(v)) for v in space.low],
            "high": [_enc_float(float(v)) for v in space.high],
            "shape": [int(s) for s in space.shape],
            "dtype": dtype,
        }
    raise TypeError(f"cannot describe a space of type {type(space).__name__}; supported: Box, Discrete, MultiDiscrete")


def decode_space(d: dict[str, Any]) -> Box | Discrete | MultiDiscrete:
    """The space :func:`encode_space` described (equal to the original).

    Example:
        >>> decode_space({"type": "Discrete", "n": 4})
        Discrete(n=4, dtype=torch.int64)
        >>> box = Box((-2.0,), (2.0,), (1,))
        >>> decode_space(encode_space(box)) == box
        True
        >>> decode_space(encode_space(MultiDiscrete((3, 2))))
        MultiDiscrete(nvec=(3, 2), dtype=torch.int64)
        >>> d = Dict.of({"pos": Box((0.0,), (1.0,), (1,))})
        >>> decode_space(encode_space(d)) == d
        True
        >>> decode_space({"type": "Set"})
        Traceback (most recent call last):
            ...
        ValueError: not a space description: {'type': 'Set'}
    """
    import torch

    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "Discrete":
        return Discrete(int(d["n"]), getattr(torch, d.get("dtype", "int64")))
    if kind == "MultiDiscrete":
        return MultiDiscrete(tuple(int(n) for n in d["nvec"]), getattr(torch, d.get("dtype", "int64")))
    if kind == "Dict":
        return Dict.of([(name, decode_space(part)) for name, part in d["parts"]])
    if kind == "Box":
        return Box(
            tuple(_dec_float(v) for v in d["low"]),
            tuple(_dec_float(v) for v in d["high"]),
            tuple(int(s) for s in d["shape"]),
            getattr(torch, d.get("dtype", "float32")),
        )
    raise ValueError(f"not a space description: {d!r}")


# ---------------------------------------------------------------------------- record
@dataclasses.dataclass(frozen=True, eq=False)
class PolicyRecord:
    """One saved policy: its parameters, architecture and metadata.

    Attributes:
        name: the record's name (its file is ``<name>.frl``).
        uri: ``file://`` URI of the record's file.
        params: the parameter pytree, exactly as saved.
        spec: the policy's ``spec`` (:attr:`functional_rl.kernel.policies.Policy.spec`).
        metadata: ``epoch``, ``agent_step``, ``eval_score`` (or absent), ``env_id``,
            ``observation_space``/``action_space`` (see :func:`encode_space`) and any other
            keys given to :meth:`PolicyStore.save`.

    Example:
        >>> import tempfile, torch
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import make
        >>> env = make("CartPole-v1")
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> policy = make_mlp_policy(env.observation_space, env.action_space, (8,))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = PolicyStore(d).save("run", policy.init(jr.key(0)), policy, {"agent_step": 50, "eval_score": 9.5}, env=env)
        ...     record = PolicyStore(d).load("run")
        >>> record.name, record.agent_step, record.epoch, record.eval_score, record.metadata["env_id"]
        ('run', 50, 0, 9.5, 'CartPole-v1')
        >>> record.observation_space.shape, record.action_space.n
        ((4,), 2)
        >>> record.make_policy().apply(record.params, torch.zeros(3, 4))["logits"].shape  # obs [N, 4] -> [N, 2]
        torch.Size([3, 2])
    """

    name: str
    uri: str
    params: Any = dataclasses.field(repr=False)
    spec: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def agent_step(self) -> int:
        """``metadata["agent_step"]`` (0 if it was not given)."""
        return int(self.metadata.get("agent_step", 0))

    @property
    def epoch(self) -> int:
        """``metadata["epoch"]`` (0 if it was not given)."""
        return int(self.metadata.get("epoch", 0))

    @property
    def eval_score(self) -> float | None:
        """``metadata["eval_score"]``, or ``None``."""
        score = self.metadata.get("eval_score")
        return None if score is None else float(score)

    @property
    def observation_space(self) -> Box | Discrete:
        """The observation space the policy was built for."""
        return decode_space(self.metadata["observation_space"])

    @property
    def action_space(self) -> Box | Discrete:
        """The action space the policy was built for."""
        return decode_space(self.metadata["action_space"])

    def make_policy(self) -> Policy:
        """Rebuild the :class:`Policy` (pure functions) that :attr:`params` belong to.

        Raises:
            PolicyStoreError: the spec is of a kind this module cannot rebuild, or the rebuilt
                policy's spec differs from the stored one.
        """
        try:
            return policy_from_spec(self.spec, self.observation_space, self.action_space)
        except ValueError as e:
            raise PolicyStoreError(f"{self.uri}: {e}") from e


# ---------------------------------------------------------------------------- store
class PolicyStore:
    """A directory of named policy records.

    Args:
        root_dir: the directory (created on the first save).

    Attributes:
        root: the directory as an absolute path.
        uri: ``file://`` URI of the directory (loads the latest record).

    Example:
        >>> import tempfile
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import make
        >>> env = make("Pendulum-v1")
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> policy = make_mlp_policy(env.observation_space, env.action_space, (8,))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     store = PolicyStore(d)
        ...     for step in (10, 30, 20):
        ...         _ = store.save(f"p{step}", policy.init(jr.key(step)), policy, {"agent_step": step}, env=env)
        ...     names = [r.name for r in store.list()]
        ...     latest = store.load(store.uri).name
        ...     path_name = store.path("p10").name
        >>> names, latest, path_name
        (['p10', 'p20', 'p30'], 'p30', 'p10.frl')
    """

    def __init__(self, root_dir: str | os.PathLike[str]):
        self.root = Path(root_dir).absolute()
        self.uri = self.root.as_uri()

    def __repr__(self) -> str:
        return f"PolicyStore({str(self.root)!r})"

    def path(self, name: str) -> Path:
        """The file of record ``name``: ``root/<name>.frl``."""
        if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(ckpt_io.EXTENSION):
            raise ValueError(
                f"policy record name {name!r} is invalid: use letters, digits, '_', '-' and '.', "
                f"not starting with '.' or '-' and without the {ckpt_io.EXTENSION} extension"
            )
        return self.root / f"{name}{ckpt_io.EXTENSION}"

    def save(
        self,
        name: str,
        params: Any,
        policy: Policy,
        metadata: dict[str, Any] | None = None,
        *,
        env: Any = None,
        overwrite: bool = False,
    ) -> PolicyRecord:
        """Write ``params`` with ``policy.spec`` and ``metadata`` as the record ``name``.

        The spaces stored for :meth:`PolicyRecord.make_policy` come from, in order:
        ``metadata["observation_space"]``/``["action_space"]`` (spaces or their
        :func:`encode_space` dicts), ``env``'s spaces, or ``functional_rl.envs.make(
        metadata["env_id"])``'s spaces.

        Args:
            name: the record's name (file ``root/<name>.frl``).
            params: the policy's parameter pytree (e.g. ``state.learner.params``).
            policy: the :class:`Policy` the params belong to.
            metadata: JSON-able values; by convention ``epoch``, ``agent_step``,
                ``eval_score``, ``env_id``. ``epoch`` and ``agent_step`` default to 0.
            env: an environment whose spaces (and ``id``) describe the policy's input/output.
            overwrite: replace an existing record of that name (atomically).

        Returns:
            The :class:`PolicyRecord` (holding the ``params`` objects passed in; :meth:`load`
            gives equal tensors on the CPU).

        Raises:
            FileExistsError: the record exists and ``overwrite`` is false.
            ValueError: a bad name, no way to know the spaces, or spaces that do not fit the
                policy's spec.
            TypeError: metadata that is not JSON-able (from :func:`functional_rl.shell.checkpoint.save`).
        """
        path = self.path(name)
        if path.exists() and not overwrite:
            raise FileExistsError(f"policy record {name!r} already exists at {path.as_uri()}; pass overwrite=True")
        meta = dict(metadata or {})
        for key in ("kind", "record_version", "name", "spec"):
            if key in meta:
                raise ValueError(f"metadata key {key!r} is reserved by the policy store")
        if env is not None and "env_id" not in meta and getattr(env, "id", None):
            meta["env_id"] = env.id
        meta.setdefault("epoch", 0)
        meta.setdefault("agent_step", 0)
        obs_space, act_space = self._spaces(meta, env)
        meta["observation_space"], meta["action_space"] = encode_space(obs_space), encode_space(act_space)
        spec = dict(policy.spec)
        if spec.get("kind") in SPEC_KINDS:
            _check_spec_fits(spec, obs_space, act_space, name)
        content = {"kind": RECORD_KIND, "record_version": RECORD_VERSION, "name": name, "spec": spec, "metadata": meta}
        ckpt_io.save(path, params, None, content)
        return PolicyRecord(name=name, uri=path.as_uri(), params=params, spec=spec, metadata=meta)

    def _spaces(self, meta: dict[str, Any], env: Any) -> tuple[Any, Any]:
        spaces = []
        for key in ("observation_space", "action_space"):
            space = meta.get(key)
            if isinstance(space, dict):
                space = decode_space(space)
            if space is None and env is not None:
                space = getattr(env, key)
            if space is None and meta.get("env_id"):
                from functional_rl.envs import make

                space = getattr(make(meta["env_id"]), key)
            if space is None:
                raise ValueError(
                    f"cannot tell the policy's {key}: pass env=..., metadata['env_id'] or metadata[{key!r}]"
                )
            spaces.append(space)
        return spaces[0], spaces[1]

    def load(self, uri_or_name: str | os.PathLike[str]) -> PolicyRecord:
        """The record a name, a path or a ``file://`` URI selects (see the module docstring).

        A plain name is looked up in this store's directory; a path or URI may point anywhere.

        Raises:
            PolicyStoreError: a malformed or unsupported URI, a missing record, a directory
                with no records, or no record holding the ``best`` metric; the message names
                the URI.
            functional_rl.shell.checkpoint.CheckpointError: the file is corrupt or not a checkpoint.
        """
        target, select, metric, uri = self._resolve(uri_or_name)
        if target.is_dir():
            return _select(self._records_in(target), select, metric, uri)
        if select is not None:
            raise PolicyStoreError(f"{uri}: ?select= applies to a directory, but this is a file")
        if not target.is_file():
            raise PolicyStoreError(f"{uri}: no such policy record{self._known_hint(target)}")
        record = _read_record(target)
        if record is None:
            raise PolicyStoreError(f"{uri}: this checkpoint is not a policy record (its metadata has no kind {RECORD_KIND!r})")
        return record

    def list(self) -> builtins.list[PolicyRecord]:
        """All records in the store's directory, by ascending ``agent_step`` (then name)."""
        return sorted(self._records_in(self.root), key=lambda r: (r.agent_step, r.epoch, r.name))

    def _records_in(self, directory: Path) -> builtins.list[PolicyRecord]:
        if not directory.is_dir():
            return []
        records = []
        for path in sorted(directory.glob(f"*{ckpt_io.EXTENSION}")):
            if path.is_file() and not path.name.startswith("."):
                record = _read_record(path)
                if record is not None:
                    records.append(record)
        return records

    def _known_hint(self, target: Path) -> str:
        names = [p.stem for p in sorted(target.parent.glob(f"*{ckpt_io.EXTENSION}"))] if target.parent.is_dir() else []
        return f" (files there: {', '.join(names)})" if names else ""

    def _resolve(self, uri_or_name: str | os.PathLike[str]) -> tuple[Path, str | None, str, str]:
        """``(path, select, metric, uri for messages)`` of a name, path or URI."""
        text = os.fspath(uri_or_name)
        if "://" not in text:
            if "/" not in text and os.sep not in text and not text.endswith(ckpt_io.EXTENSION):
                path = self.path(text)  # a record name
            else:
                path = Path(text).absolute()
            return path, None, "eval_score", path.as_uri()
        parts = urlsplit(text)
        if parts.scheme != "file":
            raise PolicyStoreError(f"{text}: unsupported URI scheme {parts.scheme!r}; use file:///absolute/path")
        if parts.netloc not in ("", "localhost"):
            raise PolicyStoreError(f"{text}: file URIs must be absolute (file:///path), got host {parts.netloc!r}")
        if not parts.path.startswith("/"):
            raise PolicyStoreError(f"{text}: the path must be absolute (file:///path)")
        try:
            query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError as e:
            raise PolicyStoreError(f"{text}: malformed query: {e}") from None
        unknown = sorted(set(query) - {"select", "metric"})
        if unknown:
            raise PolicyStoreError(f"{text}: unknown query parameter(s) {unknown}; use select=latest|best and metric=<key>")
        if any(len(v) != 1 for v in query.values()):
            raise PolicyStoreError(f"{text}: each query parameter may appear once")
        select = query["select"][0] if "select" in query else None
        if select not in (None, "latest", "best"):
            raise PolicyStoreError(f"{text}: select={select!r} is invalid; use select=latest or select=best")
        if "metric" in query and select != "best":
            raise PolicyStoreError(f"{text}: metric= applies only with select=best")
        metric = query["metric"][0] if "metric" in query else "eval_score"
        return Path(unquote(parts.path)), select, metric, text


def start_from(state: Any, initial_policy: Any, policy_store: Any = None, optimizer: Any = None) -> Any:
    """``state`` with its parameters replaced by a stored policy's (the reference trainer's
    ``initial_policy``): a fresh run that starts from a trained policy instead of a random one.

    Counters, keys and envs stay the fresh run's; ``state.learner.params`` become the
    record's tensors (cast to the state's devices and dtypes), and with ``optimizer`` the
    optimizer state is initialised afresh for them (so an L2 pull toward the initial
    parameters pulls toward the record's).

    Args:
        state: a fresh :class:`~functional_rl.kernel.state.TrainerState`.
        initial_policy: a :class:`PolicyRecord`, or a name, path or ``file://`` URI that
            ``policy_store`` (a :class:`PolicyStore` or a directory; default the current
            directory) resolves with :meth:`PolicyStore.load`.
        optimizer: the run's optimizer (:func:`~functional_rl.kernel.optim.make_optimizer`),
            or ``None`` to keep ``state.learner.opt_state``.

    Raises:
        PolicyStoreError: the record cannot be found or read.
        ValueError: its parameters are not shaped like the run's policy (the message names
            the first parameter that differs).

    Example:
        >>> import tempfile, torch, torch.utils._pytree as pytree, functional_rl as frl
        >>> from functional_rl.shell.build import build
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, hidden_sizes=(8,))
        >>> state, kernel = build(cfg)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = PolicyStore(d).save("teacher", pytree.tree_map(lambda p: p + 1, state.learner.params), kernel.policy, {}, env=kernel.env)
        ...     started = start_from(state, "teacher", d)
        >>> bool(torch.equal(started.learner.params["critic"][0]["b"], state.learner.params["critic"][0]["b"] + 1))
        True
    """
    if not isinstance(initial_policy, PolicyRecord):
        store = policy_store if isinstance(policy_store, PolicyStore) else PolicyStore(policy_store or ".")
        initial_policy = store.load(initial_policy)
    mine, spec = pytree.tree_flatten_with_path(state.learner.params)
    theirs, their_spec = pytree.tree_flatten_with_path(initial_policy.params)
    if spec != their_spec:
        raise ValueError(f"initial policy {initial_policy.uri}: its parameters are structured as {initial_policy.spec} but "
                         f"this run's policy differs; build the run with the record's architecture (record.make_policy())")
    for (path, a), (_, b) in zip(mine, theirs):
        if a.shape != b.shape:
            raise ValueError(f"initial policy {initial_policy.uri}: parameter {pytree.keystr(path)} is {tuple(b.shape)} "
                             f"but this run's policy has {tuple(a.shape)}; build the run with the record's architecture")
    params = pytree.tree_unflatten([b.to(a.device, a.dtype) for (_, a), (_, b) in zip(mine, theirs)], spec)
    opt_state = state.learner.opt_state if optimizer is None else optimizer.init(params)
    return state.replace(learner=state.learner.replace(params=params, opt_state=opt_state))


def _check_spec_fits(spec: dict[str, Any], obs_space: Any, act_space: Any, name: str) -> None:
    """Raise if the spaces cannot rebuild ``spec`` (so a saved record can always be rebuilt)."""
    try:
        policy_from_spec(spec, obs_space, act_space)
    except ValueError as e:
        raise ValueError(
            f"policy record {name!r}: the spaces {obs_space} / {act_space} do not fit the policy spec "
            f"{spec} (a policy takes {spec['obs_dim']} inputs: the flattened observation plus extra "
            "features); pass the env the policy was built for"
        ) from e


def _read_record(path: Path) -> PolicyRecord | None:
    """The record in ``path``, or ``None`` if the file is a checkpoint but not a policy record."""
    params, _, content = ckpt_io.load(path)
    if content.get("kind") != RECORD_KIND:
        return None
    if content.get("record_version") != RECORD_VERSION:
        raise PolicyStoreError(
            f"{path.as_uri()}: policy record version {content.get('record_version')!r} is not supported "
            f"(this functional_rl reads version {RECORD_VERSION})"
        )
    return PolicyRecord(
        name=str(content["name"]), uri=path.as_uri(), params=params, spec=content["spec"], metadata=content["metadata"]
    )


def _select(records: builtins.list[PolicyRecord], select: str | None, metric: str, uri: str) -> PolicyRecord:
    if not records:
        raise PolicyStoreError(f"{uri}: no policy records in this directory")
    if select == "best":
        scored = [r for r in records if _is_score(r.metadata.get(metric))]
        if not scored:
            raise PolicyStoreError(f"{uri}: none of the {len(records)} records has a finite numeric metadata value {metric!r}")
        return max(scored, key=lambda r: (float(r.metadata[metric]), r.agent_step, r.epoch, r.name))
    return max(records, key=lambda r: (r.agent_step, r.epoch, r.name))


def _is_score(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
