"""The app's components: one builder per tab (``build_fuse_tab`` ...), each returning its view, a frozen
dataclass of the components its handlers read and write. Construction only: the wiring is in ``app.py``, the
handlers in ``fusion_app.handlers``. Imports gradio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import gradio as gr

from fusion_app.inputs import EXAMPLES, FuseOptions, TrainOptions
from fusion_app.models import AUTO, DEFAULT_TASK, TASKS, ModelStore
from fusion_app.texts import (
    ABLATION_INTRO,
    ABOUT,
    DEFAULT_WINDOW,
    EVALUATE_INTRO,
    FROM_SCRATCH,
    METRIC_LEGEND,
    NO_ABLATION,
    SIZES,
    TRAIN_INTRO,
    WINDOWS,
    ablation_notes,
)
from fusion_core import CONVENTIONS, METRICS, find_pairs

CSS = """
.warning-note { background: #fff4e5; border-left: 4px solid #f59e0b; padding: 6px 12px; border-radius: 4px; }
.warning-note * { color: #663c00 !important; }
.train-progress progress { width: 100%; height: 14px; }
/* an upload's whole name, wrapped when long: Gradio cuts the stem to fit beside the size, which left one letter
   of it ('i..png') in a narrow column */
.upload .file-preview tr.file { display: flex; flex-direction: column; align-items: flex-start; }
.upload .file-preview td.filename { width: auto; max-width: 100%; }
.upload .file-preview .stem { overflow: visible; white-space: normal; overflow-wrap: anywhere; }
/* the baselines' names under their thumbnails, not over them */
#baselines .caption-label { position: static; display: block; max-width: none; text-align: center;
  background: none; color: var(--body-text-color); font-size: var(--text-md); padding: 2px 0; }
#baselines .thumbnail-item { flex-direction: column; aspect-ratio: auto; height: auto; }
#baselines .thumbnail-item img { aspect-ratio: 4 / 3; width: 100%; }
#baselines .grid-wrap { min-height: 0; height: auto; max-height: none; }
/* numbers and headers of the metric tables on one line each; the table scrolls sideways when too wide */
.metric-table table { display: block; overflow-x: auto; }
.metric-table th, .metric-table td { white-space: nowrap; }
"""
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


class AppModel(Protocol):
    """What the builders read of the handlers: the checkpoints, the model note, the timer's period, the About
    cards (``fusion_app.handlers.FusionApp``)."""

    models: ModelStore
    poll_seconds: float

    def model_note(self, task: str, choice: str) -> gr.Markdown: ...

    def model_cards(self) -> str: ...


@dataclass(frozen=True)
class SourceColumn:
    """One source's upload, preview, description, DICOM window (shown for DICOM files) and frame (shown for files
    of several frames: multi-frame DICOM, multi-page TIFF, animated GIF)."""

    file: gr.File
    preview: gr.Image
    info: gr.Markdown
    dicom: gr.Group
    window: gr.Dropdown
    frames: gr.Group
    frame: gr.Number

    def shown(self) -> list[gr.components.Component]:
        """What a preview writes."""
        return [self.preview, self.info, self.dicom, self.frames]


@dataclass(frozen=True)
class PairsColumn:
    """The Evaluate and Train tabs' shared inputs: a zip of pairs, the task (whose bundled examples stand in
    for a missing zip) and the checkpoint to use or start from."""

    zip: gr.File
    task: gr.Dropdown
    checkpoint: gr.Dropdown


@dataclass(frozen=True)
class MapsView:
    """The network's maps in the Fuse tab's "Inside the network" accordion, each family with the line that says
    how much it depends on the image: drawn when the accordion is open (``is_open``), from what the last fusion
    left in ``source``, since telling the image's share from the network's fixed pattern costs one more pass."""

    accordion: gr.Accordion
    is_open: gr.State
    source: gr.State
    weight_note: gr.Markdown
    weight: gr.Plot
    gate_note: gr.Markdown
    gates: gr.Plot
    attention_note: gr.Markdown
    attention: gr.Plot
    expert_note: gr.Markdown
    experts: gr.Plot

    def outputs(self) -> list[gr.components.Component]:
        """What drawing the maps writes."""
        return [self.weight_note, self.weight, self.gate_note, self.gates, self.attention_note, self.attention,
                self.expert_note, self.experts]


@dataclass(frozen=True)
class FuseView:
    """The Fuse tab's components; ``options`` holds the controls of the ``FuseOptions`` fields by field name."""

    task: gr.Radio
    checkpoint: gr.Dropdown
    model_note: gr.Markdown
    source_a: SourceColumn
    source_b: SourceColumn
    options: dict[str, gr.components.Component]
    button: gr.Button
    fused: gr.Image
    notes: gr.Markdown
    slider_a: gr.ImageSlider
    slider_b: gr.ImageSlider
    downloads: gr.File
    dicom_info: gr.Markdown
    metrics: gr.Markdown
    baselines: gr.Gallery
    maps: MapsView

    def outputs(self) -> list[gr.components.Component]:
        """What the fuse handler writes, in the order of the API's return values (then the maps, cleared, and
        what they are drawn from)."""
        return [self.fused, self.slider_a, self.slider_b, self.downloads, self.notes, self.dicom_info, self.metrics,
                self.baselines, *self.maps.outputs(), self.maps.source]


