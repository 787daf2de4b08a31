"""DGD-Fusion in the browser: fuse a pair, compare it with classical methods, evaluate, train, read about it.

UI only. ``FusionApp`` holds the adapter handlers: each turns UI values into calls of the
``fusion_core`` public API and its results back into UI values, and turns every bad input into a message a
person can act on (``gr.Error``), never a traceback. ``build_demo`` holds the layout, then the wiring;
``main`` launches. Pipelines load lazily, once per checkpoint (``fusion_app.models.ModelStore``), so
``import app`` stays cheap and nothing is fetched from the network at start. The parts that need no gradio
(the model store, the figures, zips, the training thread) live in the ``fusion_app`` package.

Paper: Di, Huo, Wang, Liu, Lian, J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # set before gradio is imported: no usage pings

import html
import re
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from fusion_app.archive import unpack_zip, zip_checkpoint
from fusion_app.figures import attention_figure, expert_figure, gate_figure, loss_figure
from fusion_app.models import AUTO, DEFAULT_TASK, RANDOM, TASKS, ModelStore, Task
from fusion_app.training import Trainer, TrainingJob, progress_html, training_card
from fusion_core import (
    BASELINES,
    CONVENTIONS,
    METRICS,
    PAPER_METRICS,
    PRESETS,
    CheckpointError,
    FusionPipeline,
    FusionResult,
    ImageLoadError,
    LoadedImage,
    PairDataset,
    TrainConfig,
    compute_metrics,
    evaluate_folder,
    find_pairs,
    format_markdown_table,
    pipeline_method,
    read_image,
    read_pair,
    replace_luma,
    to_uint8,
    write_dicom_secondary_capture,
    write_png,
    write_tiff16,
)

try:  # Hugging Face ZeroGPU: the package exists only there, and lends a GPU per decorated call
    import spaces
except ImportError:
    spaces = None

EXAMPLES = Path(__file__).resolve().parent / "assets" / "examples"
FROM_SCRATCH = "random weights (preset below)"
NETWORK = "DGD-Fusion"
WINDOWS = {  # UI label -> read_image(window=...)
    "stored window (full range when none)": None,
    "full range": "full",
    "brain (W 80, L 40)": "brain",
    "soft tissue (W 350, L 50)": "soft_tissue",
    "bone (W 2000, L 500)": "bone",
    "lung (W 1500, L -600)": "lung",
}
DEFAULT_WINDOW = next(iter(WINDOWS))
MAX_PIXELS = 4096 * 4096  # larger pairs fuse (in tiles) but the metrics and baselines then take minutes on a CPU
KEEP_OUTPUTS_SECONDS = 3600
ZERO_GPU_CHUNK_STEPS = 200  # steps per lent GPU call on ZeroGPU: well inside its default 60 s per call

DESCRIPTION = """\
# DGD-Fusion: multimodal image fusion with a dynamic-gating diffusion network

