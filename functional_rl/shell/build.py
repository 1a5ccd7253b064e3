"""Building the step functions of a run: bind the static parts, compile what pays off.

Examples use the doctest fixture of ``functional_rl/conftest.py`` (``cfg``: 2 envs x 4
steps, 2 minibatches; ``env``: CartPole; ``policy``: an MLP; ``state``: a fresh state).
"""

from __future__ import annotations

import functools
import os
import types
from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDict

from functional_rl.compat.losses import adapt_loss
from functional_rl.envs import make
from functional_rl.kernel.config import PPOConfig
from functional_rl.kernel.iteration import StepFns
from functional_rl.kernel.losses import LossFn, kickstart_loss
from functional_rl.kernel.metrics import iteration_metrics
from functional_rl.kernel.optim import learning_rate_schedule, make_optimizer
from functional_rl.kernel.parallel import AllReduce
from functional_rl.kernel.policies import make_policy
from functional_rl.kernel.recurrent import is_recurrent
from functional_rl.kernel.rollout import env_action_mask, env_valid_mask, policy_act, record_step, rollout, rollout_step
from functional_rl.kernel.rollout import scan_rollout as scan_rollout_fn
from functional_rl.kernel.state import TrainerState, last_action_size
from functional_rl.kernel.update import batch_arrays, epoch_minibatches, make_batch, update_minibatch, vtrace_batch
from functional_rl.shell.checks import check_action_mask, check_policy, check_state, require_policy

__all__ = ["make_kernel", "build", "default_policy", "compiler", "own_code", "allow_scan_in_compile_cache", "skip_vec_isa_probe"]


def compiler(compile: bool, compile_options: dict[str, Any] | None = None):
    """``fn -> torch.compile(fn, fullgraph=True, dynamic=False, **compile_options)``, or the
    identity when ``compile`` is false.

    Compiling also lets inductor's caches keep graphs holding a ``scan``
    (:func:`allow_scan_in_compile_cache`), so every compiled kernel of a process is keyed alike.

    Example:
        >>> compiler(False)(len) is len
        True
    """
    if not compile:
        return lambda fn, **extra: fn
    allow_scan_in_compile_cache()
    skip_vec_isa_probe()
    opts = {"fullgraph": True, "dynamic": False, **(compile_options or {})}

    def compile_one(fn, **extra):
        if "mode" in opts:  # torch.compile takes a mode or inductor options, not both: the user's mode wins
            extra.pop("options", None)
        return _user_errors_surfaced(fn, torch.compile(own_code(fn), **{**opts, **extra}))

    return compile_one


def own_code(fn: Any) -> Any:
    """``fn`` behind a wrapper with a code object of its own.

    torch.compile keeps its compiled graphs per code object, at most 8 of them
    (``torch._dynamo.config.recompile_limit``). Every kernel built in a process compiles the
    same kernel functions with other bound arguments (env, policy), so without this the ninth
    kernel of a process (a test session, a notebook, a sweep) would fail to compile. Each
    wrapper made here has a fresh code object, hence a cache of its own.

    Example:
        >>> a, b = own_code(len), own_code(len)
        >>> a([1, 2]), a.__code__ is b.__code__
        (2, False)
    """

    def call(*args, **kwargs):
        return fn(*args, **kwargs)

    return types.FunctionType(call.__code__.replace(), call.__globals__, f"compiled_{getattr(fn, '__name__', 'fn')}",
                              call.__defaults__, call.__closure__)


#: Inductor options of the one-call rollout. The C++ wrapper drives the generated loop without
#: Python between steps. A low ``realize_opcount_threshold`` (inductor's CPU default is 50) stores
#: intermediate results instead of recomputing them in every kernel that reads them: the keyed
#: hashes of the random draws were inlined into many kernels, and generating that code was
#: most of the compile. Measured on the default CartPole config on a 2-core CPU
#: (benchmarks/RESULTS.md): the rollout's cold compile fell from about 120 s to 42 s, at
#: 0.96-1.03x the steps/s (30: a little slower to compile, same speed); 4 compiled no faster
#: and ran 0.92x. Turning vectorisation off (``cpp.simdlen=1``) cut the compile by a third but
#: ran at 0.59x. ``cpp.use_decompose_tanh`` computes tanh through ``exp`` in the generated
#: code: inductor's fused tanh kernels took 28 us each on a [256, 64] hidden layer.
ROLLOUT_OPTIONS = {"cpp_wrapper": True, "realize_opcount_threshold": 8, "cpp.use_decompose_tanh": True}

