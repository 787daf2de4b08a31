"""DGD-Fusion in the browser: fuse a pair, compare it with classical methods, evaluate, train, read about it.

Layout and wiring only. The parts live in ``fusion_app``: the components of each tab (``views``), the handlers
that adapt them to the ``fusion_core`` public API (``handlers``), and, without gradio, the limits, the prose,
the checks of the inputs, the reports and the sessions' output folders. Here each tab's events are wired: the
CPU-heavy ones share one concurrency group and one bounded queue, each within a time limit, and a ``gr.Timer``
follows a training run. ``build_demo`` puts the tabs together, with the queue and the removal of a session's
outputs and uploads when it ends (and on a timer for sessions that end without saying so); ``main`` launches.
Gradio's cache is a folder of the app's own (``GRADIO_TEMP_DIR``, set before gradio is imported), so the app may
sweep what Gradio leaves in it; the sessions' outputs never enter it, served from their own folders (a static
path). Pipelines load lazily, once per checkpoint
(``fusion_app.models.ModelStore``), so ``import app`` stays cheap and nothing is fetched from the network at start.

Paper: Di, Huo, Wang, Liu, Lian, J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # set before gradio is imported: no usage pings
# Gradio's cache in a folder of the app's own, read by gradio when it builds the components: uploads arrive there
# and leave it for their session's folder (fusion_app.sessions); a folder set by whoever runs the app is kept.
os.environ.setdefault("GRADIO_TEMP_DIR", str(Path(tempfile.gettempdir()) / "dgd-fusion-app" / "gradio"))

from dataclasses import replace
from functools import partial

import gradio as gr

from fusion_app import limits
from fusion_app.archive import MAX_ZIP_BYTES
from fusion_app.handlers import FusionApp
from fusion_app.inputs import EXAMPLES, FuseOptions, TrainOptions
from fusion_app.texts import DESCRIPTION, NO_ABLATION
from fusion_app.views import CSS, THEME, EvaluateView, FuseView, SourceColumn, TrainView, build_tabs

# Fusing, evaluating and starting a run share one queue slot, so two of them never fight over a small machine's
# cores; a started run trains in the trainer's thread, which leaves half the cores to fusion (Trainer).
CPU_HEAVY = {"concurrency_id": "cpu-heavy", "concurrency_limit": 1}
# Events that only read state (the model note, the training timer's ticks, stop) bypass the queue, so a queue full
# of heavy requests never refuses them; previews stay queued, since only queued events show gr.Warning.
LIGHT = {"queue": False}
LAUNCH_OPTIONS = {"theme": THEME, "css": CSS, "allowed_paths": [str(EXAMPLES)],
                  "max_file_size": MAX_ZIP_BYTES}  # per uploaded file, as much as a zip may unpack to


def wire_source(app: FusionApp, column: SourceColumn) -> None:
    """A source's preview, on a new upload and when its DICOM window or frame changes."""

    def source_changed(request: gr.Request, path):
        return app.source_changed(column, request.session_hash, path)

    def preview(request: gr.Request, path, window, frame):
        return app.preview(column, request.session_hash, path, window, frame)

    column.file.change(source_changed, column.file, [column.window, column.frame, *column.shown()],
                       api_visibility="private")
    for option in (column.window, column.frame):
        option.input(preview, [column.file, column.window, column.frame], column.shown(), api_visibility="private")


