"""DGD-Fusion: dynamic gating diffusion denoising and cross-layer attention multimodal image fusion.

Paper: Di, Huo, Wang, Liu, Lian, J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
Public API: re-exports only.
"""

from .baselines import BASELINES
from .checkpoint import (
    CHECKPOINT_ROOT,
    DEFAULT_CHECKPOINT,
    CheckpointError,
    load_model,
    load_pipeline,
    save_model,
    save_pipeline,
)
from .color import replace_luma
from .config import (
    PRESETS,
    DiffusionConfig,
    FusionConfig,
    FusionHeadConfig,
    LossConfig,
    TrainConfig,
    UNetConfig,
    check_seed,
    parse_timesteps,
)
from .data import PairDataset, find_pairs
from .distributed import setup_distributed
from .evaluate import (
    EvaluationResult,
    evaluate_folder,
    format_markdown_table,
    fuse_methods,
    pipeline_method,
    score_methods,
)
from .folder_fusion import FolderFusionResult, PairFailure, fuse_folder
from .imaging import (
    WINDOW_PRESETS,
    DicomSummary,
    ImageLoadError,
    ImageTooLargeError,
    LoadedImage,
    LoadedPair,
    fused_format,
    read_image,
    read_pair,
    to_uint8,
    write_dicom_secondary_capture,
    write_fused,
    write_png,
    write_tiff16,
)
from .metrics import CONVENTIONS, METRICS, PAPER_METRICS, MetricsReport, compute_metrics
from .models.dgd_fusion import DGDFusionModel, build_model
from .pipeline import FusionPipeline, FusionResult, Intermediates, build_pipeline
from .training import (
    Origin,
    Provenance,
    TrainProgress,
    TrainResult,
    hardware_description,
    model_card,
    run_stages,
    train,
)

__all__ = [
    "BASELINES",
    "CHECKPOINT_ROOT",
    "CONVENTIONS",
    "DEFAULT_CHECKPOINT",
    "METRICS",
    "PAPER_METRICS",
    "PRESETS",
    "WINDOW_PRESETS",
    "CheckpointError",
    "DGDFusionModel",
    "DicomSummary",
    "DiffusionConfig",
    "EvaluationResult",
    "FolderFusionResult",
    "FusionConfig",
    "FusionHeadConfig",
    "FusionPipeline",
    "FusionResult",
    "ImageLoadError",
    "ImageTooLargeError",
    "Intermediates",
    "LoadedImage",
    "LoadedPair",
    "LossConfig",
    "MetricsReport",
    "Origin",
    "PairDataset",
    "PairFailure",
    "Provenance",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "UNetConfig",
    "build_model",
    "build_pipeline",
    "check_seed",
    "compute_metrics",
    "evaluate_folder",
    "find_pairs",
    "format_markdown_table",
    "fuse_folder",
    "fuse_methods",
    "fused_format",
    "hardware_description",
    "load_model",
    "load_pipeline",
    "model_card",
    "parse_timesteps",
    "pipeline_method",
    "read_image",
    "read_pair",
    "replace_luma",
    "run_stages",
    "save_model",
    "save_pipeline",
    "score_methods",
    "setup_distributed",
    "to_uint8",
    "train",
    "write_dicom_secondary_capture",
    "write_fused",
    "write_png",
    "write_tiff16",
]
