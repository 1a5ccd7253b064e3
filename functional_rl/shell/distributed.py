"""Data-parallel training on ``torch.distributed``: the shell side.

Launch the same program once per process with ``torchrun`` (gloo on CPUs, NCCL on GPUs)::

    torchrun --nproc-per-node 2 -m functional_rl train CartPole-v1
    torchrun --nproc-per-node 2 my_script.py      # a script calling functional_training_loop

and :func:`functional_rl.shell.loop.functional_training_loop` joins the process group torchrun
describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ...), or uses one the program already
initialised. What each process does:

* it owns ``config.num_envs`` envs with the global indices ``rank * num_envs + b``
  (``TrainerState.envs.env_ids``); every random draw of an env folds in that index, so env ``g``
  sees the same numbers as env ``g`` of a one-process run with ``world_size * num_envs``
  envs (``TrainerState.create(env_offset=...)``, ``rollout.policy_act``);
* the kernel is the one-process kernel with an injected ``all_reduce`` (a functional
  collective, traced into the compiled update): gradients are averaged, the advantage
  normalisation uses the statistics of the whole minibatch, and the iteration's metrics
  (episode returns, losses, explained variance) are formed over every process's data;
* ``agent_step`` counts the steps of all processes, and ``config.world_size`` is set, so
  ``total_timesteps``, ``batch_size`` and the learning-rate schedule are those of the whole run;
* after each iteration the envs' part of the state is gathered, so every process holds the
  whole run's state (``world_size * num_envs`` envs), exactly the state of the equivalent
  one-process run. Only rank 0 runs the callbacks: it logs and writes checkpoints of that
  whole state. On resume each process takes its envs' share of the loaded state.

The result: ``W`` processes with ``B`` envs each compute what one process with ``W * B`` envs
computes, up to float rounding (the order of sums differs). A process that dies makes the
others fail in their next collective with :class:`DistributedError` (immediately when its
connection closes, otherwise after the process group's timeout); the failing processes run
their callbacks' ``on_failure`` with the last gathered state, so rank 0 checkpoints it.

Running observation and reward normalisation work across processes: their statistics are
updated from the sums of every process's batch, so they stay identical everywhere. Not
supported across processes (rejected with :class:`DistributedError`): curricula, whose task
draws are still per process.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.utils._pytree as pytree

__all__ = [
    "DistributedError",
    "Replica",
    "setup",
    "shutdown",
    "process_group_sum",
    "check_config",
    "gather_envs",
    "local_share",
    "is_collective_failure",
    "lost_process_error",
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
]

DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "FUNCTIONAL_RL_DIST_TIMEOUT_S"


class DistributedError(RuntimeError):
    """A data-parallel run cannot go on: another process died or stopped answering, or the
    run's setup does not work across processes. The message says which and what to do.

    Example:
        >>> issubclass(DistributedError, RuntimeError)
        True
    """


@dataclasses.dataclass(frozen=True)
class Replica:
    """This process's place in a data-parallel run.

    Attributes:
        rank: this process's index, ``0 .. world_size - 1`` (rank 0 logs and checkpoints).
        world_size: number of processes.
        local_rank: index on this machine (selects the GPU ``cuda:{local_rank}``).
        backend: ``"gloo"`` or ``"nccl"``.
        owned: the process group was created by :func:`setup` (and is destroyed by :func:`shutdown`).

    Example:
        >>> r = Replica(rank=1, world_size=2, local_rank=1, backend="gloo", owned=True)
        >>> r.is_main, r.env_offset(8)
        (False, 8)
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    owned: bool

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that runs the callbacks (logs, checkpoints, evaluation)."""
        return self.rank == 0

    def env_offset(self, num_envs: int) -> int:
        """Global index of this process's first env: ``rank * num_envs``."""
        return self.rank * num_envs


