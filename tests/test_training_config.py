"""The nested TrainingConfig: round trips, lowering to PPOConfig, error paths, presets."""

import dataclasses

import pytest

from functional_rl.shell import presets
from functional_rl.kernel.config import PPOConfig
from functional_rl.compat.training_config import (
    FIELD_PATHS,
    PRESETS,
    AgentConfig,
    PPOSection,
    TrainerConfig,
    TrainingConfig,
    pendulum_config,
    small_fast_config,
)

CUSTOM = {
    "experiment_name": "exp1",
    "agent": {"name": "mlp", "hidden_sizes": [32, 16], "activation": "relu", "last_action": True},
    "trainer": {"env_id": "Acrobot-v1", "total_timesteps": 12_345, "num_envs": 4, "num_steps": 32, "seed": 7, "device": "cpu", "world_size": 1},
    "ppo": {
        "learning_rate": 3e-4, "anneal_lr": False, "gamma": 0.97, "gae_lambda": 0.9, "clip_coef": 0.1,
        "clip_vloss": False, "norm_adv": False, "ent_coef": 0.002, "vf_coef": 0.25, "max_grad_norm": 1.5,
        "update_epochs": 3, "num_minibatches": 8, "adam_eps": 1e-7, "normalize_obs": True, "normalize_reward": True,
        "vf_clip_coef": 0.3, "optimizer": "adamw", "weight_decay": 0.01, "vtrace": True, "vtrace_rho_clip": 0.9,
        "vtrace_c_clip": 0.8, "schedules": {"ent_coef": "cosine:end=0"}, "target_kl": 0.02,
        "l2_reg_loss_coef": 1e-5, "l2_init_loss_coef": 0.0, "prioritized": True, "prio_alpha": 0.5, "prio_beta0": 0.5,
        "kickstart_teachers": ["runs/teacher"], "kickstart_coef": 0.5, "kickstart_value_coef": 0.25, "kickstart_steps": 1000,
        "schedule_free_warmup_steps": 0,
    },
}


def test_every_ppo_config_field_has_exactly_one_nested_home():
    flat = {f.name for f in dataclasses.fields(PPOConfig)}
    missing = flat - set(FIELD_PATHS)
    assert not missing, f"PPOConfig fields with no place in TrainingConfig: {sorted(missing)}"
    nested = [f.name for cls in (AgentConfig, TrainerConfig, PPOSection) for f in dataclasses.fields(cls) if f.name != "name"]
    assert len(nested) == len(set(nested)) == len(flat)


def test_defaults_lower_to_ppo_config_defaults():
    assert TrainingConfig().to_ppo_config() == PPOConfig()
    assert TrainingConfig.from_ppo_config(PPOConfig()) == TrainingConfig()


def test_dict_round_trip_and_lowered_values():
    cfg = TrainingConfig.from_dict(CUSTOM)
    assert cfg.to_dict() == CUSTOM
    assert TrainingConfig.from_dict(cfg.to_dict()) == cfg
    ppo = cfg.to_ppo_config()
    assert (ppo.env_id, ppo.total_timesteps, ppo.num_envs, ppo.num_steps, ppo.seed) == ("Acrobot-v1", 12_345, 4, 32, 7)
    assert ppo.hidden_sizes == (32, 16) and ppo.activation == "relu" and ppo.last_action is True
    assert (ppo.learning_rate, ppo.gamma, ppo.gae_lambda, ppo.clip_coef) == (3e-4, 0.97, 0.9, 0.1)
    assert (ppo.ent_coef, ppo.vf_coef, ppo.max_grad_norm, ppo.adam_eps) == (0.002, 0.25, 1.5, 1e-7)
    assert (ppo.update_epochs, ppo.num_minibatches) == (3, 8)
    assert (ppo.anneal_lr, ppo.clip_vloss, ppo.norm_adv, ppo.normalize_obs, ppo.normalize_reward) == (False, False, False, True, True)
    assert ppo.batch_size == 128 and ppo.minibatch_size == 16 and ppo.num_iterations == 12_345 // 128
    back = TrainingConfig.from_ppo_config(ppo, experiment_name="exp1")
    assert back == cfg


def test_legacy_partial_dict_takes_defaults():
    # The reference trainer's migration example.
    cfg = TrainingConfig.from_dict({"agent": {"name": "mlp"}, "trainer": {"total_timesteps": 10_000_000}, "ppo": None})
    assert cfg.trainer.total_timesteps == 10_000_000
    assert cfg.trainer.num_envs == 4 and cfg.ppo.gamma == 0.99 and cfg.agent.hidden_sizes == (64, 64)
    assert cfg.experiment_name == "default"


