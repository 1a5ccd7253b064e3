"""benchmarks/gpu.py: its CPU dry run end to end (eager rows, tiny sizes), a failed row shown in
the table, and the exit without CUDA. No timing is asserted."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=180)


def test_cpu_dry_run_prints_the_table_and_writes_nothing():
    before = RESULTS.read_text() if RESULTS.exists() else None
    p = run_script("--device", "cpu", "--quick", "--no-write", "--eager-only", "--envs", "8,16",
                   "--iterations", "1", "--seconds", "0", "--warmup", "1")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "| envs x steps | mode | env steps/s | vs eager |" in p.stdout
    rows = [line for line in p.stdout.splitlines() if line.startswith(("| 8 x 128 |", "| 16 x 128 |"))]
    assert len(rows) == 2, p.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "eager" and float(cells[2].replace(",", "")) > 0 and cells[3] == "1.00x", row
    assert "Machine: " in p.stdout
    assert (RESULTS.read_text() if RESULTS.exists() else None) == before


def test_a_failed_row_shows_its_error_in_the_table(tmp_path):
    # A CUDA row on a machine without CUDA fails in the child; with CUDA an unknown device index does.
    device = "cuda:9999" if torch.cuda.is_available() else "cuda"
    spec = {"num_envs": 8, "num_steps": 128, "mode": "eager", "device": device, "warmup": 0, "seconds": 0, "iterations": 1}
    result = gpu.run_row(spec, timeout=120, cache_dir=str(tmp_path))
    assert "error" in result and "sps" not in result
    text = gpu.report([spec], [result])
    assert "| 8 x 128 | eager | failed: " in text, text


def test_without_cuda_the_script_exits_2_with_one_line():
    if not torch.cuda.is_available():
        p = run_script("--no-write")
        assert p.returncode == 2
        assert p.stdout == ""
        assert p.stderr.count("\n") == 1 and "CUDA is not available" in p.stderr and "--device cpu" in p.stderr
    else:
        assert gpu.require_device("cuda") is None  # no exit where there is a GPU


def test_rollout_lengths_follow_the_scaling_points():
    assert [gpu.num_steps_for(n) for n in (1, 8, 16, 511, 512, 4096, 10_000)] == [128, 128, 128, 128, 32, 16, 16]


def test_envs_must_be_positive_integers():
    assert gpu.parse_envs("8,512") == [8, 512]
    for bad in ("", "8,x", "0", "-4"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integers"):
            gpu.parse_envs(bad)
