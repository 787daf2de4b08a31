"""cost.py: the parameter count is the built network's for every preset and for tiny variants of each module's
switches; the memory estimates scale as stated; the budgets admit every preset and refuse, before anything is
built, the configurations that exhausted the machine."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from conftest import ALL_PRESETS, TINY_HEAD, TINY_UNET, tiny
from fusion_core import cost
from fusion_core.config import PRESETS, FusionConfig, FusionHeadConfig, TrainConfig, UNetConfig
from fusion_core.models import unet as unet_module
from fusion_core.models.dgd_fusion import DGDFusionModel


def _built_parameters(config: FusionConfig) -> int:
    return sum(p.numel() for p in DGDFusionModel(config).parameters())


def _tiny(unet: dict | None = None, head: dict | None = None) -> FusionConfig:
    return FusionConfig(name="t", unet=UNetConfig(**{**TINY_UNET, **(unet or {})}),
                        head=FusionHeadConfig(**{**TINY_HEAD, **(head or {})}))


TINY_VARIANTS = {
    **{f"{name} at test size": tiny(PRESETS[name]) for name in ("DFE+GCFS", "DFE+GLSA", "GCFS+GLSA", "dgd-general")},
    "two stages, uneven widths": _tiny({"channels": (6, 10), "norm_groups": 3}),
    "kernel 5, 2 experts, 2 input channels": _tiny({"kernel_size": 5, "num_experts": 2, "in_channels": 2}),
    "no DFE, no GFS, space_to_depth 1": _tiny({"use_dfe": False, "use_gfs": False, "space_to_depth": 1}),
    "intensity head, odd expansion, stride 3": _tiny(head={"output": "intensity", "ffn_expansion": 1.3,
                                                           "head_downsample": 3, "channels": 12, "num_heads": 3}),
    "one feature timestep, 4 heads": _tiny(head={"feature_timesteps": (7,), "channels": 16, "num_heads": 4}),
}


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_parameter_count_is_the_built_networks_for_every_preset(name):
    assert cost.parameter_count(PRESETS[name]) == _built_parameters(PRESETS[name])


@pytest.mark.parametrize("name", TINY_VARIANTS)
def test_parameter_count_is_the_built_networks_for_tiny_variants(name):
    config = TINY_VARIANTS[name]
    assert cost.parameter_count(config) == _built_parameters(config)


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_every_preset_and_its_default_training_run_are_well_inside_the_budgets(name):
    config, run = PRESETS[name], TrainConfig()
    assert cost.parameter_count(config) <= cost.MAX_PARAMETERS / 3
    assert cost.inference_bytes(config) <= cost.MAX_INFERENCE_BYTES / 3
    for stage in (1, 2):
        assert cost.training_bytes(config, stage, run.crop, run.batch_size) <= cost.MAX_TRAINING_BYTES / 3


def test_the_refusal_quotes_the_widest_preset_correctly():
    widest = max(cost.parameter_count(config) for config in PRESETS.values())
    assert cost.describe_size(widest, "").startswith("27") and "at most 27 M" in _refusal(unet={"channels": (512,) * 4})


def test_activation_estimates_grow_with_the_pixels_and_the_batch():
    config = PRESETS["cpu"]
    assert cost.inference_bytes(config, 2048) == pytest.approx(4 * cost.inference_bytes(config, 1024), rel=0.01)
    fixed = cost.training_bytes(config, 2, 128, 0)  # weights, gradients, Adam moments
    assert fixed == 4 * cost.FLOAT_BYTES * cost.parameter_count(config)
    assert cost.training_bytes(config, 2, 128, 8) - fixed == pytest.approx(
        8 * (cost.training_bytes(config, 2, 128, 1) - fixed), rel=1e-9)
    assert cost.training_bytes(config, 2, 128, 8, tune_gates=True) > cost.training_bytes(config, 2, 128, 8)


def _refusal(unet: dict | None = None, head: dict | None = None) -> str:
    with pytest.raises(ValueError) as error:
        FusionConfig(unet=UNetConfig(**(unet or {})), head=FusionHeadConfig(**(head or {})))
    return str(error.value)


@pytest.fixture
def nothing_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network was built")
    monkeypatch.setattr(unet_module.DenoisingUNet, "__init__", refuse)


@pytest.mark.parametrize("unet, parameters", [
    ({"channels": (4096,) * 4}, "about 10.6 G parameters (42.2 GB)"),
    ({"channels": (4096,) * 8, "num_experts": 64, "kernel_size": 15}, "about 3.88 T parameters (15.5 TB)"),
])
def test_configs_that_exhausted_the_machine_are_refused_in_one_line_with_the_estimate(unet, parameters,
                                                                                     nothing_built):
    message = _refusal(unet=unet)
    widths = ", ".join(str(w) for w in unet["channels"])
    assert message.startswith(f"unet.channels [{widths}], head.channels 16: {parameters}, more than the 100 M")
    assert "\n" not in message


def test_a_config_beyond_the_activation_budget_is_refused_with_its_estimate(nothing_built):
    unet = {"channels": (64, 128, 256, 256), "space_to_depth": 1}
    head = {"channels": 512, "num_heads": 4, "head_downsample": 1}
    fields = SimpleNamespace(unet=UNetConfig(**unet), head=FusionHeadConfig(**head))  # cost reads fields alone
    needed = cost.inference_bytes(fields)
    assert cost.parameter_count(fields) < cost.MAX_PARAMETERS and needed > cost.MAX_INFERENCE_BYTES
    message = _refusal(unet=unet, head=head)
    assert re.search(rf"fusing one 1024x1024 tile needs about {cost.describe_size(needed, 'B')} of activations, "
                     r"more than the 32 GB", message)


def test_a_training_step_beyond_the_memory_budget_is_refused_with_the_batch_that_fits():
    config = PRESETS["gpu"]
    with pytest.raises(ValueError) as error:
        cost.check_training_budget(config, 2, 256, 256)
    needed = cost.training_bytes(config, 2, 256, 256)
    fits = cost.training_bytes(config, 2, 256, 19)
    assert fits <= cost.MAX_TRAINING_BYTES < cost.training_bytes(config, 2, 256, 20)
    assert str(error.value) == (f"batch 256 of 256x256 crops: a stage-2 step of 'gpu' needs about "
                                f"{cost.describe_size(needed, 'B')}, more than the 64 GB this project allows; "
                                "use at most batch 19")
    cost.check_training_budget(config, 2, 256, 19)


@pytest.mark.parametrize("count, unit, text", [(950, "", "950"), (1_771_255, "", "1.77 M"), (3.26e9, "B", "3.26 GB"),
                                               (2e12, "B", "2 TB")])
def test_sizes_read_as_people_write_them(count, unit, text):
    assert cost.describe_size(count, unit) == text
