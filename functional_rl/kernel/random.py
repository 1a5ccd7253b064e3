"""Explicit, counter-based pseudo-random numbers in pure tensor arithmetic.

A *key* is an ``int64`` tensor of shape ``[2]`` holding two 32-bit words. Every draw is a
pure function of ``(key, counter)``: no global state, no ``torch.Generator``. So the same
key gives the same numbers eagerly, under ``torch.compile(fullgraph=True)``, under
``torch.func.vmap`` (a batch of keys is a tensor ``[A, 2]``) and after a checkpoint resume.

The bit generator hashes ``counter`` with the key words through three rounds of the
``lowbias32`` integer hash (Chris Wellons, "Prospecting for Hash Functions", 2018:
``x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16``), each round a
bijection of 32-bit words, so distinct counters never collide within one draw. All arithmetic
stays below 2**63 (32-bit products are split into 16-bit halves), so there is no reliance on
signed-overflow behaviour, which differs between eager kernels and generated code.

Example:
    >>> import functional_rl.kernel.random as jr
    >>> k = jr.key(0)
    >>> k1, k2 = jr.split(k)
    >>> u = jr.uniform(k1, (3,))
    >>> bool(((u >= 0) & (u < 1)).all())
    True
    >>> bool(torch.equal(jr.uniform(k1, (3,)), u))
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "key",
    "split",
    "fold_in",
    "row_keys",
    "bits",
    "uniform",
    "normal",
    "categorical",
    "permutation",
    "randint",
]

_M32 = 0xFFFFFFFF
# Stream tags keep the draws of different functions from the same key apart.
_TAG_BITS = 0x2545F491
_TAG_SPLIT = 0x9E3779B9
_TAG_FOLD = 0x632BE5AB
_TAG_SEED = 0x85EBCA77
_TAG_ROWS = 0xC2B2AE3D


def _mulmod32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for ``0 <= x < 2**32`` without exceeding int64 range."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def _mix(x: torch.Tensor) -> torch.Tensor:
    """The ``lowbias32`` hash: a bijection of 32-bit words with strong avalanche."""
    x = x ^ (x >> 16)
    x = _mulmod32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mulmod32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _check_key(k: torch.Tensor) -> None:
    if not isinstance(k, torch.Tensor) or k.dtype != torch.int64 or k.shape[-1:] != (2,):
        shape = tuple(k.shape) if isinstance(k, torch.Tensor) else type(k).__name__
        dtype = k.dtype if isinstance(k, torch.Tensor) else None
        raise ValueError(
            f"expected a PRNG key: an int64 tensor of shape [..., 2] made by "
            f"functional_rl.kernel.random.key(seed); got shape {shape} dtype {dtype}"
        )


def _hash(k: torch.Tensor, counter: torch.Tensor, tag: int) -> torch.Tensor:
    """Keyed hash of ``counter`` (int64 in [0, 2**32)), broadcast over the key's batch dims.

    Returns int64 words in ``[0, 2**32)`` of shape ``k.shape[:-1] + counter.shape``.
    """
    extra = (1,) * counter.dim()
    k0 = k[..., 0].reshape(k.shape[:-1] + extra)
    k1 = k[..., 1].reshape(k.shape[:-1] + extra)
    x = _mix((counter + k0 + tag) & _M32)
    x = _mix(x ^ k1)
    return _mix(((x + k0) & _M32) ^ tag)


def key(seed: int | torch.Tensor) -> torch.Tensor:
    """Make a PRNG key from an integer seed.

    Args:
        seed: a Python int (any size; the low 64 bits are used) or an int64 tensor ``[...]``.

    Returns:
        int64 ``[2]`` (or ``[..., 2]`` for a tensor of seeds).

    >>> key(42).shape
    torch.Size([2])
    """
    s = torch.as_tensor(seed, dtype=torch.int64) if not isinstance(seed, int) else None
    if s is None:
        seed &= (1 << 64) - 1
        lo, hi = seed & _M32, seed >> 32
        s_lo, s_hi = torch.tensor(lo, dtype=torch.int64), torch.tensor(hi, dtype=torch.int64)
    else:
        s_lo, s_hi = s & _M32, (s >> 32) & _M32
    k0 = _mix(_mix(s_lo ^ _TAG_SEED) ^ s_hi)
    k1 = _mix(_mix(s_hi ^ _TAG_SPLIT) ^ s_lo ^ _TAG_FOLD)
    return torch.stack([k0, k1], dim=-1)


def split(k: torch.Tensor, num: int = 2) -> torch.Tensor:
    """Split a key into ``num`` independent keys.

    Args:
        k: int64 ``[..., 2]``.
        num: how many keys (a Python int: it decides a shape).

    Returns:
        int64 ``[..., num, 2]``. Unpack as ``k1, k2 = split(k)`` for an unbatched key.

    Example:
        >>> k = key(0)
        >>> split(k).shape, split(k, 3).shape
        (torch.Size([2, 2]), torch.Size([3, 2]))
        >>> k1, k2 = split(k)
        >>> bool(torch.equal(k1, k2))
        False
        >>> split(split(k, 4), 2).shape  # batched keys [4, 2] -> [4, 2, 2]
        torch.Size([4, 2, 2])
    """
    _check_key(k)
    c = torch.arange(2 * num, dtype=torch.int64, device=k.device)
    words = _hash(k, c, _TAG_SPLIT)
    return words.reshape(k.shape[:-1] + (num, 2))


def fold_in(k: torch.Tensor, data: int | torch.Tensor) -> torch.Tensor:
    """Derive a new key from ``k`` and an integer (an iteration, a rank, an env index).

    ``data`` may be a Python int or an int64 tensor (0-d, or broadcastable to the key's batch
    dims); only its low 32 bits are used.

    Returns:
        int64 ``[..., 2]``.

    Example:
        >>> k = key(0)
        >>> fold_in(k, 7).shape
        torch.Size([2])
        >>> bool(torch.equal(fold_in(k, 7), fold_in(k, 7))), bool(torch.equal(fold_in(k, 7), fold_in(k, 8)))
        (True, False)
        >>> fold_in(split(k, 3), torch.arange(3)).shape  # one datum per batched key
        torch.Size([3, 2])
    """
    _check_key(k)
    d = torch.as_tensor(data, dtype=torch.int64, device=k.device) & _M32
    d = _mix(d ^ _TAG_FOLD)
    k0 = _mix(k[..., 0] ^ d)
    k1 = _mix(((k[..., 1] + d) & _M32) ^ _TAG_FOLD)
    return torch.stack(torch.broadcast_tensors(k0, k1), dim=-1)


def row_keys(k: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """One key per row (per env, per process's share of a batch): ``[*rows.shape, 2]``.

    Row ``r``'s key is ``(k0, k1 ^ mix(r ^ tag))``: the row index is hashed once, the key
    words are not touched, and the three hash rounds of every draw then separate the rows'
    streams. It is :func:`fold_in` for the hot path: under ``torch.compile`` a draw from
    ``fold_in`` keys fuses the key's own hash rounds into every random number's expression and
    took 15 s more to compile per draw on a 2-core CPU; ``row_keys`` costs about 1 s. Rows
    ``r`` are Python-independent data (an env's global index), not keys: derive keys from keys
    with :func:`split` or :func:`fold_in` (``row_keys`` of ``row_keys`` with the same row
    cancels).

    Args:
        k: one key, int64 ``[2]`` (or a batch ``[*batch, 2]`` whose dims lead ``rows``' dims).
        rows: int64 ``[...]`` row indices (only their low 32 bits are used).

    Example:
        >>> keys = row_keys(key(0), torch.arange(3))
        >>> keys.shape, len({tuple(r) for r in keys.tolist()})
        (torch.Size([3, 2]), 3)
        >>> bool(torch.equal(row_keys(key(0), torch.tensor([2]))[0], keys[2]))  # row 2's key alone
        True
    """
    _check_key(k)
    d = _mix((rows.to(torch.int64) & _M32) ^ _TAG_ROWS)
    lead = k.shape[:-1] + (1,) * (rows.dim() - (k.dim() - 1))
    k0, k1 = k[..., 0].reshape(lead), k[..., 1].reshape(lead)
    return torch.stack(torch.broadcast_tensors(k0, k1 ^ d), dim=-1)


def bits(k: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Uniform random 32-bit words.

    Returns:
        int64 ``k.shape[:-1] + shape`` with values in ``[0, 2**32)``.

    Example:
        >>> b = bits(key(0), (2, 3))
        >>> b.shape, b.dtype
        (torch.Size([2, 3]), torch.int64)
        >>> bool(((b >= 0) & (b < 2**32)).all())
        True
    """
    _check_key(k)
    shape = tuple(shape)
    n = 1
    for s in shape:
        n *= s
    c = torch.arange(n, dtype=torch.int64, device=k.device)
    return _hash(k, c, _TAG_BITS).reshape(k.shape[:-1] + shape)


def uniform(
    k: torch.Tensor,
    shape: Sequence[int] = (),
    dtype: torch.dtype = torch.float32,
    low: float | torch.Tensor = 0.0,
    high: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Uniform floats in ``[low, high)`` with 24 random bits each.

    Returns:
        ``dtype`` tensor of shape ``k.shape[:-1] + shape``.

    Example:
        >>> u = uniform(key(0), (2, 3), low=-1.0, high=1.0)
        >>> u.shape, u.dtype
        (torch.Size([2, 3]), torch.float32)
        >>> bool(((u >= -1) & (u < 1)).all())
        True
        >>> uniform(split(key(0), 4), (3,)).shape  # a batch of keys [4, 2]
        torch.Size([4, 3])
    """
    u = (bits(k, shape) >> 8).to(dtype) * (2.0**-24)
    return low + (high - low) * u


def _open_uniform(k: torch.Tensor, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """Uniform in the open interval ``(0, 1)``: safe under ``log``."""
    return ((bits(k, shape) >> 8).to(dtype) + 0.5) * (2.0**-24)


def normal(k: torch.Tensor, shape: Sequence[int] = (), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal samples by the Box-Muller transform.

    ``z = sqrt(-2 ln u1) * cos(2 pi u2)`` with ``u1, u2 ~ U(0, 1)`` independent.

    A batch of keys ``[..., 2]`` gives an independent sample ``shape`` per key.

    Returns:
        ``dtype`` tensor of shape ``k.shape[:-1] + shape``.

    Example:
        >>> z = normal(key(0), (10000,))
        >>> z.shape
        torch.Size([10000])
        >>> abs(float(z.mean())) < 0.05, abs(float(z.std()) - 1.0) < 0.05
        (True, True)
    """
    k1, k2 = split(k, 2).unbind(-2)
    u1 = _open_uniform(k1, shape, dtype)
    u2 = _open_uniform(k2, shape, dtype)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * torch.pi) * u2)


def _row_shape(k: torch.Tensor, shape: Sequence[int], what: str) -> tuple[int, ...]:
    """The per-key part of ``shape`` when ``k`` holds one key per leading row of it."""
    nb = k.dim() - 1
    if tuple(k.shape[:-1]) != tuple(shape[:nb]):
        raise ValueError(
            f"{what}: a batch of keys {tuple(k.shape)} must match the leading dims of the sample "
            f"shape {tuple(shape)} (one key per row); pass one key [2] for the whole sample"
        )
    return tuple(shape[nb:])


def categorical(k: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Sample indices from unnormalised log-probabilities by the Gumbel-max trick.

    ``argmax_i(logits_i + g_i)`` with ``g_i = -log(-log u_i)`` is distributed as
    ``softmax(logits)``.

    Args:
        k: one key ``[2]`` for all rows, or one key per row: ``[*batch, 2]`` with ``batch``
            the leading dims of ``logits`` (row ``b`` then depends on ``k[b]`` only).
        logits: float ``[..., K]``.

    Returns:
        int64 ``[...]``.

    Example:
        >>> logits = torch.tensor([[0.0, 100.0], [100.0, 0.0]])  # [2, K=2], nearly one-hot
        >>> categorical(key(0), logits)
        tensor([1, 0])
        >>> keys = split(key(0), 2)  # one key per row [2, 2]
        >>> bool(torch.equal(categorical(keys, logits)[1:], categorical(keys[1:], logits[1:])))
        True
    """
    _check_key(k)
    u = _open_uniform(k, _row_shape(k, logits.shape, "categorical"), logits.dtype)
    gumbel = -torch.log(-torch.log(u))
    return torch.argmax(logits + gumbel, dim=-1)


def permutation(k: torch.Tensor, n: int) -> torch.Tensor:
    """A uniformly random permutation of ``range(n)`` (stable argsort of random words).

    Returns:
        int64 ``[n]``.

    Example:
        >>> p = permutation(key(0), 5)
        >>> p.shape, sorted(p.tolist())
        (torch.Size([5]), [0, 1, 2, 3, 4])
    """
    return torch.argsort(bits(k, (n,)), stable=True)


def randint(k: torch.Tensor, shape: Sequence[int], low: int, high: int) -> torch.Tensor:
    """Integers in ``[low, high)`` (modulo reduction; bias below ``(high - low) / 2**32``).

    Returns:
        int64 ``k.shape[:-1] + shape``.

    Example:
        >>> r = randint(key(0), (100,), 2, 5)
        >>> r.shape, sorted(set(r.tolist()))
        (torch.Size([100]), [2, 3, 4])
        >>> randint(key(0), (1,), 3, 3)
        Traceback (most recent call last):
            ...
        ValueError: randint needs high > low, got low=3, high=3
    """
    if high <= low:
        raise ValueError(f"randint needs high > low, got low={low}, high={high}")
    return bits(k, shape) % (high - low) + low
