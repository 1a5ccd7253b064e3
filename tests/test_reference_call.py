"""The reference trainer's README call, keyword for keyword, and the agent configs it names."""

from __future__ import annotations

import pytest
import torch

import functional_rl.kernel.random as jr
from functional_rl import functional_training_loop, train_iteration
from functional_rl.compat.training_config import (
    AgentConfig, PPOSection, TrainerConfig, TrainingConfig, run_config,
)
from functional_rl.kernel.config import PPOConfig
from functional_rl.kernel.curriculum import RangeCurriculum
from functional_rl.shell.callbacks import PolicySaver
from functional_rl.shell.policy_store import PolicyStore


def curiosity_loss(policy, obs, actions, rewards, values, advantages):
    """A seed-style loss in the reference trainer's signature."""
    return 0.0 * values.mean()


def diversity_loss(params, batch, outputs, hparams):
    """A native loss term."""
    return 0.001 * outputs["logits"].pow(2).mean()


def test_the_reference_readme_call_runs_as_written(tmp_path):
    trainer_config = TrainerConfig(env_id="Catch-v0", total_timesteps=96, num_envs=2, num_steps=16)
    ppo_config = PPOSection(num_minibatches=2, update_epochs=1, learning_rate=1e-3)
    agent = AgentConfig(name="simple_cnn", hidden_size=16)
    curriculum = None  # Catch has no parameters to draw; a CartPole curriculum is below
    policy_store = PolicyStore(tmp_path)
    calls = []

    def custom_training_step(state, kernel):
        calls.append(int(state.iteration))
        return train_iteration(state, kernel)

    state, history = functional_training_loop(
        config=trainer_config,
        ppo_config=ppo_config,
        policy=agent,
        curriculum=curriculum,
        policy_store=policy_store,
        step_fn=custom_training_step,
        custom_losses=[curiosity_loss, diversity_loss],
        compile=False,
    )
    assert calls == [0, 1, 2] and int(state.agent_step) == 96
    assert state.learner.params["conv"][0]["w"].shape == (16, 1, 3, 3)  # the agent config built a CNN
    assert state.learner.params["dense"][0]["w"].shape[0] == 16 and len(state.learner.params["dense"]) == 2
    record = policy_store.load(policy_store.uri)
    assert (record.name, record.epoch, record.spec["kind"]) == ("policy.000003", 3, "cnn_actor_critic")
    rebuilt = record.make_policy()
    obs = state.envs.obs
    assert torch.equal(rebuilt.apply(record.params, obs)["logits"], rebuilt.apply(state.learner.params, obs)["logits"])
    assert "diversity_loss" in " ".join(history[-1])


def test_the_call_with_a_curriculum_and_a_nested_config():
    curriculum = RangeCurriculum("length", start=(0.5, 0.5), end=(0.25, 1.0), threshold=10.0, step=0.25)
    config = TrainingConfig(agent=AgentConfig(hidden_size=8), trainer=TrainerConfig(total_timesteps=64, num_envs=2, num_steps=16))
    state, _ = functional_training_loop(config=config, ppo_config=PPOSection(num_minibatches=2), curriculum=curriculum, compile=False)
    assert state.learner.params["actor"][0]["w"].shape == (8, 4) and state.curriculum is not None


def test_run_config_combinations_and_errors():
    flat = PPOConfig(total_timesteps=1024)
    assert run_config(flat) == (flat, None)
    assert run_config(None, flat) == (flat, None)
    assert run_config(None)[0] == PPOConfig()
    lowered, policy = run_config(flat, PPOSection(gamma=0.5), AgentConfig(name="mlp", hidden_size=16))
    assert (lowered.total_timesteps, lowered.gamma, lowered.hidden_sizes, policy) == (1024, 0.5, (16, 16), None)
    sentinel = object()
    assert run_config(flat, None, sentinel) == (flat, sentinel)  # a Policy passes through
    with pytest.raises(TypeError, match="ppo_config is a whole PPOConfig and config is given too"):
        run_config(TrainerConfig(), flat)
    with pytest.raises(TypeError, match="config must be a PPOConfig, TrainingConfig or TrainerConfig, got dict"):
        run_config({"gamma": 0.9})
    with pytest.raises(TypeError, match="ppo_config must be a PPOSection"):
        run_config(TrainerConfig(), {"gamma": 0.9})


def test_policy_saver_every_n_iterations(tmp_path):
    from functional_rl.envs import make
    from functional_rl.kernel.policies import make_mlp_policy

    env = make("CartPole-v1")
    policy = make_mlp_policy(env.observation_space, env.action_space, (8,))
    cfg = PPOConfig(total_timesteps=160, num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, hidden_sizes=(8,))
    saver = PolicySaver(tmp_path, policy, env, every=2)
    functional_training_loop(cfg, policy=policy, callbacks=[saver], compile=False)
    assert [r.name for r in PolicyStore(tmp_path).list()] == ["policy.000002", "policy.000004", "policy.000005"]
    with pytest.raises(ValueError, match="every=-1 is invalid"):
        PolicySaver(tmp_path, policy, env, every=-1)
