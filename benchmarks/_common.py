"""Shared helpers for the benchmark scripts: machine facts and RESULTS.md output."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine_line() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = f"python {platform.python_version()}, torch {torch.__version__}"
    try:
        import tensordict

        versions += f", tensordict {tensordict.__version__}"
    except ImportError:
        pass
    gpu = ""
    if torch.cuda.is_available():
        gpu = f"; GPU {torch.cuda.get_device_name()} ({torch.cuda.device_count()} visible), CUDA {torch.version.cuda}"
    return f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}{gpu}; {versions}"


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def append_results(title: str, body: str) -> None:
    """Append a dated section to benchmarks/RESULTS.md (newest last)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = "# Benchmark results\n\nEach section is one run of a script in this folder; numbers are from that run only.\n" if not RESULTS.exists() else ""
    section = f"\n## {title} — {stamp}\n\nMachine: {machine_line()}. Commit {git_rev()}. Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`\n\n{body}\n"
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(header + section)


def compile_cache_env(root: str) -> dict[str, str]:
    """Environment variables that give a child process an inductor cache of its own under
    ``root``: ``TORCHINDUCTOR_CACHE_DIR``, and ``TMPDIR``, because inductor keeps its
    precompiled C++ headers under ``tempfile.gettempdir()`` rather than in that cache
    (torch 2.13: ``<tmp>/torchinductor_<user>/precompiled_headers``). With only the first, a
    "cold" run still found the headers an earlier run had built: about 5 s per header on a
    2-core CPU, two headers before the kernel shared one. An empty ``root`` is a fresh machine;
    the same ``root`` again is a warm cache."""
    paths = {"TORCHINDUCTOR_CACHE_DIR": os.path.join(root, "inductor"), "TMPDIR": os.path.join(root, "tmp")}
    for path in paths.values():
        os.makedirs(path, exist_ok=True)
    return paths
