"""Fuzzing the CLI in process: generated argument lists, config files and run-dir states.

Every call of ``main(argv)`` must end in exit 0 or 2 (or 1 with the loop's one-line "training
failed: ... is inf/nan" when a valid but absurd hyperparameter diverges); on 2 with one bounded line
``functional-rl: error: ...`` on stderr; never with an exception (a traceback); and it must
not change any file outside the run dir it owns, nor a foreign file inside it. Most cases
fail validation at once; the few valid ones train one tiny eager iteration.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functional_rl.shell.cli import MAX_MESSAGE, main
from functional_rl.shell.rundir import RunDirLock

MAX_LINE = MAX_MESSAGE + 100  # the prefix and the "... (N chars)" tail
FUZZ = settings(max_examples=150, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ENVS = ["CartPole-v1", "Pendulum-v1", "Probe1-v0", "CartPol-v1", "", "x" * 3000, "../CartPole-v1"]
TINY = {"num_envs": 2, "num_steps": 32, "num_minibatches": 2, "update_epochs": 1, "hidden_sizes": [8]}
KEYS = ["num_envs", "num_steps", "num_minibatches", "update_epochs", "hidden_sizes", "learning_rate", "gamma",
        "norm_adv", "device", "seed", "total_timesteps", "activation", "env_id", "world_size", "gama", "", "k" * 900]
VALUES = st.one_of(
    st.sampled_from([0, 1, -1, 2, 3, 2**62, 2**63, 10**400, True, False, None, 0.5, 1.5, 1e308, float("nan"),
                     float("inf"), "banana", "cuda", "cuda:7", "meta", "", [], [True, True], [8, 0], [8] * 100,
                     [[8]], {"a": 1}, "tanh", "x" * 2000]),
    st.integers(), st.floats(), st.text(max_size=20), st.lists(st.integers(-3, 10), max_size=4),
)
# Flags with values; --threads only with values that fail (a valid large one would slow the suite).
FLAGS = st.sampled_from([
    ["--seed", "7"], ["--seed", "99999999999999999999999"], ["--seed", "x"], ["--total-timesteps", "0"],
    ["--total-timesteps", "9" * 30], ["--total-timesteps", "abc"], ["--checkpoint-every", "-1"], ["--keep-last", "1"],
    ["--eval-every", "1"], ["--eval-episodes", "0"], ["--eval-episodes", "1000000000"], ["--threads", "0"],
    ["--threads", "100000"], ["--stop-after-iterations", "1"], ["--progress", "banana"], ["--log-every", "1"],
    ["--bogus"], ["--set"], ["--config"], ["--run-dir"], ["--set", "="], ["--set", "no_equals"], ["-h" * 3],
])
RUN_DIR_STATES = ["missing", "empty", "file", "foreign", "locked", "readonly", "stale_lock", "config_only",
                  "nested_under_file"]


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: relative path -> (sha256, mode)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[p.relative_to(root).as_posix()] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return out


def _run(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """``main(argv)`` in ``cwd``; exit status, stdout, stderr. An exception propagates (a traceback)."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:  # --help
                rc = e.code
    finally:
        os.chdir(old)
        torch.set_num_threads(1)
    return rc, out.getvalue(), err.getvalue()


def _check_outcome(rc: int, stdout: str, stderr: str, argv: list[str]) -> None:
    assert "Traceback" not in stderr
    assert rc in (0, 2), f"exit {rc} for {argv!r}: {stderr[-2000:]}"
    if rc == 2:
        lines = stderr.strip().splitlines()
        assert lines, f"exit 2 without a message for {argv!r}"
        assert lines[-1].startswith("functional-rl: error: ") and len(lines[-1]) > len("functional-rl: error: ")
        assert all(len(line) <= MAX_LINE for line in lines), f"a message of {max(map(len, lines))} chars"
        assert not [ln for ln in lines if not ln.startswith("functional-rl: ")], stderr


_TEMPLATE: list[Path] = []