#: Inductor options of every other compiled function that draws random numbers (the epoch's
#: minibatch order): the keyed hash, inlined into one kernel, made inductor's code generation
#: evaluate the hash's expression tree once per path through it (``x ^ (x >> 16)`` reads
#: ``x`` twice, 32 paths per round), 40k ops for 512 draws. Measured with an empty cache on a
#: 2-core CPU: ``epoch_minibatches`` of the default CartPole config compiled in 20.2 s with
#: inductor's default threshold (22.9 s with an empty temp dir too) and in 2.5 s with this one,
#: at the same speed.
RANDOM_OPTIONS = {"realize_opcount_threshold": 8}

#: Inductor options of the minibatch update next to the one-call rollout: the C++ wrapper
#: (1.06x the steps/s; a low realize threshold made its compile longer, 41 s against 24 s),
#: and tanh through ``exp`` (one update of the default CartPole MLP at 8 envs: 528 us
#: against 604 us a call).
UPDATE_OPTIONS = {"cpp_wrapper": True, "cpp.use_decompose_tanh": True}

#: The name inductor's caches know the scan operator by (``f"{op.__module__}.{op.__name__}"``).
SCAN_OP_NAME = "torch.ops.higher_order.scan"


def allow_scan_in_compile_cache() -> None:
    """Let inductor's FX graph cache and AOT autograd cache store graphs holding a ``scan``.

    Both caches refuse every higher-order operator not marked cacheable, and ``scan`` is not
    (torch 2.13), so without this a new process compiles the one-call rollout from scratch
    (measured: about as long as a cold compile, a minute or more here) where the per-step
    functions load from the cache in seconds. The mark is safe for ``scan`` because the cache
    key pickles the whole graph module, the scanned body included (a submodule): two scans
    that differ only inside the body get different keys (``tests/test_compile_cache.py``
    checks it in fresh processes). The entry's value (torch's version) is part of the key.

    A process-wide setting of ``torch._inductor.config``; entries already there are kept.

    Example:
        >>> import torch._inductor.config as inductor_config
        >>> allow_scan_in_compile_cache()
        >>> SCAN_OP_NAME in inductor_config.unsafe_marked_cacheable_functions
        True
    """
    import torch._inductor.config as inductor_config

    marked = dict(inductor_config.unsafe_marked_cacheable_functions)
    marked.setdefault(SCAN_OP_NAME, torch.__version__)
    inductor_config.unsafe_marked_cacheable_functions = marked


def skip_vec_isa_probe() -> None:
    """Let inductor take the CPU's vector instruction sets from the CPU's flags instead of
    compiling and loading a probe program for each (``torch._inductor.config.cpp.vec_isa_ok``).

    The probes run once per empty inductor cache: on a 2-core x86 CPU they were 6-8 s of the
    10 s inductor took to compile ``x * 2 + 1`` with an empty cache, and the same instruction
    set (AVX-512) was chosen with and without them. A user who needs the probes (a compiler
    older than the CPU) sets ``TORCHINDUCTOR_VEC_ISA_OK=0``, which is left alone, as is any
    value already set in ``torch._inductor.config``.

    Example:
        >>> import torch._inductor.config as inductor_config
        >>> skip_vec_isa_probe()
        >>> inductor_config.cpp.vec_isa_ok is not None
        True
    """
    import torch._inductor.config as inductor_config

    if os.environ.get("TORCHINDUCTOR_VEC_ISA_OK") is None and inductor_config.cpp.vec_isa_ok is None:
        inductor_config.cpp.vec_isa_ok = True


