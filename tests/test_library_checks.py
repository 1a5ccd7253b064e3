"""The library checks what it is handed: states, policies, callbacks, step functions and custom
losses that do not fit the run end in a ValueError/TypeError naming the mismatch (and the
user's function), never in an AttributeError/IndexError/RuntimeError from inside the kernel,
and never train silently on the wrong thing.

One test per rule, then a hypothesis suite of generated misuse. All eager and tiny.
"""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch
import torch.utils._pytree as pytree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import functional_rl as frl
from functional_rl.compat.components import (
    PolicyEvaluator, PPOOptimizer, RolloutCollector, TrainingCheckpointer, load_or_create,
)
from functional_rl.envs import Discrete, make
from functional_rl.kernel.losses import add_custom_losses
from functional_rl.kernel.policies import Policy
from functional_rl.shell.build import build, compiler, default_policy
from functional_rl.shell.checks import check_callbacks, check_state
from functional_rl.shell.distributed import Replica, local_share
from functional_rl.shell.validate import check_config

TINY = frl.PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=32, hidden_sizes=(8,))
CARTPOLE = make("CartPole-v1")


def policy_for(cfg, env=CARTPOLE):
    return default_policy(cfg, env)


def fresh(cfg=TINY, env=CARTPOLE, policy=None):
    return frl.init_state(cfg, env, policy or policy_for(cfg, env))


def train(cfg=TINY, **kw):
    kw.setdefault("max_iterations", 1)
    return frl.functional_training_loop(cfg, compile=False, **kw)


def no_spec(policy):
    """The same policy without the spec entries that say its sizes: the checks must probe it."""
    return dataclasses.replace(policy, spec={"kind": "hand-made"})


# ---------------------------------------------------------------- 1. the state and the policy
def test_a_state_of_8_envs_is_refused_under_num_envs_4():
    state = fresh(TINY.replace(num_envs=8))
    with pytest.raises(ValueError, match=r"holds 8 envs .* config.num_envs=2: continue it with num_envs=8"):
        train(state=state)


def test_observations_of_another_env_are_refused():
    acro = TINY.replace(env_id="Acrobot-v1")
    with pytest.raises(ValueError, match=r"state.envs.obs .* CartPole-v1 observes shape \[4\]"):
        train(state=fresh(acro, make("Acrobot-v1")), policy=policy_for(TINY))


@pytest.mark.parametrize("probe", [False, True], ids=["spec", "probe"])
def test_a_policy_with_3_actions_on_cartpoles_2_is_refused(probe):
    three = frl.make_mlp_policy(CARTPOLE.observation_space, Discrete(3), hidden_sizes=(8,))
    three = no_spec(three) if probe else three
    with pytest.raises(ValueError, match="action head has 3 outputs but CartPole-v1 has 2 discrete actions"):
        train(policy=three)
    with pytest.raises(ValueError, match="action head has 3 outputs"):
        frl.train_many(TINY, seeds=[0], policy=three, compile=False, max_iterations=1)


def test_a_continuous_policy_on_a_discrete_env_is_refused():
    pend = make("Pendulum-v1")
    gaussian = frl.make_mlp_policy(CARTPOLE.observation_space, pend.action_space, hidden_sizes=(8,))
    with pytest.raises(ValueError, match="DiagGaussian but CartPole-v1 has discrete actions"):
        train(policy=gaussian)


def test_a_policy_for_a_wider_observation_is_refused_with_and_without_a_spec():
    wide = frl.make_mlp_policy(make("Acrobot-v1").observation_space, CARTPOLE.action_space, hidden_sizes=(8,))
    with pytest.raises(ValueError, match="the policy takes 6 inputs but CartPole-v1 gives 4"):
        train(policy=wide)
    with pytest.raises(ValueError, match=r"policy.apply .* fails on one observation of CartPole-v1"):
        train(policy=no_spec(wide))


def test_a_checkpoint_of_64x64_under_hidden_sizes_32_is_refused():
    big = TINY.replace(hidden_sizes=(64, 64))
    with pytest.raises(ValueError, match=r"state.learner.params\['actor'\]\[0\]\['w'\] is a float32 tensor of shape "
                                         r"\[64, 4\] but this run needs .*\[32, 4\].*hidden_sizes=\[32\]"):
        train(TINY.replace(hidden_sizes=(32,)), state=fresh(big))


