"""DGD-Fusion: dynamic gating diffusion denoising and cross-layer attention multimodal image fusion.

Paper: Di, Huo, Wang, Liu, Lian, J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
Public API: re-exports only.
"""

from .baselines import BASELINES
from .checkpoint import CheckpointError, load_pipeline, save_pipeline
from .color import replace_luma
from .config import PRESETS, DiffusionConfig, FusionConfig, FusionHeadConfig, LossConfig, TrainConfig, UNetConfig
from .data import PairDataset, find_pairs
from .evaluate import EvaluationResult, evaluate_folder, format_markdown_table, pipeline_method
from .imaging import (
    WINDOW_PRESETS,
    DicomSummary,
    ImageLoadError,
    LoadedImage,
    LoadedPair,
    read_image,
    read_pair,
    to_uint8,
    write_dicom_secondary_capture,
    write_png,
    write_tiff16,
)
from .metrics import CONVENTIONS, METRICS, PAPER_METRICS, MetricsReport, compute_metrics
from .pipeline import FusionPipeline, FusionResult, Intermediates, build_pipeline
from .train import TrainProgress, TrainResult, hardware_description, setup_distributed, train

__all__ = [
    "BASELINES",
    "CONVENTIONS",
    "METRICS",
    "PAPER_METRICS",
    "PRESETS",
    "WINDOW_PRESETS",
    "CheckpointError",
    "DicomSummary",
    "DiffusionConfig",
    "EvaluationResult",
    "FusionConfig",
    "FusionHeadConfig",
    "FusionPipeline",
    "FusionResult",
    "ImageLoadError",
    "Intermediates",
    "LoadedImage",
    "LoadedPair",
    "LossConfig",
    "MetricsReport",
    "PairDataset",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "UNetConfig",
    "build_pipeline",
    "compute_metrics",
    "evaluate_folder",
    "find_pairs",
    "format_markdown_table",
    "hardware_description",
    "load_pipeline",
    "pipeline_method",
    "read_image",
    "read_pair",
    "replace_luma",
    "save_pipeline",
    "setup_distributed",
    "to_uint8",
    "train",
    "write_dicom_secondary_capture",
    "write_png",
    "write_tiff16",
]
