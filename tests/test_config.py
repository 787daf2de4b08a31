import dataclasses

import pytest

from conftest import ALL_PRESETS, tiny
from fusion_core.config import PRESETS, FusionConfig, TrainConfig, UNetConfig
from fusion_core.pipeline import FusionPipeline


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
    pipeline = FusionPipeline(tiny(PRESETS[name]))
    assert sum(p.numel() for p in pipeline.parameters()) > 0
