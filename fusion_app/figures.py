"""Matplotlib views of DGD-Fusion's intermediates (paper §1.2-1.3) and of a training run's losses.

Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot, so concurrent requests do not share
global state. Maps come from ``FusionResult.intermediates`` (``fusion_core.Intermediates``, shapes there).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from fusion_core import Intermediates


def expert_figure(intermediates: Intermediates, timesteps: tuple[int, ...]) -> Figure | None:
    """Bar charts of the expert weights alpha (T, M) of every DFE layer, one bar group per expert."""
    layers = list(intermediates.experts)
    if not layers:
        return None
    columns = min(4, len(layers))
    rows = -(-len(layers) // columns)
    figure = Figure(figsize=(3.4 * columns, 2.5 * rows + 0.8), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, sharey=True)).ravel()
    for ax, name in zip(axes, layers, strict=False):  # the grid may have spare axes
        alpha = intermediates.experts[name]  # (T, M)
        experts = np.arange(alpha.shape[1])
        width = 0.8 / len(timesteps)
        for i, t in enumerate(timesteps):
            ax.bar(experts + (i - (len(timesteps) - 1) / 2) * width, alpha[i], width, label=f"t = {t}")
        ax.axhline(1 / alpha.shape[1], color="gray", linestyle=":", linewidth=1)
        ax.set_xticks(experts, [f"E{m + 1}" for m in experts])
        ax.set_title(name, fontsize=10)
        ax.set_ylim(0, 1)
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    axes[0].set_ylabel("weight α")
    axes[0].legend(fontsize=8, title="timestep", title_fontsize=8)
    figure.suptitle("DFE expert weights per layer and feature timestep (softmax over experts; dotted: uniform)")
    return figure


def gate_figure(intermediates: Intermediates, timesteps: tuple[int, ...]) -> Figure | None:
    """GFS gates: per layer, the activity statistics (bars), then the gate map (mean over channels) of every
    feature timestep, each on its own colour scale whose true range the colour bar shows."""
    layers = list(intermediates.gates)
    if not layers:
        return None
    figure = Figure(figsize=(1.9 * len(layers) + 1.0, 1.6 * len(timesteps) + 3.0), layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=[1.3, 1.6 * len(timesteps)])
    _activity_bars(top.subplots(), intermediates.gate_activity, layers)
    axes = np.array(bottom.subplots(len(timesteps), len(layers), squeeze=False))
    for column, name in enumerate(layers):
        for row, t in enumerate(timesteps):
            ax, gate = axes[row, column], intermediates.gates[name][row]  # (h, w)
            image = ax.imshow(gate, cmap="magma", vmin=float(gate.min()), vmax=float(gate.max()))
            bar = bottom.colorbar(image, ax=ax, shrink=0.8, pad=0.02, ticks=[gate.min(), gate.max()])
            bar.ax.tick_params(labelsize=6)
            bar.ax.set_yticklabels([f"{gate.min():.2f}", f"{gate.max():.2f}"])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if column == 0:
                ax.set_ylabel(f"t = {t}")
    bottom.suptitle("GFS gate maps g = σ(s·c), mean over channels (bright: features kept; each map on its own "
                    "scale, its range on the bar)", fontsize=9)
    return figure


def _activity_bars(ax, activity: dict[str, np.ndarray], layers: list[str]) -> None:
    """Per layer (mean over feature timesteps): the gate's spread and its share of clear decisions."""
    stats = [activity.get(layer) for layer in layers]
    if any(s is None for s in stats):
        ax.set_visible(False)
        return
    spread, low, high, interior = np.array([s.mean(axis=0) for s in stats]).T  # (T, 4) per layer -> (L,) rows
    x = np.arange(len(layers))
    ax.bar(x - 0.2, spread, 0.4, label="mean per-channel spatial std of g", color="C0")
    ax.bar(x - 0.2, interior, 0.2, label="... without the 2-pixel border", color="C9")
    ax.bar(x + 0.2, low, 0.4, label="share of g < 0.2", color="C1")
    ax.bar(x + 0.2, high, 0.4, bottom=low, label="share of g > 0.8", color="C3")
    ax.axhline(0.05, color="gray", linestyle=":", linewidth=1)
    ax.set_xticks(x, layers, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title("gate activity per layer (a flat gate scores 0; dotted: 0.05)", fontsize=9)
    ax.legend(fontsize=7, ncols=4, loc="upper left")


def attention_figure(intermediates: Intermediates) -> Figure | None:
    """The fusion head's maps: the weight map (share of A in the result, when the head predicts one) and the
    GLSA channel attention M_c (mean over channels), each with its colour bar."""
    weight, attention = intermediates.weight_map, intermediates.attention
    count = len(attention) + (weight is not None)
    if not count:
        return None
    figure = Figure(figsize=(4.6 * count, 3.6), layout="constrained")
    axes = iter(np.atleast_1d(figure.subplots(1, count)))
    if weight is not None:
        _weight_map(figure, next(axes), weight)
    for stage, values in attention.items():
        _attention_map(figure, next(axes), stage, values)
    figure.suptitle("Fusion head: weight map w_A and GLSA attention maps M_c = σ(Conv1x1[F, F_global, F_local])")
    return figure


def _weight_map(figure: Figure, ax, weight: np.ndarray) -> None:
    """w_A (H, W) on an absolute scale: 1 all from A, 0 all from B."""
    image = ax.imshow(weight, cmap="coolwarm", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, shrink=0.85, label="share of A (red) against B (blue)")
    ax.set_title(f"weight map w_A (mean {weight.mean():.2f})", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def _attention_map(figure: Figure, ax, stage: str, values: np.ndarray) -> None:
    """M_c (h, w) of one GLSA stage on its own scale, its range on the bar."""
    image = ax.imshow(values, cmap="viridis")
    figure.colorbar(image, ax=ax, shrink=0.85, label=f"M_c ({values.min():.3f} to {values.max():.3f})")
    ax.set_title(f"{stage} (fusion stage {stage.removeprefix('glsa')})", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def loss_figure(history: list[dict[str, float]]) -> Figure:
    """The training loss per step, one line per stage (log scale: the losses of the stages differ)."""
    figure = Figure(figsize=(6.4, 3.0), layout="constrained")
    ax = figure.subplots()
    for stage, key, label in ((1, "diffusion", "stage 1: diffusion loss"), (2, "fusion", "stage 2: fusion loss")):
        points = [(h["step"], h[key]) for h in history if h["stage"] == stage and key in h]
        if points:
            ax.plot(*zip(*points, strict=True), label=label, marker="." if len(points) < 30 else None)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if history:
        ax.legend(fontsize=8)
    return figure
