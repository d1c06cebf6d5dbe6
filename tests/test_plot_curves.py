"""course_lib.plots.plot_curves and match_ylims: the sweep/history figures of Q1-Q3."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from course_lib.plots import match_ylims, plot_curves, plot_stats


def test_plot_curves_draws_one_labelled_line_per_curve():
    fig = plot_curves([0.1, 1.0, 10.0], {"a": [1, 2, 3], "b": [3, 2, 1]}, "sweep", "learning rate", "accuracy",
                      styles={"b": {"fmt": "--", "color": "black"}}, logx=True, hline=(0.1, "chance"))
    ax = fig.axes[0]
    assert ax.get_title() == "sweep" and ax.get_xlabel() == "learning rate" and ax.get_ylabel() == "accuracy"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b", "chance"]
    assert ax.get_lines()[1].get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "chance"]
    assert plt.get_fignums() == []  # nothing left open in pyplot


def test_plot_curves_checks_lengths():
    with pytest.raises(ValueError, match="expected 2 values for curve 'a'"):
        plot_curves([1, 2], {"a": [1, 2, 3]}, "t", "x", "y")


class _Stats:
    def __init__(self, scale):
        import torch
        self.means = [torch.linspace(0, scale, 5, dtype=torch.float64)]
        self.stds = [torch.linspace(0, 2 * scale, 5, dtype=torch.float64)]


def test_match_ylims_gives_every_figure_the_union_of_ranges():
    small, large = plot_stats(_Stats(1.0)), plot_stats(_Stats(10.0))
    match_ylims([small, large])
    for column in (0, 1):
        assert small.axes[column].get_ylim() == large.axes[column].get_ylim()
        assert small.axes[column].get_ylim()[1] >= (10.0, 20.0)[column]