@pytest.mark.parametrize("field", ["last_action", "normalize_obs", "normalize_reward"])
def test_features_on_or_off_must_match_the_config(field):
    other = TINY.replace(**{field: True})
    with pytest.raises(ValueError, match=f"config.{field}=False: set {field}=True to continue this state"):
        train(state=fresh(other), policy=policy_for(TINY))
    with pytest.raises(ValueError, match=f"config.{field}=True: set {field}=False"):
        train(other, state=fresh(TINY), policy=policy_for(other))


def test_a_state_that_is_not_a_trainer_state_is_refused():
    with pytest.raises(TypeError, match="state must be a TrainerState .* got tuple"):
        train(state=(fresh(), {}))


def test_a_fitting_state_trains_with_the_same_numbers():
    state = fresh()
    a, ha = train(state=state, max_iterations=2)
    b, hb = train(max_iterations=2)
    assert [h["total_loss"] for h in ha] == [h["total_loss"] for h in hb]
    assert torch.equal(a.learner.params["actor"][0]["w"], b.learner.params["actor"][0]["w"])


def test_a_whole_run_state_is_split_per_process_and_each_share_passes():
    whole = fresh(TINY.replace(num_envs=4))
    for rank in (0, 1):
        share = local_share(whole, Replica(rank=rank, world_size=2, local_rank=rank, backend="gloo", owned=False), 2)
        check_state(TINY, CARTPOLE, policy_for(TINY), share)
    with pytest.raises(ValueError, match="whole-run state of 2 processes .* torchrun"):
        check_state(TINY, CARTPOLE, policy_for(TINY), whole)


def test_components_check_the_state_they_are_handed(tmp_path):
    policy = policy_for(TINY)
    collector = RolloutCollector(CARTPOLE, policy, TINY)
    with pytest.raises(ValueError, match="holds 4 envs"):
        collector.collect(fresh(TINY.replace(num_envs=4)))
    state, traj, _ = collector.collect(fresh())
    ppo = PPOOptimizer(policy, TINY, env=CARTPOLE)
    with pytest.raises(ValueError, match=r"experience has batch size \[4, 2\]"):
        ppo.update(state, traj[:4])
    with pytest.raises(TypeError, match="experience must be the TensorDict"):
        ppo.update(state, dict(traj.items()))
    three = frl.make_mlp_policy(CARTPOLE.observation_space, Discrete(3), hidden_sizes=(8,))
    for make_component in (lambda: RolloutCollector(CARTPOLE, three, TINY), lambda: PPOOptimizer(three, TINY, env=CARTPOLE)):
        with pytest.raises(ValueError, match="action head has 3 outputs"):
            make_component()
    wide = frl.make_mlp_policy(CARTPOLE.observation_space, CARTPOLE.action_space, hidden_sizes=(16,))
    with pytest.raises(ValueError, match=r"params\['actor'\]\[0\]\['w'\]"):
        PolicyEvaluator(CARTPOLE, wide).evaluate(state.learner.params, episodes=1)
    with pytest.raises(ValueError, match=r"state.learner.params\['actor'\]"):
        TrainingCheckpointer(tmp_path).save_policy(state, wide)
    TrainingCheckpointer(tmp_path).save_trainer_state(state, TINY)
    with pytest.raises(ValueError, match="the latest checkpoint does not fit this run: state.learner.params"):
        load_or_create(tmp_path, TINY, env=CARTPOLE, policy=wide)
    assert int(load_or_create(tmp_path, TINY, env=CARTPOLE, policy=policy).agent_step) == int(state.agent_step)


# ---------------------------------------------------------------- 2. contracts of user code
def vector_loss(params, batch, outputs, hparams):
    return outputs["value"] ** 2


def float_loss(params, batch, outputs, hparams):
    return 0.5


def int_loss(params, batch, outputs, hparams):
    return torch.tensor(1)


def triple_loss(params, batch, outputs, hparams):
    return outputs["value"].mean(), {}, 1


def list_metrics_loss(params, batch, outputs, hparams):
    return outputs["value"].mean(), ["not", "a", "dict"]


@pytest.mark.parametrize("fn, error, rule", [
    (vector_loss, ValueError, r"returned a tensor of shape \[8\]; a loss must be a 0-d tensor"),
    (float_loss, TypeError, "returned float; a loss must be a 0-d floating-point tensor"),
    (int_loss, TypeError, "returned a tensor of dtype int64; a loss must be floating-point"),
    (triple_loss, TypeError, "returned a tuple of 3 items"),
    (list_metrics_loss, TypeError, "returned \\(loss, list\\); the second item must be a dict"),
])
def test_custom_losses_breaking_the_contract_are_named(fn, error, rule):
    with pytest.raises(error, match=f"custom loss {fn.__name__} {rule}"):
        train(custom_losses=[fn])
    with pytest.raises(error, match=f"custom loss {fn.__name__}"):  # vmapped over agents too
        frl.train_many(TINY, seeds=[0, 1], custom_losses=[fn], compile=False, max_iterations=1)