def inductor_options(base: dict[str, Any], compile_options: dict[str, Any] | None) -> dict[str, Any]:
    """Inductor options for one compiled function: ``base`` (e.g. :data:`ROLLOUT_OPTIONS`)
    under the user's own ``compile_options["options"]`` (the user's values win).

    Example:
        >>> inductor_options(UPDATE_OPTIONS, {"options": {"cpp_wrapper": False}})
        {'cpp_wrapper': False, 'cpp.use_decompose_tanh': True}
    """
    return {**base, **(compile_options or {}).get("options", {})}


def one_call_rollout(config: PPOConfig, env: Any, policy: Any, step: Any) -> Any:
    """:func:`~functional_rl.kernel.rollout.scan_rollout` bound to a run: ``state -> (state,
    dict of [T, B, ...] tensors)`` over ``config.num_steps`` steps of the eager ``step``."""
    return functools.partial(scan_rollout_fn, num_steps=config.num_steps, step_fn=step, value_fn=policy.value,
                             distribution=policy.distribution, action_space=env.action_space)


def as_trajectory(fn: Any):
    """Wrap ``state -> (state, dict [T, B, ...])`` to return a TensorDict ``[T, B]`` (the
    dict crosses the compiled boundary; the TensorDict is built outside it)."""

    def rollout(state):
        state, data = fn(state)
        return state, TensorDict(data, batch_size=data["reward"].shape)

    return rollout


def plain_args(fn: Any) -> Any:
    """``fn`` called with every TensorDict argument as a plain dict of its tensors (what a
    compiled function is given: dicts of tensors trace and guard cheaply)."""

    def call(*args):
        return fn(*(dict(a.items()) if isinstance(a, TensorDict) else a for a in args))

    return call


def as_batch(fn: Any, batch_ndim: int) -> Any:
    """Wrap ``fn(trajectory, hparams) -> dict`` (:func:`~functional_rl.kernel.update.batch_arrays`,
    compiled or vmapped; or any function of TensorDicts returning a batch's dict, such as
    :func:`~functional_rl.kernel.update.vtrace_batch`) to take TensorDicts and return a
    TensorDict batch whose batch size is the leading ``batch_ndim`` dims (``[N]``; ``[A, N]``
    for many agents)."""
    plain = plain_args(fn)

    def make_batch(*args):
        data = plain(*args)
        return TensorDict(data, batch_size=data["reward"].shape[:batch_ndim])

    return make_batch


def _user_errors_surfaced(fn: Any, compiled: Any):
    """``compiled`` (``torch.compile(fn, fullgraph=True)``), except that an exception raised by
    user code while tracing (a custom loss breaking its contract) is raised as itself.

    With ``fullgraph=True`` dynamo reports such an exception as ``Unsupported("Observed
    exception")``; the same pure call is then run eagerly, which raises the user code's own
    ``ValueError``/``TypeError`` (chained to dynamo's report). Only the failing call pays for it.
    """

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except torch._dynamo.exc.Unsupported as e:
            if not isinstance(e.__cause__, torch._dynamo.exc.ObservedException):
                raise
            fn(*args, **kwargs)  # eager and pure: raises what dynamo observed
            raise

    return call


def _host_env_step(env: Any, env_params: Any, act_fn: Any, record_fn: Any):
    """The step for an impure (host) env: the compiled policy half, the simulator, the
    compiled bookkeeping half."""

    def step(state):
        a = act_fn(state, action_mask=env_action_mask(env, state.envs.env_state, env_params))
        valid = env_valid_mask(env, state.envs.env_state, env_params)
        if valid is not None:  # a multi-agent env: the rows whose agent acts now
            a = {**a, "valid": valid}
        out = env.step(a["k_env"], state.envs.env_state, a["env_action"], env_params)
        return record_fn(state, a, out)

    return step


