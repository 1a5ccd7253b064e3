"""Data-parallel training on torch.distributed (gloo, CPU), in real separate processes.

* 2 processes x 2 envs train exactly what 1 process x 4 envs trains (same per-env keys),
  to float tolerance: parameters, optimizer state, env state, counters and metrics.
* functional-rl train/resume under torchrun: one run dir, rank 0 logs and checkpoints the
  whole run's state, and a 2-process resume continues bit for bit.
* a process that dies or hangs makes the others stop with DistributedError, not hang, and the
  last checkpoint stays loadable.
* the pieces: per-env key streams, minibatches stratified by env, the sum-over-processes helper.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
import torch
import torch.utils._pytree as pytree

import functional_rl.kernel.random as jr
from functional_rl.shell import checkpoint
from functional_rl.kernel.config import PPOConfig
from functional_rl.shell.distributed import DistributedError, Replica, check_config, local_share
from functional_rl.envs import make
from functional_rl.shell.loop import functional_training_loop
from functional_rl.kernel.state import TrainerState
from functional_rl.kernel.parallel import sum_over_processes
from functional_rl.kernel.update import advantage_stats, minibatch_order
from tests.distributed_worker import small_config

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def _torchrun(*args: str, nproc: int = 2, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leaves(state) -> list[torch.Tensor]:
    return [x for x in pytree.tree_leaves(state) if isinstance(x, torch.Tensor)]


def _assert_states_close(a, b, atol: float) -> None:
    pa, sa = pytree.tree_flatten_with_path(a)
    pb, sb = pytree.tree_flatten_with_path(b)
    assert sa == sb
    for (path, x), (_, y) in zip(pa, pb):
        where = pytree.keystr(path)
        if not isinstance(x, torch.Tensor):
            assert x == y, where
            continue
        assert x.shape == y.shape and x.dtype == y.dtype, where
        if x.is_floating_point():
            torch.testing.assert_close(x, y, atol=atol, rtol=1e-4, msg=lambda m: f"{where}: {m}")
        else:
            assert torch.equal(x, y), where


# ---------------------------------------------------------------------------- equivalence
@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[TrainerState, list[dict]]:
    """2 processes x 2 envs, 4 iterations, eager, under torchrun."""
    out = tmp_path_factory.mktemp("dist") / "final.frl"
    _torchrun(str(WORKER), "--envs", "2", "--iters", "4", "--out", str(out))
    state, _, _ = checkpoint.load(out)
    return state, json.loads(Path(str(out) + ".json").read_text())


@pytest.fixture(scope="module")
def one_process_run() -> tuple[TrainerState, list[dict]]:
    """1 process x 4 envs, same config otherwise."""
    torch.set_num_threads(1)
    return functional_training_loop(small_config(4), compile=False, max_iterations=4)


def test_two_processes_equal_one_process_with_all_envs(two_process_run, one_process_run):
    (dist_state, dist_hist), (one_state, one_hist) = two_process_run, one_process_run
    assert dist_state.envs.env_ids.tolist() == [0, 1, 2, 3]
    assert int(dist_state.agent_step) == int(one_state.agent_step) == 4 * 16 * 4
    _assert_states_close(dist_state, one_state, atol=1e-5)
    # every parameter moved, so the comparison is not of untouched initial values
    init = TrainerState.create(small_config(4), make("CartPole-v1"), one_state_policy())
    assert all(not torch.equal(a, b) for a, b in zip(_leaves(init.learner.params), _leaves(one_state.learner.params)))
    # metrics are over the whole run on every process: the same numbers as the one process
    assert len(dist_hist) == len(one_hist) == 4
    for d, o in zip(dist_hist, one_hist):
        assert d["agent_step"] == o["agent_step"] and d["episodes"] == o["episodes"]
        for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm", "explained_variance", "learning_rate"):
            assert d[name] == pytest.approx(o[name], rel=1e-4, abs=1e-6), name
        if o["episodes"]:
            assert d["episode_return"] == pytest.approx(o["episode_return"], rel=1e-6)


def one_state_policy():
    from functional_rl.shell.build import default_policy

    return default_policy(small_config(4), make("CartPole-v1"))


def test_normalisation_and_last_action_across_processes(tmp_path):
    """Observation/reward statistics reduced over processes, per-env return accumulators and
    last actions gathered: 2 x 2 envs equal 1 x 4 envs with every stateful feature on."""
    out = tmp_path / "features.frl"
    _torchrun(str(WORKER), "--envs", "2", "--iters", "3", "--out", str(out), "--features")
    dist_state, _, _ = checkpoint.load(out)
    cfg = small_config(4, normalize_obs=True, normalize_reward=True, last_action=True)
    one_state, _ = functional_training_loop(cfg, compile=False, max_iterations=3)
    assert dist_state.envs.discounted_return.shape == (4,) and dist_state.envs.last_action.shape == (4, 2)
    assert float(one_state.learner.obs_norm.count) > 3 * 16 * 4  # the statistics saw every env's observations
    _assert_states_close(dist_state, one_state, atol=1e-5)


def test_recurrent_policy_across_processes(tmp_path):
    """An LSTM with every stateful feature: each process keeps its envs' carries and replays
    whole sequences; 2 x 2 envs equal 1 x 4 envs (minibatches of whole envs, one per block)."""
    out = tmp_path / "lstm.frl"
    _torchrun(str(WORKER), "--envs", "2", "--iters", "3", "--out", str(out), "--features", "--policy", "lstm")
    dist_state, _, _ = checkpoint.load(out)
    cfg = small_config(4, normalize_obs=True, normalize_reward=True, last_action=True, policy="lstm")
    one_state, _ = functional_training_loop(cfg, compile=False, max_iterations=3)
    assert dist_state.envs.carry.shape == (4, 32)
    _assert_states_close(dist_state, one_state, atol=1e-5)


def test_processes_split_differently_still_agree(two_process_run, tmp_path):
    """A 4-process x 1-env run agrees with the 2 x 2 run: the split does not matter."""
    out = tmp_path / "final.frl"
    _torchrun(str(WORKER), "--envs", "1", "--iters", "4", "--out", str(out), nproc=4)
    state, _, _ = checkpoint.load(out)
    _assert_states_close(state, two_process_run[0], atol=1e-5)


# ---------------------------------------------------------------------------- CLI and resume
def test_cli_under_torchrun_logs_once_and_resumes_exactly(tmp_path):
    common = ["--no-compile", "--progress", "log", "--total-timesteps", "512",
              "--set", "num_envs=2", "--set", "num_steps=16", "--set", "num_minibatches=2", "--set", "update_epochs=2",
              "--set", "hidden_sizes=[16]"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    _torchrun("-m", "functional_rl", "train", "CartPole-v1", "--run-dir", str(straight), *common)
    out = _torchrun("-m", "functional_rl", "train", "CartPole-v1", "--run-dir", str(split), *common,
                    "--stop-after-iterations", "3")
    assert out.stdout.count("run dir:") == 2  # rank 0 only: "run dir: ..." at the start and the end
    cfg = json.loads((split / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["num_envs"] == 2
    _torchrun("-m", "functional_rl", "resume", str(split), "--progress", "log")

    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    steps = [r["agent_step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 512  # one row per iteration: only rank 0 logs
    a, _, _ = checkpoint.load(checkpoint.latest_checkpoint(straight / "checkpoints"))
    b, cfg_b, _ = checkpoint.load(checkpoint.latest_checkpoint(split / "checkpoints"))
    assert cfg_b.world_size == 2 and b.envs.env_ids.tolist() == [0, 1, 2, 3] and int(b.agent_step) == 512
    for x, y in zip(_leaves(a), _leaves(b)):
        assert torch.equal(x, y)  # stopped after 3 iterations and resumed == never stopped


def test_resume_with_another_process_count_is_refused(tmp_path):
    state = TrainerState.create(small_config(4), make("CartPole-v1"), one_state_policy())
    with pytest.raises(DistributedError, match="the state holds 4 envs, but 3 processes with num_envs=2 need 6"):
        local_share(state, Replica(rank=0, world_size=3, local_rank=0, backend="gloo", owned=False), 2)
    share = local_share(state, Replica(rank=1, world_size=2, local_rank=1, backend="gloo", owned=False), 2)
    assert share.envs.env_ids.tolist() == [2, 3] and torch.equal(share.envs.obs, state.envs.obs[2:])
    assert all(a is b for a, b in zip(_leaves(share.learner.params), _leaves(state.learner.params)))  # shared, not copied


# ---------------------------------------------------------------------------- failures
def _launch_by_hand(tmp_path: Path, *args: str, timeout_s: int) -> tuple[subprocess.Popen, subprocess.Popen]:
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = _env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                   FUNCTIONAL_RL_DIST_TIMEOUT_S=str(timeout_s))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), *args], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs[0], procs[1]


@pytest.mark.parametrize("how", ["die", "hang"])
def test_a_lost_process_stops_the_others_with_a_clear_error(tmp_path, how):
    ckpt = tmp_path / "ckpt"
    timeout_s = 10
    r0, r1 = _launch_by_hand(tmp_path, "--envs", "2", "--iters", "6", "--out", str(tmp_path / "x.frl"),
                             "--ckpt-dir", str(ckpt), f"--{how}-at", "3", timeout_s=timeout_s)
    try:
        _, err0 = r0.communicate(timeout=240)
        if how == "die":
            assert r1.wait(timeout=60) == 17
    finally:
        r1.kill()
        r1.wait()
    assert r0.returncode != 0
    assert "DistributedError: rank 0 of 2: a collective with the other processes failed" in err0, err0[-3000:]
    # the last good state (after iteration 2) is checkpointed and loads; it is the whole run's
    latest = checkpoint.latest_checkpoint(ckpt)
    state, cfg, meta = checkpoint.load(latest)
    assert int(state.iteration) == 2 and state.envs.env_ids.tolist() == [0, 1, 2, 3] and cfg.world_size == 2


def test_timeout_is_bounded_when_a_process_hangs(tmp_path):
    """The hung peer case finishes near the configured timeout, not the 30-minute default."""
    t0 = time.monotonic()
    r0, r1 = _launch_by_hand(tmp_path, "--envs", "2", "--iters", "3", "--out", str(tmp_path / "x.frl"),
                             "--hang-at", "2", timeout_s=5)
    try:
        _, err0 = r0.communicate(timeout=240)
    finally:
        r1.kill()
        r1.wait()
    assert r0.returncode != 0 and "DistributedError" in err0
    assert time.monotonic() - t0 < 120


def test_unsupported_features_are_refused_with_a_reason():
    r = Replica(rank=0, world_size=2, local_rank=0, backend="gloo", owned=False)
    with pytest.raises(DistributedError, match="curriculum is not supported"):
        check_config(PPOConfig(), r, curriculum=object())
    with pytest.raises(DistributedError, match="world_size=3 but 2 processes were launched"):
        check_config(PPOConfig(world_size=3), r)


# ---------------------------------------------------------------------------- the pieces
def test_env_streams_do_not_depend_on_the_batch_around_them():
    """Env g's reset, actions and minibatch slots are the same in a batch of 4 and in a share of 2."""
    cfg4, cfg2 = small_config(4), small_config(2)
    env = make("CartPole-v1")
    policy = one_state_policy()
    whole = TrainerState.create(cfg4, env, policy)
    share = TrainerState.create(cfg2, env, policy, env_offset=2)
    assert torch.equal(share.envs.obs, whole.envs.obs[2:]) and share.envs.env_ids.tolist() == [2, 3]
    from functional_rl.kernel.rollout import policy_act

    a4 = policy_act(whole, policy=policy, action_space=env.action_space)
    a2 = policy_act(share, policy=policy, action_space=env.action_space)
    assert torch.equal(a2["action"], a4["action"][2:]) and torch.equal(a2["k_env"], a4["k_env"][2:])
    o4 = minibatch_order(jr.key(3), whole.envs.env_ids, 16, 2).reshape(2, -1)
    o2 = minibatch_order(jr.key(3), share.envs.env_ids, 16, 2).reshape(2, -1)
    for m in range(2):  # minibatch m of the share is the share's envs' part of minibatch m, t * B + b
        expect = [(i // 4) * 2 + (i % 4 - 2) for i in o4[m].tolist() if i % 4 >= 2]
        assert o2[m].tolist() == expect


def test_sum_over_processes_and_advantage_stats_with_a_stand_in_group():
    """Two "processes" as halves of one batch: sums and statistics equal the whole batch's."""
    adv = torch.randn(64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    halves = adv[:32], adv[32:]
    sums = [torch.stack([torch.tensor(32.0, dtype=torch.float64), h.double().sum(), h.double().pow(2).sum()]) for h in halves]
    mean, std = advantage_stats(halves[0], lambda buf: buf - sums[0] + sums[0] + sums[1])
    torch.testing.assert_close(mean, adv.mean(), atol=1e-6, rtol=0)
    torch.testing.assert_close(std, adv.std(), atol=1e-6, rtol=0)
    a, b = sum_over_processes([torch.ones(2, 3), torch.tensor([1, 2])], lambda buf: buf * 2)
    assert a.shape == (2, 3) and torch.equal(a, torch.full((2, 3), 2.0)) and torch.equal(b, torch.tensor([2, 4]))


@pytest.mark.slow
def test_compiled_two_process_run_matches_eager(two_process_run, tmp_path):
    """The compiled update carries its collectives inside the graph and computes the same."""
    out = tmp_path / "compiled.frl"
    _torchrun(str(WORKER), "--envs", "2", "--iters", "4", "--out", str(out), "--compile", timeout=900)
    state, _, _ = checkpoint.load(out)
    _assert_states_close(state, two_process_run[0], atol=1e-4)


def _random_actions(key, space, n):
    from functional_rl.envs import Discrete

    if isinstance(space, Discrete):
        return jr.randint(key, (n,), 0, space.n)
    return jr.uniform(key, (n, *space.shape), low=space.low_tensor(), high=space.high_tensor())


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0",
                                    "Pendulum-v1", "Probe2-v0", "Probe5-v0"])
def test_every_env_draws_row_b_from_key_b_only(env_id):
    """reset/step of a batch with per-env keys, cut to envs lo..hi, equals the run of those envs
    alone, through 120 steps of random actions (past 40-step time limits: auto-resets included)."""
    env = make(env_id)
    params = env.default_params()
    if hasattr(params, "max_steps"):
        params = params.replace(max_steps=40)  # cross several time limits quickly
    B, lo, hi = 5, 1, 4
    keys = jr.fold_in(jr.key(11)[None], torch.arange(B))
    obs, s = env.reset(keys, params, B)
    obs_part, s_part = env.reset(keys[lo:hi], params, hi - lo)
    resets = 0
    for t in range(120):
        k_step = jr.fold_in(jr.fold_in(jr.key(5), t)[None], torch.arange(B))
        action = _random_actions(jr.fold_in(jr.key(7), t), env.action_space, B)
        obs, s, r, term, trunc, final_obs = env.step(k_step, s, action, params)
        obs_part, s_part, r_p, term_p, trunc_p, _ = env.step(k_step[lo:hi], s_part, action[lo:hi], params)
        assert torch.equal(obs[lo:hi], obs_part) and torch.equal(r[lo:hi], r_p)
        assert torch.equal(term[lo:hi], term_p) and torch.equal(trunc[lo:hi], trunc_p)
        resets += int((term | trunc)[lo:hi].sum())
    assert resets > 0, "the test should cross episode ends"
    # one key [2] stands for the per-env keys row_keys(key, arange(B))
    single, _ = env.reset(jr.key(11), params, B)
    assert torch.equal(single, env.reset(jr.row_keys(jr.key(11), torch.arange(B)), params, B)[0])


@given(st.integers(1, 5), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**31 - 1), st.data())
@settings(max_examples=60, deadline=None)
def test_minibatch_order_is_a_stratified_permutation_and_splits_by_env(B, M, per, seed, data):
    T = M * per
    ids = torch.arange(B)
    order = minibatch_order(jr.key(seed), ids, T, M)
    assert sorted(order.tolist()) == list(range(T * B))
    for mb in order.reshape(M, -1).tolist():  # every minibatch: `per` steps of each env
        assert sorted(i % B for i in mb) == sorted(list(range(B)) * per)
    # any contiguous group of envs (a process's share) gets its envs' part of each minibatch
    lo = data.draw(st.integers(0, B - 1))
    hi = data.draw(st.integers(lo + 1, B))
    part = minibatch_order(jr.key(seed), ids[lo:hi], T, M).reshape(M, -1).tolist()
    for m, mb in enumerate(order.reshape(M, -1).tolist()):
        expect = [(i // B) * (hi - lo) + (i % B - lo) for i in mb if lo <= i % B < hi]
        assert part[m] == expect


def test_batched_keys_must_match_the_rows():
    with pytest.raises(ValueError, match=r"a batch of keys \(3, 2\) must match the leading dims of the sample shape \(2, 4\)"):
        jr.categorical(jr.split(jr.key(0), 3), torch.zeros(2, 4))
    logits = torch.zeros(3, 4)
    keys = jr.split(jr.key(0), 3)
    assert torch.equal(jr.categorical(keys, logits)[1:], jr.categorical(keys[1:], logits[1:]))


def test_cli_resume_of_a_multi_process_run_without_torchrun_says_how(tmp_path, capsys):
    from functional_rl.shell.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(small_config(2, world_size=2).to_dict()))
    assert main(["resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"this run was trained by 2 processes; launch it the same way: torchrun --nproc-per-node 2 -m functional_rl resume {run}" in err
