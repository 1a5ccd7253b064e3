"""The ``functional-rl`` command line: train, resume, evaluate and plot runs; population-based training.

::

    functional-rl train ENV_ID [--config FILE.toml|.json] [--set key=value ...]
                               [--total-timesteps N] [--seed S] [--run-dir DIR] [--no-compile]
                               [--checkpoint-every-s SECONDS | --checkpoint-every N] [--keep-last K] [--eval-every N]
                               [--stop-after-iterations K] [--initial-policy URI]
    functional-rl resume RUN_DIR [--total-timesteps N] [--stop-after-iterations K]
    functional-rl eval RUN_DIR [--episodes N] [--seed S] [--video FILE.mp4|FILE.gif [--fps F]]
    functional-rl plot RUN_DIR [RUN_DIR ...] [--out FILE] [--smooth ema:A|window:N|none] [--x steps|time]
    functional-rl sweep ENV_ID --seeds 0-15 [--set KEY=V1,V2 ...] [--total-timesteps N] [--run-dir DIR]
    functional-rl tune ENV_ID --trials N --study NAME [--storage URL] [--space FILE] [--seeds K] [--total-timesteps N]
    functional-rl pbt ENV_ID --population N --exploit-every K --space FILE [--set KEY=VALUE ...]
    functional-rl export RUN_DIR [--format onnx|torch-export] [--out FILE]
    functional-rl list-envs

Every ``train`` writes a run directory (default ``runs/{env_id}-{seed}-{YYYYmmdd-HHMMSS}``)::

    config.json          the PPOConfig (rewritten by ``resume --total-timesteps``)
    metrics.jsonl        one row of grouped metrics per iteration (+ ``eval/...`` rows)
    checkpoints/         ckpt_{agent_step:012d}.frl: at the start, every 60 s, at the end, on failure,
                         Ctrl-C and SIGTERM; the last 3 kept
    tensorboard/         TensorBoard event files (x-axis: agent_step)
    learning_curve.png   overview/reward against agent_step, written when training stops

``resume`` loads ``config.json`` and the latest checkpoint and continues bit for bit as if
never stopped (same device, same compile mode; the mode is stored in each checkpoint's
metadata). ``--stop-after-iterations K`` ends a ``train``/``resume`` call after K iterations
with a final checkpoint, so the run can be continued later with ``resume``; it does not
change the learning-rate schedule, which follows ``total_timesteps``.

Under ``torchrun --nproc-per-node W -m functional_rl train|resume ...`` the run is data
parallel (:mod:`functional_rl.shell.distributed`): ``num_envs`` envs per process, one run dir, and
only rank 0 prints, logs and writes checkpoints (of the whole run's state). ``resume`` of such
a run needs the same ``W``; on several machines the run dir must be on a shared filesystem.

Bad arguments (an unknown env or config key, a malformed ``--set``, a missing run dir, a
run dir without a checkpoint, an unreadable checkpoint) and failed file operations print one
line of at most ``MAX_MESSAGE`` characters on stderr and exit with status 2, without a
traceback; everything is validated before a run dir is created (:mod:`functional_rl.shell.validate`).
``train`` uses only a new or empty run dir, and ``train``/``resume`` hold its ``run.lock``
(:mod:`functional_rl.shell.rundir`): a second process on it exits 2 naming the holder.
``Ctrl-C`` saves the last good state and exits with 130, ``SIGTERM`` likewise with 143.
A ``SIGKILL`` loses at most the iterations since the last checkpoint (60 s by default): ``resume``
continues bit for bit from it and drops the ``metrics.jsonl`` rows logged after it.

While the first iteration compiles, ``train``/``resume`` say so (``compiling the training step
(first run only; cached for the next)...``, then the elapsed seconds every 5 s), and the
steps/s and ETA they print leave that iteration out (:class:`~functional_rl.shell.callbacks.SteadyRate`).

Example:
    >>> build_parser().parse_args(["train", "CartPole-v1", "--set", "num_envs=4"]).set
    ['num_envs=4']
    >>> _parse_sets(["learning_rate=1e-3", "hidden_sizes=[32, 32]", "env_id=Acrobot-v1"])
    {'learning_rate': 0.001, 'hidden_sizes': [32, 32], 'env_id': 'Acrobot-v1'}
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from functional_rl.shell.rundir import LOCK_FILE, RunDirLock, RunDirLockedError, describe_holder
from functional_rl.shell.validate import ConfigError, check_config, check_config_dict, short

__all__ = ["main", "build_parser", "plot_learning_curves", "plot_curve_groups", "read_metrics", "UsageError"]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
CURVE_FILE = "learning_curve.png"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REWARD = "overview/reward"
#: The most characters of an error message (values in it are cut to validate.MAX_ECHO each).
MAX_MESSAGE = 1000
#: Upper bounds of options whose size decides memory (``--episodes``) or threads.
MAX_EPISODES = 100_000
MAX_THREADS = 1024
#: The default seconds between periodic checkpoints (``--checkpoint-every-s``), and the most.
CHECKPOINT_EVERY_S = 60.0
MAX_CHECKPOINT_EVERY_S = 1e9
#: Seconds between the "still compiling" lines of the first iteration.
COMPILE_NOTICE_EVERY_S = 5.0


class UsageError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Terminated(Exception):
    """Raised in the main thread by the CLI's SIGTERM handler, so ``finally`` blocks run (the
    run dir's lock is released and the last good state checkpointed)."""