def test_custom_loss_errors_surface_as_themselves_when_compiled():
    """Under torch.compile(fullgraph=True) dynamo reports an exception raised while tracing as
    Unsupported; the compiled call re-raises the loss's own error instead."""
    f = compiler(True)(lambda t: add_custom_losses(t, {}, [vector_loss], None, None, {"value": torch.ones(3)}, None)[0])
    with pytest.raises(ValueError, match=r"custom loss vector_loss returned a tensor of shape \[3\]"):
        f(torch.tensor(1.0))


def test_custom_losses_none_and_a_single_function_work():
    def value_l2(params, batch, outputs, hparams):
        return 1e-3 * outputs["value"].pow(2).mean()

    assert "value_l2" in train(custom_losses=value_l2)[1][0]
    assert "value_l2" not in train(custom_losses=None)[1][0]


def test_a_plain_function_is_an_on_iteration_callback_and_callbacks_none_is_none():
    seen = []
    _, history = train(callbacks=[lambda state, metrics: seen.append(metrics["iteration"])], max_iterations=2)
    assert seen == [1.0, 2.0]
    assert len(train(callbacks=None)[1]) == 1


@pytest.mark.parametrize("hook", ["on_iter", "on_iteration_end", "onIteration"])
def test_an_object_with_a_misspelled_hook_is_refused_with_a_did_you_mean(hook):
    cb = type("MyLogger", (), {hook: lambda self, state, metrics: None})()
    with pytest.raises(TypeError, match=f"callback MyLogger has none of the hooks .* rename {hook} to on_iteration"):
        train(callbacks=[cb])


def test_callbacks_of_the_wrong_kind_are_refused():
    class Logger:
        def on_iteration(self, state, metrics):
            pass

    with pytest.raises(TypeError, match="callback Logger is a class; pass an instance"):
        check_callbacks([Logger])
    with pytest.raises(TypeError, match="callback object has none of the hooks"):
        check_callbacks([object()])
    with pytest.raises(TypeError, match=r"callback function one_arg\(state\) cannot be called as on_iteration\(state, metrics\)"):
        check_callbacks([one_arg])


def one_arg(state):
    return None


def test_a_callback_that_changes_its_metrics_changes_neither_history_nor_the_next_callback():
    seen = []

    class Vandal:
        def on_iteration(self, state, metrics):
            metrics["total_loss"] = 123.0
            metrics.clear()

    _, history = train(callbacks=[Vandal(), lambda s, m: seen.append(dict(m))])
    assert history[0]["total_loss"] != 123.0 and "iteration" in history[0]
    assert seen == history


@pytest.mark.parametrize("ret, error, rule", [
    (lambda s, m: s, TypeError, "returned TrainerState; it must return a pair"),
    (lambda s, m: (s, [m]), TypeError, r"returned \(state, list\) as its metrics"),
    (lambda s, m: ({"s": s}, m), TypeError, r"returned \(dict, ...\) as its state"),
    (lambda s, m: (s, {**m, "x": 1.0}), TypeError, "returned metric 'x' as float; metrics must be tensors"),
    (lambda s, m: (s, {**m, "x": torch.ones(3)}), ValueError, r"returned metric 'x' of shape \[3\]"),
])
def test_a_step_fn_returning_the_wrong_type_is_named(ret, error, rule):
    def my_step(state, kernel):
        return ret(*frl.train_iteration(state, kernel))

    with pytest.raises(error, match=f"step_fn .*my_step {rule}"):
        train(step_fn=my_step)
    with pytest.raises(TypeError, match="step_fn must be a function"):
        train(step_fn="train_iteration")


