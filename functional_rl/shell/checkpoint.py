"""Checkpoints: any state pytree plus its config in one file, written atomically, no pickle.

:func:`save` writes a state pytree (``@pytree_dataclass`` instances, dicts, lists, tuples,
``None``, tensors of any safetensors dtype, Python scalars) together with its config and a
JSON-able ``metadata`` dict; :func:`load` gives them back bit for bit. Nothing in a file is
ever executed: tensors are raw bytes read by safetensors, the structure is JSON, and class
names in it are resolved only against classes this process has already registered as
``@pytree_dataclass`` or, for classes inside ``functional_rl``, by importing that package
module. So a hostile file can at worst be refused with an error.

File format (extension ``.frl``, ``FORMAT_VERSION = 1``), one file so that the final
``os.replace`` is atomic::

    offset      size  field
    0           8     magic  b"FRLCKPT\\x00"
    8           8     H: byte length of the header, unsigned little-endian
    16          H     header: UTF-8 JSON object
                        "format":          "functional_rl.shell.checkpoint"
                        "format_version":  1
                        "sha256":          hex SHA-256 of content.encode("utf-8") + tensors
                        "tensors_nbytes":  T
                        "content":         a JSON document *as a string* (so the hashed
                                           bytes are exactly the stored ones):
                          "structure": the tree, one node per pytree node (below)
                          "config":    null or {"module", "qualname", "values": to_dict()}
                          "metadata":  the caller's JSON-able dict
                          "versions":  {"torch": ..., "safetensors": ...} (informational)
    16 + H      T     tensors: a plain safetensors blob, tensor ``i`` named ``str(i)``
    16 + H + T        end of file (anything after is reported as corruption)

The hash covers the content and the tensors; the header's other fields are checked by the
exact file length and the version check.

Structure nodes are JSON objects with a ``"kind"``: ``"tensor"`` (``name``, ``dtype``,
``shape``, ``requires_grad``), ``"none"``, ``"value"`` (a Python scalar leaf), ``"list"`` /
``"tuple"`` (``children``), ``"dict"`` (``keys``, ``values``) and ``"dataclass"``
(``module``, ``qualname``, ``fields``: leaf field name -> node, ``static``: static field
name -> value). Static values and dict keys use a tagged JSON encoding: ``null``, booleans,
ints, finite floats and strings as themselves; a JSON array is a list; ``{"tuple": [...]}``,
``{"dict": [[k, v], ...]}``, ``{"float": "nan" | "inf" | "-inf"}``, ``{"dtype": "float32"}``,
``{"device": "cpu"}`` and ``{"ref": {"module", "qualname"}}`` (a module-level function or
class inside ``functional_rl``) for the rest.

Load checks, in order, each with its own :class:`CheckpointError` subclass: the magic
(:class:`NotACheckpointError`), the lengths (:class:`TruncatedCheckpointError`), the format
version (:class:`CheckpointVersionError`), the SHA-256 (:class:`CorruptCheckpointError`), the
class names (:class:`UnsafeCheckpointError`) and the match between the stored fields and the
current class definitions (:class:`IncompatibleCheckpointError`).

Periodic checkpoints are named ``ckpt_{step:012d}.frl`` (:func:`checkpoint_path`);
:func:`latest_checkpoint` picks the highest step. Temporary files (``.<name>.<hex>.tmp``,
left behind only if the process is killed mid-write) never match that pattern.

Caveats: tensors are copied to the CPU and saved contiguous, so aliasing between leaves and
``nn.Parameter`` subclasses are not kept (``requires_grad`` is); ``complex128`` is not a
safetensors dtype.

Example:
    >>> import tempfile, torch
    >>> from functional_rl.kernel.config import PPOConfig
    >>> state = {"step": torch.tensor(3), "w": torch.arange(4.0).reshape(2, 2), "extra": None}
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = save(checkpoint_path(d, 3), state, PPOConfig(num_envs=4), {"note": "hi"})
    ...     state2, config, metadata = load(path)
    >>> torch.equal(state2["w"], state["w"]), config.num_envs, metadata
    (True, 4, {'note': 'hi'})
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import re
import secrets
import struct
import sys
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
import torch.utils._pytree as pytree

__all__ = [
    "FORMAT_VERSION",
    "EXTENSION",
    "CheckpointError",
    "NotACheckpointError",
    "TruncatedCheckpointError",
    "CorruptCheckpointError",
    "CheckpointVersionError",
    "UnsafeCheckpointError",
    "IncompatibleCheckpointError",
    "save",
    "load",
    "checkpoint_path",
    "latest_checkpoint",
]

FORMAT_VERSION = 1
EXTENSION = ".frl"
MAGIC = b"FRLCKPT\x00"
_FORMAT_NAME = "functional_rl.shell.checkpoint"
_PACKAGE = "functional_rl"
_PREFIX = len(MAGIC) + 8
_CKPT_RE = re.compile(r"^ckpt_(\d{12,})" + re.escape(EXTENSION) + r"$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JSON_SCALARS = (type(None), bool, int, float, str)


# ---------------------------------------------------------------------------- errors
class CheckpointError(ValueError):
    """Base class: a checkpoint file could not be loaded. The message names the file.

    Every load failure is a subclass, so one ``except CheckpointError`` catches them all; it is
    also a ``ValueError``.

    Example:
        >>> import tempfile
        >>> [issubclass(c, CheckpointError) for c in (NotACheckpointError, TruncatedCheckpointError,
        ...     CorruptCheckpointError, CheckpointVersionError, UnsafeCheckpointError, IncompatibleCheckpointError)]
        [True, True, True, True, True, True]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = Path(d, "empty.frl").write_bytes(b"")
        ...     try:
        ...         load(Path(d, "empty.frl"))
        ...     except CheckpointError as e:
        ...         print(type(e).__name__, isinstance(e, ValueError))
        TruncatedCheckpointError True
    """


class NotACheckpointError(CheckpointError):
    """The file is not a functional_rl checkpoint (wrong magic bytes).

    Example:
        >>> import tempfile, torch, safetensors.torch
        >>> issubclass(NotACheckpointError, CheckpointError)
        True
        >>> with tempfile.TemporaryDirectory() as d:
        ...     safetensors.torch.save_file({"w": torch.zeros(2)}, f"{d}/w.safetensors")
        ...     load(f"{d}/w.safetensors")
        Traceback (most recent call last):
            ...
        functional_rl.shell.checkpoint.NotACheckpointError: ...w.safetensors is not a functional_rl checkpoint...
    """


class TruncatedCheckpointError(CheckpointError):
    """The file ends before the lengths in its header say it should.

    Example (cut a valid file in half):
        >>> import tempfile, torch
        >>> issubclass(TruncatedCheckpointError, CheckpointError)
        True
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = save(f"{d}/a.frl", {"w": torch.zeros(8)}, None)
        ...     _ = p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        ...     load(p)
        Traceback (most recent call last):
            ...
        functional_rl.shell.checkpoint.TruncatedCheckpointError: ...a.frl: the file is truncated...
    """


class CorruptCheckpointError(CheckpointError):
    """The bytes are damaged: unreadable header, SHA-256 mismatch or trailing bytes.

    Example (flip the last byte of a tensor):
        >>> import tempfile, torch
        >>> issubclass(CorruptCheckpointError, CheckpointError)
        True
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = save(f"{d}/a.frl", {"w": torch.zeros(8)}, None)
        ...     data = bytearray(p.read_bytes())
        ...     data[-1] ^= 0xFF
        ...     _ = p.write_bytes(bytes(data))
        ...     load(p)
        Traceback (most recent call last):
            ...
        functional_rl.shell.checkpoint.CorruptCheckpointError: ...a.frl is corrupt: its SHA-256 is ...
    """


class CheckpointVersionError(CheckpointError):
    """The file was written by a newer functional_rl with a newer format version.

    Example (a file claiming a future format version):
        >>> import tempfile, torch
        >>> issubclass(CheckpointVersionError, CheckpointError)
        True
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = save(f"{d}/a.frl", {"w": torch.zeros(2)}, None)
        ...     _ = p.write_bytes(p.read_bytes().replace(b'"format_version":1', b'"format_version":9', 1))
        ...     load(p)
        Traceback (most recent call last):
            ...
        functional_rl.shell.checkpoint.CheckpointVersionError: ...a.frl was written in checkpoint format version 9, ...
    """


class UnsafeCheckpointError(CheckpointError):
    """The structure names a class or function that load refuses to resolve.

    Example (a forged, correctly hashed file that names ``os.system`` as a class is refused):
        >>> issubclass(UnsafeCheckpointError, CheckpointError)
        True
        >>> import hashlib, json, struct, tempfile
        >>> def rewrite(path, old, new):  # edit the content and re-sign it, as a forger could
        ...     data = path.read_bytes()
        ...     (n,) = struct.unpack("<Q", data[8:16])
        ...     header, blob = json.loads(data[16:16 + n]), data[16 + n:]
        ...     header["content"] = header["content"].replace(old, new)
        ...     header["sha256"] = hashlib.sha256(header["content"].encode() + blob).hexdigest()
        ...     raw = json.dumps(header).encode()
        ...     _ = path.write_bytes(data[:8] + struct.pack("<Q", len(raw)) + raw + blob)
        >>> from functional_rl.kernel.config import Hyperparams, PPOConfig
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = save(f"{d}/a.frl", Hyperparams.from_config(PPOConfig()), None)
        ...     rewrite(p, '"module":"functional_rl.kernel.config","qualname":"Hyperparams"', '"module":"os","qualname":"system"')
        ...     load(p)
        Traceback (most recent call last):
            ...
        functional_rl.shell.checkpoint.UnsafeCheckpointError: ...names class 'os.system', which is not a registered @pytree_dataclass...
    """


class IncompatibleCheckpointError(CheckpointError):
    """The file is intact but no longer matches the code (e.g. a class's fields changed).

    Example (a stored config that the current ``PPOConfig`` rejects):
        >>> issubclass(IncompatibleCheckpointError, CheckpointError)
        True
        >>> import hashlib, json, struct, tempfile
        >>> def rewrite(path, old, new):  # edit the content and re-sign it, as a forger could
        ...     data = path.read_bytes()
        ...     (n,) = struct.unpack("<Q", data[8:16])
        ...     header, blob = json.loads(data[16:16 + n]), data[16 + n:]
        ...     header["content"] = header["content"].replace(old, new)
        ...     header["sha256"] = hashlib.sha256(header["content"].encode() + blob).hexdigest()
        ...     raw = json.dumps(header).encode()
        ...     _ = path.write_bytes(data[:8] + struct.pack("<Q", len(raw)) + raw + blob)
        >>> from functional_rl.kernel.config import PPOConfig
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = save(f"{d}/a.frl", {"step": 1}, PPOConfig())
        ...     rewrite(p, '"gamma":0.99', '"gamma":5')
        ...     load(p)
        Traceback (most recent call last):
            ...
        functional_rl.shell.checkpoint.IncompatibleCheckpointError: ...the stored config no longer fits functional_rl.kernel.config.PPOConfig...
    """


# ---------------------------------------------------------------------------- paths
def checkpoint_path(directory: str | os.PathLike[str], step: int) -> Path:
    """The conventional path of the checkpoint for ``step``: ``directory/ckpt_{step:012d}.frl``.

    The zero padding makes names sort in step order; :func:`latest_checkpoint` parses them.

    Args:
        directory: folder holding the run's checkpoints.
        step: non-negative training step (an ``int``).

    Returns:
        The path (nothing is created).

    Raises:
        ValueError: if ``step`` is not a non-negative integer.

    Example:
        >>> checkpoint_path("runs/a", 1500).as_posix()
        'runs/a/ckpt_000000001500.frl'
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"checkpoint_path: step must be a non-negative int, got {step!r}")
    return Path(directory) / f"ckpt_{step:012d}{EXTENSION}"


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step in ``directory``, or ``None`` if there is none.

    Only files named like :func:`checkpoint_path` (``ckpt_<12+ digits>.frl``) count; temporary
    files of interrupted saves and other files are ignored. A missing directory has no
    checkpoint. The file is not opened: :func:`load` does the checking.

    Args:
        directory: folder holding the run's checkpoints.

    Returns:
        Path of the highest-step checkpoint, or ``None``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     print(latest_checkpoint(d))
        ...     for step in (5, 1000, 20):
        ...         _ = save(checkpoint_path(d, step), {"step": step}, None)
        ...     print(latest_checkpoint(d).name)
        None
        ckpt_000000001000.frl
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for entry in directory.iterdir():
        match = _CKPT_RE.match(entry.name)
        if match and entry.is_file():
            step = int(match.group(1))
            if best is None or step > best[0]:
                best = (step, entry)
    return None if best is None else best[1]


