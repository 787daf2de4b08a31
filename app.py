"""DGD-Fusion in the browser: fuse a pair, compare it with classical methods, evaluate, train, read about it.

UI only, in three parts. ``FusionApp`` holds the adapter handlers: each turns UI values into calls of the
``fusion_core`` public API and its results back into UI values (``{component: value}``, the components named by
the view of its tab), and turns every bad input into a message a person can act on (``gr.Error``), never a
traceback. Then the layout: one builder per tab (``build_fuse_tab`` ...), each returning its view (a frozen
dataclass of its components). Then the wiring (``wire_fuse_tab`` ...): the CPU-heavy events share one
concurrency group and one bounded queue, each within a time limit, and a ``gr.Timer`` follows a training run.
``build_demo`` puts them together, with the queue and the removal of a session's outputs when it ends; ``main``
launches. Pipelines load lazily, once per checkpoint (``fusion_app.models.ModelStore``), so
``import app`` stays cheap and nothing is fetched from the network at start. The parts that need no gradio
(the model store, the figures, zips, the training thread, the time limit) live in the ``fusion_app`` package.

Paper: Di, Huo, Wang, Liu, Lian, J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # set before gradio is imported: no usage pings

import hashlib
import html
import math
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from gradio.utils import get_upload_folder

from fusion_app.archive import MAX_ZIP_BYTES, external_methods, unpack_zip, zip_checkpoint
from fusion_app.deadline import Deadline, TimeLimitExceeded
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
    ImageTooLargeError,
    Intermediates,
    LoadedImage,
    LoadedPair,
    PairDataset,
    TrainConfig,
    check_seed,
    evaluate_folder,
    find_pairs,
    format_markdown_table,
    fuse_methods,
    parse_timesteps,
    pipeline_method,
    read_image,
    read_pair,
    score_methods,
    to_uint8,
    write_fused,
)

try:  # Hugging Face ZeroGPU: the package exists only there, and lends a GPU per decorated call
    import spaces
except ImportError:
    spaces = None

EXAMPLES = Path(__file__).resolve().parent / "assets" / "examples"
FROM_SCRATCH = "random weights (preset below)"
NETWORK = "DGD-Fusion"
CONVENTION = "standard"  # the Fuse tab's metric convention (the Evaluate tab offers both)
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
MIN_SIDE = 7  # the metrics' 7 x 7 SSIM window must fit
MAX_EVALUATE_PAIRS = 50  # one Evaluate request fuses each pair five times; the CLI has no such limit
MAX_TRAIN_PAIRS = 500  # the Train tab's limits; the CLI has none. A run holds its pairs in memory at 4 bytes a
MAX_TRAIN_PIXELS = 2**28  # pixel (gray A, RGB B): this many pixels per source in all is 1 GiB
MAX_TRAIN_STEPS = 10_000  # per stage: about half an hour of the `cpu` preset on a 2-core CPU
# Time limits per request, from its start (its wait in the queue does not count), checked between stages
# (fusion_app.deadline). Measured on a 2-core CPU busy with a training run: a Fuse request of a 640 x 480 pair with
# its comparison and maps takes about 6 s (the network alone about a minute on the largest pair, MAX_PIXELS); an
# Evaluate request about 4 s per 640 x 480 pair, so MAX_EVALUATE_PAIRS of them fit.
FUSE_SECONDS = 120
EVALUATE_SECONDS = 300
# Requests waiting for the one CPU-heavy slot (events that only read state bypass the queue). A Fuse request of
# an example pair took 12 s through the API on a 2-core CPU that was training at the time (tools/measure_app.py;
# about half that on an idle one), so the last of 24 waits two to five minutes: past that, a person is better told
# at once that the app is busy (Gradio says so) than left waiting. Gradio shows each waiting request its place in
# the queue and the expected wait. 24 also takes a burst of 20 requests at once (tools/measure_app.py) whole.
QUEUE_SIZE = 24
EMPTY_UPLOAD_SECONDS = 60  # an empty file Gradio left in its cache this long is a leftover, not a write
KEEP_OUTPUTS_SECONDS = 3600  # a session that ended without an unload (a closed laptop) leaves outputs this long
ZERO_GPU_CHUNK_STEPS = 200  # steps per lent GPU call on ZeroGPU: well inside its default 60 s per call
# Fusing, evaluating and starting a run share one queue slot, so two of them never fight over a small machine's
# cores; a started run trains in the trainer's thread, which leaves half the cores to fusion (Trainer).
CPU_HEAVY = {"concurrency_id": "cpu-heavy", "concurrency_limit": 1}
# Events that only read state (the model note, the training timer's ticks, stop) bypass the queue, so a queue full
# of heavy requests never refuses them; previews stay queued, since only queued events show gr.Warning.
LIGHT = {"queue": False}

DESCRIPTION = f"""\
# DGD-Fusion: multimodal image fusion with a dynamic-gating diffusion network

