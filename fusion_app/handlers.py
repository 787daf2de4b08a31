"""The handlers of the UI: each turns UI values into calls of the ``fusion_core`` public API and its results back
into UI values, and every refused input into a message a person can act on (``gr.Error``), never a traceback:
any ``ValueError`` of the library during a request is shown with its message. Every message is escaped, since
Gradio renders a message as HTML and a message may quote a file or zip entry name. An upload is taken into its
session's folder under a neutral name before it is read (``SessionFolders.upload``). What a handler shows, an
image or a file, is a file it wrote into its request's folder there (an image as PNG: ``write_shown``), served
from that folder as it is: Gradio keeps no copy in its cache, and the file goes with the session.

Handlers that write several components take the view of their tab (or column) first and return
``{component: value}``; components they leave out keep their value. One class per tab (``FuseHandlers``,
``EvaluateHandlers``, ``TrainHandlers``) over the state they share (``AppState``: the model store, the trainer,
the sessions' folders, the clock of the time limits); ``FusionApp`` is all of them. Imports gradio.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from fusion_app import limits
from fusion_app.archive import external_methods, zip_checkpoint
from fusion_app.deadline import Deadline, TimeLimitExceeded, evaluate_seconds, fuse_seconds
from fusion_app.device import ON_ZERO_GPU, evaluate_on_device, fuse_on_device, on_accelerator
from fusion_app.figures import attention_figure, expert_figure, gate_figure, loss_figure, weight_figure
from fusion_app.inputs import (
    EXAMPLES,
    FuseOptions,
    InputError,
    TrainOptions,
    check_method_names,
    check_pairs,
    check_training_pixels,
    load_pair,
    pairs_root,
    read_source,
    source_name,
    train_configs,
    usable_pairs,
)
from fusion_app.models import RANDOM, TASKS, ModelStore
from fusion_app.reports import (
    NETWORK,
    attention_dependence,
    compare_methods,
    describe_source,
    dicom_markdown,
    evaluation_means,
    evaluation_rows,
    evaluation_summary,
    expert_dependence,
    gate_dependence,
    measure_dependence,
    model_cards,
    network_metrics,
    network_table,
    noise_like,
    notes_markdown,
    plain,
    training_progress,
    training_status,
    weight_note,
    write_downloads,
    write_shown,
)
from fusion_app.sessions import SessionFolders, Upload
from fusion_app.texts import DEFAULT_WINDOW, FROM_SCRATCH, WINDOWS
from fusion_app.training import Trainer, TrainingJob, training_card
from fusion_app.views import EvaluateView, FuseView, MapsView, SourceColumn, TrainView
from fusion_core import (
    CheckpointError,
    FusionPipeline,
    FusionResult,
    ImageLoadError,
    Intermediates,
    LoadedPair,
    Origin,
    PairDataset,
    TrainConfig,
    check_seed,
    parse_timesteps,
    read_image,
    to_uint8,
)


def escaped(message: str) -> str:
    """A message as HTML text: Gradio renders the HTML of its messages (sanitized, but an ``<img>`` or a styled
    link still shows), and a message may quote a file or zip entry name. Quotes stay quotes."""
    return html.escape(message, quote=False)


def fail(message: str) -> gr.Error:
    """A red message in the UI, as plain text."""
    return gr.Error(escaped(message), print_exception=False)


@contextmanager
def user_messages() -> Iterator[None]:
    """Refused inputs, exceeded time limits and any ``ValueError`` of the library as messages in the UI."""
    try:
        yield
    except gr.Error:  # a message already (gr.Error is a ValueError too)
        raise
    except (ValueError, CheckpointError, TimeLimitExceeded) as error:
        raise fail(str(error)) from None


@dataclass(frozen=True)
class FusedPair:
    """What the maps of a fusion are drawn from (the Fuse tab's ``gr.State``): the checkpoint, the pair as fused,
    the feature timesteps and seed, the maps recorded (None for a pair fused in tiles), the sources' names."""

    checkpoint: str
    a: np.ndarray
    b: np.ndarray
    timesteps: tuple[int, ...]
    seed: int
    maps: Intermediates | None
    names: tuple[str, str]


@dataclass(frozen=True)
class FollowedRun:
    """The training run a session follows (the Train tab's ``gr.State``): its name, the loss points shown."""

    name: str
    shown: int = -1


class AppState:
    """What the handlers share: one model store, one trainer, one folder for outputs (``work_dir``), in which a
    request writes its files into a folder of its own in its session's folder (``SessionFolders``), where the
    session's uploads are taken from Gradio's ``cache`` (by default the ``GRADIO_TEMP_DIR`` that app.py sets).
    ``clock`` times the requests' limits."""

    def __init__(self, models: ModelStore | None = None, work_dir: Path | None = None, poll_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, cache: Path | None = None):
        self.models = models or ModelStore()
        self.work_dir = Path(work_dir or Path(tempfile.gettempdir()) / "dgd-fusion-app")
        self.sessions = SessionFolders(self.work_dir / "sessions", cache or os.environ.get("GRADIO_TEMP_DIR"),
                                       EXAMPLES)
        self.clock = clock
        if ON_ZERO_GPU:  # a GPU only inside decorated calls, so train in checkpointed chunks
            self.trainer = Trainer("cuda", chunk_steps=limits.ZERO_GPU_CHUNK_STEPS, accelerate=on_accelerator)
        else:
            self.trainer = Trainer("cuda" if torch.cuda.is_available() else "cpu")
        self.poll_seconds = poll_seconds  # how often the Train tab's timer asks for progress
        self.runs: dict[str, TrainingJob] = {}  # every run started here, by name, for the sessions following them

    def request_dir(self, session: str, kind: str) -> Path:
        """A new folder for one request's outputs (``SessionFolders.request_dir``)."""
        return self.sessions.request_dir(session, kind)

    def end_session(self, session: str) -> None:
        """A session ended (its tab closed): its outputs and uploads go."""
        self.sessions.end(session)

    def upload(self, session: str, path: str | None) -> Upload | None:
        """The session's copy of an upload Gradio gave a handler (``SessionFolders.upload``); None for none."""
        return self.sessions.upload(session, path) if path else None

    def slowdown(self) -> float:
        """How much slower a request runs than on an idle machine: a training run leaves it half the cores, and
        other work on the machine (the last minute's load average per core) slows it too."""
        busy = os.getloadavg()[0] / (os.cpu_count() or 1)
        return max(1.0, busy, self.trainer.cores / self.trainer.fusion_threads())

    def resolve(self, task: str, choice: str) -> str:
        """The checkpoint a menu choice names for a task."""
        try:
            return self.models.resolve(task, choice)
        except ValueError as error:
            raise fail(str(error)) from None

    def model_note(self, task: str, choice: str) -> gr.Markdown:
        """The model line, highlighted when the network has random weights."""
        random = self.resolve(task, choice) == RANDOM
        return gr.Markdown(self.models.describe(task, choice), elem_classes=["warning-note"] if random else [])


class FuseHandlers(AppState):
    """The Fuse tab: the sources' previews, the task's labels, the fusion, and its maps on demand."""

    def task_changed(self, view: FuseView, task: str, choice: str) -> dict:
        """Source labels and the model line follow the task."""
        spec = TASKS[task]
        return {view.source_a.file: gr.File(label=f"Source A: {spec.a}"),
                view.source_b.file: gr.File(label=f"Source B: {spec.b}"),
                view.model_note: self.model_note(task, choice)}

    def preview(self, column: SourceColumn, session: str, path: str | None, window: str, frame: float | None
                ) -> dict:
        """Preview of an upload, its description, the DICOM window shown only for DICOM files and the frame only
        for files of several frames."""
        if not path:
            return {column.preview: None, column.info: "", column.dicom: gr.Group(visible=False),
                    column.frames: gr.Group(visible=False)}
        try:
            upload = self.upload(session, path)
            image = read_image(upload.path, frame=int(frame or 0), window=WINDOWS.get(window),
                               max_pixels=limits.MAX_PIXELS)
        except (ImageLoadError, ValueError) as error:
            gr.Warning(escaped(f"{Path(path).name}: {error}"))
            return {column.preview: None, column.info: f"⚠️ {plain(str(error))}"}
        shown = write_shown(self.request_dir(session, f"preview-{column.file.elem_id}"), "preview",
                            to_uint8(image.pixels))
        return {column.preview: shown, column.info: describe_source(image),
                column.dicom: gr.Group(visible=image.dicom is not None),
                column.frames: gr.Group(visible=image.frames > 1)}

    def source_changed(self, column: SourceColumn, session: str, path: str | None) -> dict:
        """A new upload: its DICOM window and frame back to their defaults, then the preview."""
        return {column.window: gr.update(value=DEFAULT_WINDOW), column.frame: gr.update(value=0),
                **self.preview(column, session, path, DEFAULT_WINDOW, 0)}

    def fuse(self, view: FuseView, session: str, path_a: str | None, path_b: str | None, task: str, choice: str,
             options: FuseOptions) -> Iterator[dict]:
        """Fuse the uploaded pair within ``FUSE_SECONDS``; yields the image with the network's own metrics first,
        then the comparison with the classical baselines and the network's maps. Each upload is decoded once."""
        deadline = Deadline.start(limits.FUSE_SECONDS, "try a smaller image, or `python -m fusion_core fuse` on "
                                  "your own machine", self.clock)
        with user_messages():
            yield from self._fuse(view, session, path_a, path_b, task, choice, options, deadline)

    def _fuse(self, view: FuseView, session: str, path_a: str | None, path_b: str | None, task: str, choice: str,
              options: FuseOptions, deadline: Deadline) -> Iterator[dict]:
        spec = TASKS[task]
        upload_a, upload_b = self.upload(session, path_a), self.upload(session, path_b)
        image_a = read_source(upload_a and upload_a.path, f"source A ({spec.a})", options.window_a, options.frame_a)
        image_b = read_source(upload_b and upload_b.path, f"source B ({spec.b})", options.window_b, options.frame_b)
        pair = load_pair(image_a, image_b, spec, options.resample, options.align)
        name = self.resolve(task, choice)
        deadline.check("before the network's fusion")
        height, width = pair.a.pixels.shape[:2]
        deadline.refuse_beyond(fuse_seconds(height * width, self.models.device == "cpu", self.slowdown()),
                               f"Fusing and scoring this {width} x {height} pair")
        began = time.perf_counter()
        pipeline, result = self._fuse_pair(name, pair, options, deadline)
        notes = [f"A: {w}" for w in image_a.warnings] + [f"B: {w}" for w in image_b.warnings] + list(pair.warnings)
        is_dicom = image_a.dicom is not None or image_b.dicom is not None
        folder = self.request_dir(session, "fused")  # what is shown in "shown", served from there as it is
        fused = write_shown(folder / "shown", "fused", result.fused)
        png_a = write_shown(folder / "shown", "source-a", to_uint8(pair.a.pixels))
        png_b = write_shown(folder / "shown", "source-b", to_uint8(pair.b.pixels))
        shown = {
            view.fused: fused, view.slider_a: (png_a, fused), view.slider_b: (png_b, fused),
            view.downloads: write_downloads(result, pair.b.pixels, folder, is_dicom),
            view.notes: notes_markdown(name, str(pipeline.device), time.perf_counter() - began, result, notes),
            view.dicom_info: dicom_markdown({f"A ({spec.a})": image_a, f"B ({spec.b})": image_b}),
        }
        scores = network_metrics(result.fused, pair.a, pair.b)
        source = FusedPair(name, pair.a.pixels, pair.b.pixels, result.timesteps, check_seed(int(options.seed or 0)),
                           result.intermediates, (spec.a, spec.b))
        cleared = {component: None for component in view.maps.outputs()}
        yield shown | cleared | {view.metrics: network_table(scores), view.baselines: None,
                                 view.maps.source: source}
        table, baselines = compare_methods(scores, pair.a, pair.b, deadline)
        yield shown | {view.metrics: table, view.baselines: [
            (write_shown(folder / "shown", f"baseline-{name}", image), name) for image, name in baselines]}

    def draw_maps(self, view: MapsView, source: FusedPair | None, is_open: bool) -> dict:
        """The maps of the last fusion, when the accordion is open: each family on its fixed scale, with the line
        that says how much it depends on this image, measured against the maps the same network draws for
        uniform noise of the same size and seed (one more pass of the network, within ``FUSE_SECONDS``)."""
        if not is_open:
            return gr.skip()  # every map as it is (an empty dict is refused by gradio as too few values)
        if source is None:
            return {view.weight_note: "Fuse a pair to see its maps here."}
        if source.maps is None:
            return {component: None for component in view.outputs()} | {
                view.weight_note: "The maps are not recorded for a pair this large (it was fused in tiles)."}
        with user_messages():
            deadline = Deadline.start(limits.FUSE_SECONDS, "try a smaller image", self.clock)
            noise = self._noise_maps(source)
            deadline.check("while drawing the maps")
        maps, dependence = source.maps, measure_dependence(source.maps, noise)
        return {
            view.weight_note: weight_note(maps.weight_map, *source.names),
            view.weight: weight_figure(maps.weight_map),
            view.gate_note: gate_dependence(dependence),
            view.gates: gate_figure(maps, source.timesteps, dependence.gates),
            view.attention_note: attention_dependence(dependence),
            view.attention: attention_figure(maps),
            view.expert_note: expert_dependence(dependence),
            view.experts: expert_figure(maps, source.timesteps, noise.experts),
        }

    def _noise_maps(self, source: FusedPair) -> Intermediates:
        """The maps the checkpoint draws for uniform noise of the pair's size, with the fusion's seed."""
        torch.set_num_threads(self.trainer.fusion_threads())
        try:
            pipeline = self.models.get(source.checkpoint)
            result = fuse_on_device(pipeline, *noise_like(source.a, source.b, source.seed), source.timesteps,
                                    source.seed)
        except (ValueError, CheckpointError) as error:
            raise fail(str(error)) from None
        return result.intermediates or Intermediates()

    def _fuse_pair(self, name: str, pair: LoadedPair, options: FuseOptions, deadline: Deadline
                   ) -> tuple[FusionPipeline, FusionResult]:
        """The network's fusion of a checked pair, with its intermediates, the deadline checked between tiles."""
        torch.set_num_threads(self.trainer.fusion_threads())
        seed = check_seed(int(options.seed or 0))
        pipeline = self.models.get(name)
        return pipeline, fuse_on_device(pipeline, pair.a.pixels, pair.b.pixels, parse_timesteps(options.timesteps),
                                        seed, deadline.tile_check("the network's fusion"))


class EvaluateHandlers(AppState):
    """The Evaluate tab: a zip of pairs (or the bundled examples) scored for every method."""

    def evaluate(self, view: EvaluateView, session: str, zip_path: str | None, task: str, choice: str,
                 convention: str, progress=gr.Progress()) -> dict:
        """Fuse and score every pair of a zip (or the bundled examples) with the network and the baselines, and
        score the fused images of any other methods the zip holds (``fused/NAME/``), within ``EVALUATE_SECONDS``.
        The zip is unpacked and fused in a scratch folder among the session's uploads, never served: only the
        tables and the chart move to the request's folder of outputs, which serves them."""
        out_dir = self.request_dir(session, "evaluations")
        scratch = self.sessions.scratch_dir(session)
        deadline = Deadline.start(limits.EVALUATE_SECONDS, "try fewer or smaller pairs, or `python -m fusion_core "
                                  "evaluate` on your own machine", self.clock)
        try:  # a refused or stopped request leaves nothing behind
            with user_messages():
                name, pairs, data, external, result = self._evaluate(scratch, self.upload(session, zip_path), task,
                                                                     choice, convention, progress, deadline)
            shown = {key: Path(shutil.move(result.files[key], out_dir / result.files[key].name))
                     for key in ("means_png", "per_image_csv", "means_csv")}
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return {
            view.summary: evaluation_summary(len(pairs), data, name, external),
            view.means: evaluation_means(result),
            view.chart: str(shown["means_png"]),
            view.rows: evaluation_rows(result),
            view.files: [str(shown["per_image_csv"]), str(shown["means_csv"])],
        }

    def _evaluate(self, out_dir: Path, upload: Upload | None, task: str, choice: str, convention: str, progress,
                  deadline: Deadline):
        """The pairs checked within the app's bounds from their headers before any fusion, the work estimated
        from their pixels, then evaluated into ``out_dir`` (the one decoding of each pair), the deadline checked
        after each fused image."""
        root, data = pairs_root(upload, task, out_dir / "pairs")
        pairs = usable_pairs(root, out_dir / "pairs")
        pixels = check_pairs(pairs, root, source_name(upload, task), "evaluate", limits.MAX_EVALUATE_PAIRS)
        external = check_method_names(external_methods(root))
        deadline.refuse_beyond(evaluate_seconds(pixels, len(pairs), len(external), self.models.device == "cpu",
                                                self.slowdown()),
                               f"Evaluating {len(pairs)} pairs of {pixels / 1e6:.1f} megapixels per source in all")
        name = self.resolve(task, choice)
        torch.set_num_threads(self.trainer.fusion_threads())

        def tick(done: int, total: int, what: str) -> None:
            deadline.check(f"after {done} of {total} fused images")
            progress((done, total), desc=what)

        try:
            result = evaluate_on_device(root, self.models.get(name), NETWORK, out_dir / "results", convention, tick,
                                        external)
        except (ValueError, CheckpointError) as error:
            raise fail(f"Evaluation failed: {str(error).replace(str(out_dir), 'the zip')}") from None
        return name, pairs, data, external, result


class TrainHandlers(AppState):
    """The Train tab: start a run, follow it with the timer, stop it."""

    def start_training(self, view: TrainView, session: str, zip_path: str | None, task: str, start: str,
                       options: TrainOptions) -> dict:
        """Start a run in the background; the Train tab's timer then follows it (``training_progress``)."""
        if self.trainer.busy:
            job = self.trainer.job
            raise fail(f"A training run is already in progress (step {job.step} of {job.total}); only one runs "
                       "at a time. Wait for it to finish, or stop it from the session that started it.")
        name = f"trained-{time.strftime('%Y%m%d-%H%M%S')}"
        (self.work_dir / "training").mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work_dir / "training"))
        try:  # a refused run leaves nothing behind; a started one keeps its checkpoint, selectable by every session
            with user_messages():
                dataset, data, pipeline, configs = self._training_inputs(run_dir / "pairs",
                                                                         self.upload(session, zip_path), task,
                                                                         start, options)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        out_dir = run_dir / name
        job = TrainingJob(name, out_dir, configs[0].steps, tuple(c.stage for c in configs))
        drawn = Origin(seed=configs[0].seed, preset=options.preset)
        origin = drawn if start == FROM_SCRATCH else Origin(checkpoint=start)
        provenance = training_card(name, origin, data, len(dataset))
        try:
            self.trainer.start(job, pipeline, dataset, configs, provenance, self._finish_training)
        except RuntimeError:
            raise fail("A training run has just started in another session; only one runs at a time.") from None
        self.runs[name] = job
        return {view.progress: training_progress(job, stopping=False), view.status: "Training…", view.loss_plot: None,
                view.preview: None, view.checkpoint_file: None, view.timer: gr.Timer(active=True),
                view.followed: FollowedRun(name)}

    def _training_inputs(self, pairs_dir: Path, upload: Upload | None, task: str, start: str, options: TrainOptions
                         ) -> tuple[PairDataset, str, FusionPipeline, list[TrainConfig]]:
        """The pairs, checked within the Train tab's bounds from their headers, then read into memory once (their
        unpacked files then go), their description, the pipeline to train and the configuration of each stage."""
        root, data = pairs_root(upload, task, pairs_dir)
        try:
            pairs, source = usable_pairs(root, pairs_dir), source_name(upload, task)
            check_training_pixels(check_pairs(pairs, root, source, "train", limits.MAX_TRAIN_PAIRS), source)
            try:
                dataset = PairDataset(pairs)  # the one decoding of each pair
            except ValueError as error:
                raise InputError(str(error).replace(str(pairs_dir), "the zip")) from None
        finally:
            shutil.rmtree(pairs_dir, ignore_errors=True)
        if upload is not None:  # what the model card says: never the zip's name, which may be a patient's
            data = f"an uploaded zip of {len(dataset)} pairs"
        try:
            pipeline = self.models.fresh(start, options.preset, TrainConfig.seed)  # the seed of every app run
        except (ValueError, CheckpointError) as error:
            raise fail(str(error)) from None
        return dataset, data, pipeline, train_configs(options, pipeline.stride)

    def training_progress(self, view: TrainView, followed: FollowedRun | None) -> dict:
        """One tick of the Train tab's timer: the followed run's progress and, when the run has ended, its status,
        its checkpoint, the checkpoint menus listing it, and the timer stopped."""
        job = self.runs.get(followed.name) if followed is not None else None
        if job is None:
            return {view.status: "No training run was started in this session.", view.timer: gr.Timer(active=False)}
        done = job.done  # read first: a run records its last step before it is marked done
        shown = {view.progress: training_progress(job, self.trainer.stopping and self.trainer.job is job)}
        if len(job.history) != followed.shown:
            shown |= {view.loss_plot: loss_figure(list(job.history)),
                      view.followed: replace(followed, shown=len(job.history))}
            if job.preview is not None:
                shown[view.preview] = job.preview
        if not done:
            status = "Stopping: saving the checkpoint…" if self.trainer.stopping else "Training…"
            return shown | {view.status: status}
        menus = {menu: gr.Dropdown(choices=self.models.choices()) for menu in view.checkpoint_menus}
        return shown | menus | {
            view.pairs.checkpoint: gr.Dropdown(choices=[FROM_SCRATCH, *self.models.folders()]),
            view.status: training_status(job), view.checkpoint_file: job.zip_path and str(job.zip_path),
            view.timer: gr.Timer(active=False)}

    def stop_training(self, followed: FollowedRun | None) -> str:
        """Ask the running job to stop (it saves its checkpoint first); only the session following it may."""
        job = self.trainer.job
        if not self.trainer.busy or job is None:
            return "No training run is in progress."
        if followed is None or followed.name != job.name:
            raise fail("This run was started in another session; only that session can stop it.")
        self.trainer.stop()
        return "Stopping after the current step; the checkpoint is saved first."

    def _finish_training(self, job: TrainingJob) -> None:
        """In the worker thread: make the checkpoint selectable and downloadable."""
        self.models.register(job.name, job.out_dir)
        job.zip_path = zip_checkpoint(job.out_dir, job.name)


class FusionApp(FuseHandlers, EvaluateHandlers, TrainHandlers):
    """Every handler of the UI, over one model store, one trainer and one folder for outputs."""

    def model_cards(self) -> str:
        """The model cards of the bundled checkpoints in full (read on each load)."""
        return model_cards(self.models)
