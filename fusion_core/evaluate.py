"""Batch evaluation: fuse every pair of a folder with every method, score each result, write the tables.

The comparison of DGD-Fusion with the classical baselines (paper 2.1.3, tables 1-3) on one folder of pairs
(`data.find_pairs` layouts). Output, under out_dir:

    fused/<method>/<name>.png    every fused image (8-bit PNG; reused by later runs when reuse=True)
    per_image.csv                one row per (image, method): all eleven metrics
    means.csv, means.md          the mean of each metric per method, and its mean rank over the seven
                                 paper metrics; means.md marks the best value of each column in bold
    means.png                    bar chart of the means, one panel per metric

Metrics are computed on the 8-bit fused image as written, so a rerun that reuses it gives the same numbers.
Another method's fused images (``external``: a folder per method, one image per pair named like it) are
scored in the same tables, ranks and chart. Under torchrun each rank fuses and scores its share of the
pairs and rank 0 writes the tables (`distributed`).
`fuse_methods` and `score_methods` do the same for one pair (the app's metric table); `evaluate_folder` is
built on them.
Every table names the metric convention it uses (`metrics.CONVENTIONS`). No argparse: `cli.py` calls
`evaluate_folder`, with tqdm wired to the `progress` callback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from .baselines import BASELINES
from .checkpoint import load_pipeline, resolve_pipeline
from .color import luma
from .data import ImagePair, find_images, find_pairs
from .distributed import all_gather, barrier, share
from .imaging import ImageLoadError, LoadedImage, read_image, to_uint8, write_atomically, write_csv, write_png
from .metrics import HIGHER_IS_BETTER, METRICS, PAPER_METRICS, compute_metrics, get_convention
from .pipeline import FusionPipeline
from .plots import plot_means

FusionMethod = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (a (H, W), b (H, W[, 3])) in [0, 1] -> fused
Progress = Callable[[int, int, str], None]  # (done, total, description)

_METHOD_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]*$")  # a method name is also a folder name


@dataclass(frozen=True)
class ImageScore:
    """The metrics of one fused image: pair name, method, values keyed by the paper labels."""

    name: str
    method: str
    values: dict[str, float]


@dataclass(frozen=True)
class EvaluationResult:
    """What `evaluate_folder` computed and wrote.

    rows: one ImageScore per (pair, method), pairs sorted by name; means: method -> label -> mean over pairs;
    mean_rank: method -> mean rank over PAPER_METRICS (1 = best); files: "per_image_csv", "means_csv",
    "means_md", "means_png", "fused_dir" -> path.
    """

    root: Path
    convention: str
    methods: tuple[str, ...]
    num_pairs: int
    rows: list[ImageScore]
    means: dict[str, dict[str, float]]
    mean_rank: dict[str, float]
    files: dict[str, Path]


# ---------------------------------------------------------------------------------------------------- tables


def mean_ranks(means: Mapping[str, Mapping[str, float]], labels: Sequence[str] = PAPER_METRICS) -> dict[str, float]:
    """Mean over labels of each method's rank (1 = best, ties share the average rank) by its mean value."""
    methods = list(means)
    ranks = np.zeros(len(methods))
    for label in labels:
        values = np.array([means[m][label] for m in methods], dtype=np.float64)
        ranks += rankdata(-values if HIGHER_IS_BETTER[label] else values, method="average")
    return {m: float(r / len(labels)) for m, r in zip(methods, ranks, strict=True)}


def _format_value(value: float) -> str:
    return f"{value:.4f}" if np.isfinite(value) else str(value)