Fuse an **infrared + visible** pair or an **MRI + CT / PET / SPECT** pair, compare the result with classical
fusion methods on the paper's metrics, and look inside the network: the expert weights of its dynamic feature
extractors, the gates of its gated feature selection, its global-local attention maps and the weight map
that says where the result comes from A and where from B. Method: Di, Huo, Wang,
Liu and Lian, *J. Harbin Inst. Technol.* 2026, DOI [10.11918/202507016](https://doi.org/10.11918/202507016).

**A research tool, not a medical device: never use it for diagnosis, and do not upload real patient data to a
public Space.**

One request runs at a time; the others wait their turn, up to {QUEUE_SIZE}, each shown its place in the queue (a full
queue says the app is busy: try again in a minute). A fusion may take up to {FUSE_SECONDS} s and an evaluation up to
{EVALUATE_SECONDS} s; a longer one is stopped with a message. Your outputs are deleted when you close the page.
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
LAUNCH_OPTIONS = {"theme": THEME, "css": CSS, "allowed_paths": [str(EXAMPLES)],
                  "max_file_size": MAX_ZIP_BYTES}  # per uploaded file, as much as a zip may unpack to


def _on_accelerator(fn):
    """``spaces.GPU`` on Hugging Face ZeroGPU, where a GPU is lent per call; elsewhere ``fn`` unchanged."""
    return spaces.GPU(fn) if spaces is not None else fn


def _fail(message: str) -> gr.Error:
    """A red message in the UI, as plain text: Gradio sanitizes the HTML of its messages itself (file names are
    user data), so escaping here too showed entities such as ``&#x27;`` instead of quotes."""
    return gr.Error(message, print_exception=False)


@_on_accelerator
def fuse_on_device(pipeline: FusionPipeline, a: np.ndarray, b: np.ndarray, timesteps: tuple[int, ...] | None,
                   seed: int) -> FusionResult:
    """The network's part of a fusion (the only part that wants a GPU)."""
    return pipeline.fuse(a, b, feature_timesteps=timesteps, generator=torch.Generator().manual_seed(seed),
                         return_intermediates=True)


@_on_accelerator
def evaluate_on_device(root: Path, pipeline: FusionPipeline, out_dir: Path, convention: str, progress,
                       external: dict[str, Path]):
    """Every pair of ``root`` fused by the network and the baselines, scored with the ``external`` methods'
    images (``evaluate_folder``)."""
    methods = {NETWORK: pipeline_method(pipeline), **BASELINES}
    return evaluate_folder(root, methods, out_dir, convention=convention, progress=progress, reuse=False,
                           external=external)


# ------------------------------------------------------------------------------------------------ inputs


def read_source(path: str | None, label: str, window: str = DEFAULT_WINDOW, frame: float | None = 0) -> LoadedImage:
    """An uploaded file as pixels; a clear message when it is missing or cannot be read."""
    if not path:
        raise _fail(f"Upload {label} first, or pick one of the examples.")
    return read_bounded(path, label, frame=int(frame or 0), window=WINDOWS.get(window))


def read_bounded(path: str | Path, label: str, **options) -> LoadedImage:
    """``read_image`` within the app's bounds (``MIN_SIDE`` to ``MAX_PIXELS``), the messages naming ``label``."""
    try:
        image = read_image(path, max_pixels=MAX_PIXELS, **options)
    except ImageTooLargeError as error:
        side = math.isqrt(MAX_PIXELS)
        raise _fail(f"{label} is {error.width} x {error.height} pixels; the app fuses at most {MAX_PIXELS:,} "
                    f"pixels (a {side} x {side} square). Downscale it, or use `python -m fusion_core fuse` on "
                    "your own machine.") from None
    except ImageLoadError as error:
        raise _fail(f"{label}: {error}") from None
    height, width = image.pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise _fail(f"{label} is {width} x {height} pixels; the app fuses images of at least {MIN_SIDE} x "
                    f"{MIN_SIDE} pixels (the metrics' window).")
    return image


def describe_source(image: LoadedImage) -> str:
    """e.g. '640 × 480 px · 8-bit · gray · 3 frames', or the DICOM modality, frame and window."""
    height, width = image.pixels.shape[:2]
    colour = "colour" if image.pixels.ndim == 3 else "gray"
    if image.dicom is None:
        frames = f" · {image.frames} frames" if image.frames > 1 else ""
        return f"{width} × {height} px · {image.bit_depth}-bit · {colour}{frames}"
    facts = image.dicom.as_dict()
    return f"DICOM {facts['modality']} · {width} × {height} px · frame {facts['frame']} · window {facts['window']}"


def load_pair(image_a: LoadedImage, image_b: LoadedImage, task: Task, resample: bool, align: bool) -> LoadedPair:
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


def download_stem(path_a: str, dicom: bool) -> str:
    """The name of the downloads: the upload's for images, a neutral one when a source is DICOM (a DICOM file is
    often named after its patient, and that name must not travel with the result)."""
    if dicom:
        return "fused"
    return "fused_" + (re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path_a).stem)[:40] or "pair")


