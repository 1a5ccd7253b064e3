"""Run configuration: static sizes plus dynamic hyperparameters.

:class:`PPOConfig` is a frozen dataclass. Its *static* fields (``num_envs``, ``num_steps``,
``num_minibatches``, ``update_epochs``, network sizes) decide tensor shapes and are baked
into compiled graphs. Its *continuous* fields (learning rate, discount, clip range, loss
coefficients) reach the kernel as a :class:`Hyperparams` pytree of 0-d tensors inside the
:class:`~functional_rl.kernel.state.TrainerState`, so changing one never recompiles and
``torch.func.vmap`` can sweep it.

The defaults are CleanRL's ``ppo.py`` CartPole settings (Huang et al., "The 37
Implementation Details of Proximal Policy Optimization", ICLR blog track 2022).

Example:
    >>> cfg = PPOConfig(num_envs=4)
    >>> cfg.batch_size, cfg.minibatch_size
    (512, 128)
    >>> PPOConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> PPOConfig.from_dict({"gama": 0.9})
    Traceback (most recent call last):
    ...
    ValueError: unknown PPOConfig key 'gama' (did you mean 'gamma'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
from collections.abc import Mapping
from typing import Any

import torch

from functional_rl.kernel.struct import pytree_dataclass

__all__ = ["PPOConfig", "Hyperparams", "HYPERPARAM_NAMES", "learning_rate_at", "short", "MAX_ECHO"]

#: Characters of a value's ``repr`` that an error message echoes at most.
MAX_ECHO = 200


class _BoundedRepr(reprlib.Repr):
    """``reprlib.Repr`` with few items per level and no huge-integer conversion, so showing even
    a value built from nested aliases (exponentially large when expanded) takes bounded time."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
            setattr(self, name, 6)
        self.maxlevel = 3
        self.maxstring = self.maxother = self.maxlong = MAX_ECHO

    def repr_int(self, x: int, level: int) -> str:  # noqa: D102 - reprlib hook
        if x.bit_length() > 1000:
            return f"<an integer of about {int(x.bit_length() * 0.30103)} digits>"
        return super().repr_int(x, level)


_REPR = _BoundedRepr()


