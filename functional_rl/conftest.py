"""The shared doctest fixture: the names every docstring example may use without building them.

``cfg`` is a tiny :class:`~functional_rl.kernel.config.PPOConfig` (2 envs x 4 steps, 2
minibatches, 1 epoch, one hidden layer of 8); ``env`` the pure CartPole-v1; ``policy`` the
MLP actor-critic for it; ``state`` a fresh :class:`~functional_rl.kernel.state.TrainerState`
of seed 1. Also ``torch``, ``frl`` (``import functional_rl as frl``) and ``jr``
(``functional_rl.kernel.random``). Equivalent to::

    import torch
    import functional_rl as frl
    import functional_rl.kernel.random as jr
    from functional_rl.envs import make

    cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2, update_epochs=1, hidden_sizes=(8,))
    env = make(cfg.env_id)
    policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
    state = frl.init_state(cfg, env, policy)

The state is immutable, so every example can start from the same one.
"""

import pytest


@pytest.fixture(autouse=True)
def _doctest_fixture(doctest_namespace):
    import torch

    import functional_rl as frl
    import functional_rl.kernel.random as jr
    from functional_rl.envs import make

    cfg = frl.PPOConfig(num_envs=2, num_steps=4, num_minibatches=2, update_epochs=1, hidden_sizes=(8,))
    env = make(cfg.env_id)
    policy = frl.make_mlp_policy(env.observation_space, env.action_space, hidden_sizes=cfg.hidden_sizes)
    doctest_namespace.update(torch=torch, frl=frl, jr=jr, cfg=cfg, env=env, policy=policy, state=frl.init_state(cfg, env, policy))
