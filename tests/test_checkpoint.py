"""Checkpoint folders: save -> load gives identical outputs; a save is atomic as a whole (a failed or cut-short
save leaves the old checkpoint or the new one); files changed after saving, pickles, corrupt weights and wrong
configs are refused; folders without a manifest (bundled, hand-made) load as they are."""

import copy
import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_pair
from fusion_core import checkpoint
from fusion_core.checkpoint import (
    CARD_NAME,
    CHECKPOINT_ROOT,
    CONFIG_NAME,
    MANIFEST_NAME,
    PENDING_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    finish_pending,
    is_checkpoint,
    load_pipeline,
    read_checkpoint_file,
    save_pipeline,
)
from fusion_core.config import PRESETS, FusionConfig
from fusion_core.models.dgd_fusion import DGDFusionModel
from fusion_core.pipeline import FusionPipeline

BUNDLED = sorted(p for p in (Path(__file__).resolve().parent.parent / "assets" / "checkpoints").iterdir() if p.is_dir())


@pytest.fixture
def saved(tmp_path, tiny_pipeline):
    return save_pipeline(tmp_path / "model", tiny_pipeline, card="# tiny test model\n")


@pytest.fixture
def hand_made(saved):
    """A folder with the files of a checkpoint and no manifest, as a person (or an older version) makes it."""
    (saved / MANIFEST_NAME).unlink()
    return saved


def _changed(pipeline: FusionPipeline) -> FusionPipeline:
    """A copy of ``pipeline`` with other weights."""
    other = copy.deepcopy(pipeline)
    with torch.no_grad():
        for parameter in other.model.parameters():
            parameter.add_(1)
    return other


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make any attempt to unpickle fail the test loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("the loader tried to unpickle a file")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, refuse)


def test_save_writes_the_three_files_and_their_manifest(saved, tiny_pipeline):
    assert {p.name for p in saved.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, MANIFEST_NAME}
    assert (saved / CARD_NAME).read_text() == "# tiny test model\n"
    entries = json.loads((saved / MANIFEST_NAME).read_text())["files"]
    assert list(entries) == [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]
    for name, entry in entries.items():
        data = (saved / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    config = json.loads((saved / CONFIG_NAME).read_text())
    assert config["format"] == "dgd-fusion/2"
    assert config["unet"]["channels"] == list(tiny_pipeline.config.unet.channels)


def test_default_model_card_names_the_config(tmp_path, tiny_pipeline):
    folder = save_pipeline(tmp_path / "model", tiny_pipeline)
    assert "tiny" in (folder / CARD_NAME).read_text()


def test_load_rebuilds_the_config_and_weights_from_the_folder_alone(saved, tiny_pipeline):
    loaded = load_pipeline(saved)
    assert loaded.config == tiny_pipeline.config
    assert loaded.trained and not loaded.model.training
    original, restored = tiny_pipeline.model.state_dict(), loaded.model.state_dict()
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


def test_saving_again_replaces_the_checkpoint_and_keeps_other_files(saved, tiny_pipeline):
    save_pipeline(saved, tiny_pipeline, extras={"train_state.json": b"{}"})
    (saved / "train_log.jsonl").write_text("{}\n")
    save_pipeline(saved, tiny_pipeline)
    assert (saved / "train_log.jsonl").exists()
    assert not (saved / "train_state.json").exists()  # a file of the old checkpoint only
    assert not [p for p in saved.iterdir() if p.name.startswith(".")]


def test_a_file_the_manifest_does_not_name_is_not_part_of_the_checkpoint(saved):
    (saved / "train_state.json").write_text("{}")  # say, copied in from another run
    assert read_checkpoint_file(saved, "train_state.json") is None
    (saved / MANIFEST_NAME).unlink()
    assert read_checkpoint_file(saved, "train_state.json") == b"{}"  # without a manifest: read as it is


def test_a_save_that_fails_before_its_commit_leaves_the_old_checkpoint(saved, tiny_pipeline, monkeypatch):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    write = checkpoint._write_file

    def disk_full_at_the_manifest(path, data):
        if path.name.endswith(MANIFEST_NAME):
            raise OSError("disk full")
        write(path, data)

    monkeypatch.setattr(checkpoint, "_write_file", disk_full_at_the_manifest)
    with pytest.raises(OSError, match="disk full"):
        save_pipeline(saved, _changed(tiny_pipeline))
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before


def test_a_save_cut_short_in_its_switch_reads_as_the_new_checkpoint(saved, tiny_pipeline, monkeypatch):
    new = _changed(tiny_pipeline)
    replace = os.replace

    def stop_at_the_weights(source, target):
        if Path(target).name == WEIGHTS_NAME:
            raise KeyboardInterrupt  # after the commit and the config, before the weights move in
        replace(source, target)

    monkeypatch.setattr(os, "replace", stop_at_the_weights)
    with pytest.raises(KeyboardInterrupt):
        save_pipeline(saved, new)
    monkeypatch.setattr(os, "replace", replace)
    staged = sorted(p.name for p in (saved / PENDING_NAME).iterdir())
    assert staged == sorted([WEIGHTS_NAME, CARD_NAME, MANIFEST_NAME])
    loaded = load_pipeline(saved).model.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in new.model.state_dict().items())
    assert sorted(p.name for p in (saved / PENDING_NAME).iterdir()) == staged  # reading changed nothing
    finish_pending(saved)
    assert not (saved / PENDING_NAME).exists()
    assert json.loads((saved / MANIFEST_NAME).read_text())["files"][WEIGHTS_NAME]["sha256"] == \
        hashlib.sha256((saved / WEIGHTS_NAME).read_bytes()).hexdigest()