# ---------------------------------------------------------------- 3. PPOConfig.validate
@pytest.mark.parametrize("changes, field", [
    ({"hidden_sizes": (True, True)}, "hidden_sizes"),
    ({"hidden_sizes": [64, False]}, "hidden_sizes"),
    ({"hidden_sizes": 5}, "hidden_sizes"),
    ({"hidden_sizes": "64"}, "hidden_sizes"),
    ({"learning_rate": 10 ** 400}, "learning_rate"),
    ({"gamma": -(10 ** 400)}, "gamma"),
    ({"activation": "x" * 100_000}, "activation"),
    ({"env_id": ["y"] * 100_000}, "env_id"),
    ({"num_envs": 1, "num_steps": 4, "num_minibatches": 4}, "norm_adv"),
])
def test_config_rules_name_the_field_with_a_bounded_message(changes, field):
    with pytest.raises(ValueError, match=f"^PPOConfig.{field}=") as info:
        frl.PPOConfig(**changes)
    assert len(str(info.value)) < 600


def test_the_one_sample_rule_lives_in_the_config_and_names_the_fields():
    with pytest.raises(ValueError, match=r"num_envs=1 x num_steps=4 x world_size=1 / num_minibatches=4.*standard deviation"):
        frl.PPOConfig(num_envs=1, num_steps=4, num_minibatches=4)
    cfg = frl.PPOConfig(num_envs=1, num_steps=4, num_minibatches=4, norm_adv=False)  # no std: allowed
    check_config(cfg)  # the CLI's checks accept what the config accepts: one rule, one place
    frl.PPOConfig(num_envs=1, num_steps=4, num_minibatches=2)  # two samples: allowed


# ---------------------------------------------------------------- 4. generated misuse
COUNTS: collections.Counter = collections.Counter()
DOCUMENTED = (ValueError, TypeError)
FIELDS = {"num_envs": [1, 2, 3], "hidden_sizes": [(4,), (8,), (8, 4)], "last_action": [False, True],
          "normalize_obs": [False, True], "normalize_reward": [False, True]}
ENVS = ["CartPole-v1", "Acrobot-v1", "Pendulum-v1"]
STATIC = ("num_envs", "hidden_sizes", "last_action", "normalize_obs", "normalize_reward", "env_id")


def outcome(run, name=None):
    """'ok', 'documented' (a ValueError/TypeError that names ``name`` if given) or the unexpected
    exception (which fails the test)."""
    try:
        run()
    except DOCUMENTED as e:
        if name is not None and name not in str(e):
            raise AssertionError(f"the message does not name {name!r}: {e}") from e
        assert str(e) and len(str(e)) < 2000
        return "documented"
    return "ok"


@st.composite
def other_configs(draw):
    changes = {k: draw(st.sampled_from(v)) for k, v in FIELDS.items()}
    return TINY.replace(env_id=draw(st.sampled_from(ENVS)), **changes)


def state_case(cfg):
    env = make(cfg.env_id)
    state = fresh(cfg, env)
    matches = all(getattr(cfg, k) == getattr(TINY, k) for k in STATIC)
    return ("state", matches, lambda: train(state=state))


def perturb(leaf, how):
    if how == "none":
        return None
    if how == "float":
        return 1.5
    if how == "dtype":
        return leaf.to(torch.float16 if leaf.dtype != torch.float16 else torch.int32)
    if how == "row":
        return torch.cat([leaf, leaf[:1]]) if leaf.dim() else leaf.reshape(1)
    if how == "unsqueeze":
        return leaf.unsqueeze(-1)
    raise AssertionError(how)


def leaf_case(index, how):
    state = fresh()
    leaves, spec = pytree.tree_flatten(state)
    tensors = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
    i = tensors[index % len(tensors)]
    leaves[i] = perturb(leaves[i], how)
    bad = pytree.tree_unflatten(leaves, spec)
    return ("leaf", False, lambda: build(TINY, env=CARTPOLE, policy=policy_for(TINY), state=bad, compile=False))


def policy_case(actions, drop_spec, hidden):
    pol = frl.make_mlp_policy(CARTPOLE.observation_space, Discrete(actions), hidden_sizes=hidden)
    pol = no_spec(pol) if drop_spec else pol
    return ("policy", actions == 2, lambda: train(policy=pol))


LOSS_RETURNS = {
    "scalar": (True, lambda o: o["value"].mean()),
    "scalar_and_metrics": (True, lambda o: (o["value"].mean(), {"m": o["value"].mean(), "n": 2.0})),
    "vector": (False, lambda o: o["value"]),
    "matrix": (False, lambda o: o["value"][:, None] * o["value"]),
    "one_element": (False, lambda o: o["value"].mean().reshape(1)),
    "python_float": (False, lambda o: 0.25),
    "python_int": (False, lambda o: 1),
    "bool": (False, lambda o: True),
    "none": (False, lambda o: None),
    "string": (False, lambda o: "loss"),
    "int_tensor": (False, lambda o: torch.tensor(3)),
    "bool_tensor": (False, lambda o: o["value"].mean() > 0),
    "list": (False, lambda o: [o["value"].mean()]),
    "tuple1": (False, lambda o: (o["value"].mean(),)),
    "tuple3": (False, lambda o: (o["value"].mean(), {}, {})),
    "tuple_list": (False, lambda o: (o["value"].mean(), [1.0])),
    "metric_string": (False, lambda o: (o["value"].mean(), {"m": "high"})),
    "metric_vector": (False, lambda o: (o["value"].mean(), {"m": o["value"]})),
    "metric_int_key": (False, lambda o: (o["value"].mean(), {3: 1.0})),
}


