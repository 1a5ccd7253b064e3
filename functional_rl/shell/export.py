"""Ship the policy: the deterministic actor of a run as ONNX or a ``torch.export`` program.

::

    functional-rl export RUN_DIR --format onnx [--out FILE]           # default RUN_DIR/policy.onnx
    functional-rl export RUN_DIR --format torch-export [--out FILE]   # default RUN_DIR/policy.pt2

The file holds one function, observation -> greedy action, for a batch of any size:

* input ``obs`` float32 ``[N, *obs_shape]`` (the env's raw observation), and for an env with
  action masks a second input ``action_mask`` bool ``[N, K]`` (True where legal);
* the run's observation normalisation folded in: ``clip((obs - mean) / sqrt(var + 1e-8),
  -10, 10)`` in float64 with the checkpoint's frozen statistics, exactly as the library
  normalises (nothing to re-implement on the deployment side);
* output ``action``: int64 ``[N]`` (Discrete: ``argmax`` of the logits, illegal ones masked
  out), int64 ``[N, K]`` (MultiDiscrete: one ``argmax`` per block), or float32
  ``[N, *action_shape]`` (Box: the Gaussian mean clipped to the action bounds).

The parameters are those :func:`~functional_rl.shell.callbacks.eval_params` evaluates (the
schedule-free average where that optimizer is used). The ONNX file's metadata names the env,
the spaces, the checkpoint and whether normalisation is folded in. Install the exporters with
``pip install "functional-rl[export]"`` (``onnx``, ``onnxscript``, ``onnxruntime``);
``torch-export`` needs only torch.

Recurrent policies (``lstm``, ``gru``) and runs with ``last_action`` are refused: their action
depends on a carry (the recurrent state, the previous action) that the caller would have to
feed back every step, and export does not support an explicit carry yet.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

__all__ = ["ExportError", "GreedyActor", "greedy_actor", "export_actor", "export_policy", "run_exported", "FORMATS"]

#: ``--format`` names and their default file names in the run dir.
FORMATS = {"onnx": "policy.onnx", "torch-export": "policy.pt2"}
ONNX_OPSET = 18


class ExportError(ValueError):
    """The policy cannot be exported as asked; the message says why and what to do.

    Example:
        >>> issubclass(ExportError, ValueError)
        True
    """


class GreedyActor(torch.nn.Module):
    """observation -> greedy action, with the observation normalisation folded in.

    The parameters are buffers (the policy's parameter pytree flattened), so ``state_dict``,
    ``torch.export`` and ONNX carry them. ``forward(obs [N, *obs_shape], action_mask=None)``
    runs :func:`~functional_rl.kernel.rollout.policy_input`'s normalisation, the policy,
    :func:`~functional_rl.kernel.distributions.mask_logits` and the distribution's ``mode``,
    and clips a Box action to its bounds: the library's greedy action, op for op.

    Build one with :func:`greedy_actor`.

    Example (the buffers are the parameters and the frozen statistics):
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.normalize import obs_norm_init
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> env = make("Acrobot-v1")
        >>> policy = make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(8,))
        >>> actor = GreedyActor(policy, policy.init(jr.key(0)), env.action_space, obs_norm_init((6,)))
        >>> sorted(actor.state_dict())[:3], actor.obs_std.dtype
        (['obs_mean', 'obs_std', 'param_0'], torch.float64)
    """

    def __init__(self, policy: Any, params: Any, action_space: Any, obs_norm: Any = None, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        leaves, self._spec = pytree.tree_flatten(params)
        if not all(isinstance(x, torch.Tensor) for x in leaves):
            raise ExportError("the policy's parameters must all be tensors to be exported")
        self._count = len(leaves)
        for i, leaf in enumerate(leaves):
            self.register_buffer(f"param_{i}", leaf.detach().clone())
        self._policy = policy
        self._clip = float(clip)
        self._normalise = obs_norm is not None
        if self._normalise:  # float64, as the library's statistics and arithmetic
            self.register_buffer("obs_mean", obs_norm.mean.detach().to(torch.float64).clone())
            self.register_buffer("obs_std", torch.sqrt(obs_norm.var.detach().to(torch.float64) + eps))
        self._box = hasattr(action_space, "low_tensor") and not hasattr(action_space, "n") and not hasattr(action_space, "nvec")
        if self._box:
            self.register_buffer("action_low", action_space.low_tensor())
            self.register_buffer("action_high", action_space.high_tensor())

    def forward(self, obs: torch.Tensor, action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``obs`` float32 ``[N, *obs_shape]`` (and ``action_mask`` bool ``[N, K]``) -> the greedy action ``[N, ...]``."""
        from functional_rl.kernel.distributions import mask_logits

        params = pytree.tree_unflatten([getattr(self, f"param_{i}") for i in range(self._count)], self._spec)
        x = obs
        if self._normalise:  # obs_norm_apply with the statistics frozen
            x = torch.clamp((obs.to(torch.float64) - self.obs_mean) / self.obs_std, -self._clip, self._clip).to(obs.dtype)
        outputs = mask_logits(self._policy.apply(params, x), action_mask)
        action = self._policy.distribution.mode(outputs)
        if self._box:
            action = torch.clamp(action, self.action_low, self.action_high)
        return action


