"""Which values share one statistic (Q6-Q9): GroupNorm's groups, BatchNorm vs LayerNorm, all layers side by
side; derived from each layer's ``statistic_ids``."""
from __future__ import annotations


import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from course_lib import norms
from course_lib.plots.figures import new_figure


def group_statistic_ids(num_channels: int, num_groups: int, batch_size: int = 2, height: int = 4,
                        width: int = 4) -> Tensor:
    """Integer tensor ``(N, C, H, W)``: elements with the same id are normalized with the same mean and variance.

    GroupNorm splits the C channels into ``num_groups`` consecutive groups of ``C / G`` channels and computes
    one statistic per (sample, group), over (C/G, H, W): id = ``n * G + c // (C / G)``. ``G = 1`` gives
    LayerNorm's statistics (one per sample), ``G = C`` InstanceNorm's (one per sample and channel).
    The layer itself says which axes it reduces: :meth:`course_lib.norms.GroupNorm.statistic_ids`.
    """
    if num_groups < 1 or num_channels % num_groups != 0:
        raise ValueError(f"expected num_groups dividing num_channels={num_channels}, got {num_groups}")
    return norms.GroupNorm(num_groups, num_channels).statistic_ids((batch_size, num_channels, height, width))


def plot_group_norm(num_channels: int, num_groups: int, height: int = 4, width: int = 4,
                    samples: int = 2) -> Figure:
    """One panel per sample: channels (rows) x spatial positions (columns), coloured by shared statistic.

    Same colour = same mean and variance. Different samples never share (colours differ between panels).
    """
    ids = group_statistic_ids(num_channels, num_groups, samples, height, width)
    per_group = num_channels // num_groups
    cmap = distinct_colormap(samples * num_groups)
    fig, axes = new_figure(1, samples, figsize=(3.4 * samples, 3.2))
    for n, ax in enumerate(axes[0]):
        ax.imshow(ids[n].reshape(num_channels, height * width).numpy(), cmap=cmap, vmin=-0.5,
                  vmax=samples * num_groups - 0.5, aspect="auto", interpolation="nearest")
        ax.set_yticks(range(num_channels))
        ax.hlines([c - 0.5 for c in range(per_group, num_channels, per_group)], -0.5, height * width - 0.5,
                  colors="white", lw=2)
        ax.set(title=f"sample {n}", xlabel="spatial position h*W + w", ylabel="channel c")
    kind = " = LayerNorm statistics" if num_groups == 1 else (" = InstanceNorm statistics"
                                                              if num_groups == num_channels else "")
    channels = f"{per_group} channel{'s' if per_group != 1 else ''}"
    positions = f"{height}x{width} position{'s' if height * width != 1 else ''}"
    fig.suptitle(f"GroupNorm(G={num_groups}, C={num_channels}){kind}:\n{channels} x {positions} per statistic")
    return fig


def distinct_colormap(n: int) -> matplotlib.colors.ListedColormap:
    """A colormap of ``n`` pairwise different colours, for ``n`` integer ids shown with ``vmin=-0.5, vmax=n-0.5``.

    Up to 20: ``tab20`` (resampled evenly, as the course always drew it); up to 60: the colours of ``tab20``,
    ``tab20b`` and ``tab20c`` in turn (``tab20`` alone would repeat colours past 20, e.g. 24 ids for
    GroupNorm(12, 12) on two samples); beyond: ``n`` evenly spaced colours of ``turbo``.
    """
    if n <= 20:
        return matplotlib.colormaps["tab20"].resampled(max(n, 2))
    if n <= 60:
        colours = [c for name in ("tab20", "tab20b", "tab20c") for c in matplotlib.colormaps[name].colors]
        return matplotlib.colors.ListedColormap(colours[:n])
    return matplotlib.colors.ListedColormap(matplotlib.colormaps["turbo"](np.linspace(0, 1, n)))


def batch_statistic_ids(num_channels: int, batch_size: int = 2, height: int = 4, width: int = 4) -> Tensor:
    """Integer tensor ``(N, C, H, W)`` for BatchNorm: id = ``c``, one statistic per channel over (N, H, W).

    The counterpart of :func:`group_statistic_ids`: values with the same id share one mean and variance, and
    here that id is the same in every sample of the batch (:meth:`course_lib.norms.BatchNorm2d.statistic_ids`).
    """
    return norms.BatchNorm2d(num_channels).statistic_ids((batch_size, num_channels, height, width))


