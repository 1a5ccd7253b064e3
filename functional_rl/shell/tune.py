"""``functional-rl tune``: hyperparameter search with Optuna (TPE sampler, median pruner).

A *study* lives in an Optuna RDB storage: by default an SQLite file
``runs/tune-NAME/study.db`` (embedded, nothing to start); ``--storage postgresql://...`` (any
Optuna RDB URL) lets processes on several machines work on one study. Every worker runs::

    while the study holds fewer than N counted trials:
        ask Optuna for a point (TPE, seeded by the trial's number)
        train K seeds of it at once with train_many, reporting the mean return 10 times
        stop early when the median pruner says so; tell Optuna the result

*Counted* trials are the complete, pruned and running ones and those that failed in training
(diverged, invalid combination of sizes); a trial whose worker died (its heartbeat stopped)
is marked failed by the next worker that looks, is not counted, and is retried once as a new
trial. So ``--trials N`` is the study's total over all its workers: two processes with
``--trials 4`` run 4 trials between them. On SQLite the count-then-ask step holds a file lock,
so no worker ever starts an extra trial; on a server database a worker that loses the race
marks its extra trial failed (user attribute ``over_budget``) without training it.

The objective of a trial is the mean over its K seeds of the mean episodic return over the
last tenth of training (the last report window): the final policy's return, with the noise
of single episodes averaged out. The intermediate values the pruner sees are the same
quantity over each tenth, reported at steps 1..10 (tenths of the budget, so trials that
search ``num_steps`` or ``num_envs`` still compare at the same point of training).

Written into the study dir (``--run-dir``, default ``runs/tune-NAME``)::

    study.db              the SQLite storage (default storage only)
    study.json            which study (name, storage) the dir belongs to: another is refused
    trial-NNNN/           config.json, metrics.jsonl (one row per seed and iteration), result.json
    best_config.json      the best complete trial's config, for `functional-rl train --config`
    best_trial.json       its number, value and searched values

Example (a space from plain values, validated against the base config):
    >>> from functional_rl.kernel.config import PPOConfig
    >>> space = load_space_dict({"learning_rate": [1e-4, 1e-2], "num_minibatches": {"choices": [2, 4]}}, PPOConfig())
    >>> sorted(space), space["learning_rate"].log
    (['learning_rate', 'num_minibatches'], True)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from functional_rl.kernel.config import HYPERPARAM_NAMES, PPOConfig
from functional_rl.kernel.pbt import Choices, Range, parse_space
from functional_rl.shell.validate import short

__all__ = ["SEARCHABLE", "DEFAULT_SPACE", "load_space_dict", "load_space_file", "tune", "TuneResult",
           "add_parser", "cmd_tune"]

#: Integer ``PPOConfig`` fields a space may search (Optuna's ``suggest_int``; they change shapes,
#: so each trial builds its own kernel).
INT_FIELDS = ("num_envs", "num_steps", "num_minibatches", "update_epochs", "schedule_free_warmup_steps", "kickstart_steps")
#: Every key a search space may hold.
SEARCHABLE = HYPERPARAM_NAMES + ("adam_eps",) + INT_FIELDS
#: The space used without ``--space`` (the same as docs/tune_space_cartpole.toml).
DEFAULT_SPACE: dict[str, Any] = {
    "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    "ent_coef": {"low": 0.0, "high": 0.05},
    "clip_coef": {"low": 0.1, "high": 0.3},
    "gae_lambda": {"low": 0.8, "high": 0.99},
    "gamma": {"choices": [0.98, 0.99, 0.995]},
    "num_minibatches": {"choices": [1, 2, 4, 8]},
    "update_epochs": [2, 8],
}
#: Intermediate reports per trial (the pruner's steps are 1..REPORTS).
REPORTS = 10
#: Seconds between a running trial's heartbeats by default (Optuna marks it failed after 2x).
HEARTBEAT_S = 30


class TuneError(ValueError):
    """A bad search space, storage or study setup; the message says what to change."""


# ---------------------------------------------------------------------------- the space
def load_space_dict(raw: Mapping[str, Any], base: PPOConfig) -> dict[str, Range | Choices]:
    """A search space from plain values (:func:`~functional_rl.kernel.pbt.parse_space`'s
    forms: ``[low, high]``, ``{low, high, log}``, ``{choices: [...]}``), checked against
    ``base``: keys are :data:`SEARCHABLE` fields, integer fields take integer ends and choices,
    and every end and choice must make a valid config on its own.

    Raises:
        TuneError: an empty space, an unknown key (with a did-you-mean), a malformed entry, a
            value the config refuses (named with the field's rule).

    Example:
        >>> load_space_dict({"num_minibatches": {"choices": [3]}}, PPOConfig())
        Traceback (most recent call last):
        ...
        functional_rl.shell.tune.TuneError: search space for 'num_minibatches': the value 3 is invalid: PPOConfig.num_minibatches=3 is invalid: must divide num_steps = 128 (each minibatch takes num_steps / num_minibatches steps of every env)
    """
    if not isinstance(raw, Mapping) or not raw:
        raise TuneError("the search space is empty: name at least one hyperparameter, e.g. learning_rate = [1e-4, 1e-2]")
    try:
        space = parse_space(raw, names=SEARCHABLE)
    except (ValueError, TypeError) as e:
        raise TuneError(str(e)) from e
    for name, dist in space.items():
        values = dist.values if isinstance(dist, Choices) else (dist.low, dist.high)
        for v in values:
            if name in INT_FIELDS and v != int(v):
                raise TuneError(f"search space for {name!r}: it is an integer field, got {v!r}")
            try:
                base.replace(**{name: int(v) if name in INT_FIELDS else v})
            except (ValueError, TypeError) as e:
                raise TuneError(f"search space for {name!r}: the value {v:g} is invalid: {e}") from e
    return space


def load_space_file(path: str | Path, base: PPOConfig) -> tuple[dict[str, Any], dict[str, Range | Choices]]:
    """``(raw, space)`` from a ``.toml``, ``.json`` or ``.yaml``/``.yml`` file (see
    :func:`load_space_dict`)."""
    p = Path(path)
    if not p.is_file():
        raise TuneError(f"space file {short(str(path))} does not exist or is not a file")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".toml":
            import tomllib

            raw = tomllib.loads(text)
        elif p.suffix == ".json":
            raw = json.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raise TuneError(f"space file {short(str(path))}: use a .toml, .json or .yaml file")
    except TuneError:
        raise
    except Exception as e:  # TOMLDecodeError, JSONDecodeError, yaml.YAMLError: a file the user can fix
        raise TuneError(f"space file {short(str(path))} is not valid {p.suffix[1:].upper()}: {short(str(e), 300)}") from e
    if not isinstance(raw, dict):
        raise TuneError(f"space file {short(str(path))} must hold a table of hyperparameter: range entries")
    try:
        return raw, load_space_dict(raw, base)
    except TuneError as e:
        raise TuneError(f"space file {short(str(path))}: {e}") from e


def suggest(trial: Any, space: Mapping[str, Range | Choices]) -> dict[str, Any]:
    """The trial's point: ``suggest_int`` / ``suggest_float`` for a range, ``suggest_categorical``
    for choices (integers for integer fields)."""
    point: dict[str, Any] = {}
    for name, dist in space.items():
        if isinstance(dist, Choices):
            values = [int(v) if name in INT_FIELDS else v for v in dist.values]
            point[name] = trial.suggest_categorical(name, values)
        elif name in INT_FIELDS:
            point[name] = trial.suggest_int(name, int(dist.low), int(dist.high), log=dist.log)
        else:
            point[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return point


# ---------------------------------------------------------------------------- Optuna pieces
def _optuna():
    try:
        import optuna
    except ImportError as e:
        raise TuneError("tune needs Optuna: pip install 'functional-rl[tune]' (or pip install optuna)") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_sampler(seed: int, startup_trials: int = 5):
    """A TPE sampler whose random stream for trial ``n`` is seeded by ``(seed, n)``: one
    worker's search is reproducible given ``seed``, and workers running side by side never
    draw the same random point (their trials have different numbers)."""
    optuna = _optuna()

    class TrialSeededTPE(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._number, self._tpe = None, None

        def _for(self, trial):
            if trial.number != self._number:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._tpe = optuna.samplers.TPESampler(n_startup_trials=startup_trials, constant_liar=True,
                                                           seed=(seed * 1_000_003 + trial.number) % 2**32)
                self._number = trial.number
            return self._tpe

        def infer_relative_search_space(self, study, trial):
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial):
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self._for(trial).after_trial(study, trial, state, values)

    return TrialSeededTPE()


def make_storage(url: str, heartbeat_s: int):
    """An Optuna ``RDBStorage`` with heartbeats: a running trial whose worker stops beating for
    ``2 * heartbeat_s`` seconds is marked failed by the next worker and retried once."""
    optuna = _optuna()
    import inspect

    import optuna.storages as storages

    # Optuna 4.9+ names the hook heartbeat_stale_trial_callback (RetryHeartbeatStaleTrialCallback);
    # older versions failed_trial_callback (RetryFailedTrialCallback).
    RDBStorage = storages.RDBStorage
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if "heartbeat_stale_trial_callback" in inspect.signature(RDBStorage).parameters and hasattr(storages, "RetryHeartbeatStaleTrialCallback"):
                hook, retry = "heartbeat_stale_trial_callback", storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
            else:
                hook, retry = "failed_trial_callback", storages.RetryFailedTrialCallback(max_retry=1)
            return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                              **{hook: retry})
    except ImportError as e:
        raise TuneError(f"--storage {short(url)}: its database driver is not installed ({e}); e.g. pip install psycopg2-binary for postgresql://") from e
    except Exception as e:  # sqlalchemy's ArgumentError/OperationalError: a URL or server the user can fix
        raise TuneError(f"--storage {short(url)}: cannot open it as an Optuna RDB storage: {short(str(e), 300)}") from e


def _counted(trial) -> bool:
    """Whether a trial uses up the study's budget (see the module docstring)."""
    state = trial.state.name
    return state in ("COMPLETE", "PRUNED", "RUNNING") or (state == "FAIL" and "fail_reason" in trial.user_attrs)


@contextlib.contextmanager
def _ask_lock(url: str) -> Iterator[None]:
    """An exclusive file lock beside an SQLite study (nothing for a server database)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix + ":memory:":
        yield
        return
    with open(url[len(prefix):] + ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Heartbeat:
    """Records a running trial's heartbeat every ``interval`` seconds in a daemon thread."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self._stop = threading.Event()
        storage.record_heartbeat(trial_id)
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, interval), daemon=True)
        self._thread.start()

    def _beat(self, storage: Any, trial_id: int, interval: float) -> None:
        while not self._stop.wait(interval):
            storage.record_heartbeat(trial_id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------- one trial
class _Reporter:
    """The ``train_many`` callback of a trial: writes every agent's row to metrics.jsonl and,
    at each tenth of the run, reports the mean over seeds of the window's mean episodic return
    to Optuna, raising ``optuna.TrialPruned`` when the pruner says so."""

    def __init__(self, trial: Any, config: PPOConfig, agents: int, metrics: Any, pruned: type) -> None:
        self.trial, self.config, self.agents, self.metrics, self.pruned = trial, config, agents, metrics, pruned
        self.window: list[list[float]] = [[] for _ in range(agents)]
        self.reported, self.values = 0, []

    def on_iteration(self, state: Any, row: dict[str, Any]) -> None:
        from functional_rl.shell.cli import _json_safe

        self.metrics.write(json.dumps(_json_safe(dict(row))) + "\n")
        a = int(row["agent"])
        if math.isfinite(row["episode_return"]):
            self.window[a].append(row["episode_return"])
        if a != self.agents - 1:
            return
        self.metrics.flush()
        step = REPORTS * int(row["iteration"]) // self.config.num_iterations
        if step <= self.reported:
            return
        value = window_mean(self.window)
        self.window = [[] for _ in range(self.agents)]
        self.reported = step
        if math.isfinite(value):
            self.values.append((step, value))
            self.trial.report(value, step)
            if self.trial.should_prune():
                raise self.pruned(f"pruned at {step}/{REPORTS} of the budget with mean return {value:.1f}")


def window_mean(window: Sequence[Sequence[float]]) -> float:
    """The mean over agents of each agent's mean return in a window (agents without a finished
    episode are left out; NaN if none has one).

    Example:
        >>> window_mean([[10.0, 20.0], [30.0], []])
        22.5
    """
    means = [sum(w) / len(w) for w in window if w]
    return sum(means) / len(means) if means else math.nan


def _write_json(path: Path, data: Any) -> None:
    """Atomic write (a temporary file of this process, then a rename): workers may race."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _run_trial(optuna: Any, trial: Any, base: PPOConfig, space: Mapping[str, Range | Choices], seeds: Sequence[int],
               env: Any, compile: bool, trial_dir: Path) -> tuple[str, float, str]:
    """Train one trial; ``(state name, value, note)``."""
    from functional_rl.shell.cli import _write_config
    from functional_rl.shell.loop import NonFiniteError, train_many

    point = suggest(trial, space)
    try:
        config = base.replace(**point)
    except (ValueError, TypeError) as e:
        return "FAIL", math.nan, f"invalid point: {e}"
    trial.set_user_attr("config", config.to_dict())
    trial.set_user_attr("seeds", list(seeds))
    trial_dir.mkdir(parents=True, exist_ok=True)
    _write_config(trial_dir, config)
    with (trial_dir / "metrics.jsonl").open("w", encoding="utf-8") as metrics:
        reporter = _Reporter(trial, config, len(seeds), metrics, optuna.TrialPruned)
        try:
            train_many(config, seeds, env=env, compile=compile, callbacks=[reporter])
        except optuna.TrialPruned as e:
            return "PRUNED", reporter.values[-1][1] if reporter.values else math.nan, str(e)
        except NonFiniteError as e:
            return "FAIL", math.nan, f"diverged: {short(str(e), 300)}"
    value = reporter.values[-1][1] if reporter.values and reporter.values[-1][0] == REPORTS else math.nan
    if not math.isfinite(value):
        return "FAIL", math.nan, "no episode ended in the last tenth of training; raise --total-timesteps"
    return "COMPLETE", value, ""


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """What :func:`tune` leaves: the study, the trials this worker ran, the best complete
    trial (``None`` if none) and the best config (a ``PPOConfig``, ``None`` if none)."""

    study: Any
    ran: list[int]
    best_number: int | None
    best_value: float | None
    best_config: PPOConfig | None


def tune(
    base: PPOConfig,
    space: Mapping[str, Range | Choices],
    *,
    study_name: str,
    trials: int,
    run_dir: str | Path,
    storage: str | None = None,
    seeds: int = 1,
    compile: bool = False,
    sampler_seed: int = 0,
    startup_trials: int = 5,
    warmup_reports: int = 3,
    heartbeat_s: int = HEARTBEAT_S,
    enqueue: Sequence[Mapping[str, Any]] = (),
    setup: Mapping[str, Any] | None = None,
    log: Any = print,
) -> TuneResult:
    """Join (or create) ``study_name`` and run trials until it holds ``trials`` counted trials.

    Args:
        base: the config every trial starts from (``total_timesteps`` is the trial's budget).
        space: :func:`load_space_dict`'s output.
        study_name, storage: the study and its Optuna RDB URL (default: SQLite
            ``run_dir/study.db``).
        trials: the study's total trial budget, over all workers.
        run_dir: where ``trial-NNNN/``, ``best_config.json`` and ``best_trial.json`` go.
        seeds: K; trial seeds are ``base.seed .. base.seed + K - 1``, trained at once by
            :func:`~functional_rl.shell.loop.train_many`.
        compile: torch.compile the trials' kernels.
        sampler_seed: seed of the TPE sampler (combined with each trial's number).
        startup_trials: complete trials before TPE models the space and before the median
            pruner prunes.
        warmup_reports: the pruner never prunes before this many tenths of the budget.
        heartbeat_s: seconds between a running trial's heartbeats.
        enqueue: points to try first (``study.enqueue_trial``; ignored if the study exists).
        setup: what defines the study (env, budget, space...): stored in a new study and
            compared with an existing one, which must match.
        log: where progress lines go.

    Raises:
        TuneError: bad storage, a study set up differently.
    """
    optuna = _optuna()
    from functional_rl.shell.build import resolve_env_policy

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"
    _claim_run_dir(run_dir, study_name, storage)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_reports)
    with _ask_lock(url):  # the first worker creates the tables; the others wait for it
        rdb = make_storage(url, heartbeat_s)
        study = optuna.create_study(study_name=study_name, storage=rdb, direction="maximize", load_if_exists=True,
                                    sampler=make_sampler(sampler_seed, startup_trials), pruner=pruner)
        setup = json.loads(json.dumps(dict(setup or {})))
        if "setup" not in study.user_attrs:
            study.set_user_attr("setup", setup)
            for point in enqueue:
                study.enqueue_trial(dict(point), skip_if_exists=True)
        elif study.user_attrs["setup"] != setup:
            raise TuneError(f"study {study_name!r} in {short(url)} was set up otherwise: "
                            f"{_setup_diff(study.user_attrs['setup'], setup)}; give the same options or another --study")
    env, _ = resolve_env_policy(base, None, None)
    seed_list = [base.seed + i for i in range(seeds)]
    ran: list[int] = []
    while True:
        with _ask_lock(url), warnings.catch_warnings():
            # This loop records heartbeats itself (_Heartbeat), which Optuna's ask() cannot know.
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
            all_trials = study.get_trials(deepcopy=False)
            counted = sum(_counted(t) for t in all_trials)
            running = sum(t.state.name == "RUNNING" for t in all_trials)
            trial = study.ask() if counted < trials else None
            # the first heartbeat under the lock: a trial is never RUNNING without one for long
            beat = None if trial is None else _Heartbeat(rdb, trial._trial_id, heartbeat_s)
        if trial is None:
            if running == 0:
                break
            time.sleep(min(heartbeat_s, 2))  # wait: a running trial of a dead worker is retried here
            continue
        if sum(_counted(t) for t in study.get_trials(deepcopy=False) if t.number < trial.number) >= trials:
            beat.stop()
            trial.set_user_attr("over_budget", True)  # lost the count-then-ask race (server DB): not trained
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        t0 = time.perf_counter()
        try:
            trial_dir = run_dir / f"trial-{trial.number:04d}"
            state, value, note = _run_trial(optuna, trial, base, space, seed_list, env, compile, trial_dir)
        except BaseException as e:  # Ctrl-C, SIGTERM, a bug: the trial ends failed (not counted), then it surfaces
            beat.stop()
            trial.set_user_attr("interrupted", type(e).__name__)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        finally:
            beat.stop()
        seconds = time.perf_counter() - t0
        if state == "FAIL":
            trial.set_user_attr("fail_reason", note)
        trial.set_user_attr("seconds", seconds)
        study.tell(trial, value if state == "COMPLETE" else None, state=getattr(optuna.trial.TrialState, state))
        ran.append(trial.number)
        _write_json(trial_dir / "result.json", {"number": trial.number, "state": state, "value": value if math.isfinite(value) else None,
                                                "params": trial.params, "seconds": round(seconds, 3), "note": note})
        log(f"trial {trial.number}: {state.lower()} {'' if not math.isfinite(value) else f'{value:.1f} '}"
            f"in {seconds:.1f} s ({_format_params(trial.params)}){'; ' + note if note else ''}")
        write_best(study, run_dir)
    best = write_best(study, run_dir)
    if best is None:
        return TuneResult(study, ran, None, None, None)
    return TuneResult(study, ran, best.number, best.value, PPOConfig.from_dict(_config_dict(best.user_attrs["config"])))


def _claim_run_dir(run_dir: Path, study_name: str, storage: str | None) -> None:
    """Record in ``run_dir/study.json`` which study writes its trial dirs there, and refuse
    another study (its trial-NNNN dirs would mix with this one's)."""
    import re

    mine = {"study": study_name, "storage": "sqlite file in this dir" if storage is None else re.sub(r"://[^@/]*@", "://***@", storage)}
    path = run_dir / "study.json"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        try:
            theirs = json.loads(path.read_text(encoding="utf-8") or "null")
        except ValueError:
            theirs = None
        if theirs is not None and theirs != mine:  # None: being written by a worker starting right now
            raise TuneError(f"study dir '{run_dir}' belongs to study {short(theirs.get('study') if isinstance(theirs, dict) else theirs)} "
                            f"({short(theirs.get('storage') if isinstance(theirs, dict) else None)}); give another --run-dir "
                            "or the same --study and --storage") from None
        return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(mine) + "\n")


def _setup_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """What differs between a study's stored setup and this worker's, field by field.

    Example:
        >>> _setup_diff({"seeds": 2, "base": {"total_timesteps": 640}}, {"seeds": 2, "base": {"total_timesteps": 1280}})
        'total_timesteps is 1280 here, 640 in the study'
    """
    flat = [({**o.get("base", {}), **{k: v for k, v in o.items() if k != "base"}}) for o in (old, new)]
    keys = sorted(k for k in set(flat[0]) | set(flat[1]) if flat[0].get(k) != flat[1].get(k))
    return ", ".join(f"{k} is {short(flat[1].get(k), 80)} here, {short(flat[0].get(k), 80)} in the study" for k in keys)


def _config_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config dict with its lists back as the tuples ``PPOConfig`` holds."""
    return {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v for k, v in d.items()}


def write_best(study: Any, run_dir: Path) -> Any:
    """Write ``best_config.json`` and ``best_trial.json`` of the best complete trial; return it
    (``None`` while no trial is complete)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and "config" in t.user_attrs]
    if not complete:
        return None
    best = max(complete, key=lambda t: (t.value, -t.number))
    _write_json(run_dir / "best_config.json", best.user_attrs["config"])
    _write_json(run_dir / "best_trial.json", {"number": best.number, "value": best.value, "params": best.params,
                                              "seeds": best.user_attrs.get("seeds")})
    return best


def _format_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def summary_table(study: Any) -> str:
    """One line per trial of the study: number, state, value, seconds, searched values."""
    rows = [f"{'trial':>5}  {'state':8}  {'value':>8}  {'seconds':>7}  params"]
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        value = f"{t.value:8.1f}" if t.value is not None else (
            f"{max(t.intermediate_values.items())[1]:7.1f}*" if t.intermediate_values else f"{'-':>8}")
        seconds = t.user_attrs.get("seconds")
        note = (" (over budget)" if t.user_attrs.get("over_budget") else f" (interrupted: {t.user_attrs['interrupted']})"
                if "interrupted" in t.user_attrs else f" ({t.user_attrs['fail_reason']})" if "fail_reason" in t.user_attrs
                else " (worker lost)" if t.state.name == "FAIL" else "")
        seconds = "-" if seconds is None else f"{seconds:.1f}"
        rows.append(f"{t.number:>5}  {t.state.name.lower():8}  {value}  {seconds:>7}  "
                    f"{_format_params(t.params)}{note}")
    return "\n".join(rows)


# ---------------------------------------------------------------------------- the CLI
def add_parser(sub: Any) -> None:
    """Register ``functional-rl tune`` on the CLI's subparsers."""
    from functional_rl.shell.cli import _positive, _threads

    p = sub.add_parser("tune", help="hyperparameter search with Optuna (TPE, median pruner), one or many workers",
                       description="Search hyperparameters on ENV_ID with Optuna. The study lives in an SQLite file in "
                                   "the study dir (default runs/tune-NAME/study.db) or in --storage; run the same command "
                                   "in several processes to share the work. Writes trial-NNNN/ per trial and "
                                   "best_config.json (for `functional-rl train --config`).")
    p.add_argument("env_id", help="environment id (a pure env), see `functional-rl list-envs`")
    p.add_argument("--trials", type=_positive, required=True, metavar="N", help="trials in the study in total, over all workers")
    p.add_argument("--study", required=True, metavar="NAME", help="the study's name (workers with the same name and storage share it)")
    p.add_argument("--storage", metavar="URL", help="an Optuna RDB URL, e.g. postgresql://user:pw@host/db (default sqlite:///RUN_DIR/study.db)")
    p.add_argument("--space", metavar="FILE", help="a .toml, .json or .yaml search space, e.g. docs/tune_space_cartpole.toml "
                                                   "(default: that file's space)")
    p.add_argument("--seeds", type=_positive, default=1, metavar="K", help="seeds per trial, trained at once (default 1)")
    p.add_argument("--config", metavar="FILE", help="a .toml or .json file of PPOConfig fields: the base config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a base config field (repeatable)")
    p.add_argument("--total-timesteps", type=_positive, dest="total_timesteps", metavar="N", help="env steps per seed and trial")
    p.add_argument("--seed", type=int, metavar="S", help="trial seeds are S .. S+K-1 (default: the config's seed)")
    p.add_argument("--run-dir", dest="run_dir", help="the study dir (default runs/tune-NAME)")
    p.add_argument("--no-compile", action="store_true", help="run eagerly (no torch.compile)")
    p.add_argument("--sampler-seed", type=int, default=0, dest="sampler_seed", metavar="S", help="the TPE sampler's seed (default 0)")
    p.add_argument("--startup-trials", type=int, default=5, dest="startup_trials", metavar="N",
                   help="complete trials before TPE models the space and the median pruner prunes (default 5)")
    p.add_argument("--heartbeat", type=_positive, default=HEARTBEAT_S, metavar="SECONDS",
                   help=f"seconds between a running trial's heartbeats; a worker silent for twice that is taken as dead (default {HEARTBEAT_S})")
    p.add_argument("--threads", type=_threads, default=1, metavar="T", help="torch intra-op threads")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    """``functional-rl tune``: run trials of a study until it holds ``--trials`` of them."""
    from functional_rl.shell.cli import UsageError, vmapped_setup

    config, env = vmapped_setup(args, "tune", "seeds")
    if args.startup_trials < 0:
        raise UsageError(f"--startup-trials must be >= 0, got {args.startup_trials}")
    try:
        raw, space = load_space_file(args.space, config) if args.space else (DEFAULT_SPACE, load_space_dict(DEFAULT_SPACE, config))
        run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / f"tune-{args.study}"
        setup = {"env_id": config.env_id, "base": {k: v for k, v in config.to_dict().items() if k not in space},
                 "space": raw, "seeds": args.seeds}
        print(f"study {args.study!r}: {args.trials} trials in total, {args.seeds} seed(s) x {config.total_timesteps:,} steps "
              f"each; study dir {run_dir}", flush=True)
        result = tune(config, space, study_name=args.study, trials=args.trials, run_dir=run_dir, storage=args.storage,
                      seeds=args.seeds, compile=not args.no_compile, sampler_seed=args.sampler_seed,
                      startup_trials=args.startup_trials, heartbeat_s=args.heartbeat, setup=setup,
                      log=lambda line: print(line, flush=True))
    except TuneError as e:
        raise UsageError(str(e)) from e
    print(summary_table(result.study))
    if result.best_number is None:
        print("no trial completed; no best config written")
        return 0
    print(f"best: trial {result.best_number} with mean return {result.best_value:.1f}; "
          f"config: {run_dir / 'best_config.json'} (functional-rl train {config.env_id} --config {run_dir / 'best_config.json'})")
    return 0
