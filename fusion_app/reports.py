"""What the app tells a person about a request, as Markdown: the sources, the metric tables, the notes of a
fusion, how much the network's maps depend on the image, an evaluation's summary, a training run's progress
and end, the model cards; and the files a fusion offers for download. No gradio here: the handlers put these
strings and paths into components.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fusion_app.deadline import Deadline
from fusion_app.models import RANDOM, ModelStore
from fusion_app.texts import CONVENTIONS
from fusion_app.training import TrainingJob
from fusion_core import (
    BASELINES,
    METRICS,
    PAPER_METRICS,
    EvaluationResult,
    FusionResult,
    Intermediates,
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


def metric_table(means: dict[str, dict[str, float]], convention: str, caption: str,
                 mean_rank: dict[str, float] | None = None) -> str:
    """``format_markdown_table`` with its first line, the convention's technical summary, replaced by a plain one
    (``texts.CONVENTIONS``)."""
    table = format_markdown_table(means, convention=convention, mean_rank=mean_rank, caption=caption)
    return CONVENTIONS[convention] + "\n" + table.split("\n", 1)[1]


def network_table(scores: dict[str, dict[str, float]]) -> str:
    """The network's row, shown while the baselines are fused and scored."""
    caption = (f"The network's fused image scored against both sources (higher is better in every column; "
               f"{', '.join(PAPER_METRICS)} are the paper's metrics). Fusing and scoring the classical baselines…")
    return metric_table(scores, CONVENTION, caption)


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
    return metric_table(rows, CONVENTION, caption), [
        (image, name) for name, image in baselines.items()]


def write_downloads(result: FusionResult, b: np.ndarray, folder: Path, dicom: bool) -> list[str]:
    """PNG, 16-bit TIFF (the full-precision luminance, in B's colour) and, for DICOM inputs, a Secondary Capture:
    the files ``python -m fusion_core fuse`` writes, through the same ``write_fused``. Their names are neutral
    (``fused.png``, ``fused_16bit.tif``, ``fused.dcm``), never the upload's: a file is often named after its
    patient, and the name a browser saves a download under is the file's."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "fused.png", folder / "fused_16bit.tif", *([folder / "fused.dcm"] if dicom else [])]
    for path in paths:
        write_fused(path, result.y_fused, b)
    return [str(p) for p in paths]


def write_shown(folder: Path, name: str, pixels: np.ndarray) -> str:
    """8-bit ``pixels`` as ``folder/name.png``, the file an image component shows: served from the session's
    folder as it is, where Gradio would copy an array into its cache (the same PNG pixels either way)."""
    assert pixels.dtype == np.uint8, pixels.dtype
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    Image.fromarray(pixels).save(path)
    return str(path)


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


def evaluation_means(result: EvaluationResult) -> str:
    """The means table of an evaluation, with a plain caption (the file written beside it names its folder)."""
    caption = (f"Means over {result.num_pairs} pairs; higher is better in every metric, the best of each column "
               f"in bold. The mean rank orders the methods over the paper's {', '.join(PAPER_METRICS)} "
               "(1 = best).")
    return metric_table(result.means, result.convention, caption, result.mean_rank)


def evaluation_rows(result: EvaluationResult) -> list[list]:
    """The per-image table: pair, method, then every metric rounded to four decimals."""
    return [[r.name, r.method, *(round(r.values[k], 4) for k in METRICS)] for r in result.rows]


# ------------------------------------------------------------------------------------------------ training, model cards


STAGE_NAMES = {1: "the diffusion UNet", 2: "the fusion head"}


def training_place(job: TrainingJob) -> str:
    """Where a run is, counted as the Steps per stage box counts: 'stage 1 of 2 (the diffusion UNet): step 20
    of 200'."""
    stage = job.stages[job.stage_index]
    step = job.latest.step if job.latest else 0
    return (f"stage {job.stage_index + 1} of {len(job.stages)} ({STAGE_NAMES.get(stage, f'stage {stage}')}): "
            f"step {step} of {job.steps_per_stage}")