def plot_batch_vs_layer_norm(num_channels: int = 6, samples: int = 3, height: int = 3, width: int = 3) -> Figure:
    """BatchNorm (top row) against LayerNorm (bottom row), one panel per sample of a batch.

    Each panel shows one sample's channels (rows) x spatial positions (columns), coloured by the statistic
    the value is normalized with (:func:`batch_statistic_ids`, :func:`group_statistic_ids` with one group).
    BatchNorm: one colour per channel row, the same colours in every sample's panel (a channel's statistic
    mixes the whole batch); LayerNorm: one colour per panel, a different one in each (per sample). Q6.
    """
    from matplotlib.patches import Patch

    rows = (("BatchNorm", batch_statistic_ids(num_channels, samples, height, width), "tab10", num_channels,
             [f"channel {c}" for c in range(num_channels)]),
            ("LayerNorm", group_statistic_ids(num_channels, 1, samples, height, width), "Dark2", samples,
             [f"sample {n}" for n in range(samples)]))
    fig, axes = new_figure(2, samples, figsize=(2.8 * samples + 1.8, 5.8))
    for (name, ids, cmap_name, count, names), row_axes in zip(rows, axes):
        cmap = matplotlib.colormaps[cmap_name].resampled(max(count, 2))
        for n, ax in enumerate(row_axes):
            ax.imshow(ids[n].reshape(num_channels, height * width).numpy(), cmap=cmap, vmin=-0.5, vmax=count - 0.5,
                      aspect="auto", interpolation="nearest")
            ax.set_yticks(range(num_channels))
            ax.set(title=f"{name}: sample {n}", xlabel="spatial position h*W + w", ylabel="channel c")
        row_axes[-1].legend(handles=[Patch(facecolor=cmap(k), label=f"statistic of {names[k]}") for k in range(count)],
                            loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small", title=name)
    fig.suptitle("Same colour = same mean and variance. BatchNorm: one per channel, over the whole batch; "
                 "LayerNorm: one per sample")
    return fig


# ----------------------------------------------------------------------------------------------------------
# All layers side by side (closing overview of Q9): which values share one statistic

NORMALIZATION_LAYERS = ("BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "RMSNorm", "RunningBatchNorm")
_REDUCED_OVER = {"BatchNorm": "(N, H·W) per channel", "LayerNorm": "(C, H·W) per sample",
                 "InstanceNorm": "(H·W) per sample and channel", "GroupNorm": "(C/G, H·W) per sample and group",
                 "RMSNorm": "(C, H·W) per sample, no centring", "RunningBatchNorm": "(N, H·W) per channel + history"}


def shared_statistic_mask(layer: str, batch_size: int = 4, num_channels: int = 6, spatial: int = 5,
                          num_groups: int = 2) -> Tensor:
    """Boolean ``(N, C, H*W)``: the values that share one mean and variance with value ``(0, 0, 0)`` in ``layer``.

    ``layer`` is one of :data:`NORMALIZATION_LAYERS`. BatchNorm and RunningBatchNorm reduce over (N, H*W) per
    channel (RunningBatchNorm also merges earlier batches, which a single input cannot show); LayerNorm and
    RMSNorm over (C, H*W) per sample (``normalized_shape = (C, H, W)``); InstanceNorm over H*W per sample and
    channel; GroupNorm(``num_groups``, C) over the C/G channels of the first group and H*W, per sample.
    """
    if layer not in NORMALIZATION_LAYERS:
        raise ValueError(f"expected one of {NORMALIZATION_LAYERS}, got {layer!r}")
    if num_groups < 1 or num_channels % num_groups != 0:
        raise ValueError(f"expected num_groups dividing num_channels={num_channels}, got {num_groups}")
    layers = {"BatchNorm": lambda: norms.BatchNorm1d(num_channels),  # RunningBatchNorm: BatchNorm's axes
              "RunningBatchNorm": lambda: norms.BatchNorm1d(num_channels),
              "LayerNorm": lambda: norms.LayerNorm([num_channels, spatial]),
              "RMSNorm": lambda: norms.RMSNorm([num_channels, spatial]),
              "InstanceNorm": lambda: norms.InstanceNorm1d(num_channels),
              "GroupNorm": lambda: norms.GroupNorm(num_groups, num_channels)}
    ids = layers[layer]().statistic_ids((batch_size, num_channels, spatial))
    return ids == ids[0, 0, 0]


def plot_normalization_overview(layers=NORMALIZATION_LAYERS, batch_size: int = 4, num_channels: int = 6,
                                spatial: int = 5, num_groups: int = 2, history: int = 2) -> Figure:
    """One cube per layer (Wu & He 2018, Fig. 2 style): the input ``(N, C, H*W)``, with the values that share
    one statistic (:func:`shared_statistic_mask`) highlighted. RunningBatchNorm's cube gets ``history`` extra
    slices along N for the earlier batches merged into its statistics; RMSNorm's block is coloured differently
    (a mean square, no mean)."""
    from matplotlib.patches import Patch

    layers = tuple(layers)
    if not layers:
        raise ValueError("expected at least one layer to draw, got none")
    colours = {"shared": "#2b8cbe", "rms": "#e6550d", "past": "#a6cee3c0", "other": "#e0e0e040"}
    cols = min(3, len(layers))
    rows = -(-len(layers) // cols)
    fig = plt.figure(figsize=(4.2 * cols, 4.0 * rows + 0.6))
    plt.close(fig)
    for k, layer in enumerate(layers):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        mask = shared_statistic_mask(layer, batch_size, num_channels, spatial, num_groups).numpy()
        extra = history if layer == "RunningBatchNorm" else 0
        facecolors = np.full((batch_size + extra, num_channels, spatial), colours["other"], dtype=object)
        facecolors[extra:][mask] = colours["rms"] if layer == "RMSNorm" else colours["shared"]
        facecolors[:extra, 0, :] = colours["past"]
        ax.voxels(np.ones(facecolors.shape, dtype=bool), facecolors=facecolors, edgecolor="#555555", linewidth=0.3)
        ax.set_xlabel("N (batch)" + (" + earlier batches" if extra else ""), labelpad=-8)
        ax.set_ylabel("C (channels)", labelpad=-8)
        ax.set_zlabel("H·W (spatial)", labelpad=-8)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        ax.set_title(f"{layer}\none statistic over {_REDUCED_OVER[layer]}", fontsize=10)
        ax.view_init(elev=20, azim=-60)
    handles = [Patch(facecolor=colours["shared"], label="values sharing one mean and variance"),
               Patch(facecolor=colours["rms"], label="RMSNorm: values sharing one mean square (no mean)"),
               Patch(facecolor=colours["past"][:7], label="RunningBatchNorm: earlier batches, weight 1 - a"),
               Patch(facecolor=colours["other"][:7], label="other values (other statistics)")]
    fig.suptitle("Which values share one statistic: each cube is an input (N, C, H·W)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False)
    return fig
