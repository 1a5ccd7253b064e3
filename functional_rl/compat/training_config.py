"""The reference trainer's nested run config, as frozen dataclasses that lower to :class:`PPOConfig`.

The trainer functional_rl replaces configured a run as one nested document::

    experiment_name: my_run
    agent:   {name: mlp, hidden_sizes: [64, 64], activation: tanh, last_action: false}
    trainer: {env_id: CartPole-v1, total_timesteps: 500000, num_envs: 8, num_steps: 128, seed: 1, device: cpu}
    ppo:     {learning_rate: 0.00025, gamma: 0.99, gae_lambda: 0.95, clip_coef: 0.2, ...}

:class:`TrainingConfig` reads that layout (:meth:`TrainingConfig.from_dict`,
:meth:`TrainingConfig.from_yaml`) and lowers it with :meth:`TrainingConfig.to_ppo_config` to the
flat, frozen :class:`~functional_rl.kernel.config.PPOConfig` that the kernel and the shell take. Every
:class:`PPOConfig` field has exactly one home in the nested layout (see :data:`FIELD_PATHS`),
so the two forms convert both ways without loss.

Errors name the nested key path: an unknown or mistyped key (with a did-you-mean, also across
sections, e.g. ``trainer.gamma`` -> ``ppo.gamma``), a value of the wrong type (with the
expected type), and any rule :meth:`PPOConfig.validate` enforces
(``ppo.gamma=1.5 is invalid: must lie in [0, 1]``). A :class:`TrainingConfig` is validated
when it is built, so an invalid one never exists.

Example:
    >>> cfg = TrainingConfig.from_dict({"agent": {"name": "mlp"}, "trainer": {"total_timesteps": 10_000}})
    >>> ppo = cfg.to_ppo_config()
    >>> ppo.total_timesteps, ppo.hidden_sizes, ppo.gamma
    (10000, (64, 64), 0.99)
    >>> TrainingConfig.from_ppo_config(ppo) == cfg
    True
    >>> TrainingConfig.from_dict({"trainer": {"total_timsteps": 10}})
    Traceback (most recent call last):
    ...
    ValueError: unknown key 'trainer.total_timsteps' (did you mean 'trainer.total_timesteps'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from functional_rl.shell import presets as _presets
from functional_rl.kernel.config import PPOConfig
from functional_rl.kernel.policies import POLICY_NAMES
from functional_rl.shell.validate import short as _short

__all__ = [
    "AgentConfig",
    "PPOSection",
    "TrainerConfig",
    "TrainingConfig",
    "FIELD_PATHS",
    "run_config",
    "SUPPORTED_AGENTS",
    "small_fast_config",
    "cartpole_config",
    "acrobot_config",
    "pendulum_config",
    "mountain_car_continuous_config",
    "PRESETS",
]

#: Agent (policy architecture) names :class:`AgentConfig` accepts (``PPOConfig.policy``).
SUPPORTED_AGENTS = POLICY_NAMES

# Expected types by annotation string (``from __future__ import annotations`` keeps them strings).
_TYPE_NAMES = {"int": "int", "float": "float", "bool": "bool", "str": "str", "tuple[int, ...]": "list of int",
               "int | None": "int or null", "float | None": "float or null", "tuple[str, ...]": "list of str",
               "tuple[tuple[str, str], ...]": "mapping of hyperparameter names to schedule strings"}


def _check_field(path: str, value: Any, annotation: str) -> Any:
    """Check one leaf against its annotation; return it normalised (list -> tuple, 2.0 -> 2).

    ``int`` fields accept integral floats (YAML reads ``1.0e6`` as a float); ``float`` fields
    accept ints; ``bool`` is never taken for a number nor a number for a ``bool``.
    """

    def wrong() -> TypeError:
        return TypeError(
            f"{path}={_short(value)} has type {type(value).__name__}; expected {_TYPE_NAMES[annotation]}"
        )

    if annotation == "bool":
        if not isinstance(value, bool):
            raise wrong()
        return value
    if annotation == "str":
        if not isinstance(value, str):
            raise wrong()
        return value
    if annotation == "int | None" and value is None:
        return None
    if annotation in ("int", "int | None"):
        if isinstance(value, bool):
            raise wrong()
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise wrong()
        return value
    if annotation == "float | None" and value is None:
        return None
    if annotation in ("float", "float | None"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong()
        return float(value)
    if annotation == "tuple[tuple[str, str], ...]":  # schedules: {name: "cosine:end=0"}
        if isinstance(value, Mapping):
            value = list(value.items())
        if (not isinstance(value, (list, tuple))
                or not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in value)):
            raise wrong()
        return tuple(sorted(tuple(p) for p in value))
    if annotation == "tuple[str, ...]":  # a single string is a list of one
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise wrong()
        return tuple(value)
    if annotation == "tuple[int, ...]":
        if not isinstance(value, (list, tuple)) or any(isinstance(h, bool) or not isinstance(h, int) for h in value):
            raise wrong()
        return tuple(value)
    raise AssertionError(f"no type check for annotation {annotation!r} of {path}")  # a bug here, not user input


def _check_section(obj: Any, section: str) -> None:
    """Type-check (and normalise in place, before freezing is observable) every field of a section."""
    for f in dataclasses.fields(obj):
        value = _check_field(f"{section}.{f.name}", getattr(obj, f.name), f.type)
        object.__setattr__(obj, f.name, value)


# Defaults come from PPOConfig so the two layouts can never disagree.
_DEFAULTS = PPOConfig()


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """The policy architecture (section ``agent``).

    Attributes:
        name: the architecture (``PPOConfig.policy``, :func:`~functional_rl.kernel.policies.make_policy`):
            ``"mlp"`` is CleanRL's MLP actor-critic; ``"simple_cnn"`` and ``"nature_cnn"``
            are conv encoders for image observations ``[C, H, W]``.
        hidden_sizes: widths of the actor and critic MLPs (of the dense layers after a CNN encoder).
        hidden_size: one width for every hidden layer, the reference trainer's spelling:
            ``hidden_size=512`` with the default two layers is ``hidden_sizes=(512, 512)``.
            After construction it reads the common width of ``hidden_sizes`` (``None`` when
            the widths differ); ``hidden_sizes`` is what is stored and lowered.
        activation: ``"tanh"`` or ``"relu"`` (the MLP's; CNN policies use ReLU).
        last_action: feed the previous action (one-hot for discrete actions) to the policy
            with the observation (the reference trainer's ``add_last_action_to_td``).

    Raises:
        ValueError: an unknown ``name``, or ``hidden_size`` given with ``hidden_sizes`` of
            different widths (say which one you mean).

    Example:
        >>> AgentConfig(hidden_sizes=[32]).hidden_sizes
        (32,)
        >>> agent = AgentConfig(name="simple_cnn", hidden_size=512)
        >>> agent.hidden_sizes, agent.hidden_size
        ((512, 512), 512)
    """

    name: str = _DEFAULTS.policy
    hidden_sizes: tuple[int, ...] = _DEFAULTS.hidden_sizes
    activation: str = _DEFAULTS.activation
    last_action: bool = _DEFAULTS.last_action
    hidden_size: int | None = None

    def __post_init__(self) -> None:
        _check_section(self, "agent")
        if self.name not in SUPPORTED_AGENTS:
            raise ValueError(
                f"agent.name={self.name!r} is invalid: must be one of {', '.join(map(repr, SUPPORTED_AGENTS))} "
                "(or pass your own Policy to functional_training_loop(policy=...))"
            )
        sizes = self.hidden_sizes
        if self.hidden_size is not None:
            if self.hidden_size <= 0:
                raise ValueError(f"agent.hidden_size={self.hidden_size} is invalid: must be a positive integer")
            if len(set(sizes)) > 1:
                raise ValueError(f"agent.hidden_size={self.hidden_size} and agent.hidden_sizes={list(sizes)} disagree: "
                                 "give hidden_size (one width for every layer) or hidden_sizes, not both")
            object.__setattr__(self, "hidden_sizes", (self.hidden_size,) * len(sizes))
        common = self.hidden_sizes[0] if self.hidden_sizes and len(set(self.hidden_sizes)) == 1 else None
        object.__setattr__(self, "hidden_size", common)


@dataclasses.dataclass(frozen=True)
class PPOSection:
    """PPO hyperparameters (section ``ppo``); the defaults are :class:`PPOConfig`'s (CleanRL's).

    Attributes:
        learning_rate: Adam step size at the start of training.
        anneal_lr: decay the learning rate linearly to 0 over the run.
        gamma: discount factor in [0, 1].
        gae_lambda: GAE lambda in [0, 1].
        clip_coef: PPO ratio clip range.
        clip_vloss: clip the value update around the old value.
        vf_clip_coef: the value clip range; null uses ``clip_coef``.
        norm_adv: normalise advantages per minibatch.
        vtrace: V-trace advantages and value targets, recomputed before every epoch.
        vtrace_rho_clip: V-trace's ``rho_bar``.
        vtrace_c_clip: V-trace's ``c_bar``.
        prioritized: draw minibatches with probability ``|A|^prio_alpha``, loss weights ``(N P)^-beta``.
        prio_alpha: prioritization exponent (0: uniform).
        prio_beta0: importance-weight exponent at the start, annealed to 1.
        kickstart_teachers: teacher policies to distil from (checkpoints, run dirs, policy-store URIs).
        kickstart_coef: weight of KL(teacher || student), falling linearly to 0.
        kickstart_value_coef: weight of the teacher-value MSE, falling linearly to 0.
        kickstart_steps: env steps until both weights reach 0; null: the whole run.
        target_kl: stop an iteration's updates once the approximate KL passes it; null: never.
        l2_reg_loss_coef: L2 loss on the parameters; null: off.
        l2_init_loss_coef: L2 loss on the distance to the initial parameters; null: off.
        ent_coef: entropy bonus coefficient.
        vf_coef: value loss coefficient.
        max_grad_norm: global gradient norm clip.
        update_epochs: passes over each batch.
        num_minibatches: minibatches per epoch; must divide ``num_steps`` (each takes ``num_steps / num_minibatches`` steps of every env).
        adam_eps: Adam epsilon.
        optimizer: ``adam``, ``adamw``, ``muon`` or ``schedule_free_adamw``.
        weight_decay: decoupled weight decay (adamw, muon and schedule_free_adamw).
        schedule_free_warmup_steps: updates of learning-rate warmup inside schedule_free_adamw.
        normalize_obs: whiten observations with running statistics kept in the state.
        normalize_reward: scale rewards by the running std of the discounted return.
        schedules: ``{hyperparameter: schedule string}`` (``PPOConfig.schedules``), e.g.
            ``{ent_coef: "cosine:end=0"}``.

    Example:
        >>> PPOSection(gamma=1).gamma  # ints are accepted for float fields
        1.0
        >>> PPOSection(gamma="high")
        Traceback (most recent call last):
            ...
        TypeError: ppo.gamma='high' has type str; expected float
    """

    learning_rate: float = _DEFAULTS.learning_rate
    anneal_lr: bool = _DEFAULTS.anneal_lr
    gamma: float = _DEFAULTS.gamma
    gae_lambda: float = _DEFAULTS.gae_lambda
    clip_coef: float = _DEFAULTS.clip_coef
    clip_vloss: bool = _DEFAULTS.clip_vloss
    vf_clip_coef: float | None = _DEFAULTS.vf_clip_coef
    norm_adv: bool = _DEFAULTS.norm_adv
    vtrace: bool = _DEFAULTS.vtrace
    vtrace_rho_clip: float = _DEFAULTS.vtrace_rho_clip
    vtrace_c_clip: float = _DEFAULTS.vtrace_c_clip
    prioritized: bool = _DEFAULTS.prioritized
    prio_alpha: float = _DEFAULTS.prio_alpha
    prio_beta0: float = _DEFAULTS.prio_beta0
    kickstart_teachers: tuple[str, ...] = _DEFAULTS.kickstart_teachers
    kickstart_coef: float = _DEFAULTS.kickstart_coef
    kickstart_value_coef: float = _DEFAULTS.kickstart_value_coef
    kickstart_steps: int | None = _DEFAULTS.kickstart_steps
    target_kl: float | None = _DEFAULTS.target_kl
    l2_reg_loss_coef: float | None = _DEFAULTS.l2_reg_loss_coef
    l2_init_loss_coef: float | None = _DEFAULTS.l2_init_loss_coef
    ent_coef: float = _DEFAULTS.ent_coef
    vf_coef: float = _DEFAULTS.vf_coef
    max_grad_norm: float = _DEFAULTS.max_grad_norm
    update_epochs: int = _DEFAULTS.update_epochs
    num_minibatches: int = _DEFAULTS.num_minibatches
    adam_eps: float = _DEFAULTS.adam_eps
    optimizer: str = _DEFAULTS.optimizer
    weight_decay: float = _DEFAULTS.weight_decay
    schedule_free_warmup_steps: int = _DEFAULTS.schedule_free_warmup_steps
    normalize_obs: bool = _DEFAULTS.normalize_obs
    normalize_reward: bool = _DEFAULTS.normalize_reward
    schedules: tuple[tuple[str, str], ...] = _DEFAULTS.schedules

    def __post_init__(self) -> None:
        _check_section(self, "ppo")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """What to train on and for how long (section ``trainer``).

    Attributes:
        env_id: registered environment id (``functional_rl.envs.list_envs()``).
        total_timesteps: environment steps to train for, summed over envs and processes.
        num_envs: parallel environments per process (static: decides shapes).
        num_steps: rollout length per iteration (static).
        seed: seed of the run's PRNG key.
        device: torch device string.
        world_size: processes of a data-parallel run (set from torchrun's process group; 1 otherwise).

    Example:
        >>> TrainerConfig(total_timesteps=1e6).total_timesteps  # YAML's 1e6 is an integral float
        1000000
        >>> TrainerConfig(num_envs=True)
        Traceback (most recent call last):
            ...
        TypeError: trainer.num_envs=True has type bool; expected int
    """

    env_id: str = _DEFAULTS.env_id
    total_timesteps: int = _DEFAULTS.total_timesteps
    num_envs: int = _DEFAULTS.num_envs
    num_steps: int = _DEFAULTS.num_steps
    seed: int = _DEFAULTS.seed
    device: str = _DEFAULTS.device
    world_size: int = _DEFAULTS.world_size

    def __post_init__(self) -> None:
        _check_section(self, "trainer")


_SECTIONS: dict[str, type] = {"agent": AgentConfig, "trainer": TrainerConfig, "ppo": PPOSection}

#: ``PPOConfig`` field -> its nested key path, e.g. ``"gamma" -> "ppo.gamma"``, ``"policy" -> "agent.name"``.
FIELD_PATHS: dict[str, str] = {
    f.name: f"{section}.{f.name}"
    for section, cls in _SECTIONS.items()
    for f in dataclasses.fields(cls)
    if f.name in {g.name for g in dataclasses.fields(PPOConfig)}
} | {"policy": "agent.name"}

#: The reference trainer's ``optimizer`` section: its keys and the ``ppo`` keys they set.
OPTIMIZER_KEYS = {"type": "optimizer", "weight_decay": "weight_decay", "learning_rate": "learning_rate", "eps": "adam_eps"}


#: The reference trainer's ``prioritized_experience_replay`` section -> ``ppo`` keys (a
#: ``prio_alpha`` above 0 switches ``ppo.prioritized`` on, as the reference samples
#: uniformly at 0).
PRIORITIZED_KEYS = {"prio_alpha": "prio_alpha", "prio_beta0": "prio_beta0"}

#: The reference trainer's ``kickstart`` section -> ``ppo`` keys (``teacher_uri`` and
#: ``additional_teachers`` together make ``ppo.kickstart_teachers``).
KICKSTART_KEYS = {"teacher_uri": "kickstart_teachers", "additional_teachers": "kickstart_teachers",
                  "action_loss_coef": "kickstart_coef", "value_loss_coef": "kickstart_value_coef",
                  "kickstart_steps": "kickstart_steps"}


#: The reference trainer's ``lr_scheduler`` section: ``{enabled, anneal_lr, warmup_steps,
#: schedule_type}`` becomes ``ppo.schedules.learning_rate`` (and ``ppo.anneal_lr``).
LR_SCHEDULER_KEYS = {"enabled": "schedules", "anneal_lr": "anneal_lr", "warmup_steps": "schedules", "schedule_type": "schedules"}


def _lr_schedule(section: Mapping[str, Any]) -> tuple[bool | None, str | None]:
    """``(anneal_lr, learning-rate schedule string)`` of a reference ``lr_scheduler`` section:
    disabled -> ``(anneal_lr or None, None)``; a ``schedule_type`` (default linear) with
    ``warmup_steps`` -> its :class:`~functional_rl.kernel.schedules.Schedule` string ending
    at 0, and ``anneal_lr=False`` (the schedule replaces the built-in decay)."""
    if not section.get("enabled", True):
        return section.get("anneal_lr"), None
    kind = section.get("schedule_type") or "linear"
    warmup = section.get("warmup_steps")
    spec = kind if kind == "constant" else f"{kind}:end=0" if kind != "exponential" else f"{kind}:end=0.01"
    if warmup:
        spec += ("," if ":" in spec else ":") + f"warmup={int(warmup)}"
    return False, spec


def _section(d: Mapping[str, Any], name: str, keys: Mapping[str, str]) -> Mapping[str, Any] | None:
    section = d.get(name) or {}
    if not isinstance(section, Mapping):
        raise TypeError(f"{name} must be a mapping of {', '.join(keys)}, got {type(section).__name__}")
    for key in section:
        if key not in keys:
            raise ValueError(_unknown_key(str(key), name, list(keys)))
    return section


def _lower_reference_sections(d: Mapping[str, Any]) -> Mapping[str, Any]:
    """Move the reference trainer's top-level sections into ``ppo``:

    * ``optimizer: {type, weight_decay, learning_rate, eps}`` (``type`` -> ``ppo.optimizer``,
      ``eps`` -> ``ppo.adam_eps``; :data:`OPTIMIZER_KEYS`);
    * ``prioritized_experience_replay: {prio_alpha, prio_beta0}`` (:data:`PRIORITIZED_KEYS`);
    * ``kickstart: {teacher_uri, additional_teachers, action_loss_coef, value_loss_coef,
      kickstart_steps}`` (:data:`KICKSTART_KEYS`);
    * ``lr_scheduler: {enabled, anneal_lr, warmup_steps, schedule_type}``
      (:data:`LR_SCHEDULER_KEYS`): a ``schedule_type`` of linear, cosine or logarithmic decays
      to 0, exponential to 1% (it cannot reach 0), after ``warmup_steps`` env steps of ramp.

    A setting given both ways is refused (give it once)."""
    names = ("optimizer", "prioritized_experience_replay", "kickstart", "lr_scheduler")
    if not any(name in d for name in names):
        return d
    if not isinstance(d.get("ppo") or {}, Mapping):
        raise TypeError(f"ppo must be a mapping of PPOSection fields, got {type(d['ppo']).__name__}")
    ppo = dict(d.get("ppo") or {})

    def put(where: str, target: str, value: Any) -> None:
        if target in ppo:
            raise ValueError(f"{where} and ppo.{target} are the same setting; give it once")
        ppo[target] = value

    for key, value in _section(d, "optimizer", OPTIMIZER_KEYS).items():
        put(f"optimizer.{key}", OPTIMIZER_KEYS[key], value)
    prio = _section(d, "prioritized_experience_replay", PRIORITIZED_KEYS)
    for key, value in prio.items():
        put(f"prioritized_experience_replay.{key}", PRIORITIZED_KEYS[key], value)
    if "prio_alpha" in prio:
        alpha = prio["prio_alpha"]
        put("prioritized_experience_replay.prio_alpha", "prioritized", bool(isinstance(alpha, (int, float)) and alpha > 0))
    kick = _section(d, "kickstart", KICKSTART_KEYS)
    teachers = []
    for key in ("teacher_uri", "additional_teachers"):
        value = kick.get(key)
        if value is None:
            continue
        for t in [value] if isinstance(value, str) else value:
            teachers.append(t["teacher_uri"] if isinstance(t, Mapping) and "teacher_uri" in t else t)
    if teachers:
        put("kickstart.teacher_uri", "kickstart_teachers", teachers)
    for key in ("action_loss_coef", "value_loss_coef", "kickstart_steps"):
        if key in kick:
            put(f"kickstart.{key}", KICKSTART_KEYS[key], kick[key])
    if "lr_scheduler" in d:
        anneal, spec = _lr_schedule(_section(d, "lr_scheduler", LR_SCHEDULER_KEYS))
        if anneal is not None:
            put("lr_scheduler", "anneal_lr", anneal)
        if spec is not None:
            schedules = dict(ppo.get("schedules") or {})
            if "learning_rate" in schedules:
                raise ValueError("lr_scheduler and ppo.schedules.learning_rate are the same setting; give it once")
            ppo["schedules"] = {**schedules, "learning_rate": spec}
    rest = {k: v for k, v in d.items() if k not in names}
    return {**rest, "ppo": ppo}


_PPO_ERROR = re.compile(r"^PPOConfig\.(\w+)=(.*)$", re.S)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """A whole run, in the reference trainer's nested layout. Frozen and validated on construction.

    Attributes:
        experiment_name: a name for the run (used for run directories and logs).
        agent: the policy architecture.
        trainer: environment, budget, sizes, seed and device.
        ppo: the PPO hyperparameters.

    Raises:
        TypeError: a section is not the right dataclass.
        ValueError: the values break a :class:`PPOConfig` rule; the message names the nested
            key, e.g. ``ppo.gamma=1.5 is invalid: must lie in [0, 1]``.

    Example:
        >>> cfg = TrainingConfig(experiment_name="quick", trainer=TrainerConfig(total_timesteps=2048))
        >>> cfg.to_ppo_config().num_iterations  # 2048 steps / (4 envs x 128 steps)
        4
        >>> cfg.with_overrides({"ppo.gamma": 0.9}).ppo.gamma
        0.9
    """

    experiment_name: str = "default"
    agent: AgentConfig = dataclasses.field(default_factory=AgentConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    ppo: PPOSection = dataclasses.field(default_factory=PPOSection)

    def __post_init__(self) -> None:
        if not isinstance(self.experiment_name, str) or not self.experiment_name:
            raise TypeError(
                f"experiment_name={_short(self.experiment_name)} has type {type(self.experiment_name).__name__}; "
                "expected a non-empty str"
            )
        for section, cls in _SECTIONS.items():
            value = getattr(self, section)
            if not isinstance(value, cls):
                raise TypeError(f"{section} must be a {cls.__name__}, got {type(value).__name__}")
        self.to_ppo_config()  # cross-field rules (e.g. num_minibatches divides the batch)

    # ------------------------------------------------------------------ lowering
    def to_ppo_config(self) -> PPOConfig:
        """The flat kernel config: every nested field copied to its :class:`PPOConfig` field.

        Returns:
            A validated :class:`PPOConfig`.

        Raises:
            ValueError: a :class:`PPOConfig` rule fails; re-raised with the nested key path
                (``ppo.gamma=1.5 is invalid: must lie in [0, 1]``).
        """
        values = {flat: getattr(getattr(self, path.split(".")[0]), path.split(".")[1]) for flat, path in FIELD_PATHS.items()}
        try:
            return PPOConfig(**values)
        except ValueError as e:
            match = _PPO_ERROR.match(str(e))
            if match is None or match.group(1) not in FIELD_PATHS:
                raise
            value, _, rule = match.group(2).partition(" is invalid: ")
            value = value if len(value) <= 200 else f"{value[:199]}... ({len(value)} chars)"
            raise ValueError(f"{FIELD_PATHS[match.group(1)]}={value} is invalid: {rule}") from None

    @classmethod
    def from_ppo_config(cls, config: PPOConfig, experiment_name: str = "default") -> TrainingConfig:
        """The nested form of a flat :class:`PPOConfig` (the inverse of :meth:`to_ppo_config`).

        Example:
            >>> from functional_rl.shell.presets import pendulum_config as flat_pendulum
            >>> cfg = TrainingConfig.from_ppo_config(flat_pendulum(), experiment_name="pendulum")
            >>> cfg.trainer.env_id, cfg.ppo.gamma, cfg.to_ppo_config() == flat_pendulum()
            ('Pendulum-v1', 0.95, True)
        """
        if not isinstance(config, PPOConfig):
            raise TypeError(f"from_ppo_config needs a PPOConfig, got {type(config).__name__}")
        flat_of = {path: flat for flat, path in FIELD_PATHS.items()}
        sections = {
            section: section_cls(**{f.name: getattr(config, flat_of[f"{section}.{f.name}"]) for f in dataclasses.fields(section_cls)
                                    if f"{section}.{f.name}" in flat_of})
            for section, section_cls in _SECTIONS.items()
        }
        return cls(experiment_name=experiment_name, **sections)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of JSON/YAML-able values (tuples become lists).

        Example:
            >>> TrainingConfig().to_dict()["agent"]
            {'name': 'mlp', 'hidden_sizes': [64, 64], 'activation': 'tanh', 'last_action': False}
        """
        out: dict[str, Any] = {"experiment_name": self.experiment_name}
        for section in _SECTIONS:
            values = dataclasses.asdict(getattr(self, section))
            values.pop("hidden_size", None)  # derived from hidden_sizes, which is stored
            out[section] = {k: dict(v) if k == "schedules" else list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingConfig:
        """Build from the nested (legacy YAML) layout; missing keys take their defaults.

        A section given as ``None`` (an empty YAML mapping ``ppo:``) takes its defaults.

        Args:
            d: ``{"experiment_name": str, "agent": {...}, "trainer": {...}, "ppo": {...}}``,
                each part optional; the reference trainer's ``optimizer``,
                ``prioritized_experience_replay``, ``kickstart`` and ``lr_scheduler``
                sections are read into ``ppo`` (:data:`OPTIMIZER_KEYS`, :data:`PRIORITIZED_KEYS`,
                :data:`KICKSTART_KEYS`, :data:`LR_SCHEDULER_KEYS`).

        Raises:
            ValueError: an unknown key, named by its full path with the closest known key,
                or a value that breaks a :class:`PPOConfig` rule.
            TypeError: a value of the wrong type (the message names the path and the
                expected type), or a section that is not a mapping.

        Example:
            >>> TrainingConfig.from_dict({"trainer": {"gamma": 0.9}})
            Traceback (most recent call last):
            ...
            ValueError: unknown key 'trainer.gamma' (did you mean 'ppo.gamma'?)
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"a TrainingConfig dict must be a mapping, got {type(d).__name__}")
        d = _lower_reference_sections(d)
        top = ["experiment_name", *_SECTIONS]
        for key in d:
            if key not in top:
                raise ValueError(_unknown_key(str(key), None, top))
        kwargs: dict[str, Any] = {}
        if "experiment_name" in d:
            kwargs["experiment_name"] = d["experiment_name"]
        for section, section_cls in _SECTIONS.items():
            values = d.get(section)
            if values is None:
                continue
            if not isinstance(values, Mapping):
                raise TypeError(
                    f"{section} must be a mapping of {section_cls.__name__} fields, got {type(values).__name__}"
                )
            names = [f.name for f in dataclasses.fields(section_cls)]
            for key in values:
                if key not in names:
                    raise ValueError(_unknown_key(str(key), section, names))
            kwargs[section] = section_cls(**values)
        return cls(**kwargs)

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrainingConfig:
        """A copy with dotted-path overrides applied, checked like :meth:`from_dict`.

        Example:
            >>> cfg = TrainingConfig().with_overrides({"trainer.num_envs": 4, "experiment_name": "x"})
            >>> cfg.trainer.num_envs, cfg.experiment_name
            (4, 'x')
        """
        d = self.to_dict()
        for path, value in overrides.items():
            section, _, name = path.partition(".")
            if not name:
                d[section] = value
            elif isinstance(d.get(section), dict):
                d[section][name] = value
            else:
                raise ValueError(_unknown_key(path, None, ["experiment_name", *_SECTIONS]))
        return TrainingConfig.from_dict(d)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> TrainingConfig:
        """Read a YAML file in the nested layout (``yaml.safe_load``: no code runs).

        A mapping that repeats a key is refused (YAML would silently keep the last), and every
        message echoes at most a few hundred characters of a value, so a file of nested
        aliases ("billion laughs") gives a short error, not one of its expansion.

        Raises:
            ImportError: PyYAML is not installed (``pip install pyyaml``).
            FileNotFoundError: ``path`` does not exist.
            ValueError: the file is not UTF-8 or not valid YAML, repeats a key, or its content
                fails :meth:`from_dict` (the message starts with the path).

        Example:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as d:
            ...     p = Path(d) / "run.yaml"
            ...     _ = p.write_text("ppo:\\n  gamma: 0.9\\n  gamma: 0.8\\n")
            ...     TrainingConfig.from_yaml(p)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: ...run.yaml: not valid YAML: key 'gamma' appears twice in a mapping; keep one (line 3, column 3)
        """
        yaml = _import_yaml()
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        try:
            d = yaml.load(text, Loader=_strict_loader(yaml))
        except RecursionError:
            raise ValueError(f"{path}: nested too deeply to be a config") from None
        except yaml.YAMLError as e:
            problem = str(getattr(e, "problem", None) or e)
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            problem = " ".join(problem.split())
            problem = problem if len(problem) <= 300 else f"{problem[:299]}..."
            raise ValueError(f"{path}: not valid YAML: {problem}{where}") from e
        if d is None:
            d = {}
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{path}: {e}") from None

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The config as YAML text (keys in field order); also written to ``path`` if given.

        ``TrainingConfig.from_yaml`` reads the file back to an equal config.

        Raises:
            ImportError: PyYAML is not installed (``pip install pyyaml``).
        """
        yaml = _import_yaml()
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


def _unknown_key(key: str, section: str | None, known: list[str]) -> str:
    """The message for an unknown key: its full path and the closest known path, if any."""
    key = key if len(key) <= 100 else f"{key[:99]}..."
    path = key if section is None else f"{section}.{key}"
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        hint = close[0] if section is None else f"{section}.{close[0]}"
        return f"unknown key {path!r} (did you mean {hint!r}?)"
    # The key may live in another section (the legacy layout kept PPO keys under `trainer`).
    elsewhere = [f"{s}.{key}" for s, c in _SECTIONS.items() if s != section and key in {f.name for f in dataclasses.fields(c)}]
    if elsewhere:
        return f"unknown key {path!r} (did you mean {elsewhere[0]!r}?)"
    where = "at the top level" if section is None else f"in {section!r}"
    return f"unknown key {path!r}; known keys {where}: {', '.join(known)}"


def _strict_loader(yaml: Any) -> type:
    """A ``yaml.SafeLoader`` that refuses a mapping with a repeated key."""

    class StrictSafeLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: SafeLoader's own error says so below
                    break
                if repeated:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {_short(key)} appears twice in a mapping; keep one", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return StrictSafeLoader


def _import_yaml() -> Any:
    try:
        import yaml
    except ImportError as e:
        raise ImportError("YAML configs need PyYAML: pip install pyyaml") from e
    return yaml


# ---------------------------------------------------------------------------- presets
def run_config(config: Any = None, ppo_config: Any = None, policy: Any = None) -> tuple[PPOConfig, Any]:
    """``(PPOConfig, policy)`` from the arguments the reference trainer's loop took.

    Its README calls ``functional_training_loop(config=trainer_config, ppo_config=ppo_config,
    policy=agent, ...)``; this lowers those to the flat config and the policy the loop builds:

    - ``config``: a :class:`PPOConfig` (used as is), a :class:`TrainingConfig`, a
      :class:`TrainerConfig` section (the other sections default), or ``None`` (``ppo_config``
      is then a whole :class:`PPOConfig`, or the defaults).
    - ``ppo_config``: a :class:`PPOSection` replacing the config's ``ppo`` section.
    - ``policy``: an :class:`AgentConfig` replacing the ``agent`` section (the loop then builds
      the policy it names), or a ``Policy`` / ``None`` passed through.

    Raises:
        TypeError: an argument of another type, or two whole configs (say which one you mean).

    Example:
        >>> cfg, policy = run_config(TrainerConfig(total_timesteps=4096), PPOSection(gamma=0.9),
        ...                          AgentConfig(name="mlp", hidden_size=32))
        >>> cfg.total_timesteps, cfg.gamma, cfg.hidden_sizes, policy
        (4096, 0.9, (32, 32), None)
    """
    if isinstance(config, PPOConfig) and ppo_config is None and not isinstance(policy, AgentConfig):
        return config, policy
    if config is None and isinstance(ppo_config, PPOConfig):
        config, ppo_config = ppo_config, None
    if isinstance(ppo_config, PPOConfig):
        raise TypeError("ppo_config is a whole PPOConfig and config is given too: pass one PPOConfig as config, "
                        "or the nested TrainerConfig/TrainingConfig as config with a PPOSection as ppo_config")
    if ppo_config is not None and not isinstance(ppo_config, PPOSection):
        raise TypeError(f"ppo_config must be a PPOSection (or a PPOConfig without config), got {type(ppo_config).__name__}")
    if config is None:
        nested = TrainingConfig()
    elif isinstance(config, PPOConfig):
        nested = TrainingConfig.from_ppo_config(config)
    elif isinstance(config, TrainingConfig):
        nested = config
    elif isinstance(config, TrainerConfig):
        nested = TrainingConfig(trainer=config)
    else:
        raise TypeError(f"config must be a PPOConfig, TrainingConfig or TrainerConfig, got {type(config).__name__}")
    changes: dict[str, Any] = {}
    if ppo_config is not None:
        changes["ppo"] = ppo_config
    if isinstance(policy, AgentConfig):
        changes["agent"], policy = policy, None
    return dataclasses.replace(nested, **changes).to_ppo_config(), policy


def small_fast_config(experiment_name: str = "small_fast") -> TrainingConfig:
    """The reference trainer's quick preset: CartPole, 50k steps (:func:`functional_rl.shell.presets.small_fast_config`).

    Example:
        >>> cfg = small_fast_config()
        >>> cfg.trainer.total_timesteps, cfg.ppo.learning_rate
        (50000, 0.001)
    """
    return TrainingConfig.from_ppo_config(_presets.small_fast_config(), experiment_name)


def cartpole_config(experiment_name: str = "cartpole") -> TrainingConfig:
    """CleanRL's CartPole-v1 settings (:func:`functional_rl.shell.presets.cartpole_config`).

    Example:
        >>> cfg = cartpole_config()
        >>> cfg.experiment_name, cfg.trainer.env_id, cfg.to_ppo_config() == PPOConfig()
        ('cartpole', 'CartPole-v1', True)
    """
    return TrainingConfig.from_ppo_config(_presets.cartpole_config(), experiment_name)


def acrobot_config(experiment_name: str = "acrobot") -> TrainingConfig:
    """Acrobot-v1 (:func:`functional_rl.shell.presets.acrobot_config`).

    Example:
        >>> cfg = acrobot_config(experiment_name="acro")
        >>> cfg.experiment_name, cfg.trainer.env_id
        ('acro', 'Acrobot-v1')
    """
    return TrainingConfig.from_ppo_config(_presets.acrobot_config(), experiment_name)


def pendulum_config(experiment_name: str = "pendulum") -> TrainingConfig:
    """Pendulum-v1, continuous control (:func:`functional_rl.shell.presets.pendulum_config`).

    Example:
        >>> cfg = pendulum_config()
        >>> cfg.trainer.env_id, cfg.ppo.normalize_obs
        ('Pendulum-v1', True)
    """
    return TrainingConfig.from_ppo_config(_presets.pendulum_config(), experiment_name)


def mountain_car_continuous_config(experiment_name: str = "mountain_car_continuous") -> TrainingConfig:
    """MountainCarContinuous-v0 (:func:`functional_rl.shell.presets.mountain_car_continuous_config`).

    Example:
        >>> cfg = mountain_car_continuous_config()
        >>> cfg.trainer.env_id, cfg.trainer.total_timesteps, cfg.ppo.normalize_reward
        ('MountainCarContinuous-v0', 1000000, True)
    """
    return TrainingConfig.from_ppo_config(_presets.mountain_car_continuous_config(), experiment_name)


#: Preset name -> factory, the same names as :data:`functional_rl.shell.presets.PRESETS`.
PRESETS = {
    "cartpole": cartpole_config,
    "small_fast": small_fast_config,
    "acrobot": acrobot_config,
    "pendulum": pendulum_config,
    "mountain_car_continuous": mountain_car_continuous_config,
}