def test_yaml_round_trip_via_file(tmp_path):
    pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    cfg = TrainingConfig.from_dict(CUSTOM)
    path = tmp_path / "run.yaml"
    text = cfg.to_yaml(path)
    assert path.read_text() == text
    assert TrainingConfig.from_yaml(path) == cfg
    assert TrainingConfig.from_yaml(path).to_ppo_config().gamma == 0.97


def test_handwritten_yaml(tmp_path):
    pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    path = tmp_path / "legacy.yaml"
    path.write_text(
        "experiment_name: legacy\n"
        "agent:\n  hidden_sizes: [8, 8]\n"
        "trainer:\n  total_timesteps: 1.0e+6\n  num_envs: 2\n"
        "ppo:\n  learning_rate: 1\n  gamma: 0.5\n"
    )
    cfg = TrainingConfig.from_yaml(path)
    ppo = cfg.to_ppo_config()
    # 1.0e+6 is a YAML float that is integral: accepted as the int 1_000_000; 1 is taken as 1.0.
    assert ppo.total_timesteps == 1_000_000 and isinstance(ppo.total_timesteps, int)
    assert ppo.learning_rate == 1.0 and isinstance(ppo.learning_rate, float)
    assert (ppo.gamma, ppo.num_envs, ppo.hidden_sizes) == (0.5, 2, (8, 8))


def test_empty_yaml_is_the_default(tmp_path):
    pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert TrainingConfig.from_yaml(path) == TrainingConfig()