def setup(device: str = "cpu", timeout_s: float | None = None) -> Replica | None:
    """Join the data-parallel run this process belongs to; ``None`` for a one-process run.

    Uses the default process group if the program already initialised one. Otherwise, when
    torchrun's ``WORLD_SIZE`` is above 1, initialises it from the environment (``env://``)
    with the ``nccl`` backend for a CUDA ``device`` and ``gloo`` otherwise, and a timeout of
    ``timeout_s`` seconds (default ``$FUNCTIONAL_RL_DIST_TIMEOUT_S`` or 300): a collective
    waiting longer than that for another process fails instead of hanging. With NCCL,
    ``cuda:{LOCAL_RANK}`` becomes the current CUDA device, so ``device="cuda"`` means this
    process's GPU.

    Example:
        >>> setup() is None  # not launched by torchrun
        True
    """
    if dist.is_available() and dist.is_initialized():
        replica = Replica(
            rank=dist.get_rank(), world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())), backend=str(dist.get_backend()), owned=False,
        )
        if replica.backend == "nccl":
            torch.cuda.set_device(replica.local_rank)
        return replica
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    if not dist.is_available():
        raise DistributedError(f"WORLD_SIZE={world_size} but this torch build has no torch.distributed")
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)) if timeout_s is None else float(timeout_s)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return Replica(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, backend=backend, owned=True)


def shutdown(replica: Replica | None) -> None:
    """Destroy the process group if :func:`setup` created it (a program's own group is left alone).

    Example:
        >>> shutdown(None)  # a one-process run: nothing to do
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> shutdown(Replica(rank=0, world_size=1, local_rank=0, backend="gloo", owned=False))
        >>> dist.is_initialized()  # not ours: left alone
        True
        >>> shutdown(Replica(rank=0, world_size=1, local_rank=0, backend="gloo", owned=True))
        >>> dist.is_initialized()
        False
    """
    if replica is not None and replica.owned and dist.is_initialized():
        dist.destroy_process_group()


