"""Matplotlib views of DGD-Fusion's intermediates (paper §1.2-1.3) and of a training run's losses.

Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot, so concurrent requests do not share
global state. Maps come from ``FusionResult.intermediates``: "<layer>.dfe" expert weights (T, M),
"<layer>.gfs" gate maps (T, h, w), "glsa<k>" attention maps (h, w).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def expert_figure(intermediates: dict[str, np.ndarray], timesteps: tuple[int, ...]) -> Figure | None:
    """Bar charts of the expert weights alpha (T, M) of every DFE layer, one bar group per expert."""
    layers = [name for name in intermediates if name.endswith(".dfe")]
    if not layers:
        return None
    columns = min(4, len(layers))
    rows = -(-len(layers) // columns)
    figure = Figure(figsize=(3.4 * columns, 2.5 * rows + 0.8), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, sharey=True)).ravel()
    for ax, name in zip(axes, layers):
        alpha = intermediates[name]  # (T, M)
        experts = np.arange(alpha.shape[1])
        width = 0.8 / len(timesteps)
        for i, t in enumerate(timesteps):
            ax.bar(experts + (i - (len(timesteps) - 1) / 2) * width, alpha[i], width, label=f"t = {t}")
        ax.axhline(1 / alpha.shape[1], color="gray", linestyle=":", linewidth=1)
        ax.set_xticks(experts, [f"E{m + 1}" for m in experts])
        ax.set_title(name.removesuffix(".dfe"), fontsize=10)
        ax.set_ylim(0, 1)
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    axes[0].set_ylabel("weight α")
    axes[0].legend(fontsize=8, title="timestep", title_fontsize=8)
    figure.suptitle("DFE expert weights per layer and feature timestep (softmax over experts; dotted: uniform)")
    return figure


def gate_figure(intermediates: dict[str, np.ndarray], timesteps: tuple[int, ...]) -> Figure | None:
    """Heat maps of the GFS gate (mean over channels), one row per timestep, one column per layer."""
    layers = [name for name in intermediates if name.endswith(".gfs")]
    if not layers:
        return None
    low = min(float(intermediates[n].min()) for n in layers)
    high = max(float(intermediates[n].max()) for n in layers)
    figure = Figure(figsize=(1.7 * len(layers) + 1.2, 1.6 * len(timesteps) + 0.8), layout="constrained")
    axes = np.array(figure.subplots(len(timesteps), len(layers), squeeze=False))
    for column, name in enumerate(layers):
        for row, t in enumerate(timesteps):
            ax = axes[row, column]
            image = ax.imshow(intermediates[name][row], cmap="magma", vmin=low, vmax=high)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name.removesuffix(".gfs"), fontsize=9)
            if column == 0:
                ax.set_ylabel(f"t = {t}")
    figure.colorbar(image, ax=axes, shrink=0.9, label="gate g (shared scale)")
    figure.suptitle("GFS gate maps g = σ(s·c), mean over channels (bright: features kept)")
    return figure


def attention_figure(intermediates: dict[str, np.ndarray]) -> Figure | None:
    """Heat maps of the GLSA channel attention M_c (mean over channels), each with its colour bar."""
    layers = [name for name in intermediates if name.startswith("glsa")]
    if not layers:
        return None
    figure = Figure(figsize=(4.6 * len(layers), 3.6), layout="constrained")
    for ax, name in zip(np.atleast_1d(figure.subplots(1, len(layers))), layers):
        image = ax.imshow(intermediates[name], cmap="viridis")
        figure.colorbar(image, ax=ax, shrink=0.85, label="M_c")
        ax.set_title(f"{name} (fusion stage {name.removeprefix('glsa')})", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle("GLSA attention maps M_c = σ(Conv1x1[F, F_global, F_local]), mean over channels")
    return figure


def loss_figure(history: list[dict[str, float]]) -> Figure:
    """The training loss per step, one line per stage (log scale: the losses of the stages differ)."""
    figure = Figure(figsize=(6.4, 3.0), layout="constrained")
    ax = figure.subplots()
    for stage, key, label in ((1, "diffusion", "stage 1: diffusion loss"), (2, "fusion", "stage 2: fusion loss")):
        points = [(h["step"], h[key]) for h in history if h["stage"] == stage and key in h]
        if points:
            ax.plot(*zip(*points), label=label, marker="." if len(points) < 30 else None)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if history:
        ax.legend(fontsize=8)
    return figure
