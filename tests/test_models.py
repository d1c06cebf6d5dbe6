"""course_lib.models: conv blocks, the CNN taking any norm factory, GeneralRelu, Kaiming init."""
from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

import course_lib.norms as cn
from course_lib.hooks import Hooks, find_modules
from course_lib.models import (ConvLayer, GeneralRelu, cancels_channel_bias, conv_layer, feature_map_sizes,
                               get_cnn_model, init_cnn)


def test_general_relu_is_a_shifted_clipped_leaky_relu():
    x = torch.linspace(-4, 4, 81)
    torch.testing.assert_close(GeneralRelu()(x), torch.relu(x))
    expected = torch.where(x > 0, x, 0.1 * x) - 0.4
    torch.testing.assert_close(GeneralRelu(leak=0.1, sub=0.4)(x), expected)
    torch.testing.assert_close(GeneralRelu(leak=0.1, sub=0.4, maxv=2.0)(x), expected.clamp_max(2.0))


@pytest.mark.parametrize("norm", [cn.BatchNorm2d, nn.BatchNorm2d, cn.InstanceNorm2d, cn.RunningBatchNorm])
def test_conv_bias_is_dropped_only_before_a_per_channel_norm(norm):
    block = conv_layer(3, 8, norm=norm)
    assert [type(m) for m in block][1:] == [norm, nn.ReLU]
    assert block[0].bias is None
    after_act = conv_layer(3, 8, norm=norm, norm_after_act=True)
    assert [type(m) for m in after_act][1:] == [nn.ReLU, norm]
    assert after_act[0].bias is not None  # conv -> act -> norm: the bias is not cancelled


@pytest.mark.parametrize("norm", [partial(cn.GroupNorm, 2), None])
def test_conv_keeps_its_bias_without_a_per_channel_norm(norm):
    block = conv_layer(3, 8, norm=norm)
    assert block[0].bias is not None
    assert len(block) == (3 if norm else 2)
    assert conv_layer(3, 8, norm=norm, bias=False)[0].bias is None  # explicit choice wins


def test_why_the_bias_is_redundant_for_conv_bn_but_not_for_conv_relu_bn():
    """Teaching point 19, checked: a per-channel constant added before BN leaves BN's output unchanged."""
    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    for norm_after_act, should_change in ((False, False), (True, True)):
        block = conv_layer(3, 4, norm=cn.BatchNorm2d, norm_after_act=norm_after_act, bias=True).train()
        before = block(x)
        with torch.no_grad():
            block[0].bias += torch.tensor([0.5, -1.0, 2.0, 0.3])
        changed = not torch.allclose(block(x), before, atol=1e-5)
        assert changed == should_change
    assert cancels_channel_bias(cn.BatchNorm2d(4)) and not cancels_channel_bias(cn.GroupNorm(2, 4))


@pytest.mark.parametrize("norm", [cn.BatchNorm2d, nn.BatchNorm2d, partial(cn.GroupNorm, 4), partial(nn.GroupNorm, 1),
                                  cn.RunningBatchNorm, None])
def test_cnn_accepts_any_norm_factory(norm):
    model = get_cnn_model(10, norm=norm).train()
    out = model(torch.randn(32, 1, 8, 8))
    assert out.shape == (32, 10)
    out.sum().backward()
    expected = 0 if norm is None else 4
    assert sum(1 for m in model.modules() if isinstance(m, ConvLayer) and len(m) == 3) == expected


def test_spatial_sizes_are_8_8_4_2_1_and_match_the_model():
    assert feature_map_sizes(8) == [8, 8, 4, 2, 1]
    model = get_cnn_model()
    seen = []
    with Hooks(find_modules(model, ConvLayer), lambda hook, m, inp, out: seen.append(out.shape[-1])):
        model(torch.randn(2, 1, 8, 8))
    assert seen == feature_map_sizes(8)[1:]
    assert feature_map_sizes(28, strides=(2, 2, 2, 2, 2), kernel_sizes=[3] * 5) == [28, 14, 7, 4, 2, 1]


def test_instancenorm_cannot_train_on_the_last_1x1_map():
    """Q7: one value per (sample, channel) on a 1x1 map -- the per-instance variance does not exist."""
    model = get_cnn_model(norm=cn.InstanceNorm2d).train()
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        model(torch.randn(4, 1, 8, 8))
    larger_maps = get_cnn_model(norm=cn.InstanceNorm2d, strides=(1, 2, 2, 1)).train()  # 8 -> 8 -> 4 -> 2 -> 2
    assert larger_maps(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_argument_errors_say_what_was_expected():
    with pytest.raises(ValueError, match=r"expected one stride per conv layer \(4\), got 2"):
        get_cnn_model(strides=(1, 2))
    with pytest.raises(ValueError, match="expected an odd kernel size.*got 4"):
        conv_layer(1, 2, ks=4)


def test_kaiming_init_gives_variance_two_over_fan_in():
    torch.manual_seed(0)
    model = init_cnn(nn.Sequential(nn.Conv2d(64, 256, 3), nn.Linear(512, 512)))
    conv, linear = model
    assert conv.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.03)
    assert linear.weight.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.03)
    assert torch.all(conv.bias == 0) and torch.all(linear.bias == 0)
    leaky = init_cnn(nn.Sequential(nn.Conv2d(64, 256, 3)), leak=0.5)[0]
    assert leaky.weight.std().item() == pytest.approx((2 / (1.25 * 64 * 9)) ** 0.5, rel=0.03)


def test_cnn_default_init_is_kaiming_and_reproducible():
    torch.manual_seed(1)
    a = get_cnn_model()
    torch.manual_seed(1)
    b = get_cnn_model()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    first_conv = a[0][0]
    assert first_conv.weight.std().item() == pytest.approx((2 / 25) ** 0.5, rel=0.35)  # only 200 weights