def _prune(folder: Path, max_age: float = KEEP_OUTPUTS_SECONDS) -> None:
    """Delete output folders older than ``max_age`` seconds (Gradio has copied them into its cache by then)."""
    if folder.is_dir():
        for old in folder.iterdir():
            if old.is_dir() and time.time() - old.stat().st_mtime > max_age:
                shutil.rmtree(old, ignore_errors=True)


def _remove_empty_uploads(folder: Path, min_age: float = EMPTY_UPLOAD_SECONDS) -> None:
    """Delete the empty ``tmp*`` files older than ``min_age`` s at the top of Gradio's cache: ``gr.File``
    (gradio 6.31) opens a ``NamedTemporaryFile(delete=False)`` there for every uploaded file and never removes
    it, and ``delete_cache`` only sweeps the cache's sub-folders, so they would pile up, two per request."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        try:
            info = entry.lstat()
        except OSError:  # removed meanwhile
            continue
        if (entry.name.startswith("tmp") and stat.S_ISREG(info.st_mode) and info.st_size == 0
                and time.time() - info.st_mtime > min_age):
            entry.unlink(missing_ok=True)


def _session_folder(session: str) -> str:
    """A folder name for a Gradio session: its hash is sent by the browser, so it is hashed again, never used as
    a path."""
    return hashlib.sha256(session.encode()).hexdigest()[:24]


def _pairs_root(zip_path: str | None, task: str, dest: Path) -> tuple[Path, str]:
    """The folder of pairs to use (the unpacked zip, else the task's bundled examples) and its description."""
    if not zip_path:
        return EXAMPLES / TASKS[task].folder, f"the bundled {task} examples"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return unpack_zip(zip_path, dest), f"the uploaded zip ({Path(zip_path).name})"
    except ValueError as error:
        raise _fail(f"The zip was refused: {error}.") from None


def _source_name(zip_path: str | None, task: str) -> str:
    """The pairs' source as messages name it: the zip's file name, or the task's bundled examples."""
    return Path(zip_path).name if zip_path else f"The bundled {task} example set"


def _find_pairs(root: Path, hide: Path) -> list:
    """find_pairs with the temporary folder names taken out of its messages."""
    try:
        return find_pairs(root)
    except ValueError as error:
        raise _fail(f"No usable pairs: {str(error).replace(str(hide), 'the zip')}") from None


def _check_pairs(pairs: list, root: Path, source: str, command: str, max_pairs: int) -> int:
    """Refuse more than ``max_pairs`` pairs and any image the app would not fuse, naming the file; the pixels of
    one source of all the pairs. ``command`` is the tab's command-line equivalent, without such limits."""
    verb = {"evaluate": "evaluates", "train": "trains on"}[command]
    if len(pairs) > max_pairs:
        raise _fail(f"{source} holds {len(pairs):,} pairs; the app {verb} at most {max_pairs}. Use "
                    f"`python -m fusion_core {command}` for more.")
    pixels = 0
    for pair in pairs:
        a, _ = (read_bounded(path, Path(path).relative_to(root).as_posix()) for path in (pair.a, pair.b))
        pixels += a.pixels.shape[0] * a.pixels.shape[1]
    return pixels


def _training_dataset(pairs: list, root: Path, source: str, hide: Path) -> PairDataset:
    """The pairs within the Train tab's bounds, read into memory; ``hide`` is taken out of the messages."""
    pixels = _check_pairs(pairs, root, source, "train", MAX_TRAIN_PAIRS)
    if pixels > MAX_TRAIN_PIXELS:
        raise _fail(f"{source} holds {pixels:,} pixels per source; the app trains on at most {MAX_TRAIN_PIXELS:,} "
                    "in all (a run holds them in memory). Use fewer or smaller pairs, or `python -m fusion_core "
                    "train`.")
    try:
        return PairDataset(pairs)
    except ValueError as error:
        raise _fail(str(error).replace(str(hide), "the zip")) from None


# ------------------------------------------------------------------------------------------------ options and views


@dataclass(frozen=True)
class FuseOptions:
    """The Fuse tab's options beside the two files, the task and the checkpoint: how each source is read
    (DICOM window and frame), then the Advanced accordion. The defaults are the controls' initial values."""

    window_a: str = DEFAULT_WINDOW
    frame_a: int = 0
    window_b: str = DEFAULT_WINDOW
    frame_b: int = 0
    timesteps: str = "5, 50, 100"
    seed: int = 0
    resample: bool = False
    align: bool = False


@dataclass(frozen=True)
class TrainOptions:
    """The Train tab's options beside the pairs and the starting point. The defaults are the controls' initial
    values."""

    preset: str = "tiny"
    stage: str = "both"
    steps: int = 20
    batch: int = 2
    crop: int = 64
    lr: float = 1e-4


@dataclass(frozen=True)
class FollowedRun:
    """The training run a session follows (the Train tab's ``gr.State``): its name, the loss points shown."""

    name: str
    shown: int = -1


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
    experts: gr.Plot
    gates: gr.Plot
    attention: gr.Plot

    def outputs(self) -> list[gr.components.Component]:
        """What the fuse handler writes, in the order of the API's return values."""
        return [self.fused, self.slider_a, self.slider_b, self.downloads, self.notes, self.dicom_info, self.metrics,
                self.baselines, self.experts, self.gates, self.attention]


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



# ------------------------------------------------------------------------------------------------ the adapter


class FusionApp:
    """The handlers of the UI, over one model store, one trainer and one folder for outputs.

    Handlers that write several components take the view of their tab (or column) first and return
    ``{component: value}``; components they leave out keep their value. The Fuse and Evaluate handlers take the
    Gradio session too: a request writes its files into a folder of its own in its session's folder
    (``sessions/SESSION/KIND/REQUEST``), which the session's next request of that kind replaces and its end
    (``end_session``) removes. ``clock`` times the requests' limits.
    """

    def __init__(self, models: ModelStore | None = None, work_dir: Path | None = None, poll_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.models = models or ModelStore()
        self.work_dir = Path(work_dir or Path(tempfile.gettempdir()) / "dgd-fusion-app")
        self.clock = clock
        if spaces is not None:  # ZeroGPU: a GPU only inside decorated calls, so train in checkpointed chunks
            self.trainer = Trainer("cuda", chunk_steps=ZERO_GPU_CHUNK_STEPS, accelerate=_on_accelerator)
        else:
            self.trainer = Trainer("cuda" if torch.cuda.is_available() else "cpu")
        self.poll_seconds = poll_seconds  # how often the Train tab's timer asks for progress
        self.runs: dict[str, TrainingJob] = {}  # every run started here, by name, for the sessions following them

    def request_dir(self, session: str, kind: str) -> Path:
        """A new folder for one request's outputs. The session's earlier ones of this ``kind`` go: their files
        were copied into Gradio's cache when they were shown. So do the folders of sessions idle for
        ``KEEP_OUTPUTS_SECONDS``, which ended without saying so."""
        folder = self.work_dir / "sessions" / _session_folder(session)
        shutil.rmtree(folder / kind, ignore_errors=True)
        self._ensure(folder / kind)
        os.utime(folder)  # the session's last activity, which _prune reads
        _prune(self.work_dir / "sessions")
        _remove_empty_uploads(Path(get_upload_folder()))
        return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=folder / kind))

    def end_session(self, session: str) -> None:
        """A session ended (its tab closed): its outputs go, and the empty files its uploads left in Gradio's cache."""
        shutil.rmtree(self.work_dir / "sessions" / _session_folder(session), ignore_errors=True)
        _remove_empty_uploads(Path(get_upload_folder()))

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

    def task_changed(self, view: FuseView, task: str, choice: str) -> dict:
        """Source labels and the model line follow the task."""
        spec = TASKS[task]
        return {view.source_a.file: gr.File(label=f"Source A: {spec.a}"),
                view.source_b.file: gr.File(label=f"Source B: {spec.b}"),
                view.model_note: self.model_note(task, choice)}

    def preview(self, column: SourceColumn, path: str | None, window: str, frame: float | None) -> dict:
        """Preview of an upload, its description, the DICOM window shown only for DICOM files and the frame only
        for files of several frames."""
        if not path:
            return {column.preview: None, column.info: "", column.dicom: gr.Group(visible=False),
                    column.frames: gr.Group(visible=False)}
        try:
            image = read_image(path, frame=int(frame or 0), window=WINDOWS.get(window), max_pixels=MAX_PIXELS)
        except ImageLoadError as error:
            gr.Warning(f"{Path(path).name}: {error}")
            return {column.preview: None, column.info: f"⚠️ {error}"}
        return {column.preview: to_uint8(image.pixels), column.info: describe_source(image),
                column.dicom: gr.Group(visible=image.dicom is not None),
                column.frames: gr.Group(visible=image.frames > 1)}

    def source_changed(self, column: SourceColumn, path: str | None) -> dict:
        """A new upload: its DICOM window and frame back to their defaults, then the preview."""
        return {column.window: gr.update(value=DEFAULT_WINDOW), column.frame: gr.update(value=0),
                **self.preview(column, path, DEFAULT_WINDOW, 0)}

    def fuse(self, view: FuseView, session: str, path_a: str | None, path_b: str | None, task: str, choice: str,
             options: FuseOptions) -> Iterator[dict]:
        """Fuse the uploaded pair within ``FUSE_SECONDS``; yields the image with the network's own metrics first,
        then the comparison with the classical baselines and the network's maps."""
        deadline = Deadline.start(FUSE_SECONDS, "try a smaller image, or `python -m fusion_core fuse` on your own "
                                  "machine", self.clock)
        try:
            yield from self._fuse(view, session, path_a, path_b, task, choice, options, deadline)
        except TimeLimitExceeded as error:
            raise _fail(str(error)) from None

    def _fuse(self, view: FuseView, session: str, path_a: str | None, path_b: str | None, task: str, choice: str,
              options: FuseOptions, deadline: Deadline) -> Iterator[dict]:
        spec = TASKS[task]
        image_a = read_source(path_a, f"source A ({spec.a})", options.window_a, options.frame_a)
        image_b = read_source(path_b, f"source B ({spec.b})", options.window_b, options.frame_b)
        pair = load_pair(image_a, image_b, spec, options.resample, options.align)
        name = self._resolve(task, choice)
        deadline.check("before the network's fusion")
        began = time.perf_counter()
        pipeline, result = self._fuse_pair(name, pair, options)
        notes = [f"A: {w}" for w in image_a.warnings] + [f"B: {w}" for w in image_b.warnings] + list(pair.warnings)
        is_dicom = image_a.dicom is not None or image_b.dicom is not None
        a8, b8 = to_uint8(pair.a.pixels), to_uint8(pair.b.pixels)
        shown = {
            view.fused: result.fused, view.slider_a: (a8, result.fused), view.slider_b: (b8, result.fused),
            view.downloads: write_downloads(result, pair.b.pixels, self.request_dir(session, "fused"),
                                            download_stem(path_a, is_dicom), is_dicom),
            view.notes: notes_markdown(name, str(pipeline.device), time.perf_counter() - began, result, notes),
            view.dicom_info: dicom_markdown({f"A ({spec.a})": image_a, f"B ({spec.b})": image_b}),
        }
        scores = network_metrics(result.fused, pair.a, pair.b)
        yield shown | {view.metrics: network_table(scores), view.baselines: None, view.experts: None,
                       view.gates: None, view.attention: None}
        table, baselines = compare_methods(scores, pair.a, pair.b, deadline)
        maps = result.intermediates or Intermediates()  # none recorded for a pair fused in tiles
        yield shown | {view.metrics: table, view.baselines: baselines,
                       view.experts: expert_figure(maps, result.timesteps),
                       view.gates: gate_figure(maps, result.timesteps), view.attention: attention_figure(maps)}

    def _fuse_pair(self, name: str, pair: LoadedPair, options: FuseOptions) -> tuple[FusionPipeline, FusionResult]:
        """The network's fusion of a checked pair, with its intermediates; library errors as UI messages."""
        torch.set_num_threads(self.trainer.fusion_threads())
        try:
            seed = check_seed(int(options.seed or 0))
            pipeline = self.models.get(name)
            return pipeline, fuse_on_device(pipeline, pair.a.pixels, pair.b.pixels,
                                            parse_timesteps(options.timesteps), seed)
        except (ValueError, CheckpointError) as error:
            raise _fail(str(error)) from None

    # -------------------------------------------------------------------------------------- evaluate tab

    def evaluate(self, view: EvaluateView, session: str, zip_path: str | None, task: str, choice: str,
                 convention: str, progress=gr.Progress()) -> dict:
        """Fuse and score every pair of a zip (or the bundled examples) with the network and the baselines, and
        score the fused images of any other methods the zip holds (``fused/NAME/``), within ``EVALUATE_SECONDS``.
        Only the tables and the chart stay on disk, until they are shown."""
        out_dir = self.request_dir(session, "evaluations")
        deadline = Deadline.start(EVALUATE_SECONDS, "try fewer or smaller pairs, or `python -m fusion_core "
                                  "evaluate` on your own machine", self.clock)
        try:  # a refused or stopped request leaves nothing behind
            name, pairs, data, external, result = self._evaluate(out_dir, zip_path, task, choice, convention,
                                                                 progress, deadline)
        except TimeLimitExceeded as error:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise _fail(str(error)) from None
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        for unshown in (out_dir / "pairs", result.files["fused_dir"]):
            shutil.rmtree(unshown, ignore_errors=True)
        random = " ⚠️ The network ran with **random weights**: its scores say nothing about the method." \
            if name == RANDOM else ""
        others = f", four baselines and the zip's fused images of **{', '.join(external)}**" if external \
            else " and four baselines"
        return {
            view.summary: f"Evaluated **{len(pairs)} pairs** from {data} with **{name}**{others}.{random}",
            view.means: result.files["means_md"].read_text(),
            view.chart: str(result.files["means_png"]),
            view.rows: [[r.name, r.method, *(round(r.values[k], 4) for k in METRICS)] for r in result.rows],
            view.files: [str(result.files["per_image_csv"]), str(result.files["means_csv"])],
        }

    def _evaluate(self, out_dir: Path, zip_path: str | None, task: str, choice: str, convention: str, progress,
                  deadline: Deadline):
        """The pairs checked within the app's bounds before any fusion, then evaluated into ``out_dir``, the
        deadline checked after each fused image."""
        root, data = _pairs_root(zip_path, task, out_dir / "pairs")
        pairs = _find_pairs(root, out_dir / "pairs")
        _check_pairs(pairs, root, _source_name(zip_path, task), "evaluate", MAX_EVALUATE_PAIRS)
        external = external_methods(root)
        name = self._resolve(task, choice)
        torch.set_num_threads(self.trainer.fusion_threads())

        def tick(done: int, total: int, what: str) -> None:
            deadline.check(f"after {done} of {total} fused images")
            progress((done, total), desc=what)

        try:
            result = evaluate_on_device(root, self.models.get(name), out_dir / "results", convention, tick, external)
        except (ValueError, CheckpointError) as error:
            raise _fail(f"Evaluation failed: {str(error).replace(str(out_dir), 'the zip')}") from None
        return name, pairs, data, external, result

    # -------------------------------------------------------------------------------------- train tab

    def start_training(self, view: TrainView, zip_path: str | None, task: str, start: str,
                       options: TrainOptions) -> dict:
        """Start a run in the background; the Train tab's timer then follows it (``training_progress``)."""
        if self.trainer.busy:
            job = self.trainer.job
            raise _fail(f"A training run is already in progress (step {job.step} of {job.total}); only one runs "
                        "at a time. Wait for it to finish, or stop it from the session that started it.")
        name = f"trained-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._ensure(self.work_dir / "training")))
        try:  # a refused run leaves nothing behind; a started one keeps its checkpoint, selectable by every session
            dataset, data, pipeline, configs = self._training_inputs(run_dir / "pairs", zip_path, task, start, options)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        out_dir = run_dir / name
        job = TrainingJob(name, out_dir, configs[0].steps, tuple(c.stage for c in configs))
        origin = f"random weights, `{options.preset}` preset" if start == FROM_SCRATCH else f"checkpoint `{start}`"
        card = training_card(name, origin, data, len(dataset), configs)
        try:
            self.trainer.start(job, pipeline, dataset, configs, card, self._finish_training)
        except RuntimeError:
            raise _fail("A training run has just started in another session; only one runs at a time.") from None
        self.runs[name] = job
        return {view.progress: progress_html(job), view.status: "Training…", view.loss_plot: None,
                view.preview: None, view.checkpoint_file: None, view.timer: gr.Timer(active=True),
                view.followed: FollowedRun(name)}

    def _training_inputs(self, pairs_dir: Path, zip_path: str | None, task: str, start: str, options: TrainOptions
                         ) -> tuple[PairDataset, str, FusionPipeline, list[TrainConfig]]:
        """The pairs, checked within the Train tab's bounds and read into memory (their unpacked files then go),
        their description, the pipeline to train and the configuration of each stage."""
        root, data = _pairs_root(zip_path, task, pairs_dir)
        try:
            dataset = _training_dataset(_find_pairs(root, pairs_dir), root, _source_name(zip_path, task), pairs_dir)
        finally:
            shutil.rmtree(pairs_dir, ignore_errors=True)
        try:
            pipeline = self.models.fresh(start, options.preset, TrainConfig.seed)  # the seed of every app run
        except (ValueError, CheckpointError) as error:
            raise _fail(str(error)) from None
        return dataset, data, pipeline, self._train_configs(options, pipeline.stride)

    def training_progress(self, view: TrainView, followed: FollowedRun | None) -> dict:
        """One tick of the Train tab's timer: the followed run's progress and, when the run has ended, its status,
        its checkpoint, the checkpoint menus listing it, and the timer stopped."""
        job = self.runs.get(followed.name) if followed is not None else None
        if job is None:
            return {view.status: "No training run was started in this session.", view.timer: gr.Timer(active=False)}
        done = job.done  # read first: a run records its last step before it is marked done
        shown = {view.progress: progress_html(job)}
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
            view.status: self._training_status(job), view.checkpoint_file: job.zip_path and str(job.zip_path),
            view.timer: gr.Timer(active=False)}

    def stop_training(self, followed: FollowedRun | None) -> str:
        """Ask the running job to stop (it saves its checkpoint first); only the session following it may."""
        job = self.trainer.job
        if not self.trainer.busy or job is None:
            return "No training run is in progress."
        if followed is None or followed.name != job.name:
            raise _fail("This run was started in another session; only that session can stop it.")
        self.trainer.stop()
        return "Stopping after the current step; the checkpoint is saved first."

    def _train_configs(self, options: TrainOptions, stride: int) -> list[TrainConfig]:
        steps, crop, batch = int(options.steps or 0), int(options.crop or 0), int(options.batch or 0)
        lr = float(options.lr or 0)
        if not 1 <= steps <= MAX_TRAIN_STEPS:
            raise _fail(f"Steps per stage must lie between 1 and {MAX_TRAIN_STEPS:,} in the app (got {steps:,}); "
                        "train longer with `python -m fusion_core train`.")
        if not 1 <= batch <= 64:
            raise _fail(f"The batch size must lie between 1 and 64 (got {batch}).")
        if crop < stride or crop % stride or crop > 1024:
            raise _fail(f"The crop must be a multiple of {stride} (this network's stride) between {stride} and "
                        f"1024 (got {crop}).")
        if not 0 < lr <= 0.1:
            raise _fail(f"The learning rate must lie in (0, 0.1] (got {lr:g}).")
        stages = [1, 2] if options.stage == "both" else [int(options.stage)]
        return [TrainConfig(stage=s, steps=steps, batch_size=batch, crop=crop, lr=lr, checkpoint_every=0,
                            preview_every=max(1, steps // 5), log_every=1) for s in stages]

    def _finish_training(self, job: TrainingJob) -> None:
        """In the worker thread: make the checkpoint selectable and downloadable."""
        self.models.register(job.name, job.out_dir)
        job.zip_path = zip_checkpoint(job.out_dir, job.name)

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


# ------------------------------------------------------------------------------------------------ layout


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
    file = gr.File(label=label, type="filepath", elem_id=elem_id)
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


def build_fuse_tab(app: FusionApp) -> FuseView:
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
                downloads = gr.File(label="Downloads: PNG, 16-bit TIFF, DICOM", file_count="multiple",
                                    interactive=False)
                dicom_info = gr.Markdown()
        metrics = gr.Markdown(elem_id="metric-table")
        baselines = gr.Gallery(label="Classical baselines", format="png", columns=4, height=240)
        with gr.Accordion("Inside the network", open=False, elem_id="maps"):
            experts = gr.Plot(label="Expert weights (DFE)", show_label=False)
            gates = gr.Plot(label="Gate maps (GFS)", show_label=False)
            attention = gr.Plot(label="Fusion head: weight map and attention maps (GLSA)", show_label=False)
    options = {"window_a": source_a.window, "frame_a": source_a.frame, "window_b": source_b.window,
               "frame_b": source_b.frame, **advanced}
    return FuseView(task, checkpoint, model_note, source_a, source_b, options, button, fused, notes, slider_a,
                    slider_b, downloads, dicom_info, metrics, baselines, experts, gates, attention)


def build_evaluate_tab(app: FusionApp) -> EvaluateView:
    """A zip of pairs (or the examples) scored for the network and the baselines: tables, chart, CSV files."""
    with gr.Tab("Evaluate"):
        gr.Markdown("Fuse every pair of a zip with the network and the four classical baselines and score them. "
                    "The zip holds two folders with the same file names: `ir` + `vi`, `MRI` + `CT|PET|SPECT` "
                    "or `A` + `B`; folders `fused/NAME/` beside them, with another method's fused image of "
                    "each pair (named like the pair, the pair's size), are scored as method NAME. Without a "
                    "zip, the bundled examples of the task are used.")
        with gr.Row():
            with gr.Column(scale=1):
                pairs = build_pairs_column("Task (examples and checkpoint)", app.models.choices(), AUTO,
                                           "Checkpoint")
                convention = gr.Radio(list(CONVENTIONS), value="standard", label="Metric convention")
                button = gr.Button("Evaluate", variant="primary")
            with gr.Column(scale=3):
                summary = gr.Markdown()
                means = gr.Markdown()
                chart = gr.Image(label="Means per method", format="png", interactive=False)
                rows = gr.Dataframe(headers=["pair", "method", *METRICS], label="Per image", interactive=False)
                files = gr.File(label="CSV tables", file_count="multiple", interactive=False)
    return EvaluateView(pairs, convention, button, summary, means, chart, rows, files)


def build_train_tab(app: FusionApp, checkpoint_menus: tuple[gr.Dropdown, ...]) -> TrainView:
    """Training options, start and stop, then the progress, the loss curve, a preview and the checkpoint.

    ``checkpoint_menus`` are the other tabs' menus that list a finished run.
    """
    defaults = TrainOptions()
    with gr.Tab("Train"):
        gr.Markdown("Train or fine-tune the network on your own pairs (a zip as in the Evaluate tab, at most "
                    f"{MAX_TRAIN_PAIRS} pairs; without one, the bundled examples of the task). Stage 1 trains the "
                    "diffusion UNet, stage 2 the fusion head, each at most "
                    f"{MAX_TRAIN_STEPS:,} steps. The `tiny` preset makes a quick trial; real training wants a GPU "
                    "and the command line (`python -m fusion_core train`). One run at a time. Every run here uses "
                    f"the training seed `train.seed` = {TrainConfig.seed} (`TrainConfig.seed`; `train --seed` on the "
                    "command line): random initial weights, crops, flips and noise are drawn from it, so the same "
                    "options on the same pairs start the same way.")
        with gr.Row():
            with gr.Column(scale=1):
                pairs = build_pairs_column("Task (bundled examples)", [FROM_SCRATCH, *app.models.folders()],
                                           FROM_SCRATCH, "Start from")
                options = {
                    "preset": gr.Dropdown(sorted(PRESETS), value=defaults.preset, label="Preset (for random weights)"),
                    "stage": gr.Radio(["1", "2", "both"], value=defaults.stage, label="Stage"),
                }
                with gr.Row():
                    options["steps"] = gr.Number(defaults.steps, precision=0, minimum=1, label="Steps per stage")
                    options["batch"] = gr.Number(defaults.batch, precision=0, minimum=1, label="Batch")
                with gr.Row():
                    options["crop"] = gr.Number(defaults.crop, precision=0, minimum=32, label="Crop (pixels)")
                    options["lr"] = gr.Number(defaults.lr, label="Learning rate")
                with gr.Row():
                    start_button = gr.Button("Start training", variant="primary")
                    stop_button = gr.Button("Stop", variant="stop")
            with gr.Column(scale=2):
                progress = gr.HTML()
                status = gr.Markdown()
                with gr.Row():
                    loss_plot = gr.Plot(label="Loss")
                    preview = gr.Image(label="Preview (fused with the current weights)", format="png",
                                       interactive=False, height=260)
                checkpoint_file = gr.File(label="Checkpoint (zip)", interactive=False)
    timer = gr.Timer(app.poll_seconds, active=False)  # outside the tab, so it ticks whichever tab is shown
    followed = gr.State(None)
    return TrainView(pairs, options, start_button, stop_button, progress, status, loss_plot, preview,
                     checkpoint_file, timer, followed, checkpoint_menus)


def build_about_tab(app: FusionApp) -> None:
    """The method, the data, the use and the model cards (read again on every page load)."""
    with gr.Tab("About"):
        gr.Markdown(app.about)


def build_tabs(app: FusionApp) -> Tabs:
    """Every tab, in order; the Train tab refreshes the others' checkpoint menus."""
    fuse = build_fuse_tab(app)
    evaluate = build_evaluate_tab(app)
    train = build_train_tab(app, (fuse.checkpoint, evaluate.pairs.checkpoint))
    build_about_tab(app)
    return Tabs(fuse, evaluate, train)


# ------------------------------------------------------------------------------------------------ wiring


def wire_fuse_tab(app: FusionApp, view: FuseView) -> None:
    """Task and checkpoint notes, previews of the uploads, and the fusion (in the CPU-heavy group)."""
    view.task.change(partial(app.task_changed, view), [view.task, view.checkpoint],
                     [view.source_a.file, view.source_b.file, view.model_note], api_visibility="private", **LIGHT)
    view.checkpoint.change(app.model_note, [view.task, view.checkpoint], view.model_note, api_visibility="private",
                           **LIGHT)
    for column in (view.source_a, view.source_b):
        column.file.change(partial(app.source_changed, column), column.file,
                           [column.window, column.frame, *column.shown()], api_visibility="private")
        for option in (column.window, column.frame):
            option.input(partial(app.preview, column), [column.file, column.window, column.frame], column.shown(),
                         api_visibility="private")

    def fuse(request: gr.Request, path_a, path_b, task, choice, *options):  # the inputs' values by position
        options = FuseOptions(**dict(zip(view.options, options, strict=True)))
        yield from app.fuse(view, request.session_hash, path_a, path_b, task, choice, options)

    view.button.click(fuse, [view.source_a.file, view.source_b.file, view.task, view.checkpoint,
                             *view.options.values()], view.outputs(), api_name="fuse", **CPU_HEAVY)


def wire_evaluate_tab(app: FusionApp, view: EvaluateView) -> None:
    """The evaluation (in the CPU-heavy group)."""

    def evaluate(request: gr.Request, zip_path, task, choice, convention, progress=gr.Progress()):
        return app.evaluate(view, request.session_hash, zip_path, task, choice, convention, progress)

    view.button.click(evaluate, [view.pairs.zip, view.pairs.task, view.pairs.checkpoint, view.convention],
                      view.outputs(), api_name="evaluate", **CPU_HEAVY)


def wire_train_tab(app: FusionApp, view: TrainView) -> None:
    """Start (in the CPU-heavy group), the timer's ticks while a run is followed, and stop."""

    def start(zip_path, task, origin, *options):  # gradio passes the inputs' values by position
        options = TrainOptions(**dict(zip(view.options, options, strict=True)))
        return app.start_training(view, zip_path, task, origin, options)

    view.start_button.click(start, [view.pairs.zip, view.pairs.task, view.pairs.checkpoint, *view.options.values()],
                            view.outputs(), api_name="train", **CPU_HEAVY)
    view.timer.tick(partial(app.training_progress, view), view.followed, view.outputs(),
                    api_name="training_progress", show_progress="hidden", **LIGHT)
    view.stop_button.click(app.stop_training, view.followed, view.status, api_name="stop_training", **LIGHT)


def build_demo(app: FusionApp | None = None) -> gr.Blocks:
    """The whole interface: Fuse, Evaluate, Train and About tabs over one ``FusionApp``; layout, then wiring,
    then the queue; a session's outputs go when it ends."""
    app = app or FusionApp()
    with gr.Blocks(title="DGD-Fusion", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(DESCRIPTION)
        tabs = build_tabs(app)
        wire_fuse_tab(app, tabs.fuse)
        wire_evaluate_tab(app, tabs.evaluate)
        wire_train_tab(app, tabs.train)

        def end_session(request: gr.Request) -> None:
            app.end_session(request.session_hash)

        demo.unload(end_session)
    return demo.queue(max_size=QUEUE_SIZE)


def main() -> None:
    build_demo().launch(**LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
