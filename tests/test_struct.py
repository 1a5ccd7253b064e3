"""@pytree_dataclass: frozen, .replace(), and a pytree for torch (vmap, compile) and optree."""

import dataclasses

import optree
import pytest
import torch
import torch.utils._pytree as pytree

import collections

from hypothesis import given, settings, strategies as st

from functional_rl.kernel.struct import OPTREE_NAMESPACE, map_fields, pytree_dataclass, static_field, tensor_leaves


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


def test_replace_keeps_static_fields_and_refuses_unknown_names():
    o = make()
    p = o.replace(n=5)
    assert p.n == 5 and p.inner.tag == "inner" and p.b is o.b
    with pytest.raises(TypeError, match="unexpected field 'c'"):
        o.replace(c=torch.tensor(1.0))


Pair = collections.namedtuple("Pair", ["x", "y"])


def _trees(depth):
    """Trees of the kinds a kernel step carries: tensors, None, dataclasses, (named) tuples,
    lists and dicts, nested."""
    leaf = st.one_of(st.none(), st.integers(1, 3).map(lambda n: torch.arange(float(n))))
    if depth == 0:
        return leaf
    sub = _trees(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(sub, sub),
        st.builds(Pair, sub, sub),
        st.lists(sub, max_size=3),
        st.dictionaries(st.sampled_from("abc"), sub, max_size=3),
        st.builds(lambda a, b: Outer(Inner(a if a is not None else torch.zeros(1)), b), sub.filter(lambda t: isinstance(t, torch.Tensor)), sub),
    )


@settings(max_examples=60, deadline=None)
@given(_trees(3))
def test_map_fields_and_tensor_leaves_agree_with_torch_pytree(tree):
    fn = lambda x: x * 2 + 1  # noqa: E731
    got, want = map_fields(fn, tree), pytree.tree_map(lambda x: fn(x) if isinstance(x, torch.Tensor) else x, tree)
    g_leaves, g_spec = pytree.tree_flatten(got)
    w_leaves, w_spec = pytree.tree_flatten(want)
    assert g_spec == w_spec
    assert all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b for a, b in zip(g_leaves, w_leaves))
    want_tensors = [x for x in pytree.tree_leaves(tree) if isinstance(x, torch.Tensor)]
    assert [id(x) for x in tensor_leaves(tree)] == [id(x) for x in want_tensors]


def test_map_fields_over_two_trees_and_under_compile():
    o, p = make(), make().replace(b=torch.tensor(1.0))

    def select(mask, a, b):
        return map_fields(lambda x, y: torch.where(mask, x, y), a, b)

    eager = select(torch.tensor(True), o, p)
    compiled = torch.compile(select, fullgraph=True, dynamic=False)(torch.tensor(False), o, p)
    assert float(eager.b) == 5.0 and float(compiled.b) == 1.0 and compiled.n == 3
