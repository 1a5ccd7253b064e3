"""The callbacks: JSONL/TensorBoard names and values, progress bar, wandb, Checkpointer, Evaluator, failures,
the steady rate (no compile in it) and the compile notice."""

import io
import json
import math
import re
import sys
import threading
import time
import types
from types import SimpleNamespace

import pytest
import torch
import torch.utils._pytree as pytree

import functional_rl as frl
import functional_rl.kernel.random as jr
from functional_rl.shell import checkpoint
from functional_rl.shell.callbacks import (
    Checkpointer, CompileNotice, ConsoleLogger, Evaluator, JSONLWriter, ProgressBar, SteadyRate, TensorBoardWriter,
    WandbLogger, evaluate, grouped,
)
from functional_rl.envs import make

TINY = frl.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=1, total_timesteps=64 * 6)

# The grouped names every iteration row carries (the reference trainer's dashboard names).
GROUPED = (
    "overview/sps", "overview/reward", "losses/policy_loss", "losses/value_loss", "losses/entropy",
    "losses/approx_kl", "losses/clipfrac", "losses/explained_variance", "losses/total_loss", "optimizer/lr",
    "grad/global_norm", "env/episode_length",
)
# grouped name -> the history (loop) name it comes from
SOURCE = {
    "overview/sps": "sps", "overview/reward": "episode_return", "losses/policy_loss": "policy_loss",
    "losses/value_loss": "value_loss", "losses/entropy": "entropy", "losses/approx_kl": "approx_kl",
    "losses/clipfrac": "clipfrac", "losses/explained_variance": "explained_variance",
    "losses/total_loss": "total_loss", "optimizer/lr": "learning_rate", "grad/global_norm": "grad_norm",
    "env/episode_length": "episode_length",
}


def assert_trees_equal(a, b):
    """Same structure, and every tensor leaf equal bit for bit (same dtype, torch.equal)."""
    la, sa = pytree.tree_flatten(a)
    lb, sb = pytree.tree_flatten(b)
    assert sa == sb
    for x, y in zip(la, lb):
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y)
        else:
            assert x == y


