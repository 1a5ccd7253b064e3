"""Pure environments and the registry: ``make(env_id)``, ``list_envs()``.

See :mod:`functional_rl.envs.base` for the ``(reset, step)`` contract.
"""

from functional_rl.envs.base import Box, Discrete, Env, UnknownEnvError, list_envs, make, register
from functional_rl.envs.cartpole import CartPole, CartPoleParams, CartPoleState

__all__ = [
    "Box",
    "Discrete",
    "Env",
    "UnknownEnvError",
    "list_envs",
    "make",
    "register",
    "CartPole",
    "CartPoleParams",
    "CartPoleState",
]
