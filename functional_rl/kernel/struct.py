"""Frozen dataclasses that are pytrees.

``@pytree_dataclass`` turns a class into a frozen :mod:`dataclasses` dataclass and registers
it with both ``torch.utils._pytree`` (so ``torch.func.vmap``, ``torch.compile`` and
``tree_map`` see through it) and ``optree`` (in the ``"functional_rl"`` namespace: optree requires one; pass
``namespace=OPTREE_NAMESPACE`` to optree's functions). Fields declared with ``static_field()`` are part
of the tree *structure* (Python ints, strings, callables): they are not leaves, they are not
vmapped, and changing one changes the structure.

Example:
    >>> import torch
    >>> from functional_rl.kernel.struct import pytree_dataclass, static_field
    >>> @pytree_dataclass
    ... class Point:
    ...     x: torch.Tensor
    ...     y: torch.Tensor
    ...     name: str = static_field(default="p")
    >>> p = Point(torch.tensor(1.0), torch.tensor(2.0))
    >>> q = p.replace(x=torch.tensor(3.0))
    >>> (float(p.x), float(q.x), q.name)
    (1.0, 3.0, 'p')
    >>> import torch.utils._pytree as pytree
    >>> [float(v) for v in pytree.tree_leaves(q)]
    [3.0, 2.0]
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import optree
import torch
import torch.utils._pytree as pytree

__all__ = ["OPTREE_NAMESPACE", "pytree_dataclass", "static_field", "field", "map_fields", "tensor_leaves"]

OPTREE_NAMESPACE = "functional_rl"

T = TypeVar("T")

_STATIC = "functional_rl_static"


def static_field(**kwargs: Any) -> Any:
    """A dataclass field that is part of the tree structure, not a leaf.

    Use it for shape-deciding ints, names and functions.

    Example:
        >>> import torch, torch.utils._pytree as pytree
        >>> @pytree_dataclass
        ... class Sized:
        ...     x: torch.Tensor
        ...     n: int = static_field(default=3)
        >>> leaves, spec = pytree.tree_flatten(Sized(torch.zeros(2)))
        >>> len(leaves), Sized.__static_fields__  # ``n`` is structure, not a leaf
        (1, ('n',))
    """
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata[_STATIC] = True
    return dataclasses.field(metadata=metadata, **kwargs)


def field(**kwargs: Any) -> Any:
    """A plain (leaf) dataclass field; re-exported for symmetry with :func:`static_field`.

    Example:
        >>> import torch
        >>> @pytree_dataclass
        ... class Acc:
        ...     total: torch.Tensor = field(default_factory=lambda: torch.zeros(2))
        >>> Acc().total, Acc.__data_fields__
        (tensor([0., 0.]), ('total',))
    """
    return dataclasses.field(**kwargs)


def _make_replace(cls: type, names: tuple[str, ...]):
    """``replace(self, **changes)`` for ``cls``: a copy with ``changes`` applied (the only way
    to "modify" a frozen state).

    It calls the class with every field named, rather than ``dataclasses.replace``: inside
    ``torch.compile`` the latter walks ``__dataclass_fields__`` and dynamo guards on four
    attributes of every field, checks that then run on each call of the compiled function.
    """
    if any(not f.init for f in dataclasses.fields(cls)):
        return lambda self, **changes: dataclasses.replace(self, **changes)

    def replace(self, **changes):
        for name in changes:
            if name not in names:
                raise TypeError(f"{cls.__name__}.replace() got an unexpected field {name!r}; its fields are {names}")
        return self.__class__(**{n: changes[n] if n in changes else getattr(self, n) for n in names})

    return replace


def pytree_dataclass(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen dataclass registered as a pytree with torch and optree.

    Leaves are the non-static fields in declaration order; static fields travel in the
    context. Adds ``.replace(**changes)``.

    Example:
        >>> import torch, torch.utils._pytree as pytree
        >>> @pytree_dataclass
        ... class Pair:
        ...     a: torch.Tensor  # [N]
        ...     b: torch.Tensor  # [N]
        >>> p = Pair(torch.ones(3), torch.zeros(3))
        >>> doubled = pytree.tree_map(lambda t: 2 * t, p)
        >>> doubled.a, type(doubled).__name__
        (tensor([2., 2., 2.]), 'Pair')
        >>> torch.func.vmap(lambda q: q.a + q.b)(p).shape  # vmap sees through it
        torch.Size([3])
    """
    cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
    fields = dataclasses.fields(cls)
    data_names = tuple(f.name for f in fields if not f.metadata.get(_STATIC, False))
    meta_names = tuple(f.name for f in fields if f.metadata.get(_STATIC, False))

    def flatten(obj):
        children = [getattr(obj, n) for n in data_names]
        meta = tuple(getattr(obj, n) for n in meta_names)
        return children, meta

    def unflatten(children, meta):
        obj = object.__new__(cls)
        for n, v in zip(data_names, children):
            object.__setattr__(obj, n, v)
        for n, v in zip(meta_names, meta):
            object.__setattr__(obj, n, v)
        return obj

    def flatten_with_keys(obj):
        children, meta = flatten(obj)
        return [(pytree.GetAttrKey(n), c) for n, c in zip(data_names, children)], meta

    pytree.register_pytree_node(
        cls,
        flatten,
        unflatten,
        serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
        flatten_with_keys_fn=flatten_with_keys,
    )
    optree.register_pytree_node(
        cls,
        lambda obj: (flatten(obj)[0], flatten(obj)[1], data_names),
        lambda meta, children: unflatten(list(children), meta),
        namespace=OPTREE_NAMESPACE,
    )
    cls.replace = _make_replace(cls, tuple(f.name for f in fields))  # type: ignore[attr-defined]
    cls.__data_fields__ = data_names  # type: ignore[attr-defined]
    cls.__static_fields__ = meta_names  # type: ignore[attr-defined]
    return cls