def _template_run() -> Path:
    """A finished one-iteration run dir, trained once per session and copied for each case."""
    if not _TEMPLATE:
        root = Path(tempfile.mkdtemp(prefix="frl-fuzz-template-"))
        argv = ["train", "CartPole-v1", "--no-compile", "--progress", "none", "--total-timesteps", "64",
                "--run-dir", str(root / "run")] + [a for k, v in TINY.items() for a in ("--set", f"{k}={json.dumps(v)}")]
        rc, _, err = _run(argv, root)
        assert rc == 0, err
        _TEMPLATE.append(root / "run")
    return _TEMPLATE[0]


def _set_state(root: Path, run: Path, state: str) -> list[contextlib.AbstractContextManager]:
    """Put ``run`` in ``state``; return context managers to exit after the call (a held lock)."""
    held: list = []
    if state == "empty":
        run.mkdir()
    elif state == "file":
        run.write_text("a user's file\n")
    elif state == "foreign":
        run.mkdir()
        (run / "notes.txt").write_text("precious\n")
        (run / "metrics.jsonl").write_text('{"agent_step": 1}\n')
    elif state == "locked":
        run.mkdir(exist_ok=True)
        lock = RunDirLock(run)
        lock.acquire()
        held.append(lock)
    elif state == "readonly":
        run.mkdir(exist_ok=True)
        run.chmod(0o555)
    elif state == "stale_lock":
        run.mkdir(exist_ok=True)
        (run / "run.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": "elsewhere", "started": 0}))
    elif state == "config_only":
        run.mkdir(exist_ok=True)
        (run / "config.json").write_text(json.dumps({"env_id": "CartPole-v1"}))
    elif state == "nested_under_file":
        (root / "blocker").write_text("a file where a directory should be\n")
    return held


def _config_file(root: Path, kind: str, content: dict, raw: bytes | None) -> Path:
    path = root / "outside" / f"cfg.{kind}"
    if raw is not None:
        path.write_bytes(raw)
    elif kind == "json":
        path.write_text(json.dumps(content))
    elif kind == "toml":
        lines = [f"{k} = {json.dumps(v)}" for k, v in content.items() if isinstance(v, (int, float, str, bool))]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text(json.dumps(content))  # JSON is YAML; the CLI takes .json/.toml only
    return path


@st.composite
def train_cases(draw):
    sets = dict(TINY)
    for _ in range(draw(st.integers(0, 2))):
        sets[draw(st.sampled_from(KEYS))] = draw(VALUES)
    env = draw(st.sampled_from(ENVS[:3])) if draw(st.booleans()) else draw(st.sampled_from(ENVS))
    extra = draw(st.lists(FLAGS, max_size=2))
    config = None
    if draw(st.integers(0, 3)) == 0:
        kind = draw(st.sampled_from(["json", "toml", "yaml"]))
        content = draw(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3))
        raw = draw(st.sampled_from([None, None, b"\xff\xfe{", b'{"gamma": 0.9, "gamma": 0.8}', b"[1, 2]",
                                    b"[" * 100000, b"gamma = 0.9\ngamma = 0.8\n", b""]))
        config = (kind, content, raw)
    state = draw(st.sampled_from(["missing"] * 4 + RUN_DIR_STATES))
    default_dir = draw(st.integers(0, 9)) == 0
    return env, sets, extra, config, state, default_dir


@given(train_cases())
@FUZZ
def test_fuzz_train(case):
    env, sets, extra, config, state, default_dir = case
    root = Path(tempfile.mkdtemp(prefix="frl-fuzz-"))
    try:
        (root / "outside").mkdir()
        (root / "outside" / "keep.txt").write_text("must not change\n")
        run = root / ("blocker/run" if state == "nested_under_file" else "run")
        held = _set_state(root, run, state)
        argv = ["train", env, "--no-compile", "--progress", "none", "--total-timesteps", "64"]
        for k, v in sets.items():
            argv += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
        if config is not None:
            argv += ["--config", str(_config_file(root, *config))]
        if not default_dir:
            argv += ["--run-dir", str(run)]
        argv += [a for flag in extra for a in flag]
        before = _snapshot(root)
        try:
            rc, out, err = _run(argv, root)
            after = _snapshot(root)
        finally:
            for lock in held:
                lock.release()
            if run.is_dir():
                run.chmod(0o755)
        _check_outcome(rc, out, err, argv)
        owned = ("run/", "runs/") if state in ("missing", "empty", "readonly", "stale_lock") else ()
        if default_dir:
            owned = ("runs/",)
        for rel in before.keys() | after.keys():
            if not rel.startswith(owned):
                assert before.get(rel) == after.get(rel), f"{rel} changed by {argv!r}"
        if rc == 0 and not default_dir and "-h-h-h" not in argv:
            assert (run / "config.json").is_file() and not (run / "run.lock").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@st.composite
