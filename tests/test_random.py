"""The counter-based PRNG: determinism everywhere, uniformity, independence of streams."""

import math

import pytest
import torch
from hypothesis import given, strategies as st

import functional_rl.kernel.random as jr


def chi_square_uniform(u: torch.Tensor, bins: int = 64) -> float:
    counts = torch.histc(u, bins=bins, min=0.0, max=1.0)
    expected = u.numel() / bins
    return float(((counts - expected) ** 2 / expected).sum())


# Chi-square with 63 degrees of freedom: the 0.999 quantile is about 103.4.
CHI2_63_999 = 103.4
CHI2_63_1E6 = 131.4  # the 1 - 1e-6 quantile, for many tests at once


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_uniform_is_uniform_chi_square(seed):
    u = jr.uniform(jr.key(seed), (20_000,))
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert chi_square_uniform(u) < CHI2_63_999


def test_split_streams_are_uncorrelated():
    keys = jr.split(jr.key(7), 16)
    draws = torch.stack([jr.uniform(k, (10_000,)) for k in keys])
    corr = torch.corrcoef(draws)
    off_diag = corr - torch.eye(16)
    # Correlation of independent samples has std 1/sqrt(n) = 0.01; 5 sigma bound.
    assert float(off_diag.abs().max()) < 0.05
    # And all keys differ from each other and from the parent.
    assert len({tuple(k.tolist()) for k in keys}) == 16


@given(st.integers(min_value=0, max_value=2**63 - 1), st.integers(min_value=0, max_value=2**31 - 64))
def test_row_key_streams_are_uniform_and_uncorrelated(seed, first_row):
    """Per-env streams (row_keys of consecutive env indices, as a rollout uses them): each is
    uniform, no two are correlated, and the pooled draw of many rows at one counter is uniform
    too (what one step's actions across envs see)."""
    rows = torch.arange(first_row, first_row + 16)
    keys = jr.row_keys(jr.key(seed), rows)
    draws = jr.uniform(keys, (5_000,))  # [16, 5000]
    for d in draws:  # 16 tests per example: the 1 - 1e-6 quantile keeps false alarms rare
        assert chi_square_uniform(d) < CHI2_63_1E6
    off_diag = torch.corrcoef(draws) - torch.eye(16)
    assert float(off_diag.abs().max()) < 0.08  # std 1/sqrt(5000) = 0.014; > 5 sigma
    across = jr.uniform(jr.row_keys(jr.key(seed), torch.arange(first_row, first_row + 20_000)), ())
    assert chi_square_uniform(across) < CHI2_63_1E6


def test_adjacent_seeds_and_fold_in_differ():
    a = jr.uniform(jr.key(0), (1000,))
    b = jr.uniform(jr.key(1), (1000,))
    c = jr.uniform(jr.fold_in(jr.key(0), 1), (1000,))
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.15
    assert abs(float(torch.corrcoef(torch.stack([a, c]))[0, 1])) < 0.15
    assert not torch.equal(jr.key(0), jr.fold_in(jr.key(0), 0))


def test_normal_moments():
    z = jr.normal(jr.key(3), (200_000,))
    # std of the sample mean is 1/sqrt(n) ~ 0.0022; of the sample variance ~ sqrt(2/n) ~ 0.0032.
    assert abs(float(z.mean())) < 0.012
    assert abs(float(z.var()) - 1.0) < 0.016


def test_categorical_frequencies():
    logits = torch.log(torch.tensor([0.1, 0.2, 0.7])).expand(50_000, 3)
    a = jr.categorical(jr.key(5), logits)
    freq = torch.bincount(a, minlength=3).float() / a.numel()
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.7]), atol=0.01)


def test_permutation_is_a_permutation():
    p = jr.permutation(jr.key(9), 1000)
    assert torch.equal(torch.sort(p).values, torch.arange(1000))
    assert not torch.equal(p, torch.arange(1000))


def test_same_key_same_numbers_eager_compiled_vmapped():
    def draw(k):
        k1, k2, k3 = jr.split(k, 3).unbind(0)
        return jr.uniform(k1, (7,)), jr.bits(k2, (5,)), jr.categorical(k3, torch.zeros(4, 3)), jr.normal(k2, (6,))

    k = jr.key(123)
    eager = draw(k)
    compiled = torch.compile(draw, fullgraph=True, dynamic=False)(k)
    keys = jr.split(k, 3)
    vmapped = torch.func.vmap(draw)(keys)
    for e, c in zip(eager, compiled):
        if e.is_floating_point():
            # normal uses log/cos, whose generated code may differ in the last ulp.
            assert torch.allclose(e, c, atol=1e-6, rtol=1e-6)
        else:
            assert torch.equal(e, c)
    for i in range(3):
        for v, e in zip(vmapped, draw(keys[i])):
            assert torch.equal(v[i], e)


def test_bad_key_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="PRNG key"):
        jr.uniform(torch.zeros(3), (2,))


def test_seed_range_and_tensor_seeds():
    big = jr.key(2**64 - 1)
    assert big.dtype == torch.int64 and big.shape == (2,)
    assert int(big.min()) >= 0 and int(big.max()) < 2**32
    batched = jr.key(torch.arange(4))
    assert torch.equal(batched[2], jr.key(2))


def test_no_overflow_path_values_stay_32_bit():
    b = jr.bits(jr.key(11), (100_000,))
    assert int(b.min()) >= 0 and int(b.max()) < 2**32
    # The top bit is set about half the time (no sign-bit bias).
    assert abs(float((b >= 2**31).float().mean()) - 0.5) < 0.01
    assert math.isclose(float((b & 1).float().mean()), 0.5, abs_tol=0.01)
