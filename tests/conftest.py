"""Shared fixtures: tiny configs on the CPU, seeded generators, small synthetic pairs.

Never reads outside the repository.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fusion_core.config import PRESETS, FusionConfig, FusionHeadConfig, UNetConfig
from fusion_core.models.dgd_fusion import DGDFusionModel
from fusion_core.pipeline import FusionPipeline

TINY_UNET = {"channels": (4, 8, 8, 8), "space_to_depth": 2, "time_embed_dim": 16, "norm_groups": 2}
TINY_HEAD = {"channels": 8, "num_heads": 2, "time_embed_dim": 16}


def tiny(config: FusionConfig) -> FusionConfig:
    """The same variant (DFE/GFS/GLSA switches, experts) at test size."""
    return dataclasses.replace(config, unet=dataclasses.replace(config.unet, **TINY_UNET),
                               head=dataclasses.replace(config.head, **TINY_HEAD))


@pytest.fixture
def tiny_config() -> FusionConfig:
    return FusionConfig(name="tiny", unet=UNetConfig(num_experts=3, **TINY_UNET), head=FusionHeadConfig(**TINY_HEAD))


@pytest.fixture
def tiny_pipeline(tiny_config: FusionConfig) -> FusionPipeline:
    """Random weights, with the head's zero-initialised last convolution moved off zero: an untrained head
    returns the plain average of the sources, which would hide the UNet's features and the noise seed."""
    torch.manual_seed(0)
    pipeline = FusionPipeline(DGDFusionModel(tiny_config)).eval()
    last = pipeline.head.reconstruct[-1]
    with torch.no_grad():
        last.weight.normal_(std=0.1)
        last.bias.normal_(std=0.1)
    return pipeline


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def make_pair(rng: np.random.Generator, height: int, width: int, colour: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A gray uint8 A and a uint8 B (RGB or gray) with some structure."""
    y, x = np.mgrid[0:height, 0:width]
    a = (127 + 100 * np.sin(x / 3.0) * np.cos(y / 5.0) + rng.normal(0, 10, (height, width))).clip(0, 255)
    b = rng.integers(0, 256, (height, width, 3) if colour else (height, width))
    return a.astype(np.uint8), b.astype(np.uint8)


ALL_PRESETS = sorted(PRESETS)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a 2-core machine busy with other work, idle threads
    spinning at barriers made single tests take seconds instead of milliseconds."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