def _policy(env, config=TINY):
    return frl.make_mlp_policy(env.observation_space, env.action_space, config.hidden_sizes, config.activation)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One eager 6-iteration run with every file-writing callback attached."""
    d = tmp_path_factory.mktemp("callbacks")
    env = make("CartPole-v1")
    policy = _policy(env)
    jsonl = JSONLWriter(d / "metrics.jsonl")
    tb = TensorBoardWriter(d / "tb")
    ev = Evaluator(env, policy, every=3, episodes=4, seed=5, writer=[jsonl, tb])
    ck = Checkpointer(d / "ckpt", every=1, keep_last=2)
    bar_out = io.StringIO()
    bar = ProgressBar(stream=bar_out, disable=False)
    state, history = frl.functional_training_loop(
        TINY, env=env, policy=policy, compile=False, callbacks=[bar, jsonl, tb, ev, ck]
    )
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    return SimpleNamespace(dir=d, env=env, policy=policy, state=state, history=history, rows=rows, evaluator=ev,
                           checkpointer=ck, bar_out=bar_out.getvalue())


def test_jsonl_rows_have_the_grouped_names_and_the_loop_values(run):
    it_rows = [r for r in run.rows if "overview/sps" in r]
    assert [r["iteration"] for r in it_rows] == [1, 2, 3, 4, 5, 6]
    assert [r["agent_step"] for r in it_rows] == [64, 128, 192, 256, 320, 384]
    assert all(isinstance(r["agent_step"], int) for r in it_rows)
    for row, h in zip(it_rows, run.history):
        assert set(GROUPED) <= set(row)
        for name in GROUPED:
            expected = h[SOURCE[name]]
            assert row[name] == (None if math.isnan(expected) else expected), name
        assert row["timing/iteration_s"] == h["time_s"] > 0
    # lr anneals linearly: lr_i = 2.5e-4 * (1 - (i - 1) / 6) in float32
    assert [r["optimizer/lr"] for r in it_rows] == pytest.approx([2.5e-4 * (1 - i / 6) for i in range(6)], rel=1e-6)
    # Two eval rows (iterations 3 and 6), written right after their iteration's row.
    eval_rows = [r for r in run.rows if "eval/mean_return" in r]
    assert [(r["iteration"], r["agent_step"]) for r in eval_rows] == [(3, 192), (6, 384)]
    assert eval_rows == run.evaluator.results


def test_tensorboard_event_file_has_the_grouped_tags_at_agent_steps(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run.dir / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert set(GROUPED) <= tags
    assert {"eval/mean_return", "eval/std_return", "timing/iteration_s"} <= tags
    for name in ("losses/value_loss", "optimizer/lr", "grad/global_norm"):
        events = acc.Scalars(name)
        assert [e.step for e in events] == [64, 128, 192, 256, 320, 384]
        assert [e.value for e in events] == pytest.approx([h[SOURCE[name]] for h in run.history], rel=1e-6)
    assert [e.step for e in acc.Scalars("eval/mean_return")] == [192, 384]
    assert acc.Scalars("eval/mean_return")[-1].value == pytest.approx(run.evaluator.results[-1]["eval/mean_return"])


def test_progress_bar_counts_steps_and_shows_return_and_sps(run):
    assert "384/384" in run.bar_out
    assert "sps=" in run.bar_out and "ret=" in run.bar_out


def test_checkpointer_keeps_the_last_k_and_the_latest_is_the_final_state(run):
    names = [p.name for p in run.checkpointer.checkpoints()]
    assert names == ["ckpt_000000000320.frl", "ckpt_000000000384.frl"]
    assert len(run.checkpointer.saved) == 6  # one per iteration; on_end did not write step 384 twice
    state, config, meta = checkpoint.load(checkpoint.latest_checkpoint(run.dir / "ckpt"))
    assert_trees_equal(state, run.state)
    assert config == TINY
    assert meta == {"agent_step": 384, "iteration": 6, "reason": "periodic"}


def test_checkpointer_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="every"):
        Checkpointer(tmp_path, every=0)
    for bad in (0, -1.0, float("nan"), float("inf"), True, "60"):
        with pytest.raises(ValueError, match="every_s"):
            Checkpointer(tmp_path, every_s=bad)
    with pytest.raises(ValueError, match="keep_last"):
        Checkpointer(tmp_path, keep_last=0)


def test_evaluator_is_deterministic_and_ignores_the_training_key(run):
    last = run.evaluator.results[-1]
    # Recomputed from scratch: the key depends only on the evaluator's seed and the iteration.
    returns, lengths = evaluate(jr.fold_in(jr.key(5), 6), run.state.learner.params, run.env, run.policy, episodes=4)
    assert last["eval/mean_return"] == pytest.approx(float(returns.double().mean()), abs=0)
    assert last["eval/mean_length"] == float(lengths.double().mean())
    assert torch.equal(returns, lengths.float())  # CartPole: reward 1 per step
    assert 8 <= last["eval/min_return"] <= last["eval/mean_return"] <= last["eval/max_return"] <= 500
    again = Evaluator(run.env, run.policy, every=3, episodes=4, seed=5)
    other_key = run.state.replace(key=jr.key(12345))
    assert again.run(run.state) == last
    assert again.run(other_key) == last  # the training key is never read
    assert torch.equal(other_key.key, jr.key(12345))  # nor advanced


def test_training_with_and_without_the_evaluator_is_bit_identical(run):
    env = make("CartPole-v1")
    policy = _policy(env)
    state, history = frl.functional_training_loop(TINY, env=env, policy=policy, compile=False)
    assert_trees_equal(state, run.state)
    assert [h["value_loss"] for h in history] == [h["value_loss"] for h in run.history]


def test_grouped_renames_and_keeps_counters_as_ints():
    out = grouped({"agent_step": 64.0, "iteration": 2.0, "grad_norm": 0.5, "curiosity": 1.0, "eval/x": 3.0})
    assert out == {"agent_step": 64, "iteration": 2, "grad/global_norm": 0.5, "custom/curiosity": 1.0, "eval/x": 3.0}


# ---------------------------------------------------------------------------- wandb
def test_wandb_logger_says_how_to_install_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'functional-rl\[wandb\]'"):
        WandbLogger(project="p")


class _FakeRun:
    def __init__(self):
        self.logged, self.finished = [], []

    def log(self, data, step):
        self.logged.append((step, data))

    def finish(self, exit_code=None):
        self.finished.append(exit_code)


def _fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.inits, module.runs = [], []

    def init(**kwargs):
        module.inits.append(kwargs)
        module.runs.append(_FakeRun())
        return module.runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_logger_logs_grouped_metrics_offline_at_agent_steps(monkeypatch, tmp_path):
    wandb = _fake_wandb(monkeypatch)
    cfg = TINY.replace(total_timesteps=128)
    _, history = frl.functional_training_loop(cfg, compile=False, callbacks=[WandbLogger("proj", dir=tmp_path / "w")])
    (kwargs,), (wrun,) = wandb.inits, wandb.runs
    assert kwargs["project"] == "proj" and kwargs["mode"] == "offline" and kwargs["config"] == cfg.to_dict()
    assert [step for step, _ in wrun.logged] == [64, 128]
    for (_, data), h in zip(wrun.logged, history):
        assert data["losses/value_loss"] == h["value_loss"] and data["optimizer/lr"] == h["learning_rate"]
        assert "agent_step" not in data and all(math.isfinite(v) for v in data.values())
    assert wrun.finished == [None]


# ---------------------------------------------------------------------------- failures
class Recorder:
    def __init__(self, fail_at=None, exc=RuntimeError):
        self.events, self.fail_at, self.exc = [], fail_at, exc

    def on_start(self, state, config):
        self.events.append(("start", int(state.iteration)))

    def on_iteration(self, state, metrics):
        self.events.append(("iteration", metrics["iteration"]))
        if self.fail_at == metrics["iteration"]:
            raise self.exc("callback broke")

    def on_end(self, state):
        self.events.append(("end", int(state.iteration)))

    def on_failure(self, state, exc):
        self.events.append(("failure", int(state.iteration), type(exc).__name__))


@pytest.fixture(scope="module")
def two_iterations():
    """The state after 2 uninterrupted iterations: what a failure checkpoint must hold."""
    state, _ = frl.functional_training_loop(TINY, compile=False, max_iterations=2)
    return state


def _failing_step(at, exc):
    def step(state, kernel):
        if int(state.iteration) == at:
            raise exc("step broke")
        return frl.train_iteration(state, kernel)

    return step


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_an_exception_in_a_step_checkpoints_the_last_good_state_and_is_reraised(tmp_path, two_iterations, exc):
    before, after = Recorder(), Recorder()
    ck = Checkpointer(tmp_path / "ckpt", every=100)  # only the failure writes
    jsonl = JSONLWriter(tmp_path / "m.jsonl")
    with pytest.raises(exc, match="step broke"):
        frl.functional_training_loop(TINY, compile=False, step_fn=_failing_step(2, exc),
                                     callbacks=[before, ck, jsonl, after])
    for rec in (before, after):
        assert rec.events == [("start", 0), ("iteration", 1), ("iteration", 2), ("failure", 2, exc.__name__)]
    (path,) = ck.checkpoints()
    assert path.name == "ckpt_000000000128.frl"
    state, config, meta = checkpoint.load(path)
    assert meta["reason"] == "failure" and meta["iteration"] == 2
    assert_trees_equal(state, two_iterations)
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 2  # flushed and closed


def test_an_exception_in_a_callback_checkpoints_the_last_good_state_and_is_reraised(tmp_path, two_iterations):
    bad, other = Recorder(fail_at=2), Recorder()
    ck = Checkpointer(tmp_path / "ckpt", every=100)
    with pytest.raises(RuntimeError, match="callback broke"):
        frl.functional_training_loop(TINY, compile=False, callbacks=[bad, ck, other])
    # Iteration 2 finished before its callbacks ran, so its state is the last good one.
    assert bad.events[-1] == other.events[-1] == ("failure", 2, "RuntimeError")
    assert ("iteration", 2) not in other.events  # the loop stopped at the failing callback
    (path,) = ck.checkpoints()
    state, _, meta = checkpoint.load(path)
    assert meta["reason"] == "failure"
    assert_trees_equal(state, two_iterations)


def test_evaluator_feeds_the_policy_what_the_rollout_feeds_it():
    """Normalised observations (statistics frozen) and the one-hot last action, zero at a reset."""
    from functional_rl.kernel import normalize
    from functional_rl.shell.build import default_policy

    cfg = TINY.replace(normalize_obs=True, last_action=True, total_timesteps=128)
    env = make("CartPole-v1")
    policy = default_policy(cfg, env)  # input: 4 obs + 2 (one-hot of the last action)
    ev = Evaluator(env, policy, every=2, episodes=3, seed=1)
    state, _ = frl.functional_training_loop(cfg, env=env, policy=policy, compile=False, callbacks=[ev])
    assert state.learner.obs_norm is not None and state.envs.last_action.shape == (4, 2)

    # The same episodes written out by hand.
    key = jr.fold_in(jr.key(1), 2)
    k_reset, key = jr.split(key, 2).unbind(0)
    obs, env_state = env.reset(k_reset, env.default_params(), 3)
    last, ret, done = torch.zeros(3, 2), torch.zeros(3), torch.zeros(3, dtype=torch.bool)
    while not bool(done.all()):
        key, k_step = jr.split(key, 2).unbind(0)
        x = torch.cat([normalize.obs_norm_apply(state.learner.obs_norm, obs), last], dim=-1)
        action = policy.apply(state.learner.params, x)["logits"].argmax(-1)
        obs, env_state, reward, term, trunc, _ = env.step(k_step, env_state, action, env.default_params())
        ret += torch.where(done, 0.0, reward)
        last = torch.where((term | trunc)[:, None], 0.0, torch.nn.functional.one_hot(action, 2).float())
        done |= term | trunc
    assert ev.results[-1]["eval/mean_return"] == float(ret.double().mean())
    assert ev.run(state) == ev.results[-1]  # the statistics are read, never updated


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def _iteration_rows(n, steps=1000):
    return [{"agent_step": steps * i, "iteration": i, "episodes": 1, "episode_return": 10.0 * i, "entropy": 0.5,
             "sps": 1.0, "time_s": 1.0} for i in range(1, n + 1)]


def test_steady_rate_leaves_out_the_first_iteration():
    clock = FakeClock()
    rate = SteadyRate(clock)
    rate.start()
    clock.t = 85.0  # a compile of 85 s inside the first iteration
    rate.update(1000)
    assert rate.rate is None and rate.eta(10_000) is None and rate.first_s == 85.0
    for i in range(2, 5):
        clock.t += 0.1
        rate.update(1000 * i)
    assert rate.rate == pytest.approx(10_000) and rate.eta(10_000) == pytest.approx(0.6)
    # A rate counted from the start, as before, would read 4000 / 85.3 s = 47 steps/s.


def test_console_logger_and_progress_bar_agree_and_exclude_the_compile(tmp_path):
    """Same fake clock, same fake metrics: the same steps/s and ETA; the compile is not in them."""
    cfg = frl.PPOConfig(num_envs=8, num_steps=125, num_minibatches=1, update_epochs=1, total_timesteps=10_000)
    state = SimpleNamespace(agent_step=torch.tensor(0), iteration=torch.tensor(0))
    clock, out, bar_out = FakeClock(), io.StringIO(), io.StringIO()
    log = ConsoleLogger(every=1, stream=out, clock=clock)
    bar = ProgressBar(stream=bar_out, disable=False, mininterval=0, clock=clock)
    log.on_start(state, cfg)
    bar.on_start(state, cfg)
    postfixes = []
    for i, row in enumerate(_iteration_rows(4), start=1):
        clock.t = 60.0 if i == 1 else clock.t + 0.5  # 60 s of compile, then 1000 steps per 0.5 s
        log.on_iteration(state, row)
        bar.on_iteration(state, row)
        postfixes.append(bar.bar.postfix)
    bar.close()
    lines = out.getvalue().splitlines()[1:]
    assert re.search(r"sps\s+n/a .* eta\s+n/a$", lines[0])
    for line, postfix in zip(lines[1:], postfixes[1:]):
        sps, eta = re.search(r"sps\s+(\d+) .* eta\s+(\d+)s$", line).groups()
        assert sps == "2000" and f"sps={sps}" in postfix and f"eta={eta}s" in postfix
    assert lines[1].endswith("eta     4s") and lines[3].endswith("eta     3s")  # (10000 - 2000) / 2000, 6000 / 2000
    assert "sps=n/a" in postfixes[0] and "eta=n/a" in postfixes[0]
    log.on_end(SimpleNamespace(agent_step=torch.tensor(4000)))
    assert "in 61.5s (first iteration 60.0s with any compile; then 2000 steps/s)" in out.getvalue()


def test_compile_notice_prints_elapsed_seconds_from_a_thread_until_the_first_iteration():
    clock, out = FakeClock(), io.StringIO()
    lines_written = threading.Event()

    class Stream(io.StringIO):
        def write(self, text):
            if out.getvalue().count("still compiling") >= 2:
                lines_written.set()
            return out.write(text)

    notice = CompileNotice(stream=Stream(), every_s=0.01, clock=clock)
    notice.on_start(None, None)
    clock.t = 12.0
    assert lines_written.wait(10), out.getvalue()
    clock.t = 42.5
    notice.on_iteration(None, {"iteration": 1})
    assert not any(t.name == "frl-compile-notice" for t in threading.enumerate())  # stopped and joined
    text = out.getvalue()
    assert text.startswith(CompileNotice.MESSAGE + "\n") and "  still compiling: 12 s\n" in text
    assert text.endswith("first iteration done in 42.5 s (compile included); steps/s from here on leave it out\n")
    notice.on_iteration(None, {"iteration": 2})  # only the first iteration is announced
    time.sleep(0.05)
    assert out.getvalue() == text


def test_compile_notice_stops_its_thread_on_failure():
    notice = CompileNotice(stream=io.StringIO(), every_s=0.01)
    notice.on_start(None, None)
    notice.on_failure(None, RuntimeError("compile broke"))
    assert not any(t.name == "frl-compile-notice" for t in threading.enumerate())
    with pytest.raises(ValueError, match="every_s"):
        CompileNotice(every_s=0)


def test_time_based_checkpointer_saves_the_start_every_s_seconds_and_never_rewrites_a_resumed_step(tmp_path):
    env = make("CartPole-v1")
    state = frl.init_state(TINY, env, _policy(env))
    clock = FakeClock()
    ck = Checkpointer(tmp_path, every_s=60, save_on_start=True, clock=clock)
    ck.on_start(state, TINY)
    for i, t in enumerate([20.0, 59.9, 60.0, 100.0, 121.0], start=1):  # saves at 60 s and 121 s (61 s later)
        clock.t = t
        ck.on_iteration(state.replace(agent_step=torch.tensor(64 * i), iteration=torch.tensor(i)), {"iteration": i})
    assert [p.name for p in ck.saved] == [checkpoint.checkpoint_path(tmp_path, s).name for s in (0, 192, 320)]
    assert [checkpoint.load(p)[2]["reason"] for p in ck.saved] == ["start", "periodic", "periodic"]
    # A resumed run starts from the step it loaded: on_start and an early failure do not rewrite it.
    resumed = Checkpointer(tmp_path, every_s=60, save_on_start=True, clock=clock)
    latest = ck.saved[-1]
    mtime = latest.stat().st_mtime_ns
    resumed.on_start(state.replace(agent_step=torch.tensor(320), iteration=torch.tensor(5)), TINY)
    resumed.on_failure(state.replace(agent_step=torch.tensor(320), iteration=torch.tensor(5)), RuntimeError())
    assert resumed.saved == [] and latest.stat().st_mtime_ns == mtime
