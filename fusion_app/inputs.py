"""What a person gives the app, read and checked within its limits: uploads, pairs of a zip, training options.

Every refusal is an ``InputError`` whose message says what to do; the handlers show it as it is. Each upload is
decoded once per request: the Fuse tab reads a source once and keeps its ``LoadedImage`` through the pair step,
and the pairs of a zip are checked from their headers (``image_size``) before the one pass that decodes them
(``evaluate_folder`` or ``PairDataset``). No gradio here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from fusion_app import limits
from fusion_app.archive import unpack_zip
from fusion_app.models import TASKS, Task
from fusion_app.sessions import Upload
from fusion_app.texts import DEFAULT_WINDOW, WINDOWS
from fusion_core import (
    ImageLoadError,
    ImageTooLargeError,
    LoadedImage,
    LoadedPair,
    TrainConfig,
    find_pairs,
    read_image,
    read_pair,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


class InputError(ValueError):
    """An input the app refuses; the message is for the person who gave it."""


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


# ------------------------------------------------------------------------------------------------ one image


def _too_large(height: int, width: int, label: str) -> str:
    side = math.isqrt(limits.MAX_PIXELS)
    return (f"{label} is {width} x {height} pixels; the app fuses at most {limits.MAX_PIXELS:,} pixels (a {side} x "
            f"{side} square). Downscale it, or use `python -m fusion_core fuse` on your own machine.")


def check_size(height: int, width: int, label: str) -> None:
    """Refuse an image outside the app's bounds (``MIN_SIDE`` to ``MAX_PIXELS``), naming ``label``."""
    if height * width > limits.MAX_PIXELS:
        raise InputError(_too_large(height, width, label))
    if min(height, width) < limits.MIN_SIDE:
        raise InputError(f"{label} is {width} x {height} pixels; the app fuses images of at least "
                         f"{limits.MIN_SIDE} x {limits.MIN_SIDE} pixels (the metrics' window).")


def read_bounded(path: str | Path, label: str, **options) -> LoadedImage:
    """``read_image`` within the app's bounds, the messages naming ``label``; a too large image is refused from
    its header, before it is decoded."""
    try:
        image = read_image(path, max_pixels=limits.MAX_PIXELS, **options)
    except ImageTooLargeError as error:
        raise InputError(_too_large(error.height, error.width, label)) from None
    except ImageLoadError as error:
        raise InputError(f"{label}: {error}") from None
    check_size(*image.pixels.shape[:2], label)
    return image


def read_source(path: str | None, label: str, window: str = DEFAULT_WINDOW, frame: float | None = 0) -> LoadedImage:
    """An uploaded file as pixels; a clear message when it is missing or cannot be read."""
    if not path:
        raise InputError(f"Upload {label} first, or pick one of the examples.")
    return read_bounded(path, label, frame=int(frame or 0), window=WINDOWS.get(window))


def image_size(path: str | Path, label: str) -> tuple[int, int]:
    """(height, width) of an image file from its header, its pixels left undecoded: ``read_image`` refuses an
    image of more than ``max_pixels`` before decoding it and says its size (``ImageTooLargeError``)."""
    try:
        image = read_image(path, max_pixels=1)  # only a 1 x 1 image is decoded, and it is too small anyway
    except ImageTooLargeError as error:
        return error.height, error.width
    except ImageLoadError as error:
        raise InputError(f"{label}: {error}") from None
    height, width = image.pixels.shape[:2]
    return height, width


def load_pair(image_a: LoadedImage, image_b: LoadedImage, task: Task, resample: bool, align: bool) -> LoadedPair:
    """The two sources as read, made one size and aligned when asked (``read_pair`` does that work). A source
    that needs neither stays the ``LoadedImage`` read from its file: its bit depth (the metrics score 8-bit
    files as exact integers), its DICOM summary and its warnings travel with it."""
    (ha, wa), (hb, wb) = image_a.pixels.shape[:2], image_b.pixels.shape[:2]
    if (ha, wa) != (hb, wb) and not resample:
        raise InputError(f"The {task.a} image is {wa} × {ha} pixels but the {task.b} image is {wb} × {hb} "
                         "(width × height). Register them to one size, or tick “Resample B to A's size” under "
                         "Advanced.")
    if (ha, wa) == (hb, wb) and not align:
        return LoadedPair(image_a, image_b, None, ())
    try:
        pair = read_pair(image_a.pixels, image_b.pixels, on_size_mismatch="resample", align=align)
    except ImageLoadError as error:
        raise InputError(str(error)) from None
    return LoadedPair(image_a, pair.b, pair.shift, pair.warnings)  # A's pixels are unchanged: keep A as read


# ------------------------------------------------------------------------------------------------ pairs of a zip


