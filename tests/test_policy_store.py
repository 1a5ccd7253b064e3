"""Policy records: save, select by URI (latest / best), rebuild a policy that acts identically."""

import math

import pytest
import torch

import functional_rl.kernel.random as jr
from functional_rl.shell import checkpoint
from functional_rl.envs import make
from functional_rl.envs.base import Box, Discrete
from functional_rl.kernel.policies import make_mlp_policy
from functional_rl.shell.policy_store import (
    RECORD_KIND,
    PolicyStore,
    PolicyStoreError,
    decode_space,
    encode_space,
)

# (name, agent_step, epoch, eval_score): the latest is "c" (step 300); the best is "b" (score 31.5).
RECORDS = [("a", 100, 1, 12.0), ("b", 200, 2, 31.5), ("c", 300, 3, 20.25)]


@pytest.fixture(scope="module")
def cartpole():
    env = make("CartPole-v1")
    return env, make_mlp_policy(env.observation_space, env.action_space, (16, 16))


@pytest.fixture(scope="module")
def pendulum():
    env = make("Pendulum-v1")
    return env, make_mlp_policy(env.observation_space, env.action_space, (8,), activation="relu")


def fill(store, env, policy):
    """Save RECORDS, params from key(agent_step); return {name: params}."""
    saved = {}
    for name, step, epoch, score in RECORDS:
        params = policy.init(jr.key(step))
        record = store.save(name, params, policy, {"agent_step": step, "epoch": epoch, "eval_score": score}, env=env)
        assert record.uri == (store.root / f"{name}.frl").as_uri()
        saved[name] = params
    return saved


def random_obs(env, n=64):
    # Random observations spanning several units; the policies' outputs must match bit for bit.
    return 3.0 * jr.normal(jr.key(99), (n, *env.observation_space.shape))


def test_select_latest_and_best_by_uri(tmp_path, cartpole):
    env, policy = cartpole
    store = PolicyStore(tmp_path / "store")
    fill(store, env, policy)
    uri = (tmp_path / "store").as_uri()
    assert store.uri == uri
    assert store.load(uri).name == "c"  # default: latest = highest agent_step (300)
    assert store.load(uri + "?select=latest").agent_step == 300
    best = store.load(uri + "?select=best")
    assert (best.name, best.eval_score, best.agent_step, best.epoch) == ("b", 31.5, 200, 2)
    # Any numeric metadata key can be the metric: the highest epoch is record "c" (3).
    assert store.load(uri + "?select=best&metric=epoch").name == "c"
    assert store.load((tmp_path / "store" / "a.frl").as_uri()).agent_step == 100
    assert store.load("a").eval_score == 12.0  # by name
    assert store.load(str(tmp_path / "store" / "b.frl")).epoch == 2  # by path
    assert [r.name for r in store.list()] == ["a", "b", "c"]
    assert [r.agent_step for r in store.list()] == [100, 200, 300]


def test_best_skips_records_without_the_metric_and_breaks_ties_by_step(tmp_path, cartpole):
    env, policy = cartpole
    store = PolicyStore(tmp_path)
    params = policy.init(jr.key(0))
    store.save("no_score", params, policy, {"agent_step": 900}, env=env)
    store.save("nan_score", params, policy, {"agent_step": 800, "eval_score": math.nan}, env=env)
    store.save("tie_early", params, policy, {"agent_step": 10, "eval_score": 5.0}, env=env)
    store.save("tie_late", params, policy, {"agent_step": 20, "eval_score": 5.0}, env=env)
    assert store.load(store.uri + "?select=best").name == "tie_late"
    assert store.load(store.uri).name == "no_score"


@pytest.mark.parametrize("which", ["cartpole", "pendulum"])
def test_loaded_policy_acts_bit_for_bit_like_the_original(tmp_path, which, request):
    env, policy = request.getfixturevalue(which)
    store = PolicyStore(tmp_path)
    saved = fill(store, env, policy)
    obs = random_obs(env)
    for name, params in saved.items():
        record = store.load(name)
        rebuilt = record.make_policy()
        assert rebuilt.spec == policy.spec
        assert record.observation_space == env.observation_space and record.action_space == env.action_space
        for k, v in policy.apply(params, obs).items():
            assert torch.equal(rebuilt.apply(record.params, obs)[k], v), k
        greedy = policy.distribution.mode(policy.apply(params, obs))
        assert torch.equal(rebuilt.distribution.mode(rebuilt.apply(record.params, obs)), greedy)
        assert torch.equal(rebuilt.value(record.params, obs), policy.value(params, obs))
    # Different records really hold different params: the greedy actions/means differ somewhere.
    a, c = (store.load(n) for n in ("a", "c"))
    out_a, out_c = a.make_policy().apply(a.params, obs), c.make_policy().apply(c.params, obs)
    assert not torch.equal(out_a["value"], out_c["value"])


