"""One training run at a time, in a background thread, reported to the UI through a ``TrainingJob``.

The run is ``fusion_core.run_stages`` itself (stage 1, stage 2 or both in turn, the loop the command line
and the ablation use), with its progress callback and its stop event; the UI only reads the job.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fusion_core import (
    FusionPipeline,
    Origin,
    PairDataset,
    Provenance,
    TrainConfig,
    TrainProgress,
    run_stages,
)


@dataclass
class TrainingJob:
    """A training run as the UI sees it; the worker thread writes it, the UI reads it."""

    name: str
    out_dir: Path
    steps_per_stage: int
    stages: tuple[int, ...]
    history: list[dict[str, float]] = field(default_factory=list)
    latest: TrainProgress | None = None
    stage_index: int = 0
    preview: np.ndarray | None = None
    zip_path: Path | None = None
    stopped: bool = False
    error: str | None = None
    done: bool = False

    @property
    def step(self) -> int:
        """Steps done over all stages."""
        return self.stage_index * self.steps_per_stage + (self.latest.step if self.latest else 0)

    @property
    def total(self) -> int:
        return self.steps_per_stage * len(self.stages)

    def record(self, report: TrainProgress) -> None:
        """The ``train`` progress callback."""
        self.latest = report
        self.history.append({"stage": report.stage, "step": self.step, **report.losses})
        if report.preview is not None:
            self.preview = report.preview


class Trainer:
    """One training run at a time, in a background thread so fusing stays responsive.

    torch's intra-op thread count is per thread: the worker takes half the cores and fusing callers
    (``fusion_threads``) the other half while a run is on, so the two do not oversubscribe the CPU.

    With ``chunk_steps``, each stage runs as calls of at most that many steps, each wrapped by ``accelerate``
    and checkpointed at its end, the next one resuming from the folder. That is how a Hugging Face ZeroGPU
    Space trains: a GPU is lent per decorated call, for a limited time, possibly in another process, so
    the run's state must live in its checkpoint between calls.
    """

    def __init__(self, device: str = "cpu", chunk_steps: int | None = None,
                 accelerate: Callable[[Callable], Callable] = lambda fn: fn):
        self.device = device
        self.chunk_steps = chunk_steps
        self.accelerate = accelerate
        self.cores = torch.get_num_threads()
        self.job: TrainingJob | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def fusion_threads(self) -> int:
        return max(1, self.cores // 2) if self.busy else self.cores

    def start(self, job: TrainingJob, pipeline: FusionPipeline, dataset: PairDataset, configs: list[TrainConfig],
              provenance: Provenance, on_done) -> None:
        """Run ``configs`` (one per stage) on ``pipeline``'s model in a thread; RuntimeError when a run is on.

        ``provenance`` (``training_card``) is saved with every checkpoint and rendered into its model card."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("busy")
        self.job = job
        self._stop.clear()
        threading.Thread(target=self._work, args=(job, pipeline, dataset, configs, provenance, on_done),
                         name=f"train-{job.name}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _work(self, job: TrainingJob, pipeline, dataset, configs, provenance, on_done) -> None:
        torch.set_num_threads(max(1, self.cores - self.cores // 2))

        def progress(index: int, report: TrainProgress) -> None:
            if index != job.stage_index:
                job.stage_index, job.latest = index, None
            job.record(report)

        try:
            results = run_stages(pipeline.model, dataset, configs, job.out_dir, provenance=provenance,
                                 progress=progress, stop=self._stop, device=self.device,
                                 chunk_steps=self.chunk_steps, accelerate=self.accelerate)
            job.stopped = bool(results) and results[-1].stopped
            on_done(job)
        except Exception as error:  # a thread's exception would vanish: report it in the UI instead
            job.error = f"{type(error).__name__}: {error}"
        finally:
            job.done = True
            self._lock.release()


def progress_html(job: TrainingJob) -> str:
    """A progress bar with the step, the loss, the speed and the time left."""
    if job.latest is None:
        text = "starting…"
    else:
        losses = ", ".join(f"{k} {v:.4g}" for k, v in job.latest.losses.items())
        text = (f"stage {job.latest.stage} ({job.stage_index + 1} of {len(job.stages)}) · step {job.step} of "
                f"{job.total} · {losses} · {job.latest.crops_per_second:.1f} crops/s · about "
                f"{job.latest.eta_seconds:.0f} s left in this stage")
    return (f'<div class="train-progress"><progress value="{job.step}" max="{job.total}"></progress>'
            f"<div>{html.escape(text)}</div></div>")


def training_card(name: str, start: Origin, data: str, pairs: int) -> Provenance:
    """The provenance of a run started in the app, from which every checkpoint's MODEL_CARD.md is rendered
    (``fusion_core.model_card``): where its weights started, its data and how many pairs it holds."""
    return Provenance(f"DGD-Fusion checkpoint `{name}` (trained in the app)", start, start, (data,), pairs,
                      notes=("a quick run in the browser app: not evaluated; see train_log.jsonl for the losses",))
