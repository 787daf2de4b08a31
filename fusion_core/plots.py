"""Plots of training and evaluation runs: metric means (evaluate), training losses and validation ranks
(the ablation, the ``curves`` command). matplotlib is imported inside each function: plotting is its only
user and it is slow to import.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .imaging import write_atomically
from .metrics import METRICS, PAPER_METRICS

STAGE_LOSS = {1: "diffusion", 2: "fusion"}



def save_figure(figure, path: Path) -> None:
    """A matplotlib figure as a PNG at 100 dpi, written atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_atomically(path, buffer.getvalue())

def plot_means(path: Path, means: Mapping[str, Mapping[str, float]], convention: str) -> None:
    """Bar chart of the means: one panel per metric, one bar per method (matplotlib, no display needed)."""
    from matplotlib.figure import Figure  # imported here: plotting is the only user and is slow to import

    methods = list(means)
    columns = 4
    rows = -(-len(METRICS) // columns)
    figure = Figure(figsize=(3.2 * columns, 2.6 * rows))
    axes = figure.subplots(rows, columns).ravel()
    colours = [f"C{i % 10}" for i in range(len(methods))]
    for ax, label in zip(axes, METRICS, strict=False):  # the grid may have spare axes
        values = [means[m][label] for m in methods]
        ax.bar(range(len(methods)), [v if np.isfinite(v) else 0.0 for v in values], color=colours)
        ax.set_title(label + (" (paper)" if label in PAPER_METRICS else ""), fontsize=10)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes[len(METRICS):]:
        ax.set_visible(False)
    figure.suptitle(f"Mean metrics per method ({convention} convention; higher is better)", fontsize=11)
    # Fixed margins: a layout engine would double the time of a call that runs once per evaluation.
    figure.subplots_adjust(left=0.05, right=0.98, bottom=0.1, top=0.9, hspace=0.75, wspace=0.3)
    save_figure(figure, path)


def read_log(path: Path) -> list[dict]:
    """The log lines of a checkpoint folder; a step logged twice (a resumed run) keeps its last line.

    Loss lines and validation lines are kept apart (a validation line has a "validation" entry).
    """
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return sorted({(line["stage"], line["step"], "validation" in line): line for line in lines}.values(),
                  key=lambda line: (line["stage"], line["step"], "validation" in line))


def validation_curve(lines: Sequence[dict]) -> list[tuple[int, float, float]]:
    """(step, network rank, best baseline rank) of each validation line of a log, in step order."""
    return [(line["step"], line["validation"]["rank"], line["validation"]["best_baseline_rank"])
            for line in lines if "validation" in line]


def plot_curves(path: Path, logs: Mapping[str, list[dict]]) -> None:
    """Per variant: stage 1 (diffusion loss, log scale), stage 2 (fusion loss) and, when logged, the stage-2
    validation rank against the baselines (1 = best of all)."""
    from matplotlib.figure import Figure  # imported here: plotting is the only user and is slow to import
    from matplotlib.ticker import FormatStrFormatter

    curves = {name: validation_curve(lines) for name, lines in logs.items()}
    panels = 3 if any(curves.values()) else 2
    figure = Figure(figsize=(5.5 * panels, 3.8))
    axes = figure.subplots(1, panels)
    if panels == 3:
        _plot_validation(axes[2], curves)
    for ax, stage in zip(axes, (1, 2), strict=False):  # a third axis, when there, is validation
        key = STAGE_LOSS[stage]
        for i, (name, lines) in enumerate(logs.items()):
            points = [(line["step"], line[key]) for line in lines if line["stage"] == stage and key in line]
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, color=f"C{i % 10}", linewidth=1, label=name)
        ax.set_title(f"stage {stage}: {key} loss", fontsize=10)
        ax.set_xlabel("step")
        if stage == 1:  # the diffusion loss falls by orders of magnitude; plain numbers, not powers of ten
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.9, wspace=0.2)
    save_figure(figure, path)


def plot_convergence(path: Path, logs: Mapping[str, Path]) -> dict[str, list[dict]]:
    """The validation rank of stage-2 runs against training minutes, with each run's best baseline dotted.

    Args:
        logs: label -> a training run's log (train_log.jsonl, whose validation lines are plotted).
    Returns:
        label -> the validation log lines plotted.
    """
    from matplotlib.figure import Figure  # imported here: plotting is the only user and is slow to import

    logs = {label: [line for line in read_log(Path(log)) if "validation" in line] for label, log in logs.items()}
    figure = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = figure.subplots()
    for i, (label, lines) in enumerate(logs.items()):
        minutes = [line["train_seconds"] / 60 for line in lines]
        ax.plot(minutes, [line["validation"]["rank"] for line in lines], color=f"C{i}", marker=".", label=label)
        ax.plot(minutes, [line["validation"]["best_baseline_rank"] for line in lines], color=f"C{i}",
                linestyle=":", linewidth=1, label=f"{label}: best classical baseline")
    ax.set_xlabel("training time (CPU minutes, validation excluded)")
    ax.set_ylabel("mean rank over the seven paper metrics")
    ax.invert_yaxis()  # rank 1 (best) at the top
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(figure, path)
    return logs


def _plot_validation(ax, curves: Mapping[str, list[tuple[int, float, float]]]) -> None:
    for i, (name, points) in enumerate(curves.items()):
        if points:
            steps, ranks, best = zip(*points, strict=True)
            ax.plot(steps, ranks, color=f"C{i % 10}", linewidth=1, marker=".", label=name)
            ax.plot(steps, best, color=f"C{i % 10}", linewidth=0.8, linestyle=":")
    ax.set_title("stage 2: validation mean rank (dotted: best baseline)", fontsize=10)
    ax.set_xlabel("step")
    ax.invert_yaxis()  # rank 1 (best) at the top
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8)


def convergence_summary(label: str, lines: Sequence[dict]) -> str:
    """One line on a run's validation log lines: its last rank and when it first reached the best baseline."""
    reached = next((line for line in lines
                    if line["validation"]["rank"] <= line["validation"]["best_baseline_rank"]), None)
    last = lines[-1]["validation"]
    when = (f"step {reached['step']} ({reached['train_seconds'] / 60:.1f} min)" if reached else "not reached")
    return (f"{label}: rank {last['rank']:.2f} at step {lines[-1]['step']} (best baseline {last['best_baseline']} "
            f"{last['best_baseline_rank']:.2f}); first at or above the best baseline: {when}")