class _DuplicateKeyError(ValueError):
    """A JSON object names a key twice."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKeyError(f"key {short(k)} appears twice")
        out[k] = v
    return out


# ---------------------------------------------------------------------------- config
def _parse_value(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise UsageError(f"--set value {short(text)} is nested too deeply") from None
    except _DuplicateKeyError as e:
        raise UsageError(f"--set value {short(text)}: {e}") from None
    except ValueError:  # not JSON (or an integer of too many digits): the text itself, e.g. an env id
        return text


def _parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise UsageError(f"malformed --set {short(item)}: expected key=value, e.g. --set learning_rate=1e-3")
        k, v = item.split("=", 1)
        k, value = k.strip(), _parse_value(v.strip())
        if k in out and json.dumps(out[k]) != json.dumps(value):
            raise UsageError(f"--set {short(k)} is given twice, as {short(out[k])} and {short(value)}; give it once")
        out[k] = value
    return out


def _lift_schedules(sets: dict[str, Any]) -> dict[str, Any]:
    """``--set NAME.schedule=SPEC`` -> ``schedules[NAME] = SPEC`` (beside any ``--set schedules={...}``).

    >>> _lift_schedules({"ent_coef.schedule": "cosine:end=0", "gamma": 0.9})
    {'gamma': 0.9, 'schedules': {'ent_coef': 'cosine:end=0'}}
    """
    dotted = {k[: -len(".schedule")]: v for k, v in sets.items() if k.endswith(".schedule")}
    if not dotted:
        return sets
    out = {k: v for k, v in sets.items() if not k.endswith(".schedule")}
    given = out.get("schedules", {})
    if not isinstance(given, dict):
        raise UsageError(f"--set schedules={short(given)} must be an object, e.g. '{{\"ent_coef\": \"cosine:end=0\"}}'")
    for name, spec in dotted.items():
        if name in given and given[name] != spec:
            raise UsageError(f"--set {name}.schedule and --set schedules both schedule {name}; give it once")
    out["schedules"] = {**given, **{name: str(spec) for name, spec in dotted.items()}}
    return out


def _load_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"config file {short(path)} does not exist")
    if not p.is_file():
        raise UsageError(f"config file {short(path)} is not a file; give a .json or .toml file")
    if p.suffix not in (".json", ".toml"):
        raise UsageError(f"config file {short(path)}: use a .json or .toml file")
    text = p.read_bytes()
    try:
        if p.suffix == ".json":
            d = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
        else:
            import tomllib  # refuses a key defined twice itself

            d = tomllib.loads(text.decode("utf-8"))
    except _DuplicateKeyError as e:
        raise UsageError(f"config file {short(path)}: {e}; keep one (a repeated key would silently take the last)") from e
    except RecursionError:
        raise UsageError(f"config file {short(path)} is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, TOMLDecodeError and UnicodeDecodeError are ValueErrors
        raise UsageError(f"config file {short(path)} is not valid {p.suffix[1:].upper()}: {short(str(e), 300)}") from e
    if not isinstance(d, dict):
        raise UsageError(f"config file {short(path)} must hold a table/object of PPOConfig fields")
    return d


def _config_from_dict(d: dict[str, Any], where: str):
    from functional_rl.kernel.config import PPOConfig

    try:
        check_config_dict(d)
        return PPOConfig.from_dict(d)
    except (ValueError, TypeError) as e:  # ConfigError is a ValueError
        raise UsageError(f"{where}: {e}") from e


def _check_config(config, env=None, where: str = "bad config") -> None:
    """The shell's checks of a built config (device, sizes, degenerate minibatches), as a UsageError."""
    try:
        check_config(config, env)
    except ConfigError as e:
        raise UsageError(f"{where}: {e}") from e


def _make_config(args: argparse.Namespace):
    """The run's config from ``--config``, ``--set`` and the flags. ``--set`` and the flags
    override the file; two sources on the command line that disagree are refused, and so is an
    ``env_id`` in the file or ``--set`` that differs from the positional ENV_ID."""
    from_file = _load_config_file(args.config) if getattr(args, "config", None) else {}
    sets = _lift_schedules(_parse_sets(args.set or []))
    for where, given in ((f"config file {short(args.config)}", from_file), ("--set", sets)):
        if "env_id" in given and given["env_id"] != args.env_id:
            raise UsageError(f"{where} sets env_id={short(given['env_id'])} but the command line names "
                             f"{short(args.env_id)}; give the environment once, as the positional ENV_ID")
    for flag, key in (("--total-timesteps", "total_timesteps"), ("--seed", "seed")):
        value = getattr(args, key)
        if value is not None and key in sets and sets[key] != value:
            raise UsageError(f"--set {key}={short(sets[key])} conflicts with {flag} {value}; give it once")
    d: dict[str, Any] = {**from_file, **sets, "env_id": args.env_id}
    if args.total_timesteps is not None:
        d["total_timesteps"] = args.total_timesteps
    if args.seed is not None:
        d["seed"] = args.seed
    return _config_from_dict(d, "bad config")


def _make_env(env_id: str):
    from functional_rl.envs import UnknownEnvError, make
    from functional_rl.envs.mettagrid import MettagridMissingError

    try:
        return make(env_id)
    except (UnknownEnvError, MettagridMissingError) as e:
        raise UsageError(str(e)) from e


def _make_policy(config, env):
    from functional_rl.shell.build import default_policy

    return default_policy(config, env)


def _initial_policy(uri: str | None, config, env):
    """The record ``--initial-policy`` names, checked against the run's policy (a UsageError
    names what does not fit), or ``None``."""
    if uri is None:
        return None
    from functional_rl.kernel.state import TrainerState
    from functional_rl.shell.checkpoint import CheckpointError
    from functional_rl.shell.policy_store import PolicyStore, PolicyStoreError, start_from

    try:
        record = PolicyStore(".").load(uri)
        start_from(TrainerState.create(config, env, _make_policy(config, env)), record)
    except (PolicyStoreError, CheckpointError, ValueError) as e:
        raise UsageError(f"--initial-policy: {e}") from e
    return record


def _check_teachers(config, env) -> None:
    """Load ``config.kickstart_teachers`` once before anything is written (a UsageError names
    the teacher that is missing or does not fit)."""
    if not config.kickstart_teachers:
        return
    from functional_rl.shell.kickstart import KickstartError, load_teachers

    try:
        load_teachers(config.kickstart_teachers, env=env, student=_make_policy(config, env))
    except KickstartError as e:
        raise UsageError(f"--set kickstart_teachers: {e}") from e


