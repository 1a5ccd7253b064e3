"""Learning: CartPole reaches the solved threshold with the default (CleanRL) config."""

import math

import pytest

import functional_rl as frl
from functional_rl.shell.presets import acrobot_config, pendulum_config


def best_windowed_return(history, window=10):
    """Max over the run of the mean return of all episodes that ended in `window` consecutive
    iterations (each iteration's mean weighted by its episode count)."""
    best = -math.inf
    for i in range(len(history) - window + 1):
        rows = [h for h in history[i : i + window] if h["episodes"] > 0]
        n = sum(h["episodes"] for h in rows)
        if n >= 8:
            best = max(best, sum(h["episode_return"] * h["episodes"] for h in rows) / n)
    return best


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cartpole_reaches_475_within_500k_steps(seed):
    config = frl.PPOConfig(seed=seed, total_timesteps=500_000)
    state, history = frl.functional_training_loop(config, compile=True)
    assert int(state.agent_step) <= 500_000
    best = best_windowed_return(history)
    assert best >= 475.0, f"seed {seed}: best 10-iteration mean return {best:.1f} < 475"


@pytest.mark.slow
def test_pendulum_reaches_minus_400_within_500k_steps():
    state, history = frl.functional_training_loop(pendulum_config(seed=1, total_timesteps=500_000), compile=True)
    assert int(state.agent_step) <= 500_000
    best = best_windowed_return(history)
    assert best >= -400.0, f"best 10-iteration mean return {best:.1f} < -400"


@pytest.mark.slow
def test_acrobot_reaches_minus_100_within_500k_steps():
    state, history = frl.functional_training_loop(acrobot_config(seed=1, total_timesteps=500_000), compile=True)
    best = best_windowed_return(history)
    assert best >= -100.0, f"best 10-iteration mean return {best:.1f} < -100"
