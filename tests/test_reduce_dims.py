"""One description of the axes per layer: ``reduce_dims`` (and ``reduce_dims_of`` for torch.nn's layers) is what
the layer normalizes over -- checked against PyTorch's own layers, not against a second table."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import course_lib.norms as cn

CASES = [  # (torch.nn layer, course_lib twin, input shape)
    (nn.BatchNorm1d(3, affine=False), cn.BatchNorm1d(3, affine=False), (5, 3, 7)),
    (nn.BatchNorm2d(3, affine=False), cn.BatchNorm2d(3, affine=False), (4, 3, 5, 6)),
    (nn.BatchNorm3d(2, affine=False), cn.BatchNorm3d(2, affine=False), (3, 2, 3, 4, 5)),
    (nn.InstanceNorm1d(3), cn.InstanceNorm1d(3), (2, 3, 9)),
    (nn.InstanceNorm2d(3), cn.InstanceNorm2d(3), (2, 3, 5, 6)),
    (nn.LayerNorm(6, elementwise_affine=False), cn.LayerNorm(6, elementwise_affine=False), (4, 5, 6)),
    (nn.LayerNorm((5, 6), elementwise_affine=False), cn.LayerNorm((5, 6), elementwise_affine=False), (2, 3, 5, 6)),
]


@pytest.mark.parametrize("reference, twin, shape", CASES, ids=lambda v: type(v).__name__ if isinstance(v, nn.Module)
                         else str(v))
def test_reduce_dims_is_what_torch_normalizes_over(reference, twin, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 2
    dims = cn.reduce_dims_of(reference, x.dim())
    assert dims == twin.reduce_dims(x.dim()) == cn.reduce_dims_of(twin, x.dim())
    by_hand = (x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(reference.double().train()(x), by_hand)


def test_rms_norm_reduces_the_trailing_axes_without_centring():
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 1
    reference = nn.RMSNorm((4, 5), eps=1e-6, elementwise_affine=False).double()
    dims = cn.reduce_dims_of(reference, x.dim())
    assert dims == (1, 2)
    torch.testing.assert_close(reference(x), x / torch.sqrt(x.square().mean(dims, keepdim=True) + 1e-6))


def test_group_norm_and_other_modules_have_no_input_axes():
    """GroupNorm's statistics reduce a grouped view (its statistic_ids say which elements share one); a layer that
    is not a normalization has none."""
    assert cn.reduce_dims_of(nn.GroupNorm(2, 4), 4) is None and cn.reduce_dims_of(cn.GroupNorm(2, 4), 4) is None
    assert cn.reduce_dims_of(nn.Linear(3, 3), 2) is None
    ids = cn.GroupNorm(2, 4).statistic_ids((1, 4, 2, 2))
    assert ids[0, :2].unique().numel() == 1 and ids[0, 2:].unique().numel() == 1 and ids[0, 0, 0, 0] != ids[0, 2, 0, 0]


def test_running_batchnorm_states_batchnorms_axes():
    assert cn.RunningBatchNorm(3).reduce_dims(4) == cn.BatchNorm2d(3).reduce_dims(4) == (0, 2, 3)