def _write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def _write_config(run_dir: Path, config) -> None:
    _write_atomic(run_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")


# ---------------------------------------------------------------------------- run dirs
def _default_run_dir(config) -> Path:
    base = Path("runs") / f"{config.env_id.replace('/', '-')}-{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    return run_dir


def _existing_run_dir(path: str) -> Path:
    run_dir = Path(path)
    if not run_dir.exists():
        raise UsageError(f"run dir {short(path)} does not exist")
    if not run_dir.is_dir():
        raise UsageError(f"run dir {short(path)} is a file, not a directory; give the run directory written by train")
    return run_dir


def _entries(run_dir: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name not in ignore)


def _new_run_dir(run_dir: Path) -> bool:
    """Check that ``train`` may use ``run_dir`` (missing, or an empty directory) and create it.

    Returns whether it was created. ``train`` never writes into a directory holding files it
    did not write: it would overwrite config.json and mix its metrics with older ones.
    """
    from functional_rl.shell.checkpoint import latest_checkpoint

    if run_dir.is_symlink() and not run_dir.exists():
        raise UsageError(f"run dir '{run_dir}' is a broken symbolic link; remove it or choose another --run-dir")
    if not run_dir.exists():
        run_dir.mkdir(parents=True)
        return True
    if not run_dir.is_dir():
        raise UsageError(f"run dir '{run_dir}' is a file, not a directory; choose another --run-dir")
    if latest_checkpoint(run_dir / CHECKPOINT_DIR) is not None:
        raise UsageError(f"run dir '{run_dir}' already has checkpoints; continue it with "
                         f"`functional-rl resume {run_dir}` or choose another --run-dir")
    _refuse_foreign(run_dir, ignore=(LOCK_FILE,))
    return False


def _refuse_foreign(run_dir: Path, ignore: tuple[str, ...]) -> None:
    found = _entries(run_dir, ignore)
    if found:
        names = ", ".join(short(n, 60) for n in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        hint = ("; it looks like a run whose checkpoints are gone, which cannot be resumed"
                if CONFIG_FILE in found else "")
        raise UsageError(f"run dir '{run_dir}' is not empty ({names}) and has no checkpoint{hint}; train writes only "
                         "into a new or empty directory and never overwrites files it did not write: choose another "
                         "--run-dir, or move those files away")


def _lock(run_dir: Path) -> RunDirLock:
    """Hold ``run_dir``'s lock (one process per run dir), reporting a lock taken over from a dead process."""
    lock = RunDirLock(run_dir)
    try:
        lock.acquire()
    except RunDirLockedError as e:
        raise UsageError(str(e)) from e
    if lock.took_over is not None:
        print(f"functional-rl: note: took over the lock of '{run_dir}' from {describe_holder(lock.took_over)}, "
              "which ended without releasing it", file=sys.stderr)
    return lock


def _run_config(run_dir: Path):
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise UsageError(f"run dir '{run_dir}' has no {CONFIG_FILE}; is it a functional-rl run dir?")
    try:
        d = json.loads(cfg_path.read_bytes().decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise UsageError(f"'{cfg_path}' is nested too deeply to be a config") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a duplicate key
        raise UsageError(f"'{cfg_path}' is not valid JSON: {short(str(e), 300)}") from e
    config = _config_from_dict(d, str(cfg_path))
    _check_config(config, where=str(cfg_path))
    return config


def _latest_state(run_dir: Path, config):
    from functional_rl.shell import checkpoint

    folder = run_dir / CHECKPOINT_DIR
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"'{folder}' is a file, not the checkpoint directory; move it away")
    path = checkpoint.latest_checkpoint(folder)
    if path is None:
        raise UsageError(f"run dir '{run_dir}' has no checkpoint in {run_dir / CHECKPOINT_DIR}; nothing to load")
    try:
        state, saved_config, metadata = checkpoint.load(path, map_location=config.device)
    except checkpoint.CheckpointError as e:
        raise UsageError(f"cannot load checkpoint '{path}': {e}") from e
    _check_same_run(path, saved_config, config)
    return path, state, metadata


def _check_same_run(path: Path, saved, config) -> None:
    """config.json may differ from the checkpoint's config only in ``total_timesteps``."""
    if saved is None or not hasattr(saved, "to_dict"):
        return
    a, b = saved.to_dict(), config.to_dict()
    diff = [f"{k} ({b[k]!r} vs {a[k]!r})" for k in a if k != "total_timesteps" and a[k] != b.get(k)]
    if diff:
        raise UsageError(f"{CONFIG_FILE} differs from the config in {path.name} in {', '.join(diff)}; "
                         "only total_timesteps may change on resume (use --total-timesteps)")


def _scan_metrics(path: str | Path) -> tuple[list[tuple[bytes, dict[str, Any]]], int]:
    """``([(raw line, row), ...], unreadable lines)`` of a JSONL file, read as bytes so that a
    torn line, a non-UTF-8 byte or a non-object line is counted and skipped, never fatal."""
    rows, bad = [], 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                row = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append((raw, row))
            else:
                bad += 1
    return rows, bad


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file; a torn last line (a killed writer), a line with a
    byte that is not UTF-8 or that is not a JSON object is skipped.

    Args:
        path: the JSONL file.

    Returns:
        One dict per complete, valid JSON line, in file order.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = Path(d) / "m.jsonl"
        ...     _ = p.write_text('{"agent_step": 64, "overview/reward": 20.0}\\n{"agent_st')
        ...     read_metrics(p)
        [{'agent_step': 64, 'overview/reward': 20.0}]
    """
    return [row for _, row in _scan_metrics(path)[0]]


def _last_wall_time(path: Path) -> float:
    """The ``wall_time`` of the last row of a metrics file that has one (0 if none): a resumed
    run's clock continues from it."""
    times = [r["wall_time"] for r in read_metrics(path) if isinstance(r.get("wall_time"), (int, float))] if path.is_file() else []
    return float(times[-1]) if times else 0.0


def _truncate_metrics(run_dir: Path, step: int) -> tuple[int, int]:
    """Drop rows logged after ``step`` (by a run killed after its last checkpoint) and unreadable
    lines (torn or not UTF-8); return ``(rows dropped, unreadable lines dropped)``."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return 0, 0
    rows, bad = _scan_metrics(path)
    keep = [raw if raw.endswith(b"\n") else raw + b"\n" for raw, r in rows
            if isinstance(r.get("agent_step"), (int, float)) and r["agent_step"] <= step]
    if bad or len(keep) != len(rows):
        _write_atomic(path, b"".join(keep))
    return len(rows) - len(keep), bad


# ---------------------------------------------------------------------------- data parallel
def _join(config, argv: list[str]):
    """This process's :class:`~functional_rl.shell.distributed.Replica` under torchrun (else ``None``)
    and the config with its ``world_size``; a run dir's process count must match the launch."""
    from functional_rl.shell import distributed

    replica = distributed.setup(config.device)
    if replica is None and config.world_size > 1:
        raise UsageError(f"this run was trained by {config.world_size} processes; launch it the same way: "
                         f"torchrun --nproc-per-node {config.world_size} -m functional_rl {' '.join(argv)}")
    if replica is not None:
        try:
            config = distributed.check_config(config, replica)
        except distributed.DistributedError as e:
            distributed.shutdown(replica)
            raise UsageError(str(e)) from e
    return replica, config


def _on_main(replica, fn):
    """``fn()`` on rank 0 only (or in a one-process run); every rank gets its result, or the
    ``UsageError`` it raised, so no process waits for a rank that already gave up."""
    if replica is None:
        return fn()
    import torch.distributed as dist

    box: list[Any] = [None]
    if replica.is_main:
        try:
            box = [("ok", fn())]
        except UsageError as e:
            box = [("error", str(e))]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise UsageError(value)
    return value


def _is_main(replica) -> bool:
    return replica is None or replica.is_main


# ---------------------------------------------------------------------------- training
def _callbacks(args: argparse.Namespace, run_dir: Path, env, policy, compile: bool, purge_step: int | None) -> list[Any]:
    from functional_rl.shell.callbacks import (
        Checkpointer, CompileNotice, ConsoleLogger, Evaluator, JSONLWriter, ProgressBar, TensorBoardWriter,
    )

    callbacks: list[Any] = []
    progress = args.progress
    if progress == "auto":
        progress = "bar" if sys.stderr.isatty() else "log"
    if progress == "bar":
        callbacks.append(ProgressBar())
    elif progress == "log":
        callbacks.append(ConsoleLogger(every=args.log_every))
    if compile and progress in ("bar", "log"):  # after the bar or the header line, before any other output
        callbacks.append(CompileNotice(stream=sys.stderr if progress == "bar" else sys.stdout,
                                       every_s=COMPILE_NOTICE_EVERY_S, above_bar=progress == "bar"))
    jsonl = JSONLWriter(run_dir / METRICS_FILE, wall_time=True,
                        wall_time_start=0.0 if purge_step is None else _last_wall_time(run_dir / METRICS_FILE))
    tb = TensorBoardWriter(run_dir / TENSORBOARD_DIR, purge_step=purge_step)
    callbacks += [jsonl, tb]
    if args.eval_every:
        callbacks.append(Evaluator(env, policy, every=args.eval_every, episodes=args.eval_episodes,
                                   seed=args.eval_seed, writer=[jsonl, tb]))
    # Last, so a kill between the two leaves extra metric rows (dropped by resume), never a gap.
    # Time-based by default (a save every iteration cost 20-40 ms of a ~100 ms iteration); the
    # start is saved too, so a run killed before its first periodic save can be resumed.
    every_s = None if args.checkpoint_every is not None else (args.checkpoint_every_s or CHECKPOINT_EVERY_S)
    callbacks.append(Checkpointer(run_dir / CHECKPOINT_DIR, every=args.checkpoint_every, every_s=every_s,
                                  keep_last=args.keep_last, metadata={"compile": compile}, save_on_start=True))
    return callbacks


def _train(args: argparse.Namespace, config, run_dir: Path, state, compile: bool, purge_step: int | None, replica=None) -> int:
    import torch

    from functional_rl.shell.distributed import DistributedError
    from functional_rl.shell.loop import NonFiniteError, functional_training_loop

    torch.set_num_threads(args.threads)
    env = _make_env(config.env_id)
    policy = _make_policy(config, env)
    main = _is_main(replica)
    callbacks = _callbacks(args, run_dir, env, policy, compile, purge_step) if main else []
    try:
        functional_training_loop(config, env=env, policy=policy, state=state, callbacks=callbacks, compile=compile,
                                 max_iterations=args.stop_after_iterations, initial_policy=getattr(args, "initial_record", None))
    except KeyboardInterrupt:
        if main:
            print(f"functional-rl: interrupted; the last good state is checkpointed. Continue with: "
                  f"functional-rl resume {run_dir}", file=sys.stderr)
        return 130
    except _Terminated:
        if main:
            print(f"functional-rl: terminated (SIGTERM); the last good state is checkpointed. Continue with: "
                  f"functional-rl resume {run_dir}", file=sys.stderr)
        return 143
    except NonFiniteError as e:  # the config made training diverge: a bad input like any other (exit 2)
        if main:
            print(f"functional-rl: error: training diverged: {e} (last good state checkpointed in {run_dir / CHECKPOINT_DIR})",
                  file=sys.stderr)
        return 2
    except DistributedError as e:
        print(f"functional-rl: training failed: {e}", file=sys.stderr)
        return 1
    if main:
        curve = plot_learning_curves([run_dir], run_dir / CURVE_FILE, missing_ok=True)
        print(f"run dir: {run_dir}" + (f"; learning curve: {curve}" if curve else ""))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``functional-rl train``: a new run in a new (or empty) run dir, held locked while it trains."""
    from functional_rl.shell.distributed import shutdown

    config = _make_config(args)
    env = _make_env(config.env_id)  # an unknown id fails before anything is written
    _check_config(config, env)
    args.initial_record = _initial_policy(args.initial_policy, config, env)
    _check_teachers(config, env)
    replica, config = _join(config, args.argv)
    locks: list[RunDirLock] = []

    def prepare() -> str:  # rank 0 checks, creates and locks the run dir; the others get its name
        run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(config)
        created = _new_run_dir(run_dir)
        lock = _lock(run_dir)
        try:
            _refuse_foreign(run_dir, ignore=(LOCK_FILE,))  # written by another process before we locked
            _write_config(run_dir, config)
        except BaseException:
            lock.release()
            if created and not any(run_dir.iterdir()):
                run_dir.rmdir()
            raise
        locks.append(lock)
        print(f"run dir: {run_dir}", flush=True)
        return str(run_dir)

    try:
        run_dir = Path(_on_main(replica, prepare))
        return _train(args, config, run_dir, None, not args.no_compile, None, replica)
    finally:
        for lock in locks:
            lock.release()
        shutdown(replica)


def cmd_resume(args: argparse.Namespace) -> int:
    """``functional-rl resume``: continue a run from its latest checkpoint, bit for bit."""
    from functional_rl.shell.distributed import shutdown

    run_dir = _existing_run_dir(args.run_dir)
    config = _run_config(run_dir)
    if args.total_timesteps is not None:
        try:
            config = config.replace(total_timesteps=args.total_timesteps)
        except ValueError as e:
            raise UsageError(f"--total-timesteps: {e}") from e
        _check_config(config, where="--total-timesteps")
    replica, config = _join(config, args.argv)
    locks: list[RunDirLock] = []
    try:
        _on_main(replica, lambda: locks.append(_lock(run_dir)))
        path, state, metadata = _latest_state(run_dir, config)
        step, iteration = int(state.agent_step), int(state.iteration)
        main = _is_main(replica)
        if args.total_timesteps is not None:
            if iteration >= config.num_iterations:
                raise UsageError(f"--total-timesteps {args.total_timesteps} is not beyond the checkpoint's "
                                 f"{iteration} iterations ({step:,} steps) of {config.batch_size} steps each")
            if main:
                _write_config(run_dir, config)
        if iteration >= config.num_iterations:
            if main:
                print(f"run '{run_dir}' is complete at step {step:,} ({iteration} iterations); "
                      "pass --total-timesteps to train longer")
            return 0
        compile = metadata.get("compile", True) if args.compile is None else args.compile
        if main:
            dropped, unreadable = _truncate_metrics(run_dir, step)
            print(f"resuming {run_dir} from {path.name} (step {step:,}, iteration {iteration}); "
                  f"dropped {dropped} metric rows logged after it"
                  + (f" and {unreadable} unreadable lines (torn or not UTF-8)" if unreadable else ""), flush=True)
        return _train(args, config, run_dir, state, compile, step + 1, replica)
    finally:
        for lock in locks:
            lock.release()
        shutdown(replica)


def cmd_eval(args: argparse.Namespace) -> int:
    """``functional-rl eval``: greedy episodes with the latest checkpoint; prints mean ± std."""
    import torch

    import functional_rl.kernel.random as jr
    from functional_rl.shell.callbacks import eval_params, evaluate, state_policy_input

    if getattr(args, "video", None):
        from functional_rl.shell.video import cmd_eval_video
        return cmd_eval_video(args)
    args.episodes = 10 if args.episodes is None else args.episodes
    if not 1 <= args.episodes <= MAX_EPISODES:
        raise UsageError(f"--episodes must lie in [1, {MAX_EPISODES:,}], got {short(args.episodes)}")
    run_dir = _existing_run_dir(args.run_dir)
    config = _run_config(run_dir)
    path, state, _ = _latest_state(run_dir, config)
    torch.set_num_threads(args.threads)
    env = _make_env(config.env_id)
    policy = _make_policy(config, env)
    # The same key as Evaluator(seed=args.seed) at this iteration: the CLI and callback agree.
    key = jr.fold_in(jr.key(args.seed), int(state.iteration))
    returns, lengths = evaluate(key, eval_params(state), env, policy, episodes=args.episodes, **state_policy_input(state))
    r = returns.to(torch.float64)
    print(f"{config.env_id} {path.name} (step {int(state.agent_step):,}): mean return {float(r.mean()):.2f} ± "
          f"{float(r.std(correction=0)):.2f} over {len(returns)} greedy episodes "
          f"(min {float(r.min()):.2f}, max {float(r.max()):.2f}, mean length {float(lengths.double().mean()):.1f})")
    return 0


# ---------------------------------------------------------------------------- plotting
#: What ``plot --x`` puts on the x axis: the metrics.jsonl column and the axis label.
X_AXES = {"steps": ("agent_step", "agent_step (env steps)"), "time": ("wall_time", "wall time (s, compile included)")}


def _reward_curve(run_dir: Path, x: str = "steps") -> tuple[list[float], list[float]]:
    """``(x values, overview/reward)`` of a run, in step order; ``x`` is ``"steps"`` or ``"time"``."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise UsageError(f"run dir '{run_dir}' has no {METRICS_FILE}")
    by_step: dict[float, tuple[Any, float]] = {}
    for row in read_metrics(path):
        v, step = row.get(REWARD), row.get("agent_step")
        if isinstance(v, (int, float)) and isinstance(step, (int, float)) and math.isfinite(v):
            by_step[step] = (row.get("wall_time"), float(v))  # a repeated step (a resumed run) keeps the latest row
    steps = sorted(by_step)
    if x == "time":
        if any(not isinstance(by_step[s][0], (int, float)) for s in steps):
            raise UsageError(f"'{path}' has rows without wall_time (written by an older version); plot it with --x steps")
        return [float(by_step[s][0]) for s in steps], [by_step[s][1] for s in steps]
    return steps, [by_step[s][1] for s in steps]


def _env_id_of(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / CONFIG_FILE).read_text())["env_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def plot_curve_groups(groups: list[tuple[str, list[tuple[Any, Any]]]], out: str | Path, *, smooth: str = "ema:0.9",
                      xlabel: str = "agent_step", title: str = "", show_runs: bool = True) -> Path:
    """Draw groups of runs' return curves into a PNG, one colour per group.

    A group of one run: its raw curve in a faint colour and the smoothed curve
    (:func:`functional_rl.shell.curves.smooth`). A group of several runs: each run smoothed,
    put on a common grid (:func:`~functional_rl.shell.curves.align`), and their mean with a
    95% percentile bootstrap band over runs (:func:`~functional_rl.shell.curves.bootstrap_ci`,
    seed 0), labelled with the number of runs; with ``show_runs`` each smoothed run faintly too.

    Args:
        groups: ``[(label, [(x [N_r], y [N_r]), ...]), ...]``.
        out: the PNG path (its parent is created).
        smooth: ``"ema:A"``, ``"window:N"`` or ``"none"``.

    Raises:
        UsageError: a group's runs do not overlap on the x axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from functional_rl.shell.curves import align, bootstrap_ci, smooth as smoothed, smoothing_label

    how = smoothing_label(smooth)
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    try:
        for g, (label, runs) in enumerate(groups):
            colour = f"C{g % 10}"
            if len(runs) == 1:
                x, y = runs[0]
                if smooth != "none":
                    ax.plot(x, y, lw=0.8, color=colour, alpha=0.3, label=f"{label} raw" if label else "raw")
                ax.plot(x, smoothed(y, smooth), lw=1.8, color=colour, label=f"{label} ({how})" if label else how)
                continue
            try:
                grid, ys = align([(x, smoothed(y, smooth)) for x, y in runs])
            except ValueError:
                raise UsageError("the runs' metrics do not overlap on the x axis; plot them separately") from None
            if show_runs:
                for row in ys:
                    ax.plot(grid, row, lw=0.6, color=colour, alpha=0.25)
            mean, lo, hi = bootstrap_ci(ys, seed=0)
            name = f"mean of {len(runs)} runs, 95% bootstrap CI"
            ax.plot(grid, mean, lw=2, color=colour, label=f"{label}: {name}" if label else name)
            ax.fill_between(grid, lo, hi, color=colour, alpha=0.25, lw=0)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 1000 else f"{v:g}"))
        ax.set_ylabel("mean episodic return" + ("" if smooth == "none" else f" ({how})"))
        ax.set_title(title[:90])
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return out


def plot_learning_curves(run_dirs: list[str | Path], out: str | Path, missing_ok: bool = False, *,
                         smooth: str = "ema:0.9", x: str = "steps") -> Path | None:
    """Plot ``overview/reward`` of one or more run dirs into a PNG (:func:`plot_curve_groups`).

    One run: the raw curve faintly and the smoothed one. Several runs: each smoothed run
    faintly, and their mean with a 95% bootstrap confidence band over runs, on the x values
    where all runs have data (each run linearly interpolated onto the union of their x).

    Args:
        run_dirs: run directories with a ``metrics.jsonl``.
        out: the PNG path.
        missing_ok: return ``None`` instead of raising when there is nothing to plot.
        smooth: ``"ema:A"`` (default ``"ema:0.9"``), ``"window:N"`` or ``"none"``.
        x: ``"steps"`` (``agent_step``) or ``"time"`` (``wall_time``: seconds since the run
            started, compile included).

    Returns:
        ``out`` as a :class:`~pathlib.Path`, or ``None`` (see ``missing_ok``).

    Raises:
        UsageError: a run dir has no ``metrics.jsonl``, no finite reward or (``x="time"``) no
            ``wall_time``, or the runs do not overlap on the x axis.
    """
    curves = []
    for d in run_dirs:
        try:
            xs, rewards = _reward_curve(Path(d), x)
            if not xs:
                raise UsageError(f"run dir '{d}' has no finite {REWARD} in {METRICS_FILE} (no episode ended yet?)")
        except UsageError:
            if missing_ok:
                return None
            raise
        curves.append((xs, rewards))
    names = [Path(d) for d in run_dirs]
    env_ids = sorted({_env_id_of(d) for d in names})
    title = f"{', '.join(env_ids)[:60]}: " + (names[0].name if len(names) == 1 else f"{len(names)} runs")
    return plot_curve_groups([("", curves)], out, smooth=smooth, xlabel=X_AXES[x][1], title=title)


def _plot_target(out: Path) -> Path:
    """``out`` if ``plot`` may write it: not a directory, and not an existing file other than a PNG
    (a previous plot), so a user's file is never overwritten."""
    if out.is_dir():
        raise UsageError(f"--out '{out}' is a directory; give a file path such as '{out / CURVE_FILE}'")
    if out.exists():
        with open(out, "rb") as f:
            if f.read(len(PNG_MAGIC)) != PNG_MAGIC:
                raise UsageError(f"--out '{out}' exists and is not a PNG; plot overwrites only an earlier plot: "
                                 "choose another --out")
    return out


def cmd_plot(args: argparse.Namespace) -> int:
    """``functional-rl plot``: a learning-curve PNG of one run (smoothed, raw faintly), or the mean
    of several with a 95% bootstrap CI band."""
    run_dirs = [_existing_run_dir(d) for d in args.run_dirs]
    out = Path(args.out) if args.out else (run_dirs[0] / CURVE_FILE if len(run_dirs) == 1 else Path(CURVE_FILE))
    written = plot_learning_curves(run_dirs, _plot_target(out), smooth=args.smooth, x=args.x)
    for d in run_dirs:
        metrics = d / METRICS_FILE
        unreadable = _scan_metrics(metrics)[1] if metrics.is_file() else 0
        if unreadable:
            print(f"functional-rl: note: skipped {unreadable} unreadable lines (torn or not UTF-8) of '{metrics}'",
                  file=sys.stderr)
    print(f"wrote {written}")
    return 0


def vmapped_setup(args: argparse.Namespace, command: str, agents: str) -> tuple[Any, Any]:
    """The config and env of a command that vmaps agents (``pbt``, ``tune``): torch threads set
    from ``--threads``, the config checked against the env, a host-simulator env refused (a
    :class:`UsageError` naming the command and what it vmaps)."""
    import torch

    torch.set_num_threads(args.threads)
    config = _make_config(args)
    env = _make_env(config.env_id)
    _check_config(config, env)
    if not getattr(env, "is_pure", True):
        raise UsageError(f"{command} needs a pure environment (the {agents} are vmapped); {config.env_id!r} steps a host simulator")
    return config, env


def cmd_pbt(args: argparse.Namespace) -> int:
    """``functional-rl pbt``: population-based training into a new run dir."""
    from functional_rl.kernel.pbt import parse_space
    from functional_rl.shell import checkpoint
    from functional_rl.shell.policy_store import PolicyStore
    from functional_rl.shell.population import train_population

    config, env = vmapped_setup(args, "pbt", "members")
    raw = _load_config_file(args.space)
    try:
        space = parse_space(raw)
        if not space:
            raise ValueError("the space is empty: name at least one hyperparameter")
    except (ValueError, TypeError, KeyError) as e:
        raise UsageError(f"--space {short(args.space)}: {e}") from e
    if not 0 < args.fraction <= 0.5 or 2 * max(1, int(args.fraction * args.population)) > args.population:
        raise UsageError(f"--fraction {args.fraction} with --population {args.population}: the bottom and the top must "
                         "each hold at least one member and not overlap; use a fraction in (0, 0.5] and N >= 2")
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / f"pbt-{config.env_id}-{time.strftime('%Y%m%d-%H%M%S')}"
    created = _new_run_dir(run_dir)
    lock = _lock(run_dir)
    try:
        _refuse_foreign(run_dir, ignore=(LOCK_FILE,))
        _write_config(run_dir, config)
        _write_atomic(run_dir / "space.json", json.dumps(raw, indent=2) + "\n")
        print(f"run dir: {run_dir}", flush=True)
        print(f"pbt on {config.env_id}: {args.population} members x {config.total_timesteps:,} steps, exploit every "
              f"{args.exploit_every} iterations", flush=True)
        with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as metrics, (run_dir / "lineage.jsonl").open("a", encoding="utf-8") as lineage:
            def on_iteration(state, rows, entries):
                for row in rows:
                    metrics.write(json.dumps(_json_safe(row)) + "\n")
                for entry in entries:
                    lineage.write(json.dumps(_json_safe(entry)) + "\n")
                metrics.flush()
                lineage.flush()
                if rows[0]["iteration"] % 10 == 0 or rows[0]["iteration"] == config.num_iterations:
                    returns = [r["episode_return"] for r in rows if math.isfinite(r["episode_return"])]
                    best = max(returns) if returns else float("nan")
                    print(f"iteration {int(rows[0]['iteration'])}/{config.num_iterations}: best member return {best:.1f}", flush=True)

            result = train_population(config, args.population, space, exploit_every=args.exploit_every, fraction=args.fraction,
                                      seed=args.pbt_seed, env=env, compile=not args.no_compile, on_iteration=on_iteration)
        checkpoint.save(run_dir / CHECKPOINT_DIR / "population.frl", result.state, config, {"population": args.population,
                        "exploit_every": args.exploit_every})
        best = result.best
        from functional_rl.shell.batched import unstack_state
        from functional_rl.shell.callbacks import eval_params

        member = unstack_state(result.state.agents, best)
        PolicyStore(run_dir).save("best", eval_params(member), _make_policy(config, env),
                                  {"env_id": config.env_id, "agent_step": int(member.agent_step), "member": best}, env=env, overwrite=True)
        plot_population(run_dir, space)
        print(f"best member {best}; run dir: {run_dir}", flush=True)
    finally:
        lock.release()
    return 0


def _json_safe(obj: Any) -> Any:
    """Non-finite floats as strings ("nan", "inf", "-inf"): strict JSON has none."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    return obj


def plot_population(run_dir: str | Path, space: Mapping[str, Any] | None = None, out: str | Path | None = None) -> Path:
    """``pbt.png`` of a pbt run dir: every member's episode return over env steps, and below
    it every searched hyperparameter's trajectory per member (the jumps are exploit steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    names = sorted(k[len("hparam/"):] for k in rows[0] if k.startswith("hparam/")) if rows else []
    members = sorted({int(r["member"]) for r in rows})
    fig, axes = plt.subplots(1 + len(names), 1, figsize=(8, 3 * (1 + len(names))), sharex=True, squeeze=False)
    for m in members:
        mine = [r for r in rows if int(r["member"]) == m]
        steps = [r["agent_step"] for r in mine]
        axes[0][0].plot(steps, [r["episode_return"] if isinstance(r["episode_return"], float) else math.nan for r in mine], lw=0.8, label=f"member {m}")
        for k, n in enumerate(names):
            axes[1 + k][0].plot(steps, [r[f"hparam/{n}"] for r in mine], lw=0.8)
    axes[0][0].set_ylabel("episode return")
    axes[0][0].legend(fontsize="x-small", ncol=4)
    for k, n in enumerate(names):
        axes[1 + k][0].set_ylabel(n)
        dist = (space or {}).get(n)
        if getattr(dist, "log", False):
            axes[1 + k][0].set_yscale("log")
    axes[-1][0].set_xlabel("env steps per member")
    fig.tight_layout()
    target = Path(out) if out else run_dir / "pbt.png"
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


def cmd_list_envs(args: argparse.Namespace) -> int:
    """``functional-rl list-envs``: the registered environments with their spaces."""
    from functional_rl.envs import list_envs, make

    from functional_rl.envs.mettagrid import MettagridMissingError

    for env_id in list_envs(host=True):
        try:
            env = make(env_id)
        except MettagridMissingError:  # an optional extra that is not installed: say so, list the rest
            print(f"{env_id:28s} (needs the mettagrid extra: pip install \"functional-rl[mettagrid]\")")
            continue
        agents = f"  agents {env.num_agents}" if getattr(env, "num_agents", 1) > 1 else ""
        a = env.action_space
        kind = (f"Discrete({a.n})" if hasattr(a, "n") else f"MultiDiscrete{tuple(a.nvec)}" if hasattr(a, "nvec")
                else f"Box{tuple(a.shape)}")
        print(f"{env_id:28s} obs {tuple(env.observation_space.shape)}  actions {kind}{agents}")
    return 0


# ---------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {short(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {short(text)}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {short(text)}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_CHECKPOINT_EVERY_S):
        raise argparse.ArgumentTypeError(f"expected seconds > 0 and at most {MAX_CHECKPOINT_EVERY_S:g}, got {short(text)}")
    return value


def _smoothing(text: str) -> str:
    from functional_rl.shell.curves import parse_smoothing

    try:
        parse_smoothing(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text.strip().lower()


def _threads(text: str) -> int:
    value = _positive(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_THREADS} threads, got {value}")
    return value


def _episodes(text: str) -> int:
    value = _positive(text)
    if value > MAX_EPISODES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_EPISODES:,} episodes, got {value}")
    return value


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stop-after-iterations", type=_positive, dest="stop_after_iterations", metavar="K",
                   help="stop after K iterations of this call, with a final checkpoint; continue later with "
                        "`resume` (the learning-rate schedule still follows total_timesteps)")
    cadence = p.add_mutually_exclusive_group()
    cadence.add_argument("--checkpoint-every-s", type=_seconds, default=None, dest="checkpoint_every_s",
                         metavar="SECONDS", help=f"seconds between checkpoints (default {CHECKPOINT_EVERY_S:g}); "
                         "one is also written at the start, at the end, on failure, Ctrl-C and SIGTERM")
    cadence.add_argument("--checkpoint-every", type=_positive, default=None, dest="checkpoint_every", metavar="N",
                         help="iterations between checkpoints instead (e.g. 1: every iteration, the old default)")
    p.add_argument("--keep-last", type=_positive, default=3, dest="keep_last", metavar="K",
                   help="checkpoints to keep (default 3)")
    p.add_argument("--eval-every", type=_positive, default=None, dest="eval_every", metavar="N",
                   help="greedy evaluation every N iterations, logged as eval/... rows (default off)")
    p.add_argument("--eval-episodes", type=_episodes, default=10, dest="eval_episodes", metavar="E",
                   help="episodes per evaluation (default 10)")
    p.add_argument("--eval-seed", type=int, default=0, dest="eval_seed", metavar="S",
                   help="the evaluator's seed (default 0)")
    p.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto",
                   help="tqdm bar, log lines or nothing (default: a bar on a terminal, else log lines)")
    p.add_argument("--log-every", type=_positive, default=10, metavar="N", help="iterations between log lines")
    p.add_argument("--threads", type=_threads, default=1, metavar="T",
                   help="torch intra-op threads (default 1: fastest for small nets)")


