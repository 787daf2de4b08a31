"""The paper's method comparison (Tables 1-3): metric means and the reference network's lead in percent.

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016, Tables 1-3 (MSRS, RoadScene and
Harvard). `run_comparison` writes comparison.md and comparison.csv next to evaluate_folder's outputs: the
means of the seven paper metrics and, as the paper's conclusion reports them, the percentage by which the
reference network lies above (or below) every other method. No argparse: `cli.py` calls it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..evaluate import EvaluationResult, FusionMethod, Progress, evaluate_folder, format_markdown_table
from ..imaging import write_atomically, write_csv
from ..metrics import PAPER_METRICS


@dataclass(frozen=True)
class ComparisonResult:
    """What `run_comparison` computed and wrote.

    means: method -> paper metric -> mean; percent: other method -> paper metric -> how far the reference
    lies above it, in percent (`percent_above`); files: "comparison_md", "comparison_csv" -> path.
    """

    reference: str
    evaluation: EvaluationResult
    means: dict[str, dict[str, float]]
    percent: dict[str, dict[str, float]]
    files: dict[str, Path]


def percent_above(reference: float, other: float) -> float:
    """How far reference lies above other, in percent of |other|: (reference - other) / |other| * 100.

    Negative when reference is below. 0 when both are 0; +-inf when only other is 0.
    """
    if other == 0:
        return 0.0 if reference == 0 else math.copysign(math.inf, reference)
    return (reference - other) / abs(other) * 100


def _percent_table(reference: str, percent: Mapping[str, Mapping[str, float]]) -> list[str]:
    lines = [f"| {reference} vs | " + " | ".join(PAPER_METRICS) + " |", "| --- |" + " ---: |" * len(PAPER_METRICS)]
    for method, values in percent.items():
        lines.append(f"| {method} | " + " | ".join(f"{values[label]:+.2f}%" for label in PAPER_METRICS) + " |")
    return lines


def run_comparison(root: str | Path, methods: Mapping[str, FusionMethod], out_dir: str | Path, *, reference: str,
                   convention: str = "standard", progress: Progress | None = None, reuse: bool = True,
                   external: Mapping[str, str | Path] | None = None) -> ComparisonResult:
    """Evaluate every method on root's pairs; tabulate the paper metrics and the reference's lead in percent.

    Args:
        root: folder of pairs; methods: name -> fusion function (see `evaluate.evaluate_folder`).
        out_dir: evaluate_folder's outputs plus comparison.md and comparison.csv.
        reference: the method compared with every other one (the network, or an external method).
        convention, progress, reuse, external: passed to evaluate_folder (external: other methods' images).
    """
    names = [*methods, *(external or {})]
    if reference not in names or len(names) < 2:
        raise ValueError(f"reference {reference!r} must be one of at least two methods; got {', '.join(names)}")
    evaluation = evaluate_folder(root, methods, out_dir, convention=convention, progress=progress, reuse=reuse,
                                 external=external)
    means = {m: {label: evaluation.means[m][label] for label in PAPER_METRICS} for m in evaluation.methods}
    percent = {m: {label: percent_above(means[reference][label], means[m][label]) for label in PAPER_METRICS}
               for m in evaluation.methods if m != reference}
    out_dir = Path(out_dir)
    files = {"comparison_md": out_dir / "comparison.md", "comparison_csv": out_dir / "comparison.csv"}
    caption = (f"{evaluation.num_pairs} pairs from {root}; means over pairs, best in bold; mean rank over the "
               f"seven paper metrics (1 = best).")
    table = format_markdown_table(means, convention=convention, mean_rank=evaluation.mean_rank,
                                  labels=PAPER_METRICS, caption=caption)
    report = "\n".join([
        f"# Comparison on {root} (paper Tables 1-3)", "", table,
        f"## {reference} relative to each method", "",
        f"(ref - other) / |other| x 100 per metric: positive where {reference} scores higher (all seven are "
        "higher-is-better).", "", *_percent_table(reference, percent), "",
        "![means of every metric](means.png)", "",
    ])
    write_atomically(files["comparison_md"], report.encode("utf-8"))
    rows = [[m, "mean", *values.values(), convention] for m, values in means.items()]
    rows += [[m, f"percent {reference} above", *values.values(), convention] for m, values in percent.items()]
    write_csv(files["comparison_csv"], ["method", "quantity", *PAPER_METRICS, "convention"], rows)
    return ComparisonResult(reference, evaluation, means, percent, files)
