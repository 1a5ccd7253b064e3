"""functional_rl: a functional, stateless RL training kernel in PyTorch.

Where things are: ``functional_rl.kernel`` (pure functions over immutable state),
``functional_rl.envs`` (pure environments and host-simulator adapters),
``functional_rl.shell`` (the side effects: building and compiling the step functions, the
loop, callbacks, checkpoints, CLI, torchrun) and ``functional_rl.compat`` (the reference
trainer's surface). The kernel and the envs never import the shell or compat.

Pure steps (``rollout_step``, ``compute_advantages``, ``ppo_loss``, ``train_epoch``,
``train_iteration``) over an immutable :class:`TrainerState` pytree, composed by the thin
impure shell :func:`functional_training_loop`.
"""

from functional_rl import envs
from functional_rl.compat import components, training_config
from functional_rl.kernel import curriculum, optim, pbt, random, schedules
from functional_rl.shell import callbacks, checkpoint, distributed, policy_store, presets
from functional_rl.kernel.advantages import compute_advantages, compute_advantages_reference
from functional_rl.kernel.vtrace import compute_vtrace
from functional_rl.kernel.config import Hyperparams, PPOConfig, learning_rate_at
from functional_rl.kernel.distributions import Categorical, DiagGaussian, MultiCategorical
from functional_rl.shell.loop import NonFiniteError, functional_training_loop, train_many
from functional_rl.shell.population import train_population
from functional_rl.kernel.losses import kickstart_loss, ppo_loss
from functional_rl.kernel.policies import Policy, make_cnn_policy, make_mlp_policy, make_multi_input_policy, make_policy
from functional_rl.kernel.recurrent import make_recurrent_policy
from functional_rl.kernel.rollout import rollout, rollout_step
from functional_rl.kernel.state import EnvsState, LearnerState, TrainerState, init_state
from functional_rl.kernel.struct import pytree_dataclass, static_field
from functional_rl.kernel.iteration import StepFns, train_epoch, train_iteration
from functional_rl.kernel.update import update_minibatch
from functional_rl.shell.build import make_kernel

Kernel = StepFns  # the earlier name of the step-function bundle

__version__ = "0.1.0"

__all__ = [
    "callbacks",
    "checkpoint",
    "components",
    "curriculum",
    "distributed",
    "policy_store",
    "presets",
    "training_config",
    "Categorical",
    "DiagGaussian",
    "MultiCategorical",
    "Hyperparams",
    "EnvsState",
    "Kernel",
    "LearnerState",
    "StepFns",
    "NonFiniteError",
    "PPOConfig",
    "Policy",
    "TrainerState",
    "compute_advantages",
    "compute_vtrace",
    "compute_advantages_reference",
    "envs",
    "functional_training_loop",
    "init_state",
    "learning_rate_at",
    "make_kernel",
    "make_cnn_policy",
    "make_mlp_policy",
    "make_multi_input_policy",
    "make_policy",
    "make_recurrent_policy",
    "optim",
    "pbt",
    "train_population",
    "ppo_loss",
    "kickstart_loss",
    "pytree_dataclass",
    "random",
    "rollout",
    "rollout_step",
    "schedules",
    "static_field",
    "train_epoch",
    "train_iteration",
    "train_many",
    "update_minibatch",
]