def build_parser() -> argparse.ArgumentParser:
    """The ``functional-rl`` argument parser (sub-commands train, resume, eval, plot, pbt, list-envs)."""
    parser = _Parser(prog="functional-rl", description="Train, resume, evaluate and plot PPO runs of functional_rl.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train an agent on a registered environment into a run dir",
                           description="Train PPO on ENV_ID. Writes config.json, metrics.jsonl, checkpoints/, "
                                       "tensorboard/ and learning_curve.png into the run dir.")
    train.add_argument("env_id", help="environment id, see `functional-rl list-envs`")
    train.add_argument("--config", metavar="FILE", help="a .toml or .json file of PPOConfig fields")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable); NAME.schedule=SPEC schedules a hyperparameter, e.g. ent_coef.schedule=cosine:end=0")
    train.add_argument("--total-timesteps", type=_positive, dest="total_timesteps", metavar="N",
                       help="environment steps to train for (summed over envs)")
    train.add_argument("--seed", type=int, metavar="S", help="the run's seed")
    train.add_argument("--run-dir", dest="run_dir",
                       help="the run directory (default runs/{env_id}-{seed}-{YYYYmmdd-HHMMSS})")
    train.add_argument("--no-compile", action="store_true", help="run eagerly (no torch.compile)")
    train.add_argument("--initial-policy", dest="initial_policy", metavar="URI",
                       help="start from a stored policy's parameters: a policy record's name, path or file:// URI")
    _add_run_options(train)
    train.set_defaults(func=cmd_train)

    resume = sub.add_parser("resume", help="continue a run from its latest checkpoint",
                            description="Continue RUN_DIR from its latest checkpoint, exactly as if it had not "
                                        "stopped, appending to its metrics and checkpoints.")
    resume.add_argument("run_dir", help="a run directory written by `train`")
    resume.add_argument("--total-timesteps", type=_positive, dest="total_timesteps", metavar="N",
                        help="a new total (rewrites config.json; changes the learning-rate schedule if annealed)")
    mode = resume.add_mutually_exclusive_group()
    mode.add_argument("--compile", action="store_true", default=None, dest="compile",
                      help="torch.compile (default: the mode the checkpoint was trained in)")
    mode.add_argument("--no-compile", action="store_false", default=None, dest="compile", help="run eagerly")
    _add_run_options(resume)
    resume.set_defaults(func=cmd_resume)

    ev = sub.add_parser("eval", help="greedy episodes with a run's latest checkpoint",
                        description="Run greedy (mode-action) episodes with the latest checkpoint of RUN_DIR "
                                    "and print the mean ± std return.")
    ev.add_argument("run_dir")
    ev.add_argument("--episodes", type=int, default=None, metavar="N", help="episodes, run in parallel (default 10; 1 with --video)")
    ev.add_argument("--seed", type=int, default=0, metavar="S",
                    help="evaluation seed (default 0; the same key as Evaluator(seed=S) at that iteration)")
    ev.add_argument("--threads", type=_threads, default=1, metavar="T", help="torch intra-op threads")
    from functional_rl.shell import video
    video.add_eval_options(ev)
    ev.set_defaults(func=cmd_eval)

    plot = sub.add_parser("plot", help="learning-curve PNG of one or more run dirs",
                          description="Plot overview/reward against agent_step or wall time. One run: smoothed, with "
                                      "the raw curve faintly. Several run dirs: their mean with a 95% bootstrap "
                                      "confidence band over runs.")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--out", metavar="FILE", help="the PNG (default RUN_DIR/learning_curve.png for one run, "
                                    "./learning_curve.png for several)")
    plot.add_argument("--smooth", type=_smoothing, default="ema:0.9", metavar="ema:A|window:N|none",
                      help="smoothing of each curve: debiased EMA of weight A, trailing mean of N points, or none (default ema:0.9)")
    plot.add_argument("--x", choices=tuple(X_AXES), default="steps", help="x axis: env steps or wall-clock seconds (default steps)")
    plot.set_defaults(func=cmd_plot)

    pbt = sub.add_parser("pbt", help="population-based training of N vmapped members in one process",
                         description="Population-based training on ENV_ID: N members train as vmapped agents; every K "
                                     "iterations the bottom fraction copies a top member's learner and perturbs its "
                                     "searched hyperparameters. Writes config.json, space.json, metrics.jsonl (a row per "
                                     "member and iteration), lineage.jsonl, checkpoints/population.frl, best.frl (the best "
                                     "member's policy record) and pbt.png into the run dir.")
    pbt.add_argument("env_id", help="environment id (a pure env), see `functional-rl list-envs`")
    pbt.add_argument("--population", type=_positive, required=True, metavar="N", help="members")
    pbt.add_argument("--exploit-every", type=_positive, required=True, dest="exploit_every", metavar="K",
                     help="iterations between exploit steps (the scores are mean returns over them)")
    pbt.add_argument("--space", required=True, metavar="FILE",
                     help='a .json or .toml file {name: [low, high] | {low, high, log} | {choices: [...]}}, e.g. docs/pbt_space_cartpole.toml')
    pbt.add_argument("--fraction", type=float, default=0.25, help="bottom and top share of the population (default 0.25)")
    pbt.add_argument("--pbt-seed", type=int, default=0, dest="pbt_seed", metavar="S", help="seed of the starting values and the exploit/explore draws")
    pbt.add_argument("--config", metavar="FILE", help="a .toml or .json file of PPOConfig fields")
    pbt.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    pbt.add_argument("--total-timesteps", type=_positive, dest="total_timesteps", metavar="N", help="env steps per member")
    pbt.add_argument("--seed", type=int, metavar="S", help="member i trains with seed S + i")
    pbt.add_argument("--run-dir", dest="run_dir", help="the run directory (default runs/pbt-{env_id}-{YYYYmmdd-HHMMSS})")
    pbt.add_argument("--no-compile", action="store_true", help="run eagerly (no torch.compile)")
    pbt.add_argument("--threads", type=_threads, default=1, metavar="T", help="torch intra-op threads")
    pbt.set_defaults(func=cmd_pbt)

    from functional_rl.shell import sweep

    sweep.add_parser(sub)
    from functional_rl.shell import export

    export.add_parser(sub)
    from functional_rl.shell import tune

    tune.add_parser(sub)

    envs = sub.add_parser("list-envs", help="list the registered pure environments")
    envs.set_defaults(func=cmd_list_envs)
    return parser


