"""A whole training run: its stages in turn (``run_stages``, the one loop over stages used by the command
line, the app's Train tab and the ablation), and the run the ``train`` command asks for (``prepare_run``:
the network built once, from a preset, a checkpoint or the run being resumed, which is read once).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch

from ..checkpoint import load_model, load_weights, read_model
from ..config import PRESETS, FusionConfig, TrainConfig
from ..cost import check_training_budget
from ..data import PairDataset, find_pairs
from ..distributed import setup_distributed
from ..models.dgd_fusion import DGDFusionModel, build_model
from ..validation import ValidationSet
from .loop import TrainProgress, TrainResult, train
from .provenance import Origin, Provenance
from .state import ResumePoint

StageProgress = Callable[[int, TrainProgress], None]  # (index of the stage in the run, its report)


def run_stages(model: DGDFusionModel, dataset: PairDataset, configs: Sequence[TrainConfig],
               out_dir: str | os.PathLike, *, provenance: Provenance, resume: bool | ResumePoint = False,
               progress: StageProgress | None = None, stop: threading.Event | None = None,
               device: str | None = None, validation: ValidationSet | None = None, chunk_steps: int | None = None,
               accelerate: Callable[[Callable], Callable] = lambda fn: fn) -> list[TrainResult]:
    """Train ``configs`` (one per stage, in order) on ``model`` into ``out_dir``; stops after a stopped stage.

    A later stage goes on with the weights in memory: nothing is read between stages. With ``chunk_steps``
    each stage runs as calls of ``train`` of at most that many steps, each wrapped by ``accelerate`` and
    checkpointed at its end, the next one resuming from the folder (a Hugging Face ZeroGPU Space lends a GPU
    per decorated call, possibly in another process, so the run's state lives in its checkpoint between calls).

    Raises ValueError, before anything is trained or written, for a stage whose step would need more memory
    than ``cost.MAX_TRAINING_BYTES`` (``check_training_memory``).

    Args:
        resume: how the first stage starts (see ``train``).
        progress: called with (stage index, report).
        device: the device of ``setup_distributed`` (None: CUDA when present), set up inside each call.
    """
    check_training_memory(model.config, configs)
    results: list[TrainResult] = []
    for index, config in enumerate(configs):
        if index > 0:  # the weights are the previous stage's, in memory; only the log is trimmed
            resume = True if chunk_steps else ResumePoint(stage=configs[index - 1].stage)
        report = partial(progress, index) if progress is not None else None
        ends = range(chunk_steps, config.steps + chunk_steps, chunk_steps) if chunk_steps else [config.steps]
        for end in ends:
            chunk = replace(config, steps=min(end, config.steps))
            result = accelerate(_train_on)(model, dataset, chunk, out_dir, resume, report, stop, device, provenance,
                                           validation)
            resume, provenance = True, result.provenance
            if result.stopped or (stop is not None and stop.is_set()):
                break
        results.append(replace(result, stopped=result.step < config.steps))
        if results[-1].stopped:
            break
    return results


def check_training_memory(config: FusionConfig, configs: Sequence[TrainConfig]) -> None:
    """Raise ValueError (with the estimate and the largest batch that fits) for a stage of ``configs`` whose step
    of ``batch_size`` crops of ``crop`` x ``crop`` is estimated beyond ``cost.MAX_TRAINING_BYTES``; by
    arithmetic on the configs, so it runs before anything is built for the step or read."""
    for train_config in configs:
        check_training_budget(config, train_config.stage, train_config.crop, train_config.batch_size,
                              tune_gates=train_config.stage == 2 and train_config.gate_lr > 0)


def _train_on(model: DGDFusionModel, dataset: PairDataset, config: TrainConfig, out_dir: str | os.PathLike,
              resume: bool | ResumePoint, progress: Callable[[TrainProgress], None] | None,
              stop: threading.Event | None, device: str | None, provenance: Provenance,
              validation: ValidationSet | None) -> TrainResult:
    """One call of the stage loop, on the device ``setup_distributed`` gives (inside ``accelerate``)."""
    return train(model, dataset, config, out_dir, resume=resume, progress=progress, stop=stop,
                 context=setup_distributed(device), provenance=provenance, validation=validation)


@dataclass(frozen=True)
class TrainRequest:
    """What the ``train`` command asks for (cli.py parses it; this module acts on it).

    Attributes:
        stage: "1", "2" or "both".
        train: the TrainConfig fields every stage shares (its stage and steps are set per stage).
        stage1_steps: steps of stage 1 when ``stage`` is "both" (None: ``train.steps``).
        loss: LossConfig fields to override (saved with the checkpoint).
        head_output, head_channels: a fresh head of that form or width (keeps the UNet).
        command: the command line, for the model card.
    """

    data: tuple[str, ...]
    out: str
    train: TrainConfig
    stage: str = "both"
    preset: str = "cpu"
    init: str | None = None
    head_from: str | None = None
    resume: bool = False
    stage1_steps: int | None = None
    val: str | None = None
    head_output: str | None = None
    head_channels: int | None = None
    loss: dict[str, float] = dataclasses.field(default_factory=dict)
    command: str = ""


@dataclass
class PreparedRun:
    """A run ready for ``run_stages``: the network, the data, one TrainConfig per stage, how it starts."""

    model: DGDFusionModel
    dataset: PairDataset
    configs: list[TrainConfig]
    provenance: Provenance
    resume: bool | ResumePoint
    validation: ValidationSet | None


def prepare_run(request: TrainRequest, is_main: bool = True) -> PreparedRun:
    """Build the network once (the resumed run's own, a checkpoint's, or a preset's drawn from the seed), the
    data, the stages and the provenance. Raises ValueError for requests that cannot run."""
    if request.head_from and (request.head_channels or request.head_output):
        raise ValueError("--head-from carries a trained head; --head-channels and --head-output draw a new one: "
                         "give one or the other")
    point = ResumePoint.read(request.out) if request.resume else None  # the one read of a resumed run
    source, config, weights = _starting_config(request, point)
    stride = config.unet.stride
    if request.train.crop % stride:
        raise ValueError(f"--crop {request.train.crop}: crop must be a multiple of {stride}, the stride of this "
                         f"model (e.g. {max(stride, request.train.crop // stride * stride)})")
    fresh_head = point is None and _wants_new_head(config, request)  # a resumed run goes on with its head
    stages = [1, 2] if request.stage == "both" else [int(request.stage)]
    if point is not None and request.stage == "both" and point.stage == 2:
        stages = [2]  # stage 1 finished before the stop
    configs = [replace(request.train, stage=stage, steps=request.stage1_steps
                       if stage == 1 and request.stage == "both" and request.stage1_steps else request.train.steps)
               for stage in stages]
    # before anything is built or read (a --head-from head is checked again by run_stages)
    check_training_memory(replace(config, head=_new_head(config, request)) if fresh_head else config, configs)
    generator = torch.Generator().manual_seed(request.train.seed)  # the seed draws the initial weights too
    model = _starting_model(request, point, source, config, weights, generator)
    if fresh_head:
        model = model.with_head(_new_head(model.config, request), generator)
    dataset = PairDataset([pair for root in request.data for pair in find_pairs(root)])
    validation = ValidationSet.from_folder(request.val, request.train.seed) if request.val and is_main else None
    provenance = _provenance(request, model.config, point, fresh_head, len(dataset))
    resume = replace(point, weights=None) if point is not None else request.resume  # its weights are in the model
    return PreparedRun(model, dataset, configs, provenance, resume, validation)


def _starting_config(request: TrainRequest, point: ResumePoint | None
                     ) -> tuple[str | None, FusionConfig, dict[str, torch.Tensor] | None]:
    """Where a run's network comes from, its config (with the request's loss weights) and its weights, if any;
    nothing is built."""
    if point is not None:  # a resumed run keeps its own config (loss weights, head)
        source, (config, weights) = request.out, (point.config, point.weights)
    elif request.init:
        source, (config, weights) = request.init, read_model(request.init)
    else:
        source, config, weights = None, PRESETS[request.preset], None
    if request.loss:
        config = replace(config, loss=replace(config.loss, **request.loss))
    return source, config, weights


def _starting_model(request: TrainRequest, point: ResumePoint | None, source: str | None, config: FusionConfig,
                    weights: dict[str, torch.Tensor] | None, generator: torch.Generator) -> DGDFusionModel:
    """The network a run starts from, built once from ``_starting_config``'s answer."""
    if weights is None:
        model = build_model(config, generator)
    else:
        model = DGDFusionModel(config)
        load_weights(model, weights, source)
    if request.head_from and point is None:
        model = model.with_head_of(load_model(request.head_from))
    return model


def _new_head(config: FusionConfig, request: TrainRequest):
    changes = {k: v for k, v in (("output", request.head_output), ("channels", request.head_channels))
               if v is not None}
    return replace(config.head, **changes)


def _wants_new_head(config: FusionConfig, request: TrainRequest) -> bool:
    """--head-channels (even at the same width: a head trained from scratch) or a --head-output that changes
    the head's form."""
    return request.head_channels is not None or _new_head(config, request) != config.head


def _provenance(request: TrainRequest, config: FusionConfig, point: ResumePoint | None, fresh_head: bool,
                pairs: int) -> Provenance:
    if point is not None:
        earlier = point.provenance or Provenance(f"DGD-Fusion checkpoint ({config.name})",
                                                 Origin(checkpoint=f"an earlier run in {request.out}"),
                                                 Origin(checkpoint=f"an earlier run in {request.out}"))
        return replace(earlier, resumed=earlier.resumed + 1, data=tuple(request.data), pairs=pairs)
    seed = request.train.seed
    drawn = Origin(seed=seed, preset=config.name)
    unet = Origin(checkpoint=request.init) if request.init else drawn
    head = Origin(checkpoint=request.head_from) if request.head_from else drawn if fresh_head else unet
    return Provenance(f"DGD-Fusion checkpoint ({config.name})", unet, head, tuple(request.data), pairs,
                      command=request.command)


def steps_for_minutes(minutes: float, crops_per_second: float, batch_size: int) -> int:
    """How many steps fit a time budget at a measured throughput."""
    return max(1, math.floor(minutes * 60 * crops_per_second / batch_size))
