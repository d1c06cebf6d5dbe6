r"""Figures of the course: activation statistics, running estimates, GroupNorm groups, training curves.

Every function returns a ``matplotlib.figure.Figure`` (titled, axes labelled, legend where there are several
lines) and leaves nothing open in pyplot, so figures do not pile up in notebooks or tests; a notebook shows
the returned figure by itself. Data come from :class:`course_lib.hooks.ActivationStats` (Q3),
:class:`course_lib.experiments.RunningEstimates` (Q1) and :class:`course_lib.training.Recorder` (Q2, Q5).
"""
from course_lib.plots.activations import color_dim, dead_chart, plot_stats
from course_lib.plots.curves import (match_ylims, plot_curves, plot_over_seeds, plot_recorder_accuracy,
                                     plot_recorder_loss, plot_recorder_param)
from course_lib.plots.figures import figure_to_png, new_figure
from course_lib.plots.groups import (NORMALIZATION_LAYERS, batch_statistic_ids, group_statistic_ids,
                                     plot_batch_vs_layer_norm, plot_group_norm, plot_normalization_overview,
                                     shared_statistic_mask)
from course_lib.plots.running import plot_running_error, plot_running_estimates

__all__ = ["new_figure", "figure_to_png", "plot_stats", "color_dim", "dead_chart", "plot_running_estimates",
           "plot_running_error", "group_statistic_ids", "plot_group_norm", "batch_statistic_ids",
           "plot_batch_vs_layer_norm", "plot_recorder_loss",
           "plot_recorder_accuracy", "plot_recorder_param", "plot_curves", "plot_over_seeds", "match_ylims",
           "NORMALIZATION_LAYERS", "shared_statistic_mask", "plot_normalization_overview"]

# The public name of each figure is course_lib.plots.<name> (the API reference, tracebacks read the same); the
# files only group them by lecture topic.
for _public in __all__:
    if callable(globals()[_public]):
        globals()[_public].__module__ = __name__
del _public
