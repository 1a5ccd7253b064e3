"""Shipping the policy: the exported greedy actor (ONNX in onnxruntime, a ``torch.export``
program in torch) gives the library's greedy actions, observation normalisation included."""

import pytest
import torch

import functional_rl.kernel.random as jr
from functional_rl.envs import Box, MultiDiscrete, make
from functional_rl.envs.base import Box as BoxSpace
from functional_rl.kernel.distributions import mask_logits
from functional_rl.kernel.normalize import obs_norm_init, obs_norm_update
from functional_rl.kernel.policies import make_mlp_policy, make_policy
from functional_rl.kernel.rollout import env_action_mask, policy_input
from functional_rl.shell import checkpoint
from functional_rl.shell.callbacks import eval_params
from functional_rl.shell.cli import main
from functional_rl.shell.export import ExportError, export_actor, export_policy, greedy_actor, run_exported

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

N = 1000


def library_actions(policy, params, action_space, obs, obs_norm=None, mask=None):
    """What evaluate does: normalise, apply, mask, mode, clip a Box."""
    with torch.no_grad():
        outputs = mask_logits(policy.apply(params, policy_input(obs, obs_norm)), mask)
        action = policy.distribution.mode(outputs)
    if isinstance(action_space, BoxSpace):
        action = torch.clamp(action, action_space.low_tensor(), action_space.high_tensor())
    return action


def env_observations(env, n, seed=0, num_envs=8):
    """``n`` observations (and action masks) of random-action episodes."""
    params = env.default_params()
    obs, state = env.reset(jr.key(seed), params, num_envs)
    seen, masks = [], []
    t = 0
    while sum(len(o) for o in seen) < n:
        seen.append(obs)
        masks.append(env_action_mask(env, state, params))
        space = env.action_space
        if hasattr(space, "n"):
            mask = masks[-1]
            action = (torch.where(mask, jr.uniform(jr.key(1000 + t), mask.shape), -1.0).argmax(-1) if mask is not None
                      else jr.randint(jr.key(1000 + t), (num_envs,), 0, space.n))
        else:
            action = jr.uniform(jr.key(1000 + t), (num_envs, *space.shape)) * 4 - 2
        out = env.step(jr.key(t), state, action, params)
        obs, state, t = out.obs, out.state, t + 1
    cat = torch.cat(seen)[:n]
    return cat, (torch.cat(masks)[:n] if masks[0] is not None else None)


def both_formats(actor, tmp_path, observation_space, action_space, obs, mask=None):
    """The actions of the ONNX file (onnxruntime) and of the torch.export program, for ``obs``."""
    masked = mask is not None
    onnx_file = export_actor(actor, "onnx", tmp_path / "p.onnx", observation_space, action_space, masked=masked)
    program = export_actor(actor, "torch-export", tmp_path / "p.pt2", observation_space, action_space, masked=masked)
    return run_exported(onnx_file, obs, mask), run_exported(program, obs, mask)


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    """A short eager CartPole run with observation normalisation, trained through the CLI."""
    run = tmp_path_factory.mktemp("export") / "runs" / "cartpole"  # the README's path
    assert main(["train", "CartPole-v1", "--no-compile", "--total-timesteps", "2048", "--set", "normalize_obs=true",
                 "--run-dir", str(run), "--progress", "none"]) == 0
    state, config, _ = checkpoint.load(checkpoint.latest_checkpoint(run / "checkpoints"))
    return run, state, config


def test_cartpole_with_normalisation_onnx_and_torch_export_give_the_library_actions(cartpole_run, tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort

    run, state, config = cartpole_run
    env = make("CartPole-v1")
    norm = state.learner.obs_norm
    assert norm is not None and float(norm.count) > 1000 and float(norm.var.min()) != 1.0  # really normalising
    policy = make_policy(config.policy, env.observation_space, env.action_space, config.hidden_sizes, config.activation)
    obs, _ = env_observations(env, N - 100)
    obs = torch.cat([obs, torch.randn(100, 4, generator=torch.Generator().manual_seed(1)) * 30])  # the clip at 10 std too
    expected = library_actions(policy, eval_params(state), env.action_space, obs, norm)
    assert 0 < int(expected.sum()) < N  # both actions occur
    onnx_file = export_policy(run, "onnx", tmp_path / "cartpole.onnx")
    program = export_policy(run, "torch-export", tmp_path / "cartpole.pt2")
    for got in (run_exported(onnx_file, obs), run_exported(program, obs)):
        assert got.dtype == torch.int64 and got.shape == (N,)
        assert torch.equal(got, expected)
    # without the normaliser the actions would differ: the file does fold it in
    unnormalised = library_actions(policy, eval_params(state), env.action_space, obs)
    assert not torch.equal(unnormalised, expected)
    # the file runs in plain onnxruntime, batch dimension free, and says what it is
    session = ort.InferenceSession(str(onnx_file))
    (action,) = session.run(["action"], {"obs": np.zeros((5, 4), np.float32)})
    assert action.shape == (5,) and action.dtype == np.int64
    assert [i.name for i in session.get_inputs()] == ["obs"] and session.get_inputs()[0].shape == ["batch", 4]
    meta = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert meta["functional_rl.env_id"] == "CartPole-v1" and meta["functional_rl.obs_normalization"] == "folded in"


def test_the_readme_onnxruntime_example_runs(cartpole_run, monkeypatch):
    import re
    from pathlib import Path

    run, _, _ = cartpole_run
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("### Ship the policy\n")
    section = text[start:text.index("\n## ", start)]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    export_policy(run, "onnx")  # where the README's command writes it
    monkeypatch.chdir(run.parent.parent)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["action"].shape == (1,) and int(namespace["action"][0]) in (0, 1)


def test_cli_export_writes_and_checks_the_file(cartpole_run, tmp_path, capsys):
    run, _, _ = cartpole_run
    capsys.readouterr()
    assert main(["export", str(run), "--format", "torch-export", "--out", str(tmp_path / "p.pt2")]) == 0
    out = capsys.readouterr().out
    assert "same actions (0 differ)" in out and (tmp_path / "p.pt2").stat().st_size > 0
    assert main(["export", str(run), "--format", "tflite"]) == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_pendulum_box_actions_within_1e_5_clipped_to_the_bounds(tmp_path):
    env = make("Pendulum-v1")
    policy = make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(32, 32))
    params = policy.init(jr.key(4))
    params["actor"][-1]["w"] = params["actor"][-1]["w"] * 1000  # means beyond +-2, so the clip matters
    obs, _ = env_observations(env, N)
    norm = obs_norm_update(obs_norm_init((3,)), obs[:200])
    expected = library_actions(policy, params, env.action_space, obs, norm)
    assert float(expected.abs().max()) == 2.0 and float(expected.abs().min()) < 2.0
    actor = greedy_actor(policy, params, env.action_space, norm)
    for got in both_formats(actor, tmp_path, env.observation_space, env.action_space, obs):
        assert got.shape == (N, 1) and got.dtype == torch.float32
        assert float((got - expected).abs().max()) <= 1e-5


