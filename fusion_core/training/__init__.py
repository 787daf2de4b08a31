"""Training of DGD-Fusion: the stage loop (loop.py), a run's stages in turn (run.py), the training checkpoint
(state.py) and the provenance saved with it and rendered into its model card (provenance.py)."""

from .loop import LOG_NAME, PREVIEW_SIZE, TrainProgress, TrainResult, inference_mode, step_seed, train
from .provenance import PROVENANCE_NAME, Origin, Provenance, StageRecord, hardware_description, model_card
from .run import PreparedRun, StageProgress, TrainRequest, prepare_run, run_stages, steps_for_minutes
from .state import OPTIMIZER_NAME, STATE_NAME, ResumePoint, read_provenance, read_train_state, save_training_checkpoint

__all__ = [
    "LOG_NAME",
    "OPTIMIZER_NAME",
    "PREVIEW_SIZE",
    "PROVENANCE_NAME",
    "STATE_NAME",
    "Origin",
    "PreparedRun",
    "Provenance",
    "ResumePoint",
    "StageProgress",
    "StageRecord",
    "TrainProgress",
    "TrainRequest",
    "TrainResult",
    "hardware_description",
    "inference_mode",
    "model_card",
    "prepare_run",
    "read_provenance",
    "read_train_state",
    "run_stages",
    "save_training_checkpoint",
    "step_seed",
    "steps_for_minutes",
    "train",
]