def training_progress(job: TrainingJob, stopping: bool) -> str:
    """A progress bar over the whole run, then the place in the stage, the loss, the speed and, while the run
    goes on, the time left in the stage (none once it is asked to stop or has ended)."""
    if job.latest is None:
        text = "starting…"
    else:
        losses = ", ".join(f"{k} loss {v:.4g}" for k, v in job.latest.losses.items())
        text = f"{training_place(job)} · {losses} · {job.latest.crops_per_second:.1f} crops/s"
        if stopping and not job.done:
            text += " · stopping after this step"
        elif not (job.done or job.stopped):
            text += f" · about {job.latest.eta_seconds:.0f} s left in this stage"
    return (f'<div class="train-progress"><progress value="{job.step}" max="{job.total}"></progress>'
            f"<div>{html.escape(text)}</div></div>")


def training_status(job: TrainingJob) -> str:
    """How a run ended, and where its checkpoint is now offered."""
    if job.error:
        return f"⚠️ Training failed: {html.escape(job.error)}"
    if job.stopped:
        how = f"was stopped at {training_place(job)}; its checkpoint was saved"
    else:
        steps = f"{job.steps_per_stage:,} step{'s' if job.steps_per_stage != 1 else ''}"
        how = (f"finished (both stages, {steps} each)" if len(job.stages) > 1 else
               f"finished (stage {job.stages[0]}, {STAGE_NAMES.get(job.stages[0], '')}: {steps})")
    return (f"Run **{job.name}** {how}. It is now selectable in the checkpoint menus of the Fuse and Evaluate "
            "tabs; download it below.")


def model_cards(models: ModelStore) -> str:
    """The model cards of the bundled checkpoints in full, one after the other."""
    folders = {n: p for n, p in models.folders().items() if n not in models.trained}
    if not folders:
        return ("No trained checkpoint is installed: the app runs the network with random weights and says so.")
    return "\n\n".join(f"### {name}\n\n{models.card(name)}" for name in folders) + "\n"


# ------------------------------------------------------------------------------------------------ the maps

# fusion_core measures a gate map's dependence on its input without the outer pixels, where the zero padding
# draws the same border for every input (``layers.gated.interior``, GATE_BORDER = 2, outside the public API):
# the same border is dropped here.
GATE_BORDER = 2
FIXED_PATTERN = 0.9  # a gate map correlating at least this much with its map on noise draws a fixed pattern
EXPERTS_FIXED = 0.02  # expert weights within this of their weights on noise do not depend on the image
ATTENTION_FLAT = 0.1  # an attention map whose 1st-to-99th percentile spread is below this is nearly flat


@dataclass(frozen=True)
class MapDependence:
    """How much the network's maps for one pair depend on the pair, measured against its maps for uniform
    noise of the same size (the same seed): the measure of each family the Fuse tab states beside it.

    Attributes:
        gates: GFS layer -> correlation of its gate map (mean over timesteps, without the border) with the map
            the layer draws for noise; near 1, the layer draws the same map whatever the input.
        experts: the largest distance of any expert weight from its weight for noise; None without DFE layers.
        attention: GLSA stage -> the 1st and 99th percentiles of its map M_c.
    """

    gates: dict[str, float]
    experts: float | None
    attention: dict[str, tuple[float, float]]


