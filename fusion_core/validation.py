"""Validation rank during training: how the network stands against the classical baselines, step by step.

A small fixed set of pairs (carved from the training data, never the test split) is fused with the
current weights; the seven paper metrics (EN, MI, SSIM, PSNR, SF, Q^AB/F, CC) of the network and of the
four classical baselines are averaged over the pairs, and each method gets its mean rank over the seven
(1 = best, as in the evaluation tables). The baselines do not change, so their metrics are computed once.
The curve of the network's rank against training time is the convergence measurement of docs/training.md.
``measure_gates`` says how much the GFS gates of a trained pipeline select on a set of pairs, and whether what
they select is the image or only the position (their maps on white noise).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .baselines import BASELINES
from .data import PairDataset, find_pairs
from .evaluate import fused_uint8, mean_ranks
from .layers.gated import GATE_BORDER, interior
from .metrics import PAPER_METRICS, compute_metrics
from .pipeline import FusionPipeline, Intermediates

NETWORK = "dgd"


@dataclass(frozen=True)
class ValidationScore:
    """The network's standing on the validation pairs at one step.

    Attributes:
        rank: the network's mean rank among itself and the baselines (1 = best of all).
        best_baseline: the baseline with the lowest mean rank, and ``best_baseline_rank`` that rank.
        ranks: method -> mean rank; ``means``: method -> paper metric -> mean over the pairs.
    """

    rank: float
    best_baseline: str
    best_baseline_rank: float
    ranks: dict[str, float]
    means: dict[str, dict[str, float]]


def _mean_metrics(fused: Sequence[np.ndarray], pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    scores = [compute_metrics(f, a, b, metrics=PAPER_METRICS).values for f, (a, b) in zip(fused, pairs, strict=True)]
    return {label: float(np.mean([s[label] for s in scores])) for label in PAPER_METRICS}


class ValidationSet:
    """Fixed validation pairs (A gray uint8 (H, W), B uint8 (H, W, 3)) and the baselines' metric means."""

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], seed: int = 0):
        if not pairs:
            raise ValueError("the validation set needs at least one pair")
        self.pairs = list(pairs)
        self.seed = seed
        self.baseline_means = {name: _mean_metrics(self._fuse_all(name, fuse), self.pairs)
                               for name, fuse in BASELINES.items()}

    @classmethod
    def from_folder(cls, root: str | os.PathLike, seed: int = 0) -> ValidationSet:
        """Every pair of a folder in any layout ``find_pairs`` knows."""
        dataset = PairDataset(find_pairs(root))
        return cls(list(zip(dataset.a, dataset.b, strict=True)), seed)

    def _fuse_all(self, name: str, fuse: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> list[np.ndarray]:
        return [fused_uint8(fuse(a, b), b.shape, name, f"#{i}") for i, (a, b) in enumerate(self.pairs)]

    def __len__(self) -> int:
        return len(self.pairs)

    def score(self, pipeline: FusionPipeline) -> ValidationScore:
        """Fuse every pair with ``pipeline`` (noise seeded by ``seed``) and rank it against the baselines."""
        fused = [pipeline.fuse(a, b, generator=torch.Generator().manual_seed(self.seed)).fused
                 for a, b in self.pairs]
        means = {NETWORK: _mean_metrics(fused, self.pairs), **self.baseline_means}
        ranks = mean_ranks(means)
        best = min(self.baseline_means, key=ranks.__getitem__)
        return ValidationScore(rank=ranks[NETWORK], best_baseline=best, best_baseline_rank=ranks[best],
                               ranks=ranks, means=means)


@dataclass(frozen=True)
class GateReport:
    """Gate activity of a pipeline over a set of pairs (see ``layers.gated.gate_activity``).

    Attributes:
        layers: GFS layer -> (mean per-channel spatial std of g, share below 0.2, share above 0.8, the spread
            without the border), each the mean over pairs and feature timesteps.
        pairs: how many pairs were fused.
        noise_correlation: GFS layer -> the mean over pairs of the correlation between the pair's gate map
            (channel and timestep mean, without the border; what the app draws) and the same layer's map on
            white noise of the pair's size. Near 1 the gate draws the same map whatever the input: it marks
            position, not content.
    """

    layers: dict[str, tuple[float, float, float, float]]
    pairs: int
    noise_correlation: dict[str, float] = field(default_factory=dict)

    @property
    def mean_spread(self) -> float:
        """The mean over layers of the per-channel spatial standard deviation of g."""
        return self._mean(0)

    @property
    def mean_interior_spread(self) -> float:
        """``mean_spread`` without the outer ``layers.gated.GATE_BORDER`` pixels of each map."""
        return self._mean(3)

    def _mean(self, column: int) -> float:
        return float(np.mean([values[column] for values in self.layers.values()])) if self.layers else 0.0

    def markdown(self) -> str:
        """The report as a Markdown table, one row per layer, and a summary paragraph."""
        rows = [f"| {layer} | {spread:.4f} | {low:.4f} | {high:.4f} | {interior:.4f} "
                f"| {self.noise_correlation[layer]:.3f} |"
                for layer, (spread, low, high, interior) in self.layers.items()]
        return "\n".join([
            "| layer | mean per-channel spatial std of g | share of g < 0.2 | share of g > 0.8 "
            "| std without the border | correlation with the map on white noise |",
            "| --- | ---: | ---: | ---: | ---: | ---: |", *rows,
            f"\n{self.pairs} pairs; mean over {len(self.layers)} GFS layers of the per-channel spatial std of g: "
            f"{self.mean_spread:.4f}; without the outer {GATE_BORDER} pixels of each map: "
            f"{self.mean_interior_spread:.4f}. A correlation near 1: the gate draws the same map on white noise, "
            "so it marks position, not content"])


def white_noise_like(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform noise in [0, 1) of the shapes of ``a`` and ``b`` (float32), the same for the same seed."""
    rng = np.random.default_rng(seed)
    return rng.random(a.shape, dtype=np.float32), rng.random(b.shape, dtype=np.float32)


def map_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two maps of one shape; 0 when either is flat (it draws no pattern)."""
    x, y = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / norm) if norm > 0 else 0.0


def measure_gates(pipeline: FusionPipeline, pairs: Sequence[tuple[np.ndarray, np.ndarray]], seed: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> GateReport:
    """Fuse each pair with its intermediates; average every GFS layer's gate activity and its correlation with
    the layer's map on white noise (one noise pair per size, drawn from ``seed``).

    Raises ValueError for a pair too large to fuse whole (tiles record no intermediates).
    """
    sums: dict[str, np.ndarray] = {}
    correlations: dict[str, float] = {}
    noise_maps: dict[tuple, dict[str, np.ndarray]] = {}
    for done, (a, b) in enumerate(pairs, start=1):
        record = _intermediates(pipeline, a, b, seed, f"pair {done}")
        for layer, activity in record.gate_activity.items():  # (T, 4)
            sums[layer] = sums.get(layer, 0) + activity.mean(axis=0)  # (4,): mean over timesteps
        size = (a.shape, b.shape)
        if size not in noise_maps:
            noise = _intermediates(pipeline, *white_noise_like(a, b, seed), seed, "white noise")
            noise_maps[size] = _interior_maps(noise)
        for layer, gate_map in _interior_maps(record).items():
            correlations[layer] = correlations.get(layer, 0.0) + map_correlation(gate_map, noise_maps[size][layer])
        if progress is not None:
            progress(done, len(pairs))
    layers = {name: tuple(float(v) for v in total / len(pairs)) for name, total in sums.items()}
    noise_correlation = {name: total / len(pairs) for name, total in correlations.items()}
    return GateReport(layers=layers, pairs=len(pairs), noise_correlation=noise_correlation)


def _intermediates(pipeline: FusionPipeline, a: np.ndarray, b: np.ndarray, seed: int, what: str) -> Intermediates:
    result = pipeline.fuse(a, b, generator=torch.Generator().manual_seed(seed), return_intermediates=True)
    if result.intermediates is None:  # tiled fusion records no maps
        raise ValueError(f"{what} was fused in {result.tiles} tiles, which record no gates; measure on "
                         f"pairs of at most {pipeline.tile_size} pixels a side")
    return result.intermediates


def _interior_maps(record: Intermediates) -> dict[str, np.ndarray]:
    """GFS layer -> its gate map averaged over timesteps, without the outer ``GATE_BORDER`` pixels."""
    return {layer: interior(gates.mean(axis=0)) for layer, gates in record.gates.items()}  # (h', w') each
