"""PPOConfig: CleanRL defaults, round trips, and errors that name the field and the rule."""

import pytest
import torch

import functional_rl as frl
from functional_rl.shell.presets import small_fast_config


def test_defaults_are_cleanrl_cartpole():
    c = frl.PPOConfig()  # CleanRL's ppo.py CartPole setting; 4 envs chosen by benchmarks/default_config.py
    assert (c.num_envs, c.num_steps, c.update_epochs, c.num_minibatches) == (4, 128, 4, 4)
    assert (c.learning_rate, c.anneal_lr, c.gamma, c.gae_lambda) == (2.5e-4, True, 0.99, 0.95)
    assert (c.clip_coef, c.ent_coef, c.vf_coef, c.max_grad_norm) == (0.2, 0.01, 0.5, 0.5)
    assert c.hidden_sizes == (64, 64) and c.activation == "tanh"
    assert c.batch_size == 512 and c.minibatch_size == 128 and c.num_iterations == 976


def test_round_trip_and_replace():
    c = frl.PPOConfig(seed=3, hidden_sizes=[32, 16])
    assert c.hidden_sizes == (32, 16)
    assert frl.PPOConfig.from_dict(c.to_dict()) == c
    assert c.replace(gamma=0.5).gamma == 0.5 and c.gamma == 0.99


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"num_minibatches": 3}, r"num_minibatches=3 is invalid: must divide num_steps = 128 \(each minibatch"),
        ({"learning_rate": 0.0}, r"learning_rate=0.0 is invalid: must be > 0"),
        ({"learning_rate": -1e-3}, r"learning_rate=-0.001 is invalid"),
        ({"gamma": 1.5}, r"gamma=1.5 is invalid: must lie in \[0, 1\]"),
        ({"gae_lambda": -0.1}, r"gae_lambda=-0.1 is invalid"),
        ({"num_envs": 0}, r"num_envs=0 is invalid: must be >= 1"),
        ({"num_steps": 2.5}, r"num_steps=2.5 is invalid: must be an integer"),
        ({"ent_coef": float("nan")}, r"ent_coef=nan is invalid: must be a finite number"),
        ({"activation": "gelu"}, r"activation='gelu' is invalid"),
        ({"hidden_sizes": (64, 0)}, r"hidden_sizes=\(64, 0\) is invalid"),
    ],
)
def test_invalid_values_name_the_field_and_the_rule(changes, match):
    with pytest.raises(ValueError, match=match):
        frl.PPOConfig(**changes)


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ValueError, match=r"unknown PPOConfig key 'total_timestep' \(did you mean 'total_timesteps'\?\)"):
        frl.PPOConfig.from_dict({"total_timestep": 10})


def test_hyperparams_are_0d_float_tensors():
    hp = frl.Hyperparams.from_config(frl.PPOConfig())
    for name in ("learning_rate", "gamma", "gae_lambda", "clip_coef", "ent_coef", "vf_coef", "max_grad_norm"):
        v = getattr(hp, name)
        assert isinstance(v, torch.Tensor) and v.dim() == 0 and v.dtype == torch.float32


def test_lr_schedule_is_linear_to_zero():
    hp = frl.Hyperparams.from_config(frl.PPOConfig(learning_rate=1.0))
    values = [float(frl.learning_rate_at(hp, torch.tensor(i), 4, True)) for i in range(5)]
    assert values == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert float(frl.learning_rate_at(hp, torch.tensor(3), 4, False)) == 1.0


def test_small_fast_preset_is_valid_and_small():
    c = small_fast_config()
    assert c.total_timesteps <= 100_000 and c.batch_size % c.num_minibatches == 0