Fuse an **infrared + visible** pair or an **MRI + CT / PET / SPECT** pair, compare the result with classical
fusion methods on the paper's metrics, and look inside the network: the expert weights of its dynamic feature
extractors, the gates of its gated feature selection, its global-local attention maps and the weight map
that says where the result comes from A and where from B. Method: Di, Huo, Wang,
Liu and Lian, *J. Harbin Inst. Technol.* 2026, DOI [10.11918/202507016](https://doi.org/10.11918/202507016).

**A research tool, not a medical device: never use it for diagnosis, and do not upload real patient data to a
public Space.**
"""

ABOUT = """\
## The method

DGD-Fusion (Di, Huo, Wang, Liu, Lian, "Dynamic gating diffusion denoising and cross-layer attention-based
multimodal image fusion network", *Journal of Harbin Institute of Technology* 2026,
DOI [10.11918/202507016](https://doi.org/10.11918/202507016)) fuses two registered images in two parts:

1. a **denoising diffusion model** learns the joint distribution of the stacked pair. Its noise predictor is a
   UNet built from **dynamic feature extractors** (DFE: each layer mixes several expert kernels with weights
   chosen per image and per noise level) and **gated feature selection** modules (GFS: a spatial-and-channel
   gate that keeps the informative features);
2. a **cross-layer attention fusion head** reads the UNet's multi-scale features at a few small noise levels,
   together with the two sources, through R-Transformer blocks and **global-local attention** (GLSA), and
   outputs the fused luminance.

Fusion runs on luminance: the colour of the visible, PET or SPECT image is kept exactly (YCbCr, BT.601).
The metric table uses the paper's seven metrics (EN, MI, SSIM, PSNR, SF, Q<sup>AB/F</sup>, CC) and four more
that the field reports (SD, AG, SCD, VIF); the convention is named above every table.

## Data

- **Infrared + visible:** MSRS (L. Tang et al., PIAFusion, *Information Fusion* 2022; SeAFusion, *Information
  Fusion* 2022), built from MFNet (Q. Ha et al., IROS 2017).
- **Medical:** The Whole Brain Atlas (K. A. Johnson and J. A. Becker, Harvard Medical School).

The bundled example pairs come from the test splits, so the bundled checkpoints never trained on them
(`assets/examples/README.md`).

## Use

This is a **research tool. It is not a medical device and must not be used for diagnosis.** Do not upload
real patient data to a public Space: anything uploaded there is processed on a shared server. DICOM files are
read locally and only technical attributes (modality, size, window, spacing) are shown; exported DICOM files
are new Secondary Capture objects that carry no identifier of the inputs.
"""

CSS = """
.warning-note { background: #fff4e5; border-left: 4px solid #f59e0b; padding: 6px 12px; border-radius: 4px; }
.warning-note * { color: #663c00 !important; }
.train-progress progress { width: 100%; height: 14px; }
"""
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
LAUNCH_OPTIONS = {"theme": THEME, "css": CSS, "allowed_paths": [str(EXAMPLES)]}


def _on_accelerator(fn):
    """``spaces.GPU`` on Hugging Face ZeroGPU, where a GPU is lent per call; elsewhere ``fn`` unchanged."""
    return spaces.GPU(fn) if spaces is not None else fn


def _fail(message: str) -> gr.Error:
    """A red message in the UI; the text is escaped because gr.Error renders HTML (file names are user data)."""
    return gr.Error(html.escape(message), print_exception=False)


@_on_accelerator
def fuse_on_device(pipeline: FusionPipeline, a: np.ndarray, b: np.ndarray, timesteps: tuple[int, ...] | None,
                   seed: int) -> FusionResult:
    """The network's part of a fusion (the only part that wants a GPU)."""
    return pipeline.fuse(a, b, feature_timesteps=timesteps, generator=torch.Generator().manual_seed(seed),
                         return_intermediates=True)


@_on_accelerator
def evaluate_on_device(root: Path, pipeline: FusionPipeline, out_dir: Path, convention: str, progress):
    """Every pair of ``root`` fused by the network and the baselines, scored (``evaluate_folder``)."""
    methods = {NETWORK: pipeline_method(pipeline), **BASELINES}
    return evaluate_folder(root, methods, out_dir, convention=convention, progress=progress, reuse=False)


# ------------------------------------------------------------------------------------------------ inputs


def read_source(path: str | None, label: str, window: str = DEFAULT_WINDOW, frame: float | None = 0) -> LoadedImage:
    """An uploaded file as pixels; a clear message when it is missing or cannot be read."""
    if not path:
        raise _fail(f"Upload {label} first, or pick one of the examples.")
    try:
        return read_image(path, frame=int(frame or 0), window=WINDOWS.get(window), max_pixels=MAX_PIXELS)
    except ImageLoadError as error:
        raise _fail(f"{label}: {error}") from None


def describe_source(image: LoadedImage) -> str:
    """e.g. '640 × 480 px · 8-bit · gray', or the DICOM modality, frame and window."""
    height, width = image.pixels.shape[:2]
    colour = "colour" if image.pixels.ndim == 3 else "gray"
    if image.dicom is None:
        return f"{width} × {height} px · {image.bit_depth}-bit · {colour}"
    facts = image.dicom.as_dict()
    return f"DICOM {facts['modality']} · {width} × {height} px · frame {facts['frame']} · window {facts['window']}"


def parse_timesteps(text: str) -> tuple[int, ...] | None:
    """'5, 50, 100' -> (5, 50, 100); empty -> None (the model's own)."""
    if not text or not text.strip():
        return None
    try:
        return tuple(int(part) for part in text.replace(";", ",").split(",") if part.strip())
    except ValueError:
        raise _fail(f"Feature timesteps must be whole numbers separated by commas, e.g. 5, 50, 100 "
                    f"(got {text!r}).") from None


def load_pair(image_a: LoadedImage, image_b: LoadedImage, task: Task, resample: bool, align: bool):
    """Make the two sources one size (when asked) and aligned (when asked); ``read_pair`` does the work."""
    (ha, wa), (hb, wb) = image_a.pixels.shape[:2], image_b.pixels.shape[:2]
    if (ha, wa) != (hb, wb) and not resample:
        raise _fail(f"The {task.a} image is {wa} × {ha} pixels but the {task.b} image is {wb} × {hb} "
                    "(width × height). Register them to one size, or tick “Resample B to A's size” under "
                    "Advanced.")
    try:
        return read_pair(image_a.pixels, image_b.pixels, on_size_mismatch="resample", align=align)
    except ImageLoadError as error:
        raise _fail(str(error)) from None


# ------------------------------------------------------------------------------------------------ results


def compare_methods(fused: np.ndarray, a: np.ndarray, b: np.ndarray, convention: str = "standard"
                    ) -> tuple[str, list[tuple[np.ndarray, str]]]:
    """The metric table of the network beside the four classical baselines, and the baselines' images.

    Scored from arrays (the fused uint8 image, the sources on 0..255), never from displayed files.
    """
    a255, b255 = a.astype(np.float64) * 255.0, b.astype(np.float64) * 255.0
    rows = {NETWORK: compute_metrics(fused, a255, b255, convention=convention).values}
    images = []
    for name, method in BASELINES.items():
        image = to_uint8(method(a, b))
        rows[name] = compute_metrics(image, a255, b255, convention=convention).values
        images.append((image, name))
    caption = (f"Each method's fused image of this pair, scored against both sources; higher is better in every "
               f"column, the best in bold. {', '.join(PAPER_METRICS)} are the paper's metrics.")
    return format_markdown_table(rows, convention=convention, caption=caption), images


def write_downloads(result: FusionResult, b: np.ndarray, folder: Path, stem: str, dicom: bool) -> list[str]:
    """PNG, 16-bit TIFF (the full-precision luminance, in B's colour) and, for DICOM inputs, a Secondary Capture."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.png", folder / f"{stem}_16bit.tif"]
    write_png(paths[0], result.fused)
    precise = np.clip(replace_luma(b, result.y_fused), 0, 1) if result.fused.ndim == 3 else result.y_fused
    write_tiff16(paths[1], precise)
    if dicom:
        paths.append(folder / f"{stem}.dcm")
        write_dicom_secondary_capture(paths[2], result.fused)
    return [str(p) for p in paths]


def dicom_markdown(images: dict[str, LoadedImage]) -> str:
    """The de-identified summaries of the DICOM inputs as one table ('' when there is none)."""
    summaries = {label: image.dicom.as_dict() for label, image in images.items() if image.dicom is not None}
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
    return text + "".join(f"\n- ⚠️ {w}" for w in warnings)


def _safe_stem(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem)[:40] or "pair"


def _prune(folder: Path, max_age: float = KEEP_OUTPUTS_SECONDS) -> None:
    """Delete output folders older than ``max_age`` seconds (Gradio has copied them into its cache by then)."""
    if folder.is_dir():
        for old in folder.iterdir():
            if old.is_dir() and time.time() - old.stat().st_mtime > max_age:
                shutil.rmtree(old, ignore_errors=True)


def _pairs_root(zip_path: str | None, task: str, dest: Path) -> tuple[Path, str]:
    """The folder of pairs to use (the unpacked zip, else the task's bundled examples) and its description."""
    if not zip_path:
        return EXAMPLES / TASKS[task].folder, f"the bundled {task} examples"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return unpack_zip(zip_path, dest), f"the uploaded zip ({Path(zip_path).name})"
    except ValueError as error:
        raise _fail(f"The zip was refused: {error}.") from None


def _find_pairs(root: Path, hide: Path) -> list:
    """find_pairs with the temporary folder names taken out of its messages."""
    try:
        return find_pairs(root)
    except ValueError as error:
        raise _fail(f"No usable pairs: {str(error).replace(str(hide), 'the zip')}") from None


# ------------------------------------------------------------------------------------------------ the adapter


class FusionApp:
    """The handlers of the UI, over one model store, one trainer and one folder for outputs."""

    def __init__(self, models: ModelStore | None = None, work_dir: Path | None = None, poll_seconds: float = 1.0):
        self.models = models or ModelStore()
        self.work_dir = Path(work_dir or Path(tempfile.gettempdir()) / "dgd-fusion-app")
        if spaces is not None:  # ZeroGPU: a GPU only inside decorated calls, so train in checkpointed chunks
            self.trainer = Trainer("cuda", chunk_steps=ZERO_GPU_CHUNK_STEPS, accelerate=_on_accelerator)
        else:
            self.trainer = Trainer("cuda" if torch.cuda.is_available() else "cpu")
        self.poll_seconds = poll_seconds

    def _output_dir(self, kind: str, prune: bool = True) -> Path:
        """A new folder for one call's outputs; older ones of the same kind are pruned unless told not to."""
        if prune:
            _prune(self.work_dir / kind)
        return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=self._ensure(self.work_dir / kind)))

    def _resolve(self, task: str, choice: str) -> str:
        try:
            return self.models.resolve(task, choice)
        except ValueError as error:
            raise _fail(str(error)) from None

    @staticmethod
    def _ensure(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # -------------------------------------------------------------------------------------- fuse tab

    def model_note(self, task: str, choice: str) -> gr.Markdown:
        """The model line, highlighted when the network has random weights."""
        random = self._resolve(task, choice) == RANDOM
        return gr.Markdown(self.models.describe(task, choice), elem_classes=["warning-note"] if random else [])

    def task_changed(self, task: str, choice: str):
        """Source labels and the model line follow the task."""
        spec = TASKS[task]
        return gr.File(label=f"Source A: {spec.a}"), gr.File(label=f"Source B: {spec.b}"), self.model_note(task, choice)

    def preview(self, path: str | None, window: str, frame: float | None):
        """Preview of an upload, its description, and the DICOM options shown only for DICOM files."""
        if not path:
            return None, "", gr.Group(visible=False)
        try:
            image = read_image(path, frame=int(frame or 0), window=WINDOWS.get(window), max_pixels=MAX_PIXELS)
        except ImageLoadError as error:
            gr.Warning(html.escape(f"{Path(path).name}: {error}"))
            return None, f"⚠️ {error}", gr.skip()
        return to_uint8(image.pixels), describe_source(image), gr.Group(visible=image.dicom is not None)

    def source_changed(self, path: str | None):
        """A new upload: DICOM options back to their defaults, then the preview."""
        return (gr.Dropdown(value=DEFAULT_WINDOW), gr.Number(value=0),
                *self.preview(path, DEFAULT_WINDOW, 0))

    def fuse(self, path_a, path_b, task, choice, window_a, frame_a, window_b, frame_b, timesteps, seed, resample,
             align):
        """Fuse the uploaded pair; yields the image first, then the metric table and the network's maps.

        Outputs: fused, slider A, slider B, downloads, notes, DICOM summary, metric table, baselines,
        expert weights, gate maps with their activity, the head's weight map and attention maps.
        """
        spec = TASKS[task]
        image_a = read_source(path_a, f"source A ({spec.a})", window_a, frame_a)
        image_b = read_source(path_b, f"source B ({spec.b})", window_b, frame_b)
        pair = load_pair(image_a, image_b, spec, resample, align)
        name = self._resolve(task, choice)
        torch.set_num_threads(self.trainer.fusion_threads())
        began = time.perf_counter()
        try:
            pipeline = self.models.get(name)
            result = fuse_on_device(pipeline, pair.a.pixels, pair.b.pixels, parse_timesteps(timesteps),
                                    int(seed or 0))
        except (ValueError, CheckpointError) as error:
            raise _fail(str(error)) from None
        seconds = time.perf_counter() - began
        notes = [f"A: {w}" for w in image_a.warnings] + [f"B: {w}" for w in image_b.warnings] + list(pair.warnings)
        is_dicom = image_a.dicom is not None or image_b.dicom is not None
        downloads = write_downloads(result, pair.b.pixels, self._output_dir("fused"),
                                    f"fused_{_safe_stem(path_a)}", is_dicom)
        a8, b8 = to_uint8(pair.a.pixels), to_uint8(pair.b.pixels)
        shown = (result.fused, (a8, result.fused), (b8, result.fused), downloads,
                 notes_markdown(name, str(pipeline.device), seconds, result, notes),
                 dicom_markdown({f"A ({spec.a})": image_a, f"B ({spec.b})": image_b}))
        yield (*shown, "Scoring the fused image and the classical baselines…", None, None, None, None)
        table, baselines = compare_methods(result.fused, pair.a.pixels, pair.b.pixels)
        maps = result.intermediates
        yield (*shown, table, baselines, expert_figure(maps, result.timesteps), gate_figure(maps, result.timesteps),
               attention_figure(maps))

    # -------------------------------------------------------------------------------------- evaluate tab

    def evaluate(self, zip_path, task, choice, convention, progress=gr.Progress()):
        """Fuse and score every pair of a zip (or the bundled examples) with the network and the baselines.

        Outputs: summary, means table, bar chart, per-image rows, CSV files.
        """
        out_dir = self._output_dir("evaluations")
        root, data = _pairs_root(zip_path, task, out_dir / "pairs")
        pairs = _find_pairs(root, out_dir / "pairs")
        name = self._resolve(task, choice)
        torch.set_num_threads(self.trainer.fusion_threads())
        try:
            result = evaluate_on_device(root, self.models.get(name), out_dir / "results", convention,
                                        lambda done, total, what: progress((done, total), desc=what))
        except (ValueError, CheckpointError) as error:
            raise _fail(f"Evaluation failed: {str(error).replace(str(out_dir), 'the zip')}") from None
        random = " ⚠️ The network ran with **random weights**: its scores say nothing about the method." \
            if name == RANDOM else ""
        summary = f"Evaluated **{len(pairs)} pairs** from {data} with **{name}** and four baselines.{random}"
        rows = [[r.name, r.method, *(round(r.values[k], 4) for k in METRICS)] for r in result.rows]
        files = [str(result.files["per_image_csv"]), str(result.files["means_csv"])]
        return summary, result.files["means_md"].read_text(), str(result.files["means_png"]), rows, files

    # -------------------------------------------------------------------------------------- train tab

    def start_training(self, zip_path, task, stage, steps, crop, batch, lr, preset, start,
                       request: gr.Request = None):
        """Start a run in the background and follow it: progress, loss curve, preview, then the checkpoint.

        Outputs: progress, loss curve, preview, status, checkpoint zip, the three checkpoint menus.
        """
        if self.trainer.busy:
            job = self.trainer.job
            raise _fail(f"A training run is already in progress (step {job.step} of {job.total}); only one runs "
                        "at a time. Wait for it to finish, or stop it from the session that started it.")
        name = f"trained-{time.strftime('%Y%m%d-%H%M%S')}"
        out_dir = self._output_dir("training", prune=False) / name  # trained checkpoints stay selectable
        root, data = _pairs_root(zip_path, task, out_dir.parent / "pairs")
        try:
            dataset = PairDataset(_find_pairs(root, out_dir.parent / "pairs"))
            pipeline = self.models.fresh(start, preset, TrainConfig.seed)  # the seed of _train_configs' runs
        except (ValueError, CheckpointError) as error:
            raise _fail(str(error).replace(str(out_dir.parent), "the zip")) from None
        configs = self._train_configs(stage, steps, crop, batch, lr, pipeline.stride)
        job = TrainingJob(name, out_dir, configs[0].steps, tuple(c.stage for c in configs),
                          owner=getattr(request, "session_hash", None))
        origin = f"random weights, `{preset}` preset" if start == FROM_SCRATCH else f"checkpoint `{start}`"
        card = training_card(name, origin, data, len(dataset), configs)
        try:
            self.trainer.start(job, pipeline, dataset, configs, card, self._finish_training)
        except RuntimeError:
            raise _fail("A training run has just started in another session; only one runs at a time.") from None
        yield from self._follow(job)

    def stop_training(self, request: gr.Request = None) -> str:
        """Ask the running job to stop (it saves its checkpoint first); only its own session may."""
        job = self.trainer.job
        if not self.trainer.busy or job is None:
            return "No training run is in progress."
        if job.owner is not None and job.owner != getattr(request, "session_hash", None):
            raise _fail("This run was started in another session; only that session can stop it.")
        self.trainer.stop()
        return "Stopping after the current step; the checkpoint is saved first."

    def _train_configs(self, stage: str, steps, crop, batch, lr, stride: int) -> list[TrainConfig]:
        steps, crop, batch, lr = int(steps or 0), int(crop or 0), int(batch or 0), float(lr or 0)
        if not 1 <= steps <= 100_000:
            raise _fail(f"Steps must lie between 1 and 100000 (got {steps}).")
        if not 1 <= batch <= 64:
            raise _fail(f"The batch size must lie between 1 and 64 (got {batch}).")
        if crop < stride or crop % stride or crop > 1024:
            raise _fail(f"The crop must be a multiple of {stride} (this network's stride) between {stride} and "
                        f"1024 (got {crop}).")
        if not 0 < lr <= 0.1:
            raise _fail(f"The learning rate must lie in (0, 0.1] (got {lr:g}).")
        stages = [1, 2] if stage == "both" else [int(stage)]
        return [TrainConfig(stage=s, steps=steps, batch_size=batch, crop=crop, lr=lr, checkpoint_every=0,
                            preview_every=max(1, steps // 5), log_every=1) for s in stages]

    def _finish_training(self, job: TrainingJob) -> None:
        """In the worker thread: make the checkpoint selectable and downloadable."""
        self.models.register(job.name, job.out_dir)
        job.zip_path = zip_checkpoint(job.out_dir, job.name)

    def _follow(self, job: TrainingJob):
        shown = -1
        while True:
            done = job.done
            curve = loss_figure(list(job.history)) if len(job.history) != shown else gr.skip()
            shown = len(job.history)
            preview = job.preview if job.preview is not None else gr.skip()
            if done:
                break
            status = "Stopping: saving the checkpoint…" if self.trainer.stopping else "Training…"
            yield progress_html(job), curve, preview, status, None, *(gr.skip(),) * 3
            time.sleep(self.poll_seconds)
        menus = (gr.Dropdown(choices=self.models.choices()), gr.Dropdown(choices=self.models.choices()),
                 gr.Dropdown(choices=[FROM_SCRATCH, *self.models.folders()]))
        yield progress_html(job), curve, preview, self._training_status(job), job.zip_path and str(job.zip_path), *menus

    @staticmethod
    def _training_status(job: TrainingJob) -> str:
        if job.error:
            return f"⚠️ Training failed: {html.escape(job.error)}"
        how = "was stopped; its checkpoint was saved" if job.stopped else "finished"
        return (f"Run **{job.name}** {how} at step {job.step} of {job.total}. It is now selectable in the "
                "checkpoint menus of the Fuse and Evaluate tabs; download it below.")

    # -------------------------------------------------------------------------------------- about tab

    def about(self) -> str:
        """The method, the data, the use, and the model cards of the bundled checkpoints."""
        folders = {n: p for n, p in self.models.folders().items() if n not in self.models.trained}
        if not folders:
            cards = ("No trained checkpoint is installed yet (`assets/checkpoints/dgd-general`, "
                     "`assets/checkpoints/dgd-medical`): the app runs the network with random weights and says so.")
        else:
            cards = "\n\n".join(f"### `{name}`\n\n{self.models.card(name)}" for name in folders)
        return f"{ABOUT}\n## Model cards\n\n{cards}\n"


# ------------------------------------------------------------------------------------------------ layout + wiring


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


def _source_column(label: str, elem_id: str):
    """Upload, preview, description and the DICOM options of one source."""
    file = gr.File(label=label, type="filepath", elem_id=elem_id)
    preview = gr.Image(label="Preview", interactive=False, height=200, format="png", buttons=["fullscreen"])
    info = gr.Markdown()
    with gr.Group(visible=False) as dicom:
        window = gr.Dropdown(list(WINDOWS), value=DEFAULT_WINDOW, label="DICOM window")
        frame = gr.Number(0, precision=0, minimum=0, label="DICOM frame (from 0)")
    return file, preview, info, dicom, window, frame


def build_demo(app: FusionApp | None = None) -> gr.Blocks:
    """The whole interface: Fuse, Evaluate, Train and About tabs over one ``FusionApp``."""
    app = app or FusionApp()
    spec = TASKS[DEFAULT_TASK]
    with gr.Blocks(title="DGD-Fusion", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(DESCRIPTION)
        with gr.Tab("Fuse"):
            with gr.Row():
                with gr.Column(scale=2):
                    task = gr.Radio(list(TASKS), value=DEFAULT_TASK, label="Task")
                    checkpoint = gr.Dropdown(app.models.choices(), value=AUTO, label="Checkpoint")
                    model_note = app.model_note(DEFAULT_TASK, AUTO)
                    with gr.Row():
                        with gr.Column(min_width=200):
                            source_a = _source_column(f"Source A: {spec.a}", "source-a")
                        with gr.Column(min_width=200):
                            source_b = _source_column(f"Source B: {spec.b}", "source-b")
                    file_a, preview_a, info_a, dicom_a, window_a, frame_a = source_a
                    file_b, preview_b, info_b, dicom_b, window_b, frame_b = source_b
                    with gr.Accordion("Advanced", open=False):
                        timesteps = gr.Textbox("5, 50, 100", label="Feature timesteps (as many as the model reads)")
                        seed = gr.Number(0, precision=0, label="Seed of the diffusion noise")
                        resample = gr.Checkbox(False, label="Resample B to A's size when the sizes differ (bicubic)")
                        align = gr.Checkbox(False, label="Align B to A by phase correlation (translation only)")
                    fuse_button = gr.Button("Fuse", variant="primary", elem_id="fuse-button")
                    examples, labels = _examples()
                    gr.Examples(examples, inputs=[file_a, file_b, task], example_labels=labels,
                                cache_examples=False, examples_per_page=8, label="Example pairs")
                with gr.Column(scale=3):
                    fused = gr.Image(label="Fused", format="png", interactive=False, elem_id="fused-image")
                    notes = gr.Markdown(elem_id="fuse-notes")
                    with gr.Row():
                        slider_a = gr.ImageSlider(label="Source A | fused", format="png", elem_id="slider-a")
                        slider_b = gr.ImageSlider(label="Source B | fused", format="png", elem_id="slider-b")
                    downloads = gr.File(label="Downloads: PNG, 16-bit TIFF, DICOM", file_count="multiple",
                                        interactive=False)
                    dicom_info = gr.Markdown()
            metrics = gr.Markdown(elem_id="metric-table")
            baselines = gr.Gallery(label="Classical baselines", format="png", columns=4, height=240)
            with gr.Accordion("Inside the network", open=False, elem_id="maps"):
                experts = gr.Plot(label="Expert weights (DFE)", show_label=False)
                gates = gr.Plot(label="Gate maps (GFS)", show_label=False)
                attention = gr.Plot(label="Fusion head: weight map and attention maps (GLSA)", show_label=False)
        with gr.Tab("Evaluate"):
            gr.Markdown("Fuse every pair of a zip with the network and the four classical baselines and score them. "
                        "The zip holds two folders with the same file names: `ir` + `vi`, `MRI` + `CT|PET|SPECT` "
                        "or `A` + `B`. Without a zip, the bundled examples of the task are used.")
            with gr.Row():
                with gr.Column(scale=1):
                    eval_zip = gr.File(label="Zip of pairs (optional)", file_types=[".zip"], type="filepath")
                    eval_task = gr.Dropdown(list(TASKS), value=DEFAULT_TASK, label="Task (examples and checkpoint)")
                    eval_checkpoint = gr.Dropdown(app.models.choices(), value=AUTO, label="Checkpoint")
                    convention = gr.Radio(list(CONVENTIONS), value="standard", label="Metric convention")
                    eval_button = gr.Button("Evaluate", variant="primary")
                with gr.Column(scale=3):
                    eval_summary = gr.Markdown()
                    eval_means = gr.Markdown()
                    eval_chart = gr.Image(label="Means per method", format="png", interactive=False)
                    eval_rows = gr.Dataframe(headers=["pair", "method", *METRICS], label="Per image",
                                             interactive=False)
                    eval_files = gr.File(label="CSV tables", file_count="multiple", interactive=False)
        with gr.Tab("Train"):
            gr.Markdown("Train or fine-tune the network on your own pairs (a zip as in the Evaluate tab; without "
                        "one, the bundled examples of the task). Stage 1 trains the diffusion UNet, stage 2 the "
                        "fusion head. The `tiny` preset makes a quick trial; real training wants a GPU and the "
                        "command line (`python -m fusion_core train`). One run at a time.")
            with gr.Row():
                with gr.Column(scale=1):
                    train_zip = gr.File(label="Zip of pairs (optional)", file_types=[".zip"], type="filepath")
                    train_task = gr.Dropdown(list(TASKS), value=DEFAULT_TASK, label="Task (bundled examples)")
                    stage = gr.Radio(["1", "2", "both"], value="both", label="Stage")
                    start = gr.Dropdown([FROM_SCRATCH, *app.models.folders()], value=FROM_SCRATCH, label="Start from")
                    preset = gr.Dropdown(sorted(PRESETS), value="tiny", label="Preset (for random weights)")
                    with gr.Row():
                        steps = gr.Number(20, precision=0, minimum=1, label="Steps per stage")
                        batch = gr.Number(2, precision=0, minimum=1, label="Batch")
                    with gr.Row():
                        crop = gr.Number(64, precision=0, minimum=32, label="Crop (pixels)")
                        lr = gr.Number(1e-4, label="Learning rate")
                    with gr.Row():
                        start_button = gr.Button("Start training", variant="primary")
                        stop_button = gr.Button("Stop", variant="stop")
                with gr.Column(scale=2):
                    train_progress = gr.HTML()
                    train_status = gr.Markdown()
                    with gr.Row():
                        loss_plot = gr.Plot(label="Loss")
                        train_preview = gr.Image(label="Preview (fused with the current weights)", format="png",
                                                 interactive=False, height=260)
                    train_file = gr.File(label="Checkpoint (zip)", interactive=False)
        with gr.Tab("About"):
            gr.Markdown(app.about)

        # ---- wiring
        task.change(app.task_changed, [task, checkpoint], [file_a, file_b, model_note], api_visibility="private")
        checkpoint.change(app.model_note, [task, checkpoint], model_note, api_visibility="private")
        for file, window, frame, preview, info, dicom in ((file_a, window_a, frame_a, preview_a, info_a, dicom_a),
                                                          (file_b, window_b, frame_b, preview_b, info_b, dicom_b)):
            file.change(app.source_changed, file, [window, frame, preview, info, dicom], api_visibility="private")
            for option in (window, frame):
                option.input(app.preview, [file, window, frame], [preview, info, dicom], api_visibility="private")
        fuse_button.click(
            app.fuse,
            [file_a, file_b, task, checkpoint, window_a, frame_a, window_b, frame_b, timesteps, seed, resample, align],
            [fused, slider_a, slider_b, downloads, notes, dicom_info, metrics, baselines, experts, gates, attention],
            api_name="fuse")
        eval_button.click(app.evaluate, [eval_zip, eval_task, eval_checkpoint, convention],
                          [eval_summary, eval_means, eval_chart, eval_rows, eval_files], api_name="evaluate")
        start_button.click(
            app.start_training, [train_zip, train_task, stage, steps, crop, batch, lr, preset, start],
            [train_progress, loss_plot, train_preview, train_status, train_file, checkpoint, eval_checkpoint, start],
            api_name="train")
        stop_button.click(app.stop_training, None, train_status, api_name="stop_training")
    return demo


def main() -> None:
    build_demo().queue(max_size=16).launch(**LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()