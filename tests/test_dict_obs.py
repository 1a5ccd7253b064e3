"""Dict observations: the Dict space (one flat tensor with named parts), per-key encoders,
records of Dict spaces, the gymnasium adapter's Dict/Tuple spaces, and learning."""

from __future__ import annotations

import math

import pytest
import torch

import functional_rl as frl
import functional_rl.kernel.random as jr
from functional_rl.envs import Box, Catch, Dict, Discrete, make
from functional_rl.kernel.config import PPOConfig
from functional_rl.kernel.policies import make_multi_input_policy, make_policy, policy_from_spec

IMAGE = Box((0.0,) * 50, (255.0,) * 50, (2, 5, 5), torch.uint8)
SPACE = Dict.of({"view": IMAGE, "goal": Box((-1.0,) * 3, (1.0,) * 3, (3,))})


class CatchWithColumn(Catch):
    """Catch observing ``{"pixels": the image, "column": one-hot of the paddle's column}``:
    a pure env with a Dict observation."""

    id = "CatchWithColumn-v0"

    def __init__(self):
        super().__init__()
        base = self.observation_space
        cols = base.shape[-1]
        self.observation_space = Dict.of({"pixels": base, "column": Box((0.0,) * cols, (1.0,) * cols, (cols,))})

    def get_obs(self, state, params):
        pixels = super().get_obs(state, params)
        column = pixels[:, 0, -1, :]  # the paddle's row
        return self.observation_space.join({"pixels": pixels, "column": column})


def test_split_and_join_invert_each_other_and_the_space_is_a_flat_box():
    parts = {"view": torch.randint(0, 256, (4, 2, 5, 5)).float(), "goal": torch.rand(4, 3)}
    flat = SPACE.join(parts)
    assert flat.shape == (4, 53) and SPACE.shape == (53,) and isinstance(SPACE, Box)
    back = SPACE.split(flat)
    assert torch.equal(back["view"], parts["view"]) and torch.equal(back["goal"], parts["goal"])
    assert SPACE.split(flat.reshape(2, 2, 53))["view"].shape == (2, 2, 2, 5, 5)  # any leading dims
    with pytest.raises(ValueError, match="distinct names"):
        Dict.of([("a", IMAGE), ("a", IMAGE)])
    with pytest.raises(ValueError, match="must be a Box"):
        Dict.of({"inner": SPACE})


def test_each_part_has_its_own_encoder():
    policy = make_multi_input_policy(SPACE, Discrete(4), hidden_sizes=(16,), key_features=8)
    params = policy.init(jr.key(0))
    assert params["encoders"]["goal"][0]["w"].shape == (8, 3)
    assert params["encoders"]["view"][0]["w"].shape[1] == 2  # a conv over the image's 2 channels
    x = SPACE.join({"view": torch.randint(0, 256, (5, 2, 5, 5)).float(), "goal": torch.rand(5, 3)})
    out = policy.apply(params, x)
    # The image part is scaled from uint8: changing a pixel by 255 moves its features as 1.0 would.
    changed = x.clone()
    changed[:, 50:] += 0.5  # only the goal
    assert not torch.allclose(policy.apply(params, changed)["logits"], out["logits"])
    assert torch.allclose(policy.value(params, x), out["value"])
    # Zeroing the goal's encoder leaves the output blind to the goal.
    blind = {**params, "encoders": {**params["encoders"], "goal": [{"w": torch.zeros(8, 3), "b": torch.zeros(8)}]}}
    assert torch.allclose(policy.apply(blind, changed)["logits"], policy.apply(blind, x)["logits"])
    with pytest.raises(TypeError, match="needs a Dict observation space"):
        make_multi_input_policy(IMAGE, Discrete(4))


def test_records_keep_the_dict_space_and_rebuild_the_policy(tmp_path):
    from functional_rl.shell.policy_store import PolicyStore, decode_space, encode_space

    assert decode_space(encode_space(SPACE)) == SPACE
    policy = make_policy("multi_input", SPACE, Discrete(4), (16,), obs_dim_extra=4)
    assert policy_from_spec(policy.spec, SPACE, Discrete(4)).spec == policy.spec
    env = CatchWithColumn()
    pol = make_policy("multi_input", env.observation_space, env.action_space, (16,))
    store = PolicyStore(tmp_path)
    params = pol.init(jr.key(0))
    store.save("catch", params, pol, env=env)
    record = store.load("catch")
    assert record.observation_space == env.observation_space
    x = torch.rand(3, math.prod(env.observation_space.shape))
    assert torch.equal(record.make_policy().apply(record.params, x)["logits"], pol.apply(params, x)["logits"])


def test_gymnasium_dict_observations_keep_their_parts():
    gym = pytest.importorskip("gymnasium")
    from functional_rl.envs.gymnasium_adapter import GymnasiumEnv

    class DictEnv(gym.Env):
        observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (1, 4, 4), dtype="uint8"),
            "nested": gym.spaces.Dict({"pos": gym.spaces.Box(-1.0, 1.0, (2,)), "mode": gym.spaces.Discrete(3)}),
        })
        action_space = gym.spaces.Discrete(2)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 1.0, False, False, {}

    vec = gym.vector.SyncVectorEnv([DictEnv] * 2, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    env = GymnasiumEnv(vec, "DictEnv-v0")
    space = env.observation_space
    assert isinstance(space, Dict) and [n for n, _ in space.parts] == ["image", "nested.mode", "nested.pos"]  # gymnasium sorts Dict keys
    assert dict(space.parts)["image"].dtype == torch.uint8 and dict(space.parts)["image"].shape == (1, 4, 4)
    obs, _ = env.reset(jr.key(0), None, 2)
    assert obs.shape == (2, 16 + 2 + 3) and torch.equal(space.split(obs)["nested.mode"].sum(-1), torch.ones(2))
    policy = make_policy("multi_input", space, env.action_space, (8,))
    assert policy.apply(policy.init(jr.key(0)), obs)["logits"].shape == (2, 2)
    env.close()


def test_per_key_encoders_learn_catch_from_a_dict_observation():
    """Catch with the paddle's column as a second part: 20k steps, the multi-input policy
    catches most balls, as the CNN does on the image alone."""
    cfg = PPOConfig(env_id="Catch-v0", policy="multi_input", hidden_sizes=(64,), num_envs=16, num_steps=20,
                    num_minibatches=2, update_epochs=4, total_timesteps=20_000, learning_rate=1e-3)
    _, history = frl.functional_training_loop(cfg, env=CatchWithColumn(), compile=False)
    final = sum(h["episode_return"] for h in history[-5:]) / 5
    assert final >= 0.8, final
