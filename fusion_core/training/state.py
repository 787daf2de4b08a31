"""A training checkpoint: the model's folder (checkpoint.py) plus optimiser state, training state and provenance.

All of it is one atomic unit (``checkpoint.save_model`` stages and commits every file together), so a run
killed at any moment resumes from the last checkpoint as a whole. ``ResumePoint.read`` reads a folder once:
config and weights, training state, optimiser state and provenance; the caller builds its network from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load, save

from ..checkpoint import CheckpointError, is_checkpoint, read_checkpoint_file, read_model, save_model
from ..config import FusionConfig, TrainConfig
from ..models.dgd_fusion import DGDFusionModel
from .provenance import PROVENANCE_NAME, Provenance, hardware_description, model_card

STATE_NAME = "train_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"


@dataclass
class ResumePoint:
    """Where a run goes on from: a checkpoint folder read once, or the stage a run has just finished.

    Attributes:
        stage: the stage the checkpoint was saved in (None: no training state).
        step: its step within that stage.
        wall_seconds: training seconds of that stage so far.
        config, weights: the network's config and weights (None when the caller's network already holds them).
        param_groups, optimizer: the optimiser's groups and flat state tensors ("index.name" -> tensor).
        provenance: the run's provenance (None: a folder saved without one).
    """

    stage: int | None = None
    step: int = 0
    wall_seconds: float = 0.0
    config: FusionConfig | None = None
    weights: dict[str, torch.Tensor] | None = None
    param_groups: list[dict] | None = None
    optimizer: dict[str, torch.Tensor] = field(default_factory=dict)
    provenance: Provenance | None = None

    @classmethod
    def read(cls, out_dir: str | os.PathLike) -> ResumePoint | None:
        """Everything a resumed run needs from ``out_dir``, each file read once; None when it holds no checkpoint."""
        if not is_checkpoint(out_dir):
            return None
        config, weights = read_model(out_dir)
        state = read_train_state(out_dir)
        raw = read_checkpoint_file(out_dir, PROVENANCE_NAME)
        optimizer: dict[str, torch.Tensor] = {}
        if state:
            raw_optimizer = read_checkpoint_file(out_dir, OPTIMIZER_NAME)
            if raw_optimizer is None:
                raise CheckpointError(f"{out_dir} has {STATE_NAME} but no {OPTIMIZER_NAME}; resuming needs both")
            optimizer = load(raw_optimizer)
        return cls(stage=state.get("stage"), step=int(state.get("step", 0)),
                   wall_seconds=float(state.get("wall_seconds", 0.0)), config=config, weights=weights,
                   param_groups=state.get("param_groups"), optimizer=optimizer,
                   provenance=Provenance.from_json(raw) if raw is not None else None)

    def optimizer_state(self, device: torch.device) -> dict:
        """The optimiser state dict rebuilt from flat safetensors (no pickle) and the groups in the JSON state."""
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in self.optimizer.items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value.to(device)
        return {"state": state, "param_groups": self.param_groups}


def save_training_checkpoint(model: DGDFusionModel, optimizer: torch.optim.Optimizer, config: TrainConfig,
                             out_dir: Path, step: int, wall: float, provenance: Provenance) -> Path:
    """Weights, optimiser state, training state, provenance and the card rendered from it, as one checkpoint."""
    optimizer_state = optimizer.state_dict()
    tensors = {f"{index}.{name}": torch.as_tensor(value).detach().cpu().contiguous()
               for index, entries in optimizer_state["state"].items() for name, value in entries.items()}
    state = {"stage": config.stage, "step": step, "wall_seconds": wall, "train_config": asdict(config),
             "hardware": hardware_description(), "param_groups": optimizer_state["param_groups"]}
    extras = {PROVENANCE_NAME: provenance.to_json(), OPTIMIZER_NAME: save(tensors),
              STATE_NAME: (json.dumps(state, indent=2) + "\n").encode()}
    return save_model(out_dir, model, model_card(provenance), extras)


def read_train_state(out_dir: str | os.PathLike) -> dict:
    """The training state of a checkpoint folder ({} when there is none): stage, step, wall_seconds, ..."""
    raw = read_checkpoint_file(out_dir, STATE_NAME)
    return json.loads(raw) if raw is not None else {}


def read_provenance(out_dir: str | os.PathLike) -> Provenance | None:
    """The provenance saved with a checkpoint folder (None when it has none)."""
    raw = read_checkpoint_file(out_dir, PROVENANCE_NAME)
    return Provenance.from_json(raw) if raw is not None else None
