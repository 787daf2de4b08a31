"""The network's share of a request, on the accelerator when there is one.

On a Hugging Face ZeroGPU Space the ``spaces`` package exists and lends a GPU per decorated call; elsewhere the
calls run as they are. No gradio here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fusion_core import BASELINES, FusionPipeline, FusionResult, evaluate_folder, pipeline_method

try:  # Hugging Face ZeroGPU: the package exists only there, and lends a GPU per decorated call
    import spaces
except ImportError:
    spaces = None

ON_ZERO_GPU = spaces is not None


def on_accelerator(fn):
    """``spaces.GPU`` on Hugging Face ZeroGPU, where a GPU is lent per call; elsewhere ``fn`` unchanged."""
    return spaces.GPU(fn) if spaces is not None else fn


@on_accelerator
def fuse_on_device(pipeline: FusionPipeline, a: np.ndarray, b: np.ndarray, timesteps: tuple[int, ...] | None,
                   seed: int, on_tile: Callable[[int, int], None] | None = None) -> FusionResult:
    """The network's part of a fusion (the only part that wants a GPU). ``on_tile(done, total)`` is called before
    each tile's pass (a deadline's check, which raises to stop the fusion between tiles)."""
    return pipeline.fuse(a, b, feature_timesteps=timesteps, generator=torch.Generator().manual_seed(seed),
                         return_intermediates=True, on_tile=on_tile)


@on_accelerator
def evaluate_on_device(root: Path, pipeline: FusionPipeline, network: str, out_dir: Path, convention: str, progress,
                       external: dict[str, Path]):
    """Every pair of ``root`` fused by the network (named ``network``) and the baselines, scored with the
    ``external`` methods' images (``evaluate_folder``, which decodes each pair once)."""
    methods = {network: pipeline_method(pipeline), **BASELINES}
    return evaluate_folder(root, methods, out_dir, convention=convention, progress=progress, reuse=False,
                           external=external)