def _refuse_carries(policy: Any, last_action: bool) -> None:
    """ExportError for a policy whose action depends on a carry."""
    if getattr(policy, "initial_carry", None) is not None:
        raise ExportError(f"cannot export a recurrent policy ({policy.spec.get('core', policy.spec.get('kind', 'recurrent'))}): "
                          "its action depends on the carry (the recurrent state) of the step before, which the caller "
                          "would have to feed back every step; explicit carry is not supported in export yet")
    if last_action:
        raise ExportError("cannot export a policy trained with last_action=True: its input includes the previous action, "
                          "a carry the caller would have to feed back every step; explicit carry is not supported in export yet")


def greedy_actor(policy: Any, params: Any, action_space: Any, obs_norm: Any = None, *, last_action: bool = False) -> GreedyActor:
    """The deterministic actor of a feed-forward policy as an ``nn.Module``.

    Args:
        policy: a feed-forward :class:`~functional_rl.kernel.policies.Policy`.
        params: its parameters (e.g. :func:`~functional_rl.shell.callbacks.eval_params` of a state).
        action_space: the env's action space (Discrete, MultiDiscrete or Box).
        obs_norm: the run's :class:`~functional_rl.kernel.normalize.RunningMoments`
            (``state.learner.obs_norm``), or ``None`` for raw observations.
        last_action: whether the policy was trained with ``last_action`` (refused).

    Returns:
        A :class:`GreedyActor`: ``actor(obs [N, *obs_shape], action_mask=None)`` -> int64
        ``[N]`` / ``[N, K]`` or float32 ``[N, *action_shape]``.

    Raises:
        ExportError: a recurrent policy, or ``last_action``: their action depends on a carry.

    Example:
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.normalize import obs_norm_init, obs_norm_update
        >>> from functional_rl.kernel.policies import make_mlp_policy, make_policy
        >>> env = make("CartPole-v1")
        >>> policy = make_mlp_policy(env.observation_space, env.action_space)
        >>> norm = obs_norm_update(obs_norm_init((4,)), torch.randn(64, 4))
        >>> actor = greedy_actor(policy, policy.init(jr.key(0)), env.action_space, norm)
        >>> actor(torch.zeros(3, 4)).shape, actor(torch.zeros(3, 4)).dtype
        (torch.Size([3]), torch.int64)
        >>> lstm = make_policy("lstm", env.observation_space, env.action_space, (32,))
        >>> greedy_actor(lstm, lstm.init(jr.key(0)), env.action_space)
        Traceback (most recent call last):
            ...
        functional_rl.shell.export.ExportError: cannot export a recurrent policy (lstm): its action depends on the carry (the recurrent state) of the step before, which the caller would have to feed back every step; explicit carry is not supported in export yet
    """
    _refuse_carries(policy, last_action)
    return GreedyActor(policy, params, action_space, obs_norm).eval()


def _example_inputs(observation_space: Any, action_space: Any, masked: bool) -> tuple[torch.Tensor, ...]:
    """A batch of 2 zero observations (and an all-legal mask) to trace with."""
    obs = torch.zeros(2, *observation_space.shape, dtype=torch.float32)
    if not masked:
        return (obs,)
    width = sum(action_space.nvec) if hasattr(action_space, "nvec") else action_space.n
    return obs, torch.ones(2, width, dtype=torch.bool)


