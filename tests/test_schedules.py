"""Schedules: each kind runs from 1 to end_factor, warmup ramps, linear is CleanRL's annealing,
and the factors are the same eager, compiled (without recompiling as the step advances) and vmapped."""

import json
import math

import pytest
import torch
from hypothesis import given, strategies as st

from functional_rl.kernel.config import Hyperparams, PPOConfig, learning_rate_at
from functional_rl.kernel.schedules import KINDS, Schedule, step_range_gate

DECAYING = tuple(k for k in KINDS if k != "constant")


@st.composite
def schedules(draw, kinds=KINDS):
    kind = draw(st.sampled_from(kinds))
    low = 1e-3 if kind == "exponential" else 0.0
    warmup, start = draw(st.integers(0, 20)), draw(st.integers(0, 30))
    total = max(warmup, start) + draw(st.integers(1, 200))
    return Schedule(kind, draw(st.floats(low, 1.0)), warmup, start, total)


def factors(s: Schedule, steps) -> torch.Tensor:
    return s.factor(torch.as_tensor(steps, dtype=torch.int64))


@given(schedules())
def test_each_kind_runs_from_one_to_end_factor_monotonically(s):
    begin, total = s.decay_start, s.total_steps
    end = 1.0 if s.kind == "constant" else s.end_factor
    held = factors(s, range(s.warmup_steps, begin + 1))  # after warmup, before the decay: 1
    assert torch.equal(held, torch.ones_like(held))
    after = factors(s, [total, total + 1, total + 10**6])  # p = 1 and beyond: end_factor
    assert torch.allclose(after, torch.full((3,), end), atol=1e-6)
    decay = factors(s, range(begin, total + 3))
    assert (decay[1:] <= decay[:-1] + 1e-6).all(), decay  # non-increasing for end_factor <= 1
    assert ((decay >= 0) & (decay <= 1)).all()


@pytest.mark.parametrize("kind", DECAYING)
def test_an_end_factor_above_one_grows(kind):
    f = factors(Schedule(kind, end_factor=2.0, total_steps=10), range(15))
    assert f[0] == 1 and torch.allclose(f[10:], torch.full((5,), 2.0))
    assert (f[1:] >= f[:-1] - 1e-6).all() and f.max() <= 2.0


@given(st.integers(1, 50), st.floats(1e-5, 1.0))
def test_linear_to_zero_is_cleanrl_annealing(num_iterations, lr):
    # Mapping: step = the iteration counter (completed iterations, from 0), total_steps =
    # num_iterations. Then p = i / N and 1 + (0 - 1) p = 1 - i / N, learning_rate_at's factor.
    hp = Hyperparams.from_config(PPOConfig(learning_rate=lr))
    s = Schedule("linear", end_factor=0.0)
    for i in range(num_iterations + 3):
        it = torch.tensor(i)
        expected = learning_rate_at(hp, it, num_iterations, True)
        assert torch.equal(s.value(hp.learning_rate, it, num_iterations), expected)


@given(st.sampled_from(KINDS), st.integers(1, 50), st.integers(0, 20))
def test_warmup_ramps_linearly_and_never_returns_zero(kind, warmup, extra):
    s = Schedule(kind, end_factor=0.5, warmup_steps=warmup, total_steps=warmup + extra + 1)
    ramp = factors(s, range(-3, warmup))  # negative steps count as step 0
    expected = torch.cat([torch.full((3,), 1 / warmup), (torch.arange(warmup) + 1) / warmup])
    assert torch.allclose(ramp, expected) and (ramp > 0).all()
    assert ramp[-1] == 1 and factors(s, [warmup]) == 1  # the ramp ends where the decay begins


@pytest.mark.parametrize("end", [0.0, 0.01, 0.1, 0.5])
@pytest.mark.parametrize("warmup", [0, 4])
def test_hand_computed_values(end, warmup):
    # total = warmup + 20: step warmup + 10 is p = 0.5, step warmup + 5 is p = 0.25.
    def f(kind, offset):
        return float(Schedule(kind, end_factor=end, warmup_steps=warmup).factor(torch.tensor(warmup + offset), warmup + 20))

    assert f("linear", 10) == pytest.approx((1 + end) / 2)
    assert f("cosine", 10) == pytest.approx((1 + end) / 2)  # end + (1 - end)(1 + cos(pi/2))/2, cos(pi/2) = 0
    assert f("cosine", 5) == pytest.approx(end + (1 - end) * (2 + math.sqrt(2)) / 4)  # cos(pi/4) = sqrt(2)/2
    assert f("logarithmic", 10) == pytest.approx(1 + (end - 1) * math.log((1 + math.e) / 2))  # log(1 + (e-1)/2)
    if end:  # exponential needs end > 0
        assert f("exponential", 10) == pytest.approx(math.sqrt(end))  # end ** 0.5
        assert f("exponential", 5) == pytest.approx(end ** 0.25)


def test_compiled_does_not_recompile_and_equals_eager():
    all_kinds = [Schedule(k, end_factor=0.1, warmup_steps=3, start_step=5, total_steps=60) for k in KINDS]

    def fn(base, step):
        return [s.value(base, step) for s in all_kinds] + [step_range_gate(step, 4, 40)]

    compiled = torch.compile(fn, fullgraph=True, dynamic=False)
    base = torch.tensor(3e-4)
    compiled(base, torch.tensor(0))  # the one compile
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in (1, 4, 30, 59, 1000):
            step = torch.tensor(i)
            for c, e in zip(compiled(base, step), fn(base, step)):
                assert torch.allclose(c, e, rtol=1e-6, atol=0), (i, c, e)


