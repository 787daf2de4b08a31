"""Validation rank during training: how the network stands against the classical baselines, step by step.

A small fixed set of pairs (carved from the training data, never the test split) is fused with the
current weights; the seven paper metrics (EN, MI, SSIM, PSNR, SF, Q^AB/F, CC) of the network and of the
four classical baselines are averaged over the pairs, and each method gets its mean rank over the seven
(1 = best, as in the evaluation tables). The baselines do not change, so their metrics are computed once.
The curve of the network's rank against training time is the convergence measurement of docs/training.md.
``measure_gates`` says how much the GFS gates of a trained pipeline select on a set of pairs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .baselines import BASELINES
from .data import PairDataset, find_pairs
from .evaluate import fused_uint8, mean_ranks
from .metrics import PAPER_METRICS, compute_metrics
from .pipeline import FusionPipeline

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
    """

    layers: dict[str, tuple[float, float, float, float]]
    pairs: int

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


def measure_gates(pipeline: FusionPipeline, pairs: Sequence[tuple[np.ndarray, np.ndarray]], seed: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> GateReport:
    """Fuse each pair with its intermediates and average every GFS layer's gate activity.

    Raises ValueError for a pair too large to fuse whole (tiles record no intermediates).
    """
    sums: dict[str, np.ndarray] = {}
    for done, (a, b) in enumerate(pairs, start=1):
        result = pipeline.fuse(a, b, generator=torch.Generator().manual_seed(seed), return_intermediates=True)
        if result.intermediates is None:  # tiled fusion records no maps
            raise ValueError(f"pair {done} was fused in {result.tiles} tiles, which record no gates; measure on "
                             f"pairs of at most {pipeline.tile_size} pixels a side")
        for layer, activity in result.intermediates.gate_activity.items():  # (T, 4)
            sums[layer] = sums.get(layer, 0) + activity.mean(axis=0)  # (3,): mean over timesteps
        if progress is not None:
            progress(done, len(pairs))
    layers = {name: tuple(float(v) for v in total / len(pairs)) for name, total in sums.items()}
    return GateReport(layers=layers, pairs=len(pairs))