@dataclass(frozen=True)
class EvaluateView:
    """The Evaluate tab's components."""

    pairs: PairsColumn
    convention: gr.Radio
    button: gr.Button
    summary: gr.Markdown
    means: gr.Markdown
    chart: gr.Image
    rows: gr.Dataframe
    files: gr.File

    def outputs(self) -> list[gr.components.Component]:
        return [self.summary, self.means, self.chart, self.rows, self.files]


@dataclass(frozen=True)
class TrainView:
    """The Train tab's components; ``options`` holds the controls of the ``TrainOptions`` fields by field name,
    ``checkpoint_menus`` the other tabs' checkpoint menus, which list a finished run."""

    pairs: PairsColumn
    options: dict[str, gr.components.Component]
    ablation: gr.Dropdown
    start_button: gr.Button
    stop_button: gr.Button
    progress: gr.HTML
    status: gr.Markdown
    loss_plot: gr.Plot
    preview: gr.Image
    checkpoint_file: gr.File
    timer: gr.Timer
    followed: gr.State
    checkpoint_menus: tuple[gr.Dropdown, ...]

    def outputs(self) -> list[gr.components.Component]:
        """What the start handler and the timer's ticks write, in the order of the API's return values."""
        return [self.progress, self.status, self.loss_plot, self.preview, self.checkpoint_file, *self.checkpoint_menus,
                self.pairs.checkpoint, self.timer, self.followed]


@dataclass(frozen=True)
class Tabs:
    """The views of the tabs that have handlers."""

    fuse: FuseView
    evaluate: EvaluateView
    train: TrainView


# ------------------------------------------------------------------------------------------------ builders


def _examples() -> tuple[list[list[str]], list[str]]:
    """Every bundled pair as [A, B, task], labelled."""
    rows, labels = [], []
    for task, spec in TASKS.items():
        folder = EXAMPLES / spec.folder
        if not folder.is_dir():
            continue
        for pair in find_pairs(folder):
            rows.append([str(pair.a), str(pair.b), task])
            labels.append(f"{task}: {pair.name}")
    return rows, labels


def build_source_column(label: str, elem_id: str) -> SourceColumn:
    """Upload, preview, description, the DICOM window and the frame of one source."""
    file = gr.File(label=label, type="filepath", elem_id=elem_id, elem_classes=["upload"])
    preview = gr.Image(label="Preview", interactive=False, height=200, format="png", buttons=["fullscreen"])
    info = gr.Markdown()
    with gr.Group(visible=False) as dicom:
        window = gr.Dropdown(list(WINDOWS), value=DEFAULT_WINDOW, label="DICOM window")
    with gr.Group(visible=False) as frames:
        frame = gr.Number(0, precision=0, minimum=0, label="Frame (from 0)")
    return SourceColumn(file, preview, info, dicom, window, frames, frame)


def build_pairs_column(task_label: str, checkpoints: list[str], checkpoint: str, checkpoint_label: str
                       ) -> PairsColumn:
    """A zip of pairs, the task whose bundled examples stand in without one, the checkpoint."""
    archive = gr.File(label="Zip of pairs (optional)", file_types=[".zip"], type="filepath")
    task = gr.Dropdown(list(TASKS), value=DEFAULT_TASK, label=task_label)
    menu = gr.Dropdown(checkpoints, value=checkpoint, label=checkpoint_label)
    return PairsColumn(archive, task, menu)