_FS_ADVICE = {
    errno.EACCES: "permission denied: check its permissions or choose another location",
    errno.EPERM: "operation not permitted: check its permissions or choose another location",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.ENOTDIR: "a part of the path is a file, not a directory: move that file away or choose another path",
    errno.EISDIR: "it is a directory, not a file: give a file path",
    errno.EEXIST: "it already exists: choose another path",
    errno.ENOENT: "it does not exist: check the path",
    errno.ENOTEMPTY: "the directory is not empty: choose another path",
    errno.ENOSPC: "no space left on the device: free some space or choose another location",
    errno.EDQUOT: "the disk quota is exceeded: free some space or choose another location",
    errno.ENAMETOOLONG: "the name is too long: use a shorter path",
    errno.ELOOP: "too many levels of symbolic links: check the path",
}


def _os_error_message(e: OSError) -> str:
    """One line for a failed file operation: the path(s), what went wrong and what to do."""
    paths = " -> ".join(short(os.fsdecode(p) if isinstance(p, bytes) else str(p), 300)
                        for p in (e.filename, e.filename2) if p is not None)
    advice = _FS_ADVICE.get(e.errno, f"{e.strerror or type(e).__name__}: check the path and try again")
    return f"cannot use {paths}: {advice}"


def _one_line(message: str) -> str:
    """The message on one line, at most MAX_MESSAGE characters."""
    text = " | ".join(part.strip() for part in message.splitlines() if part.strip()) or "unknown error"
    return text if len(text) <= MAX_MESSAGE else f"{text[:MAX_MESSAGE]}... ({len(text):,} chars)"


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """In the main thread, SIGTERM raises _Terminated (so locks are released and the last good
    state is saved) instead of ending the process at once; the previous handler is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    A user error (bad argument, config or run dir) and a failed file operation (a path that is
    a file, unwritable, read-only, ...) print one line ``functional-rl: error: ...`` of at most
    ``MAX_MESSAGE`` characters on stderr and return 2; SIGTERM returns 143 after the cleanup.
    """
    parser = build_parser()
    try:
        with _sigterm_raises():
            args = parser.parse_args(argv)
            args.argv = list(sys.argv[1:] if argv is None else argv)
            return args.func(args)
    except UsageError as e:
        message = str(e)
    except OSError as e:
        if e.filename is None:  # not a file operation: not a user error, let it surface
            raise
        message = _os_error_message(e)
    except _Terminated:
        print("functional-rl: terminated (SIGTERM)", file=sys.stderr)
        return 143
    print(f"functional-rl: error: {_one_line(message)}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
