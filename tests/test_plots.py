"""course_lib.plots: every figure carries the data it was given (lines' ydata, image arrays), titles and labels."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

import course_lib.norms as cn
from course_lib import plots
from course_lib.hooks import ActivationStats, find_modules
from course_lib.models import ConvLayer, get_cnn_model
from course_lib.experiments import track_running_estimates
from course_lib.stats import ema_noise_std
from course_lib.training import Learner, ParamScheduler, sched_lin
from torch.utils.data import DataLoader, TensorDataset
from course_lib.data import DataLoaders


@pytest.fixture(scope="module")
def stats():
    torch.manual_seed(0)
    model = get_cnn_model(norm=cn.BatchNorm2d)
    with ActivationStats(find_modules(model, ConvLayer), bins=8, hist_range=(0, 4), near_zero=0.1) as recorded:
        for _ in range(5):
            model(torch.randn(16, 1, 8, 8))
    return recorded


@pytest.fixture(scope="module")
def estimates():
    g = torch.Generator().manual_seed(0)
    return track_running_estimates([torch.randn(20, 2, generator=g) for _ in range(60)], momentum=0.1)


@pytest.fixture(autouse=True)
def nothing_left_open_in_pyplot():
    yield
    assert plt.get_fignums() == []


def assert_titled_and_labelled(fig: Figure):
    assert isinstance(fig, Figure)
    assert fig._suptitle is not None or any(ax.get_title() for ax in fig.axes)
    for ax in fig.axes:
        if ax.has_data():
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def test_plot_stats_draws_every_layers_mean_and_std(stats):
    fig = plots.plot_stats(stats)
    assert_titled_and_labelled(fig)
    ax_mean, ax_std = fig.axes
    for i, (mean_line, std_line) in enumerate(zip(ax_mean.get_lines(), ax_std.get_lines())):
        np.testing.assert_allclose(mean_line.get_ydata(), stats.means[i].numpy())
        np.testing.assert_allclose(std_line.get_ydata(), stats.stds[i].numpy())
    assert [t.get_text() for t in ax_std.get_legend().get_texts()] == [f"layer {i}" for i in range(4)]
    with pytest.raises(ValueError, match="expected 4 labels"):
        plots.plot_stats(stats, labels=["a"])


def test_color_dim_shows_log1p_histograms_with_time_left_to_right(stats):
    fig = plots.color_dim(stats, labels=["c1", "c2", "c3", "c4"])
    assert_titled_and_labelled(fig)
    for ax, hist in zip(fig.axes, stats.hists):
        image = ax.get_images()[0]
        np.testing.assert_allclose(image.get_array(), torch.log1p(hist).T.numpy())
        assert image.origin == "lower" and image.get_extent() == [0, 5, 0, 4]
    assert [ax.get_title() for ax in fig.axes] == ["c1", "c2", "c3", "c4"]


def test_dead_chart_draws_near_zero_fractions(stats):
    fig = plots.dead_chart(stats)
    assert_titled_and_labelled(fig)
    ax = fig.axes[0]
    for line, fraction in zip(ax.get_lines(), stats.near_zero_fractions):
        np.testing.assert_allclose(line.get_ydata(), fraction.numpy())
    assert ax.get_ylim() == (0, 1) and "0.1" in ax.get_title()


def test_running_estimates_plot_has_ema_cumulative_exact_and_noise_band(estimates):
    fig = plots.plot_running_estimates(estimates, channel=1)
    assert_titled_and_labelled(fig)
    ax_mean, ax_var = fig.axes
    lines = {line.get_label(): line.get_ydata() for line in ax_mean.get_lines()}
    np.testing.assert_allclose(lines["EMA (momentum=0.1)"], estimates.ema_mean[:, 1].numpy())
    np.testing.assert_allclose(lines["cumulative (momentum=None)"], estimates.cumulative_mean[:, 1].numpy())
    np.testing.assert_allclose(lines["exact (all values so far)"], estimates.exact_mean[:, 1].numpy())
    np.testing.assert_allclose(lines["batch mean"], estimates.batch_mean[:, 1].numpy())
    var_lines = {line.get_label(): line.get_ydata() for line in ax_var.get_lines()}
    np.testing.assert_allclose(var_lines["EMA (momentum=0.1)"], estimates.ema_var[:, 1].numpy())
    band = [c for c in ax_mean.collections if isinstance(c, PolyCollection)][0]
    upper = band.get_paths()[0].vertices[:, 1].max()
    expected = estimates.exact_mean[:, 1] + ema_noise_std(0.1, (estimates.exact_var[:, 1] / 20).sqrt())
    assert upper == pytest.approx(expected.max().item(), rel=1e-5)
    assert ax_var.get_legend() is not None
    left = [t.get_text() for t in ax_mean.get_legend().get_texts()]  # the left panel names the grey dots too
    assert left[0] == "batch means (most off-scale)" and "EMA (momentum=0.1)" in left


def test_running_error_plot_compares_errors_with_the_predicted_noise(estimates):
    fig = plots.plot_running_error(estimates)
    assert_titled_and_labelled(fig)
    ax = fig.axes[0]
    ema, cumulative, predicted = ax.get_lines()
    np.testing.assert_allclose(ema.get_ydata(), (estimates.ema_mean[:, 0] - estimates.exact_mean[:, 0]).abs().numpy(),
                               rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(predicted.get_ydata(),
                               ema_noise_std(0.1, (estimates.exact_var[:, 0] / 20).sqrt()).numpy(), rtol=1e-6)
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="expected at least 2 values per channel"):
        plots.plot_running_error(estimates, values_per_batch=1)


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_group_ids_are_exactly_the_elements_groupnorm_normalizes_together(groups):
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    y = cn.GroupNorm(groups, 6, affine=False).double()(x)
    ids = plots.group_statistic_ids(6, groups, 3, 4, 5)
    assert ids.shape == x.shape and ids.unique().numel() == 3 * groups
    for i in ids.unique():
        members = y[ids == i]
        assert members.mean().abs() < 1e-10 and members.var(unbiased=False).item() == pytest.approx(1, rel=1e-4)


def test_group_ids_of_layernorm_and_instancenorm_extremes():
    assert torch.equal(plots.group_statistic_ids(4, 1, 2, 1, 1).flatten(), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    assert torch.equal(plots.group_statistic_ids(4, 4, 1, 1, 1).flatten(), torch.arange(4))
    with pytest.raises(ValueError, match="expected num_groups dividing num_channels=6, got 4"):
        plots.group_statistic_ids(6, 4)


def test_group_norm_picture_shows_the_ids_per_sample():
    fig = plots.plot_group_norm(6, 3, height=10, width=10, samples=2)
    assert_titled_and_labelled(fig)
    ids = plots.group_statistic_ids(6, 3, 2, 10, 10)
    for n, ax in enumerate(fig.axes):
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), ids[n].reshape(6, 100).numpy())
    assert "G=3" in fig._suptitle.get_text()
    assert "LayerNorm" in plots.plot_group_norm(6, 1)._suptitle.get_text()
    assert "InstanceNorm" in plots.plot_group_norm(6, 6)._suptitle.get_text()
    assert "1 channel x" in plots.plot_group_norm(6, 6)._suptitle.get_text()
    assert "2 channels x 10x10 positions" in fig._suptitle.get_text()


@pytest.mark.parametrize("channels, groups, samples", [(6, 3, 2), (12, 12, 2), (16, 16, 3), (64, 32, 2)])
def test_group_norm_picture_gives_every_statistic_its_own_colour(channels, groups, samples):
    fig = plots.plot_group_norm(channels, groups, height=2, width=2, samples=samples)
    colours = set()
    for ax in fig.axes:
        image = ax.get_images()[0]
        colours |= {tuple(c) for c in image.cmap(image.norm(np.unique(image.get_array()))).round(6)}
    assert len(colours) == samples * groups


def test_batch_ids_are_exactly_the_elements_batchnorm_normalizes_together():
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    y = cn.BatchNorm2d(6, affine=False).double()(x)
    ids = plots.batch_statistic_ids(6, 3, 4, 5)
    assert ids.shape == x.shape and ids.unique().numel() == 6
    for i in ids.unique():
        members = y[ids == i]
        assert members.mean().abs() < 1e-10 and members.var(unbiased=False).item() == pytest.approx(1, rel=1e-4)


def test_batch_vs_layer_norm_picture_shows_both_id_maps_per_sample():
    fig = plots.plot_batch_vs_layer_norm(num_channels=4, samples=3, height=2, width=3)
    assert_titled_and_labelled(fig)
    bn_ids, ln_ids = plots.batch_statistic_ids(4, 3, 2, 3), plots.group_statistic_ids(4, 1, 3, 2, 3)
    for k, ax in enumerate(fig.axes):
        ids = bn_ids if k < 3 else ln_ids
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), ids[k % 3].reshape(4, 6).numpy())
    assert [len(ax.get_legend().get_texts()) for ax in fig.axes if ax.get_legend()] == [4, 3]

def test_recorder_plots_draw_the_recorded_numbers():
    torch.manual_seed(0)
    x, y = torch.randn(34, 4), torch.randint(0, 3, (34,))
    data = DataLoaders(DataLoader(TensorDataset(x[:24], y[:24]), batch_size=8, shuffle=True),
                       DataLoader(TensorDataset(x[24:], y[24:]), batch_size=8))
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), cn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    learn = Learner(model, data, cbs=[ParamScheduler("lr", sched_lin(0.1, 0.01))], progress=False)
    learn.fit(2)
    rec = learn.recorder
    loss = rec.plot_loss()
    assert_titled_and_labelled(loss)
    train_line, valid_line = loss.axes[0].get_lines()
    np.testing.assert_allclose(train_line.get_ydata(), rec.losses)
    np.testing.assert_allclose(valid_line.get_xdata(), [3, 6])  # end of each epoch of 3 batches
    np.testing.assert_allclose(valid_line.get_ydata(), [e["valid_loss"] for e in rec.epochs])
    accuracy = rec.plot_accuracy()
    np.testing.assert_allclose(accuracy.axes[0].get_lines()[1].get_ydata(), [e["valid_accuracy"] for e in rec.epochs])
    lr = rec.plot_lr()
    np.testing.assert_allclose(lr.axes[0].get_lines()[0].get_ydata(), rec.hypers["lr"])
    with pytest.raises(ValueError, match="expected a recorded hyper-parameter \\(lr, momentum\\), got 'betas'"):
        rec.plot_lr("betas")


def test_figure_to_png_gives_png_bytes(estimates):
    png = plots.figure_to_png(plots.plot_running_estimates(estimates))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
