"""The CLI's reliability rules, one case each: no data loss, one process per run dir,
file-system errors and bad input as one line with exit 2, bounded messages, robust reading."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from functional_rl.compat.training_config import TrainingConfig
from functional_rl.shell import checkpoint
from functional_rl.shell.cli import main, read_metrics
from functional_rl.shell.rundir import LOCK_FILE, RunDirLock

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["--no-compile", "--progress", "none", "--total-timesteps", "64", "--set", "num_envs=2", "--set", "num_steps=32",
        "--set", "num_minibatches=2", "--set", "update_epochs=1", "--set", "hidden_sizes=[8]"]


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    torch.set_num_threads(1)
    return rc, out.out, out.err


def refused(capsys, *argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("functional-rl: error: ") and "Traceback" not in err, err
    assert message in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture
def trained(tmp_path, capsys):
    rc, _, err = run(capsys, "train", "CartPole-v1", *TINY, "--run-dir", tmp_path / "run")
    assert rc == 0, err
    return tmp_path / "run"


def test_train_refuses_a_directory_with_foreign_files(tmp_path, capsys):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "config.json").write_text('{"mine": 1}')
    (d / "metrics.jsonl").write_text('{"agent_step": 1}\n')
    refused(capsys, "train", "CartPole-v1", *TINY, "--run-dir", d, message="is not empty")
    assert (d / "config.json").read_text() == '{"mine": 1}'
    assert (d / "metrics.jsonl").read_text() == '{"agent_step": 1}\n'
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "metrics.jsonl"]


def test_a_locked_run_dir_is_refused_naming_the_holder(trained, capsys):
    with RunDirLock(trained):
        line = refused(capsys, "resume", trained, "--total-timesteps", "128", message=f"in use by pid {os.getpid()}")
        assert "host" in line
        empty = trained.parent / "empty"
        empty.mkdir()
        with RunDirLock(empty):
            refused(capsys, "train", "CartPole-v1", *TINY, "--run-dir", empty, message="in use by pid")
    assert not (trained / LOCK_FILE).exists()


def test_a_stale_lock_is_taken_over_with_a_note(trained, capsys):
    (trained / LOCK_FILE).write_text(json.dumps({"pid": 4194303, "host": "gone", "started": 0}))
    rc, out, err = run(capsys, "resume", trained, "--total-timesteps", "128", "--progress", "none")
    assert rc == 0, err
    assert "took over the lock" in err and "pid 4194303" in err
    assert not (trained / LOCK_FILE).exists()


def test_sigterm_checkpoints_releases_the_lock_and_exits_143(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "functional_rl", "train", "CartPole-v1", *TINY[:4], "640000", *TINY[5:],
            "--run-dir", str(run_dir)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (metrics.is_file() and len(metrics.read_bytes().splitlines()) >= 2):  # mid-run, before the 60 s save
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert (run_dir / LOCK_FILE).exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and f"functional-rl resume {run_dir}" in err
    assert not (run_dir / LOCK_FILE).exists()
    # The handler saved the last good state: at the last logged iteration (or one later if the signal tore its row).
    state, _, meta = checkpoint.load(checkpoint.latest_checkpoint(run_dir / "checkpoints"))
    assert meta["reason"] == "failure"
    assert int(state.iteration) in (len(read_metrics(metrics)), len(read_metrics(metrics)) + 1)


@pytest.mark.parametrize("sets, message", [
    (["hidden_sizes=[true,true]"], "expected a list of positive integers"),
    (["device=banana"], "is not a torch device"),
    (["total_timesteps=9223372036854775807"], "too large"),
    (["num_envs=1", "num_steps=4", "num_minibatches=4", "norm_adv=true"], "standard deviation"),
    (["env_id=Acrobot-v1"], "give the environment once"),
    (["update_epochs=4611686018427387904"], "passes over each batch"),
    (["learning_rate=" + "9" * 400], "too large for a float"),
])
def test_bad_configs_are_refused_before_the_run_dir_exists(tmp_path, capsys, sets, message):
    base = ["--no-compile", "--progress", "none"]
    refused(capsys, "train", "CartPole-v1", *base, *[a for s in sets for a in ("--set", s)], "--run-dir",
            tmp_path / "run", message=message)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only machine")
def test_cuda_on_a_cpu_only_machine_is_refused(tmp_path, capsys):
    refused(capsys, "train", "CartPole-v1", "--set", "device=cuda", "--run-dir", tmp_path / "r", message="no CUDA")
    assert not (tmp_path / "r").exists()


def test_duplicate_keys_in_a_json_config_are_refused(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"gamma": 0.9, "gamma": 0.8}')
    refused(capsys, "train", "CartPole-v1", "--config", cfg, "--run-dir", tmp_path / "r", message="appears twice")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_file_system_errors_are_one_line(tmp_path, capsys, trained, monkeypatch):
    (tmp_path / "f").write_text("x")
    refused(capsys, "train", "CartPole-v1", *TINY, "--run-dir", tmp_path / "f", message="is a file, not a directory")
    refused(capsys, "train", "CartPole-v1", *TINY, "--run-dir", tmp_path / "f" / "sub", message="is a file, not a dir")
    refused(capsys, "resume", tmp_path / "f", message="is a file, not a directory")
    refused(capsys, "plot", trained, "--out", tmp_path, message="is a directory")
    refused(capsys, "plot", trained, "--out", tmp_path / "f", message="is not a PNG")
    assert (tmp_path / "f").read_text() == "x"

    def read_only(self):  # what a read-only run dir does to the lock (root is exempt from permissions)
        raise PermissionError(errno.EACCES, "Permission denied", str(self.path))

    monkeypatch.setattr(RunDirLock, "acquire", read_only)
    refused(capsys, "resume", trained, "--total-timesteps", "128", message="permission denied")
    monkeypatch.undo()
    import shutil

    shutil.rmtree(trained / "checkpoints")
    (trained / "checkpoints").write_text("a file")
    refused(capsys, "resume", trained, message="is a file, not the checkpoint directory")


def test_a_non_utf8_byte_in_metrics_blocks_neither_resume_nor_plot(trained, capsys):
    with open(trained / "metrics.jsonl", "ab") as f:
        f.write(b'{"agent_step": 3\xff}\n')
    assert len(read_metrics(trained / "metrics.jsonl")) == 1
    rc, out, err = run(capsys, "plot", trained)
    assert rc == 0 and "skipped 1 unreadable lines" in err, err
    rc, out, err = run(capsys, "resume", trained, "--total-timesteps", "128", "--progress", "none")
    assert rc == 0 and "1 unreadable lines" in out, err
    assert [r["iteration"] for r in read_metrics(trained / "metrics.jsonl")] == [1, 2]


def test_yaml_nested_aliases_give_a_short_message_and_duplicate_keys_are_refused(tmp_path):
    lines, prev = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a"
    for n in "bcdefghi":
        lines.append(f"&{n} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = n
    path = tmp_path / "lol.yaml"
    path.write_text("trainer:\n  env_id: [" + ", ".join(lines) + "]\n")
    with pytest.raises(TypeError) as info:
        TrainingConfig.from_yaml(path)
    assert len(str(info.value)) < 600
    path.write_text("ppo:\n  gamma: 0.9\n  gamma: 0.8\n")
    with pytest.raises(ValueError, match="appears twice"):
        TrainingConfig.from_yaml(path)


def test_a_config_that_diverges_is_a_bad_input_with_one_line_and_a_checkpoint(tmp_path, capsys):
    """learning_rate=1e30 passes every range check but blows the parameters up: exit 2, one
    line naming the metric, and the last good state is on disk for a resume with a saner value."""
    line = refused(capsys, "train", "CartPole-v1", *TINY, "--set", "learning_rate=1e30", "--run-dir", tmp_path / "d",
                   message="training diverged")
    assert "is nan" in line or "is inf" in line or "NaN/inf" in line, line
    assert list((tmp_path / "d" / "checkpoints").glob("*.frl")), "the start checkpoint is kept"
