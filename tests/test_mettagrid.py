"""mettagrid through the PettingZoo adapter: token observations, the registered ids, training
by library and CLI, and learning on mettagrid/small. The missing-extra path runs without it."""

import sys

import numpy as np
import pytest
import torch

import functional_rl as frl
import functional_rl.kernel.random as jr
from functional_rl.envs import make
from functional_rl.kernel.token_policy import EMPTY, GLOBAL, TokenBox, tokens_to_grid
from functional_rl.shell.cli import main


@pytest.fixture(scope="module")
def mettagrid():
    return pytest.importorskip("mettagrid")


def test_without_the_extra_the_ids_say_what_to_install(monkeypatch, tmp_path, capsys):
    from functional_rl.envs.mettagrid import MettagridMissingError

    monkeypatch.setitem(sys.modules, "mettagrid", None)  # import mettagrid now raises ImportError
    monkeypatch.setitem(sys.modules, "mettagrid.envs.pettingzoo_env", None)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MettagridMissingError, match=r'pip install "functional-rl\[mettagrid\]"'):
        make("mettagrid/small")
    assert main(["train", "mettagrid/small", "--no-compile"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "functional-rl[mettagrid]"' in err and len(err.strip().splitlines()) == 1
    assert main(["list-envs"]) == 0
    out = capsys.readouterr().out
    assert "CartPole-v1" in out and "mettagrid/small" in out and "needs the mettagrid extra" in out


def test_tokens_scatter_into_the_feature_grid(mettagrid):
    env = make("mettagrid/small", num_envs=2)
    space = env.observation_space
    assert isinstance(space, TokenBox) and space.shape == (48, 3) and space.grid == (7, 7) and env.num_agents == 4
    obs, _ = env.reset(jr.key(0), None, 8)
    image, glob = tokens_to_grid(obs, space)
    C = space.num_features
    assert image.shape == (8, 2 * C, 7, 7) and glob.shape == (8, C)
    scale = torch.tensor(space.feature_scale)
    for b in range(8):
        tokens = obs[b][obs[b, :, 0] != EMPTY]
        assert len(tokens) > 0
        for loc, feat, value in tokens.long().tolist():
            if loc == GLOBAL:
                assert glob[b, feat] == pytest.approx(value / scale[feat].item())
            else:
                assert image[b, feat, loc >> 4, loc & 15] == pytest.approx(value / scale[feat].item())
                assert image[b, C + feat, loc >> 4, loc & 15] == 1  # present, whatever its value
        cell = tokens[:, 0] != GLOBAL
        assert (image[b, :C] != 0).sum() == (cell & (tokens[:, 2] != 0)).sum() and image[b, C:].sum() == cell.sum()
        assert image[b, C:, 3, 3].sum() > 0  # the agent sees itself at the window's centre


def test_adapter_rows_match_mettagrids_own_rewards(mettagrid):
    env = make("mettagrid/small", num_envs=2)
    _, state = env.reset(jr.key(0), None, 8)
    total = torch.zeros(8)
    for t in range(63):  # one step short of the 64-step episode: the simulators still hold their tallies
        out = env.step(jr.key(t + 1), state, jr.randint(jr.key(100 + t), (8,), 0, 5), None)
        total, state = total + out.reward, out.state
        assert not (out.terminated | out.truncated).any()
    native = torch.tensor(np.concatenate([np.asarray(e._sim.episode_rewards, dtype=np.float32) for e in env._envs]))
    assert torch.allclose(total, native) and total.sum() > 0  # row c * 4 + i is agent i of copy c; random earns a little
    out = env.step(jr.key(64), state, torch.zeros(8, dtype=torch.int64), None)
    assert (out.terminated | out.truncated).all() and env.valid_mask(out.state, None).all()


@pytest.fixture(scope="module")
def trained(mettagrid):
    cfg = frl.PPOConfig(num_envs=16, num_steps=16, num_minibatches=2, update_epochs=1, policy="token", hidden_sizes=(32,),
                        total_timesteps=16 * 16 * 3)
    env = make("mettagrid/small")
    state, history = frl.functional_training_loop(cfg, env=env, compile=False)
    return cfg, env, state, history


def test_a_short_library_run_trains_and_counts_agent_steps(trained):
    cfg, env, state, history = trained
    assert len(history) == 3 and int(state.agent_step) == 16 * 16 * 3
    assert env.num_envs == 16  # 4 copies of 4 agents, decided at the first reset
    assert all(np.isfinite(h["total_loss"]) for h in history)


def test_the_cli_trains_resumes_and_evaluates_mettagrid_small(mettagrid, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sets = ["--set", "policy=token", "--set", "num_envs=8", "--set", "num_steps=16", "--set", "num_minibatches=2",
            "--set", "update_epochs=1", "--no-compile", "--progress", "none"]
    assert main(["train", "mettagrid/small", "--total-timesteps", "256", *sets]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("mettagrid-small-1-")  # the id's slash does not nest directories
    assert main(["resume", str(run), "--total-timesteps", "512", "--no-compile", "--progress", "none"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "2"]) == 0  # rounded up to one copy of 4 agents
    out = capsys.readouterr().out
    assert "mettagrid/small" in out and "step 512" in out and "over 4 greedy episodes" in out
    assert main(["list-envs"]) == 0
    listing = capsys.readouterr().out
    line = next(s for s in listing.splitlines() if s.startswith("mettagrid/small"))
    assert "agents 4" in line and "(48, 3)" in line
    assert "agents" not in next(s for s in listing.splitlines() if s.startswith("CartPole-v1"))


def random_reward(episodes=32):
    env = make("mettagrid/small", num_envs=8)
    _, state = env.reset(jr.key(0), None, 32)
    total, ended, t = 0.0, 0, 0
    while ended < episodes * 4:
        out = env.step(jr.key(t), state, jr.randint(jr.key(1000 + t), (32,), 0, 5), None)
        total += float(out.reward.sum())
        ended += int((out.terminated | out.truncated).sum())
        t += 1
    return total / ended


@pytest.mark.slow
def test_ppo_learns_mettagrid_small_to_twice_random(mettagrid):
    torch.set_num_threads(1)
    rand = random_reward()
    assert 1.0 < rand < 15.0
    cfg = frl.PPOConfig(num_envs=64, num_steps=32, num_minibatches=2, update_epochs=4, learning_rate=2e-3, gamma=0.95,
                        ent_coef=0.01, policy="token", hidden_sizes=(128,), total_timesteps=64 * 32 * 30, seed=0)
    _, history = frl.functional_training_loop(cfg, env=make("mettagrid/small"), compile=False)
    late = float(np.nanmean([h["episode_return"] for h in history[-6:]]))  # 32-step rollouts: episodes end every other one
    assert late >= 2 * rand, (rand, late, [round(h["episode_return"], 1) for h in history])


def test_the_readme_many_agents_example_runs(mettagrid):
    import re

    from tests.test_readme_examples import _section

    (code,) = re.findall(r"```python\n(.*?)```", _section("Many agents: PettingZoo and mettagrid"), re.S)
    assert "total_timesteps=100_000" in code
    namespace: dict = {}
    exec(compile(code.replace("total_timesteps=100_000", "total_timesteps=64 * 32"), "README.md", "exec"), namespace)
    assert int(namespace["state"].agent_step) == 64 * 32 and namespace["env"].num_envs == 8