def export_actor(actor: GreedyActor, format: str, out: str | Path, observation_space: Any, action_space: Any, *,
                 masked: bool = False, metadata: dict[str, str] | None = None) -> Path:
    """Write ``actor`` to ``out`` as ``format`` (``"onnx"`` or ``"torch-export"``), with a
    dynamic batch dimension; return the path.

    ONNX: opset 18 via ``torch.onnx.export(dynamo=True)``, inputs ``obs`` (and
    ``action_mask``), output ``action``, ``metadata`` in the model's ``metadata_props``.
    torch-export: ``torch.export.save`` of the exported program (load it with
    ``torch.export.load(path).module()``).

    Raises:
        ExportError: an unknown format, or the ONNX packages missing.

    Example:
        >>> import tempfile
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> env = make("Pendulum-v1")
        >>> policy = make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(8,))
        >>> actor = greedy_actor(policy, policy.init(jr.key(0)), env.action_space)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = export_actor(actor, "torch-export", f"{d}/p.pt2", env.observation_space, env.action_space)
        ...     run_exported(path, torch.ones(5, 3)).shape
        torch.Size([5, 1])
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    actor = actor.cpu()
    args = _example_inputs(observation_space, action_space, masked)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    dynamic = tuple({0: batch} for _ in args)
    with torch.no_grad(), warnings.catch_warnings():  # torch 2.13 copies its own tree specs with a deprecated check
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.export.export(actor, args, dynamic_shapes=dynamic)
        if format == "torch-export":
            torch.export.save(program, str(out))
    if format == "torch-export":
        return out
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError as e:
        raise ExportError(f"--format onnx needs onnx and onnxscript ({e.name} is missing): "
                          "pip install \"functional-rl[export]\"") from e
    names = ["obs", "action_mask"][: len(args)]
    # The exporter logs a warning per torchvision op it cannot register when torchvision is
    # absent; none of them can occur in a policy.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            onnx_program = torch.onnx.export(program, args, dynamo=True, input_names=names, output_names=["action"],
                                             opset_version=ONNX_OPSET, verbose=False)
    finally:
        registration.setLevel(level)
    model = onnx_program.model_proto
    for value in [*model.graph.input, *model.graph.output]:  # name the batch dimension
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(out))
    return out


def run_exported(path: str | Path, obs: torch.Tensor, action_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Run an exported actor on a batch: ``.onnx`` in onnxruntime, anything else as a
    ``torch.export`` program. Returns the actions as a tensor (``[N]``, ``[N, K]`` or
    ``[N, *action_shape]``).

    Example (an env with action masks takes them as the second input):
        >>> import tempfile
        >>> import functional_rl.kernel.random as jr
        >>> from functional_rl.envs import make
        >>> from functional_rl.kernel.policies import make_mlp_policy
        >>> env = make("MaskedChoice-v0")
        >>> policy = make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=(8,))
        >>> actor = greedy_actor(policy, policy.init(jr.key(0)), env.action_space)
        >>> mask = torch.tensor([[False, False, True, False], [True, False, False, False]])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = export_actor(actor, "onnx", f"{d}/p.onnx", env.observation_space, env.action_space, masked=True)
        ...     run_exported(path, mask.float(), mask).tolist()  # the only legal action of each row
        [2, 0]
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {"obs": obs.detach().cpu().numpy().astype("float32")}
        if action_mask is not None:
            feed["action_mask"] = action_mask.detach().cpu().numpy().astype(bool)
        return torch.from_numpy(session.run(["action"], feed)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.export.load(str(path)).module()
    with torch.no_grad():
        return module(obs) if action_mask is None else module(obs, action_mask)


def _run_actor(run_dir: Path) -> tuple[Any, Any, Any, GreedyActor, Any, bool, dict[str, str]]:
    """``(config, env, checkpoint path, actor, state, masked, metadata)`` of a run dir's latest
    checkpoint (UsageErrors from the CLI's helpers for a bad run dir)."""
    from functional_rl.shell import cli
    from functional_rl.shell.callbacks import eval_params

    from functional_rl.kernel.struct import map_fields

    config = cli._run_config(run_dir)
    env = cli._make_env(config.env_id)
    path, state, _ = cli._latest_state(run_dir, config)
    state = map_fields(lambda x: x.cpu(), state)  # the file is written from, and checked on, the CPU
    policy = cli._make_policy(config, env)
    actor = greedy_actor(policy, eval_params(state), env.action_space, state.learner.obs_norm,
                         last_action=state.envs.last_action is not None or bool(config.last_action))
    masked = callable(getattr(env, "action_mask", None))
    metadata = {
        "functional_rl.env_id": config.env_id,
        "functional_rl.checkpoint": path.name,
        "functional_rl.agent_step": str(int(state.agent_step)),
        "functional_rl.observation_shape": json.dumps(list(env.observation_space.shape)),
        "functional_rl.action_space": repr(env.action_space),
        "functional_rl.obs_normalization": "folded in" if state.learner.obs_norm is not None else "none",
        "functional_rl.policy": json.dumps(policy.spec),
    }
    return config, env, path, actor, state, masked, metadata


def export_policy(run_dir: str | Path, format: str = "onnx", out: str | Path | None = None) -> Path:
    """Export the greedy actor of ``run_dir``'s latest checkpoint; return the file written.

    Args:
        run_dir: a run directory written by ``functional-rl train``.
        format: ``"onnx"`` or ``"torch-export"``.
        out: the file (default ``run_dir/policy.onnx`` or ``run_dir/policy.pt2``).

    Raises:
        ExportError: a recurrent or ``last_action`` policy, an unknown format, missing packages.
        functional_rl.shell.cli.UsageError: not a run dir, no checkpoint.

    Example (a run dir holds config.json and checkpoints/; here one made by hand):
        >>> import json, tempfile
        >>> import functional_rl as frl
        >>> from functional_rl.shell import checkpoint
        >>> from functional_rl.shell.build import build
        >>> config = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, normalize_obs=True)
        >>> state, _ = build(config, compile=False)
        >>> with tempfile.TemporaryDirectory() as run:
        ...     _ = open(f"{run}/config.json", "w").write(json.dumps(config.to_dict()))
        ...     _ = checkpoint.save(checkpoint.checkpoint_path(f"{run}/checkpoints", 0), state, config)
        ...     path = export_policy(run, "torch-export")
        ...     path.name, run_exported(path, torch.zeros(3, 4)).shape
        ('policy.pt2', torch.Size([3]))
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    _, env, _, actor, _, masked, metadata = _run_actor(run_dir)
    target = Path(out) if out is not None else run_dir / FORMATS[format]
    return export_actor(actor, format, target, env.observation_space, env.action_space, masked=masked, metadata=metadata)


def _check_observations(env: Any, state: Any, config: Any, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Up to ``count`` observations (and masks) from the run's greedy episodes, to check the file with."""
    from functional_rl.kernel.rollout import env_action_mask
    from functional_rl.shell.callbacks import eval_params, state_policy_input
    import functional_rl.kernel.random as jr
    from functional_rl.shell.cli import _make_policy
    from functional_rl.shell.video import greedy_states

    params = env.default_params()
    states, _, _ = greedy_states(jr.key(0), eval_params(state), env, _make_policy(config, env), episodes=8, env_params=params,
                                 max_steps=max(1, count // 8), **state_policy_input(state))
    obs = torch.cat([env.get_obs(s, params) for s in states])[:count]
    masks = [env_action_mask(env, s, params) for s in states]
    return obs, (torch.cat(masks)[:count] if masks[0] is not None else None)


def _library_actions(policy: Any, state: Any, action_space: Any, obs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The library's greedy actions (``evaluate``'s computation) for a batch of observations."""
    from functional_rl.envs.base import Box
    from functional_rl.kernel.distributions import mask_logits
    from functional_rl.kernel.rollout import policy_input
    from functional_rl.shell.callbacks import eval_params

    with torch.no_grad():
        outputs = mask_logits(policy.apply(eval_params(state), policy_input(obs, state.learner.obs_norm)), mask)
        action = policy.distribution.mode(outputs)
        if isinstance(action_space, Box):
            action = torch.clamp(action, action_space.low_tensor(), action_space.high_tensor())
    return action


# ---------------------------------------------------------------------------- the CLI
def add_parser(sub: Any) -> None:
    """Register ``functional-rl export`` on the CLI's sub-parsers."""
    p = sub.add_parser("export", help="write a run's greedy policy as ONNX or a torch.export program",
                       description="Export the deterministic actor (observation -> greedy action, observation "
                                   "normalisation folded in) of RUN_DIR's latest checkpoint, then check the file on "
                                   "observations of greedy episodes against the library's actions.")
    p.add_argument("run_dir", help="a run directory written by `train`")
    p.add_argument("--format", choices=tuple(FORMATS), default="onnx", help="onnx (default) or torch-export")
    p.add_argument("--out", metavar="FILE", help="the file (default RUN_DIR/policy.onnx or RUN_DIR/policy.pt2)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """``functional-rl export``: write the file, then run it on up to 1,000 observations of
    greedy episodes and compare with the library's greedy actions (exit 1 if they differ)."""
    from functional_rl.shell import cli

    run_dir = cli._existing_run_dir(args.run_dir)
    try:
        config, env, path, actor, state, masked, metadata = _run_actor(run_dir)
        out = Path(args.out) if args.out else run_dir / FORMATS[args.format]
        export_actor(actor, args.format, out, env.observation_space, env.action_space, masked=masked, metadata=metadata)
    except ExportError as e:
        raise cli.UsageError(str(e)) from e
    obs, mask = _check_observations(env, state, config, 1000)
    expected = _library_actions(cli._make_policy(config, env), state, env.action_space, obs, mask)
    try:
        got = run_exported(out, obs, mask)
    except ImportError as e:
        raise cli.UsageError(f"cannot check {out} ({e.name} is missing): pip install \"functional-rl[export]\"") from e
    if expected.is_floating_point():
        err = float((got - expected).abs().max())
        ok, how = err <= 1e-5, f"max |difference| {err:.1e}"
    else:
        ok, how = bool(torch.equal(got, expected)), f"{int((got != expected).reshape(len(obs), -1).any(-1).sum())} differ"
    print(f"{config.env_id} {path.name} (step {int(state.agent_step):,}): wrote {out} ({args.format}, {out.stat().st_size:,} bytes); "
          f"checked on {len(obs)} observations of greedy episodes against the library: {'same actions' if ok else 'MISMATCH'} ({how})")
    return 0 if ok else 1
