"""Two-stage training of DGD-Fusion (docs/design.md §2.1, §2.7; paper §2.1.1), on one CPU or many GPUs.

Stage 1 trains the denoising UNet with the diffusion loss; stage 2 freezes it and trains the fusion head
with the unsupervised fusion loss (optionally with the UNet's GFS gates, ``TrainConfig.gate_lr``).
Adam, lr 1e-4 (the paper). Everything random in step s (which pairs, where they are cropped, the flips,
the timesteps and the noise) comes from a generator seeded with (seed, step, rank), and the initial weights
from ``build_pipeline(config, generator)`` (the CLI seeds it with the same seed), so a resumed run continues
exactly where it stopped.

A checkpoint (weights, optimiser state, step) is one atomic unit (checkpoint.py): a run killed at any moment,
even in the middle of a save, resumes from the last checkpoint as a whole and ends bit-identical to a run
never stopped. The log ``train_log.jsonl`` is appended to at every ``log_every`` steps; a resumed run first
drops the lines it is about to write again (those after its checkpoint's step), so the log holds each step
once. A step's validation line is written before that step's checkpoint, so a kill loses none. A stop request
saves and returns. Under torchrun the trained module is wrapped in DistributedDataParallel (gloo on CPU, nccl
on CUDA); only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load, save
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import CheckpointError, is_checkpoint, load_pipeline, read_checkpoint_file, save_pipeline
from .color import LUMA_WEIGHTS
from .config import TrainConfig
from .data import PairDataset
from .distributed import DistributedContext
from .imaging import write_png
from .losses import FusionLoss
from .pipeline import FusionPipeline
from .validation import ValidationSet

STATE_NAME = "train_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
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


def train(pipeline: FusionPipeline, dataset: PairDataset, config: TrainConfig, out_dir: str | os.PathLike, *,
          resume: bool = False, progress: Callable[[TrainProgress], None] | None = None,
          stop: threading.Event | None = None, context: DistributedContext | None = None,
          card: str = "", validation: ValidationSet | None = None) -> TrainResult:
    """Train stage ``config.stage`` of ``pipeline`` in place, checkpointing to ``out_dir``.

    Args:
        resume: continue from the checkpoint in ``out_dir`` (same stage: from its step; an earlier stage:
            its weights, from step 0), first dropping the log lines this run will write again.
        progress: called with a TrainProgress every ``config.log_every`` steps.
        stop: when set, the run saves a checkpoint and returns with ``stopped=True``.
        card: model card text written with every checkpoint.
        validation: pairs on which stage 2 logs the network's mean rank against the classical baselines
            at step 0 and every ``config.validate_every`` steps (the time it takes is not training time).
    """
    context = context or DistributedContext()
    out_dir = Path(out_dir)
    pipeline.to(context.device)
    optimizer = torch.optim.Adam(_trainable(pipeline, config))
    start_step, elapsed = _restore(pipeline, optimizer, config, out_dir, resume, context.device)
    if resume and context.is_main:
        _drop_log_lines_after(out_dir, config.stage, start_step)
    _broadcast_weights(pipeline, context)
    model = _wrap(pipeline.unet if config.stage == 1 else _FeaturesAndHead(pipeline), context)
    run = _StepRunner(pipeline, model, dataset, config, context)
    clock = _TrainingClock(elapsed)
    validate = _Validator(pipeline, validation, config, out_dir, clock) if context.is_main else None
    losses: dict[str, float] = {}
    step = start_step
    if validate is not None and step == 0:
        validate(step)
    while step < config.steps and not (stop is not None and stop.is_set()):
        losses = run.step(optimizer, step)
        step += 1
        speed = (step - start_step) * config.batch_size * context.world_size / max(clock.this_run(), 1e-9)
        report = TrainProgress(config.stage, step, config.steps, losses, speed,
                               (config.steps - step) * config.batch_size * context.world_size / max(speed, 1e-9))
        if context.is_main:
            if validate is not None and (step % max(config.validate_every, 1) == 0 or step == config.steps):
                report = replace(report, validation=validate(step))  # logged before this step's checkpoint
            report = _periodic(pipeline, dataset, config, out_dir, optimizer, report, clock.total(), card)
            due = step % config.log_every == 0 or report.checkpoint or report.validation is not None
            if progress is not None and (due or step == config.steps):
                progress(report)
    if context.is_main:
        _save(pipeline, optimizer, config, out_dir, step, clock.total(), card)
    pipeline.eval()
    speed = (step - start_step) * config.batch_size * context.world_size / max(clock.this_run(), 1e-9)
    return TrainResult(out_dir, config.stage, step, step < config.steps, clock.total(), speed, losses)


def _trainable(pipeline: FusionPipeline, config: TrainConfig) -> list[dict]:
    """Set train/eval modes and requires_grad for ``config``'s stage; the optimiser's parameter groups.

    Stage 1: the UNet. Stage 2: the head, plus the GFS gate parameters at ``config.gate_lr`` when it is
    positive (the UNet stays in eval mode either way: no dropout in the features the head reads).
    """
    trained = pipeline.unet if config.stage == 1 else pipeline.head
    frozen = pipeline.head if config.stage == 1 else pipeline.unet
    frozen.requires_grad_(False).eval()
    trained.requires_grad_(True).train()
    groups = [{"params": list(trained.parameters()), "lr": config.lr}]
    if config.stage == 2 and config.gate_lr > 0:
        gates = pipeline.unet.gate_parameters()
        for parameter in gates:
            parameter.requires_grad_(True)
        groups.append({"params": gates, "lr": config.gate_lr})
    return groups


class _FeaturesAndHead(nn.Module):
    """Stage 2's forward: UNet features at the feature timesteps, then the head (one module for DDP)."""

    def __init__(self, pipeline: FusionPipeline):
        super().__init__()
        self.pipeline = pipeline
        self.tuned = any(p.requires_grad for p in pipeline.unet.parameters())

    def forward(self, a: torch.Tensor, y_b: torch.Tensor, x0: torch.Tensor, timesteps: tuple[int, ...],
                generator: torch.Generator) -> torch.Tensor:
        """a (B, 1, c, c), y_b (B, 1, c, c), x0 (B, 4, c, c) in [-1, 1] -> fused luminance (B, 1, c, c)."""
        with torch.set_grad_enabled(self.tuned):
            features, _ = self.pipeline.unet_features(x0, timesteps, generator)
        t = torch.tensor([timesteps], device=a.device).expand(a.shape[0], -1)  # (B, T)
        return self.pipeline.head(a, y_b, features, t).y_fused


