"""Shared fixtures: tiny configs on the CPU, seeded generators, small synthetic pairs.

Never reads outside the repository.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client import Client
from PIL import Image

import app
from app_support import free_port
from fusion_app.handlers import FusionApp
from fusion_app.models import ModelStore
from fusion_app.views import Tabs, build_tabs
from fusion_core.checkpoint import save_pipeline
from fusion_core.config import PRESETS, FusionConfig, FusionHeadConfig, UNetConfig
from fusion_core.data import PairDataset
from fusion_core.imaging import write_png
from fusion_core.models.dgd_fusion import DGDFusionModel
from fusion_core.pipeline import FusionPipeline
from fusion_core.training import LOG_NAME

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


def texture(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smoothed Gaussian noise in [0, 1] (Gaussian low-pass in the frequency domain, sigma ~3 px)."""
    noise = np.random.default_rng(seed).standard_normal(shape)
    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]
    smooth = np.fft.ifft2(np.fft.fft2(noise) * np.exp(-(fy**2 + fx**2) / (2 * 0.05**2))).real
    return ((smooth - smooth.min()) / np.ptp(smooth)).astype(np.float32)


def write_dataset(root: Path, sizes=((40, 48), (36, 36), (48, 40)), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for index, (height, width) in enumerate(sizes):
        for folder, shape in (("ir", (height, width)), ("vi", (height, width, 3))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            write_png(root / folder / f"{index:03d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")


@pytest.fixture
def dataset(data_dir) -> PairDataset:
    return PairDataset.from_folder(data_dir)


@pytest.fixture
def restore_sigint():
    """The train command installs a SIGINT handler; give pytest its own back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def seeded_model(config: FusionConfig, seed: int = 0) -> DGDFusionModel:
    torch.manual_seed(seed)
    return DGDFusionModel(config)


def assert_same_weights(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor], what: object = "") -> None:
    assert left.keys() == right.keys()
    different = [name for name in left if not torch.equal(left[name].cpu(), right[name].cpu())]
    assert not different, what


def train_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]


SIZE = 64  # two strides of the tiny config; 64 x 64 x 3 samples leave room for > 4096 distinct 16-bit levels


def pair_pixels(seed: int, colour: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A gray A and a B (RGB or gray) with structure, texture and a mid-range colour, uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    a = 0.5 + 0.35 * np.sin(9 * x) * np.cos(7 * y) + 0.05 * rng.standard_normal((SIZE, SIZE))
    b = np.stack([0.5 + 0.3 * np.cos(6 * x + c) * np.sin(8 * y) for c in range(3)], axis=-1)
    b = b + 0.05 * rng.standard_normal(b.shape)
    b = b if colour else b.mean(axis=-1)
    return (np.clip(a, 0, 1) * 255).astype(np.uint8), (np.clip(b, 0, 1) * 255).astype(np.uint8)


def write_pairs(root: Path, names: tuple[str, ...], colour: bool = True) -> Path:
    for seed, name in enumerate(names):
        a, b = pair_pixels(seed, colour)
        for folder, pixels in (("ir", a), ("vi", b)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / folder / f"{name}.png")
    return root


@pytest.fixture
def checkpoint(tmp_path, tiny_pipeline) -> Path:
    return save_pipeline(tmp_path / "checkpoint", tiny_pipeline)


# ---------------------------------------------------------------- the app's, for every test_app_* file


@pytest.fixture(scope="module")
def fusion_app(tmp_path_factory) -> FusionApp:
    root = tmp_path_factory.mktemp("app")
    return FusionApp(ModelStore(root / "no-checkpoints", fallback_preset="tiny"), root / "work", poll_seconds=0.1)


@pytest.fixture(scope="module")
def tabs(fusion_app) -> Tabs:
    """The components the handlers name (in a Blocks that is never launched)."""
    with gr.Blocks():
        return build_tabs(fusion_app)


@pytest.fixture(scope="module")
def client(fusion_app, tmp_path_factory):
    demo = app.build_demo(fusion_app)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                **app.LAUNCH_OPTIONS)
    yield Client(demo.local_url, verbose=False, analytics_enabled=False,
                 download_files=str(tmp_path_factory.mktemp("downloads")))
    demo.close()


@pytest.fixture
def refusing_app(tmp_path) -> FusionApp:
    """An app of its own, so that its work folder shows what a refused evaluation left."""
    return FusionApp(ModelStore(tmp_path / "no-checkpoints", fallback_preset="tiny"), tmp_path / "work")