def loss_case(kind, agents):
    valid, make_out = LOSS_RETURNS[kind]

    def generated_loss(params, batch, outputs, hparams):
        return make_out(outputs)

    if agents:
        run = lambda: frl.train_many(TINY, seeds=[0, 1], custom_losses=[generated_loss], compile=False, max_iterations=1)  # noqa: E731
    else:
        run = lambda: train(custom_losses=[generated_loss])  # noqa: E731
    return ("loss", valid, run, "generated_loss")


HOOK_NAMES = ["on_start", "on_iteration", "on_end", "on_failure", "on_iter", "on_iteration_end", "on_step",
              "onIteration", "iteration", "on_epoch"]


def callback_case(names):
    def hook(self, *args):
        return None

    cb = type("GeneratedCallback", (), {n: hook for n in names})()
    valid = any(n in ("on_start", "on_iteration", "on_end", "on_failure") for n in names)
    return ("callback", valid, lambda: train(callbacks=[cb]), "GeneratedCallback" if not valid else None)


STEP_RETURNS = {
    "pair": (True, lambda s, m: (s, m)),
    "state": (False, lambda s, m: s),
    "none": (False, lambda s, m: None),
    "triple": (False, lambda s, m: (s, m, m)),
    "swapped": (False, lambda s, m: (m, s)),
    "list_pair": (False, lambda s, m: [s, m]),
    "float_metric": (False, lambda s, m: (s, {**m, "x": 0.5})),
    "vector_metric": (False, lambda s, m: (s, {**m, "x": torch.zeros(5)})),
    "int_key": (False, lambda s, m: (s, {**m, 7: m["total_loss"]})),
}


def step_case(kind):
    valid, shape = STEP_RETURNS[kind]

    def generated_step(state, kernel):
        return shape(*frl.train_iteration(state, kernel))

    return ("step_fn", valid, lambda: train(step_fn=generated_step), "generated_step")


cases = st.one_of(
    st.one_of(st.just(TINY), other_configs()).map(state_case),
    st.tuples(st.integers(0, 200), st.sampled_from(["none", "float", "dtype", "row", "unsqueeze"])).map(lambda a: leaf_case(*a)),
    st.tuples(st.integers(1, 5), st.booleans(), st.sampled_from([(4,), (8,)])).map(lambda a: policy_case(*a)),
    st.tuples(st.sampled_from(sorted(LOSS_RETURNS)), st.booleans()).map(lambda a: loss_case(*a)),
    st.lists(st.sampled_from(HOOK_NAMES), min_size=1, max_size=3, unique=True).map(callback_case),
    st.sampled_from(sorted(STEP_RETURNS)).map(step_case),
)


@settings(max_examples=250, deadline=None, derandomize=False, suppress_health_check=[HealthCheck.too_slow])
@given(cases)
def test_generated_library_misuse_ends_in_a_documented_error(case):
    kind, valid, run, *name = case
    result = outcome(run, name[0] if name else None)
    COUNTS[(kind, result)] += 1
    COUNTS["cases"] += 1
    COUNTS[result] += 1
    assert result == ("ok" if valid else "documented"), f"{kind}: expected {'success' if valid else 'an error'}, got {result}"


def test_zz_report_the_counts():
    """Prints the counts of the generated suite (run with -s to see them)."""
    if not COUNTS["cases"]:
        pytest.skip("the generated suite did not run in this session")
    by_kind = {f"{k}/{r}": n for (k, r), n in sorted((key, n) for key, n in COUNTS.items() if isinstance(key, tuple))}
    print(f"\ngenerated library misuse: {COUNTS['cases']} cases, {COUNTS['documented']} documented errors, "
          f"{COUNTS['ok']} correct runs, 0 other; by kind: {by_kind}")
    assert COUNTS["cases"] == COUNTS["documented"] + COUNTS["ok"]