def test_discrete_greedy_actions_have_both_values(tmp_path, cartpole):
    # Guard against a vacuous equality: the greedy actions over random obs are not all equal.
    env, policy = cartpole
    store = PolicyStore(tmp_path)
    params = policy.init(jr.key(5))
    params["actor"][-1]["w"] = params["actor"][-1]["w"] * 100  # a decisive head
    store.save("p", params, policy, {"agent_step": 1}, env=env)
    record = store.load("p")
    actions = record.make_policy().distribution.mode(record.make_policy().apply(record.params, random_obs(env, 256)))
    assert set(actions.tolist()) == {0, 1}
    assert torch.equal(actions, policy.distribution.mode(policy.apply(params, random_obs(env, 256))))


def test_metadata_and_spaces_are_stored(tmp_path, pendulum):
    env, policy = pendulum
    store = PolicyStore(tmp_path)
    params = policy.init(jr.key(1))
    store.save("p", params, policy, {"agent_step": 64, "eval_score": -150.5, "note": "x", "curve": [1, 2]}, env=env)
    meta = store.load("p").metadata
    assert meta["env_id"] == "Pendulum-v1" and meta["epoch"] == 0 and meta["agent_step"] == 64
    assert meta["eval_score"] == -150.5 and meta["note"] == "x" and meta["curve"] == [1, 2]
    assert meta["action_space"] == {"type": "Box", "low": [-2.0], "high": [2.0], "shape": [1], "dtype": "float32"}
    # The file is an ordinary checkpoint: params are the state, the record is its metadata.
    state, config, content = checkpoint.load(tmp_path / "p.frl")
    assert config is None and content["kind"] == RECORD_KIND and content["spec"] == policy.spec
    assert torch.equal(state["log_std"], params["log_std"])


def test_spaces_from_env_id_and_last_action_input(tmp_path):
    env = make("CartPole-v1")
    # A policy that also takes a one-hot of the last action (2 extra inputs).
    policy = make_mlp_policy(env.observation_space, env.action_space, (8,), obs_dim_extra=2)
    store = PolicyStore(tmp_path)
    params = policy.init(jr.key(3))
    store.save("la", params, policy, {"env_id": "CartPole-v1"})  # spaces looked up from env_id
    record = store.load("la")
    obs = jr.normal(jr.key(4), (16, 6))
    assert record.spec["obs_dim"] == 6
    assert torch.equal(record.make_policy().apply(record.params, obs)["logits"], policy.apply(params, obs)["logits"])


def test_space_encoding_round_trips_infinities():
    box = Box((-math.inf, -1.5), (math.inf, 3.4028234663852886e38), (2,))
    enc = encode_space(box)
    assert enc["low"] == ["-inf", -1.5] and enc["high"] == ["inf", 3.4028234663852886e38]
    assert decode_space(enc) == box
    assert decode_space(encode_space(Discrete(7))) == Discrete(7)
    cartpole_obs = make("CartPole-v1").observation_space
    assert decode_space(encode_space(cartpole_obs)) == cartpole_obs


def test_load_errors_name_the_uri(tmp_path, cartpole):
    env, policy = cartpole
    store = PolicyStore(tmp_path / "s")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PolicyStoreError, match=f"^{empty.as_uri()}: no policy records in this directory$"):
        store.load(empty.as_uri())
    with pytest.raises(PolicyStoreError, match=r"s/nope\.frl: no such policy record"):
        store.load("nope")
    store.save("only", policy.init(jr.key(0)), policy, {"agent_step": 1}, env=env)
    with pytest.raises(PolicyStoreError, match=r"no such policy record \(files there: only\)"):
        store.load("missing")
    with pytest.raises(PolicyStoreError, match=r"none of the 1 records has a finite numeric metadata value 'eval_score'"):
        store.load(store.uri + "?select=best")
    for bad, message in [
        ("s3://bucket/x.frl", "unsupported URI scheme 's3'"),
        ("file://host/x", "file URIs must be absolute"),
        (store.uri + "?select=worst", "select='worst' is invalid"),
        (store.uri + "?pick=best", r"unknown query parameter\(s\) \['pick'\]"),
        (store.uri + "?metric=x", "metric= applies only with select=best"),
        ((store.root / "only.frl").as_uri() + "?select=best", r"\?select= applies to a directory"),
    ]:
        with pytest.raises(PolicyStoreError, match=message) as info:
            store.load(bad)
        assert bad in str(info.value)


