"""Matplotlib views of DGD-Fusion's intermediates (paper §1.2-1.3) and of a training run's losses.

Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot, so concurrent requests do not share
global state. Maps come from ``FusionResult.intermediates`` (``fusion_core.Intermediates``, shapes there). Every
map of one family is drawn on one fixed scale (gates, attention and weights all run from 0 to 1) with one
colour bar, so a map that barely moves looks flat instead of being stretched into a pattern.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from fusion_core import Intermediates


def weight_figure(weight: np.ndarray | None) -> Figure | None:
    """The weight map w_A (H, W) on the absolute 0-to-1 scale: the share of A in the result."""
    if weight is None:
        return None
    height, width = weight.shape
    figure = Figure(figsize=(6.0, max(2.4, 5.2 * height / width)), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(weight, cmap="coolwarm", vmin=0, vmax=1)
    bar = figure.colorbar(image, ax=ax, shrink=0.9, ticks=[0, 0.5, 1])
    bar.ax.set_yticklabels(["0: all B", "0.5", "1: all A"])
    ax.set_title("Share of A in the result (w_A)", fontsize=10)
    _bare(ax)
    return figure


def gate_figure(intermediates: Intermediates, timesteps: tuple[int, ...],
                correlations: dict[str, float] | None = None) -> Figure | None:
    """GFS gate maps (mean over channels), one column per layer and one row per feature timestep, all on the
    one fixed scale 0 to 1 with one colour bar; each column titled with its correlation with the layer's map
    for random noise when given."""
    layers = list(intermediates.gates)
    if not layers:
        return None
    correlations = correlations or {}
    figure = Figure(figsize=(1.45 * len(layers) + 1.4, 1.35 * len(timesteps) + 0.9), layout="constrained")
    axes = np.array(figure.subplots(len(timesteps), len(layers), squeeze=False))
    for column, name in enumerate(layers):
        for row, t in enumerate(timesteps):
            ax = axes[row, column]
            image = ax.imshow(intermediates.gates[name][row], cmap="magma", vmin=0, vmax=1)  # (h, w)
            _bare(ax)
            if row == 0:
                noise = f"\nr = {correlations[name]:.2f}" if name in correlations else ""
                ax.set_title(f"{name}{noise}", fontsize=8)
            if column == 0:
                ax.set_ylabel(f"t = {t}", fontsize=8)
    bar = figure.colorbar(image, ax=axes, shrink=0.9, ticks=[0, 0.5, 1])
    bar.ax.set_yticklabels(["0: dropped", "0.5", "1: kept"], fontsize=7)
    title = "Gate maps of each GFS layer (one scale for all)"
    if correlations:
        title += "; r: correlation with the layer's map for random noise"
    figure.suptitle(title, fontsize=9)
    return figure


def expert_figure(intermediates: Intermediates, timesteps: tuple[int, ...],
                  noise: dict[str, np.ndarray] | None = None) -> Figure | None:
    """Bar charts of the expert weights alpha (T, M) of every DFE layer on the one scale 0 to 1, one bar group
    per expert; crosses mark the weights for random noise when given."""
    layers = list(intermediates.experts)
    if not layers:
        return None
    columns = min(5, len(layers))
    rows = -(-len(layers) // columns)
    figure = Figure(figsize=(2.6 * columns, 1.9 * rows + 0.8), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, sharey=True)).ravel()
    for ax, name in zip(axes, layers, strict=False):  # the grid may have spare axes
        alpha = intermediates.experts[name]  # (T, M)
        experts = np.arange(alpha.shape[1])
        width = 0.8 / len(timesteps)
        for i, t in enumerate(timesteps):
            x = experts + (i - (len(timesteps) - 1) / 2) * width
            ax.bar(x, alpha[i], width, label=f"t = {t}", color=f"C{i}")
            if noise is not None and name in noise:
                ax.scatter(x, noise[name][i], marker="x", color="black", s=14, linewidths=1,
                           label="for noise" if i == 0 else None, zorder=3)
        ax.set_xticks(experts, [f"E{m + 1}" for m in experts], fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, 1)
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    axes[0].set_ylabel("weight")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=len(timesteps) + 1,
                  fontsize=8)
    figure.suptitle("Expert weights of each DFE layer, per feature timestep (one scale for all)", fontsize=9)
    return figure


def attention_figure(intermediates: Intermediates) -> Figure | None:
    """The GLSA attention maps M_c (mean over channels) of the fusion head, on the one scale 0 to 1 with one
    colour bar."""
    attention = intermediates.attention
    if not attention:
        return None
    figure = Figure(figsize=(3.6 * len(attention) + 1.2, 3.2), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(attention)))
    for ax, (stage, values) in zip(axes, attention.items(), strict=True):
        image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1)  # (h, w)
        ax.set_title(f"{stage} (fusion stage {stage.removeprefix('glsa')})", fontsize=9)
        _bare(ax)
    figure.colorbar(image, ax=axes, shrink=0.9, ticks=[0, 0.5, 1], label="attention M_c")
    figure.suptitle("Attention maps of the fusion head (GLSA; one scale for all)", fontsize=9)
    return figure


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def loss_figure(history: list[dict[str, float]]) -> Figure:
    """The training loss per step, one line per stage (log scale: the losses of the stages differ)."""
    figure = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = figure.subplots()
    for stage, key, label in ((1, "diffusion", "stage 1: diffusion loss"), (2, "fusion", "stage 2: fusion loss")):
        points = [(h["step"], h[key]) for h in history if h["stage"] == stage and key in h]
        if points:
            ax.plot(*zip(*points, strict=True), label=label, marker="." if len(points) < 30 else None)
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)  # steps are whole
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if history:  # below the axes, never over the curves
        figure.legend(loc="outside lower center", ncols=2, fontsize=8)
    return figure
