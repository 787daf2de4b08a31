"""What the app tells a person about a request, as Markdown: the sources, the metric tables, the notes of a
fusion, an evaluation's summary, a training run's end, the model cards; and the files a fusion offers for
download. No gradio here: the handlers put these strings and paths into components.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np

from fusion_app.deadline import Deadline
from fusion_app.models import RANDOM, ModelStore
from fusion_app.texts import ABOUT
from fusion_app.training import TrainingJob
from fusion_core import (
    BASELINES,
    METRICS,
    PAPER_METRICS,
    EvaluationResult,
    FusionResult,
    LoadedImage,
    format_markdown_table,
    fuse_methods,
    score_methods,
    write_fused,
)

NETWORK = "DGD-Fusion"  # the network's name as a method in every table
CONVENTION = "standard"  # the Fuse tab's metric convention (the Evaluate tab offers both)


def plain(text: str) -> str:
    """Text from an upload (a file name, a DICOM attribute, a reader's warning) as Markdown that shows it as it
    is: HTML escaped, and the Markdown characters that would format or link it backslash-escaped."""
    return re.sub(r"([\\`*_\[\]|~!])", r"\\\1", html.escape(text, quote=False))


def describe_source(image: LoadedImage) -> str:
    """e.g. '640 × 480 px · 8-bit · gray · 3 frames', or the DICOM modality, frame and window."""
    height, width = image.pixels.shape[:2]
    colour = "colour" if image.pixels.ndim == 3 else "gray"
    if image.dicom is None:
        frames = f" · {image.frames} frames" if image.frames > 1 else ""
        return f"{width} × {height} px · {image.bit_depth}-bit · {colour}{frames}"
    facts = {key: plain(str(value)) for key, value in image.dicom.as_dict().items()}
    return f"DICOM {facts['modality']} · {width} × {height} px · frame {facts['frame']} · window {facts['window']}"


# ------------------------------------------------------------------------------------------------ a fusion


def network_metrics(fused: np.ndarray, a: LoadedImage, b: LoadedImage) -> dict[str, dict[str, float]]:
    """The metrics of the network's fused image alone: the first row of ``compare_methods``' table."""
    return score_methods({NETWORK: fused}, a, b, convention=CONVENTION)


def network_table(scores: dict[str, dict[str, float]]) -> str:
    """The network's row, shown while the baselines are fused and scored."""
    caption = (f"The network's fused image scored against both sources (higher is better in every column; "
               f"{', '.join(PAPER_METRICS)} are the paper's metrics). Fusing and scoring the classical baselines…")
    return format_markdown_table(scores, convention=CONVENTION, caption=caption)


def compare_methods(scores: dict[str, dict[str, float]], a: LoadedImage, b: LoadedImage, deadline: Deadline
                    ) -> tuple[str, list[tuple[np.ndarray, str]]]:
    """The network's metrics (``scores``) beside the four classical baselines', and the baselines' images; the
    deadline is checked before each baseline is fused and before each is scored."""
    where = "while comparing with the classical baselines (the fused image above is complete)"
    baselines, rows = {}, dict(scores)
    for name, method in BASELINES.items():
        deadline.check(where)
        baselines |= fuse_methods({name: method}, a, b)
    for name, image in baselines.items():
        deadline.check(where)
        rows |= score_methods({name: image}, a, b, convention=CONVENTION)
    caption = (f"Each method's fused image of this pair, scored against both sources; higher is better in every "
               f"column, the best in bold. {', '.join(PAPER_METRICS)} are the paper's metrics.")
    return format_markdown_table(rows, convention=CONVENTION, caption=caption), [
        (image, name) for name, image in baselines.items()]


def write_downloads(result: FusionResult, b: np.ndarray, folder: Path, stem: str, dicom: bool) -> list[str]:
    """PNG, 16-bit TIFF (the full-precision luminance, in B's colour) and, for DICOM inputs, a Secondary Capture:
    the files ``python -m fusion_core fuse`` writes, through the same ``write_fused``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.png", folder / f"{stem}_16bit.tif", *([folder / f"{stem}.dcm"] if dicom else [])]
    for path in paths:
        write_fused(path, result.y_fused, b)
    return [str(p) for p in paths]


def download_stem(path_a: str, dicom: bool) -> str:
    """The name of the downloads: the upload's for images, a neutral one when a source is DICOM (a DICOM file is
    often named after its patient, and that name must not travel with the result)."""
    if dicom:
        return "fused"
    return "fused_" + (re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path_a).stem)[:40] or "pair")


def dicom_markdown(images: dict[str, LoadedImage]) -> str:
    """The de-identified summaries of the DICOM inputs as one table ('' when there is none)."""
    summaries = {label: {key: plain(str(value)) for key, value in image.dicom.as_dict().items()}
                 for label, image in images.items() if image.dicom is not None}
    if not summaries:
        return ""
    keys = list(next(iter(summaries.values())))
    lines = ["**DICOM inputs** (technical attributes only; no patient data is read or shown)", "",
             "| | " + " | ".join(summaries) + " |", "| --- |" + " --- |" * len(summaries)]
    lines += [f"| {key.replace('_', ' ')} | " + " | ".join(s[key] for s in summaries.values()) + " |" for key in keys]
    return "\n".join(lines)


def notes_markdown(name: str, device: str, seconds: float, result: FusionResult, notes: list[str]) -> str:
    """What was done and what a user should know: timing, checkpoint, warnings."""
    steps = ", ".join(str(t) for t in result.timesteps)
    text = f"Fused in **{seconds:.2f} s** on {device} by **{name}** (feature timesteps {steps})."
    warnings = [*notes, *result.warnings]
    return text + "".join(f"\n- ⚠️ {plain(w)}" for w in warnings)


# ------------------------------------------------------------------------------------------------ an evaluation


def evaluation_summary(pairs: int, data: str, name: str, external: dict[str, Path]) -> str:
    """One line: how many pairs from where, by which checkpoint, beside which other methods."""
    random = " ⚠️ The network ran with **random weights**: its scores say nothing about the method." \
        if name == RANDOM else ""
    others = f", four baselines and the zip's fused images of **{plain(', '.join(external))}**" if external \
        else " and four baselines"
    return f"Evaluated **{pairs} pairs** from {plain(data)} with **{name}**{others}.{random}"


def evaluation_rows(result: EvaluationResult) -> list[list]:
    """The per-image table: pair, method, then every metric rounded to four decimals."""
    return [[r.name, r.method, *(round(r.values[k], 4) for k in METRICS)] for r in result.rows]


# ------------------------------------------------------------------------------------------------ training, about


def training_status(job: TrainingJob) -> str:
    """How a run ended, and where its checkpoint is now offered."""
    if job.error:
        return f"⚠️ Training failed: {html.escape(job.error)}"
    how = "was stopped; its checkpoint was saved" if job.stopped else "finished"
    return (f"Run **{job.name}** {how} at step {job.step} of {job.total}. It is now selectable in the "
            "checkpoint menus of the Fuse and Evaluate tabs; download it below.")


def about_markdown(models: ModelStore) -> str:
    """The method, the data, the use, and the model cards of the bundled checkpoints."""
    folders = {n: p for n, p in models.folders().items() if n not in models.trained}
    if not folders:
        cards = ("No trained checkpoint is installed yet (`assets/checkpoints/dgd-general`, "
                 "`assets/checkpoints/dgd-medical`): the app runs the network with random weights and says so.")
    else:
        cards = "\n\n".join(f"### `{name}`\n\n{models.card(name)}" for name in folders)
    return f"{ABOUT}\n## Model cards\n\n{cards}\n"
