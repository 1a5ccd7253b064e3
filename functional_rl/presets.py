"""Named configurations.

Example:
    >>> small_fast_config().total_timesteps
    50000
"""

from __future__ import annotations

from functional_rl.config import PPOConfig

__all__ = ["cartpole_config", "small_fast_config", "PRESETS"]


def cartpole_config(**overrides) -> PPOConfig:
    """CleanRL's CartPole-v1 PPO settings (the :class:`PPOConfig` defaults)."""
    return PPOConfig(**overrides)


def small_fast_config(**overrides) -> PPOConfig:
    """A quick run for smoke tests and notebooks: CartPole, 50k steps, 1 epoch more per batch.

    Uses a higher learning rate (1e-3) and 2 minibatches, which learns CartPole to a return of
    a few hundred within 50k steps.
    """
    base = dict(total_timesteps=50_000, num_envs=8, num_steps=64, num_minibatches=2, update_epochs=4, learning_rate=1e-3)
    return PPOConfig(**{**base, **overrides})


PRESETS = {"cartpole": cartpole_config, "small_fast": small_fast_config}