def test_training_checkpoints_are_not_records(tmp_path, cartpole):
    env, policy = cartpole
    store = PolicyStore(tmp_path)
    checkpoint.save(checkpoint.checkpoint_path(tmp_path, 5), {"w": torch.ones(2)}, None, {"agent_step": 5})
    with pytest.raises(PolicyStoreError, match="no policy records"):
        store.load(store.uri)
    with pytest.raises(PolicyStoreError, match="not a policy record"):
        store.load(checkpoint.checkpoint_path(tmp_path, 5).as_uri())
    store.save("real", policy.init(jr.key(0)), policy, {"agent_step": 1}, env=env)
    assert [r.name for r in store.list()] == ["real"]


def test_corrupt_record_is_reported_not_skipped(tmp_path, cartpole):
    env, policy = cartpole
    store = PolicyStore(tmp_path)
    store.save("r", policy.init(jr.key(0)), policy, {"agent_step": 1}, env=env)
    path = tmp_path / "r.frl"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CorruptCheckpointError):
        store.load(store.uri)


def test_save_errors(tmp_path, cartpole):
    env, policy = cartpole
    store = PolicyStore(tmp_path)
    params = policy.init(jr.key(0))
    store.save("x", params, policy, {"agent_step": 1}, env=env)
    with pytest.raises(FileExistsError, match="already exists"):
        store.save("x", params, policy, {"agent_step": 2}, env=env)
    assert store.save("x", params, policy, {"agent_step": 2}, env=env, overwrite=True).agent_step == 2
    assert store.load("x").agent_step == 2
    for bad_name in ("../up", "a/b", ".hidden", "", "x.frl"):
        with pytest.raises(ValueError, match="name .* is invalid"):
            store.save(bad_name, params, policy, env=env)
    with pytest.raises(ValueError, match="cannot tell the policy's observation_space"):
        store.save("nospace", params, policy, {"agent_step": 1})
    for other in ("Acrobot-v1", "Pendulum-v1"):  # 6 inputs > 4; continuous actions for a discrete head
        with pytest.raises(ValueError, match="do not fit the policy spec"):
            store.save("wrong_env", params, policy, {"agent_step": 1}, env=make(other))
    with pytest.raises(ValueError, match="reserved"):
        store.save("r", params, policy, {"spec": {}}, env=env)
    with pytest.raises(TypeError, match="metadata"):
        store.save("t", params, policy, {"when": object()}, env=env)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.frl"]  # failed saves wrote nothing


def test_initial_policy_starts_a_fresh_run_from_a_stored_policy(tmp_path):
    """The reference trainer's initial_policy: the run's first parameters are the record's;
    everything else is a fresh run's. A record of another architecture, or a given state,
    is refused with a message that says what to do."""
    import torch.utils._pytree as pytree

    import functional_rl as frl
    from functional_rl.shell.build import build

    cfg = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=32, hidden_sizes=(8,))
    fresh, kernel = build(cfg)
    teacher = pytree.tree_map(lambda p: p + 0.5, fresh.learner.params)
    store = PolicyStore(tmp_path)
    store.save("teacher", teacher, kernel.policy, {"agent_step": 1000}, env=kernel.env)
    started, history = frl.functional_training_loop(cfg, compile=False, initial_policy="teacher", policy_store=store, max_iterations=0)
    assert history == [] and all(torch.equal(a, b) for a, b in zip(pytree.tree_leaves(started.learner.params), pytree.tree_leaves(teacher)))
    assert int(started.agent_step) == 0
    anchored, _ = frl.functional_training_loop(cfg.replace(l2_init_loss_coef=1.0), compile=False, initial_policy="teacher",
                                               policy_store=store, max_iterations=0)
    assert torch.equal(anchored.learner.opt_state[0].initial["actor"][0]["w"], teacher["actor"][0]["w"])  # the pull is to the record
    trained, _ = frl.functional_training_loop(cfg, compile=False, initial_policy=store.path("teacher"))
    assert int(trained.agent_step) == 32
    wide = make_mlp_policy(kernel.env.observation_space, kernel.env.action_space, (16,))
    store.save("wide", wide.init(jr.key(0)), wide, {}, env=kernel.env)
    with pytest.raises(ValueError, match=r"parameter .* is \(16, 4\) but this run's policy has \(8, 4\)"):
        frl.functional_training_loop(cfg, compile=False, initial_policy="wide", policy_store=store)
    with pytest.raises(ValueError, match="already has its parameters"):
        frl.functional_training_loop(cfg, compile=False, initial_policy="teacher", policy_store=store, state=fresh)