def test_multidiscrete_per_block_argmax_exact(tmp_path):
    obs_space, action_space = Box((-1.0,) * 5, (1.0,) * 5, (5,)), MultiDiscrete((3, 2, 4))
    policy = make_mlp_policy(obs_space, action_space, hidden_sizes=(16,))
    params = policy.init(jr.key(5))
    params["actor"][-1]["w"] = params["actor"][-1]["w"] * 100
    obs = jr.uniform(jr.key(6), (N, 5)) * 2 - 1
    expected = library_actions(policy, params, action_space, obs)
    assert expected.shape == (N, 3) and len({tuple(a) for a in expected.tolist()}) > 4
    for got in both_formats(greedy_actor(policy, params, action_space), tmp_path, obs_space, action_space, obs):
        assert torch.equal(got, expected)


def test_masked_env_the_mask_is_an_input_and_only_legal_actions_come_out(tmp_path):
    env = make("MaskedChoice-v0")
    policy = make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(16,))
    params = policy.init(jr.key(7))
    params["actor"][-1]["w"] = params["actor"][-1]["w"] * 100
    obs, mask = env_observations(env, N)
    expected = library_actions(policy, params, env.action_space, obs, mask=mask)
    unmasked = library_actions(policy, params, env.action_space, obs)
    assert not torch.equal(expected, unmasked)  # the mask changes some choices
    for got in both_formats(greedy_actor(policy, params, env.action_space), tmp_path, env.observation_space,
                            env.action_space, obs, mask):
        assert torch.equal(got, expected)
        assert bool(mask.gather(1, got[:, None]).all())


def test_a_cnn_policy_exports_too(tmp_path):
    env = make("Catch-v0")
    policy = make_policy("simple_cnn", env.observation_space, env.action_space, (32,))
    params = policy.init(jr.key(8))
    obs, _ = env_observations(env, 200)
    expected = library_actions(policy, params, env.action_space, obs)
    for got in both_formats(greedy_actor(policy, params, env.action_space), tmp_path, env.observation_space,
                            env.action_space, obs):
        assert torch.equal(got, expected)


def test_recurrent_and_last_action_policies_are_refused_with_the_reason(tmp_path, capsys):
    env = make("CartPole-v1")
    for core in ("lstm", "gru"):
        policy = make_policy(core, env.observation_space, env.action_space, (8,))
        with pytest.raises(ExportError, match=f"recurrent policy \\({core}\\).*explicit carry is not supported in export yet"):
            greedy_actor(policy, policy.init(jr.key(0)), env.action_space)
    mlp = make_mlp_policy(env.observation_space, env.action_space, obs_dim_extra=2)
    with pytest.raises(ExportError, match="last_action=True.*explicit carry is not supported"):
        greedy_actor(mlp, mlp.init(jr.key(0)), env.action_space, last_action=True)
    run = tmp_path / "lstm"
    assert main(["train", "MemoryCue-v0", "--no-compile", "--total-timesteps", "64", "--set", "policy=lstm",
                 "--set", "hidden_sizes=[8]", "--set", "num_steps=16", "--set", "num_minibatches=2",
                 "--run-dir", str(run), "--progress", "none"]) == 0
    capsys.readouterr()
    assert main(["export", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "recurrent policy (lstm)" in err and "explicit carry is not supported in export yet" in err and "\n" not in err
    assert not (run / "policy.onnx").exists()


def test_cli_export_without_the_extra_says_what_to_install(cartpole_run, tmp_path, capsys, monkeypatch):
    import sys

    run, _, _ = cartpole_run
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "p.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert 'pip install "functional-rl[export]"' in err and "onnxscript" in err and "\n" not in err
    assert not (tmp_path / "p.onnx").exists()