def process_group_sum(group: Any = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The kernel's ``all_reduce``: sum a tensor over the processes of ``group`` (default: all).

    A functional collective (``torch.distributed._functional_collectives.all_reduce``): it
    returns a new tensor and traces into ``torch.compile`` graphs, so the compiled update keeps
    its collectives inside one graph.

    Example (a one-process group, so the sum is the tensor itself):
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> all_reduce = process_group_sum()
        >>> all_reduce(torch.tensor([1.0, 2.0])) + 0  # (the result waits for the collective on first use)
        tensor([1., 2.])
        >>> dist.destroy_process_group()
    """
    import torch.distributed._functional_collectives as funcol

    group = dist.group.WORLD if group is None else group

    def all_reduce(buffer: torch.Tensor) -> torch.Tensor:
        return funcol.all_reduce(buffer, "sum", group)

    return all_reduce


def check_config(config: Any, replica: Replica, *, curriculum: Any = None) -> Any:
    """The config of one process of ``replica``'s run: ``world_size`` set. Raises
    :class:`DistributedError` for what does not work across processes yet.

    The device stays as written (``"cuda"``): :func:`setup` made ``cuda:{local_rank}`` this
    process's current CUDA device, which is where ``"cuda"`` tensors go.

    Example:
        >>> from functional_rl.kernel.config import PPOConfig
        >>> r = Replica(rank=1, world_size=2, local_rank=1, backend="gloo", owned=False)
        >>> cfg = check_config(PPOConfig(num_envs=4), r)
        >>> cfg.world_size, cfg.batch_size
        (2, 1024)
        >>> check_config(PPOConfig(world_size=3), r)
        Traceback (most recent call last):
            ...
        functional_rl.shell.distributed.DistributedError: PPOConfig.world_size=3 but 2 processes were launched; ...
    """
    if config.world_size not in (1, replica.world_size):
        raise DistributedError(
            f"PPOConfig.world_size={config.world_size} but {replica.world_size} processes were launched; "
            f"launch with torchrun --nproc-per-node {config.world_size} (a resumed run needs its original process count)"
        )
    if curriculum is not None:
        raise DistributedError(
            f"a curriculum is not supported with {replica.world_size} processes (its task draws are per process); "
            "train with one process"
        )
    return config.replace(world_size=replica.world_size)


# ---------------------------------------------------------------------------- env shards
def gather_envs(state: Any, replica: Replica) -> Any:
    """The whole run's state on every process: the envs part (:class:`~functional_rl.kernel.state.EnvsState`,
    one row per env in every leaf) of all processes concatenated in rank order
    (``world_size * num_envs`` envs), the rest as it is (it is the same on every process).
    One ``all_gather`` per dtype.

    The result is exactly the state of a one-process run with all the envs, so a checkpoint
    of it can be resumed by any process count that divides its envs evenly.

    Example (one process: the whole run is this process's share):
        >>> from functional_rl.kernel.config import PPOConfig
        >>> from functional_rl.shell.build import build
        >>> state, _ = build(PPOConfig(num_envs=2, num_steps=4, num_minibatches=2), compile=False)
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> whole = gather_envs(state, Replica(rank=0, world_size=1, local_rank=0, backend="gloo", owned=True))
        >>> whole.envs.env_ids.tolist(), bool(torch.equal(whole.envs.obs, state.envs.obs))
        ([0, 1], True)
        >>> dist.destroy_process_group()
    """
    leaves, spec = pytree.tree_flatten(state.envs)  # every tensor leaf has one row per env
    out = list(leaves)
    tensors = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]  # absent parts are None
    for dtype in dict.fromkeys(leaves[i].dtype for i in tensors):
        idx = [i for i in tensors if leaves[i].dtype == dtype]
        rows = torch.cat([leaves[i].reshape(leaves[i].shape[0], -1) for i in idx], dim=1)
        parts = [torch.empty_like(rows) for _ in range(replica.world_size)]
        dist.all_gather(parts, rows.contiguous())
        full = torch.cat(parts, dim=0)
        widths = [leaves[i][0].numel() for i in idx]
        for i, cols in zip(idx, full.split(widths, dim=1)):
            out[i] = cols.reshape((full.shape[0], *leaves[i].shape[1:])).clone()
    return state.replace(envs=pytree.tree_unflatten(out, spec))


def local_share(state: Any, replica: Replica, num_envs: int) -> Any:
    """This process's share of a whole-run state (e.g. a loaded checkpoint): envs
    ``rank * num_envs .. rank * num_envs + num_envs - 1``. A state that already holds exactly
    this process's envs is returned as it is.

    Raises:
        DistributedError: the state's env count is neither ``world_size * num_envs`` nor this
            process's share.

    Example (the second of two processes with 2 envs each takes envs 2 and 3):
        >>> from functional_rl.kernel.config import PPOConfig
        >>> from functional_rl.shell.build import build
        >>> whole, _ = build(PPOConfig(num_envs=4, num_steps=4, num_minibatches=2), compile=False)
        >>> share = local_share(whole, Replica(rank=1, world_size=2, local_rank=1, backend="gloo", owned=False), 2)
        >>> share.envs.env_ids.tolist(), share.envs.obs.shape, bool(torch.equal(share.envs.obs, whole.envs.obs[2:]))
        ([2, 3], torch.Size([2, 4]), True)
    """
    total = state.envs.env_ids.shape[0]
    lo = replica.env_offset(num_envs)
    if total == num_envs and int(state.envs.env_ids[0]) == lo:
        return state
    if total != replica.world_size * num_envs:
        raise DistributedError(
            f"the state holds {total} envs, but {replica.world_size} processes with num_envs={num_envs} need "
            f"{replica.world_size * num_envs}; resume with the process count and num_envs it was trained with"
        )
    rows = lambda leaf: leaf[lo:lo + num_envs].clone() if isinstance(leaf, torch.Tensor) else leaf  # noqa: E731
    return state.replace(envs=pytree.tree_map(rows, state.envs))


def is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a collective that lost another process (closed connection,
    timeout) rather than from this process's own code.

    Example:
        >>> is_collective_failure(RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer"))
        True
        >>> is_collective_failure(ValueError("bad shape"))
        False
    """
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return any(s in text for s in ("gloo", "NCCL", "Connection reset", "Connection closed", "Timed out", "timed out", "c10d"))


def lost_process_error(exc: BaseException, replica: Replica | None) -> DistributedError | None:
    """The :class:`DistributedError` to raise instead of ``exc`` when ``exc`` is a collective that
    lost another process (:func:`is_collective_failure`); ``None`` otherwise (and in one process).

    Example:
        >>> r = Replica(rank=1, world_size=2, local_rank=1, backend="gloo", owned=False)
        >>> print(lost_process_error(RuntimeError("gloo: Connection reset by peer"), r))  # doctest: +ELLIPSIS
        rank 1 of 2: a collective with the other processes failed (gloo: Connection reset by peer); another ...
        >>> lost_process_error(ValueError("bad shape"), r) is None, lost_process_error(RuntimeError("gloo"), None) is None
        (True, True)
    """
    if replica is None or not is_collective_failure(exc):
        return None
    return DistributedError(
        f"rank {replica.rank} of {replica.world_size}: a collective with the other processes failed "
        f"({str(exc).splitlines()[0][:300]}); another process probably died or stopped answering, see its "
        "log. Rank 0 keeps the last good state in its checkpoints."
    )
