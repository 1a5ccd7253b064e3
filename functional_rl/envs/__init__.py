"""Pure environments and the registry: ``make(env_id)``, ``list_envs()``.

See :mod:`functional_rl.envs.base` for the ``(reset, step)`` contract and the
:class:`Environment` base class the built-in envs are written on.
"""

from functional_rl.envs.base import (
    Box,
    Dict,
    Discrete,
    MultiDiscrete,
    action_width,
    Env,
    Environment,
    EnvStep,
    UnknownEnvError,
    env_keys,
    list_envs,
    make,
    register,
)
from functional_rl.envs.acrobot import Acrobot, AcrobotParams, AcrobotState
from functional_rl.envs.gymnasium_adapter import EnvInputError, GymnasiumEnv, from_gymnasium
from functional_rl.envs.pettingzoo_adapter import PettingZooEnv, from_pettingzoo
from functional_rl.envs.cartpole import CartPole, CartPoleParams, CartPoleState
from functional_rl.envs.catch import Catch, CatchParams, CatchState
from functional_rl.envs.memory import CartPoleNoVelocity, MemoryCue, MemoryCueParams, MemoryCueState
from functional_rl.envs.masked import MaskedChoice, MaskedChoiceParams, MaskedChoiceState
from functional_rl.envs.mountain_car import MountainCar, MountainCarContinuous, MountainCarParams, MountainCarState
from functional_rl.envs.pendulum import Pendulum, PendulumParams, PendulumState
from functional_rl.envs import mettagrid as _mettagrid
from functional_rl.envs.probes import Probe1, Probe2, Probe3, Probe4, Probe5, ProbeParams, ProbeState

__all__ = [
    "EnvInputError",
    "GymnasiumEnv",
    "from_gymnasium",
    "PettingZooEnv",
    "from_pettingzoo",
    "Box",
    "Dict",
    "Discrete",
    "MultiDiscrete",
    "action_width",
    "Env",
    "Environment",
    "EnvStep",
    "UnknownEnvError",
    "env_keys",
    "list_envs",
    "make",
    "register",
    "Acrobot",
    "AcrobotParams",
    "AcrobotState",
    "CartPole",
    "CartPoleParams",
    "CartPoleState",
    "CartPoleNoVelocity",
    "Catch",
    "CatchParams",
    "CatchState",
    "MemoryCue",
    "MemoryCueParams",
    "MemoryCueState",
    "MaskedChoice",
    "MaskedChoiceParams",
    "MaskedChoiceState",
    "MountainCar",
    "MountainCarContinuous",
    "MountainCarParams",
    "MountainCarState",
    "Pendulum",
    "PendulumParams",
    "PendulumState",
    "Probe1",
    "Probe2",
    "Probe3",
    "Probe4",
    "Probe5",
    "ProbeParams",
    "ProbeState",
]

for _id in _mettagrid.MAKERS:  # built lazily: mettagrid is imported only when one is made
    register(_id, _mettagrid._factory(_id), host=True)
