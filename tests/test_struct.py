"""@pytree_dataclass: frozen, .replace(), and a pytree for torch (vmap, compile) and optree."""

import dataclasses

import optree
import pytest
import torch
import torch.utils._pytree as pytree

from functional_rl.kernel.struct import OPTREE_NAMESPACE, pytree_dataclass, static_field


@pytree_dataclass
class Inner:
    a: torch.Tensor
    tag: str = static_field(default="inner")


@pytree_dataclass
class Outer:
    inner: Inner
    b: torch.Tensor
    n: int = static_field(default=3)


def make():
    return Outer(Inner(torch.tensor([1.0, 2.0])), torch.tensor(5.0))


def test_frozen_and_replace_leave_the_original_untouched():
    o = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.b = torch.tensor(0.0)
    p = o.replace(b=torch.tensor(7.0))
    assert float(o.b) == 5.0 and float(p.b) == 7.0 and p.inner is o.inner


def test_torch_pytree_leaves_structure_and_paths():
    o = make()
    leaves, spec = pytree.tree_flatten(o)
    assert [x.tolist() for x in leaves] == [[1.0, 2.0], 5.0]
    back = pytree.tree_unflatten([x * 2 for x in leaves], spec)
    assert back.inner.a.tolist() == [2.0, 4.0] and back.n == 3 and back.inner.tag == "inner"
    paths = [pytree.keystr(k) for k, _ in pytree.tree_flatten_with_path(o)[0]]
    assert paths == [".inner.a", ".b"]
    # Static fields are structure: a different value is a different tree.
    assert pytree.tree_structure(o) != pytree.tree_structure(o.replace(n=4))


def test_optree_sees_the_same_leaves():
    o = make()
    leaves, spec = optree.tree_flatten(o, namespace=OPTREE_NAMESPACE)
    assert [x.tolist() for x in leaves] == [[1.0, 2.0], 5.0]
    doubled = optree.tree_map(lambda x: x * 2, o, namespace=OPTREE_NAMESPACE)
    assert isinstance(doubled, Outer) and doubled.inner.a.tolist() == [2.0, 4.0] and doubled.n == 3


def test_vmap_and_compile_see_through_it():
    batch = Outer(Inner(torch.arange(6.0).reshape(3, 2)), torch.arange(3.0))
    out = torch.func.vmap(lambda o: o.replace(b=o.b + o.inner.a.sum()))(batch)
    assert out.b.tolist() == [1.0, 6.0, 11.0]
    f = torch.compile(lambda o: o.replace(b=o.b * o.n), fullgraph=True)
    assert float(f(make()).b) == 15.0