# ---------------------------------------------------------------------------- save
def save(
    path: str | os.PathLike[str],
    state: Any,
    config: Any,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``state``, ``config`` and ``metadata`` to ``path`` atomically.

    The bytes go to a temporary file in the same directory, which is flushed and fsynced,
    then renamed onto ``path`` with ``os.replace``, and the directory is fsynced. A crash at
    any point leaves either the old file or the new one at ``path``, never a partial one.
    The same inputs always give the same bytes. Missing parent directories are created.

    Args:
        state: a pytree of ``@pytree_dataclass`` instances, dicts, lists, tuples, ``None``,
            tensors (any device; any dtype safetensors has, i.e. all but ``complex128``)
            and Python ``bool``/``int``/``float``/``str`` leaves. Static fields may hold
            JSON-like values, tuples, ``torch.dtype``/``torch.device`` and module-level
            functions or classes from ``functional_rl``.
        config: ``None`` or an object with ``to_dict()`` and a ``from_dict`` classmethod
            whose class is defined inside ``functional_rl`` (e.g. ``PPOConfig``).
        metadata: JSON-able dict (str keys; ``None``/bool/int/float/str/list/dict values),
            e.g. the step and wall-clock time. ``None`` is stored as ``{}``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: if something in ``state``, ``config`` or ``metadata`` cannot be stored;
            the message gives its location. Nothing is written in that case.
        OSError: if writing fails; ``path`` is left as it was.

    Example:
        >>> import tempfile, torch
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = save(f"{d}/x.frl", [torch.tensor([1, 2]), (None, 0.5)], None, {"step": 7})
        ...     load(p)
        ([tensor([1, 2]), (None, 0.5)], None, {'step': 7})
    """
    path = Path(path)
    data = _serialize(state, config, metadata)
    _atomic_write(path, data)
    return path


def _serialize(state: Any, config: Any, metadata: dict[str, Any] | None) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode_node(state, "state", tensors)
    content = {
        "structure": structure,
        "config": _encode_config(config),
        "metadata": _check_metadata({} if metadata is None else metadata),
        "versions": {"torch": torch.__version__, "safetensors": safetensors.__version__},
    }
    content_str = json.dumps(content, ensure_ascii=True, separators=(",", ":"))
    try:
        blob = safetensors.torch.save(tensors)
    except Exception as e:  # safetensors raises KeyError/ValueError for unsupported dtypes
        raise TypeError(f"safetensors cannot store the state's tensors: {e!r}") from e
    digest = hashlib.sha256(content_str.encode("utf-8"))
    digest.update(blob)
    header = {
        "format": _FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "sha256": digest.hexdigest(),
        "tensors_nbytes": len(blob),
        "content": content_str,
    }
    header_bytes = json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode("utf-8")
    return b"".join((MAGIC, struct.pack("<Q", len(header_bytes)), header_bytes, blob))


def _atomic_write(path: Path, data: bytes) -> None:
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # O_EXCL: never clobber another writer's temp file; mode 0o666 & ~umask like open().
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # The original error propagates; only the temp file is removed.
        if tmp.exists():
            tmp.unlink()
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable. Directories cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_pytree_dataclass(cls: type) -> bool:
    return (
        isinstance(cls, type)
        and dataclasses.is_dataclass(cls)
        and hasattr(cls, "__data_fields__")
        and hasattr(cls, "__static_fields__")
        and cls in pytree.SUPPORTED_NODES
    )


def _encode_node(obj: Any, where: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    if isinstance(obj, torch.Tensor):
        return _encode_tensor(obj, where, tensors)
    if obj is None:
        return {"kind": "none"}
    if type(obj) in (bool, int, float, str):
        return {"kind": "value", "value": _encode_value(obj, where)}
    if type(obj) is list or type(obj) is tuple:
        children = [_encode_node(c, f"{where}[{i}]", tensors) for i, c in enumerate(obj)]
        return {"kind": type(obj).__name__, "children": children}
    if type(obj) is dict:
        keys = [_encode_value(k, f"key {k!r} of {where}") for k in obj]
        values = [_encode_node(v, f"{where}[{k!r}]", tensors) for k, v in obj.items()]
        return {"kind": "dict", "keys": keys, "values": values}
    cls = type(obj)
    if _is_pytree_dataclass(cls):
        children, context = pytree.SUPPORTED_NODES[cls].flatten_fn(obj)
        fields = {
            n: _encode_node(c, f"{where}.{n}", tensors) for n, c in zip(cls.__data_fields__, children)
        }
        static = {n: _encode_value(v, f"{where}.{n} (static)") for n, v in zip(cls.__static_fields__, context)}
        return {
            "kind": "dataclass",
            "module": cls.__module__,
            "qualname": cls.__qualname__,
            "fields": fields,
            "static": static,
        }
    raise TypeError(
        f"checkpoint.save: {where} is a {cls.__module__}.{cls.__qualname__}, which cannot be "
        "stored; use @pytree_dataclass classes, dict, list, tuple, None, tensors and "
        "bool/int/float/str (namedtuples and dict subclasses are not supported)"
    )


def _encode_tensor(t: torch.Tensor, where: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
        raise TypeError(
            f"checkpoint.save: {where} is a {t.layout} tensor on {t.device}; only dense "
            "strided tensors with data can be stored"
        )
    if t.dtype == torch.complex128:
        raise TypeError(
            f"checkpoint.save: {where} has dtype complex128, which safetensors cannot store; "
            "store its real and imaginary parts as float64 tensors"
        )
    name = str(len(tensors))
    # Own, contiguous, CPU copy: safetensors rejects shared storage and needs CPU bytes.
    data = t.detach().resolve_conj().resolve_neg().to("cpu").contiguous().clone()
    tensors[name] = data
    return {
        "kind": "tensor",
        "name": name,
        "dtype": str(t.dtype).removeprefix("torch."),
        "shape": list(t.shape),
        "requires_grad": bool(t.requires_grad),
    }


def _encode_value(v: Any, where: str) -> Any:
    """Tagged JSON encoding of static values and dict keys (see the module docstring)."""
    if v is None or type(v) in (bool, int, str):
        return v
    if type(v) is float:
        return v if math.isfinite(v) else {"float": repr(v)}
    if type(v) is list:
        return [_encode_value(x, where) for x in v]
    if type(v) is tuple:
        return {"tuple": [_encode_value(x, where) for x in v]}
    if type(v) is dict:
        return {"dict": [[_encode_value(k, where), _encode_value(x, where)] for k, x in v.items()]}
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).removeprefix("torch.")}
    if isinstance(v, torch.device):
        return {"device": str(v)}
    module, qualname = getattr(v, "__module__", None), getattr(v, "__qualname__", None)
    if (
        isinstance(module, str)
        and isinstance(qualname, str)
        and _in_package(module)
        and "<" not in qualname
        and _resolve_in_package(module, qualname, import_module=False) is v
    ):
        return {"ref": {"module": module, "qualname": qualname}}
    raise TypeError(
        f"checkpoint.save: {where} holds {v!r} of type {type(v).__qualname__}, which cannot be "
        "stored; static values may be None, bool, int, float, str, lists/tuples/dicts of "
        "these, torch.dtype, torch.device, or module-level functions/classes of functional_rl"
    )


def _encode_config(config: Any) -> dict[str, Any] | None:
    if config is None:
        return None
    cls = type(config)
    if not (callable(getattr(config, "to_dict", None)) and callable(getattr(cls, "from_dict", None))):
        raise TypeError(
            f"checkpoint.save: config of type {cls.__qualname__} has no to_dict()/from_dict(); "
            "pass a PPOConfig (or a functional_rl class with both) or None"
        )
    if not _in_package(cls.__module__) or "<" in cls.__qualname__:
        raise TypeError(
            f"checkpoint.save: config class {cls.__module__}.{cls.__qualname__} is not a "
            "module-level class of functional_rl; load only rebuilds configs from functional_rl "
            "classes, so store this one's to_dict() in metadata instead"
        )
    values = config.to_dict()
    _check_metadata(values, what="config.to_dict()")
    return {"module": cls.__module__, "qualname": cls.__qualname__, "values": values}


def _check_metadata(value: Any, what: str = "metadata", where: str = "") -> Any:
    """Check that ``value`` is a dict that survives JSON unchanged; return it."""
    if not where and not isinstance(value, dict):
        raise TypeError(f"checkpoint.save: {what} must be a dict, got {type(value).__qualname__}")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"checkpoint.save: {what}{where} has a non-str key {k!r}; JSON keys are strings")
            _check_metadata(v, what, f"{where}[{k!r}]")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_metadata(v, what, f"{where}[{i}]")
    elif type(value) not in _JSON_SCALARS:
        hint = " (use a list)" if isinstance(value, tuple) else ""
        raise TypeError(
            f"checkpoint.save: {what}{where} is a {type(value).__qualname__}{hint}; it must "
            "hold only None, bool, int, float, str, list and dict with str keys"
        )
    return value


# ---------------------------------------------------------------------------- load
def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """Read a checkpoint written by :func:`save`, verifying it first.

    Nothing in the file is executed. Classes named in the structure must already be
    registered ``@pytree_dataclass`` classes in this process (import the module that defines
    them before loading) or live inside ``functional_rl``, whose modules load may import.

    Args:
        path: the checkpoint file.
        map_location: device for every tensor (default ``"cpu"``).

    Returns:
        ``(state, config, metadata)``: the state pytree with tensors of the saved dtypes and
        shapes on ``map_location``, the config rebuilt with ``from_dict`` (or ``None``) and
        the metadata dict.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        NotACheckpointError: the file is not a functional_rl checkpoint.
        TruncatedCheckpointError: the file is shorter than its header says.
        CheckpointVersionError: the file needs a newer functional_rl.
        CorruptCheckpointError: the SHA-256 does not match or the header is unreadable.
        UnsafeCheckpointError: the structure names a class load will not resolve.
        IncompatibleCheckpointError: the stored fields or config no longer fit the code.

    Example:
        >>> import tempfile, torch
        >>> from functional_rl.kernel.config import Hyperparams, PPOConfig
        >>> hp = Hyperparams.from_config(PPOConfig(gamma=0.5))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = save(f"{d}/hp.frl", {"hp": hp, "key": torch.tensor([1, 2])}, None)
        ...     state, _, _ = load(p, map_location="cpu")
        >>> float(state["hp"].gamma), state["key"].dtype
        (0.5, torch.int64)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = Path(d, "junk.frl").write_bytes(b"not a checkpoint")
        ...     load(Path(d, "junk.frl"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        functional_rl.shell.checkpoint.NotACheckpointError: ...junk.frl is not a functional_rl checkpoint...
    """
    path = Path(path)
    data = path.read_bytes()
    content_str, blob = _verify(path, data)
    try:
        content = json.loads(content_str)
        tensors = safetensors.torch.load(blob)
    except Exception as e:
        raise CorruptCheckpointError(
            f"{path}: the SHA-256 matches but the content cannot be parsed ({e!r}); the file "
            "was written by a faulty writer; use an earlier checkpoint"
        ) from e
    if not isinstance(content, dict) or not {"structure", "config", "metadata"} <= content.keys():
        raise CorruptCheckpointError(f"{path}: the content lacks structure/config/metadata; use an earlier checkpoint")
    device = torch.device(map_location)
    used: set[str] = set()
    state = _Decoder(path, tensors, device, used).node(content["structure"], "state")
    if used != set(tensors):
        raise CorruptCheckpointError(
            f"{path}: tensors {sorted(set(tensors) - used)} are not referenced by the structure; "
            "use an earlier checkpoint"
        )
    config = _decode_config(path, content["config"])
    metadata = content["metadata"]
    if not isinstance(metadata, dict):
        raise CorruptCheckpointError(f"{path}: metadata is not a JSON object; use an earlier checkpoint")
    return state, config, metadata


def _verify(path: Path, data: bytes) -> tuple[str, bytes]:
    """Check magic, lengths, version and hash; return the content string and tensor blob."""
    header_nbytes = _check_prefix(path, data)
    header = _read_header(path, data[_PREFIX : _PREFIX + header_nbytes])
    digest, tensors_nbytes, content = header["sha256"], header["tensors_nbytes"], header["content"]
    n, expected = len(data), _PREFIX + header_nbytes + tensors_nbytes
    if n < expected:
        raise TruncatedCheckpointError(
            f"{path}: the file is truncated: it should have {expected} bytes but has {n}; "
            "use an earlier checkpoint"
        )
    if n > expected:
        raise _damaged(path, f"{n - expected} unexpected bytes after the end of the checkpoint")
    blob = data[_PREFIX + header_nbytes :]
    actual = hashlib.sha256(content.encode("utf-8"))
    actual.update(blob)
    if actual.hexdigest() != digest:
        raise CorruptCheckpointError(
            f"{path} is corrupt: its SHA-256 is {actual.hexdigest()} but the header records "
            f"{digest}; the bytes were damaged on disk or in transfer; use an earlier checkpoint"
        )
    return content, blob


def _check_prefix(path: Path, data: bytes) -> int:
    """The magic and the header length; returns the header's size in bytes."""
    n = len(data)
    if data[: len(MAGIC)] != MAGIC:
        if n < len(MAGIC) and data == MAGIC[:n]:
            raise TruncatedCheckpointError(
                f"{path}: the file is truncated ({n} bytes); it was cut while being copied or "
                "written by a non-atomic tool; use an earlier checkpoint"
            )
        raise NotACheckpointError(
            f"{path} is not a functional_rl checkpoint (it does not start with {MAGIC!r}); "
            "pass a file written by functional_rl.shell.checkpoint.save (a plain safetensors or "
            "torch.save file is not one)"
        )
    if n < _PREFIX:
        raise TruncatedCheckpointError(f"{path}: the file is truncated ({n} bytes); use an earlier checkpoint")
    (header_nbytes,) = struct.unpack("<Q", data[len(MAGIC) : _PREFIX])
    if _PREFIX + header_nbytes > n:
        raise TruncatedCheckpointError(
            f"{path}: the file is truncated: its header needs {_PREFIX + header_nbytes} bytes but "
            f"the file has {n}; use an earlier checkpoint"
        )
    return header_nbytes


def _read_header(path: Path, raw: bytes) -> dict[str, Any]:
    """The JSON header, checked: format name, a version this code reads, and a valid
    ``sha256``, ``tensors_nbytes`` and ``content``."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _damaged(path, f"the header is not valid JSON ({e})") from e
    if not isinstance(header, dict) or header.get("format") != _FORMAT_NAME:
        raise _damaged(path, f"the header does not describe a {_FORMAT_NAME}")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _damaged(path, f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointVersionError(
            f"{path} was written in checkpoint format version {version}, but this functional_rl "
            f"reads versions up to {FORMAT_VERSION}; upgrade functional_rl to load it"
        )
    digest, tensors_nbytes, content = header.get("sha256"), header.get("tensors_nbytes"), header.get("content")
    if (
        not isinstance(digest, str)
        or not isinstance(content, str)
        or isinstance(tensors_nbytes, bool)
        or not isinstance(tensors_nbytes, int)
        or tensors_nbytes < 0
    ):
        raise _damaged(path, "the header lacks a valid sha256, tensors_nbytes or content")
    return header


def _damaged(path: Path, problem: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{path}: {problem}; the file is damaged; use an earlier checkpoint")


def _in_package(module: str) -> bool:
    return (module == _PACKAGE or module.startswith(_PACKAGE + ".")) and all(
        _IDENT_RE.match(part) for part in module.split(".")
    )


def _resolve_in_package(module: str, qualname: str, import_module: bool) -> Any:
    """``module.qualname`` inside functional_rl, or ``None``. Only functional_rl is imported."""
    if not _in_package(module) or not all(_IDENT_RE.match(p) for p in qualname.split(".")):
        return None
    mod = importlib.import_module(module) if import_module else sys.modules.get(module)
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _all_str(*values: Any) -> bool:
    return all(isinstance(v, str) for v in values)


def _registered_dataclass(module: str, qualname: str) -> type | None:
    """A class already registered as a @pytree_dataclass under this name (no import)."""
    for cls in list(pytree.SUPPORTED_NODES):
        if (
            isinstance(cls, type)
            and cls.__module__ == module
            and cls.__qualname__ == qualname
            and _is_pytree_dataclass(cls)
        ):
            return cls
    return None


class _Decoder:
    """Rebuilds the state from its JSON structure and the loaded tensors."""

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor], device: torch.device, used: set[str]):
        self.path, self.tensors, self.device, self.used = path, tensors, device, used

    def corrupt(self, where: str, problem: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{self.path}: {where}: {problem}; use an earlier checkpoint")

    def node(self, node: Any, where: str) -> Any:
        kind = node.get("kind") if isinstance(node, dict) else None
        if kind == "tensor":
            return self.tensor(node, where)
        if kind == "none":
            return None
        if kind == "value":
            return self.value(node.get("value"), where)
        if kind in ("list", "tuple") and isinstance(node.get("children"), list):
            children = [self.node(c, f"{where}[{i}]") for i, c in enumerate(node["children"])]
            return children if kind == "list" else tuple(children)
        if kind == "dict" and isinstance(node.get("keys"), list) and isinstance(node.get("values"), list):
            keys = [self.key(k, where) for k in node["keys"]]
            if len(keys) != len(node["values"]):
                raise self.corrupt(where, "dict keys and values differ in number")
            return {k: self.node(v, f"{where}[{k!r}]") for k, v in zip(keys, node["values"])}
        if kind == "dataclass":
            return self.dataclass(node, where)
        raise self.corrupt(where, f"unknown structure node {str(node)[:80]!r}")

    def tensor(self, node: dict[str, Any], where: str) -> torch.Tensor:
        name = node.get("name")
        if name not in self.tensors or name in self.used:
            raise self.corrupt(where, f"tensor {name!r} is missing or referenced twice")
        self.used.add(name)
        t = self.tensors[name]
        if str(t.dtype).removeprefix("torch.") != node.get("dtype") or list(t.shape) != node.get("shape"):
            stored = f"{node.get('dtype')}{node.get('shape')}"
            raise self.corrupt(where, f"tensor is {t.dtype}{list(t.shape)} but the structure says {stored}")
        t = t.to(self.device)
        if node.get("requires_grad") is True:
            t.requires_grad_(True)
        return t

    def dataclass(self, node: dict[str, Any], where: str) -> Any:
        module, qualname = node.get("module"), node.get("qualname")
        fields, static = node.get("fields"), node.get("static")
        if not (_all_str(module, qualname) and isinstance(fields, dict) and isinstance(static, dict)):
            raise self.corrupt(where, "malformed dataclass node")
        name = f"{module}.{qualname}"
        cls = _registered_dataclass(module, qualname)
        if cls is None and _in_package(module):
            try:
                obj = _resolve_in_package(module, qualname, import_module=True)
            except ImportError as e:
                raise UnsafeCheckpointError(
                    f"{self.path}: {where} names {name!r}, which cannot be imported ({e}); the "
                    "checkpoint comes from a different functional_rl version"
                ) from e
            cls = obj if isinstance(obj, type) and _is_pytree_dataclass(obj) else None
            if cls is None:
                raise UnsafeCheckpointError(
                    f"{self.path}: {where} names {name!r}, which is not a @pytree_dataclass; "
                    "the file was tampered with or comes from a different functional_rl version"
                )
        if cls is None:
            raise UnsafeCheckpointError(
                f"{self.path}: {where} names class {name!r}, which is not a registered "
                "@pytree_dataclass in this process; load never imports modules outside "
                f"functional_rl: import {module!r} yourself before calling load if you trust it"
            )
        data_names, static_names = tuple(cls.__data_fields__), tuple(cls.__static_fields__)
        if tuple(fields) != data_names or tuple(static) != static_names:
            raise IncompatibleCheckpointError(
                f"{self.path}: {where} stores {name} with fields {list(fields)} and static fields "
                f"{list(static)}, but the class now has {list(data_names)} and {list(static_names)}; "
                "load it with the code version that wrote it and convert the state"
            )
        children = [self.node(fields[n], f"{where}.{n}") for n in data_names]
        context = tuple(self.value(static[n], f"{where}.{n}") for n in static_names)
        return pytree.SUPPORTED_NODES[cls].unflatten_fn(children, context)

    def key(self, k: Any, where: str) -> Any:
        k = self.value(k, f"a key of {where}")
        try:
            hash(k)
        except TypeError as e:
            raise self.corrupt(where, f"unhashable dict key {k!r}") from e
        return k

    def value(self, v: Any, where: str) -> Any:
        if v is None or type(v) in (bool, int, float, str):
            return v
        if type(v) is list:
            return [self.value(x, where) for x in v]
        if type(v) is dict and len(v) == 1:
            (tag, payload), = v.items()
            if tag == "tuple" and type(payload) is list:
                return tuple(self.value(x, where) for x in payload)
            if tag == "dict" and type(payload) is list and all(type(p) is list and len(p) == 2 for p in payload):
                return {self.key(k, where): self.value(x, where) for k, x in payload}
            if tag == "float" and payload in ("nan", "inf", "-inf"):
                return float(payload)
            if tag == "dtype" and isinstance(payload, str) and isinstance(getattr(torch, payload, None), torch.dtype):
                return getattr(torch, payload)
            if tag == "device" and isinstance(payload, str):
                try:
                    return torch.device(payload)
                except RuntimeError as e:
                    raise self.corrupt(where, f"invalid device {payload!r}") from e
            if tag == "ref" and type(payload) is dict:
                return self.ref(payload, where)
        raise self.corrupt(where, f"unknown static value encoding {str(v)[:80]!r}")

    def ref(self, payload: dict[str, Any], where: str) -> Any:
        module, qualname = payload.get("module"), payload.get("qualname")
        name = f"{module}.{qualname}"
        if not (isinstance(module, str) and isinstance(qualname, str) and _in_package(module)):
            raise UnsafeCheckpointError(
                f"{self.path}: {where} refers to {name!r}; load only resolves functions and "
                "classes inside functional_rl and never imports other modules"
            )
        try:
            obj = _resolve_in_package(module, qualname, import_module=True)
        except ImportError as e:
            raise UnsafeCheckpointError(
                f"{self.path}: {where} refers to {name!r}, which cannot be imported ({e})"
            ) from e
        if obj is None or getattr(obj, "__module__", None) != module or getattr(obj, "__qualname__", None) != qualname:
            raise UnsafeCheckpointError(
                f"{self.path}: {where} refers to {name!r}, which is not a module-level function "
                "or class of functional_rl in this version"
            )
        return obj


def _decode_config(path: Path, node: Any) -> Any:
    if node is None:
        return None
    if not (
        isinstance(node, dict)
        and _all_str(node.get("module"), node.get("qualname"))
        and isinstance(node.get("values"), dict)
    ):
        raise _damaged(path, "malformed config entry")
    name = f"{node['module']}.{node['qualname']}"
    if not _in_package(node["module"]):
        raise UnsafeCheckpointError(
            f"{path}: the config names class {name!r}; load only rebuilds config classes "
            "inside functional_rl and never imports other modules"
        )
    try:
        cls = _resolve_in_package(node["module"], node["qualname"], import_module=True)
    except ImportError as e:
        raise UnsafeCheckpointError(f"{path}: the config class {name!r} cannot be imported ({e})") from e
    if not isinstance(cls, type) or not callable(getattr(cls, "from_dict", None)):
        raise UnsafeCheckpointError(f"{path}: the config names {name!r}, which is not a class with from_dict")
    try:
        return cls.from_dict(node["values"])
    except (TypeError, ValueError) as e:
        raise IncompatibleCheckpointError(
            f"{path}: the stored config no longer fits {name} ({e}); read the raw values from "
            "the file's header JSON and convert them"
        ) from e