def format_markdown_table(
    means: Mapping[str, Mapping[str, float]],
    *,
    convention: str,
    mean_rank: Mapping[str, float] | None = None,
    labels: Sequence[str] | None = None,
    caption: str = "",
) -> str:
    """A Markdown table, one row per method, the best value of each column in bold.

    Args:
        means: method -> label -> value (means over pairs, or one image's metrics).
        convention: name of the metric convention; its summary is written above the table.
        mean_rank: method -> mean rank; adds a last column where the lowest is best.
        labels: metric columns (default: every label present in METRICS order).
        caption: an optional line written between the convention line and the table.
    Returns:
        The text, ending with a newline.
    """
    methods = list(means)
    if labels is None:
        labels = [label for label in METRICS if all(label in means[m] for m in methods)]
    columns = {label: [means[m][label] for m in methods] for label in labels}
    best = {label: (max(v) if HIGHER_IS_BETTER[label] else min(v)) for label, v in columns.items()}
    if mean_rank is not None:
        columns["mean rank"] = [mean_rank[m] for m in methods]
        best["mean rank"] = min(columns["mean rank"])
    lines = [f"Metric convention: {get_convention(convention).summary}.", ""]
    if caption:
        lines += [caption, ""]
    lines.append("| method | " + " | ".join(columns) + " |")
    lines.append("| --- |" + " ---: |" * len(columns))
    for i, method in enumerate(methods):
        cells = [
            f"**{_format_value(v[i])}**" if v[i] == best[label] else _format_value(v[i]) for label, v in columns.items()
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_per_image_csv(path: Path, rows: list[ImageScore], convention: str) -> None:
    write_csv(path, ["name", "method", *METRICS, "convention"],
              [[row.name, row.method, *(row.values[label] for label in METRICS), convention] for row in rows])


def _write_means_csv(path: Path, means: dict, mean_rank: dict, convention: str) -> None:
    write_csv(path, ["method", *METRICS, "mean_rank", "convention"],
              [[method, *(values[label] for label in METRICS), mean_rank[method], convention]
               for method, values in means.items()])


# ---------------------------------------------------------------------------------------------- evaluation


def pipeline_method(pipeline: FusionPipeline, seed: int = 0) -> FusionMethod:
    """The network as an evaluation method: each pair fused with the diffusion noise seeded by ``seed``."""

    def fuse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return pipeline.fuse(a, b, generator=torch.Generator().manual_seed(seed)).fused

    return fuse


def _as_metric_input(image: LoadedImage) -> np.ndarray:
    """Source pixels on the 0..255 scale the metrics expect: exact uint8 for 8-bit files, float otherwise."""
    return to_uint8(image.pixels) if image.bit_depth <= 8 else image.pixels.astype(np.float64) * 255


def fused_uint8(output: np.ndarray, b_shape: tuple[int, ...], method: str, name: str) -> np.ndarray:
    """Check a method's output and turn it into the 8-bit image that is written and scored."""
    output = np.asarray(output)
    if output.shape[:2] != b_shape[:2] or output.ndim not in (2, 3) or (output.ndim == 3 and output.shape[2] != 3):
        raise ValueError(f"method {method!r} returned shape {output.shape} for pair {name!r}; expected {b_shape}")
    if output.dtype == np.uint8:
        return output
    if not np.isfinite(output).all():
        raise ValueError(f"method {method!r} returned NaN or infinite values for pair {name!r}")
    return to_uint8(np.clip(output, 0.0, 1.0))


def fuse_methods(methods: Mapping[str, FusionMethod], a: LoadedImage, b: LoadedImage, *, pair: str = "pair"
                 ) -> dict[str, np.ndarray]:
    """Each method's fused image of one registered pair, as 8-bit pixels: what is written and scored.

    Args:
        methods: name -> fn(a, b) -> fused, as in `evaluate_folder`; A is given gray (an RGB A as its luma).
        a, b: the two sources as read (`read_image`, `read_pair`), same height and width.
        pair: the pair's name, for error messages.
    Returns:
        name -> uint8 (H, W) or (H, W, 3), in the order of ``methods``.
    """
    a_gray = a.pixels if a.pixels.ndim == 2 else luma(a.pixels)
    return {name: fused_uint8(fuse(a_gray, b.pixels), b.pixels.shape, name, pair) for name, fuse in methods.items()}


def score_methods(fused: Mapping[str, np.ndarray], a: LoadedImage, b: LoadedImage, *, convention: str = "standard"
                  ) -> dict[str, dict[str, float]]:
    """Every metric of each method's fused image of one pair, scored against both sources.

    The sources are scored on 0..255 as stored: exact integers for 8-bit files, floats for deeper ones.

    Args:
        fused: method -> uint8 fused image, (H, W) or (H, W, 3) (`fuse_methods`, `FusionResult.fused`).
        a, b: the two sources as read (`read_image`, `read_pair`), same height and width.
        convention: metric convention, "standard" or "published".
    Returns:
        method -> label -> value for every label of METRICS, in the order of ``fused``; what
        `format_markdown_table` and `mean_ranks` take.
    """
    a_metric, b_metric = _as_metric_input(a), _as_metric_input(b)
    return {method: compute_metrics(image, a_metric, b_metric, convention=convention).values
            for method, image in fused.items()}


def _check_methods(methods: Mapping[str, FusionMethod], external: Mapping[str, Path]) -> None:
    if not methods and not external:
        raise ValueError("no methods to evaluate; pass e.g. baselines.BASELINES, or external fused images")
    for name in [*methods, *external]:
        if not _METHOD_NAME.match(name):
            raise ValueError(f"method name {name!r} must be a plain folder name (letters, digits, _ . + -)")
    if clash := sorted(set(methods) & set(external)):
        raise ValueError(f"method name(s) {', '.join(clash)} given both as a method and as external images")


def _listed(names: Sequence[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def external_images(external: Mapping[str, str | Path], pairs: Sequence[ImagePair]) -> dict[str, dict[str, Path]]:
    """Each external method's fused image of every pair: method -> pair name -> file (named like the pair).

    Raises:
        ValueError: a folder is missing, or lacks the image of some pairs; every such pair is named.
    """
    found, problems = {}, []
    for method, folder in external.items():
        images = find_images(folder)
        if missing := [pair.name for pair in pairs if pair.name not in images]:
            problems.append(f"method {method!r} has no image in {folder} of {len(missing)} pair(s): "
                            f"{_listed(missing)}")
        found[method] = {pair.name: images.get(pair.name) for pair in pairs}
    if problems:
        raise ValueError("; ".join(problems) + " (an external method's images are named like the pairs)")
    return found


def _external_image(path: Path, method: str, b: LoadedImage, pair: str) -> np.ndarray | str:
    """An external method's image of a pair as the 8-bit pixels that are scored, or why it cannot be scored."""
    try:
        fused = to_uint8(read_image(path).pixels)
    except ImageLoadError as error:
        return f"method {method!r}, pair {pair}: {error}"
    (height, width), (expected_h, expected_w) = fused.shape[:2], b.pixels.shape[:2]
    if (height, width) != (expected_h, expected_w):
        return (f"method {method!r}, pair {pair}: {path.name} is {width}x{height}, the pair is "
                f"{expected_w}x{expected_h} (width x height)")
    return fused


def _read_registered(pair: ImagePair) -> tuple[LoadedImage, LoadedImage]:
    """Both sources of a pair, refused unless they are the same size."""
    image_a, image_b = read_image(pair.a), read_image(pair.b)
    if image_a.pixels.shape[:2] != image_b.pixels.shape[:2]:
        raise ValueError(
            f"pair {pair.name!r}: {pair.a.name} is {image_a.pixels.shape[:2]} but {pair.b.name} is "
            f"{image_b.pixels.shape[:2]}; the two sources must be registered and the same size"
        )
    return image_a, image_b


def _fused_image(path: Path, method: str, fuse: FusionMethod, a: LoadedImage, b: LoadedImage, pair: str,
                 reuse: bool) -> np.ndarray:
    """A method's 8-bit fused image of a pair: read from ``path`` when reusing it, else fused and written there.

    A reused file that no longer decodes (a damaged disk, an older run killed mid-write) or no longer has the
    pair's size is this function's own output gone stale: it is fused again and replaced.
    """
    if reuse and path.exists():
        try:
            fused = to_uint8(read_image(path).pixels)
        except ImageLoadError:
            fused = None
        if fused is not None and fused.shape[:2] == b.pixels.shape[:2]:
            return fused
    fused = fuse_methods({method: fuse}, a, b, pair=pair)[method]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, fused)
    return fused


def _score_pair(pair: ImagePair, methods: Mapping[str, FusionMethod], external: Mapping[str, Mapping[str, Path]],
                fused_dir: Path, reuse: bool, convention: str, tick: Callable[[str], None]
                ) -> tuple[list[ImageScore], list[str]]:
    """Every method's fused image of one pair (fused or reused; read for the external ones), scored.

    Returns the pair's rows, in method order, and the external images that could not be scored.
    """
    image_a, image_b = _read_registered(pair)
    fused, problems = {}, []
    for method, fuse in methods.items():
        fused[method] = _fused_image(fused_dir / method / f"{pair.name}.png", method, fuse, image_a, image_b,
                                     pair.name, reuse)
        tick(f"{method} {pair.name}")
    for method, images in external.items():
        image = _external_image(images[pair.name], method, image_b, pair.name)
        if isinstance(image, str):
            problems.append(image)
        else:
            fused[method] = image
        tick(f"{method} {pair.name}")
    scores = score_methods(fused, image_a, image_b, convention=convention)
    return [ImageScore(pair.name, method, values) for method, values in scores.items()], problems


def evaluate_folder(
    root: str | Path,
    methods: Mapping[str, FusionMethod],
    out_dir: str | Path,
    *,
    convention: str = "standard",
    progress: Progress | None = None,
    reuse: bool = True,
    external: Mapping[str, str | Path] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> EvaluationResult:
    """Fuse every pair under root with every method, score the results and write the tables.

    Args:
        root: folder of pairs in a `data.find_pairs` layout ({ir, vi}, {MRI, CT|PET|SPECT}, {A, B}).
        methods: name -> fn(a, b) -> fused; a (H, W) gray float in [0, 1] (an RGB A is given as its luma),
            b float in [0, 1], (H, W) or (H, W, 3); fused float in [0, 1] or uint8 with b's height and width.
        out_dir: where fused images and tables are written (created if missing).
        convention: metric convention, "standard" or "published" (named in every table).
        progress: called as progress(done, total, description) after each fused image (this rank's counts).
        reuse: read out_dir/fused/<method>/<name>.png when it exists instead of calling the method.
        external: name -> folder of another method's fused images, one per pair named like it (NAME.png,
            .tif, ...; gray or colour, the pair's size), scored as 8-bit images in the same tables after
            ``methods``. A missing image is refused before anything is fused; an unreadable or wrong-size
            one after the pass (the fused images stay for reuse); either way every such pair is named.
        rank, world_size: this process's place in a torchrun launch (the process group joined,
            `distributed.setup_distributed`): each rank fuses and scores every world_size-th pair, rank 0 writes
            the tables from all of them; every rank returns the whole result.
    Returns:
        EvaluationResult with the per-image rows, the means, the mean ranks and the written paths.
    """
    get_convention(convention)
    external = {name: Path(folder) for name, folder in (external or {}).items()}
    _check_methods(methods, external)
    pairs = find_pairs(root)
    images = external_images(external, pairs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fused_dir = out_dir / "fused"
    mine = share(pairs, rank, world_size)
    total, done, rows, problems = len(mine) * (len(methods) + len(external)), [0], [], []

    def tick(text: str) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total, text)

    for pair in mine:
        pair_rows, pair_problems = _score_pair(pair, methods, images, fused_dir, reuse, convention, tick)
        rows += pair_rows
        problems += pair_problems
    rows, problems = _gathered(rows, problems, pairs, world_size)
    if problems:
        raise ValueError(f"{len(problems)} external image(s) cannot be scored: {'; '.join(problems[:20])}"
                         + (f"; and {len(problems) - 20} more" if len(problems) > 20 else ""))
    names = (*methods, *external)
    means = {m: {label: float(np.mean([r.values[label] for r in rows if r.method == m])) for label in METRICS}
             for m in names}
    ranks = mean_ranks(means)
    files = {
        "per_image_csv": out_dir / "per_image.csv",
        "means_csv": out_dir / "means.csv",
        "means_md": out_dir / "means.md",
        "means_png": out_dir / "means.png",
        "fused_dir": fused_dir,
    }
    if rank == 0:
        _write_tables(files, rows, means, ranks, convention, f"{len(pairs)} pairs from {Path(root)}")
    barrier(world_size)
    return EvaluationResult(Path(root), convention, names, len(pairs), rows, means, ranks, files)


def _gathered(rows: list[ImageScore], problems: list[str], pairs: Sequence[ImagePair], world_size: int
              ) -> tuple[list[ImageScore], list[str]]:
    """Every rank's rows in pair order (each pair's rows in method order) and every rank's problems."""
    parts = all_gather((rows, problems), world_size)
    order = {pair.name: i for i, pair in enumerate(pairs)}
    rows = sorted((row for part, _ in parts for row in part), key=lambda row: order[row.name])  # stable
    return rows, [problem for _, part in parts for problem in part]


def _write_tables(files: dict[str, Path], rows: list[ImageScore], means: dict, ranks: dict, convention: str,
                  source: str) -> None:
    """per_image.csv, means.csv, means.md and means.png."""
    _write_per_image_csv(files["per_image_csv"], rows, convention)
    _write_means_csv(files["means_csv"], means, ranks, convention)
    caption = (
        f"{source}; means over pairs, best value of each column in bold; "
        f"mean rank over the paper's {', '.join(PAPER_METRICS)} (1 = best)."
    )
    table = format_markdown_table(means, convention=convention, mean_rank=ranks, caption=caption)
    write_atomically(files["means_md"], table.encode("utf-8"))
    plot_means(files["means_png"], means, convention)


def parse_methods(text: str, checkpoint: str | None, preset: str, device: str, seed: int
                  ) -> dict[str, FusionMethod]:
    """``dgd,average,NAME=DIR,...`` -> method name -> fusion function (networks loaded once each)."""
    methods: dict[str, FusionMethod] = {}
    for token in filter(None, (t.strip() for t in text.split(","))):
        name, _, directory = token.partition("=")
        if directory:
            methods[name] = pipeline_method(load_pipeline(directory, device), seed)
        elif name == "dgd":
            methods[name] = pipeline_method(resolve_pipeline(checkpoint, preset, device), seed)
        elif name in BASELINES:
            methods[name] = BASELINES[name]
        else:
            raise ValueError(f"unknown method {name!r}; use dgd, NAME=CHECKPOINT_DIR or one of {', '.join(BASELINES)}")
    return methods


def parse_external(tokens: list[str]) -> dict[str, str]:
    """``["NAME=DIR", ...]`` (--external) -> name -> folder of that method's fused images."""
    external = {}
    for token in tokens:
        name, _, folder = token.partition("=")
        if not name or not folder:
            raise ValueError(f"--external {token!r}: give NAME=DIR, the method's name and the folder of its images")
        if name in external:
            raise ValueError(f"--external names {name!r} twice")
        external[name] = folder
    return external
