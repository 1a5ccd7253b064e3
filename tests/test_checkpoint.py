"""Tests for functional_rl.shell.checkpoint: bit-exact round trips, every load error, atomicity."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import torch.utils._pytree as pytree

from functional_rl.shell import checkpoint as ckpt
from functional_rl.shell.checkpoint import (
    CheckpointError,
    CheckpointVersionError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    NotACheckpointError,
    TruncatedCheckpointError,
    UnsafeCheckpointError,
    checkpoint_path,
    latest_checkpoint,
    load,
    save,
)
from functional_rl.kernel.config import Hyperparams, PPOConfig, learning_rate_at
from functional_rl.kernel.struct import pytree_dataclass, static_field

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytree_dataclass
class Inner:
    w: torch.Tensor
    count: torch.Tensor
    name: str = static_field(default="inner")
    sizes: tuple = static_field(default=(64, 64))


@pytree_dataclass
class Outer:
    inner: Inner
    buffers: dict
    history: list
    pair: tuple
    nothing: Any
    lr: float = static_field(default=2.5e-4)
    options: dict = static_field(default_factory=lambda: {"clip": True, "eps": float("inf"), 3: [1, (2, None)]})
    dtype: torch.dtype = static_field(default=torch.float64)
    schedule: Any = static_field(default=learning_rate_at)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor, so NaN payloads and -0.0 are compared exactly."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def _make_state() -> Outer:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    special = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, 3.4e38])
    return Outer(
        inner=Inner(
            w=torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
            count=torch.tensor(2**62 + 1, dtype=torch.int64),  # 0-d, above 2**53
            name="actor_net",
            sizes=(32, 16),
        ),
        buffers={
            "mask": torch.tensor([True, False, True]),
            "special": special,
            "half": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
            "bytes": torch.tensor([0, 255, 7], dtype=torch.uint8),
            "empty": torch.zeros(0, 4, dtype=torch.int32),
            "transposed": base.t(),  # non-contiguous view ...
            "row": base[1],  # ... sharing storage with another view
            "grad": torch.ones(2, requires_grad=True),
        },
        history=[torch.tensor(1.0), None, 3, 0.1 + 0.2, "done", True],
        pair=(torch.tensor([[1, -2]], dtype=torch.int16), {7: torch.tensor(0.5, dtype=torch.float16)}),
        nothing=None,
        lr=3e-4,
    )


def _assert_same_tree(a: Any, b: Any) -> None:
    leaves_a, spec_a = pytree.tree_flatten(a)
    leaves_b, spec_b = pytree.tree_flatten(b)
    assert spec_a == spec_b  # includes every static field and every dict key
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor)
            assert (x.dtype, x.shape, x.requires_grad) == (y.dtype, y.shape, y.requires_grad)
            assert torch.equal(_bits(x), _bits(y))
            if not (x.is_floating_point() and x.isnan().any()):
                assert torch.equal(x.detach(), y.detach())
        else:
            assert type(x) is type(y) and x == y


# ---------------------------------------------------------------------------- container helpers
def _split(data: bytes) -> tuple[dict, bytes]:
    """Parse the documented layout: magic, u64 header length, header JSON, safetensors."""
    assert data[:8] == ckpt.MAGIC
    (n,) = struct.unpack("<Q", data[8:16])
    return json.loads(data[16 : 16 + n]), data[16 + n :]


def _join(header: dict, blob: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return ckpt.MAGIC + struct.pack("<Q", len(raw)) + raw + blob


def _rewrite_content(path: Path, edit) -> None:
    """Apply ``edit`` to the content JSON and re-hash, as a deliberate forger would."""
    header, blob = _split(path.read_bytes())
    content = json.loads(header["content"])
    edit(content)
    header["content"] = json.dumps(content)
    header["sha256"] = hashlib.sha256(header["content"].encode() + blob).hexdigest()
    path.write_bytes(_join(header, blob))


# ---------------------------------------------------------------------------- round trips
def test_round_trip_is_bit_for_bit(tmp_path):
    state = _make_state()
    path = save(tmp_path / "s.frl", state, None)
    assert path == tmp_path / "s.frl"
    loaded, config, metadata = load(path)
    assert config is None and metadata == {}
    _assert_same_tree(state, loaded)
    assert isinstance(loaded, Outer) and isinstance(loaded.inner, Inner)
    assert loaded.inner.name == "actor_net" and loaded.inner.sizes == (32, 16)
    assert loaded.lr == 3e-4 and loaded.dtype is torch.float64
    assert loaded.options == {"clip": True, "eps": math.inf, 3: [1, (2, None)]}
    assert loaded.schedule is learning_rate_at  # a functional_rl function, by reference
    assert int(loaded.inner.count) == 2**62 + 1
    assert loaded.history[2:] == [3, 0.30000000000000004, "done", True]
    assert list(loaded.pair[1]) == [7]
    # -0.0 and the NaN kept their bits; views came back as independent contiguous tensors.
    assert torch.equal(_bits(loaded.buffers["special"][1:2]), _bits(torch.tensor([-0.0])))
    assert loaded.buffers["transposed"].is_contiguous()
    assert torch.equal(loaded.buffers["transposed"], torch.arange(12.0).reshape(3, 4).t())
    loaded.buffers["row"].zero_()
    assert float(loaded.buffers["transposed"].sum()) == 66.0  # no shared storage


def test_same_inputs_give_same_bytes(tmp_path):
    state = _make_state()
    a = save(tmp_path / "a.frl", state, PPOConfig(), {"step": 1}).read_bytes()
    b = save(tmp_path / "b.frl", state, PPOConfig(), {"step": 1}).read_bytes()
    assert a == b


def test_config_and_metadata_round_trip(tmp_path):
    config = PPOConfig(num_envs=4, hidden_sizes=(32, 16), gamma=0.97, activation="relu")
    metadata = {
        "step": 2**62,
        "loss": 0.1 + 0.2,
        "best": float("nan"),
        "name": "r\u00e9sum\u00e9 \u2603",
        "nested": {"list": [1, 2.5, None, True, {"x": []}]},
    }
    state = {"hp": Hyperparams.from_config(config), "iteration": torch.tensor(17)}
    loaded, cfg, md = load(save(tmp_path / "c.frl", state, config, metadata))
    assert cfg == config and cfg.hidden_sizes == (32, 16) and cfg.gamma == 0.97
    assert math.isnan(md.pop("best")) and math.isnan(metadata.pop("best"))
    assert md == metadata and md["step"] == 2**62 and md["loss"] == 0.30000000000000004
    assert float(loaded["hp"].gamma) == float(torch.tensor(0.97))
    assert int(loaded["iteration"]) == 17


def test_bare_tensor_and_scalar_states(tmp_path):
    for i, state in enumerate([torch.tensor(3.5), None, [], {}, (1, "a"), {2: None, "b": [()]}]):
        loaded, _, _ = load(save(tmp_path / f"{i}.frl", state, None))
        _assert_same_tree(state, loaded)
    assert float(load(tmp_path / "0.frl")[0]) == 3.5


def test_map_location_places_tensors(tmp_path):
    path = save(tmp_path / "m.frl", {"x": torch.ones(2, 3, dtype=torch.float64)}, None)
    state, _, _ = load(path, map_location="meta")
    assert state["x"].device.type == "meta" and state["x"].shape == (2, 3)
    assert state["x"].dtype == torch.float64
    state, _, _ = load(path, map_location=torch.device("cpu"))
    assert state["x"].device.type == "cpu" and float(state["x"].sum()) == 6.0


@pytest.mark.parametrize(
    "state, config, metadata, match",
    [
        ({"f": lambda: 0}, None, None, r"state\['f'\]"),
        (Inner(torch.ones(1), torch.ones(1), name=lambda: 0), None, None, r"state\.name \(static\)"),
        ({"s": {1, 2}}, None, None, "set"),
        ({"c": torch.zeros(2, dtype=torch.complex128)}, None, None, "complex128"),
        ({"x": torch.ones(1)}, None, {"t": (1, 2)}, "use a list"),
        ({"x": torch.ones(1)}, None, {1: 2}, "non-str key"),
        ({"x": torch.ones(1)}, {"not": "a config"}, None, "to_dict"),
    ],
)
def test_save_rejects_what_it_cannot_store(tmp_path, state, config, metadata, match):
    with pytest.raises(TypeError, match=match):
        save(tmp_path / "bad.frl", state, config, metadata)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- load errors
@pytest.fixture
def good(tmp_path) -> Path:
    return save(tmp_path / "good.frl", _make_state(), PPOConfig(num_envs=4), {"step": 5})


def test_all_errors_are_value_errors():
    for cls in (NotACheckpointError, TruncatedCheckpointError, CorruptCheckpointError,
                CheckpointVersionError, UnsafeCheckpointError, IncompatibleCheckpointError):
        assert issubclass(cls, CheckpointError) and issubclass(cls, ValueError)


def test_flipped_byte_in_tensor_region_is_corrupt(good):
    data = good.read_bytes()
    _, blob = _split(data)
    tensor_bytes_start = len(data) - len(blob) + 8 + struct.unpack("<Q", blob[:8])[0]
    positions = [tensor_bytes_start, (tensor_bytes_start + len(data)) // 2, len(data) - 1]
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 0x01
        good.write_bytes(bytes(bad))
        with pytest.raises(CorruptCheckpointError, match="SHA-256") as info:
            load(good)
        assert str(good) in str(info.value) and "earlier checkpoint" in str(info.value)
    good.write_bytes(data)
    assert load(good)[2] == {"step": 5}


def test_edited_static_value_is_corrupt(good):
    data = good.read_bytes()
    needle = b"actor_net"  # Inner.name, inside the hashed content string
    assert data.count(needle) == 1
    good.write_bytes(data.replace(needle, b"ACTOR_NET"))
    with pytest.raises(CorruptCheckpointError, match="SHA-256"):
        load(good)


def test_unreadable_header_is_corrupt_and_chained(good):
    data = bytearray(good.read_bytes())
    data[16] = ord("[")  # the header's opening brace
    good.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="not valid JSON") as info:
        load(good)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_trailing_bytes_are_corrupt(good):
    good.write_bytes(good.read_bytes() + b"\x00")
    with pytest.raises(CorruptCheckpointError, match="1 unexpected bytes"):
        load(good)


def test_truncated_files(good):
    data = good.read_bytes()
    (header_nbytes,) = struct.unpack("<Q", data[8:16])
    tensors_start = 16 + header_nbytes
    # Inside the magic, the length field, the header, at its end, inside the tensors, 1 short.
    cuts = [0, 3, 8, 15, 16, 16 + header_nbytes // 2, tensors_start, (tensors_start + len(data)) // 2, len(data) - 1]
    for cut in cuts:
        assert 0 <= cut < len(data)
        good.write_bytes(data[:cut])
        with pytest.raises(TruncatedCheckpointError, match="truncated") as info:
            load(good)
        assert str(good) in str(info.value)


def test_foreign_files_are_not_checkpoints(tmp_path):
    rng = random.Random(0)
    files = {
        "random.bin": bytes(rng.getrandbits(8) for _ in range(4096)),
        "plain.safetensors": safetensors.torch.save({"w": torch.ones(3)}),
        "text.frl": b"hello, world\n" * 10,
        "short.frl": b"\x00",
    }
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(NotACheckpointError, match="not a functional_rl checkpoint") as info:
            load(path)
        assert name in str(info.value)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.frl")


def test_newer_format_version_is_refused(good):
    header, blob = _split(good.read_bytes())
    assert header["format_version"] == ckpt.FORMAT_VERSION == 1
    header["format_version"] = ckpt.FORMAT_VERSION + 1
    good.write_bytes(_join(header, blob))
    with pytest.raises(CheckpointVersionError, match="version 2.*up to 1.*upgrade functional_rl"):
        load(good)


def test_class_outside_functional_rl_is_refused_without_importing(good, tmp_path, monkeypatch):
    # A module that would leave a trace if load imported it.
    marker = tmp_path / "imported.txt"
    (tmp_path / "frl_trap_module.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\nclass Trap: pass\ndef system(*a): pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for module, qualname in [("os", "system"), ("frl_trap_module", "Trap"), ("subprocess", "Popen")]:

        def edit(content, module=module, qualname=qualname):
            content["structure"]["module"] = module
            content["structure"]["qualname"] = qualname

        path = save(tmp_path / "t.frl", _make_state(), None)
        _rewrite_content(path, edit)
        with pytest.raises(UnsafeCheckpointError, match=f"{module}.{qualname}.*never imports") as info:
            load(path)
        assert str(path) in str(info.value)
    assert not marker.exists() and "frl_trap_module" not in sys.modules


@pytest.mark.parametrize(
    "module, qualname",
    [
        ("functional_rl.kernel.config", "PPOConfig"),  # a class, but not a pytree dataclass
        ("functional_rl.kernel.struct", "pytree_dataclass"),  # a function
        ("functional_rl.kernel.config", "os.system"),  # reached through a module attribute
        ("functional_rl.does_not_exist", "Thing"),
        ("functional_rl..config", "Hyperparams"),
    ],
)
def test_unknown_functional_rl_paths_are_refused(good, module, qualname):
    def edit(content):
        content["structure"]["fields"]["inner"]["module"] = module
        content["structure"]["fields"]["inner"]["qualname"] = qualname

    _rewrite_content(good, edit)
    with pytest.raises(UnsafeCheckpointError, match=r"state\.inner"):
        load(good)


def test_config_and_static_refs_outside_functional_rl_are_refused(good):
    original = good.read_bytes()

    def config_edit(content):
        content["config"]["module"], content["config"]["qualname"] = "os", "system"

    _rewrite_content(good, config_edit)
    with pytest.raises(UnsafeCheckpointError, match="config names class 'os.system'"):
        load(good)

    good.write_bytes(original)

    def ref_edit(content):
        content["structure"]["static"]["schedule"] = {"ref": {"module": "os", "qualname": "system"}}

    _rewrite_content(good, ref_edit)
    with pytest.raises(UnsafeCheckpointError, match=r"state\.schedule refers to 'os.system'"):
        load(good)


def test_changed_class_fields_are_incompatible(good):
    def edit(content):
        fields = content["structure"]["fields"]["inner"]["fields"]
        fields["weights"] = fields.pop("w")

    _rewrite_content(good, edit)
    with pytest.raises(IncompatibleCheckpointError, match=r"\['count', 'weights'\].*\['w', 'count'\]"):
        load(good)


def test_config_that_no_longer_validates_is_incompatible(good):
    def edit(content):
        content["config"]["values"]["gama"] = 0.5

    _rewrite_content(good, edit)
    with pytest.raises(IncompatibleCheckpointError, match="did you mean 'gamma'") as info:
        load(good)
    assert isinstance(info.value.__cause__, ValueError)


# ---------------------------------------------------------------------------- atomicity
class _HalfWriter:
    """A file object whose write puts 10 bytes on disk and then fails, like a full disk."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(bytes(data)[:10])
        self.f.flush()
        raise OSError("simulated write failure")


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, failing):
    path = checkpoint_path(tmp_path, 1)
    save(path, {"v": torch.tensor([1.0, 2.0])}, None, {"step": 1})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(f"simulated {failing} failure")

    if failing == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, *a, **k: _HalfWriter(real_fdopen(fd, *a, **k)))
    else:
        monkeypatch.setattr(ckpt.os, failing, boom)
    with pytest.raises(OSError, match=f"simulated {failing} failure"):
        save(path, {"v": torch.tensor([9.0, 9.0, 9.0])}, None, {"step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    state, _, metadata = load(path)
    assert metadata == {"step": 1} and torch.equal(state["v"], torch.tensor([1.0, 2.0]))


def test_latest_checkpoint_ordering(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for step in (3, 10, 2, 999):
        save(checkpoint_path(tmp_path, step), {"step": step}, None)
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_000000000999.frl"
    # Decoys: temp files, other extensions, unpadded names, a directory.
    (tmp_path / ".ckpt_000000005000.frl.0123abcd.tmp").write_bytes(b"partial")
    (tmp_path / "ckpt_000000006000.pt").write_bytes(b"x")
    (tmp_path / "ckpt_7000.frl").write_bytes(b"x")
    (tmp_path / "ckpt_000000008000.frl.bak").write_bytes(b"x")
    (tmp_path / "ckpt_000000009000.frl").mkdir()
    assert latest_checkpoint(tmp_path).name == "ckpt_000000000999.frl"
    # Steps past 12 digits still sort numerically, not as strings.
    save(checkpoint_path(tmp_path, 10**12), {"step": 10**12}, None)
    save(checkpoint_path(tmp_path, 2 * 10**11), {"step": 2 * 10**11}, None)
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "ckpt_1000000000000.frl" and load(latest)[0] == {"step": 10**12}


def test_checkpoint_path_validates_step(tmp_path):
    assert checkpoint_path(tmp_path, 0).name == "ckpt_000000000000.frl"
    assert checkpoint_path(str(tmp_path), 42) == tmp_path / "ckpt_000000000042.frl"
    for bad in (-1, True, 1.0, "3"):
        with pytest.raises(ValueError, match="non-negative int"):
            checkpoint_path(tmp_path, bad)


_SPAWNER = textwrap.dedent(
    """
    # Imports torch once, then forks one saving child per directory read from stdin, so
    # each SIGKILL trial costs a fork instead of a Python start-up.
    import os
    import signal
    import sys
    from pathlib import Path

    import torch
    from functional_rl.shell.checkpoint import checkpoint_path, save
    from functional_rl.kernel.config import Hyperparams, PPOConfig


    def save_forever(directory):
        torch.set_num_threads(1)
        config = PPOConfig(num_envs=4)
        hp = Hyperparams.from_config(config)
        step = 0
        while True:
            state = {"step": torch.tensor(step), "big": torch.full((512, 512), float(step)), "hp": hp}
            save(checkpoint_path(directory, step), state, config, {"step": step})
            save(directory / "latest.frl", state, config, {"step": step})
            if step >= 3:
                checkpoint_path(directory, step - 3).unlink()
            step += 1


    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed children are reaped by the kernel
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                save_forever(Path(line.strip()))
            finally:
                os._exit(1)
        print(pid, flush=True)
    """
)


def _check_killed_run(directory: Path) -> int:
    """The latest checkpoint of a killed child loads and holds its step's values."""
    latest = latest_checkpoint(directory)
    state, config, metadata = load(latest)
    step = metadata["step"]
    assert latest.name == checkpoint_path(directory, step).name
    assert int(state["step"]) == step and config == PPOConfig(num_envs=4)
    assert torch.equal(state["big"], torch.full((512, 512), float(step)))
    # Every completed name loads; the overwritten file holds this step or the one before.
    for path in directory.glob("ckpt_*.frl"):
        assert load(path)[2]["step"] <= step
    if step > 0 or (directory / "latest.frl").exists():  # killed before the first overwrite
        assert load(directory / "latest.frl")[2]["step"] in (step - 1, step)
    return step


def _wait_until(predicate, what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}; child stderr:\n{log.read_text()}"
        time.sleep(0.005)


def _is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(signal, "SIGKILL"), reason="needs fork and SIGKILL")
def test_sigkill_during_save_loop_leaves_a_loadable_latest(tmp_path):
    """16 children save in a loop and are SIGKILLed at random moments; the latest always loads."""
    script = tmp_path / "spawner.py"
    script.write_text(_SPAWNER)
    log = tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    rng = random.Random()
    steps = []
    with open(log, "w") as err:
        spawner = subprocess.Popen([sys.executable, str(script)], env=env, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    try:
        for trial in range(16):
            directory = tmp_path / f"run{trial}"
            directory.mkdir()
            spawner.stdin.write(f"{directory}\n")
            spawner.stdin.flush()
            line = spawner.stdout.readline()
            assert line.strip().isdigit(), f"spawner failed:\n{log.read_text()}"
            pid = int(line)
            _wait_until(lambda: latest_checkpoint(directory) is not None, "a first checkpoint", log)
            time.sleep(rng.uniform(0.0, 0.4))
            os.kill(pid, signal.SIGKILL)
            _wait_until(lambda: _is_gone(pid), "the killed child to exit", log, timeout=10.0)
            steps.append(_check_killed_run(directory))
    finally:
        spawner.kill()
        spawner.wait()
        spawner.stdin.close()
        spawner.stdout.close()
    assert len(steps) == 16 and max(steps) > min(steps) >= 0  # killed at different points