class _TrainingClock:
    """Training seconds: those of earlier runs plus this run's, without the time spent validating."""

    def __init__(self, earlier: float):
        self.earlier, self.began, self.paused = earlier, time.perf_counter(), 0.0

    def this_run(self) -> float:
        return time.perf_counter() - self.began - self.paused

    def total(self) -> float:
        return self.earlier + self.this_run()


class _Validator:
    """Rank 0's validation: score the pipeline, log it, and keep the clock from counting it."""

    def __init__(self, pipeline: FusionPipeline, validation: ValidationSet | None, config: TrainConfig,
                 out_dir: Path, clock: _TrainingClock):
        self.pipeline, self.validation, self.config = pipeline, validation, config
        self.out_dir, self.clock = out_dir, clock

    def __call__(self, step: int) -> float | None:
        """Validate at ``step`` (stage 2 only: stage 1 has no trained head) and return the network's rank."""
        if self.validation is None or self.config.stage != 2 or self.config.validate_every <= 0:
            return None
        began = time.perf_counter()
        with _inference_mode(self.pipeline):
            score = self.validation.score(self.pipeline)
        self.clock.paused += time.perf_counter() - began
        line = {"stage": self.config.stage, "step": step, "train_seconds": self.clock.total(),
                "validation": asdict(score), "time": time.time()}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / LOG_NAME, "a") as log:
            log.write(json.dumps(line) + "\n")
        return score.rank


