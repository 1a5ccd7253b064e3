"""The ``functional-rl`` CLI, run as a subprocess: train, resume (exact and after SIGKILL), eval, plot, errors."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import torch.utils._pytree as pytree

import functional_rl as frl
import functional_rl.kernel.random as jr
from functional_rl.shell import checkpoint
from functional_rl.shell.callbacks import evaluate
from functional_rl.shell.cli import main, read_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_SETS = ["--set", "num_envs=4", "--set", "num_steps=16", "--set", "num_minibatches=2", "--set", "update_epochs=1"]
TINY_TOML = "num_envs = 4\nnum_steps = 16\nnum_minibatches = 2\nupdate_epochs = 1\n"
TINY_TRAIN = ["train", "CartPole-v1", "--total-timesteps", "384", "--no-compile", "--progress", "none"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Values that depend on wall time, not on the computation.
TIMING = {"overview/sps", "timing/iteration_s", "timing/rollout_s", "timing/train_s", "wall_time"}


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}


def cli(cwd, *args, timeout=180):
    return subprocess.run([sys.executable, "-m", "functional_rl", *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def latest_state(run_dir):
    return checkpoint.load(checkpoint.latest_checkpoint(Path(run_dir) / "checkpoints"))


def assert_trees_equal(a, b):
    la, sa = pytree.tree_flatten(a)
    lb, sb = pytree.tree_flatten(b)
    assert sa == sb
    for x, y in zip(la, lb):
        assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def full_run(work):
    """An uninterrupted 6-iteration eager run into the default run dir runs/{env}-{seed}-{timestamp}."""
    ok(cli(work, *TINY_TRAIN, *TINY_SETS, "--seed", "3"))
    (run_dir,) = (work / "runs").glob("CartPole-v1-3-*")
    assert re.fullmatch(r"CartPole-v1-3-\d{8}-\d{6}", run_dir.name)
    return run_dir


def test_train_writes_the_run_dir(full_run):
    config = json.loads((full_run / "config.json").read_text())
    assert config == frl.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=1,
                                   total_timesteps=384, seed=3).to_dict()
    rows = read_metrics(full_run / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["agent_step"] for r in rows] == [64 * i for i in range(1, 7)]
    assert {"overview/reward", "losses/value_loss", "optimizer/lr", "grad/global_norm"} <= set(rows[0])
    # Checkpoints every 60 s by default: this short run saved its start and its end only.
    names = sorted(p.name for p in (full_run / "checkpoints").iterdir())
    assert names == ["ckpt_000000000000.frl", "ckpt_000000000384.frl"]
    state, cfg, meta = latest_state(full_run)
    assert int(state.agent_step) == 384 and cfg.seed == 3 and meta["compile"] is False and meta["reason"] == "end"
    assert any(p.name.startswith("events.out.tfevents") for p in (full_run / "tensorboard").iterdir())
    png = (full_run / "learning_curve.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 5000


def test_stop_then_resume_equals_the_uninterrupted_run_bit_for_bit(work, full_run):
    (work / "tiny.toml").write_text(TINY_TOML)  # the same config, this time from a file
    split = work / "split"
    out = ok(cli(work, *TINY_TRAIN, "--config", "tiny.toml", "--seed", "3", "--run-dir", split,
                 "--stop-after-iterations", "2"))
    assert "run dir: " in out.stdout
    state, _, _ = latest_state(split)
    assert int(state.iteration) == 2
    assert len(read_metrics(split / "metrics.jsonl")) == 2
    ok(cli(work, "resume", split, "--progress", "none"))
    resumed, config, meta = latest_state(split)
    full, full_config, _ = latest_state(full_run)
    assert config == full_config and meta["compile"] is False
    assert_trees_equal(resumed, full)
    rows, full_rows = read_metrics(split / "metrics.jsonl"), read_metrics(full_run / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r, f in zip(rows, full_rows):
        assert {k: v for k, v in r.items() if k not in TIMING} == {k: v for k, v in f.items() if k not in TIMING}
    # wall_time (seconds since the run started) keeps growing across the two processes.
    times = [r["wall_time"] for r in rows]
    assert times[0] > 0 and all(b > a for a, b in zip(times, times[1:]))
    # Resuming a finished run is a no-op that says so.
    done = ok(cli(work, "resume", split))
    assert "complete at step 384" in done.stdout


def test_resume_with_a_new_total_trains_on_from_the_checkpoint(work, full_run):
    longer = work / "longer"
    evals = ["--eval-every", "3", "--eval-episodes", "2"]  # an Evaluator must not change training
    ok(cli(work, *TINY_TRAIN, *TINY_SETS, "--seed", "3", "--run-dir", longer, *evals))
    too_short = cli(work, "resume", longer, "--total-timesteps", "256")
    assert too_short.returncode == 2 and "is not beyond the checkpoint's 6 iterations" in too_short.stderr
    ok(cli(work, "resume", longer, "--total-timesteps", "512", "--progress", "none", *evals))
    assert json.loads((longer / "config.json").read_text())["total_timesteps"] == 512
    rows = read_metrics(longer / "metrics.jsonl")
    assert [r["iteration"] for r in rows if "overview/sps" in r] == list(range(1, 9))
    eval_rows = [r for r in rows if "eval/mean_return" in r]
    assert [r["iteration"] for r in eval_rows] == [3, 6, 8]  # every 3, and the last iteration
    assert all(8 <= r["eval/mean_return"] <= 500 and r["eval/episodes"] == 2 for r in eval_rows)
    # The same as continuing the uninterrupted run's final state in process with config.replace.
    state, config, _ = latest_state(full_run)
    expected, history = frl.functional_training_loop(config.replace(total_timesteps=512), state=state, compile=False)
    resumed, resumed_config, _ = latest_state(longer)
    assert resumed_config.total_timesteps == 512 and len(history) == 2
    assert_trees_equal(resumed, expected)


@pytest.mark.parametrize("cadence, rows_before_kill", [
    (["--checkpoint-every", "1"], 3),    # every iteration: the kill lands just after a save
    (["--checkpoint-every-s", "0.3"], 8),  # time-based: metric rows beyond the latest checkpoint
    ([], 3),                             # the default 60 s: only the start is saved when it dies
], ids=["every-iteration", "every-0.3s", "default-60s"])
def test_a_sigkilled_run_resumes_exactly_from_its_latest_checkpoint(work, cadence, rows_before_kill):
    run_dir = work / f"killed{len(cadence)}{rows_before_kill}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "functional_rl", "train", "CartPole-v1", *TINY_SETS, "--total-timesteps", "640000",
         "--no-compile", "--progress", "none", "--run-dir", str(run_dir), *cadence],
        cwd=work, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    metrics = run_dir / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (metrics.is_file() and len(metrics.read_bytes().splitlines()) >= rows_before_kill):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, f"not {rows_before_kill} metric rows within 120 s"
            time.sleep(0.01)
        time.sleep(0.1 + 0.4 * torch.rand(()).item())  # a random moment mid-run
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    state, config, _ = latest_state(run_dir)  # loads: the SHA-256 and structure checks pass
    step, iteration = int(state.agent_step), int(state.iteration)
    assert step == 64 * iteration and config.total_timesteps == 640000
    logged = len(read_metrics(metrics))
    if not cadence:
        assert iteration == 0 < logged  # the kill came before the first periodic save: the start is there
    out = ok(cli(work, "resume", run_dir, "--stop-after-iterations", "2", "--progress", "none"))
    assert f"step {step:,}, iteration {iteration}); dropped {logged - iteration} metric rows" in out.stdout
    resumed, _, _ = latest_state(run_dir)
    assert int(resumed.agent_step) == step + 128 and int(resumed.iteration) == iteration + 2
    # Bit for bit what two more iterations from that checkpoint give in process.
    expected, _ = frl.functional_training_loop(config, state=state, compile=False, max_iterations=2)
    assert_trees_equal(resumed, expected)
    # Rows logged after the checkpoint by the killed process were dropped: no gap, no duplicate.
    assert [r["iteration"] for r in read_metrics(metrics)] == list(range(1, iteration + 3))


def test_ctrl_c_checkpoints_the_last_good_state_and_exits_130(work):
    run_dir = work / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "functional_rl", "train", "CartPole-v1", *TINY_SETS, "--total-timesteps", "640000",
         "--no-compile", "--progress", "none", "--run-dir", str(run_dir), "--checkpoint-every", "100000"],
        cwd=work, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    metrics = run_dir / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no metrics within 120 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and f"functional-rl resume {run_dir}" in stderr
    # Only the start and the failure hook saved (periodic saves are 100000 iterations apart), and it
    # lost nothing: the checkpoint is at the last logged iteration, or one later if the kill tore that row.
    assert len(list((run_dir / "checkpoints").iterdir())) == 2
    state, _, meta = latest_state(run_dir)
    last_row = read_metrics(metrics)[-1]
    assert meta["reason"] == "failure"
    assert int(state.iteration) in (last_row["iteration"], last_row["iteration"] + 1)
    assert int(state.agent_step) == 64 * int(state.iteration) >= 3 * 64


def test_eval_prints_mean_and_std_of_greedy_episodes(work, full_run):
    out = ok(cli(work, "eval", full_run, "--episodes", "4", "--seed", "7")).stdout
    m = re.search(r"mean return ([\d.]+) ± ([\d.]+) over 4 greedy episodes", out)
    assert m, out
    state, config, _ = latest_state(full_run)
    env = frl.envs.make(config.env_id)
    policy = frl.make_mlp_policy(env.observation_space, env.action_space, config.hidden_sizes, config.activation)
    returns, _ = evaluate(jr.fold_in(jr.key(7), 6), state.learner.params, env, policy, episodes=4)
    r = returns.double()
    assert float(m.group(1)) == pytest.approx(float(r.mean()), abs=0.005)
    assert float(m.group(2)) == pytest.approx(float(r.std(correction=0)), abs=0.005)
    assert 8 <= float(m.group(1)) <= 500


def test_plot_of_several_runs_writes_a_png(work, full_run):
    out = ok(cli(work, "plot", full_run, work / "split", "--out", "curves/multi.png"))
    png = (work / "curves" / "multi.png").read_bytes()
    assert "wrote curves/multi.png" in out.stdout
    assert png[:8] == PNG_MAGIC and len(png) > 5000


def test_list_envs(work):
    out = ok(cli(work, "list-envs")).stdout
    assert re.search(r"^CartPole-v1\s+obs \(4,\)\s+actions Discrete\(2\)$", out, re.M)


HELP = [[], ["train"], ["resume"], ["eval"], ["plot"], ["sweep"], ["list-envs"]]


@pytest.mark.parametrize("command", HELP)
def test_help_in_process(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: functional-rl")
    if command == ["train"]:
        assert "--stop-after-iterations" in out and "--checkpoint-every" in out


@pytest.mark.parametrize("command", [[], ["resume"]])
def test_help_in_a_subprocess(quick_runs, command):
    out = ok(quick_runs[("help", *command)]).stdout
    assert out.startswith("usage: functional-rl")


ERRORS = [
    (["train", "CartPol-v1"], "unknown environment id 'CartPol-v1' (did you mean 'CartPole-v1'?)"),
    (["train", "CartPole-v1", "--set", "gama=0.9"], "unknown PPOConfig key 'gama' (did you mean 'gamma'?)"),
    (["train", "CartPole-v1", "--set", "learning_rate"], "malformed --set 'learning_rate'"),
    (["train", "CartPole-v1", "--set", "num_envs=0"], "PPOConfig.num_envs=0 is invalid"),
    (["train", "CartPole-v1", "--set", "ent_coef.schedule=cosin"], "unknown kind 'cosin'"),
    (["train", "CartPole-v1", "--set", "learning_rate.schedule=cosine"], "set anneal_lr=False"),
    (["train", "CartPole-v1", "--set", "vf_clip_coef=wide"], "vf_clip_coef='wide' has type str; expected a number or null"),
    (["train", "CartPole-v1", "--initial-policy", "no_such_policy"], "--initial-policy: "),
    (["train", "CartPole-v1", "--config", "missing.toml"], "config file 'missing.toml' does not exist"),
    (["train"], "the following arguments are required: env_id"),
    (["resume", "no/such/run"], "run dir 'no/such/run' does not exist"),
    (["eval", "no/such/run"], "run dir 'no/such/run' does not exist"),
    (["plot", "no/such/run"], "run dir 'no/such/run' does not exist"),
    (["resume", "empty"], "has no checkpoint"),
    (["eval", "empty"], "has no checkpoint"),
    (["plot", "empty"], "has no metrics.jsonl"),
    (["eval", "corrupt"], "cannot load checkpoint 'corrupt/checkpoints/ckpt_000000000064.frl'"),
    (["train", "CartPole-v1", "--run-dir", "corrupt"], "run dir 'corrupt' already has checkpoints"),
    (["resume", "edited"], "config.json differs from the config in ckpt_000000000064.frl in ent_coef (0.02 vs 0.01)"),
    (["train", "CartPole-v1", "--total-timesteps", "-5"], "expected a positive integer, got '-5'"),
]


@pytest.fixture(scope="module")
def quick_runs(work):
    """The short CLI calls (help and bad arguments), three at a time: each is mostly interpreter start-up."""
    run_dir = work / "empty"  # a run dir with a config but no checkpoint and no metrics
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(frl.PPOConfig().to_dict()))
    corrupt = work / "corrupt"  # a run dir whose checkpoint is not one
    (corrupt / "checkpoints").mkdir(parents=True)
    (corrupt / "config.json").write_text(json.dumps(frl.PPOConfig().to_dict()))
    (corrupt / "checkpoints" / "ckpt_000000000064.frl").write_bytes(b"not a checkpoint")
    edited = work / "edited"  # config.json edited after the checkpoint was written
    checkpoint.save(edited / "checkpoints" / "ckpt_000000000064.frl", {"step": torch.tensor(64)}, frl.PPOConfig())
    (edited / "config.json").write_text(json.dumps(frl.PPOConfig(ent_coef=0.02).to_dict()))
    calls = {("help",): ["--help"], ("help", "resume"): ["resume", "--help"]}
    calls |= {tuple(a): a for a, _ in ERRORS[:: len(ERRORS) // 4]}  # a sample in real processes
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {k: pool.submit(cli, work, *args) for k, args in calls.items()}
        return {k: f.result() for k, f in futures.items()}


def _assert_one_line_error(rc, stdout, stderr, message):
    assert rc == 2
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("functional-rl: error: "), stderr
    assert message in lines[0]
    assert stdout == ""


@pytest.mark.parametrize("args, message", ERRORS)
def test_bad_arguments_exit_2_with_one_line(quick_runs, work, monkeypatch, capsys, args, message):
    monkeypatch.chdir(work)
    rc = main(list(args))
    captured = capsys.readouterr()
    _assert_one_line_error(rc, captured.out, captured.err, message)


@pytest.mark.parametrize("args, message", ERRORS[:: len(ERRORS) // 4])
def test_bad_arguments_in_a_subprocess_exit_2_without_traceback(quick_runs, args, message):
    proc = quick_runs[tuple(args)]
    _assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, message)


@pytest.mark.parametrize("flags, compile, every, every_s, notice", [
    ([], True, None, 60.0, True),
    (["--checkpoint-every-s", "5"], True, None, 5.0, True),
    (["--checkpoint-every", "7", "--progress", "bar"], True, 7, None, True),
    (["--progress", "none"], True, None, 60.0, False),
    ([], False, None, 60.0, False),
])
def test_the_cli_checkpoints_every_60_s_by_default_and_announces_the_compile(tmp_path, flags, compile, every, every_s,
                                                                             notice):
    from functional_rl.shell import cli as cli_module
    from functional_rl.shell.callbacks import Checkpointer, CompileNotice

    args = cli_module.build_parser().parse_args(["train", "CartPole-v1", "--progress", "log", *flags])
    env = frl.envs.make("CartPole-v1")
    callbacks = cli_module._callbacks(args, tmp_path, env, None, compile, None)
    ck = callbacks[-1]
    assert isinstance(ck, Checkpointer) and ck.save_on_start
    assert (ck.every, ck.every_s) == (every, every_s)
    notices = [c for c in callbacks if isinstance(c, CompileNotice)]
    assert len(notices) == notice
    if notice:
        assert notices[0].above_bar == ("bar" in flags)
    with pytest.raises(cli_module.UsageError, match="not allowed with"):
        cli_module.build_parser().parse_args(["train", "CartPole-v1", "--checkpoint-every", "1",
                                              "--checkpoint-every-s", "1"])


def test_set_schedules_with_the_dotted_syntax_or_an_object():
    from functional_rl.shell.cli import _make_config, build_parser

    dotted = ["--set", "ent_coef.schedule=cosine:end=0", "--set", "anneal_lr=false",
              "--set", "learning_rate.schedule=linear:end=0.1,warmup=1000"]
    cfg = _make_config(build_parser().parse_args(["train", "CartPole-v1", *dotted]))
    assert dict(cfg.schedules) == {"ent_coef": "cosine:end=0", "learning_rate": "linear:end=0.1,warmup=1000"}
    obj = _make_config(build_parser().parse_args(["train", "CartPole-v1", "--set", 'schedules={"ent_coef": "cosine:end=0"}']))
    assert dict(obj.schedules) == {"ent_coef": "cosine:end=0"}
    assert frl.PPOConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # config.json round trip
