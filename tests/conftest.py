"""Shared fixtures. Compiled kernels are built once per module (compiling is slow on CPU)."""

import os

import pytest
import torch

# One intra-op thread: as fast as two on this size of problem, and part of inductor's cache key.
torch.set_num_threads(1)

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", deadline=None, max_examples=60, derandomize=True)
settings.register_profile("dev", deadline=None, max_examples=40)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def cartpole():
    from functional_rl.envs import make

    return make("CartPole-v1")