def short(value: Any, limit: int = MAX_ECHO) -> str:
    """A ``repr`` of ``value`` cut to about ``limit`` characters (with ``...`` and the length).

    Containers show a few items per level only, so a value of nested aliases is shown in
    bounded time and space. Every error message of the library that echoes a value uses it.

    Example:
        >>> short("x" * 1000, limit=12)
        "'xxxxxxxxxx... (1002 chars)"
        >>> short([[1] * 9] * 9)
        '[[1, 1, 1, 1, 1, 1, ...], [1, 1, 1, 1, 1, 1, ...], [1, 1, 1, 1, 1, 1, ...], [1, 1, 1, 1, 1, 1, ...], [1, 1, 1, 1, 1, 1, ...], [1, 1, 1, 1, 1, 1, ...], ...]'
        >>> short(10 ** 5000)
        '<an integer of about 5000 digits>'
    """
    text = repr(value) if isinstance(value, str) else _REPR.repr(value)
    return text if len(text) <= limit else f"{text[:limit - 1]}... ({len(text)} chars)"


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Everything that defines a PPO run. Frozen: make a new one with ``dataclasses.replace``.

    Attributes:
        env_id: registered environment id (see ``functional_rl.envs.list_envs()``).
        seed: seed of the run's PRNG key.
        total_timesteps: environment steps to train for (summed over envs and processes).
        num_envs: parallel environments per agent and process (static: decides shapes).
            The default, 4, is CleanRL's CartPole setting, chosen by measurement: over seeds
            1-5 it reached mean return 475 in a median 27.9 s from process start (warm
            compile cache) and 147k env steps, against 30.5 s and 307k steps with 8 envs
            (``benchmarks/default_config.py``, benchmarks/RESULTS.md).
        num_steps: rollout length T per iteration (static).
        num_minibatches: minibatches per epoch; must divide ``num_steps``: every minibatch
            takes ``num_steps / num_minibatches`` randomly chosen steps of every env. For a
            recurrent policy it must divide ``num_envs`` instead: every minibatch replays
            ``num_envs / num_minibatches`` whole env sequences.
        update_epochs: passes over each batch (static).
        learning_rate: Adam step size at the start of training (> 0).
        anneal_lr: decay the learning rate linearly to 0 over the run.
        gamma: discount factor in [0, 1].
        gae_lambda: GAE lambda in [0, 1].
        clip_coef: PPO ratio clip range epsilon (> 0).
        clip_vloss: clip the value update to ``vf_clip_coef`` around the old value.
        vf_clip_coef: the value clip range (> 0), apart from the ratio's ``clip_coef`` as the
            reference trainer has it; ``None`` (the default) uses ``clip_coef`` (CleanRL).
        norm_adv: normalise advantages per minibatch to zero mean, unit std.
        vtrace: before every epoch, recompute advantages and value targets with V-trace
            (Espeholt et al. 2018) from the importance ratio of the current policy to the one
            that acted (:func:`~functional_rl.kernel.update.vtrace_batch`); off: GAE once.
        vtrace_rho_clip: V-trace's ``rho_bar`` (> 0), the clip of the ratio in the advantage.
        vtrace_c_clip: V-trace's ``c_bar`` (> 0), the clip of the ratio in the traces.
        l2_reg_loss_coef: ``c`` of an L2 loss ``c * sum ||p||^2`` on the parameters
            (:func:`~functional_rl.kernel.optim.add_l2_gradient`); ``None`` (the default): off.
        l2_init_loss_coef: ``c`` of ``c * sum ||p - p0||^2``, ``p0`` the parameters the run
            started from, kept in the optimizer state
            (:func:`~functional_rl.kernel.optim.add_l2_to_initial`); ``None``: off. Set either to
            a number (0 included) to sweep or schedule it; ``None`` leaves it out of the graph.
        prioritized: draw each epoch's minibatches with probability proportional to
            ``|advantage|^prio_alpha`` and weight their losses by ``(N P)^-beta``
            (:func:`~functional_rl.kernel.update.prioritized_order`; the reference trainer's
            ``prioritized_experience_replay``); off: every sample once per epoch, stratified by env.
        prio_alpha: ``>= 0``; 0 samples uniformly (with replacement).
        prio_beta0: ``beta`` at the start, in ``(0, 1]``; it anneals linearly to 1 over the
            run (the implicit schedule ``prio_beta0: linear:end=1/prio_beta0``; give
            ``schedules`` a ``prio_beta0`` entry to anneal it otherwise). The metric
            ``schedule/prio_beta0`` is the beta each iteration used.
        kickstart_teachers: checkpoints, run directories or policy-store URIs of frozen
            teacher policies (:func:`functional_rl.shell.kickstart.load_teachers`); each adds
            a distillation loss :func:`~functional_rl.kernel.losses.kickstart_loss`:
            ``kickstart_coef * KL(teacher || student) + kickstart_value_coef * (V_teacher - V)^2``.
            Empty (the default): off.
        kickstart_coef: weight of the action distillation term (``>= 0``).
        kickstart_value_coef: weight of the value distillation term (``>= 0``). The default,
            0.01, is chosen by measurement: a trained CartPole teacher's values are ~80, so at
            1.0 (the reference trainer's default) the value term's gradient dominates the
            global norm clip and the policy distils slowly (3 seeds, 24k steps: mean return
            89 against 98 from scratch; 190 at 0.01; tests/test_kickstart.py).
        kickstart_steps: env steps over which both weights fall linearly to 0 (the implicit
            schedule ``linear:end=0,total=kickstart_steps``; a ``schedules`` entry for either
            replaces it); ``None``: over the whole run.
        target_kl: stop an iteration's updates once a minibatch's approximate KL
            (``approx_kl``) exceeds it (the later updates are masked in the graph: no host
            sync); ``None`` (the default) never stops. The metric ``updates_run`` counts the
            updates that ran.
        ent_coef: entropy bonus coefficient (>= 0).
        vf_coef: value loss coefficient (>= 0).
        max_grad_norm: global gradient norm clip (> 0).
        adam_eps: Adam epsilon (CleanRL uses 1e-5, not torch's 1e-8).
        optimizer: ``"adam"`` (CleanRL's), ``"adamw"`` (decoupled weight decay), ``"muon"``
            (Newton-Schulz orthogonalised momentum for weight matrices, Adam for the rest) or
            ``"schedule_free_adamw"`` (Defazio et al. 2024: no decay schedule, so it needs
            ``anneal_lr=False``; evaluate with
            :func:`~functional_rl.kernel.optim.schedule_free_eval_params`):
            :data:`~functional_rl.kernel.optim.OPTIMIZERS`.
        weight_decay: ``>= 0``, decoupled (``p <- p - lr * wd * p`` each update) for adamw,
            muon and schedule_free_adamw; must be 0 for adam. A tensor in the state: changing
            it never recompiles.
        schedule_free_warmup_steps: updates of linear learning-rate warmup inside
            ``"schedule_free_adamw"`` (Defazio et al. 2024 warm up within the optimizer, so
            the averaging weights see the ramp); ``>= 0``.
        policy: the default policy's architecture (static): ``"mlp"`` (CleanRL's MLP
            actor-critic), ``"simple_cnn"`` or ``"nature_cnn"`` (a conv encoder for image
            observations ``[C, H, W]``), ``"lstm"`` or ``"gru"`` (a recurrent core after an MLP
            encoder, :mod:`~functional_rl.kernel.recurrent`);
            :func:`~functional_rl.kernel.policies.make_policy`. Ignored when a ``Policy`` is passed in.
        hidden_sizes: widths of the actor and critic MLPs, or of the dense layers after a CNN
            encoder, or for ``"lstm"``/``"gru"`` the encoder's layers then the core's width (static).
        activation: ``"tanh"`` or ``"relu"``.
        normalize_obs: keep running observation statistics in the state and whiten obs.
        normalize_reward: scale rewards by the running std of the discounted return.
        last_action: feed the previous action (one-hot for discrete actions, zeros at an
            episode's start) to the policy with the observation; kept in the state and stored
            in the trajectory's ``obs`` so training sees exactly what the rollout saw.
        schedules: ``{hyperparameter: schedule string}``, e.g. ``{"ent_coef": "cosine:end=0"}``
            (:class:`~functional_rl.kernel.schedules.Schedule`; steps are env steps,
            ``agent_step`` at the start of each iteration, over ``total_timesteps`` unless the
            string gives ``total``). A scheduled value is ``base * factor(agent_step)``; the
            learning rate's schedule needs ``anneal_lr=False`` (that is the built-in linear one).
            Stored as sorted ``(name, string)`` pairs so the config stays hashable.
        device: torch device string for the state and the compiled functions.
        world_size: processes of a data-parallel run, each with ``num_envs`` envs (set from the
            ``torch.distributed`` process group by :func:`functional_training_loop`; 1 otherwise).

    Example:
        >>> cfg = PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, total_timesteps=640)
        >>> cfg.batch_size, cfg.minibatch_size, cfg.num_iterations
        (64, 32, 10)
        >>> cfg.replace(gamma=0.9).gamma, cfg.gamma
        (0.9, 0.99)
        >>> PPOConfig(num_envs=4, num_steps=5, num_minibatches=2)
        Traceback (most recent call last):
            ...
        ValueError: PPOConfig.num_minibatches=2 is invalid: must divide num_steps = 5 (each minibatch takes num_steps / num_minibatches steps of every env)
    """

    env_id: str = "CartPole-v1"
    seed: int = 1
    total_timesteps: int = 500_000
    num_envs: int = 4
    num_steps: int = 128
    num_minibatches: int = 4
    update_epochs: int = 4
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = True
    vf_clip_coef: float | None = None
    norm_adv: bool = True
    vtrace: bool = False
    vtrace_rho_clip: float = 1.0
    vtrace_c_clip: float = 1.0
    prioritized: bool = False
    prio_alpha: float = 0.0
    prio_beta0: float = 0.6
    kickstart_teachers: tuple[str, ...] = ()
    kickstart_coef: float = 1.0
    kickstart_value_coef: float = 0.01
    kickstart_steps: int | None = None
    target_kl: float | None = None
    l2_reg_loss_coef: float | None = None
    l2_init_loss_coef: float | None = None
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    adam_eps: float = 1e-5
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule_free_warmup_steps: int = 0
    policy: str = "mlp"
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    normalize_obs: bool = False
    normalize_reward: bool = False
    last_action: bool = False
    schedules: tuple[tuple[str, str], ...] = ()
    device: str = "cpu"
    world_size: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.hidden_sizes, list):
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        if isinstance(self.kickstart_teachers, str):  # one teacher given without a list
            object.__setattr__(self, "kickstart_teachers", (self.kickstart_teachers,))
        elif isinstance(self.kickstart_teachers, list):
            object.__setattr__(self, "kickstart_teachers", tuple(self.kickstart_teachers))
        if isinstance(self.schedules, Mapping) or isinstance(self.schedules, list):
            items = self.schedules.items() if isinstance(self.schedules, Mapping) else self.schedules
            try:
                pairs = tuple(sorted((k, v) for k, v in items))
            except (TypeError, ValueError):
                pairs = self.schedules  # validate() says what is wrong
            object.__setattr__(self, "schedules", pairs)
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def local_batch_size(self) -> int:
        """Transitions per iteration in one process: ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def batch_size(self) -> int:
        """Transitions per iteration over all processes: ``num_envs * num_steps * world_size``."""
        return self.local_batch_size * self.world_size

    @property
    def minibatch_size(self) -> int:
        """Transitions per gradient step over all processes: ``batch_size // num_minibatches``."""
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        """Iterations to reach ``total_timesteps`` (at least 1)."""
        return max(1, self.total_timesteps // self.batch_size)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field that breaks its rule (values echoed in the
        message are cut to about 200 characters).

        Example:
            >>> PPOConfig(hidden_sizes=(64, True))
            Traceback (most recent call last):
                ...
            ValueError: PPOConfig.hidden_sizes=(64, True) is invalid: must be a non-empty sequence of positive integers (not bools)
            >>> PPOConfig(num_envs=1, num_steps=4, num_minibatches=4)
            Traceback (most recent call last):
                ...
            ValueError: PPOConfig.norm_adv=True is invalid: a minibatch holds one sample (num_envs=1 x num_steps=4 x world_size=1 / num_minibatches=4) and norm_adv=True normalises advantages by their standard deviation, which is 0 for one sample: raise num_envs or num_steps, lower num_minibatches, or set norm_adv=False
        """

        def bad(name: str, rule: str) -> None:
            raise ValueError(f"PPOConfig.{name}={short(getattr(self, name))} is invalid: {rule}")

        ints = ("seed", "total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "world_size")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                bad(name, "must be an integer")
        for name in ints[1:]:
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        if self.policy in ("lstm", "gru"):  # minibatches are whole env sequences
            if self.num_envs % self.num_minibatches:
                bad(
                    "num_minibatches",
                    f"must divide num_envs = {self.num_envs} for a recurrent policy ({self.policy!r}: each minibatch "
                    "replays num_envs / num_minibatches whole env sequences)",
                )
        elif self.num_steps % self.num_minibatches:
            bad(
                "num_minibatches",
                f"must divide num_steps = {self.num_steps} (each minibatch takes num_steps / num_minibatches "
                "steps of every env)",
            )
        floats = ("learning_rate", "gamma", "gae_lambda", "clip_coef", "ent_coef", "vf_coef", "max_grad_norm", "adam_eps",
                  "weight_decay", "vtrace_rho_clip", "vtrace_c_clip", "prio_alpha", "prio_beta0", "kickstart_coef",
                  "kickstart_value_coef")
        for name in floats:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                bad(name, "must be a finite number")
            try:
                finite = math.isfinite(value)
            except OverflowError:  # an int too large for a float
                finite = False
            if not finite:
                bad(name, "must be a finite number")
        if self.vf_clip_coef is not None:
            v = self.vf_clip_coef
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                bad("vf_clip_coef", "must be a number > 0, or None to use clip_coef")
        for name in ("l2_reg_loss_coef", "l2_init_loss_coef"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
                bad(name, "must be a number >= 0, or None to leave the term out")
        if self.target_kl is not None:
            v = self.target_kl
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                bad("target_kl", "must be a number > 0 (CleanRL suggests 0.01 to 0.05), or None never to stop early")
        if self.weight_decay < 0:
            bad("weight_decay", "must be >= 0")
        for name in ("prio_alpha", "kickstart_coef", "kickstart_value_coef"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if not 0.0 < self.prio_beta0 <= 1.0:
            bad("prio_beta0", "must lie in (0, 1]: the importance weights' exponent at the start, annealed to 1")
        teachers = self.kickstart_teachers
        if not isinstance(teachers, tuple) or not all(isinstance(t, str) and t for t in teachers):
            bad("kickstart_teachers", "must be a list of checkpoint paths, run directories or policy-store URIs")
        k = self.kickstart_steps
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            bad("kickstart_steps", "must be an integer >= 1 (env steps over which the distillation weight falls to 0), "
                "or None for the whole run")
        if self.weight_decay > 0 and self.optimizer == "adam":
            bad("weight_decay", "needs optimizer='adamw', 'muon' or 'schedule_free_adamw' (decoupled decay); plain adam "
                "takes no weight decay")
        if self.optimizer == "schedule_free_adamw" and (self.anneal_lr or any(n == "learning_rate" for n, _ in self.schedules
                                                                               if isinstance(self.schedules, tuple))):
            bad("optimizer", "schedule_free_adamw replaces the learning-rate decay: set anneal_lr=False and schedule no "
                "learning_rate (warm up with schedule_free_warmup_steps)")
        w = self.schedule_free_warmup_steps
        if not isinstance(w, int) or isinstance(w, bool) or w < 0:
            bad("schedule_free_warmup_steps", "must be an integer >= 0 (updates of learning-rate warmup)")
        from functional_rl.kernel.optim import OPTIMIZERS

        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"must be one of {', '.join(map(repr, OPTIMIZERS))}")
        for name in ("learning_rate", "clip_coef", "max_grad_norm", "adam_eps", "vtrace_rho_clip", "vtrace_c_clip"):
            if getattr(self, name) <= 0:
                bad(name, "must be > 0")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "must lie in [0, 1]")
        for name in ("ent_coef", "vf_coef"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        sizes = self.hidden_sizes
        if (not isinstance(sizes, tuple) or not sizes
                or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in sizes)):
            bad("hidden_sizes", "must be a non-empty sequence of positive integers (not bools)")
        from functional_rl.kernel.policies import POLICY_NAMES

        if not isinstance(self.policy, str) or self.policy not in POLICY_NAMES:
            bad("policy", f"must be one of {', '.join(map(repr, POLICY_NAMES))} (or pass your own Policy to the loop)")
        if not isinstance(self.activation, str) or self.activation not in ("tanh", "relu"):
            bad("activation", "must be 'tanh' or 'relu'")
        for name in ("anneal_lr", "clip_vloss", "norm_adv", "normalize_obs", "normalize_reward", "last_action", "vtrace",
                     "prioritized"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "must be true or false")
        if (not isinstance(self.schedules, tuple)
                or not all(isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in self.schedules)):
            bad("schedules", "must map hyperparameter names to schedule strings, e.g. {'ent_coef': 'cosine:end=0'}")
        from functional_rl.kernel.schedules import parse_schedules

        try:
            parsed = parse_schedules(self.schedules)
        except ValueError as e:
            bad("schedules", str(e))
        if "learning_rate" in parsed and self.anneal_lr:
            bad("schedules", "schedules learning_rate while anneal_lr=True (the built-in linear decay): set anneal_lr=False")
        if not isinstance(self.env_id, str) or not self.env_id:
            bad("env_id", "must be a non-empty string")
        if self.norm_adv and self.minibatch_size == 1:
            bad(
                "norm_adv",
                f"a minibatch holds one sample (num_envs={self.num_envs} x num_steps={self.num_steps} x "
                f"world_size={self.world_size} / num_minibatches={self.num_minibatches}) and norm_adv=True "
                "normalises advantages by their standard deviation, which is 0 for one sample: raise num_envs or "
                "num_steps, lower num_minibatches, or set norm_adv=False",
            )

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        out["schedules"] = dict(self.schedules)
        out["kickstart_teachers"] = list(self.kickstart_teachers)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PPOConfig:
        """Build from a dict, rejecting unknown keys with a did-you-mean hint."""
        names = [f.name for f in dataclasses.fields(cls)]
        for k in d:
            if k not in names:
                close = difflib.get_close_matches(k, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(names)}"
                raise ValueError(f"unknown PPOConfig key {k!r}{hint}")
        return cls(**d)

    def replace(self, **changes: Any) -> PPOConfig:
        """A copy with ``changes`` applied and validated."""
        return PPOConfig.from_dict({**self.to_dict(), **changes})


HYPERPARAM_NAMES = ("learning_rate", "gamma", "gae_lambda", "clip_coef", "vf_clip_coef", "ent_coef", "vf_coef", "max_grad_norm",
                    "weight_decay", "vtrace_rho_clip", "vtrace_c_clip", "target_kl", "l2_reg_loss_coef", "l2_init_loss_coef",
                    "prio_alpha", "prio_beta0", "kickstart_coef", "kickstart_value_coef")


@pytree_dataclass
class Hyperparams:
    """Continuous hyperparameters as 0-d float32 tensors (or ``[A]`` under ``train_many``).

    Being tensors, they are graph inputs of compiled functions (changing one never
    recompiles) and can be vmapped over.

    Example:
        >>> hp = Hyperparams.from_config(PPOConfig(clip_coef=0.1))
        >>> hp.clip_coef.shape, hp.clip_coef.dtype, round(float(hp.clip_coef), 6)
        (torch.Size([]), torch.float32, 0.1)
        >>> hp.replace(ent_coef=torch.tensor([0.0, 0.01])).ent_coef.shape  # a sweep of A=2 agents
        torch.Size([2])
    """

    learning_rate: torch.Tensor
    gamma: torch.Tensor
    gae_lambda: torch.Tensor
    clip_coef: torch.Tensor
    vf_clip_coef: torch.Tensor
    ent_coef: torch.Tensor
    vf_coef: torch.Tensor
    max_grad_norm: torch.Tensor
    weight_decay: torch.Tensor
    vtrace_rho_clip: torch.Tensor
    vtrace_c_clip: torch.Tensor
    target_kl: torch.Tensor
    l2_reg_loss_coef: torch.Tensor
    l2_init_loss_coef: torch.Tensor
    prio_alpha: torch.Tensor
    prio_beta0: torch.Tensor
    kickstart_coef: torch.Tensor
    kickstart_value_coef: torch.Tensor
    #: int64 0-d: the env step the iteration started from (``agent_step - batch_size``), set
    #: by :func:`~functional_rl.kernel.iteration.iteration_hparams` for the update (0 in the
    #: state). Not a hyperparameter: it is how a custom loss sees the step, to gate itself
    #: (:func:`~functional_rl.kernel.schedules.step_range_gate`) or schedule its own
    #: coefficient (``Schedule.parse("cosine:end=0").value(coef, hparams.step, total)``).
    step: torch.Tensor = None

    @classmethod
    def from_config(cls, config: PPOConfig, device: str | torch.device | None = None) -> Hyperparams:
        """0-d float32 tensors holding the config's values.

        >>> float(Hyperparams.from_config(PPOConfig()).gamma)
        0.9900000095367432
        """
        dev = device if device is not None else config.device
        values = {n: getattr(config, n) for n in HYPERPARAM_NAMES}
        if values["vf_clip_coef"] is None:
            values["vf_clip_coef"] = config.clip_coef
        if values["target_kl"] is None:  # never stops (the check is skipped altogether)
            values["target_kl"] = math.inf
        for name in ("l2_reg_loss_coef", "l2_init_loss_coef"):  # off: not in the optimizer at all
            values[name] = 0.0 if values[name] is None else values[name]
        return cls(**{n: torch.tensor(float(v), dtype=torch.float32, device=dev) for n, v in values.items()},
                   step=torch.zeros((), dtype=torch.int64, device=dev))


def learning_rate_at(hparams: Hyperparams, iteration: torch.Tensor, num_iterations: int, anneal: bool) -> torch.Tensor:
    """The learning-rate schedule, a pure function of the iteration counter.

    With annealing (CleanRL): ``lr_i = lr * (1 - i / num_iterations)`` for the ``i``-th
    iteration counted from 0, so the first update uses ``lr`` and the last ``lr / N``.

    Args:
        hparams: hyperparameters (``learning_rate`` 0-d).
        iteration: int64 0-d, completed iterations.
        num_iterations: the run's iteration count (static).
        anneal: whether to decay.

    Returns:
        float32 0-d tensor.

    >>> hp = Hyperparams.from_config(PPOConfig(learning_rate=1.0))
    >>> float(learning_rate_at(hp, torch.tensor(3), 4, True))
    0.25
    """
    if not anneal:
        return hparams.learning_rate
    frac = 1.0 - iteration.to(hparams.learning_rate.dtype) / num_iterations
    return hparams.learning_rate * frac.clamp(min=0.0)
