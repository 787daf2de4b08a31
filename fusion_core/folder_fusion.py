"""Fusing a whole folder of pairs (a `data.find_pairs` layout) into OUT_DIR/NAME.EXT, one file per pair.

``python -m fusion_core fuse PAIRS -o OUT_DIR`` calls `fuse_folder`. A run is

- batched: the pairs are taken in chunks of ``batch_size`` (sorted by name) for `FusionPipeline.fuse_batch`,
  each with its own generator seeded with ``seed``, so each pair gets the noise that a one-pair ``fuse``
  with that seed gives it; on CUDA the same-size pairs of a chunk go through the network together, on the
  CPU one by one, so there the files are those of ``batch_size`` 1, bit for bit;
- data-parallel: under torchrun the chunks are dealt to the ranks in turn (`distributed.share`), so no pair
  is fused twice or missed, and a chunk is the same batch whatever the number of processes: the files are
  the same, bit for bit, as those of one process with the same batch size;
- resumable: a pair whose output exists is skipped unless ``overwrite``;
- safe to kill: each output is written atomically (`imaging.write_fused`), so no half-written file
  ever carries an output's name;
- stopped by a full disk: an output that cannot be written (`imaging.OutputWriteError`) stops the run with
  `FolderRunStopped`, naming the pair; the outputs before it are complete, so the same command goes on;
- robust to bad pairs: a pair that cannot be read or fused is listed in OUT_DIR/failures.csv (columns
  name, a, b, error; one row per pair, sorted by name) and the run goes on. The list is rewritten at the
  end of every run (removed when nothing failed), so it always describes the latest run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import ImagePair, find_pairs
from .distributed import all_gather, barrier, share
from .imaging import LoadedPair, OutputWriteError, fused_format, read_pair, write_csv, write_fused
from .pipeline import FusionPipeline, FusionResult

FAILURES_NAME = "failures.csv"
FOLDER_FORMATS = {"png": ".png", "tif": ".tif", "dcm": ".dcm"}  # --format -> suffix (`imaging.write_fused`)


@dataclass(frozen=True)
class PairFailure:
    """A pair that was not fused: its name, its two source files and what went wrong."""

    name: str
    a: Path
    b: Path
    error: str


@dataclass(frozen=True)
class FolderFusionResult:
    """What `fuse_folder` did, over every rank.

    Attributes:
        out_dir: the output folder.
        fused: names of the pairs fused by this run, sorted.
        skipped: names whose output existed already (not fused again), sorted.
        failures: the pairs not fused, sorted by name.
        failures_csv: the file that lists them; None when nothing failed.
        warnings: how single pairs were read and what was done to them ("NAME: A: the TIFF file holds 3 frames; ...",
            "NAME: B resized ...") and, once, the network's notes.
    """

    out_dir: Path
    fused: tuple[str, ...]
    skipped: tuple[str, ...]
    failures: tuple[PairFailure, ...]
    failures_csv: Path | None
    warnings: tuple[str, ...]


@dataclass
class _Report:
    """What one rank did, grown chunk by chunk, then gathered from every rank."""

    fused: list[str]
    failures: list[PairFailure]
    warnings: list[str]


def output_path(out_dir: Path, name: str, suffix: str) -> Path:
    return out_dir / f"{name}{suffix}"


class FolderRunStopped(RuntimeError):
    """A folder run stopped because an output could not be written (a full disk, a lost permission).

    The outputs written before ``pair`` are complete and the file at the failed path is untouched, so running
    the same command again goes on from ``pair``.
    """

    def __init__(self, pair: str, error: OutputWriteError):
        super().__init__(f"stopped at pair {pair}: {error}; the outputs written before it are complete: run the "
                         "same command again to go on from there")
        self.pair = pair


def _read(pairs: Sequence[ImagePair], read_options: dict) -> tuple[list[tuple[ImagePair, LoadedPair]],
                                                                   list[PairFailure]]:
    """Read each pair; the unreadable ones (and mismatched sizes) become failures."""
    loaded, failures = [], []
    for pair in pairs:
        try:
            loaded.append((pair, read_pair(pair.a, pair.b, **read_options)))
        except ValueError as error:  # ImageLoadError is a ValueError
            failures.append(PairFailure(pair.name, pair.a, pair.b, str(error)))
    return loaded, failures


def _fuse(pipeline: FusionPipeline, loaded: list[LoadedPair], seed: int, timesteps: tuple[int, ...] | None
          ) -> list[FusionResult | ValueError]:
    """Fuse the pairs as one batch call; when the pipeline refuses one, each alone, to tell which."""

    def run(chunk: list[LoadedPair]) -> list[FusionResult]:
        generators = [torch.Generator().manual_seed(seed) for _ in chunk]
        return pipeline.fuse_batch([(p.a.pixels, p.b.pixels) for p in chunk], feature_timesteps=timesteps,
                                   generators=generators, batch_size=max(len(chunk), 1))

    try:
        return run(loaded)
    except ValueError:
        outcomes: list[FusionResult | ValueError] = []
        for pair in loaded:
            try:
                outcomes += run([pair])
            except ValueError as error:
                outcomes.append(ValueError(str(error).removeprefix("pair 0: ")))
        return outcomes


def _fuse_chunk(pipeline: FusionPipeline, chunk: Sequence[ImagePair], out_dir: Path, suffix: str, seed: int,
                timesteps: tuple[int, ...] | None, read_options: dict) -> _Report:
    """Read, fuse and write one chunk of pairs; what failed is reported, not raised."""
    loaded, failures = _read(chunk, read_options)
    fused, warnings = [], []
    outcomes = _fuse(pipeline, [images for _, images in loaded], seed, timesteps)
    for (pair, images), outcome in zip(loaded, outcomes, strict=True):
        if isinstance(outcome, ValueError):
            failures.append(PairFailure(pair.name, pair.a, pair.b, str(outcome)))
            continue
        try:
            write_fused(output_path(out_dir, pair.name, suffix), outcome.y_fused, images.b.pixels)
        except OutputWriteError as error:
            raise FolderRunStopped(pair.name, error) from error
        fused.append(pair.name)
        warnings += [f"{pair.name}: {note}" for note in images.every_warning]
        warnings += outcome.warnings
    return _Report(fused, failures, warnings)


def _write_failures(path: Path, failures: Sequence[PairFailure]) -> Path | None:
    """failures.csv (name, a, b, error), or no file at all when nothing failed."""
    if not failures:
        path.unlink(missing_ok=True)
        return None
    write_csv(path, ["name", "a", "b", "error"], [[f.name, str(f.a), str(f.b), f.error] for f in failures])
    return path


def fuse_folder(
    pipeline: FusionPipeline,
    root: str | Path,
    out_dir: str | Path,
    *,
    suffix: str = ".png",
    seed: int = 0,
    batch_size: int = 1,
    overwrite: bool = False,
    feature_timesteps: tuple[int, ...] | None = None,
    read_options: dict | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> FolderFusionResult:
    """Fuse every pair under ``root`` into ``out_dir``/NAME``suffix`` (see the module docstring).

    Args:
        pipeline: the network, on this rank's device.
        root: folder of pairs in a `data.find_pairs` layout.
        out_dir: output folder (created if missing).
        suffix: ".png" or ".dcm" (8-bit), ".tif" (16-bit): what `imaging.write_fused` writes.
        seed: seed of every pair's diffusion noise.
        batch_size: pairs per chunk, and at most that many same-size pairs per pass of the network on CUDA.
        overwrite: fuse again the pairs whose output exists.
        feature_timesteps: as in `FusionPipeline.fuse`.
        read_options: keyword arguments of `imaging.read_pair` (on_size_mismatch, align, window, ...).
        rank, world_size: this process's place in a torchrun launch (the process group must be joined,
            `distributed.setup_distributed`); every rank returns the same result.
        progress: called as progress(done, total) with this rank's pair counts, after each chunk.
    Returns:
        FolderFusionResult over all ranks.
    Raises:
        ValueError: a bad suffix, batch size or timesteps, or ``root`` is not a folder of pairs; nothing is
            fused then.
    """
    fused_format(f"fused{suffix}")
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch_size}")
    pipeline.fuse_batch([], feature_timesteps=feature_timesteps)  # refuses timesteps the model cannot read, now
    pairs = find_pairs(root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mine = share(pairs, rank, world_size, batch_size)
    skipped = {p.name for p in mine if not overwrite and output_path(out_dir, p.name, suffix).exists()}
    chunks = [[p for p in mine[i:i + batch_size] if p.name not in skipped] for i in range(0, len(mine), batch_size)]
    total, report = len(mine) - len(skipped), _Report([], [], [])
    if progress is not None:
        progress(0, total)
    for chunk in filter(None, chunks):
        part = _fuse_chunk(pipeline, chunk, out_dir, suffix, seed, feature_timesteps, read_options or {})
        report.fused += part.fused
        report.failures += part.failures
        report.warnings += part.warnings
        if progress is not None:
            progress(len(report.fused) + len(report.failures), total)
    return _gather(out_dir, report, skipped, rank, world_size)


def _gather(out_dir: Path, report: _Report, skipped: set[str], rank: int, world_size: int
            ) -> FolderFusionResult:
    """Every rank's report merged; rank 0 writes failures.csv while the others wait for it."""
    reports = all_gather((report, skipped), world_size)
    failures = sorted((f for r, _ in reports for f in r.failures), key=lambda f: f.name)
    warnings = list(dict.fromkeys(w for r, _ in reports for w in r.warnings))
    path = out_dir / FAILURES_NAME
    if rank == 0:
        _write_failures(path, failures)
    barrier(world_size)
    return FolderFusionResult(out_dir=out_dir, fused=tuple(sorted(n for r, _ in reports for n in r.fused)),
                              skipped=tuple(sorted(n for _, s in reports for n in s)), failures=tuple(failures),
                              failures_csv=path if failures else None, warnings=tuple(warnings))
