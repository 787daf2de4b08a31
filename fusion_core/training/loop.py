"""The stage loop of DGD-Fusion training (docs/design.md §2.1, §2.7; paper §2.1.1), on one CPU or many GPUs.

Stage 1 trains the denoising UNet with the diffusion loss; stage 2 freezes it and trains the fusion head
with the unsupervised fusion loss (optionally with the UNet's GFS gates, ``TrainConfig.gate_lr``). Both call
``DGDFusionModel`` and ``GaussianDiffusion`` directly, never the inference pipeline. Adam, lr 1e-4 (the
paper). Everything random in step s (which pairs, where they are cropped, the flips, the timesteps, the
noise and the dropout masks) comes from a generator seeded with (seed, step, rank), so a resumed run
continues exactly where it stopped.

A checkpoint (weights, optimiser state, step, provenance) is one atomic unit (checkpoint.py): a run killed
at any moment, even in the middle of a save, resumes from the last checkpoint as a whole and ends
bit-identical to a run never stopped. The log ``train_log.jsonl`` is appended to at every ``log_every``
steps; a resumed run first drops the lines it is about to write again (those after its checkpoint's step),
so the log holds each step once. A step's validation line is written before that step's checkpoint, so a
kill loses none. A stop request saves and returns. Under torchrun the trained module is wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA); only rank 0 writes. Losses are read back from the
device (a host sync) only when they are logged or reported.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import load_weights
from ..color import LUMA_WEIGHTS
from ..config import TrainConfig
from ..data import PairDataset
from ..diffusion import GaussianDiffusion
from ..distributed import DistributedContext
from ..imaging import write_png
from ..losses import FusionLoss
from ..models.dgd_fusion import DGDFusionModel
from ..pipeline import FusionPipeline
from ..validation import ValidationSet
from .provenance import Origin, Provenance
from .state import ResumePoint, save_training_checkpoint

LOG_NAME = "train_log.jsonl"
PREVIEW_SIZE = 256


@dataclass(frozen=True)
class TrainProgress:
    """What the progress callback receives: every ``log_every`` steps, at checkpoints and at the end."""

    stage: int
    step: int
    total_steps: int
    losses: dict[str, float]
    crops_per_second: float
    eta_seconds: float
    preview: np.ndarray | None = None
    checkpoint: Path | None = None
    validation: float | None = None  # the network's mean rank on the validation pairs, when just measured


@dataclass(frozen=True)
class TrainResult:
    """How a call to ``train`` ended."""

    out_dir: Path
    stage: int
    step: int
    stopped: bool
    wall_seconds: float
    crops_per_second: float
    losses: dict[str, float] = field(default_factory=dict)
    provenance: Provenance | None = None  # as saved with the last checkpoint


def train(model: DGDFusionModel, dataset: PairDataset, config: TrainConfig, out_dir: str | os.PathLike, *,
          resume: bool | ResumePoint = False, progress: Callable[[TrainProgress], None] | None = None,
          stop: threading.Event | None = None, context: DistributedContext | None = None,
          provenance: Provenance | None = None, validation: ValidationSet | None = None) -> TrainResult:
    """Train stage ``config.stage`` of ``model`` in place, checkpointing to ``out_dir``.

    Args:
        resume: True: continue from the checkpoint in ``out_dir`` (same stage: from its step; an earlier
            stage: its weights, from step 0), read here. A ``ResumePoint``: the same from a point the caller
            has read already (its weights, when it carries them, are copied in; nothing is read again).
            Either way the log lines this run will write again are dropped first.
        progress: called with a TrainProgress every ``config.log_every`` steps.
        stop: when set, the run saves a checkpoint and returns with ``stopped=True``.
        provenance: where the weights came from, saved with every checkpoint and rendered into its card
            (default: the point's, else random weights of the config).
        validation: pairs on which stage 2 logs the network's mean rank against the classical baselines
            at step 0 and every ``config.validate_every`` steps (the time it takes is not training time).
    """
    context = context or DistributedContext()
    out_dir = Path(out_dir)
    point = ResumePoint.read(out_dir) if resume is True else (resume or None)
    model.to(context.device)
    optimizer = torch.optim.Adam(_trainable(model, config))
    start_step, elapsed = _restore(model, optimizer, config, point, out_dir, context.device)
    if resume is not False and context.is_main:
        _drop_log_lines_after(out_dir, config.stage, start_step)
    provenance = provenance or (point and point.provenance) or Provenance(
        f"DGD-Fusion checkpoint ({model.config.name})", Origin(), Origin())
    _broadcast_weights(model, context)
    diffusion = GaussianDiffusion(model.config.diffusion).to(context.device)
    run = _StepRunner(model, diffusion, _wrap(model.unet if config.stage == 1 else model, context), dataset,
                      config, context)
    clock = _TrainingClock(elapsed)
    pipeline = FusionPipeline(model, diffusion)  # previews and validation only: inference
    record = _Recorder(pipeline, dataset, config, out_dir, optimizer, provenance, context.world_size, clock)
    validate = _Validator(pipeline, validation, config, out_dir, clock) if context.is_main else None
    losses: dict[str, torch.Tensor] = {}
    step = start_step
    if validate is not None and step == 0:
        validate(step)
    while step < config.steps and not (stop is not None and stop.is_set()):
        losses = run.step(optimizer, step)
        step += 1
        if not context.is_main:
            continue
        report = record.report(step, start_step, losses)  # the losses leave the device only when due
        if validate is not None and (step % max(config.validate_every, 1) == 0 or step == config.steps):
            rank = validate(step)  # logged before this step's checkpoint
            if rank is not None:
                report = replace(report or record.report(step, start_step, losses, due=True), validation=rank)
        report = record.periodic(report, step, start_step, losses)
        if progress is not None and report is not None:
            progress(report)
    if context.is_main:
        record.save(step)
    model.eval()
    speed = (step - start_step) * config.batch_size * context.world_size / max(clock.this_run(), 1e-9)
    floats = {name: float(value) for name, value in losses.items()}
    return TrainResult(out_dir, config.stage, step, step < config.steps, clock.total(), speed, floats,
                       record.provenance)


def _trainable(model: DGDFusionModel, config: TrainConfig) -> list[dict]:
    """Set train/eval modes and requires_grad for ``config``'s stage; the optimiser's parameter groups.

    Stage 1: the UNet. Stage 2: the head, plus the GFS gate parameters at ``config.gate_lr`` when it is
    positive (the UNet stays in eval mode either way: no dropout in the features the head reads).
    """
    trained = model.unet if config.stage == 1 else model.head
    frozen = model.head if config.stage == 1 else model.unet
    frozen.requires_grad_(False).eval()
    trained.requires_grad_(True).train()
    groups = [{"params": list(trained.parameters()), "lr": config.lr}]
    if config.stage == 2 and config.gate_lr > 0:
        gates = model.unet.gate_parameters()
        for parameter in gates:
            parameter.requires_grad_(True)
        groups.append({"params": gates, "lr": config.gate_lr})
    return groups


def _restore(model: DGDFusionModel, optimizer: torch.optim.Optimizer, config: TrainConfig,
             point: ResumePoint | None, out_dir: Path, device: torch.device) -> tuple[int, float]:
    """Take weights (and, for the same stage, optimiser state and step) from ``point``; nothing is read.
    Returns (start step, training seconds so far)."""
    if point is None:
        return 0, 0.0
    if point.weights is not None:
        load_weights(model, point.weights, out_dir)
        model.to(device)
    if point.stage != config.stage or point.param_groups is None:
        return 0, 0.0
    optimizer.load_state_dict(point.optimizer_state(device))
    return point.step, point.wall_seconds


class _TrainingClock:
    """Training seconds: those of earlier runs plus this run's, without the time spent validating."""

    def __init__(self, earlier: float):
        self.earlier, self.began, self.paused = earlier, time.perf_counter(), 0.0

    def this_run(self) -> float:
        return time.perf_counter() - self.began - self.paused

    def total(self) -> float:
        return self.earlier + self.this_run()


class _StepRunner:
    """One optimisation step of either stage, all randomness from the per-step generator."""

    def __init__(self, model: DGDFusionModel, diffusion: GaussianDiffusion, wrapped: nn.Module,
                 dataset: PairDataset, config: TrainConfig, context: DistributedContext):
        self.model, self.diffusion, self.wrapped, self.dataset = model, diffusion, wrapped, dataset
        self.config, self.context = config, context
        self.loss = FusionLoss(model.config.loss)
        self.luma = torch.tensor(LUMA_WEIGHTS, device=context.device)[None, :, None, None]  # (1, 3, 1, 1)

    def step(self, optimizer: torch.optim.Optimizer, step: int) -> dict[str, torch.Tensor]:
        """One step; returns the detached losses, still on the device."""
        c, ctx = self.config, self.context
        generator = torch.Generator().manual_seed(step_seed(c.seed, step, ctx.rank))
        indices = torch.randint(len(self.dataset), (c.batch_size,), generator=generator).tolist()
        a, b = self.dataset.crop_batch(indices, c.crop, generator)
        a, b = a.to(ctx.device), b.to(ctx.device)
        with torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16, enabled=ctx.device.type == "cuda"):
            if c.stage == 1:
                losses = self._diffusion_loss(a, b, generator)
            else:
                losses = self._fusion_loss(a, b, generator)
        optimizer.zero_grad(set_to_none=True)
        losses.pop("total").backward()
        optimizer.step()
        return losses

    def _diffusion_loss(self, a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> dict:
        x0 = torch.cat([a, b], dim=1) * 2 - 1  # (B, 4, c, c) in [-1, 1]
        t = torch.randint(0, self.diffusion.num_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        unet = partial(self.wrapped, generator=generator)  # dropout masks from the step's generator
        loss = self.diffusion.training_loss(unet, x0, t, noise)
        return {"total": loss, "diffusion": loss.detach()}

    def _fusion_loss(self, a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> dict:
        timesteps = _jitter(self.model.config.head.feature_timesteps, self.config.timestep_jitter,
                            self.diffusion.num_timesteps, generator)
        x0 = torch.cat([a, b], dim=1) * 2 - 1
        y_b = (b * self.luma).sum(dim=1, keepdim=True)  # (B, 1, c, c) BT.601 luma
        noise = torch.randn((len(timesteps) * x0.shape[0], *x0.shape[1:]), generator=generator)  # (T * B, 4, c, c)
        y_fused = self.wrapped(a, y_b, x0, timesteps, self.diffusion, noise).y_fused.float()
        out = self.loss(y_fused, a, y_b)
        return {"total": out.total, "fusion": out.total.detach(), "intensity": out.intensity,
                "gradient": out.gradient, "ssim": out.ssim}


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of step ``step``'s generator on ``rank``."""
    return (seed * 1_000_003 + step) * 257 + rank


def _jitter(timesteps: tuple[int, ...], amount: float, num_timesteps: int, generator: torch.Generator
            ) -> tuple[int, ...]:
    """Each feature timestep scaled by exp(U(-amount, amount)), kept in [1, T): the head learns to read t."""
    scales = torch.exp((torch.rand(len(timesteps), generator=generator) * 2 - 1) * amount)
    scaled = (round(t * s) for t, s in zip(timesteps, scales.tolist(), strict=True))
    return tuple(int(min(max(t, 1), num_timesteps - 1)) for t in scaled)


def _broadcast_weights(model: DGDFusionModel, context: DistributedContext) -> None:
    """Give every rank rank 0's weights, the frozen module included.

    DDP only broadcasts the module it wraps, and torch seeds each process differently, so without this a
    rank would keep its own random frozen half (stage 2 from scratch: a different UNet per rank).
    """
    if context.world_size == 1:
        return
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def _wrap(module: nn.Module, context: DistributedContext) -> nn.Module:
    if context.world_size == 1:
        return module
    ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


class _Recorder:
    """Rank 0's bookkeeping after a step: progress reports, the JSON-lines log, previews and checkpoints."""

    def __init__(self, pipeline: FusionPipeline, dataset: PairDataset, config: TrainConfig, out_dir: Path,
                 optimizer: torch.optim.Optimizer, provenance: Provenance, processes: int, clock: _TrainingClock):
        self.pipeline, self.dataset, self.config, self.out_dir = pipeline, dataset, config, out_dir
        self.optimizer, self.provenance, self.processes, self.clock = optimizer, provenance, processes, clock

    def report(self, step: int, start_step: int, losses: dict[str, torch.Tensor], due: bool = False
               ) -> TrainProgress | None:
        """The step's TrainProgress when it is logged (or ``due``), else None: no host sync."""
        c = self.config
        if not (due or step % c.log_every == 0 or step == c.steps):
            return None
        speed = (step - start_step) * c.batch_size * self.processes / max(self.clock.this_run(), 1e-9)
        floats = {name: float(value) for name, value in losses.items()}  # the host sync
        return TrainProgress(c.stage, step, c.steps, floats, speed,
                             (c.steps - step) * c.batch_size * self.processes / max(speed, 1e-9))

    def periodic(self, report: TrainProgress | None, step: int, start_step: int, losses: dict[str, torch.Tensor]
                 ) -> TrainProgress | None:
        """Log, preview and checkpoint as ``config`` asks; the report to pass on (None: none due)."""
        c, changes = self.config, {}
        if report is not None and (step % c.log_every == 0 or step == c.steps):
            self.out_dir.mkdir(parents=True, exist_ok=True)
            line = {"stage": c.stage, "step": step, **report.losses, "crops_per_second": report.crops_per_second,
                    "eta_seconds": report.eta_seconds, "time": time.time()}
            with open(self.out_dir / LOG_NAME, "a") as log:
                log.write(json.dumps(line) + "\n")
        if c.preview_every and step % c.preview_every == 0:
            changes["preview"] = self._preview(step)
        if c.checkpoint_every and step % c.checkpoint_every == 0 and step < c.steps:
            changes["checkpoint"] = self.save(step)
        if "checkpoint" in changes or (changes and report is not None):  # a preview alone reports nothing
            report = replace(report or self.report(step, start_step, losses, due=True), **changes)
        return report

    def save(self, step: int) -> Path:
        self.provenance = self.provenance.with_stage(self.config, self.processes, step, self.clock.total())
        return save_training_checkpoint(self.pipeline.model, self.optimizer, self.config, self.out_dir, step,
                                        self.clock.total(), self.provenance)

    def _preview(self, step: int) -> np.ndarray:
        """Fuse the centre of the dataset's first pair with the current weights; saved under previews/."""
        a, b = self.dataset.a[0], self.dataset.b[0]
        top, left = max((a.shape[0] - PREVIEW_SIZE) // 2, 0), max((a.shape[1] - PREVIEW_SIZE) // 2, 0)
        box = np.s_[top:top + PREVIEW_SIZE, left:left + PREVIEW_SIZE]
        with inference_mode(self.pipeline.model):
            fused = self.pipeline.fuse(a[box], b[box]).fused
        (self.out_dir / "previews").mkdir(parents=True, exist_ok=True)
        write_png(self.out_dir / "previews" / f"step_{step:07d}.png", fused)
        return fused


class _Validator:
    """Rank 0's validation: score the network, log it, and keep the clock from counting it."""

    def __init__(self, pipeline: FusionPipeline, validation: ValidationSet | None, config: TrainConfig,
                 out_dir: Path, clock: _TrainingClock):
        self.pipeline, self.validation, self.config = pipeline, validation, config
        self.out_dir, self.clock = out_dir, clock

    def __call__(self, step: int) -> float | None:
        """Validate at ``step`` (stage 2 only: stage 1 has no trained head) and return the network's rank."""
        if self.validation is None or self.config.stage != 2 or self.config.validate_every <= 0:
            return None
        began = time.perf_counter()
        with inference_mode(self.pipeline.model):
            score = self.validation.score(self.pipeline)
        self.clock.paused += time.perf_counter() - began
        line = {"stage": self.config.stage, "step": step, "train_seconds": self.clock.total(),
                "validation": asdict(score), "time": time.time()}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / LOG_NAME, "a") as log:
            log.write(json.dumps(line) + "\n")
        return score.rank


@contextmanager
def inference_mode(model: DGDFusionModel):
    """Evaluation mode for the duration, then each half back in the mode it was in."""
    modes = [m.training for m in (model.unet, model.head)]
    model.eval()
    try:
        yield model
    finally:
        model.unet.train(modes[0])
        model.head.train(modes[1])


def _drop_log_lines_after(out_dir: Path, stage: int, step: int) -> None:
    """Drop the log lines a run resumed at (``stage``, ``step``) will write again, keeping each step once.

    Those are the lines after that point (of this stage or a later one) and, for a run that starts its stage
    at step 0, the stage's step-0 validation too. The log is rewritten atomically.
    """
    path = out_dir / LOG_NAME
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _logged_before(line, stage, step)]
    if len(kept) < len(lines):
        temporary = path.with_name(f".{LOG_NAME}.tmp")
        temporary.write_text("".join(kept))
        os.replace(temporary, path)


def _logged_before(line: str, stage: int, step: int) -> bool:
    try:
        logged = json.loads(line)
        position = (logged["stage"], logged["step"])
    except (ValueError, KeyError, TypeError):  # a line cut short (a full disk): nothing to keep
        return False
    return position < (stage, step) or (step > 0 and position == (stage, step))