def noise_like(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform noise in [0, 1) of the shapes of ``a`` and ``b`` (float32), the same for the same seed."""
    rng = np.random.default_rng(seed)
    return rng.random(a.shape, dtype=np.float32), rng.random(b.shape, dtype=np.float32)


def interior(maps: np.ndarray) -> np.ndarray:
    """Maps (..., h, w) without their outer ``GATE_BORDER`` pixels; whole when too small."""
    edge = GATE_BORDER
    return maps[..., edge:-edge, edge:-edge] if min(maps.shape[-2:]) > 2 * edge else maps


def map_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two maps of one shape; for a flat map, 1 when both are the same and 0 otherwise."""
    x, y = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    dx, dy = x - x.mean(), y - y.mean()
    norm = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    if norm > 1e-12:
        return float((dx * dy).sum() / norm)
    return 1.0 if np.allclose(x, y, atol=1e-6) else 0.0


def measure_dependence(maps: Intermediates, noise: Intermediates) -> MapDependence:
    """The dependence of each map family of ``maps`` on its input, against ``noise``, the same network's maps
    for uniform noise of the pair's size."""
    gates = {layer: map_correlation(interior(g.mean(axis=0)), interior(noise.gates[layer].mean(axis=0)))
             for layer, g in maps.gates.items() if layer in noise.gates}  # (T, h, w) -> (h', w')
    distances = [float(np.abs(alpha - noise.experts[layer]).max()) for layer, alpha in maps.experts.items()
                 if layer in noise.experts]  # (T, M) each
    attention = {stage: (float(np.percentile(m, 1)), float(np.percentile(m, 99))) for stage, m in
                 maps.attention.items()}
    return MapDependence(gates, max(distances) if distances else None, attention)


def _layers(correlations: dict[str, float]) -> str:
    """'down1, down2 (0.16 to 0.27)'."""
    low, high = min(correlations.values()), max(correlations.values())
    spread = f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f} to {high:.2f}"
    return f"{', '.join(correlations)}: correlation {spread}"


def gate_dependence(dependence: MapDependence) -> str:
    """One line on the gate maps: which layers follow this image and which draw a fixed pattern."""
    if not dependence.gates:
        return ""
    fixed = {k: v for k, v in dependence.gates.items() if v >= FIXED_PATTERN}
    follow = {k: v for k, v in dependence.gates.items() if v < FIXED_PATTERN}
    noise = "with the maps drawn for random noise of the same size"
    if not follow:
        return (f"These gate maps barely depend on this image ({_layers(fixed)} {noise}): they show the "
                "network's fixed pattern, not this image's content.")
    if not fixed:
        return (f"These gate maps depend on this image ({_layers(follow)} {noise}, where 1 would mean the "
                "same map whatever the input).")
    return (f"Only {len(follow)} of {len(dependence.gates)} gate layers follow this image ({_layers(follow)} "
            f"{noise}). The other {len(fixed)} barely depend on it ({_layers(fixed)}): they show the network's "
            "fixed pattern, not this image's content.")


def expert_dependence(dependence: MapDependence) -> str:
    """One line on the expert weights: how far they are from the weights drawn for random noise."""
    distance = dependence.experts
    if distance is None:
        return ""
    if distance < EXPERTS_FIXED:
        return (f"The expert weights barely depend on this image: they differ from the weights drawn for random "
                f"noise by at most {distance:.3f}, so each layer mixes its experts the same way for every input.")
    return (f"The expert weights depend on this image: they differ from the weights drawn for random noise by "
            f"up to {distance:.2f} (crosses: the weights for noise).")


def attention_dependence(dependence: MapDependence) -> str:
    """One line on the attention maps: how much they vary across this image."""
    if not dependence.attention:
        return ""
    low = min(p1 for p1, _ in dependence.attention.values())
    high = max(p99 for _, p99 in dependence.attention.values())
    spread = max(p99 - p1 for p1, p99 in dependence.attention.values())
    values = f"M_c from {low:.2f} to {high:.2f}, 1st to 99th percentile"
    if spread < ATTENTION_FLAT:
        return (f"The attention maps barely vary across this image ({values}): on the shared 0-to-1 scale they "
                "are nearly flat, so the fusion head weighs every region of this image about equally.")
    return (f"The attention maps vary across this image ({values}): the fusion head gives the bright regions "
            "more weight.")


def weight_note(weight: np.ndarray | None, a: str, b: str) -> str:
    """One line on the weight map w_A: what it shows, and the share of A over the whole image."""
    if weight is None:
        return "This network's fusion head computes the result directly: it has no weight map."
    return (f"**Where the result comes from.** The share of A ({a}) in the result, pixel by pixel: 1 (red) all "
            f"from A, 0 (blue) all from B ({b}). Over the whole image, {weight.mean():.0%} comes from A.")
