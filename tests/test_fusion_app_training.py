"""fusion_app.training: a run split into checkpointed chunks (as on ZeroGPU) equals the same run in one call."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_pair
from fusion_app.training import Trainer, TrainingJob, training_card
from fusion_core import (
    DGDFusionModel,
    FusionPipeline,
    Origin,
    PairDataset,
    TrainConfig,
    find_pairs,
    load_model,
    model_card,
    write_png,
)


def _run(trainer: Trainer, tiny_config, data: Path, out: Path) -> TrainingJob:
    torch.manual_seed(0)
    pipeline = FusionPipeline(DGDFusionModel(tiny_config))
    configs = [TrainConfig(stage=stage, steps=7, batch_size=2, crop=32, checkpoint_every=0, preview_every=0,
                           log_every=1) for stage in (1, 2)]
    job = TrainingJob(name=out.name, out_dir=out, steps_per_stage=7, stages=(1, 2))
    dataset = PairDataset(find_pairs(data))
    provenance = training_card(out.name, Origin(seed=0, preset="tiny"), str(data), len(dataset))
    trainer.start(job, pipeline, dataset, configs, provenance, lambda _: None)
    for _ in range(1200):  # the worker thread marks the job done, failed or not
        if job.done:
            break
        time.sleep(0.1)
    assert job.done and job.error is None, job.error
    return job


@pytest.mark.slow
def test_chunked_run_equals_one_run(tiny_config, rng, tmp_path):
    data = tmp_path / "pairs"
    for index in range(2):
        a, b = make_pair(rng, 40, 40)
        for folder, image in (("ir", a), ("vi", b)):
            (data / folder).mkdir(parents=True, exist_ok=True)
            write_png(data / folder / f"{index}.png", image)
    calls = []

    def accelerate(fn):
        calls.append(fn)
        return fn

    whole = _run(Trainer(), tiny_config, data, tmp_path / "whole")
    chunked = _run(Trainer(chunk_steps=3, accelerate=accelerate), tiny_config, data, tmp_path / "chunked")
    assert len(calls) == 6  # 3 + 3 + 1 steps in each of the two stages
    assert whole.error is None and chunked.error is None and chunked.step == whole.step == 14
    expected = load_model(whole.out_dir).state_dict()
    for name, value in load_model(chunked.out_dir).state_dict().items():
        np.testing.assert_array_equal(value.numpy(), expected[name].numpy(), err_msg=name)


def test_the_card_of_a_run_names_its_seed():
    card = model_card(training_card("run", Origin(seed=0, preset="tiny"), "the bundled examples", 2))
    assert "random weights of the `tiny` preset (seed 0)" in card
    assert "- seed: `train.seed` = 0 (the random initial weights, the crops, flips and noise)" in card
