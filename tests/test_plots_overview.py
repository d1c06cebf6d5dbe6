"""course_lib.plots overview (Q9): the highlighted values are exactly the ones PyTorch's layers reduce together."""
from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

import course_lib.norms as cn
from course_lib import plots

N, C, HW, G = 3, 6, 5, 2

TORCH_LAYERS = {
    "BatchNorm": lambda: nn.BatchNorm2d(C, affine=False),
    "LayerNorm": lambda: nn.LayerNorm([C, 1, HW], elementwise_affine=False),
    "InstanceNorm": lambda: nn.InstanceNorm2d(C),
    "GroupNorm": lambda: nn.GroupNorm(G, C, affine=False),
    "RMSNorm": lambda: nn.RMSNorm([C, 1, HW], elementwise_affine=False),
    "RunningBatchNorm": lambda: cn.RunningBatchNorm(C, affine=False),  # no torch equivalent: course_lib's
}


@pytest.mark.parametrize("layer", plots.NORMALIZATION_LAYERS)
def test_mask_is_what_the_layer_reduces(layer):
    # y[0, 0, 0, 0] depends on exactly the inputs that share its statistic: read that set off the gradient.
    x = torch.randn(N, C, 1, HW, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    module = TORCH_LAYERS[layer]().double().train()
    (grad,) = torch.autograd.grad(module(x)[0, 0, 0, 0], x)
    expected = grad.abs().view(N, C, HW) > 1e-12
    assert torch.equal(plots.shared_statistic_mask(layer, N, C, HW, G), expected)


def test_mask_sizes_and_errors():
    sizes = {layer: int(plots.shared_statistic_mask(layer, 4, 6, 5, 3).sum()) for layer in plots.NORMALIZATION_LAYERS}
    assert sizes == {"BatchNorm": 20, "LayerNorm": 30, "InstanceNorm": 5, "GroupNorm": 10, "RMSNorm": 30,
                     "RunningBatchNorm": 20}
    with pytest.raises(ValueError, match="expected one of"):
        plots.shared_statistic_mask("WeightNorm")
    with pytest.raises(ValueError, match="dividing"):
        plots.shared_statistic_mask("GroupNorm", num_channels=6, num_groups=4)


def test_overview_figure_has_one_titled_cube_per_layer_and_a_legend():
    fig = plots.plot_normalization_overview(("BatchNorm", "GroupNorm", "RunningBatchNorm"))
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("BatchNorm") and "per sample and group" in titles[1]
    assert all(ax.get_xlabel() and ax.get_ylabel() and ax.get_zlabel() for ax in fig.axes)
    assert "earlier batches" in fig.axes[2].get_xlabel() and fig.legends
    with pytest.raises(ValueError, match="at least one layer"):
        plots.plot_normalization_overview(())
