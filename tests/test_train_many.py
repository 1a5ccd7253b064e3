"""train_many: agent i equals the single run with its seed and hyperparameters; no recompiles."""

import pytest
import torch
import torch.utils._pytree as pytree

import functional_rl as frl
from functional_rl.shell.batched import agent_grid, make_agents_kernel, stack_states, unstack_state

CFG = frl.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=2, total_timesteps=64 * 3)
GRID = {"learning_rate": [1e-3, 3e-4], "ent_coef": [0.0, 0.02]}


def tensors(tree):
    return [x for x in pytree.tree_leaves(tree) if isinstance(x, torch.Tensor)]


def test_agent_grid_is_point_major_and_validates_names():
    agents = agent_grid([5, 6], {"learning_rate": [1e-3, 3e-4]})
    assert agents == [
        {"seed": 5, "learning_rate": 1e-3}, {"seed": 6, "learning_rate": 1e-3},
        {"seed": 5, "learning_rate": 3e-4}, {"seed": 6, "learning_rate": 3e-4},
    ]
    assert agent_grid([1], [{"gamma": 0.9}, {"gamma": 0.5}]) == [{"seed": 1, "gamma": 0.9}, {"seed": 1, "gamma": 0.5}]
    with pytest.raises(ValueError, match="cannot sweep 'num_envs'"):
        agent_grid([0], {"num_envs": [4, 8]})
    with pytest.raises(ValueError, match="learning_rate=-1.0 is invalid"):
        frl.train_many(CFG, seeds=[0], hparams={"learning_rate": [-1.0]}, compile=False)


def test_each_agent_equals_its_single_run():
    states, histories = frl.train_many(CFG, seeds=[0, 1], hparams=GRID, compile=False)
    agents = agent_grid([0, 1], GRID)
    assert len(histories) == 8 and all(len(h) == 3 for h in histories)
    for i, agent in enumerate(agents):
        single, history = frl.functional_training_loop(CFG.replace(**agent), compile=False)
        mine = unstack_state(states, i)
        for a, b in zip(tensors(single), tensors(mine)):
            if a.is_floating_point():
                # Not bitwise: the batched matmuls (bmm) round differently from the single ones (mm).
                assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
            else:
                # Keys, counters, actions and env steps: bit for bit.
                assert torch.equal(a, b)
        assert histories[i][-1]["seed"] == agent["seed"]
        assert histories[i][-1]["value_loss"] == pytest.approx(history[-1]["value_loss"], rel=1e-5)
        assert histories[i][-1]["learning_rate"] == pytest.approx(history[-1]["learning_rate"], rel=1e-6)
    # The agents really differ from each other.
    assert not torch.allclose(tensors(unstack_state(states, 0).learner.params)[0], tensors(unstack_state(states, 1).learner.params)[0])


@pytest.fixture(scope="module")
def compiled_agents():
    env = frl.envs.make(CFG.env_id)
    policy = frl.make_mlp_policy(env.observation_space, env.action_space)
    agents = agent_grid([0, 1, 2, 3])
    kernel = make_agents_kernel(CFG, env, policy, compile=True)
    return stack_states(CFG, env, policy, agents), kernel


def test_compiled_agents_match_eager_and_never_recompile(compiled_agents):
    states, kernel = compiled_agents
    eager = make_agents_kernel(CFG, kernel.env, kernel.policy, compile=False)
    s_c, _ = frl.train_iteration(states, kernel)
    s_e, _ = frl.train_iteration(states, eager)
    for a, b in zip(tensors(s_c), tensors(s_e)):
        assert torch.allclose(a.double(), b.double(), atol=1e-5, rtol=1e-4)
    # A new learning rate per agent (and the lr schedule moving) must not recompile.
    swept = s_c.replace(learner=s_c.learner.replace(hparams=s_c.learner.hparams.replace(learning_rate=torch.tensor([1e-3, 2e-3, 3e-3, 4e-3]))))
    with torch.compiler.set_stance("fail_on_recompile"):
        s2, m = frl.train_iteration(swept, kernel)
        s3, m = frl.train_iteration(s2, kernel)
    assert m["learning_rate"].shape == (4,) and int(s3.iteration[0]) == 3


def test_the_one_call_rollout_trains_the_same_agents():
    """``scan_rollout=True`` vmaps the one-call rollout: same keys, actions and env steps bit
    for bit, floats to rounding (the critic's batched matmuls)."""
    a, ha = frl.train_many(CFG, seeds=[0, 1], hparams={"learning_rate": [1e-3, 3e-4]}, compile=False)
    b, hb = frl.train_many(CFG, seeds=[0, 1], hparams={"learning_rate": [1e-3, 3e-4]}, compile=False, scan_rollout=True)
    for x, y in zip(tensors(a), tensors(b)):
        if x.is_floating_point():
            assert torch.allclose(x, y, atol=1e-6, rtol=1e-5)
        else:
            assert torch.equal(x, y)
    assert [h[-1]["episode_return"] for h in ha] == [h[-1]["episode_return"] for h in hb]


@pytest.mark.slow
def test_compiled_one_call_rollout_of_agents_matches_eager_and_never_recompiles():
    env = frl.envs.make(CFG.env_id)
    policy = frl.make_mlp_policy(env.observation_space, env.action_space)
    states = stack_states(CFG, env, policy, agent_grid([0, 1, 2]))
    compiled = make_agents_kernel(CFG, env, policy, compile=True, scan_rollout=True)
    eager = make_agents_kernel(CFG, env, policy, compile=False, scan_rollout=True)
    s_c, traj_c = compiled.rollout(states)
    s_e, traj_e = eager.rollout(states)
    assert traj_c.batch_size == (CFG.num_steps, 3, CFG.num_envs)
    assert torch.equal(traj_c["action"], traj_e["action"]) and torch.equal(s_c.key, s_e.key)
    for k in traj_e.keys():
        assert torch.allclose(traj_c[k].double(), traj_e[k].double(), atol=1e-5, rtol=1e-4), k
    swept = s_c.replace(learner=s_c.learner.replace(hparams=s_c.learner.hparams.replace(learning_rate=torch.tensor([1e-3, 2e-3, 3e-3]))))
    with torch.compiler.set_stance("fail_on_recompile"):
        s2, _ = compiled.rollout(swept)
    assert s2.agent_step.tolist() == [2 * CFG.batch_size] * 3


def test_schedules_scale_each_agents_own_base_value():
    cfg = CFG.replace(schedules={"ent_coef": "linear:end=0"})
    states, histories = frl.train_many(cfg, seeds=[0], hparams={"ent_coef": [0.01, 0.04]}, compile=False)
    for base, history in zip((0.01, 0.04), histories):
        got = [h["schedule/ent_coef"] for h in history]
        want = [base * (1 - i * cfg.batch_size / cfg.total_timesteps) for i in range(len(history))]
        assert got == pytest.approx(want, rel=1e-5), (got, want)
    assert states.learner.hparams.ent_coef.tolist() == pytest.approx([0.01, 0.04])