def test_a_first_save_cut_short_right_after_its_commit_is_a_checkpoint(tmp_path, tiny_pipeline, monkeypatch):
    folder, replace = tmp_path / "run", os.replace
    assert not is_checkpoint(folder)

    def stop_at_the_switch(source, target):
        if Path(target).parent == folder:  # committed, nothing moved into the folder yet
            raise KeyboardInterrupt
        replace(source, target)

    monkeypatch.setattr(os, "replace", stop_at_the_switch)
    with pytest.raises(KeyboardInterrupt):
        save_pipeline(folder, tiny_pipeline)
    assert [p.name for p in folder.iterdir()] == [PENDING_NAME]
    assert is_checkpoint(folder) and load_pipeline(folder).config == tiny_pipeline.config


@pytest.mark.parametrize("name, change", [
    (WEIGHTS_NAME, lambda raw: raw[:-1] + bytes([raw[-1] ^ 1])),  # one bit: still a valid safetensors file
    (CONFIG_NAME, lambda raw: raw.replace(b'"dropout": 0.0', b'"dropout": 0.5')),
    (WEIGHTS_NAME, lambda raw: raw[: len(raw) // 2]),
], ids=["weights-bit", "config-edit", "weights-cut"])
def test_a_file_changed_after_saving_is_refused_naming_the_manifest(saved, name, change):
    path = saved / name
    path.write_bytes(change(path.read_bytes()))
    with pytest.raises(CheckpointError, match=f"differs from its entry in {MANIFEST_NAME}"):
        load_pipeline(saved)
    path.unlink()
    with pytest.raises(CheckpointError, match=f"missing or differs from its entry in {MANIFEST_NAME}"):
        load_pipeline(saved)


def test_the_model_card_may_be_edited(saved):
    (saved / CARD_NAME).write_text("# evaluated: see below\n")
    assert load_pipeline(saved).trained


def test_a_manifest_naming_files_outside_the_folder_is_refused(saved, tiny_pipeline):
    outside = saved.parent / "outside"
    outside.write_text("keep me")
    (saved / MANIFEST_NAME).write_text(json.dumps({"files": {"../outside": {"sha256": "0", "bytes": 7}}}))
    with pytest.raises(CheckpointError, match="not a DGD-Fusion manifest"):
        load_pipeline(saved)
    with pytest.raises(CheckpointError, match="not a DGD-Fusion manifest"):
        save_pipeline(saved, tiny_pipeline)  # a switch removes the files of the old manifest
    assert outside.read_text() == "keep me" and not (saved / PENDING_NAME).exists()


@pytest.mark.parametrize("folder", BUNDLED, ids=[p.name for p in BUNDLED])
def test_bundled_checkpoints_without_a_manifest_load(folder):
    assert not (folder / MANIFEST_NAME).exists()
    assert load_pipeline(folder).trained


def test_a_folder_without_a_manifest_loads_as_it_is(hand_made, tiny_pipeline):
    loaded = load_pipeline(hand_made).model.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in tiny_pipeline.model.state_dict().items())


def test_a_pickled_file_in_the_folder_is_refused_unopened(tmp_path, tiny_pipeline, no_unpickling):
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(tiny_pipeline.model.state_dict(), folder / "model.pt")
    with pytest.raises(CheckpointError, match="pickle"):
        load_pipeline(folder)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin"])
def test_a_path_to_a_pickled_file_is_refused_unopened(tmp_path, tiny_pipeline, suffix, no_unpickling):
    path = tmp_path / f"weights{suffix}"
    torch.save(tiny_pipeline.model.state_dict(), path)
    with pytest.raises(CheckpointError, match="pickle"):
        load_pipeline(path)


def test_a_pickle_named_like_safetensors_is_refused_unopened(hand_made, tiny_pipeline, no_unpickling):
    torch.save(tiny_pipeline.model.state_dict(), hand_made / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_pipeline(hand_made)


@pytest.mark.parametrize("corrupt", [
    lambda raw: raw[: len(raw) // 2],
    lambda raw: raw[:-1],
    lambda raw: b"",
    lambda raw: raw[:8] + b"{" * 20 + raw[28:],
], ids=["half", "last_byte_cut", "empty", "garbled_header"])
def test_corrupted_weights_are_refused(hand_made, corrupt):
    weights = hand_made / WEIGHTS_NAME
    weights.write_bytes(corrupt(weights.read_bytes()))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_pipeline(hand_made)


@pytest.mark.parametrize("section, key, value", [
    ("unet", "channels", [4, 8, 8, 16]),  # same parameter names, other shapes
    ("unet", "num_experts", 4),
    ("unet", "channels", [4, 8, 8]),  # fewer stages: missing and unexpected names
    ("head", "use_glsa", False),
])
def test_a_config_that_does_not_match_the_weights_is_refused(hand_made, section, key, value):
    config = json.loads((hand_made / CONFIG_NAME).read_text())
    config[section][key] = value
    (hand_made / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match"):
        load_pipeline(hand_made)


def test_a_config_that_is_not_dgd_fusion_is_refused(hand_made):
    config = json.loads((hand_made / CONFIG_NAME).read_text())
    del config["format"]
    (hand_made / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a dgd-fusion/2 config"):
        load_pipeline(hand_made)


def test_a_checkpoint_of_the_first_format_is_refused_with_the_fix(hand_made):
    config = json.loads((hand_made / CONFIG_NAME).read_text())
    config["format"] = "dgd-fusion/1"
    (hand_made / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="earlier DGD-Fusion.*retrain"):
        load_pipeline(hand_made)


def test_unreadable_or_unknown_config_is_refused(hand_made):
    config = json.loads((hand_made / CONFIG_NAME).read_text())
    config["unet"]["widths"] = [1, 2]
    (hand_made / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="widths"):
        load_pipeline(hand_made)
    (hand_made / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_pipeline(hand_made)


def test_missing_folder_or_weights_are_refused(tmp_path, hand_made):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pipeline(tmp_path / "nowhere")
    (hand_made / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=f"no {WEIGHTS_NAME}"):
        load_pipeline(hand_made)


@pytest.mark.parametrize("folder", sorted(p for p in CHECKPOINT_ROOT.iterdir() if (p / WEIGHTS_NAME).is_file()),
                         ids=lambda p: p.name)
def test_each_shipped_checkpoint_names_the_preset_that_builds_it(folder):
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["name"] in PRESETS, f"{folder.name}/config.json names no preset"
    preset = PRESETS[config["name"]]
    assert FusionConfig.from_dict({k: v for k, v in config.items() if k != "format"}) == preset
    built = {name: tuple(t.shape) for name, t in DGDFusionModel(preset).state_dict().items()}
    shipped = {name: tuple(t.shape) for name, t in load_file(folder / WEIGHTS_NAME).items()}
    assert built == shipped


@pytest.fixture
def nothing_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network was built")
    monkeypatch.setattr(DGDFusionModel, "__init__", refuse)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", r"config\.json must hold an object \(\{\.\.\.\}\), got a list$"),
    ('"dgd"', r"config\.json must hold an object \(\{\.\.\.\}\), got a string$"),
    ("[" * 100_000 + "]" * 100_000, r"config\.json: its JSON is nested too deeply for a config$"),
    ('{"format": "dgd-fusion/2", "unet": [4, 8]}', r"""config\.json: config\.json's "unet" must hold an object"""),
    ('{"format": "dgd-fusion/2", "unet": {"channels": [4096, 4096, 4096, 4096]}}',
     r"config\.json: unet\.channels \[4096, 4096, 4096, 4096\], head\.channels 16: about 10\.6 G parameters "
     r"\(42\.2 GB\), more than the 100 M this project builds"),
])
def test_a_hostile_config_is_refused_before_anything_is_built(hand_made, nothing_built, text, message):
    (hand_made / CONFIG_NAME).write_text(text)
    with pytest.raises(CheckpointError, match=message):
        load_pipeline(hand_made)