@contextmanager
def _inference_mode(pipeline: FusionPipeline):
    """Evaluation mode for the duration, then each half back in the mode it was in."""
    modes = [m.training for m in (pipeline.unet, pipeline.head)]
    pipeline.eval()
    try:
        yield pipeline
    finally:
        pipeline.unet.train(modes[0])
        pipeline.head.train(modes[1])


class _StepRunner:
    """One optimisation step of either stage, all randomness from the per-step generator."""

    def __init__(self, pipeline: FusionPipeline, model: nn.Module, dataset: PairDataset, config: TrainConfig,
                 context: DistributedContext):
        self.pipeline, self.model, self.dataset = pipeline, model, dataset
        self.config, self.context = config, context
        self.loss = FusionLoss(pipeline.config.loss)
        self.luma = torch.tensor(LUMA_WEIGHTS, device=context.device)[None, :, None, None]  # (1, 3, 1, 1)

    def step(self, optimizer: torch.optim.Optimizer, step: int) -> dict[str, float]:
        c, ctx = self.config, self.context
        generator = torch.Generator().manual_seed(_step_seed(c.seed, step, ctx.rank))
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
        diffusion = self.pipeline.diffusion
        t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        loss = diffusion.training_loss(self.model, x0, t, noise)
        return {"total": loss, "diffusion": loss.item()}

    def _fusion_loss(self, a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> dict:
        timesteps = _jitter(self.pipeline.config.head.feature_timesteps, self.config.timestep_jitter,
                            self.pipeline.diffusion.num_timesteps, generator)
        x0 = torch.cat([a, b], dim=1) * 2 - 1
        y_b = (b * self.luma).sum(dim=1, keepdim=True)  # (B, 1, c, c) BT.601 luma
        y_fused = self.model(a, y_b, x0, timesteps, generator).float()
        out = self.loss(y_fused, a, y_b)
        return {"total": out.total, "fusion": out.total.item(), "intensity": out.intensity,
                "gradient": out.gradient, "ssim": out.ssim}


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 257 + rank


def _jitter(timesteps: tuple[int, ...], amount: float, num_timesteps: int, generator: torch.Generator
            ) -> tuple[int, ...]:
    """Each feature timestep scaled by exp(U(-amount, amount)), kept in [1, T): the head learns to read t."""
    scales = torch.exp((torch.rand(len(timesteps), generator=generator) * 2 - 1) * amount)
    scaled = (round(t * s) for t, s in zip(timesteps, scales.tolist(), strict=True))
    return tuple(int(min(max(t, 1), num_timesteps - 1)) for t in scaled)


def _broadcast_weights(pipeline: FusionPipeline, context: DistributedContext) -> None:
    """Give every rank rank 0's weights, the frozen module included.

    DDP only broadcasts the module it wraps, and torch seeds each process differently, so without this a
    rank would keep its own random frozen half (stage 2 from scratch: a different UNet per rank).
    """
    if context.world_size == 1:
        return
    with torch.no_grad():
        for tensor in pipeline.state_dict().values():
            dist.broadcast(tensor, src=0)


def _wrap(module: nn.Module, context: DistributedContext) -> nn.Module:
    if context.world_size == 1:
        return module
    ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def _restore(pipeline: FusionPipeline, optimizer: torch.optim.Optimizer, config: TrainConfig, out_dir: Path,
             resume: bool, device: torch.device) -> tuple[int, float]:
    """Load weights (and, for the same stage, optimiser state and step). Returns (start step, wall so far).

    All of it from the one committed checkpoint in ``out_dir``, checked against its manifest.
    """
    if not resume or not is_checkpoint(out_dir):
        return 0, 0.0
    state = read_train_state(out_dir)
    pipeline.load_state_dict(load_pipeline(out_dir).state_dict())
    pipeline.to(device)
    if state.get("stage") != config.stage:
        return 0, 0.0
    optimizer.load_state_dict(_optimizer_state(out_dir, state["param_groups"], device))
    return int(state["step"]), float(state.get("wall_seconds", 0.0))


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


def _periodic(pipeline: FusionPipeline, dataset: PairDataset, config: TrainConfig, out_dir: Path,
              optimizer: torch.optim.Optimizer, report: TrainProgress, wall: float, card: str) -> TrainProgress:
    """Rank 0's bookkeeping after a step: the JSON-lines log, previews and checkpoints."""
    step, changes = report.step, {}
    if step % config.log_every == 0 or step == config.steps:
        out_dir.mkdir(parents=True, exist_ok=True)
        line = {"stage": config.stage, "step": step, **report.losses, "crops_per_second": report.crops_per_second,
                "eta_seconds": report.eta_seconds, "time": time.time()}
        with open(out_dir / LOG_NAME, "a") as log:
            log.write(json.dumps(line) + "\n")
    if config.preview_every and step % config.preview_every == 0:
        changes["preview"] = _preview(pipeline, dataset, out_dir, step)
    if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
        changes["checkpoint"] = _save(pipeline, optimizer, config, out_dir, step, wall, card)
    return TrainProgress(**{**asdict(report), **changes}) if changes else report


def _preview(pipeline: FusionPipeline, dataset: PairDataset, out_dir: Path, step: int) -> np.ndarray:
    """Fuse the centre of the dataset's first pair with the current weights; saved under previews/."""
    a, b = dataset.a[0], dataset.b[0]
    top, left = max((a.shape[0] - PREVIEW_SIZE) // 2, 0), max((a.shape[1] - PREVIEW_SIZE) // 2, 0)
    box = np.s_[top:top + PREVIEW_SIZE, left:left + PREVIEW_SIZE]
    with _inference_mode(pipeline):
        fused = pipeline.fuse(a[box], b[box]).fused
    (out_dir / "previews").mkdir(parents=True, exist_ok=True)
    write_png(out_dir / "previews" / f"step_{step:07d}.png", fused)
    return fused


def _save(pipeline: FusionPipeline, optimizer: torch.optim.Optimizer, config: TrainConfig, out_dir: Path,
          step: int, wall: float, card: str) -> Path:
    optimizer_state = optimizer.state_dict()
    tensors = {f"{index}.{name}": torch.as_tensor(value).detach().cpu().contiguous()
               for index, entries in optimizer_state["state"].items() for name, value in entries.items()}
    state = {"stage": config.stage, "step": step, "wall_seconds": wall, "train_config": asdict(config),
             "hardware": hardware_description(), "param_groups": optimizer_state["param_groups"]}
    extras = {OPTIMIZER_NAME: save(tensors), STATE_NAME: (json.dumps(state, indent=2) + "\n").encode()}
    return save_pipeline(out_dir, pipeline, card, extras)


def _optimizer_state(out_dir: Path, param_groups: list[dict], device: torch.device) -> dict:
    """Rebuild an optimiser state dict from flat safetensors (no pickle) and the groups in the JSON state."""
    raw = read_checkpoint_file(out_dir, OPTIMIZER_NAME)
    if raw is None:
        raise CheckpointError(f"{out_dir} has {STATE_NAME} but no {OPTIMIZER_NAME}; resuming needs both")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load(raw).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value.to(device)
    return {"state": state, "param_groups": param_groups}


def read_train_state(out_dir: str | os.PathLike) -> dict:
    """The training state of a checkpoint folder ({} when there is none): stage, step, wall_seconds, ..."""
    raw = read_checkpoint_file(out_dir, STATE_NAME)
    return json.loads(raw) if raw is not None else {}


def hardware_description() -> str:
    """e.g. 'NVIDIA H100 80GB HBM3' or 'CPU x86_64, 2 cores'."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.machine()}, {os.cpu_count()} cores"


def steps_for_minutes(minutes: float, crops_per_second: float, batch_size: int) -> int:
    """How many steps fit a time budget at a measured throughput."""
    return max(1, math.floor(minutes * 60 * crops_per_second / batch_size))
