"""The pure kernel's view of data parallelism: an injected ``all_reduce``.

A data-parallel run (:mod:`functional_rl.shell.distributed`, the shell side) hands the kernel a
function ``all_reduce(buffer) -> buffer`` that sums a 1-D tensor over all processes; in one
process there is none (``None``) and nothing is reduced. Kernel code that needs a quantity
over the whole run (gradients, advantage and observation statistics, metrics) forms it from
sums and passes them through :func:`sum_over_processes`, so the one-process code path is the
same code with the reduction left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["AllReduce", "sum_over_processes"]

AllReduce = Callable[[torch.Tensor], torch.Tensor]


def sum_over_processes(tensors: Sequence[torch.Tensor], all_reduce: AllReduce | None) -> list[torch.Tensor]:
    """Sum each tensor over the processes of a data-parallel run with one collective per dtype.

    The tensors of one dtype are flattened into a single 1-D buffer, ``all_reduce(buffer)``
    sums it over processes, and the result is split back into the original shapes. With
    ``all_reduce=None`` (one process) the tensors come back unchanged. Pure given a pure
    ``all_reduce`` (a functional collective is: it returns a new tensor).

    Example (a stand-in "all-reduce" of two identical processes doubles every value):
        >>> a, b, n = torch.ones(2, 2), torch.tensor(3.0), torch.tensor(4, dtype=torch.int64)
        >>> sum_over_processes([a, b, n], lambda buf: 2 * buf)
        [tensor([[2., 2.],
                [2., 2.]]), tensor(6.), tensor(8)]
        >>> sum_over_processes([b], None)
        [tensor(3.)]
    """
    tensors = list(tensors)
    if all_reduce is None:
        return tensors
    out: list[Any] = [None] * len(tensors)
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        where = [i for i, t in enumerate(tensors) if t.dtype == dtype]
        summed = all_reduce(torch.cat([tensors[i].reshape(-1) for i in where]))
        for i, part in zip(where, summed.split([tensors[i].numel() for i in where])):
            out[i] = part.reshape(tensors[i].shape)
    return out