def build_fuse_tab(app: AppModel) -> FuseView:
    """Two sources (or an example pair), Advanced options, the fused image, the comparison, the maps."""
    spec, defaults = TASKS[DEFAULT_TASK], FuseOptions()
    with gr.Tab("Fuse"):
        with gr.Row():
            with gr.Column(scale=2):
                task = gr.Radio(list(TASKS), value=DEFAULT_TASK, label="Task")
                checkpoint = gr.Dropdown(app.models.choices(), value=AUTO, label="Checkpoint")
                model_note = app.model_note(DEFAULT_TASK, AUTO)
                with gr.Row():
                    with gr.Column(min_width=200):
                        source_a = build_source_column(f"Source A: {spec.a}", "source-a")
                    with gr.Column(min_width=200):
                        source_b = build_source_column(f"Source B: {spec.b}", "source-b")
                with gr.Accordion("Advanced", open=False):
                    advanced = {
                        "timesteps": gr.Textbox(defaults.timesteps,
                                                label="Feature timesteps (as many as the model reads)"),
                        "seed": gr.Number(defaults.seed, precision=0, label="Seed of the diffusion noise"),
                        "resample": gr.Checkbox(defaults.resample,
                                                label="Resample B to A's size when the sizes differ (bicubic)"),
                        "align": gr.Checkbox(defaults.align,
                                             label="Align B to A by phase correlation (translation only)"),
                    }
                button = gr.Button("Fuse", variant="primary", elem_id="fuse-button")
                examples, labels = _examples()
                gr.Examples(examples, inputs=[source_a.file, source_b.file, task], example_labels=labels,
                            cache_examples=False, examples_per_page=8, label="Example pairs")
            with gr.Column(scale=3):
                fused = gr.Image(label="Fused", format="png", interactive=False, elem_id="fused-image")
                notes = gr.Markdown(elem_id="fuse-notes")
                with gr.Row():
                    slider_a = gr.ImageSlider(label="Source A | fused", format="png", elem_id="slider-a")
                    slider_b = gr.ImageSlider(label="Source B | fused", format="png", elem_id="slider-b")
                downloads = gr.File(label="Downloads: PNG and 16-bit TIFF (and DICOM when an input is DICOM)",
                                    file_count="multiple", interactive=False)
                dicom_info = gr.Markdown()
        metrics = gr.Markdown(elem_id="metric-table", elem_classes=["metric-table"])
        build_metric_legend()
        gr.Markdown("**Classical baselines**: the same pair fused by four classical methods, for comparison.")
        baselines = gr.Gallery(show_label=False, format="png", columns=4, height="auto", object_fit="contain",
                               elem_id="baselines")
        maps = build_maps()
    options = {"window_a": source_a.window, "frame_a": source_a.frame, "window_b": source_b.window,
               "frame_b": source_b.frame, **advanced}
    return FuseView(task, checkpoint, model_note, source_a, source_b, options, button, fused, notes, slider_a,
                    slider_b, downloads, dicom_info, metrics, baselines, maps)


def build_metric_legend() -> None:
    """What each metric measures, one line each, in a closed accordion."""
    with gr.Accordion("What the metrics mean", open=False, elem_classes=["metric-legend"]):
        gr.Markdown(METRIC_LEGEND)


def build_maps() -> MapsView:
    """The "Inside the network" accordion: the weight map first, then the gates, the attention, the experts."""
    with gr.Accordion("Inside the network: where the result comes from, and what the network looks at", open=False,
                      elem_id="maps") as accordion:
        is_open, source = gr.State(False), gr.State(None)
        weight_note = gr.Markdown("Fuse a pair to see its maps here.")
        weight = gr.Plot(show_label=False, elem_id="weight-map")
        gate_note = gr.Markdown()
        gates = gr.Plot(show_label=False, elem_id="gate-maps")
        attention_note = gr.Markdown()
        attention = gr.Plot(show_label=False, elem_id="attention-maps")
        expert_note = gr.Markdown()
        experts = gr.Plot(show_label=False, elem_id="expert-weights")
    return MapsView(accordion, is_open, source, weight_note, weight, gate_note, gates, attention_note, attention,
                    expert_note, experts)