def wire_fuse_tab(app: FusionApp, view: FuseView) -> None:
    """Task and checkpoint notes, previews of the uploads, and the fusion (in the CPU-heavy group)."""
    view.task.change(partial(app.task_changed, view), [view.task, view.checkpoint],
                     [view.source_a.file, view.source_b.file, view.model_note], api_visibility="private", **LIGHT)
    view.checkpoint.change(app.model_note, [view.task, view.checkpoint], view.model_note, api_visibility="private",
                           **LIGHT)
    for column in (view.source_a, view.source_b):
        wire_source(app, column)

    def fuse(request: gr.Request, path_a, path_b, task, choice, *options):  # the inputs' values by position
        options = FuseOptions(**dict(zip(view.options, options, strict=True)))
        yield from app.fuse(view, request.session_hash, path_a, path_b, task, choice, options)

    maps = view.maps
    draw = {"fn": partial(app.draw_maps, maps), "inputs": [maps.source, maps.is_open], "outputs": maps.outputs(),
            "api_visibility": "private", **CPU_HEAVY}
    view.button.click(fuse, [view.source_a.file, view.source_b.file, view.task, view.checkpoint,
                             *view.options.values()], view.outputs(), api_name="fuse", **CPU_HEAVY).success(**draw)
    # the maps cost one more pass of the network: drawn only while their accordion is open
    maps.accordion.expand(lambda: True, None, maps.is_open, api_visibility="private", **LIGHT).then(**draw)
    maps.accordion.collapse(lambda: False, None, maps.is_open, api_visibility="private", **LIGHT)


def wire_evaluate_tab(app: FusionApp, view: EvaluateView) -> None:
    """The evaluation (in the CPU-heavy group)."""

    def evaluate(request: gr.Request, zip_path, task, choice, convention, progress=gr.Progress()):
        return app.evaluate(view, request.session_hash, zip_path, task, choice, convention, progress)

    view.button.click(evaluate, [view.pairs.zip, view.pairs.task, view.pairs.checkpoint, view.convention],
                      view.outputs(), api_name="evaluate", **CPU_HEAVY)


def wire_train_tab(app: FusionApp, view: TrainView) -> None:
    """Start (in the CPU-heavy group), the timer's ticks while a run is followed, and stop."""

    def start(request: gr.Request, zip_path, task, origin, *values):  # by position, the ablation last
        *values, ablation = values
        options = TrainOptions(**dict(zip(view.options, values, strict=True)))
        if ablation and ablation != NO_ABLATION:  # a research variant replaces the size
            options = replace(options, preset=ablation)
        return app.start_training(view, request.session_hash, zip_path, task, origin, options)

    view.start_button.click(start, [view.pairs.zip, view.pairs.task, view.pairs.checkpoint, *view.options.values(),
                                    view.ablation], view.outputs(), api_name="train", **CPU_HEAVY)
    view.timer.tick(partial(app.training_progress, view), view.followed, view.outputs(),
                    api_name="training_progress", show_progress="hidden", **LIGHT)
    view.stop_button.click(app.stop_training, view.followed, view.status, api_name="stop_training", **LIGHT)


def build_demo(app: FusionApp | None = None) -> gr.Blocks:
    """The whole interface: Fuse, Evaluate, Train and About tabs over one ``FusionApp``; layout, then wiring,
    then the queue; a session's outputs and uploads go when it ends, and every ``SWEEP_SECONDS`` those of the
    sessions idle for ``KEEP_OUTPUTS_SECONDS``, with the empty leftovers of Gradio's cache."""
    app = app or FusionApp()
    # the sessions' outputs are served from their folders as they are, not copied into Gradio's cache, so they go
    # with their session; every name in that tree is the app's, and no upload is ever in it (fusion_app.sessions)
    gr.set_static_paths(paths=[app.sessions.outputs])
    with gr.Blocks(title="DGD-Fusion", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(DESCRIPTION)
        tabs = build_tabs(app)
        wire_fuse_tab(app, tabs.fuse)
        wire_evaluate_tab(app, tabs.evaluate)
        wire_train_tab(app, tabs.train)

        def end_session(request: gr.Request) -> None:
            app.end_session(request.session_hash)

        demo.unload(end_session)
    app.sessions.sweep_every(limits.SWEEP_SECONDS)
    return demo.queue(max_size=limits.QUEUE_SIZE)


def main() -> None:
    build_demo().launch(**LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
