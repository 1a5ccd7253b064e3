"""The architecture is visible in the folders and the imports keep to it.

``functional_rl/kernel`` (pure functions) and ``functional_rl/envs`` (pure environments and
host adapters) never import ``functional_rl/shell`` (side effects) or ``functional_rl/compat``
(the reference trainer's surface), not even lazily inside a function. The check reads every
import statement of every module, so it also fails on an import hidden in a function body.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import functional_rl as frl

PACKAGE = pathlib.Path(frl.__file__).parent
ROOT = PACKAGE.parent
PURE = ("kernel", "envs")
FORBIDDEN = ("functional_rl.shell", "functional_rl.compat")


def package_of(path: pathlib.Path) -> str:
    """The dotted package a module file of functional_rl belongs to."""
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])


def imported_modules(path: pathlib.Path, package: str) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in the file at ``path``, a module of
    ``package`` (relative imports are resolved against it)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this file's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def pure_files() -> list[pathlib.Path]:
    return sorted(f for sub in PURE for f in (PACKAGE / sub).rglob("*.py"))


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_modules_never_import_the_shell_or_compat(path):
    bad = [(line, name) for line, name in imported_modules(path, package_of(path)) if name.startswith(FORBIDDEN)]
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}: the kernel and the envs may not depend on the shell or compat"


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    """The walker itself: an import inside a function and a relative one are both found."""
    mod = tmp_path / "probe.py"
    mod.write_text("def f():\n    from functional_rl.shell import loop\n    from ..compat import losses\n")
    names = [name for _, name in imported_modules(mod, "functional_rl.kernel")]
    assert "functional_rl.shell.loop" in names and "functional_rl.compat.losses" in names


def test_every_module_lives_in_one_of_the_four_folders():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "conftest.py"], top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")} == {"kernel", "envs", "shell", "compat"}


def test_the_public_names_are_kept():
    """Every name the package exported before the split into folders is still exported."""
    before = {
        "callbacks", "checkpoint", "components", "curriculum", "distributed", "policy_store", "presets",
        "training_config", "Categorical", "DiagGaussian", "Hyperparams", "Kernel", "NonFiniteError", "PPOConfig",
        "Policy", "TrainerState", "compute_advantages", "compute_advantages_reference", "envs",
        "functional_training_loop", "init_state", "learning_rate_at", "make_kernel", "make_mlp_policy", "optim",
        "ppo_loss", "pytree_dataclass", "random", "rollout", "rollout_step", "static_field", "train_epoch",
        "train_iteration", "train_many", "update_minibatch",
    }
    assert before <= set(frl.__all__) and all(hasattr(frl, n) for n in frl.__all__)


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_every_benchmark_script_compiles(path):
    """The benchmarks run outside the test suite; a syntax error there would go unseen."""
    compile(path.read_text(encoding="utf-8"), str(path), "exec")