def pairs_root(upload: Upload | None, task: str, dest: Path) -> tuple[Path, str]:
    """The folder of pairs to use (the unpacked zip, else the task's bundled examples) and its description."""
    if upload is None:
        return EXAMPLES / TASKS[task].folder, f"the bundled {task} examples"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return unpack_zip(str(upload.path), dest), f"the uploaded zip ({upload.name})"
    except ValueError as error:
        raise InputError(f"The zip was refused: {error}.") from None


def source_name(upload: Upload | None, task: str) -> str:
    """The pairs' source as messages name it: the zip's file name, or the task's bundled examples."""
    return upload.name if upload is not None else f"The bundled {task} example set"


def check_method_names(external: dict[str, Path]) -> dict[str, Path]:
    """The zip's other methods, each named by its folder in ``fused/``: a name is shown in the tables and written
    into the result files, so it may hold only letters, digits, spaces and ``. _ + -``."""
    for name in external:
        if not re.fullmatch(r"[\w .+-]{1,64}", name):
            raise InputError(f"The folder fused/{name!r} of the zip names a method; a method's name may hold only "
                             "letters, digits, spaces and . _ + - (at most 64). Rename the folder.")
    return external


def usable_pairs(root: Path, hide: Path) -> list:
    """``find_pairs`` with the temporary folder ``hide`` taken out of its messages."""
    try:
        return find_pairs(root)
    except ValueError as error:
        raise InputError(f"No usable pairs: {str(error).replace(str(hide), 'the zip')}") from None


def check_pairs(pairs: list, root: Path, source: str, command: str, max_pairs: int) -> int:
    """Refuse more than ``max_pairs`` pairs, any image the app would not fuse and any pair of two sizes, naming
    the file, from the files' headers alone: the one decoding is left to the evaluation or the dataset. Returns
    the pixels of one source of all the pairs. ``command`` is the tab's command-line equivalent, without such
    limits."""
    verb = {"evaluate": "evaluates", "train": "trains on"}[command]
    if len(pairs) > max_pairs:
        raise InputError(f"{source} holds {len(pairs):,} pairs; the app {verb} at most {max_pairs}. Use "
                         f"`python -m fusion_core {command}` for more.")
    pixels = 0
    for pair in pairs:
        names = [Path(path).relative_to(root).as_posix() for path in (pair.a, pair.b)]
        sizes = []
        for path, name in zip((pair.a, pair.b), names, strict=True):
            sizes.append(image_size(path, name))
            check_size(*sizes[-1], name)
        if sizes[0] != sizes[1]:
            (ha, wa), (hb, wb) = sizes
            raise InputError(f"{names[0]} is {wa} x {ha} pixels but {names[1]} is {wb} x {hb}; the two sources "
                             "of a pair must be registered to one size.")
        pixels += sizes[0][0] * sizes[0][1]
    return pixels


def check_training_pixels(pixels: int, source: str) -> None:
    """Refuse pairs that would not fit in a run's memory (``MAX_TRAIN_PIXELS`` per source in all)."""
    if pixels > limits.MAX_TRAIN_PIXELS:
        raise InputError(f"{source} holds {pixels:,} pixels per source; the app trains on at most "
                         f"{limits.MAX_TRAIN_PIXELS:,} in all (a run holds them in memory). Use fewer or smaller "
                         "pairs, or `python -m fusion_core train`.")


# ------------------------------------------------------------------------------------------------ training options


def train_configs(options: TrainOptions, stride: int) -> list[TrainConfig]:
    """The configuration of each stage the options ask for, within the Train tab's bounds."""
    steps, crop, batch = int(options.steps or 0), int(options.crop or 0), int(options.batch or 0)
    lr = float(options.lr or 0)
    if not 1 <= steps <= limits.MAX_TRAIN_STEPS:
        raise InputError(f"Steps per stage must lie between 1 and {limits.MAX_TRAIN_STEPS:,} in the app (got "
                         f"{steps:,}); train longer with `python -m fusion_core train`.")
    if not 1 <= batch <= 64:
        raise InputError(f"The batch size must lie between 1 and 64 (got {batch}).")
    if crop < stride or crop % stride or crop > 1024:
        raise InputError(f"The crop must be a multiple of {stride} (this network's stride) between {stride} and "
                         f"1024 (got {crop}).")
    if not 0 < lr <= 0.1:
        raise InputError(f"The learning rate must lie in (0, 0.1] (got {lr:g}).")
    stages = [1, 2] if options.stage == "both" else [int(options.stage)]
    return [TrainConfig(stage=s, steps=steps, batch_size=batch, crop=crop, lr=lr, checkpoint_every=0,
                        preview_every=max(1, steps // 5), log_every=1) for s in stages]