def make_kernel(
    config: PPOConfig,
    env: Any,
    policy: Any,
    *,
    env_params: Any = None,
    custom_losses: Sequence[LossFn] = (),
    compile: bool = False,
    compile_options: dict[str, Any] | None = None,
    curriculum: Any = None,
    all_reduce: AllReduce | None = None,
    world_size: int = 1,
    scan_rollout: bool | None = None,
    vmappable: bool = False,
) -> StepFns:
    """Bind the static parts into a :class:`~functional_rl.kernel.iteration.StepFns` and
    optionally ``torch.compile`` the per-step functions.

    The optimizer is built here, once per run (:func:`~functional_rl.kernel.optim.make_optimizer`),
    and so are ``config.kickstart_teachers`` (loaded by
    :func:`~functional_rl.shell.kickstart.load_teachers` and added to the custom losses as
    :func:`~functional_rl.kernel.losses.kickstart_loss`).
    ``all_reduce`` and ``world_size`` make a data-parallel bundle; the collectives then run
    inside the compiled update (functional collectives trace).

    With ``compile=True`` the per-step ``rollout_step`` and ``update_minibatch`` are each
    compiled with ``fullgraph=True, dynamic=False`` (never a loop unrolled over all steps), and
    the rollout is a Python loop of compiled steps. For an impure env (``env.is_pure is
    False``, e.g. a gymnasium adapter) a step is ``policy_act`` (compiled) -> host
    ``env.step`` -> ``record_step`` (compiled). A recurrent policy's rollout compiles the same
    way, but its update runs eagerly: it replays whole sequences of ``num_steps`` steps, and
    in torch 2.13 ``torch.func.grad`` cannot differentiate a ``scan`` ("Expected FakeTensor")
    while the unrolled loop took 71 s to compile for 16 steps of a GRU on a 2-core CPU, growing
    with ``num_steps``.

    ``scan_rollout`` chooses how a pure env's rollout runs when compiled: ``True`` as one
    call (:func:`~functional_rl.kernel.rollout.scan_rollout`, compiled with inductor's C++
    wrapper), ``False`` as a Python loop of compiled steps, ``None`` (the default) one call
    when that is known to pay: compiled, a pure env, one process, on the CPU. Both give the
    same keys, actions and transitions. Measured side by side on a 2-core CPU
    (``benchmarks/compile_modes.py``, default CartPole config): 2.0x the steps/s of the
    per-step loop, a first iteration of 63 s against 149 s with an empty inductor cache
    (:data:`ROLLOUT_OPTIONS`), and 12 s against 10 s with a warm one (its graph is stored in
    inductor's cache: :func:`allow_scan_in_compile_cache`). With the one-call rollout the
    minibatch update also gets the C++ wrapper (:data:`UPDATE_OPTIONS`). Compiled kernels also
    compile the batch (GAE, :func:`~functional_rl.kernel.update.batch_arrays`) and each
    epoch's minibatches (order and advantage statistics), so the whole iteration runs as a few
    compiled calls: rollout, batch, then per epoch minibatches and ``num_minibatches`` updates.
    An impure env (a gymnasium adapter) always steps per call; asking it for ``True`` is an
    error. ``vmappable=True`` keeps every function vmappable (``train_many`` wraps them).

    Example:
        >>> kernel = make_kernel(cfg, env, policy, compile=False)
        >>> kernel.env.id, kernel.compiled
        ('CartPole-v1', False)
        >>> state2, transition = kernel.rollout_step(state)
        >>> transition["action"].shape, transition["reward"].shape, int(state2.agent_step)
        (torch.Size([2]), torch.Size([2]), 2)
    """
    env_params = env.default_params() if env_params is None else env_params
    if custom_losses is None:
        custom_losses = ()
    elif callable(custom_losses):  # one loss given without a list
        custom_losses = (custom_losses,)
    custom_losses = tuple(adapt_loss(fn, policy) for fn in custom_losses)
    if config.kickstart_teachers:  # frozen teachers, loaded once per kernel, distilled by a custom loss
        from functional_rl.shell.kickstart import load_teachers

        teachers = load_teachers(config.kickstart_teachers, env=env, student=policy, device=config.device)
        custom_losses = (*custom_losses, kickstart_loss(teachers))
    pure_env = getattr(env, "is_pure", True)
    if curriculum is not None and not pure_env:
        raise ValueError(f"a curriculum needs a pure environment; {getattr(env, 'id', env)!r} steps a host simulator")
    if scan_rollout and not pure_env:
        raise ValueError(f"scan_rollout needs a pure environment; {getattr(env, 'id', env)!r} steps a host simulator")
    if scan_rollout is None:
        scan_rollout = compile and pure_env and all_reduce is None and torch.device(config.device).type == "cpu"
    maybe_compile = compiler(compile, compile_options)
    collective = {"world_size": world_size, "all_reduce": all_reduce}
    if is_recurrent(policy) and config.num_envs % config.num_minibatches:
        raise ValueError(f"num_minibatches={config.num_minibatches} must divide num_envs={config.num_envs} for a recurrent "
                         "policy: each minibatch replays num_envs / num_minibatches whole env sequences")
    # A recurrent policy acts in groups of the envs a minibatch replays (exact log-prob replay).
    row_group = {"row_group": config.num_envs // config.num_minibatches} if is_recurrent(policy) else {}
    # With the one-call rollout the update gets the C++ wrapper too (UPDATE_OPTIONS).
    update_extra = {"options": inductor_options(UPDATE_OPTIONS, compile_options)} if scan_rollout else {}
    # The epoch's order draws random numbers (RANDOM_OPTIONS); next to the one-call rollout
    # every graph takes the C++ wrapper, so that all share one precompiled header.
    random_extra = {"options": inductor_options({**RANDOM_OPTIONS, **(UPDATE_OPTIONS if scan_rollout else {})}, compile_options)}
    batch_extra = {"options": inductor_options(UPDATE_OPTIONS, compile_options)} if scan_rollout else {}
    if pure_env:
        one_step = functools.partial(
            rollout_step, env=env, env_params=env_params, policy=policy, curriculum=curriculum, **collective, **row_group)
        step = maybe_compile(one_step)
        run_rollout = functools.partial(rollout, num_steps=config.num_steps, step_fn=step, value_fn=policy.value)
        if scan_rollout:
            whole = one_call_rollout(config, env, policy, one_step)
            run_rollout = as_trajectory(maybe_compile(whole, options=inductor_options(ROLLOUT_OPTIONS, compile_options)))
    else:  # compile the pure halves, call the simulator between them
        act = maybe_compile(functools.partial(policy_act, policy=policy, action_space=env.action_space, all_reduce=all_reduce, **row_group))
        record = functools.partial(record_step, action_space=env.action_space, **collective)
        step = _host_env_step(env, env_params, act, maybe_compile(record))
        run_rollout = functools.partial(rollout, num_steps=config.num_steps, step_fn=step, value_fn=policy.value)
    # A recurrent policy's update runs eagerly (below); torch.autograd.grad costs there about
    # half of torch.func.grad's per-op overhead. train_many vmaps the update: func.grad there.
    autograd = is_recurrent(policy) and not vmappable
    update = functools.partial(
        update_minibatch, policy=policy, optimizer=make_optimizer(config), clip_vloss=config.clip_vloss,
        norm_adv=config.norm_adv, custom_losses=custom_losses, autograd=autograd, **collective,
    )
    minibatches = functools.partial(
        epoch_minibatches, num_minibatches=config.num_minibatches, norm_adv=config.norm_adv, all_reduce=all_reduce,
        prioritized=config.prioritized)
    batch_fn = make_batch
    if compile:  # GAE and the epoch's order and advantage statistics as compiled calls too
        batch_fn = as_batch(maybe_compile(batch_arrays, **batch_extra), batch_ndim=1)
        minibatches = plain_args(maybe_compile(minibatches, **random_extra))
    # A recurrent policy's update runs eagerly: it replays T steps, and torch 2.13 can neither
    # differentiate a scan under torch.func.grad nor compile the unrolled loop in reasonable time.
    compiled_update = update if is_recurrent(policy) else maybe_compile(update, **update_extra)
    revalue = functools.partial(vtrace_batch, policy=policy, num_steps=config.num_steps)
    revalue = as_batch(revalue if is_recurrent(policy) or not config.vtrace else maybe_compile(revalue), batch_ndim=1)
    return StepFns(
        config=config, env=env, env_params=env_params, policy=policy, custom_losses=custom_losses,
        rollout=run_rollout, rollout_step=step, critic=policy.value, make_batch=batch_fn,
        epoch_minibatches=minibatches,
        update=compiled_update, finish=functools.partial(iteration_metrics, **collective),
        learning_rate=learning_rate_schedule(config), compiled=compile, curriculum=curriculum, vtrace_batch=revalue,
        **collective,
    )


def default_policy(config: PPOConfig, env: Any):
    """The policy ``config.policy`` names (:func:`~functional_rl.kernel.policies.make_policy`;
    CleanRL's MLP actor-critic by default) for ``env``'s spaces and the config's sizes, with
    room for the encoded last action when ``config.last_action``.

    Example:
        >>> default_policy(PPOConfig(last_action=True), make("CartPole-v1")).spec["obs_dim"]
        6
        >>> default_policy(PPOConfig(policy="simple_cnn", hidden_sizes=(32,)), make("Catch-v0")).spec["kind"]
        'cnn_actor_critic'
    """
    extra = last_action_size(env.action_space) if config.last_action else 0
    return make_policy(config.policy, env.observation_space, env.action_space, config.hidden_sizes, config.activation, obs_dim_extra=extra)


def build(
    config: PPOConfig,
    *,
    env: Any = None,
    policy: Any = None,
    state: TrainerState | None = None,
    custom_losses: Sequence[LossFn] = (),
    compile: bool = True,
    env_params: Any = None,
    compile_options: dict[str, Any] | None = None,
    curriculum: Any = None,
    replica: Any = None,
    scan_rollout: bool | None = None,
) -> tuple[TrainerState, StepFns]:
    """Resolve defaults (env from ``config.env_id``, CleanRL MLP policy, fresh state) and
    build the step functions. Returns ``(state, kernel)``.

    The policy is checked against the env, and a given ``state`` against the config, the env
    and the policy (:mod:`functional_rl.shell.checks`), before anything is compiled.

    Raises:
        ValueError: the state or the policy does not fit the config or the env (the message
            names the mismatch: env count, observation shape, action head, parameter shapes,
            last action, normalisation statistics).
        TypeError: ``state`` is not a ``TrainerState`` or ``policy`` not a ``Policy``.

    With a :class:`~functional_rl.shell.distributed.Replica` (one process of a data-parallel
    run; ``config`` from :func:`~functional_rl.shell.distributed.check_config`) the fresh state
    holds this process's envs and the kernel reduces over the process group.

    Example:
        >>> state, kernel = build(PPOConfig(num_envs=2, num_steps=8, num_minibatches=2), compile=False)
        >>> state.envs.obs.shape, kernel.env.id, kernel.compiled
        (torch.Size([2, 4]), 'CartPole-v1', False)
    """
    env, policy = resolve_env_policy(config, env, policy)
    offset, all_reduce, world_size = 0, None, 1
    if replica is not None:
        from functional_rl.shell import distributed

        offset, all_reduce, world_size = replica.env_offset(config.num_envs), distributed.process_group_sum(), replica.world_size
    if state is None:
        require_policy(policy)
        state = TrainerState.create(config, env, policy, env_params=env_params, curriculum=curriculum, env_offset=offset)
    else:
        check_state(config, env, policy, state, curriculum=curriculum, env_params=env_params)
    check_policy(env, policy, config=config, params=state.learner.params, obs=state.envs.obs[:1])
    check_action_mask(env, state.envs.env_state, env.default_params() if env_params is None else env_params)
    kernel = make_kernel(
        config, env, policy, env_params=env_params, custom_losses=custom_losses, compile=compile,
        compile_options=compile_options, curriculum=curriculum, all_reduce=all_reduce, world_size=world_size,
        scan_rollout=scan_rollout,
    )
    return state, kernel


def resolve_env_policy(config: PPOConfig, env: Any = None, policy: Any = None) -> tuple[Any, Any]:
    """``(env, policy)``: ``env`` built from its id (default ``config.env_id``) if not given as
    an object, ``policy`` defaulting to :func:`default_policy`.

    Example:
        >>> env, policy = resolve_env_policy(PPOConfig())
        >>> env.id, policy.spec["obs_dim"]
        ('CartPole-v1', 4)
    """
    if env is None or isinstance(env, str):
        env = make(env or config.env_id)
    if policy is None:
        policy = default_policy(config, env)
    return env, policy
