"""The ``train`` command line: refusals naming the files, fine-tuning, loss weights and head flags saved with the
checkpoint, resume with the checkpoint's config, the seed drawing the initial weights, one read on resume."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import assert_same_weights, seeded_model, train_log
from fusion_core import checkpoint
from fusion_core.checkpoint import WEIGHTS_NAME, load_model, save_model
from fusion_core.cli import main
from fusion_core.imaging import write_png
from fusion_core.models.dgd_fusion import DGDFusionModel
from fusion_core.training import (
    LOG_NAME,
    PROVENANCE_NAME,
)


@pytest.mark.parametrize("make_mismatch, named", [
    (lambda root: (root / "vi" / "001.png").unlink(), ["001.png"]),
    (lambda root: write_png(root / "vi" / "001.png", np.zeros((10, 12, 3), np.uint8)),
     ["ir/001.png", "vi/001.png"]),
], ids=["missing-partner", "different-sizes"])
def test_train_command_refuses_a_mismatched_folder_naming_the_files(data_dir, tmp_path, capsys, restore_sigint,
                                                                   make_mismatch, named):
    make_mismatch(data_dir)
    code = main(["train", "--data", str(data_dir), "--out", str(tmp_path / "out"), "--steps", "1"])
    message = capsys.readouterr().err
    assert code != 0 and message.startswith("error:")
    assert all(name in message for name in named)
    assert not (tmp_path / "out").exists()


def test_train_command_init_fine_tunes_from_a_checkpoint(tiny_config, data_dir, tmp_path, capsys, restore_sigint):
    start = save_model(tmp_path / "start", seeded_model(tiny_config, seed=3))
    out = tmp_path / "out"
    code = main(["train", "--data", str(data_dir), "--out", str(out), "--init", str(start), "--stage", "2",
                 "--steps", "2", "--batch", "2", "--crop", "32", "--checkpoint-every", "0", "--preview-every", "0"])
    assert code == 0
    before, after = load_model(start), load_model(out)
    assert after.config == tiny_config
    assert_same_weights(after.unet.state_dict(), before.unet.state_dict())  # frozen in stage 2
    head_before, head_after = before.head.state_dict(), after.head.state_dict()
    assert any(not torch.equal(head_after[name], head_before[name]) for name in head_before)


def test_train_command_loss_weights_are_saved_with_the_checkpoint(tiny_config, data_dir, tmp_path, restore_sigint):
    start = save_model(tmp_path / "start", seeded_model(tiny_config, seed=3))
    out = tmp_path / "out"
    code = main(["train", "--data", str(data_dir), "--out", str(out), "--init", str(start), "--stage", "2",
                 "--steps", "1", "--batch", "2", "--crop", "32", "--checkpoint-every", "0", "--preview-every", "0",
                 "--loss-gradient", "3.5", "--loss-intensity-mean", "0.25", "--loss-gradient-gain", "1.2"])
    assert code == 0
    loss = load_model(out).config.loss
    assert loss.gradient == 3.5 and loss.intensity_mean == 0.25 and loss.gradient_gain == 1.2
    assert loss.intensity == tiny_config.loss.intensity


@pytest.mark.slow
@pytest.mark.parametrize("extra", [4, 0], ids=["wider", "same-width"])
def test_train_command_head_channels_draws_a_fresh_head_of_that_width_on_the_same_unet(
        tiny_config, data_dir, tmp_path, restore_sigint, extra):
    start = save_model(tmp_path / "start", seeded_model(tiny_config, seed=3))
    out = tmp_path / "out"
    head = dataclasses.replace(tiny_config.head, channels=tiny_config.head.channels + extra)
    code = main(["train", "--data", str(data_dir), "--out", str(out), "--init", str(start), "--stage", "2",
                 "--steps", "0", "--checkpoint-every", "0", "--preview-every", "0", "--seed", "5",
                 "--head-channels", str(head.channels)])
    assert code == 0
    trained, begun = load_model(out), load_model(start)
    assert trained.config == dataclasses.replace(tiny_config, head=head)
    assert_same_weights(trained.unet.state_dict(), begun.unet.state_dict())
    drawn = begun.with_head(head, torch.Generator().manual_seed(5))  # the --seed draw, not the start's head
    assert_same_weights(trained.head.state_dict(), drawn.head.state_dict())


def test_train_command_refuses_a_head_width_the_attention_cannot_split(tiny_config, data_dir, tmp_path, capsys,
                                                                      restore_sigint):
    start = save_model(tmp_path / "start", seeded_model(tiny_config, seed=3))
    odd = tiny_config.head.num_heads * 4 + 1
    code = main(["train", "--data", str(data_dir), "--out", str(tmp_path / "out"), "--init", str(start),
                 "--stage", "2", "--steps", "1", "--head-channels", str(odd)])
    message = capsys.readouterr().err
    assert code == 2 and f"head.channels ({odd})" in message
    assert not (tmp_path / "out").exists()


def test_train_command_refuses_a_carried_head_and_a_new_one_together(tiny_config, data_dir, tmp_path, capsys,
                                                                    restore_sigint):
    start = save_model(tmp_path / "start", seeded_model(tiny_config, seed=3))
    code = main(["train", "--data", str(data_dir), "--out", str(tmp_path / "out"), "--init", str(start),
                 "--head-from", str(start), "--stage", "2", "--steps", "1", "--head-channels", "8"])
    assert code == 2 and "--head-from" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_train_command_resume_keeps_the_checkpoint_config(tiny_config, data_dir, tmp_path, restore_sigint):
    start = save_model(tmp_path / "start", seeded_model(tiny_config, seed=3))
    out = tmp_path / "out"
    common = ["train", "--data", str(data_dir), "--out", str(out), "--stage", "2", "--batch", "2", "--crop", "32",
              "--checkpoint-every", "0", "--preview-every", "0", "--log-every", "1"]
    assert main([*common, "--init", str(start), "--head-from", str(start), "--steps", "1",
                 "--loss-gradient", "3.5"]) == 0
    for steps in ("2", "3"):
        assert main([*common, "--resume", "--steps", steps]) == 0  # no loss flags: the run's own weights go on
    card = (out / "MODEL_CARD.md").read_text().splitlines()
    assert f"- initialised from: `{start}` (resumed)" in card  # the first run's start, marked once
    assert f"- fusion head from: `{start}`" in card
    assert load_model(out).config == dataclasses.replace(
        tiny_config, loss=dataclasses.replace(tiny_config.loss, gradient=3.5))
    last = json.loads((out / LOG_NAME).read_text().splitlines()[-1])
    assert last["step"] == 3
    assert last["fusion"] == pytest.approx(tiny_config.loss.intensity * last["intensity"] + 3.5 * last["gradient"]
                                           + tiny_config.loss.ssim * last["ssim"], rel=1e-4)


@pytest.mark.slow
def test_train_command_seed_draws_the_initial_weights(data_dir, tmp_path, restore_sigint):
    def run(seed: int, name: str) -> DGDFusionModel:
        out = tmp_path / name
        assert main(["train", "--data", str(data_dir), "--out", str(out), "--stage", "1", "--preset", "tiny",
                     "--steps", "1", "--batch", "2", "--crop", "64", "--checkpoint-every", "0", "--preview-every", "0",
                     "--seed", str(seed)]) == 0
        return load_model(out)

    first, again, other = run(5, "first"), run(5, "again"), run(6, "other")
    assert_same_weights(first.state_dict(), again.state_dict())
    head, other_head = first.head.state_dict(), other.head.state_dict()  # stage 1 leaves the head as drawn
    assert any(not torch.equal(head[name], other_head[name]) for name in head)


def test_resume_reads_the_checkpoint_once_and_builds_the_network_once(data_dir, tmp_path, restore_sigint,
                                                                      monkeypatch):
    """A resumed run through both stages: one read of the weights, one network, nothing read between stages."""
    out = tmp_path / "out"
    common = ["train", "--data", str(data_dir), "--out", str(out), "--preset", "tiny", "--batch", "2", "--crop", "64",
              "--checkpoint-every", "0", "--preview-every", "0", "--log-every", "1"]
    assert main([*common, "--stage", "1", "--steps", "2"]) == 0
    reads, builds = [], []
    read_file = checkpoint.read_checkpoint_file
    monkeypatch.setattr(checkpoint, "read_checkpoint_file",
                        lambda folder, name: (reads.append(name) if name == WEIGHTS_NAME else None) or
                        read_file(folder, name))
    init = DGDFusionModel.__init__
    monkeypatch.setattr(DGDFusionModel, "__init__", lambda self, config: builds.append(config) or init(self, config))
    assert main([*common, "--stage", "both", "--stage1-steps", "3", "--steps", "2", "--resume"]) == 0
    assert reads == [WEIGHTS_NAME] and len(builds) == 1
    assert [(line["stage"], line["step"]) for line in train_log(out)] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    provenance = json.loads((out / PROVENANCE_NAME).read_text())
    assert provenance["resumed"] == 1 and [s["step"] for s in provenance["stages"]] == [3, 2]