@pytest.mark.parametrize("kind", KINDS)
def test_vmap_equals_the_loop(kind):
    s = Schedule(kind, end_factor=0.2, warmup_steps=2, total_steps=20)
    bases, steps = torch.tensor([1e-4, 3e-4, 1.0, 0.0]), torch.tensor([0, 1, 7, 25])
    step = torch.tensor(9)
    over_base = torch.func.vmap(lambda b: s.value(b, step))(bases)
    assert torch.equal(over_base, torch.stack([s.value(b, step) for b in bases]))
    over_step = torch.func.vmap(lambda b, t: s.value(b, t))(bases, steps)
    assert torch.equal(over_step, torch.stack([s.value(b, t) for b, t in zip(bases, steps)]))
    assert torch.equal(steps, torch.tensor([0, 1, 7, 25]))  # inputs untouched


@given(schedules())
def test_parse_and_dict_round_trips(s):
    assert Schedule.parse(s.to_string()) == s
    assert Schedule.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_parse_reads_the_cli_forms():
    assert Schedule.parse("cosine") == Schedule("cosine")
    assert Schedule.parse(" cosine : end = 0.1 , warmup = 1000 ") == Schedule("cosine", 0.1, 1000)
    assert Schedule.parse("linear:end=0") == Schedule("linear", 0.0)
    assert Schedule.parse("exponential:end=0.01,total=1e6") == Schedule("exponential", 0.01, total_steps=10**6)
    assert Schedule.parse("logarithmic:end=0.5,start=10,total=20").start_step == 10


@pytest.mark.parametrize("text, fragments", [
    ("cosin", ["unknown kind 'cosin'", "constant, linear, cosine, exponential, logarithmic"]),
    ("linear:ends=0", ["unknown option 'ends'", "did you mean 'end'", "warmup=INT"]),
    ("linear:end=abc", ["'end' must be a number", "'abc'"]),
    ("linear:warmup=1.5", ["'warmup' must be a whole number"]),
    ("linear:end", ["'end' needs a value"]),
    ("linear:end=0.1,end=0.2", ["'end' given twice"]),
    ("linear:end=nan", ["end_factor=nan", "finite number >= 0"]),
    ("linear:end=-1", ["end_factor=-1.0", ">= 0"]),
    ("exponential", ["end_factor=0.0", "'exponential:end=0.01'"]),
    ("linear:warmup=-1", ["warmup_steps=-1", "integer >= 0"]),
    ("linear:warmup=10,total=10", ["total_steps=10", "> max(warmup_steps, start_step) = 10", "raise total_steps"]),
])
def test_bad_strings_raise_naming_the_problem(text, fragments):
    with pytest.raises(ValueError) as err:
        Schedule.parse(text)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_bad_fields_and_missing_lengths_raise():
    with pytest.raises(ValueError, match="did you mean 'cosine'"):
        Schedule("cosin")
    with pytest.raises(ValueError, match="did you mean 'total_steps'"):
        Schedule.from_dict({"total": 3})
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        Schedule("linear", warmup_steps=True)
    with pytest.raises(ValueError, match="needs its length"):
        Schedule("linear").factor(torch.tensor(0))
    with pytest.raises(ValueError, match="total_steps=3 is invalid"):
        Schedule("linear", warmup_steps=3).factor(torch.tensor(0), total_steps=3)
    assert Schedule("constant", warmup_steps=2).factor(torch.tensor(5)) == 1  # constant needs no length


def test_step_range_gate_edges():
    steps = torch.arange(-1, 12)
    gate = step_range_gate(steps, 3, 7)
    assert gate.dtype == torch.float32 and gate.shape == steps.shape
    assert gate.tolist() == [float(3 <= i < 7) for i in range(-1, 12)]  # start inclusive, end exclusive
    assert step_range_gate(steps, start=3).tolist() == [float(i >= 3) for i in range(-1, 12)]
    assert step_range_gate(steps, end=3).tolist() == [float(i < 3) for i in range(-1, 12)]
    assert step_range_gate(torch.tensor(5)).shape == () and step_range_gate(torch.tensor(5)) == 1
    assert step_range_gate(torch.tensor(6), 6, 7) == 1 and step_range_gate(torch.tensor(7), 6, 7) == 0
    with pytest.raises(ValueError, match="empty"):
        step_range_gate(steps, 5, 5)


def test_a_custom_loss_sees_the_step_to_gate_itself_and_schedule_its_own_coefficient():
    """hparams.step is the env step the iteration started from: a custom loss switches itself
    on for a step range and follows a schedule of its own coefficient with it."""
    import functional_rl as frl

    cfg = frl.PPOConfig(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, total_timesteps=32 * 5)
    coef = Schedule.parse("linear:end=0")

    def value_pull(params, batch, outputs, hparams):
        gate = step_range_gate(hparams.step, start=64, end=128)
        weight = gate * coef.value(torch.tensor(0.1), hparams.step, cfg.total_timesteps)
        return weight * (outputs["value"] ** 2).mean(), {"pull/step": hparams.step.float(), "pull/weight": weight}

    _, history = frl.functional_training_loop(cfg, custom_losses=[value_pull], compile=False)
    assert [h["pull/step"] for h in history] == [0, 32, 64, 96, 128]
    assert [h["pull/weight"] for h in history] == pytest.approx([0, 0, 0.1 * (1 - 64 / 160), 0.1 * (1 - 96 / 160), 0])
    assert [h["value_pull"] == 0 for h in history] == [True, True, False, False, True]
