"""course_lib.hooks: hooks that always go away, and ActivationStats values checked against the real outputs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import course_lib.norms as cn
from course_lib.data import DataLoaders
from course_lib.hooks import ActivationStats, Hook, Hooks, find_modules
from course_lib.models import ConvLayer, get_cnn_model
from course_lib.training import Callback, Learner
from torch.utils.data import DataLoader, TensorDataset


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


def capture_outputs(model, modules, batches):
    """The real outputs of ``modules`` for each batch, recorded by plain hooks (the oracle)."""
    outputs = [[] for _ in modules]
    index = {id(m): i for i, m in enumerate(modules)}
    with Hooks(modules, lambda hook, m, inp, out: outputs[index[id(m)]].append(out.detach().clone())):
        for x in batches:
            model(x)
    return outputs


def test_hook_and_hooks_are_removed_at_the_end_of_the_with_block():
    model = get_cnn_model()
    calls = []
    with Hook(model[0], lambda hook, m, inp, out: calls.append(out.shape)) as hook:
        model(torch.randn(2, 1, 8, 8))
        assert hook_count(model) == 1 and not hook.removed
    assert hook.removed and hook_count(model) == 0 and len(calls) == 1
    with Hooks(find_modules(model, ConvLayer), lambda *args: None) as hooks:
        assert len(hooks) == 4 and hook_count(model) == 4
    assert hook_count(model) == 0


def test_hooks_are_removed_after_an_exception_in_the_block():
    model = get_cnn_model()
    with pytest.raises(RuntimeError, match="inside"):
        with Hooks(find_modules(model, ConvLayer), lambda *args: None):
            raise RuntimeError("inside the block")
    with pytest.raises(ZeroDivisionError):
        with ActivationStats(find_modules(model, ConvLayer), bins=10, near_zero=0.1):
            model(torch.randn(4, 1, 8, 8))
            1 / 0
    assert hook_count(model) == 0


def test_a_registration_failing_half_way_leaves_no_hook():
    model = get_cnn_model()
    with pytest.raises(TypeError, match="expected an nn.Module to hook, got str"):
        Hooks([model[0], model[1], "not a module"], lambda *args: None)
    with pytest.raises(TypeError):
        ActivationStats([model[0], "not a module"])
    assert hook_count(model) == 0


def test_backward_hooks_see_gradients():
    model = get_cnn_model()
    grads = []
    with Hook(model[1], lambda hook, m, grad_in, grad_out: grads.append(grad_out[0].shape), forward=False):
        model(torch.randn(3, 1, 8, 8)).sum().backward()
    assert grads == [torch.Size([3, 16, 4, 4])] and hook_count(model) == 0


def test_activation_stats_equal_the_true_means_and_stds_of_every_layer_and_call():
    torch.manual_seed(0)
    model = get_cnn_model(norm=cn.BatchNorm2d)
    layers = find_modules(model, ConvLayer)
    batches = [torch.randn(16, 1, 8, 8) * (k + 1) for k in range(3)] + [torch.randn(5, 1, 8, 8)]  # last: smaller
    with ActivationStats(layers) as stats:
        for x in batches:
            model(x)
    assert hook_count(model) == 0
    truth = capture_outputs(model, layers, batches)  # same model, same mode: same outputs
    assert stats.n_calls == [4] * 4
    for i in range(4):
        for k in range(4):
            assert float(stats.means[i][k]) == pytest.approx(truth[i][k].mean().item(), rel=1e-5, abs=1e-6)
            assert float(stats.stds[i][k]) == pytest.approx(truth[i][k].std().item(), rel=1e-5)


def test_histograms_and_near_zero_fractions_equal_their_definitions():
    torch.manual_seed(1)
    model = get_cnn_model(norm=None)
    layers = find_modules(model, ConvLayer)
    batches = [torch.randn(8, 1, 8, 8) for _ in range(3)]
    with ActivationStats(layers, bins=12, hist_range=(0, 3), near_zero=0.05) as stats:
        for x in batches:
            model(x)
    truth = capture_outputs(model, layers, batches)
    for i in range(4):
        torch.testing.assert_close(stats.hists[i], torch.stack([torch.histc(t, 12, 0, 3) for t in truth[i]]).double())
        torch.testing.assert_close(stats.near_zero_fractions[i],
                                   torch.stack([(t.abs() <= 0.05).double().mean() for t in truth[i]]))
    torch.testing.assert_close(stats.bin_edges, torch.linspace(0, 3, 13))


def test_a_constant_output_has_std_zero_two_passes_not_e_x2_minus_e_x_squared():
    """E[x^2] - E[x]^2 on 1e4 + tiny noise cancels catastrophically; the two-pass std does not."""
    layer = nn.Linear(3, 64)
    with torch.no_grad():
        layer.weight.mul_(1e-3)
        layer.bias.fill_(1e4)
    with ActivationStats(layer) as stats:
        out = layer(torch.randn(256, 3))
    assert float(stats.stds[0][0]) == pytest.approx(out.double().std().item(), rel=1e-3)
    with torch.no_grad():
        layer.weight.zero_()
    with ActivationStats(layer) as constant:
        layer(torch.randn(256, 3))
    assert float(constant.stds[0][0]) == 0.0


def test_records_follow_the_output_dtype_and_reset_forgets_them():
    layer = nn.Linear(2, 3)
    with ActivationStats([layer], bins=4, near_zero=0.1) as stats:
        for _ in range(3):
            layer(torch.randn(4, 2))
        layer.double()
        out = layer(torch.randn(4, 2, dtype=torch.float64))
    assert stats.n_calls == [4] and stats.hists[0].shape == (4, 4) and stats.near_zero_fractions[0].shape == (4,)
    assert float(stats.means[0][-1]) == pytest.approx(out.mean().item(), rel=1e-12)  # float32 would be ~1e-7
    assert float(stats.stds[0][-1]) == pytest.approx(out.std().item(), rel=1e-12)
    stats.reset()
    assert stats.n_calls == [0] and stats.means[0].shape == (0,) and stats.hists[0].shape == (0, 4)


def test_the_same_module_twice_is_refused():
    layer = nn.Linear(2, 3)
    with pytest.raises(ValueError, match="expected distinct modules, got 2 with repeats"):
        ActivationStats([layer, layer])
    assert hook_count(layer) == 0


def test_reading_what_was_not_recorded_says_so():
    stats = ActivationStats(nn.Identity())
    stats.remove()
    with pytest.raises(ValueError, match="bins=None"):
        stats.hists
    with pytest.raises(ValueError, match="near_zero=None"):
        stats.near_zero_fractions
    for kwargs, message in (({"bins": 0}, "expected bins >= 1 or None, got 0"),
                            ({"near_zero": 0.0}, "expected a positive near_zero threshold"),
                            ({"hist_range": (1, 1)}, "low < high")):
        with pytest.raises(ValueError, match=message):
            ActivationStats(nn.Identity(), **kwargs)
    with pytest.raises(ValueError, match="expected at least one module"):
        ActivationStats([])


def small_digits_like_data(n_train=32, n_valid=16, batch_size=8):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n_train + n_valid, 1, 8, 8, generator=g), torch.randint(0, 10, (n_train + n_valid,), generator=g)
    return DataLoaders(DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=batch_size, shuffle=True),
                       DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=batch_size))


def test_as_a_learner_callback_it_records_training_batches_and_cleans_up():
    model = get_cnn_model()
    stats = ActivationStats(find_modules(model, ConvLayer))
    Learner(model, small_digits_like_data(), cbs=[stats], progress=False).fit(2)
    assert stats.n_calls == [2 * 4] * 4 and hook_count(model) == 0
    with_valid = ActivationStats(find_modules(model, ConvLayer), record_validation=True)
    Learner(model, small_digits_like_data(), cbs=[with_valid], progress=False).fit(1)
    assert with_valid.n_calls == [4 + 2] * 4 and hook_count(model) == 0


def test_as_a_learner_callback_hooks_are_removed_when_training_fails():
    class Boom(Callback):
        def after_step(self, learn):
            raise RuntimeError("boom")

    model = get_cnn_model()
    stats = ActivationStats(find_modules(model, ConvLayer))
    with pytest.raises(RuntimeError, match="boom"):
        Learner(model, small_digits_like_data(), cbs=[stats, Boom()], progress=False).fit(1)
    assert hook_count(model) == 0 and stats.n_calls == [1] * 4


def test_find_modules():
    model = get_cnn_model(norm=cn.BatchNorm2d)
    assert len(find_modules(model, ConvLayer)) == 4
    assert len(find_modules(model, nn.Conv2d, nn.Linear)) == 5
    with pytest.raises(ValueError, match="expected at least one module type"):
        find_modules(model)
