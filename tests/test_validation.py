"""The validation rank of training: the network's metrics against the classical baselines on fixed pairs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import make_pair
from fusion_core.baselines import BASELINES
from fusion_core.cli import main
from fusion_core.evaluate import mean_ranks
from fusion_core.metrics import PAPER_METRICS, compute_metrics
from fusion_core.pipeline import build_pipeline
from fusion_core.validation import NETWORK, ValidationSet, map_correlation, measure_gates, white_noise_like


class _Copy:
    """Stands in for a pipeline: fuses like one baseline, so its metrics and rank must equal that baseline's."""

    def __init__(self, name: str):
        self.fuse_method = BASELINES[name]

    def fuse(self, a, b, generator=None):
        fused = np.clip(np.rint(self.fuse_method(a, b) * 255), 0, 255).astype(np.uint8)
        return type("Result", (), {"fused": fused})()


@pytest.fixture
def pairs(rng):
    return [make_pair(rng, 40, 48), make_pair(rng, 36, 44)]


def test_baseline_means_are_the_per_pair_metrics_averaged(pairs):
    validation = ValidationSet(pairs)
    a, b = pairs[1]
    fused = np.clip(np.rint(BASELINES["max"](a, b) * 255), 0, 255).astype(np.uint8)
    second = compute_metrics(fused, a, b, metrics=PAPER_METRICS).values
    a, b = pairs[0]
    fused = np.clip(np.rint(BASELINES["max"](a, b) * 255), 0, 255).astype(np.uint8)
    first = compute_metrics(fused, a, b, metrics=PAPER_METRICS).values
    for label in PAPER_METRICS:
        assert validation.baseline_means["max"][label] == pytest.approx((first[label] + second[label]) / 2)


def test_a_network_that_copies_a_baseline_ties_with_it(pairs):
    score = ValidationSet(pairs).score(_Copy("laplacian"))
    assert score.means[NETWORK] == pytest.approx(score.means["laplacian"])
    assert score.rank == pytest.approx(score.ranks["laplacian"])
    assert score.ranks == pytest.approx(mean_ranks(score.means))
    assert score.best_baseline_rank == min(score.ranks[name] for name in BASELINES)
    assert set(dataclasses.asdict(score)) == {"rank", "best_baseline", "best_baseline_rank", "ranks", "means"}


def test_an_untrained_pipeline_scores_the_average(tiny_config, pairs):
    """A weight-map head starts at the mean of the sources: its metrics are those of the average baseline."""
    torch.manual_seed(0)
    score = ValidationSet(pairs).score(build_pipeline(tiny_config))
    for label in PAPER_METRICS:
        assert score.means[NETWORK][label] == pytest.approx(score.means["average"][label], rel=0.02, abs=0.05)


def test_an_empty_validation_set_is_refused():
    with pytest.raises(ValueError, match="at least one pair"):
        ValidationSet([])


def _write_log(folder, ranks, best=3.0):
    folder.mkdir()
    lines = [{"stage": 2, "step": 100 * i, "train_seconds": 60.0 * i, "fusion": 1.0}
             for i in range(len(ranks))]  # loss lines are skipped by the plot
    lines += [{"stage": 2, "step": 100 * i, "train_seconds": 60.0 * i,
               "validation": {"rank": r, "best_baseline": "max", "best_baseline_rank": best}}
              for i, r in enumerate(ranks)]
    (folder / "train_log.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")


def test_curves_command_says_when_each_run_reached_the_best_baseline(tmp_path, capsys):
    _write_log(tmp_path / "fast", [3.5, 2.9, 2.5])
    _write_log(tmp_path / "slow", [5.0, 4.0, 3.5])
    out = tmp_path / "curves.png"
    assert main(["curves", f"fast={tmp_path / 'fast'}", str(tmp_path / "slow"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fast: rank 2.50 at step 200" in text and "best baseline: step 100 (1.0 min)" in text
    assert "slow: rank 3.50 at step 200" in text and "not reached" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_report_averages_each_layers_activity_over_pairs_and_timesteps(tiny_pipeline, pairs):
    report = measure_gates(tiny_pipeline, pairs)
    per_pair = [tiny_pipeline.fuse(a, b, return_intermediates=True).intermediates for a, b in pairs]
    assert report.pairs == 2 and len(report.layers) == 9  # four down, the middle, four up
    expected = (per_pair[0].gate_activity["up4"].mean(0) + per_pair[1].gate_activity["up4"].mean(0)) / 2
    np.testing.assert_allclose(report.layers["up4"], expected, rtol=1e-6)
    assert report.mean_spread == pytest.approx(np.mean([v[0] for v in report.layers.values()]))
    assert report.mean_spread > 0.01  # gates start away from a flat 0.5
    assert report.mean_interior_spread == pytest.approx(np.mean([v[3] for v in report.layers.values()]))


def test_map_correlation_of_hand_made_maps():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert map_correlation(x, 2 * x + 1) == pytest.approx(1.0)
    assert map_correlation(x, -x) == pytest.approx(-1.0)
    assert map_correlation(x, np.full_like(x, 0.3)) == 0.0
    checker = np.indices((3, 4)).sum(axis=0) % 2
    assert abs(map_correlation(checker, np.ones((3, 4)) * np.arange(4))) < 0.3


def test_gate_report_correlates_each_map_with_the_map_on_white_noise(tiny_pipeline, pairs):
    a, b = pairs[0]
    noise = white_noise_like(a, b, seed=0)
    assert noise[0].shape == a.shape and noise[1].shape == b.shape and 0 <= noise[0].min() < noise[0].max() < 1
    on_noise = measure_gates(tiny_pipeline, [noise])  # the noise pair is its own reference
    assert set(on_noise.noise_correlation) == set(on_noise.layers)
    assert all(c == pytest.approx(1.0) or c == 0.0 for c in on_noise.noise_correlation.values())
    assert any(c == pytest.approx(1.0) for c in on_noise.noise_correlation.values())
    on_images = measure_gates(tiny_pipeline, pairs)
    assert all(-1 <= c <= 1 for c in on_images.noise_correlation.values())
    assert on_images.noise_correlation != on_noise.noise_correlation


def test_gates_of_a_tiled_pair_are_refused(tiny_pipeline, pairs):
    tiny_pipeline.tile_size, tiny_pipeline.tile_overlap = 32, 8
    with pytest.raises(ValueError, match="pair 1 was fused in .* tiles"):
        measure_gates(tiny_pipeline, pairs)
