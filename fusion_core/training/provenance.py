"""Where a checkpoint's weights came from, stored as data beside them, and the one model-card writer.

``provenance.json`` is part of every checkpoint a training run saves (written atomically with the weights
through ``checkpoint.save_model``), as nanoGPT keeps ``model_args``, ``iter_num`` and ``config`` in its
checkpoint. A resumed run reads it back as data and goes on recording; ``MODEL_CARD.md`` is rendered from it
by ``model_card`` and never parsed.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field, replace

import torch

from ..config import TrainConfig

PROVENANCE_NAME = "provenance.json"


def hardware_description() -> str:
    """e.g. 'NVIDIA H100 80GB HBM3' or 'CPU x86_64, 2 cores'."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.machine()}, {os.cpu_count()} cores"


@dataclass(frozen=True)
class Origin:
    """Where one part's weights started: drawn at random from ``seed`` for the architecture of ``preset``, or
    copied from ``checkpoint``."""

    seed: int | None = None
    checkpoint: str | None = None
    preset: str | None = None

    def describe(self) -> str:
        if self.checkpoint is not None:
            return f"`{self.checkpoint}`"
        architecture = f" of the `{self.preset}` preset" if self.preset is not None else ""
        return f"random weights{architecture}" + (f" (seed {self.seed})" if self.seed is not None else "")


@dataclass(frozen=True)
class StageRecord:
    """One stage of a run: the steps reached of those planned, its settings and its training seconds."""

    stage: int
    step: int
    steps: int
    batch_size: int
    processes: int
    crop: int
    lr: float
    seed: int
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class Provenance:
    """A training run's origin and history, as data.

    Attributes:
        title: the card's heading.
        unet, head: where each part's weights started.
        data: the training folders; pairs: how many pairs they held.
        stages: one record per stage trained, in order.
        resumed: how many times the run was resumed from its checkpoint.
        command: the command line that started it ("" for a run started from Python or the app).
        notes: further lines for the card.
    """

    title: str
    unet: Origin
    head: Origin
    data: tuple[str, ...] = ()
    pairs: int = 0
    stages: tuple[StageRecord, ...] = ()
    resumed: int = 0
    hardware: str = field(default_factory=hardware_description)
    command: str = ""
    notes: tuple[str, ...] = ()

    def with_stage(self, config: TrainConfig, processes: int, step: int, wall_seconds: float) -> Provenance:
        """This record with ``config.stage``'s entry set to the step reached and its training seconds."""
        record = StageRecord(config.stage, step, config.steps, config.batch_size, processes, config.crop,
                             config.lr, config.seed, wall_seconds)
        kept = tuple(s for s in self.stages if s.stage < config.stage)
        return replace(self, stages=(*kept, record), hardware=hardware_description())

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Provenance:
        data = json.loads(raw)
        return cls(**{**data, "unet": Origin(**data["unet"]), "head": Origin(**data["head"]),
                      "data": tuple(data["data"]), "notes": tuple(data["notes"]),
                      "stages": tuple(StageRecord(**s) for s in data["stages"])})


def model_card(provenance: Provenance) -> str:
    """MODEL_CARD.md of a trained checkpoint, rendered from its provenance: the one card writer."""
    p = provenance
    resumed = " (resumed)" if p.resumed else ""
    lines = [f"# {p.title}", ""]
    if p.data:
        lines.append(f"- data: {', '.join(f'`{root}`' for root in p.data)} ({p.pairs} pairs)")
    lines.append(f"- initialised from: {p.unet.describe()}{resumed}")
    lines.append(f"- fusion head from: {p.head.describe()}")
    for s in p.stages:
        lines.append(f"- stage {s.stage}: {s.step} of {s.steps} steps, batch {s.batch_size} x {s.processes} "
                     f"process(es), crop {s.crop}, Adam lr {s.lr}, seed {s.seed}, "
                     f"{s.wall_seconds / 60:.1f} min of training")
    seeds = sorted({s.seed for s in p.stages} | {o.seed for o in (p.unet, p.head) if o.seed is not None})
    if seeds:
        lines.append(f"- seed: `train.seed` = {', '.join(map(str, seeds))} (the random initial weights, the crops, "
                     "flips and noise)")
    lines.append(f"- hardware: {p.hardware}")
    if p.command:
        lines.append(f"- command: `{p.command}`")
    lines += [f"- {note}" for note in p.notes]
    lines.append(f"- the same as data: {PROVENANCE_NAME}")
    return "\n".join(lines) + "\n"
