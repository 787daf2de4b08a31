"""The fusion tasks of the app and the store of fusion pipelines, loaded lazily, once per checkpoint.

DGD-Fusion (Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016): one general checkpoint fuses
infrared + visible and medical pairs; a medical fine-tune, when installed, is preferred for medical pairs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from fusion_core import CHECKPOINT_ROOT, PRESETS, FusionPipeline, build_pipeline, load_pipeline

AUTO = "automatic (by task)"
RANDOM = "random weights (untrained)"


@dataclass(frozen=True)
class Task:
    """One fusion task: its example folder, the names of its sources, the checkpoints it prefers."""

    folder: str
    a: str
    b: str
    checkpoints: tuple[str, ...]


TASKS = {
    "Infrared + visible": Task("ivf", "infrared", "visible", ("dgd-general",)),
    "MRI + CT": Task("mri_ct", "MRI", "CT", ("dgd-medical", "dgd-general")),
    "MRI + PET": Task("mri_pet", "MRI", "PET", ("dgd-medical", "dgd-general")),
    "MRI + SPECT": Task("mri_spect", "MRI", "SPECT", ("dgd-medical", "dgd-general")),
}
DEFAULT_TASK = next(iter(TASKS))


class ModelStore:
    """Fusion pipelines by checkpoint name, loaded on first use and kept; random weights when none exists.

    Names are the folders of ``checkpoint_root`` that hold ``model.safetensors``, the runs trained in this app,
    and ``RANDOM``: the ``fallback_preset`` with weights drawn from a fixed seed, so its output is the same on
    every start (it shows the mechanics of the network, not its quality).
    """

    def __init__(self, checkpoint_root: Path = CHECKPOINT_ROOT, fallback_preset: str = "cpu",
                 device: str | None = None):
        self.root = Path(checkpoint_root)
        self.fallback_preset = fallback_preset
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.trained: dict[str, Path] = {}
        self._cache: dict[str, tuple[float, FusionPipeline]] = {}
        self._lock = threading.Lock()

    def folders(self) -> dict[str, Path]:
        """Name -> folder of every loadable checkpoint: the bundled ones, then those trained here."""
        bundled = {} if not self.root.is_dir() else {
            p.name: p for p in sorted(self.root.iterdir()) if (p / "model.safetensors").is_file()}
        return {**bundled, **self.trained}

    def choices(self) -> list[str]:
        return [AUTO, *self.folders(), RANDOM]

    def resolve(self, task: str, choice: str) -> str:
        """The checkpoint a menu choice means for a task: AUTO picks the task's first present preference.

        Raises:
            ValueError: ``choice`` names a checkpoint that is not there (any more).
        """
        folders = self.folders()
        if choice == AUTO:
            return next((name for name in TASKS[task].checkpoints if name in folders), RANDOM)
        if choice != RANDOM and choice not in folders:
            raise ValueError(f"The checkpoint {choice!r} is no longer available; pick another one.")
        return choice

    def get(self, name: str) -> FusionPipeline:
        """The pipeline called ``name``, loaded once (again only when its weights file changed)."""
        folder = self.folders().get(name)
        stamp = (folder / "model.safetensors").stat().st_mtime if folder else 0.0
        with self._lock:
            cached = self._cache.get(name)
            if cached is None or cached[0] != stamp:
                self._cache[name] = (stamp, self._load(folder))
            return self._cache[name][1]

    def fresh(self, name: str, preset: str, seed: int) -> FusionPipeline:
        """A new, uncached pipeline whose model is to be trained: the checkpoint ``name``, or random weights of
        ``preset`` drawn from ``seed`` (the run's training seed, so the same run starts from the same weights)."""
        folder = self.folders().get(name)
        if folder:
            return load_pipeline(folder)
        return build_pipeline(PRESETS[preset], torch.Generator().manual_seed(seed))

    def register(self, name: str, folder: Path) -> None:
        self.trained[name] = Path(folder)

    def card(self, name: str) -> str:
        path = self.folders()[name] / "MODEL_CARD.md"
        return path.read_text() if path.is_file() else f"(no model card in `{name}`)"

    def describe(self, task: str, choice: str) -> str:
        """One line saying which network a fusion will use; a warning for random weights."""
        name = self.resolve(task, choice)
        if name == RANDOM:
            why = "as chosen" if choice == RANDOM else "no trained checkpoint is installed"
            return (f"⚠️ **The network runs with random weights** ({why}; `{self.fallback_preset}` preset). Its "
                    "output shows how the network works, not how well the method fuses; the classical baselines "
                    "in the metric table are the fair reference.")
        fallback = " (no medical fine-tune installed)" if TASKS[task].checkpoints[0] != name and choice == AUTO else ""
        return f"Model: **{name}**{fallback}; see the About tab for its model card."

    def _load(self, folder: Path | None) -> FusionPipeline:
        if folder is not None:
            return load_pipeline(folder, self.device)
        # a fixed draw, without touching anyone's global RNG
        return build_pipeline(PRESETS[self.fallback_preset], torch.Generator().manual_seed(0)).to(self.device)