def build_evaluate_tab(app: AppModel) -> EvaluateView:
    """A zip of pairs (or the examples) scored for the network and the baselines: tables, chart, CSV files."""
    with gr.Tab("Evaluate"):
        gr.Markdown(EVALUATE_INTRO)
        with gr.Row():  # the inputs side by side, so the tables below have the page's width
            with gr.Column():
                pairs = build_pairs_column("Task (examples and checkpoint)", app.models.choices(), AUTO,
                                           "Checkpoint")
            with gr.Column():
                convention = gr.Radio(list(CONVENTIONS), value="standard", label="How the metrics are computed",
                                      info="standard: MI in bits, SSIM averaged over the two sources. published: "
                                      "as the evaluation script many papers share computes them, to compare with "
                                      "their tables.")
                button = gr.Button("Evaluate", variant="primary")
        summary = gr.Markdown()
        means = gr.Markdown(elem_id="means-table", elem_classes=["metric-table"])
        build_metric_legend()
        with gr.Row():
            chart = gr.Image(label="Means per method", format="png", interactive=False)
            files = gr.File(label="CSV tables", file_count="multiple", interactive=False)
        rows = gr.Dataframe(headers=["pair", "method", *METRICS], label="Per image", interactive=False)
    return EvaluateView(pairs, convention, button, summary, means, chart, rows, files)


def build_train_tab(app: AppModel, checkpoint_menus: tuple[gr.Dropdown, ...]) -> TrainView:
    """Training options (the paper's ablation variants apart, in a closed accordion), start and stop, then the
    progress, the loss curve, a preview and the checkpoint.

    ``checkpoint_menus`` are the other tabs' menus that list a finished run.
    """
    defaults = TrainOptions()
    with gr.Tab("Train"):
        gr.Markdown(TRAIN_INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                pairs = build_pairs_column("Task (bundled examples)", [FROM_SCRATCH, *app.models.folders()],
                                           FROM_SCRATCH, "Start from")
                options = {
                    "preset": gr.Dropdown([(label, name) for name, label in SIZES.items()], value=defaults.preset,
                                          label="Network size (for random weights)"),
                    "stage": gr.Radio([("1: the diffusion UNet", "1"), ("2: the fusion head", "2"),
                                       ("both, 1 then 2", "both")], value=defaults.stage, label="Stage"),
                }
                with gr.Row():
                    options["steps"] = gr.Number(defaults.steps, precision=0, minimum=1, label="Steps per stage")
                    options["batch"] = gr.Number(defaults.batch, precision=0, minimum=1, label="Batch")
                with gr.Row():
                    options["crop"] = gr.Number(defaults.crop, precision=0, minimum=32, label="Crop (pixels)")
                    options["lr"] = gr.Number(defaults.lr, label="Learning rate")
                with gr.Accordion("Research: ablation variants", open=False, elem_id="ablations"):
                    gr.Markdown(ABLATION_INTRO + "\n\n" + "\n".join(f"- {line}" for line in ablation_notes().values()))
                    ablation = gr.Dropdown([NO_ABLATION, *ablation_notes()], value=NO_ABLATION,
                                           label="Ablation variant")
                with gr.Row():
                    start_button = gr.Button("Start training", variant="primary")
                    stop_button = gr.Button("Stop", variant="stop")
            with gr.Column(scale=2):
                progress = gr.HTML()
                status = gr.Markdown()
                with gr.Row():
                    with gr.Column():
                        gr.Markdown("**Loss** per step")
                        loss_plot = gr.Plot(show_label=False)
                    with gr.Column():
                        gr.Markdown("**Preview**: an example fused with the current weights")
                        preview = gr.Image(show_label=False, format="png", interactive=False, height=260,
                                           elem_id="train-preview")
                checkpoint_file = gr.File(label="Checkpoint (zip)", interactive=False)
    timer = gr.Timer(app.poll_seconds, active=False)  # outside the tab, so it ticks whichever tab is shown
    followed = gr.State(None)
    return TrainView(pairs, options, ablation, start_button, stop_button, progress, status, loss_plot, preview,
                     checkpoint_file, timer, followed, checkpoint_menus)


def build_about_tab(app: AppModel) -> None:
    """What the app is, its two models and their figures in plain words, its use; the full model cards (read
    again on every page load) one click away."""
    with gr.Tab("About"):
        gr.Markdown(ABOUT)
        with gr.Accordion("Full model cards (how each model was trained, every table)", open=False,
                          elem_id="model-cards"):
            gr.Markdown(app.model_cards)


def build_tabs(app: AppModel) -> Tabs:
    """Every tab, in order; the Train tab refreshes the others' checkpoint menus."""
    fuse = build_fuse_tab(app)
    evaluate = build_evaluate_tab(app)
    train = build_train_tab(app, (fuse.checkpoint, evaluate.pairs.checkpoint))
    build_about_tab(app)
    return Tabs(fuse, evaluate, train)
