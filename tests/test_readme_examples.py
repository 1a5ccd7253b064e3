"""The README's "Policies and spaces" examples run as written (one namespace, in order, as a
reader pasting them into a notebook would)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _run_single_example(title: str) -> dict:
    """Execute the one ``python`` block of a README section; return its namespace."""
    blocks = re.findall(r"```python\n(.*?)```", _section(title), re.S)
    assert len(blocks) == 1, len(blocks)
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    return namespace


def test_policies_and_spaces_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", _section("Policies and spaces"), re.S)
    assert len(blocks) == 5, len(blocks)
    namespace: dict = {}
    results = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), namespace)
        results[len(results)] = namespace["state"]
    assert results[0].envs.carry.shape == (16, 128)
    assert results[1].learner.params["conv"][0]["w"].shape[0] == 16
    assert torch.isfinite(results[2].learner.params["actor"][0]["w"]).all()
    assert sorted(results[3].learner.params["encoders"]) == ["paddle", "pixels"]
    assert results[4].envs.carry.shape == (8, 128) and int(results[4].agent_step) == 2048


def test_algorithm_options_example_runs():
    namespace = _run_single_example("Algorithm options: optimizers, V-trace, schedules, value clip, prioritized minibatches, kickstarting")
    history = namespace["history"]
    assert len(history) == 4 and history[-1]["schedule/ent_coef"] < history[0]["schedule/ent_coef"]
    assert history[0]["learning_rate"] < history[1]["learning_rate"]  # the warmup
    second = namespace["history2"]
    assert [round(h["schedule/prio_beta0"], 4) for h in second] == [0.4, 0.55, 0.7, 0.85]
    assert [h["schedule/kickstart_coef"] for h in second] == [1.0, 0.5, 0.0, 0.0]
    assert second[0]["kickstart/kl"] > 0 and "kickstart/value_mse" in second[-1]


def test_population_based_training_example_runs():
    result = _run_single_example("Population-based training in one process")["result"]
    assert len(result.histories) == 4 and len(result.lineage) == 7  # one copy after iterations 4, ..., 28
    assert result.best in range(4)
