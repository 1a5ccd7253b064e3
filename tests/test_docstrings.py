"""Every public function and class documents itself with a runnable example.

"Public" is every name in ``functional_rl.__all__``, in the ``__all__`` of the submodules
exported there, and in the ``__all__`` of the core modules listed in ``CORE_MODULES``. Each such function or class must have a non-empty
docstring of its own that contains a ``>>>`` example; the examples themselves run as doctests
(``pytest --doctest-modules``, see ``pyproject.toml``).
"""

from __future__ import annotations

import importlib
import inspect
import types

import functional_rl as frl

CORE_MODULES = (
    "kernel.rollout",
    "kernel.iteration",
    "kernel.update",
    "kernel.metrics",
    "kernel.normalize",
    "kernel.advantages",
    "kernel.losses",
    "kernel.optim",
    "kernel.state",
    "kernel.policies",
    "kernel.distributions",
    "kernel.exact",
    "kernel.schedules",
    "kernel.vtrace",
    "kernel.recurrent",
    "kernel.struct",
    "kernel.config",
    "envs.base",
    "envs.gymnasium_adapter",
    "envs.render",
    "envs.pettingzoo_adapter",
    "kernel.token_policy",
    "shell.batched",
    "shell.build",
    "shell.loop",
    "shell.checks",
    "shell.curves",
    "shell.video",
    "shell.export",
    "compat.losses",
)

EXCLUDED_MODULES: tuple[str, ...] = ()


def _public_modules() -> list[types.ModuleType]:
    mods = [frl]
    mods += [getattr(frl, n) for n in frl.__all__ if isinstance(getattr(frl, n), types.ModuleType)]
    mods += [importlib.import_module(f"functional_rl.{m}") for m in CORE_MODULES]
    return mods


def public_objects() -> list[tuple[str, object]]:
    """``(qualified name, object)`` for every public function and class, each object once."""
    seen: set[int] = set()
    out = []
    for mod in _public_modules():
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if isinstance(obj, types.ModuleType) or id(obj) in seen:
                continue
            seen.add(id(obj))
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", "") in EXCLUDED_MODULES:
                continue
            out.append((f"{mod.__name__}.{name}", obj))
    return out


def _own_doc(obj: object) -> str:
    # The object's own docstring, not one inherited from a base class (a Protocol, ValueError...).
    return inspect.cleandoc(obj.__doc__) if isinstance(getattr(obj, "__doc__", None), str) else ""


def test_the_listing_finds_the_public_api():
    names = {name for name, _ in public_objects()}
    # A sample across the package: if these vanish the listing itself is broken.
    for expected in (
        "functional_rl.PPOConfig",
        "functional_rl.make_kernel",
        "functional_rl.kernel.optim.adam",
        "functional_rl.envs.CartPole",
        "functional_rl.shell.checkpoint.CorruptCheckpointError",
        "functional_rl.shell.callbacks.Callback",
        "functional_rl.kernel.normalize.obs_norm_apply",
    ):
        assert expected in names, expected
    assert "functional_rl.shell.loop.metrics_to_host" in names


def test_every_public_object_has_a_docstring():
    missing = [name for name, obj in public_objects() if not _own_doc(obj).strip()]
    assert missing == [], f"public objects without a docstring: {missing}"


def test_every_public_docstring_has_an_example():
    missing = [name for name, obj in public_objects() if ">>>" not in _own_doc(obj)]
    assert missing == [], f"public objects whose docstring has no '>>>' example: {missing}"
