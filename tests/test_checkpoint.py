"""Checkpoint folders: save -> load gives identical outputs; pickles, corrupt weights and wrong configs refused."""

import json
import pickle

import numpy as np
import pytest
import torch

from conftest import make_pair
from fusion_core.checkpoint import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, CheckpointError, load_pipeline, save_pipeline


@pytest.fixture
def saved(tmp_path, tiny_pipeline):
    return save_pipeline(tmp_path / "model", tiny_pipeline, card="# tiny test model\n")


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make any attempt to unpickle fail the test loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("the loader tried to unpickle a file")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, refuse)


def test_save_writes_the_three_files(saved, tiny_pipeline):
    assert {p.name for p in saved.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME, CARD_NAME}
    assert (saved / CARD_NAME).read_text() == "# tiny test model\n"
    config = json.loads((saved / CONFIG_NAME).read_text())
    assert config["format"] == "dgd-fusion/2"
    assert config["unet"]["channels"] == list(tiny_pipeline.config.unet.channels)


def test_default_model_card_names_the_config(tmp_path, tiny_pipeline):
    folder = save_pipeline(tmp_path / "model", tiny_pipeline)
    assert "tiny" in (folder / CARD_NAME).read_text()


def test_load_rebuilds_the_config_and_weights_from_the_folder_alone(saved, tiny_pipeline):
    loaded = load_pipeline(saved)
    assert loaded.config == tiny_pipeline.config
    assert loaded.trained and not loaded.training
    original, restored = tiny_pipeline.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)


def test_loaded_pipeline_fuses_bit_identically(saved, tiny_pipeline, rng):
    a, b = make_pair(rng, 37, 53)
    before = tiny_pipeline.fuse(a, b, return_intermediates=True)
    after = load_pipeline(saved).fuse(a, b, return_intermediates=True)
    assert np.array_equal(before.fused, after.fused)
    assert np.array_equal(before.y_fused, after.y_fused)
    for kind in ("experts", "gates", "gate_activity", "attention"):
        maps, restored = getattr(before.intermediates, kind), getattr(after.intermediates, kind)
        assert maps and maps.keys() == restored.keys(), kind
        assert all(np.array_equal(maps[layer], restored[layer]) for layer in maps), kind
    assert np.array_equal(before.intermediates.weight_map, after.intermediates.weight_map)
    assert after.warnings == ()


def test_saving_again_overwrites_and_keeps_other_files(saved, tiny_pipeline):
    (saved / "train_log.jsonl").write_text("{}\n")
    save_pipeline(saved, tiny_pipeline)
    assert (saved / "train_log.jsonl").exists()
    assert not [p for p in saved.iterdir() if p.name.startswith(".")]


def test_a_pickled_file_in_the_folder_is_refused_unopened(tmp_path, tiny_pipeline, no_unpickling):
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(tiny_pipeline.state_dict(), folder / "model.pt")
    with pytest.raises(CheckpointError, match="pickle"):
        load_pipeline(folder)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin"])
def test_a_path_to_a_pickled_file_is_refused_unopened(tmp_path, tiny_pipeline, suffix, no_unpickling):
    path = tmp_path / f"weights{suffix}"
    torch.save(tiny_pipeline.state_dict(), path)
    with pytest.raises(CheckpointError, match="pickle"):
        load_pipeline(path)


def test_a_pickle_named_like_safetensors_is_refused_unopened(saved, tiny_pipeline, no_unpickling):
    torch.save(tiny_pipeline.state_dict(), saved / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_pipeline(saved)


@pytest.mark.parametrize("corrupt", [
    lambda raw: raw[: len(raw) // 2],
    lambda raw: raw[:-1],
    lambda raw: b"",
    lambda raw: raw[:8] + b"{" * 20 + raw[28:],
], ids=["half", "last_byte_cut", "empty", "garbled_header"])
def test_corrupted_weights_are_refused(saved, corrupt):
    weights = saved / WEIGHTS_NAME
    weights.write_bytes(corrupt(weights.read_bytes()))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_pipeline(saved)


@pytest.mark.parametrize("section, key, value", [
    ("unet", "channels", [4, 8, 8, 16]),  # same parameter names, other shapes
    ("unet", "num_experts", 4),
    ("unet", "channels", [4, 8, 8]),  # fewer stages: missing and unexpected names
    ("head", "use_glsa", False),
])
def test_a_config_that_does_not_match_the_weights_is_refused(saved, section, key, value):
    config = json.loads((saved / CONFIG_NAME).read_text())
    config[section][key] = value
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match"):
        load_pipeline(saved)


def test_a_config_that_is_not_dgd_fusion_is_refused(saved):
    config = json.loads((saved / CONFIG_NAME).read_text())
    del config["format"]
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a dgd-fusion/2 config"):
        load_pipeline(saved)


def test_a_checkpoint_of_the_first_format_is_refused_with_the_fix(saved):
    config = json.loads((saved / CONFIG_NAME).read_text())
    config["format"] = "dgd-fusion/1"
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="earlier DGD-Fusion.*retrain"):
        load_pipeline(saved)


def test_unreadable_or_unknown_config_is_refused(saved):
    config = json.loads((saved / CONFIG_NAME).read_text())
    config["unet"]["widths"] = [1, 2]
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="widths"):
        load_pipeline(saved)
    (saved / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_pipeline(saved)


def test_missing_folder_or_weights_are_refused(tmp_path, saved):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pipeline(tmp_path / "nowhere")
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=f"no {WEIGHTS_NAME}"):
        load_pipeline(saved)