def map_fields(fn: Any, tree: Any, *rest: Any) -> Any:
    """``pytree.tree_map(fn, tree, *rest)`` for the trees a kernel step carries, without the
    pytree registry.

    Tensors, ``None``, ``@pytree_dataclass`` instances, tuples (named ones too), lists and
    dicts are walked here; anything else falls back to ``torch.utils._pytree.tree_map``.
    Why: inside ``torch.compile``, ``tree_map`` reads the registry of pytree node types, and
    dynamo then guards on every registered type (about a hundred identity checks run on each
    call of the compiled function). Walking the fields directly traces to the same graph with
    none of those guards.

    Example:
        >>> import torch
        >>> @pytree_dataclass
        ... class P:
        ...     a: torch.Tensor
        ...     b: tuple
        >>> p = P(torch.ones(2), (torch.zeros(1), None))
        >>> q = map_fields(lambda x, y: x + y, p, p)
        >>> q.a, q.b
        (tensor([2., 2.]), (tensor([0.]), None))
    """
    if isinstance(tree, torch.Tensor):
        return fn(tree, *rest)
    if tree is None:
        return None
    kind = type(tree)
    names = getattr(kind, "__data_fields__", None)
    if names is not None:
        return tree.replace(**{n: map_fields(fn, getattr(tree, n), *(getattr(r, n) for r in rest)) for n in names})
    if kind in (tuple, list):
        return kind(map_fields(fn, *xs) for xs in zip(tree, *rest, strict=True))
    if isinstance(tree, tuple) and hasattr(kind, "_fields"):
        return kind(*(map_fields(fn, *xs) for xs in zip(tree, *rest, strict=True)))
    if kind is dict:
        return {k: map_fields(fn, v, *(r[k] for r in rest)) for k, v in tree.items()}
    return pytree.tree_map(fn, tree, *rest)


def tensor_leaves(tree: Any) -> list:
    """The tensor leaves of ``tree`` in pytree order (see :func:`map_fields` for why not
    ``pytree.tree_leaves`` inside a compiled step).

    Example:
        >>> import torch
        >>> tensor_leaves({"a": torch.ones(1), "b": (None, torch.zeros(2), 3)})
        [tensor([1.]), tensor([0., 0.])]
    """
    if isinstance(tree, torch.Tensor):
        return [tree]
    names = getattr(type(tree), "__data_fields__", None)
    if names is not None:
        children = [getattr(tree, n) for n in names]
    elif type(tree) in (tuple, list) or (isinstance(tree, tuple) and hasattr(type(tree), "_fields")):
        children = list(tree)
    elif type(tree) is dict:
        children = list(tree.values())
    elif tree is None:
        return []
    else:
        return [x for x in pytree.tree_leaves(tree) if isinstance(x, torch.Tensor)]
    return [leaf for child in children for leaf in tensor_leaves(child)]
