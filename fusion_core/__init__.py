"""DGD-Fusion: dynamic gating diffusion denoising and cross-layer attention multimodal image fusion.

Paper: Di, Huo, Wang, Liu, Lian, J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
Public API: re-exports only.
"""

from .checkpoint import CheckpointError, load_pipeline, save_pipeline
from .config import PRESETS, DiffusionConfig, FusionConfig, FusionHeadConfig, LossConfig, TrainConfig, UNetConfig
from .pipeline import FusionPipeline, FusionResult, build_pipeline

__all__ = [
    "PRESETS",
    "CheckpointError",
    "DiffusionConfig",
    "FusionConfig",
    "FusionHeadConfig",
    "FusionPipeline",
    "FusionResult",
    "LossConfig",
    "TrainConfig",
    "UNetConfig",
    "build_pipeline",
    "load_pipeline",
    "save_pipeline",
]
