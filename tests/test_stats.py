"""course_lib.stats: EMA, cumulative average, Welford/Chan, the EMA noise formula."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib import stats
import course_lib.norms as cn

F64 = torch.float64


def test_ema_update_uses_pytorch_momentum_convention():
    running = torch.tensor([1.0, 2.0])
    out = stats.ema_update(running, torch.tensor([3.0, 4.0]), 0.1)
    assert out is running  # in place
    torch.testing.assert_close(running, torch.tensor([0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 4]))


def test_ema_update_matches_batchnorm_running_mean():
    bn = cn.BatchNorm1d(3, momentum=0.3).double()
    running = torch.zeros(3, dtype=F64)
    for _ in range(5):
        x = torch.randn(10, 3, dtype=F64)
        bn(x)
        stats.ema_update(running, x.mean(0), 0.3)
    torch.testing.assert_close(bn.running_mean, running)


def test_keras_decay_converts_to_pytorch_momentum():
    assert stats.momentum_from_decay(0.99) == pytest.approx(0.01)
    with pytest.raises(ValueError, match=r"expected decay in \[0, 1\], got 1.5"):
        stats.momentum_from_decay(1.5)
    with pytest.raises(ValueError, match="weight of the new value"):
        stats.ema_update(torch.zeros(1), torch.ones(1), 2.0)


def test_cumulative_average_equals_plain_mean():
    values = torch.randn(100, 4, dtype=F64)
    running = torch.zeros(4, dtype=F64)
    for count, v in enumerate(values, start=1):
        stats.cumulative_average_update(running, v, count)
    torch.testing.assert_close(running, values.mean(0))
    with pytest.raises(ValueError, match="expected count >= 1"):
        stats.cumulative_average_update(running, values[0], 0)


def test_ema_noise_formula_against_simulation():
    """Stationary std of an EMA of i.i.d. N(0, sigma^2) values is sqrt(m/(2-m)) sigma (0.229 sigma at m=0.1)."""
    assert stats.ema_noise_std(0.1) == pytest.approx(math.sqrt(0.1 / 1.9))
    assert stats.ema_effective_window(0.1) == pytest.approx(19.0)
    gen = torch.Generator().manual_seed(0)
    m, sigma = 0.1, 2.0
    values = torch.randn(20000, generator=gen, dtype=F64) * sigma
    ema, trace = torch.zeros((), dtype=F64), []
    for v in values:
        ema = (1 - m) * ema + m * v
        trace.append(ema)
    observed = torch.stack(trace[200:]).std()
    assert float(observed) == pytest.approx(stats.ema_noise_std(m, sigma), rel=0.05)


def test_merge_moments_equals_one_pass():
    a, b = torch.randn(37, 3, dtype=F64) + 5, torch.randn(11, 3, dtype=F64) * 3 - 2
    count, mean, var = stats.merge_moments(37, a.mean(0), a.var(0, unbiased=False),
                                           11, b.mean(0), b.var(0, unbiased=False))
    both = torch.cat([a, b])
    assert count == 48
    torch.testing.assert_close(mean, both.mean(0))
    torch.testing.assert_close(var, both.var(0, unbiased=False))


def test_merge_moments_with_an_empty_side_and_weights():
    mean = torch.tensor([2.0])
    count, m, v = stats.merge_moments(torch.tensor(0.0), torch.zeros(1), torch.ones(1),
                                      torch.tensor(4.0), mean, torch.tensor([0.5]))
    torch.testing.assert_close(m, mean)
    torch.testing.assert_close(v, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="positive total count"):
        stats.merge_moments(0, 0.0, 0.0, 0, 0.0, 0.0)


def test_welford_streaming_and_merge_equal_one_pass():
    data = torch.randn(500, 4, 3, dtype=F64) * 2 + 7
    whole = stats.Welford(feature_dim=1)
    for chunk in data.split(23):
        whole.update(chunk)
    left, right = stats.Welford(1), stats.Welford(1)
    for chunk in data[:200].split(50):
        left.update(chunk)
    for chunk in data[200:].split(7):
        right.update(chunk)
    merged = left.merge(right)
    exact_mean = data.mean((0, 2))
    exact_var = data.transpose(0, 1).reshape(4, -1).var(1, unbiased=True)
    for acc in (whole, merged):
        assert acc.count == 1500
        torch.testing.assert_close(acc.mean, exact_mean)
        torch.testing.assert_close(acc.var(unbiased=True), exact_var)


def test_welford_state_does_not_grow():
    acc = stats.Welford(1)
    for _ in range(50):
        acc.update(torch.randn(8, 2))
    assert acc.mean.shape == (2,) and acc.var(unbiased=False).shape == (2,)
    with pytest.raises(ValueError, match="no values seen"):
        stats.Welford().var()


def test_welford_is_exact_on_large_offsets():
    acc = stats.Welford(1)
    data = 1e8 + torch.randn(1000, 1, dtype=F64)
    for chunk in data.split(10):
        acc.update(chunk)
    torch.testing.assert_close(acc.var(), data.var(0), rtol=1e-6, atol=0)
