"""functional-rl tune: search spaces, several workers on one SQLite study, a killed worker,
the median pruner and the best config (eager, tiny budgets)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from functional_rl.kernel.config import PPOConfig  # noqa: E402
from functional_rl.kernel.pbt import Choices, Range  # noqa: E402
from functional_rl.shell import tune as T  # noqa: E402
from functional_rl.shell.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# 4 envs x 16 steps: 64 env steps per iteration and seed.
TINY = ["--set", "num_envs=4", "--set", "num_steps=16", "--set", "num_minibatches=2", "--set", "update_epochs=2"]
SPACE = 'learning_rate = [1e-4, 1e-2]\nent_coef = { low = 0.0, high = 0.02 }\n'


def _worker(tmp_path: Path, study_dir: Path, *extra: str, steps: int = 640) -> subprocess.Popen:
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "functional_rl", "tune", "CartPole-v1", "--study", "s", "--space", str(space),
                             "--seeds", "2", "--total-timesteps", str(steps), "--no-compile", "--run-dir", str(study_dir),
                             *TINY, *extra], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _trials(study_dir: Path) -> list:
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_dir / 'study.db'}")
    return sorted(optuna.load_study(study_name="s", storage=storage).get_trials(), key=lambda t: t.number)


# ---------------------------------------------------------------------------- spaces
def test_example_space_files_parse_to_the_default_space(tmp_path):
    raw, space = T.load_space_file(ROOT / "docs" / "tune_space_cartpole.toml", PPOConfig())
    assert raw == T.DEFAULT_SPACE
    assert space["learning_rate"] == Range(1e-4, 1e-2, log=True) and space["num_minibatches"] == Choices((1.0, 2.0, 4.0, 8.0))
    assert space["update_epochs"] == Range(2.0, 8.0, log=False)
    yaml = pytest.importorskip("yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(T.DEFAULT_SPACE))
    assert T.load_space_file(tmp_path / "s.yaml", PPOConfig())[1] == space


@pytest.mark.parametrize("raw, message", [
    ({}, "the search space is empty"),
    ({"learnig_rate": [1e-4, 1e-2]}, "cannot search 'learnig_rate' (did you mean 'learning_rate'?)"),
    ({"env_id": {"choices": [1]}}, "cannot search 'env_id'"),
    ({"update_epochs": [1.5, 4]}, "'update_epochs': it is an integer field, got 1.5"),
    ({"num_minibatches": {"choices": [2, 3]}}, "'num_minibatches': the value 3 is invalid: PPOConfig.num_minibatches=3 is invalid: must divide num_steps"),
    ({"gamma": [0.9, 1.5]}, "'gamma': the value 1.5 is invalid"),
    ({"learning_rate": {"low": 1e-4}}, "must be {low, high, log} or {choices: [...]}"),
    ({"learning_rate": ["a", 1]}, "a range's ends must be numbers"),
    ({"learning_rate": [1e-2, 1e-4]}, "needs finite low <= high"),
    ({"activation": {"choices": ["tanh", "relu"]}}, "cannot search 'activation'"),
])
def test_bad_spaces_are_refused_with_what_to_change(raw, message):
    with pytest.raises(T.TuneError) as e:
        T.load_space_dict(raw, PPOConfig())
    assert message in str(e.value)


def test_sampler_is_reproducible_per_seed_and_distinct_per_trial():
    def draws(seed):
        study = optuna.create_study(sampler=T.make_sampler(seed, startup_trials=2), direction="maximize")
        out = []
        for i in range(4):  # 2 random startup draws, then TPE
            trial = study.ask()
            x = trial.suggest_float("x", 0.0, 1.0)
            study.tell(trial, -abs(x - 0.3))
            out.append(x)
        return out

    a, b, c = draws(0), draws(0), draws(1)
    assert a == b and a != c and len(set(a)) == 4


@pytest.mark.parametrize("argv, message", [
    (["--space", "missing.toml"], "space file 'missing.toml' does not exist"),
    (["--space", "bad.toml"], "cannot search 'num_env' (did you mean 'num_envs'?)"),
    (["--storage", "nosuchdb://x"], "--storage 'nosuchdb://x'"),
    (["--seeds", "0"], "expected a positive integer"),
])
def test_cli_errors_exit_2_with_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text("num_env = [1, 8]\n")
    assert main(["tune", "CartPole-v1", "--trials", "1", "--study", "x", "--no-compile", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("runs/tune-x/trial-*"))


# ---------------------------------------------------------------------------- workers
@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """Two processes with --trials 4 on one SQLite study, started together."""
    tmp = tmp_path_factory.mktemp("two")
    study_dir = tmp / "study"
    procs = [_worker(tmp, study_dir, "--trials", "4", "--sampler-seed", "0") for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    return study_dir, [o[0] for o in outs]


def test_two_workers_complete_n_trials_in_total_without_duplicates(two_workers):
    study_dir, stdouts = two_workers
    trials = _trials(study_dir)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    ran = [int(m.group(1)) for out in stdouts for m in re.finditer(r"^trial (\d+): ", out, re.M)]
    assert sorted(ran) == [0, 1, 2, 3]  # each trial trained by exactly one worker
    assert sorted(p.name for p in study_dir.glob("trial-*")) == ["trial-0000", "trial-0001", "trial-0002", "trial-0003"]
    for t in trials:  # every trial trained 2 seeds for 10 iterations (or fewer if pruned)
        rows = [json.loads(line) for line in (study_dir / f"trial-{t.number:04d}" / "metrics.jsonl").read_text().splitlines()]
        assert sorted({r["seed"] for r in rows}) == [1, 2]
        assert json.loads((study_dir / f"trial-{t.number:04d}" / "config.json").read_text())["learning_rate"] == t.params["learning_rate"]
    # the two points drawn at the same time by the two workers differ (seeded by trial number)
    assert len({t.params["learning_rate"] for t in trials}) == 4


def test_best_config_is_the_best_trial_and_trains(two_workers, tmp_path, monkeypatch):
    study_dir, stdouts = two_workers
    complete = [t for t in _trials(study_dir) if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value)
    saved = json.loads((study_dir / "best_config.json").read_text())
    assert json.loads((study_dir / "best_trial.json").read_text())["number"] == best.number
    assert saved["learning_rate"] == best.params["learning_rate"] and saved["num_steps"] == 16
    assert any(f"best: trial {best.number}" in out for out in stdouts)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "CartPole-v1", "--config", str(study_dir / "best_config.json"), "--total-timesteps", "128",
                 "--no-compile", "--run-dir", "run", "--progress", "none"]) == 0
    trained = json.loads((tmp_path / "run" / "config.json").read_text())
    assert trained == {**saved, "total_timesteps": 128}


def test_a_killed_worker_loses_only_its_running_trial(tmp_path):
    study_dir = tmp_path / "study"
    a = _worker(tmp_path, study_dir, "--trials", "2", "--heartbeat", "1", steps=1280)
    metrics = study_dir / "trial-0000" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (metrics.exists() and metrics.stat().st_size > 0):  # trial 0 is training
        assert a.poll() is None and time.monotonic() < deadline, a.communicate()
        time.sleep(0.1)
    a.send_signal(signal.SIGKILL)
    a.wait()
    b = _worker(tmp_path, study_dir, "--trials", "2", "--heartbeat", "1", steps=1280)
    out, err = b.communicate(timeout=120)
    assert b.returncode == 0, err
    trials = _trials(study_dir)
    assert [t.number for t in trials] == [0, 1, 2] and trials[0].state.name == "FAIL"  # the killed trial
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials[1:])
    # retried once with the same point (as trial 1 or 2: whether it was seen stale before B's first ask)
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == 1 and retries[0].params == trials[0].params
    assert "worker lost" in out


def test_median_pruner_stops_a_hopeless_trial(tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CLI's default: the numbers below are deterministic with it
    try:
        _prune_hopeless(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _prune_hopeless(tmp_path):
    # 20 iterations of 4 envs x 32 steps, 2 seeds. Measured (deterministic, eager, 1 thread): at 3/10 of the
    # budget learning_rate=1e-2 has mean return 67.5 and 1e-9 (no learning) 23.0.
    base = PPOConfig(num_envs=4, num_steps=32, num_minibatches=4, update_epochs=4, total_timesteps=2560)
    space = T.load_space_dict({"learning_rate": [1e-9, 1e-2]}, base)
    lines = []
    result = T.tune(base, space, study_name="p", trials=2, run_dir=tmp_path, seeds=2, startup_trials=1,
                    enqueue=[{"learning_rate": 1e-2}, {"learning_rate": 1e-9}], log=lines.append)
    trials = sorted(result.study.get_trials(), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"], lines
    good, hopeless = trials[0].intermediate_values, trials[1].intermediate_values
    assert max(hopeless) == 3  # pruned at the first report after the warm-up (3 tenths of the budget)
    assert hopeless[3] < 30 < 50 < good[3]
    rows = (tmp_path / "trial-0001" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 * 6  # 2 seeds x 6 of 20 iterations: training stopped there
    assert result.best_number == 0 and result.best_config.learning_rate == 1e-2
    assert "pruned at 3/10 of the budget" in lines[1]


def test_a_worker_set_up_otherwise_cannot_join(two_workers, tmp_path, capsys):
    study_dir, _ = two_workers
    (tmp_path / "space.toml").write_text(SPACE)
    before = len(_trials(study_dir))
    assert main(["tune", "CartPole-v1", "--study", "s", "--space", str(tmp_path / "space.toml"), "--seeds", "2",
                 "--total-timesteps", "1280", "--no-compile", "--run-dir", str(study_dir), "--trials", "5", *TINY]) == 2
    assert "was set up otherwise: total_timesteps is 1280 here, 640 in the study" in capsys.readouterr().err
    assert len(_trials(study_dir)) == before


def test_a_study_dir_holds_one_study(two_workers, capsys):
    study_dir, _ = two_workers
    assert main(["tune", "CartPole-v1", "--study", "other", "--trials", "1", "--no-compile", "--run-dir", str(study_dir)]) == 2
    assert f"study dir '{study_dir}' belongs to study 's'" in capsys.readouterr().err