def test_yaml_errors_name_the_file(tmp_path):
    pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  total_timsteps: 5\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown key 'trainer\.total_timsteps' \(did you mean 'trainer\.total_timesteps'\?\)"):
        TrainingConfig.from_yaml(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer: [unclosed\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: not valid YAML"):
        TrainingConfig.from_yaml(broken)


def test_missing_pyyaml_says_how_to_install(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_yaml(name, *args, **kwargs):
        if name == "yaml":
            raise ImportError("No module named 'yaml'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_yaml)
    with pytest.raises(ImportError, match="pip install pyyaml"):
        TrainingConfig.from_yaml(tmp_path / "x.yaml")


@pytest.mark.parametrize(
    "d, message",
    [
        ({"trainer": {"total_timsteps": 1}}, "unknown key 'trainer.total_timsteps' (did you mean 'trainer.total_timesteps'?)"),
        ({"ppo": {"gama": 0.9}}, "unknown key 'ppo.gama' (did you mean 'ppo.gamma'?)"),
        ({"agent": {"hidden_sizs": [512]}}, "unknown key 'agent.hidden_sizs' (did you mean 'agent.hidden_sizes'?)"),
        ({"trainr": {}}, "unknown key 'trainr' (did you mean 'trainer'?)"),
        # A legacy layout kept PPO keys under `trainer`: point to where they live now.
        ({"trainer": {"gae_lambda": 0.9}}, "unknown key 'trainer.gae_lambda' (did you mean 'ppo.gae_lambda'?)"),
        ({"ppo": {"env_id": "x"}}, "unknown key 'ppo.env_id' (did you mean 'trainer.env_id'?)"),
        ({"zzz": 1}, "unknown key 'zzz'; known keys at the top level: experiment_name, agent, trainer, ppo"),
    ],
)
def test_unknown_keys_name_the_path_with_a_hint(d, message):
    with pytest.raises(ValueError) as info:
        TrainingConfig.from_dict(d)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "d, message",
    [
        ({"trainer": {"num_envs": "8"}}, "trainer.num_envs='8' has type str; expected int"),
        ({"trainer": {"total_timesteps": 1.5}}, "trainer.total_timesteps=1.5 has type float; expected int"),
        ({"ppo": {"gamma": "0.9"}}, "ppo.gamma='0.9' has type str; expected float"),
        ({"ppo": {"anneal_lr": 1}}, "ppo.anneal_lr=1 has type int; expected bool"),
        ({"ppo": {"update_epochs": True}}, "ppo.update_epochs=True has type bool; expected int"),
        ({"agent": {"hidden_sizes": 64}}, "agent.hidden_sizes=64 has type int; expected list of int"),
        ({"agent": {"hidden_sizes": [64, "64"]}}, "agent.hidden_sizes=[64, '64'] has type list; expected list of int"),
        ({"experiment_name": 3}, "experiment_name=3 has type int; expected a non-empty str"),
        ({"ppo": [1, 2]}, "ppo must be a mapping of PPOSection fields, got list"),
    ],
)
def test_wrong_types_name_the_path_and_expected_type(d, message):
    with pytest.raises(TypeError) as info:
        TrainingConfig.from_dict(d)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "d, message",
    [
        ({"ppo": {"gamma": 1.5}}, "ppo.gamma=1.5 is invalid: must lie in [0, 1]"),
        ({"ppo": {"learning_rate": 0}}, "ppo.learning_rate=0.0 is invalid: must be > 0"),
        ({"ppo": {"ent_coef": -0.1}}, "ppo.ent_coef=-0.1 is invalid: must be >= 0"),
        ({"trainer": {"num_envs": 0}}, "trainer.num_envs=0 is invalid: must be >= 1"),
        ({"trainer": {"env_id": ""}}, "trainer.env_id='' is invalid: must be a non-empty string"),
        ({"agent": {"activation": "gelu"}}, "agent.activation='gelu' is invalid: must be 'tanh' or 'relu'"),
        ({"agent": {"hidden_sizes": []}}, "agent.hidden_sizes=() is invalid: must be a non-empty sequence of positive integers (not bools)"),
        # 4 envs x 128 steps = 512 transitions: 3 minibatches do not divide it.
        ({"ppo": {"num_minibatches": 3}}, "ppo.num_minibatches=3 is invalid: must divide num_steps = 128 (each minibatch takes num_steps / num_minibatches steps of every env)"),
    ],
)
def test_ppo_rules_name_the_nested_path(d, message):
    with pytest.raises(ValueError) as info:
        TrainingConfig.from_dict(d)
    assert str(info.value) == message


def test_to_ppo_config_reraises_with_nested_path_for_direct_construction():
    # A section alone is only type-checked; the PPO rules run when the whole config is built.
    section = PPOSection(gamma=2.0)
    assert section.gamma == 2.0
    with pytest.raises(ValueError, match=r"^ppo\.gamma=2\.0 is invalid: must lie in \[0, 1\]$"):
        TrainingConfig(ppo=section)


def test_unsupported_agent_name():
    with pytest.raises(ValueError, match=r"agent\.name='transformer' is invalid: must be one of 'mlp', 'nature_cnn', 'simple_cnn'"):
        TrainingConfig.from_dict({"agent": {"name": "transformer"}})


def test_reference_agent_config_maps_to_the_policy_and_one_width():
    """The reference trainer's README: ``AgentConfig(name="simple_cnn", hidden_size=512)``."""
    cfg = TrainingConfig(experiment_name="my_experiment", agent=AgentConfig(name="simple_cnn", hidden_size=512),
                         trainer=TrainerConfig(total_timesteps=1_000_000))
    flat = cfg.to_ppo_config()
    assert (flat.policy, flat.hidden_sizes) == ("simple_cnn", (512, 512))
    assert TrainingConfig.from_ppo_config(flat, "my_experiment") == cfg
    assert TrainingConfig.from_dict(cfg.to_dict()) == cfg
    assert "hidden_size" not in cfg.to_dict()["agent"]  # derived: hidden_sizes is stored
    assert TrainingConfig.from_dict({"agent": {"hidden_size": 32, "hidden_sizes": [8]}}).agent.hidden_sizes == (32,)
    assert cfg.with_overrides({"agent.hidden_sizes": [32, 16]}).agent.hidden_size is None
    assert cfg.with_overrides({"agent.hidden_size": 128}).agent.hidden_sizes == (128, 128)
    with pytest.raises(ValueError, match="disagree"):
        AgentConfig(hidden_size=32, hidden_sizes=(64, 16))
    with pytest.raises(TypeError, match="agent.hidden_size=True has type bool"):
        AgentConfig(hidden_size=True)
    with pytest.raises(ValueError, match="agent.hidden_size=0 is invalid"):
        AgentConfig(hidden_size=0)


def test_with_overrides_uses_dotted_paths_and_checks_them():
    cfg = small_fast_config().with_overrides({"trainer.total_timesteps": 4096, "ppo.gamma": 0.9})
    assert (cfg.trainer.total_timesteps, cfg.ppo.gamma, cfg.ppo.learning_rate) == (4096, 0.9, 1e-3)
    with pytest.raises(ValueError, match=r"did you mean 'ppo\.clip_coef'"):
        cfg.with_overrides({"ppo.clip_cef": 0.1})
    with pytest.raises(ValueError, match=r"unknown key 'traner\.seed'"):
        cfg.with_overrides({"traner.seed": 3})


def test_frozen():
    cfg = TrainingConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.experiment_name = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ppo.gamma = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_mirror_the_flat_presets(name):
    cfg = PRESETS[name]()
    assert cfg.experiment_name == name
    assert cfg.to_ppo_config() == presets.PRESETS[name]()
    assert TrainingConfig.from_dict(cfg.to_dict()) == cfg


def test_preset_values():
    fast = small_fast_config()
    assert (fast.trainer.total_timesteps, fast.trainer.num_steps, fast.ppo.num_minibatches, fast.ppo.learning_rate) == (50_000, 64, 2, 1e-3)
    pend = pendulum_config("p")
    assert pend.experiment_name == "p"
    assert (pend.trainer.env_id, pend.trainer.num_envs, pend.ppo.update_epochs, pend.ppo.gamma, pend.ppo.ent_coef) == ("Pendulum-v1", 16, 10, 0.95, 0.0)
    assert pend.to_ppo_config().minibatch_size == 16 * 64 // 8


def test_the_reference_prioritized_kickstart_and_lr_scheduler_sections_lower_into_ppo():
    cfg = TrainingConfig.from_dict({
        "prioritized_experience_replay": {"prio_alpha": 0.5, "prio_beta0": 0.4},
        "kickstart": {"teacher_uri": "file:///runs/a", "additional_teachers": [{"teacher_uri": "b.frl"}],
                      "action_loss_coef": 0.5, "value_loss_coef": 0.1, "kickstart_steps": 1000},
        "lr_scheduler": {"enabled": True, "schedule_type": "cosine", "warmup_steps": 100},
    })
    ppo = cfg.to_ppo_config()
    assert (ppo.prioritized, ppo.prio_alpha, ppo.prio_beta0) == (True, 0.5, 0.4)
    assert ppo.kickstart_teachers == ("file:///runs/a", "b.frl")
    assert (ppo.kickstart_coef, ppo.kickstart_value_coef, ppo.kickstart_steps) == (0.5, 0.1, 1000)
    assert dict(ppo.schedules) == {"learning_rate": "cosine:end=0,warmup=100"} and ppo.anneal_lr is False
    uniform = TrainingConfig.from_dict({"prioritized_experience_replay": {"prio_alpha": 0.0}}).to_ppo_config()
    assert uniform.prioritized is False  # the reference samples uniformly at alpha 0
    off = TrainingConfig.from_dict({"lr_scheduler": {"enabled": False, "anneal_lr": True}}).to_ppo_config()
    assert off.anneal_lr is True and not off.schedules
    with pytest.raises(ValueError, match="unknown key 'kickstart.teacher' \\(did you mean 'kickstart.teacher_uri'"):
        TrainingConfig.from_dict({"kickstart": {"teacher": "x"}})
    with pytest.raises(ValueError, match="give it once"):
        TrainingConfig.from_dict({"prioritized_experience_replay": {"prio_alpha": 0.5}, "ppo": {"prio_alpha": 0.1}})
    with pytest.raises(TypeError, match="kickstart must be a mapping"):
        TrainingConfig.from_dict({"kickstart": ["a"]})


def test_the_reference_optimizer_section_and_value_clip_lower_into_ppo():
    cfg = TrainingConfig.from_dict({"optimizer": {"type": "muon", "weight_decay": 0.01, "eps": 1e-8},
                                    "ppo": {"vf_clip_coef": 0.1, "clip_coef": 0.3}})
    ppo = cfg.to_ppo_config()
    assert (ppo.optimizer, ppo.weight_decay, ppo.adam_eps, ppo.vf_clip_coef, ppo.clip_coef) == ("muon", 0.01, 1e-8, 0.1, 0.3)
    assert TrainingConfig.from_dict({"ppo": {"vf_clip_coef": None}}).ppo.vf_clip_coef is None
    with pytest.raises(ValueError, match="unknown key 'optimizer.weight_decy' \\(did you mean 'optimizer.weight_decay'"):
        TrainingConfig.from_dict({"optimizer": {"weight_decy": 0.1}})
    with pytest.raises(ValueError, match="give it once"):
        TrainingConfig.from_dict({"optimizer": {"type": "adamw"}, "ppo": {"optimizer": "muon"}})
    with pytest.raises(ValueError, match="ppo.weight_decay=0.1 is invalid: needs optimizer='adamw', 'muon' or 'schedule_free_adamw'"):
        TrainingConfig.from_dict({"optimizer": {"weight_decay": 0.1}})