def existing_run_cases(draw):
    command = draw(st.sampled_from(["resume", "resume", "eval", "plot"]))
    damage = draw(st.sampled_from([None, None, "bad_byte", "torn", "config_value", "config_dup", "config_bytes",
                                   "ckpt_file", "ckpt_truncated", "no_metrics", "locked", "stale_lock", "is_file",
                                   "missing"]))
    key, value = draw(st.sampled_from(KEYS)), draw(VALUES)
    extra = draw(st.lists(st.sampled_from([
        ["--total-timesteps", "128"], ["--total-timesteps", "32"], ["--total-timesteps", "9" * 25],
        ["--stop-after-iterations", "1"], ["--no-compile"], ["--episodes", "2"], ["--episodes", "0"],
        ["--episodes", "999999999"], ["--seed", "3"], ["--out", "run"], ["--out", "outside/keep.txt"],
        ["--out", "run/plot.png"], ["--bogus"],
    ]), max_size=2))
    return command, damage, key, value, extra


@given(existing_run_cases())
@FUZZ
def test_fuzz_existing_run_dir(case):
    command, damage, key, value, extra = case
    template = _template_run()
    root = Path(tempfile.mkdtemp(prefix="frl-fuzz-"))
    try:
        (root / "outside").mkdir()
        (root / "outside" / "keep.txt").write_text("must not change\n")
        run = root / "run"
        shutil.copytree(template, run)
        held = []
        if damage == "bad_byte":
            with open(run / "metrics.jsonl", "ab") as f:
                f.write(b'{"agent_step": 1\xff}\n')
        elif damage == "torn":
            with open(run / "metrics.jsonl", "ab") as f:
                f.write(b'{"agent_st')
        elif damage == "config_value":
            d = json.loads((run / "config.json").read_text())
            d[key] = value
            (run / "config.json").write_text(json.dumps(d))
        elif damage == "config_dup":
            (run / "config.json").write_text((run / "config.json").read_text().replace("{", '{"seed": 5, ', 1))
        elif damage == "config_bytes":
            (run / "config.json").write_bytes(b"\xff" + (run / "config.json").read_bytes())
        elif damage == "ckpt_file":
            shutil.rmtree(run / "checkpoints")
            (run / "checkpoints").write_text("not a folder\n")
        elif damage == "ckpt_truncated":
            for p in (run / "checkpoints").iterdir():
                p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
        elif damage == "no_metrics":
            (run / "metrics.jsonl").unlink()
        elif damage == "locked":
            lock = RunDirLock(run)
            lock.acquire()
            held.append(lock)
        elif damage == "stale_lock":
            (run / "run.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": "elsewhere", "started": 0}))
        elif damage == "is_file":
            shutil.rmtree(run)
            run.write_text("a file\n")
        elif damage == "missing":
            shutil.rmtree(run)
        argv = [command, "run"]
        flags = [a for flag in extra for a in flag]
        argv += flags
        if command == "resume":
            argv += ["--progress", "none"]
        before = _snapshot(root)
        try:
            rc, out, err = _run(argv, root)
            after = _snapshot(root)
        finally:
            for lock in held:
                lock.release()
        _check_outcome(rc, out, err, argv)
        for rel in before.keys() | after.keys():
            if not rel.startswith("run/"):
                assert before.get(rel) == after.get(rel), f"{rel} changed by {argv!r}"
        if command == "eval" or (command == "resume" and damage == "locked"):
            assert before == after, f"run dir changed by {argv!r}"
        if command == "resume" and damage == "locked":
            assert rc == 2
        if rc == 0 and command == "resume":
            assert not (run / "run.lock").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
