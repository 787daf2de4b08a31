import dataclasses

import pytest

from conftest import ALL_PRESETS, tiny
from fusion_core.config import PRESETS, FusionConfig, LossConfig, TrainConfig, UNetConfig, parse_timesteps
from fusion_core.models.dgd_fusion import DGDFusionModel


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        UNetConfig().channels = (1,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().steps = 3


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_round_trip_through_dict(name):
    config = PRESETS[name]
    assert FusionConfig.from_dict(config.to_dict()) == config


def test_unknown_keys_are_refused():
    data = PRESETS["cpu"].to_dict()
    data["unet"]["widths"] = [1, 2]
    with pytest.raises(ValueError, match="widths"):
        FusionConfig.from_dict(data)
    with pytest.raises(ValueError, match="unknown config keys"):
        FusionConfig.from_dict({"colour": 1})


def test_ablation_presets_switch_the_modules():
    assert not PRESETS["GCFS+GLSA"].unet.use_dfe
    assert not PRESETS["DFE+GLSA"].unet.use_gfs
    assert not PRESETS["DFE+GCFS"].head.use_glsa
    assert PRESETS["DFE_3"].unet.num_experts == 3 and PRESETS["DFE_5"].unet.num_experts == 5
    assert {"ALL", "DFE+GCFS", "DFE+GLSA", "GCFS+GLSA", "DFE_3", "DFE_5", "cpu", "gpu"} <= set(PRESETS)


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_every_preset_builds(name):
    model = DGDFusionModel(tiny(PRESETS[name]))
    assert sum(p.numel() for p in model.parameters()) > 0


def test_parse_timesteps_reads_the_separators_people_type():
    assert parse_timesteps("5, 50, 100") == (5, 50, 100)
    assert parse_timesteps(" 100;5 50 ") == (100, 5, 50)  # order kept: the head reads its branches in order
    assert parse_timesteps("") is None and parse_timesteps("  ") is None and parse_timesteps(None) is None


@pytest.mark.parametrize("text, message", [
    ("5, fifty, 100", "whole numbers"),
    ("5.5, 50, 100", "whole numbers"),
    ("5, 50, 1000", r"0\.\.999.*\[1000\]"),
    ("-1, 50, 100", r"0\.\.999.*\[-1\]"),
    ("5, 50, 5", r"differ.*\[5\] repeat"),
])
def test_parse_timesteps_says_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_timesteps(text)
    assert repr(text) in str(error.value)


def test_parse_timesteps_range_follows_the_schedule():
    assert parse_timesteps("0, 49", num_timesteps=50) == (0, 49)
    with pytest.raises(ValueError, match=r"0\.\.49"):
        parse_timesteps("50", num_timesteps=50)


@pytest.mark.parametrize("name", ["gfs_mask_norm", "gfs_standardise_mask"])
def test_gate_flags_must_be_booleans(name):
    with pytest.raises(ValueError, match=f"unet.{name} must be true or false"):
        UNetConfig(**{name: 1})


def test_loss_intensity_mean_is_a_share_and_older_configs_keep_the_max_target():
    with pytest.raises(ValueError, match=r"loss.intensity_mean must be a number in \[0.0, 1.0\], got 1.5"):
        LossConfig(intensity_mean=1.5)
    with pytest.raises(ValueError, match=r"loss.ssim must be a number in \[0.0, 1000000.0\]"):
        LossConfig(ssim=-1.0)
    data = PRESETS["cpu"].to_dict()
    del data["loss"]["intensity_mean"], data["loss"]["gradient_gain"]  # a config.json written before the options
    assert FusionConfig.from_dict(data).loss == LossConfig(intensity=PRESETS["cpu"].loss.intensity,
                                                           gradient=PRESETS["cpu"].loss.gradient,
                                                           ssim=PRESETS["cpu"].loss.ssim)
    with pytest.raises(ValueError, match=r"loss.gradient_gain must be a number in \[1.0, 4.0\], got 0.5"):
        LossConfig(gradient_gain=0.5)


@pytest.mark.parametrize("data, message", [
    ([1, 2], r"^config\.json must hold an object \(\{\.\.\.\}\), got a list$"),
    ("cpu", r"^config\.json must hold an object \(\{\.\.\.\}\), got a string$"),
    (None, r"got null$"),
    ({"unet": [16, 32]}, r"""^config\.json's "unet" must hold an object \(\{\.\.\.\}\), got a list$"""),
    ({"head": 16}, r"""^config\.json's "head" must hold an object \(\{\.\.\.\}\), got a number$"""),
    ({"unet": {"channels": "16,32"}}, r"unet\.channels must be a list of 1 to 8 whole numbers, got '16,32'"),
    ({"unet": {"channels": [[16], 32]}}, r"unet\.channels must be a whole number in 1\.\.4096, got \[16\]"),
    ({"unet": {"use_dfe": "yes"}}, r"unet\.use_dfe must be true or false, got 'yes'"),
    ({"head": {"output": ["weight_map"]}}, r"head output must be one of"),
    ({"unet": {"widths": [1]}}, r"unknown unet fields \['widths'\]; unet has \['channels', "),
    ({"name": ["cpu"]}, r"config name must be a text of 1 to 200 characters, got \['cpu'\]"),
])
def test_from_dict_names_what_is_wrong_with_the_structure(data, message):
    with pytest.raises(ValueError, match=message):
        FusionConfig.from_dict(data)


@pytest.mark.parametrize("data, message", [
    ({"unet": {"channels": [64]}}, r"unet\.channels must list at least 2 widths \(the fusion head reads the second "
                                   r"decoder stage\), got \[64\]"),
    ({"head": {"channels": 6, "num_heads": 2}}, r"head\.channels \(6\) must be a multiple of 4 with head\.use_glsa"),
    ({"head": {"channels": 2, "num_heads": 1, "use_glsa": False, "ffn_expansion": 0.25}},
     r"head\.channels x head\.ffn_expansion \(2 x 0\.25\) must be at least 1"),
])
def test_configs_the_network_cannot_be_built_from_are_refused(data, message):
    with pytest.raises(ValueError, match=message):
        FusionConfig.from_dict(data)


def test_train_batch_and_crop_are_bounded():
    with pytest.raises(ValueError, match=r"^train\.batch_size must be a whole number in 1\.\.256, got 1000000$"):
        TrainConfig(batch_size=1_000_000)
    with pytest.raises(ValueError, match=r"^train\.crop must be a whole number in 1\.\.4096, got 8192$"):
        TrainConfig(crop=8192)
    assert TrainConfig(batch_size=256, crop=4096).batch_size == 256
