"""The reference trainer's components, as thin shell objects over the pure kernel.

Users of a modular trainer (``RolloutCollector``, ``PPOOptimizer``, ``PolicyEvaluator``,
``TrainingCheckpointer``, ``StatsLogger``) find the same names here, but nothing holds
mutable training state: every method takes a :class:`~functional_rl.kernel.state.TrainerState` and
returns a new one. Each component delegates to the pure functions (``rollout``,
``train_on_trajectory``, ``ppo_loss``); none re-implements them. They measure time
and convert metrics to Python numbers, which is why they live in the shell.

The loop of the reference trainer's README, done this way::

    collector = RolloutCollector(env, policy, config)
    ppo = PPOOptimizer(policy, config)
    state = load_or_create(run_dir, config, env=env, policy=policy)
    while int(state.agent_step) < config.total_timesteps:
        state, experience, stats = collector.collect(state)
        state, losses = ppo.update(state, experience)
        ...  # your custom logic here
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from tensordict import TensorDict

import functional_rl.kernel.random as jr
from functional_rl.shell import checkpoint
from functional_rl.shell.callbacks import JSONLWriter
from functional_rl.kernel.config import PPOConfig
from functional_rl.shell.loop import _check_finite, metrics_to_host
from functional_rl.kernel.losses import LossFn, loss_name, ppo_loss
from functional_rl.kernel.rollout import rollout
from functional_rl.kernel.state import TrainerState
from functional_rl.kernel.iteration import train_on_trajectory
from functional_rl.shell.build import make_kernel
from functional_rl.shell.checks import check_params, check_policy, check_state, reference_state

__all__ = [
    "RolloutCollector",
    "PPOOptimizer",
    "PolicyEvaluator",
    "TrainingCheckpointer",
    "StatsLogger",
    "load_or_create",
]


class RolloutCollector:
    """Collects ``config.num_steps`` steps of every env: ``collect(state) -> (state, trajectory, stats)``.

    ``stats`` holds Python numbers: ``episode_return`` / ``episode_length`` (means over the
    episodes that ended; NaN if none), ``episodes``, ``agent_steps`` (this call's) and
    ``timing/rollout_s``.

    Example:
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=32, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> collector = RolloutCollector(env, policy, cfg)
        >>> state, trajectory, stats = collector.collect(state)
        >>> trajectory.batch_size, trajectory["obs"].shape  # [T, B], [T, B, 4]
        (torch.Size([8, 2]), torch.Size([8, 2, 4]))
        >>> sorted(stats), stats["agent_steps"]
        (['agent_steps', 'episode_length', 'episode_return', 'episodes', 'timing/rollout_s'], 16.0)
    """

    def __init__(self, env: Any, policy: Any, config: PPOConfig, *, compile: bool = False, env_params: Any = None, curriculum: Any = None):
        check_policy(env, policy, config=config)
        self.kernel = make_kernel(config, env, policy, env_params=env_params, compile=compile, curriculum=curriculum)
        self._reference: TrainerState | None = None

    def _check(self, state: TrainerState) -> None:
        k = self.kernel
        if self._reference is None:
            self._reference = reference_state(k.config, k.env, k.policy, curriculum=k.curriculum, env_params=k.env_params)
        check_state(k.config, k.env, k.policy, state, curriculum=k.curriculum, env_params=k.env_params, reference=self._reference)

    def collect(self, state: TrainerState) -> tuple[TrainerState, TensorDict, dict[str, float]]:
        """Run ``num_steps`` steps from ``state``.

        Returns:
            ``(state, trajectory, stats)``: the advanced state, a TensorDict of batch size
            ``[T, B]`` (the transition fields of :mod:`functional_rl.kernel.rollout` plus ``next_value``)
            and the stats as Python numbers.

        Raises:
            ValueError: ``state`` does not fit the collector's config, env and policy
                (:func:`~functional_rl.shell.checks.check_state`).
        """
        self._check(state)
        t0 = time.perf_counter()
        steps_before = state.agent_step
        state, trajectory = rollout(state, self.kernel.config.num_steps, self.kernel.rollout_step, self.kernel.critic)
        done = (trajectory["terminated"] | trajectory["truncated"]).to(torch.float32)
        n = done.sum()
        stats = metrics_to_host({
            "episode_return": trajectory["episode_return"].sum() / n,
            "episode_length": trajectory["episode_length"].to(torch.float32).sum() / n,
            "episodes": n,
            "agent_steps": state.agent_step - steps_before,
        })
        stats["timing/rollout_s"] = time.perf_counter() - t0
        return state, trajectory, stats


class PPOOptimizer:
    """PPO updates on collected experience.

    ``compute_ppo_loss`` gives the loss terms for explicit tensors; ``update`` runs
    ``update_epochs`` shuffled epochs on a trajectory and advances the iteration counter.

    Example:
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=32, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> state, trajectory, _ = RolloutCollector(env, policy, cfg).collect(state)
        >>> ppo = PPOOptimizer(policy, cfg, env=env)
        >>> state, losses = ppo.update(state, trajectory)
        >>> int(state.iteration), int(state.learner.num_updates), isinstance(losses["policy_loss"], float)
        (1, 2, True)
        >>> N = 4  # compute_ppo_loss takes [N] (or [N, ...]) tensors and returns 0-d tensors
        >>> terms = ppo.compute_ppo_loss(state.learner.params, torch.zeros(N, 4), torch.zeros(N, dtype=torch.int64),
        ...                              torch.full((N,), -0.6931), torch.ones(N), torch.ones(N), torch.zeros(N))
        >>> sorted(terms), terms["total_loss"].shape
        (['approx_kl', 'clipfrac', 'entropy_loss', 'policy_loss', 'total_loss', 'value_loss'], torch.Size([]))
    """

    def __init__(self, policy: Any, config: PPOConfig, *, compile: bool = False, env: Any = None):
        from functional_rl.envs import make

        self.policy, self.config, self.compile = policy, config, compile
        self.env = env if env is not None else make(config.env_id)
        check_policy(self.env, policy, config=config)
        self._kernels: dict[tuple, Any] = {}
        self._reference: TrainerState | None = None

    def compute_ppo_loss(
        self,
        params: Any,
        obs: torch.Tensor,
        actions: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        values: torch.Tensor,
        hparams: Any = None,
    ) -> dict[str, torch.Tensor]:
        """The loss terms for one batch ``[N]``: ``policy_loss``, ``value_loss``,
        ``entropy_loss`` (``-entropy``), ``total_loss``, ``approx_kl``, ``clipfrac`` (0-d tensors;
        ``total_loss`` differentiable)."""
        from functional_rl.kernel.config import Hyperparams

        hparams = Hyperparams.from_config(self.config) if hparams is None else hparams
        batch = {"obs": obs, "action": actions, "log_prob": old_logprobs, "advantage": advantages,
                 "returns": returns, "value": values}
        total, m = ppo_loss(params, batch, policy=self.policy, hparams=hparams, clip_vloss=self.config.clip_vloss,
                            norm_adv=self.config.norm_adv)
        return {
            "policy_loss": m["policy_loss"], "value_loss": m["value_loss"], "entropy_loss": -m["entropy"],
            "total_loss": total, "approx_kl": m["approx_kl"], "clipfrac": m["clipfrac"],
        }

    def _kernel(self, custom_loss_fns: Sequence[LossFn]):
        key = tuple(id(f) for f in custom_loss_fns)
        if key not in self._kernels:
            self._kernels[key] = make_kernel(self.config, self.env, self.policy, custom_losses=custom_loss_fns, compile=self.compile)
        return self._kernels[key]

    def update(self, state: TrainerState, experience: TensorDict, custom_loss_fns: Sequence[LossFn] = ()) -> tuple[TrainerState, dict[str, float]]:
        """Advantages, ``update_epochs`` epochs of minibatch updates, iteration + 1.

        ``custom_loss_fns`` take either signature (native or the reference trainer's
        signature). Returns the new state and the averaged loss stats (Python numbers, plus
        ``learning_rate`` and ``timing/train_s``).

        Raises:
            ValueError: ``state`` does not fit the config, env and policy
                (:func:`~functional_rl.shell.checks.check_state`), or ``experience`` is not a
                trajectory of ``[num_steps, num_envs]``.
            TypeError: ``experience`` is not a TensorDict; a custom loss breaks its contract.
            NonFiniteError: a loss or gradient became NaN/inf.
        """
        if self._reference is None:
            self._reference = reference_state(self.config, self.env, self.policy)
        check_state(self.config, self.env, self.policy, state, reference=self._reference)
        want = (self.config.num_steps, self.config.num_envs)
        if not isinstance(experience, TensorDict):
            raise TypeError(f"experience must be the TensorDict [num_steps, num_envs] that RolloutCollector.collect "
                            f"returns, got {type(experience).__name__}")
        if tuple(experience.batch_size) != want:
            raise ValueError(f"experience has batch size {list(experience.batch_size)} but this optimizer's config "
                             f"needs [num_steps, num_envs] = {list(want)}: collect it with a RolloutCollector of the "
                             "same config")
        t0 = time.perf_counter()
        kernel = self._kernel(custom_loss_fns)
        state, _, metrics = train_on_trajectory(state, experience, kernel)
        stats = metrics_to_host({**metrics, "iteration": state.iteration + 1})
        _check_finite(int(stats["iteration"]), stats, [loss_name(f) for f in kernel.custom_losses], self.env.id)
        stats["timing/train_s"] = time.perf_counter() - t0
        return state.replace(iteration=state.iteration + 1), stats


class PolicyEvaluator:
    """Greedy (deterministic) episodes on a pure env, on the evaluator's own key stream
    (never the training key).

    ``evaluate(params, episodes, env_params=None)`` returns a reward summary
    ``{"mean", "std", "min", "max", "episodes"}``; ``evaluate_tasks(params, tasks, episodes)``
    gives one summary per set of env params (task).

    Example:
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=32, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> ev = PolicyEvaluator(env, policy, seed=0)
        >>> summary = ev.evaluate(state.learner.params, episodes=2)
        >>> sorted(summary), summary["episodes"], summary["min"] <= summary["mean"] <= summary["max"]
        (['episodes', 'max', 'mean', 'min', 'std'], 2.0, True)
        >>> [s["episodes"] for s in ev.evaluate_tasks(state.learner.params, [env.default_params()] * 2, episodes=2)]
        [2.0, 2.0]
    """

    def __init__(self, env: Any, policy: Any, *, seed: int = 0, max_steps: int = 100_000, last_action_size: int = 0):
        self.env, self.policy, self.seed, self.max_steps = env, policy, seed, max_steps
        self.last_action_size = last_action_size
        self.calls = 0
        self._reference_params: Any = None

    def evaluate(self, params: Any, episodes: int = 10, env_params: Any = None, obs_transform: Any = None) -> dict[str, float]:
        """``episodes`` greedy episodes with ``params``, one per parallel env
        (:func:`functional_rl.shell.callbacks.evaluate`, which also serves the ``Evaluator`` callback).

        Each call uses the next key of the evaluator's stream (``fold_in(key(seed), call)``).

        Args:
            params: the policy parameters.
            episodes: how many episodes to summarise.
            env_params: env parameters (default ``env.default_params()``).
            obs_transform: ``obs [B, *obs_shape] -> policy input`` (e.g. a frozen normalizer).

        Returns:
            ``{"mean", "std", "min", "max", "episodes"}`` of the episode returns, Python floats.

        Raises:
            ValueError: ``params`` do not have the shapes of the evaluator's policy.
        """
        from functional_rl.shell.callbacks import evaluate

        if self._reference_params is None:
            self._reference_params = self.policy.init(jr.key(0))
        check_params(self.policy, params, reference=self._reference_params)

        key = jr.fold_in(jr.key(self.seed), self.calls)
        self.calls += 1
        returns, _ = evaluate(key, params, self.env, self.policy, episodes=episodes, env_params=env_params,
                              max_steps=self.max_steps, obs_fn=obs_transform, last_action_size=self.last_action_size)
        r = returns.to(torch.float64)
        return {"mean": float(r.mean()), "std": float(r.std(unbiased=False)), "min": float(r.min()),
                "max": float(r.max()), "episodes": float(len(r))}

    def evaluate_tasks(self, params: Any, tasks: Sequence[Any], episodes: int = 10) -> list[dict[str, float]]:
        """One :meth:`evaluate` summary per task (a set of env parameters) in ``tasks``."""
        return [self.evaluate(params, episodes, env_params=task) for task in tasks]


class TrainingCheckpointer:
    """Checkpoints and policy records of one run directory.

    ``save_trainer_state`` / ``load_trainer_state`` write and read the whole state under
    ``run_dir/checkpoints`` (atomic, hashed, no pickle); ``save_policy`` / ``load_policy``
    keep named policy records under ``run_dir/policies`` (:mod:`functional_rl.shell.policy_store`).

    Example:
        >>> import tempfile
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=32, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     tc = TrainingCheckpointer(d)
        ...     empty = tc.load_trainer_state()
        ...     path = tc.save_trainer_state(state, cfg, {"note": "first"})
        ...     restored, config, meta = tc.load_trainer_state()
        ...     record = tc.save_policy(state, policy, env=env)
        ...     latest = tc.load_policy()
        >>> empty, path.parent.name, path.name
        (None, 'checkpoints', 'ckpt_000000000000.frl')
        >>> bool(torch.equal(restored.envs.obs, state.envs.obs)), config == cfg, meta
        (True, True, {'note': 'first'})
        >>> record.name, latest.name
        ('policy_000000000000', 'policy_000000000000')
    """

    def __init__(self, run_dir: str | Path):
        from functional_rl.shell.policy_store import PolicyStore

        self.run_dir = Path(run_dir)
        self.store = PolicyStore(self.run_dir / "policies")

    def save_trainer_state(self, state: TrainerState, config: PPOConfig, metadata: dict | None = None) -> Path:
        """Write the whole state as ``run_dir/checkpoints/ckpt_<agent_step>.frl``; return the path."""
        path = checkpoint.checkpoint_path(self.run_dir / "checkpoints", int(state.agent_step))
        return checkpoint.save(path, state, config, metadata)

    def load_trainer_state(self) -> tuple[TrainerState, PPOConfig, dict] | None:
        """``(state, config, metadata)`` of the latest checkpoint, or ``None`` if there is none."""
        path = checkpoint.latest_checkpoint(self.run_dir / "checkpoints")
        return None if path is None else checkpoint.load(path)

    def save_policy(self, state: TrainerState, policy: Any, metadata: dict | None = None, *, env: Any = None, name: str | None = None):
        """Save ``state.learner.params`` as a policy record (default name ``policy_<agent_step>``).

        ``epoch`` and ``agent_step`` come from the state; a record of the same name is replaced.
        Returns the :class:`~functional_rl.shell.policy_store.PolicyRecord`.

        Raises:
            ValueError: the state's params do not have ``policy``'s shapes (a record would
                not load back into it).
        """
        check_params(policy, state.learner.params, where="state.learner.params")
        meta = {"epoch": int(state.iteration), "agent_step": int(state.agent_step), **(metadata or {})}
        # Saving twice at the same step saves the same parameters: replace the record.
        return self.store.save(name or f"policy_{int(state.agent_step):012d}", state.learner.params, policy, meta, env=env, overwrite=True)

    def load_policy(self, uri_or_name: str = "") -> Any:
        """A policy record by name or ``file://`` URI (default: the latest in this run)."""
        return self.store.load(uri_or_name or f"file://{(self.run_dir / 'policies').resolve()}?select=latest")


class StatsLogger:
    """Prints stats to a stream and/or appends them as JSON lines to ``run_dir/stats.jsonl``.

    Example:
        >>> import io, tempfile
        >>> out = io.StringIO()
        >>> with tempfile.TemporaryDirectory() as d:
        ...     logger = StatsLogger(d, stream=out)
        ...     logger.log({"agent_step": 16, "episode_return": float("nan"), "policy_loss": 0.125})
        ...     print(Path(d, "stats.jsonl").read_text().strip())
        {"agent_step": 16, "episode_return": null, "policy_loss": 0.125}
        >>> print(out.getvalue().strip())
        agent_step 16  episode_return nan  policy_loss 0.125
    """

    def __init__(self, run_dir: str | Path | None = None, *, console: bool = True, stream: TextIO | None = None,
                 keys: Sequence[str] = ("agent_step", "episode_return", "policy_loss", "value_loss")):
        self.path = None if run_dir is None else Path(run_dir) / "stats.jsonl"
        self.console, self.stream, self.keys = console, stream, tuple(keys)

    def log(self, stats: dict[str, float]) -> None:
        """Print the chosen ``keys`` of ``stats`` and/or append all of them as one JSON line (NaN/inf as ``null``)."""
        if self.console:
            shown = "  ".join(f"{k} {stats[k]:.4g}" for k in self.keys if k in stats)
            print(shown, file=self.stream or sys.stdout, flush=True)
        if self.path is not None:
            writer = JSONLWriter(self.path, group=False)
            writer.write(stats)
            writer.close()


def load_or_create(run_dir: str | Path, config: PPOConfig, *, env: Any = None, policy: Any = None, **create_kwargs: Any) -> TrainerState:
    """The latest checkpoint's state in ``run_dir/checkpoints`` if there is one, else a fresh state.

    Raises:
        ValueError: the checkpoint was written with different static sizes (``num_envs``,
            ``num_steps``, network sizes) than ``config``, or its state does not fit the
            config, env and policy (:func:`~functional_rl.shell.checks.check_state`); the
            policy does not fit the env.

    Example (fresh in an empty run dir; the checkpoint once one exists; a size change is refused):
        >>> import tempfile
        >>> import functional_rl as frl
        >>> from functional_rl.envs import make
        >>> cfg = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=32, hidden_sizes=(8,))
        >>> env = make(cfg.env_id)
        >>> policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
        >>> state = frl.init_state(cfg, env, policy)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     fresh = load_or_create(d, cfg, env=env, policy=policy)
        ...     _ = TrainingCheckpointer(d).save_trainer_state(fresh.replace(agent_step=torch.tensor(16)), cfg)
        ...     resumed = load_or_create(d, cfg, env=env, policy=policy)
        ...     try:
        ...         load_or_create(d, cfg.replace(num_envs=4), env=env, policy=policy)
        ...     except ValueError as e:
        ...         print("ValueError:", str(e).split(": ", 1)[1])
        ValueError: the checkpoint was made with a different config (num_envs: 2 -> 4); use a new run dir
        >>> int(fresh.agent_step), int(resumed.agent_step), fresh.envs.obs.shape
        (0, 16, torch.Size([2, 4]))
    """
    from functional_rl.shell.build import default_policy
    from functional_rl.envs import make

    env = make(config.env_id) if env is None else env
    loaded = TrainingCheckpointer(run_dir).load_trainer_state()
    if loaded is not None:
        state, saved, _ = loaded
        if saved is not None:
            static = ("env_id", "num_envs", "num_steps", "hidden_sizes", "activation", "last_action", "normalize_obs", "normalize_reward")
            diff = [f"{k}: {getattr(saved, k)!r} -> {getattr(config, k)!r}" for k in static if getattr(saved, k) != getattr(config, k)]
            if diff:
                raise ValueError(f"{run_dir}: the checkpoint was made with a different config ({'; '.join(diff)}); use a new run dir")
        policy = default_policy(config, env) if policy is None else policy
        try:
            check_state(config, env, policy, state, curriculum=create_kwargs.get("curriculum"),
                        env_params=create_kwargs.get("env_params"))
        except ValueError as e:
            raise ValueError(f"{run_dir}: the latest checkpoint does not fit this run: {e}") from e
        return state
    policy = default_policy(config, env) if policy is None else policy
    check_policy(env, policy, config=config)
    return TrainerState.create(config, env, policy, **create_kwargs)
