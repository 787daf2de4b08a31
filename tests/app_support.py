"""What the app tests share: the bundled examples by task, requests as the page sends them, zips, a clock."""

from __future__ import annotations

import socket
import time
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from fusion_app.handlers import FusionApp
from fusion_app.inputs import EXAMPLES as EXAMPLES_DIR
from fusion_app.inputs import FuseOptions, TrainOptions
from fusion_app.models import AUTO, TASKS, ModelStore
from fusion_app.sessions import session_folder_name
from fusion_app.texts import (
    FROM_SCRATCH,
)
from fusion_app.views import Tabs
from fusion_core import (
    find_pairs,
)

EXAMPLES = {task: find_pairs(EXAMPLES_DIR / spec.folder)[0] for task, spec in TASKS.items()}


MEDICAL = "MRI + CT"


SESSION = "test-session"


def fuse_steps(fusion_app: FusionApp, tabs: Tabs, a, b, task: str = MEDICAL, choice: str = AUTO,
               session: str = SESSION, **options):
    """The fuse handler's outputs, one at a time."""
    return fusion_app.fuse(tabs.fuse, session, a and str(a), b and str(b), task, choice, FuseOptions(**options))


def fuse(fusion_app: FusionApp, tabs: Tabs, a, b, task: str = MEDICAL, choice: str = AUTO,
         **options) -> dict:
    """What the fuse handler leaves shown: its last output over its first (a component the last leaves out keeps
    its value); the first holds the image and the network's metrics alone, and what the maps are drawn from."""
    first, *rest = fuse_steps(fusion_app, tabs, a, b, task, choice, **options)
    view = tabs.fuse
    assert len(rest) == 1 and first[view.fused] is rest[0][view.fused] and first[view.baselines] is None
    assert "| DGD-Fusion |" in first[view.metrics] and "| average |" not in first[view.metrics]
    assert "Fusing and scoring the classical baselines" in first[view.metrics]
    return first | rest[0]


def pixels(path: str) -> np.ndarray:
    """The pixels of a PNG a handler wrote for an image component to show."""
    assert Path(path).suffix == ".png"
    return np.asarray(Image.open(path))


def evaluate(fusion_app: FusionApp, tabs: Tabs, zip_path, task: str = MEDICAL, choice: str = AUTO,
             progress=lambda *a, **k: None) -> dict:
    return fusion_app.evaluate(tabs.evaluate, SESSION, zip_path and str(zip_path), task, choice, "standard",
                               progress)


def train(fusion_app: FusionApp, tabs: Tabs, start: str = FROM_SCRATCH, **options) -> dict:
    """Start a run from the bundled MRI + CT examples, in the tiny preset unless told otherwise."""
    options = {"preset": "tiny", **options}
    return fusion_app.start_training(tabs.train, SESSION, None, MEDICAL, start, TrainOptions(**options))


def follow(fusion_app: FusionApp, tabs: Tabs, started: dict) -> dict:
    """Tick the Train tab's timer, as the browser does, until it is stopped; the last tick's outputs, with the
    session's state as it then stands."""
    view, followed = tabs.train, started[tabs.train.followed]
    assert started[view.timer].active
    for _ in range(1200):
        ticked = fusion_app.training_progress(view, followed)
        followed = ticked.get(view.followed, followed)
        if view.timer in ticked:  # written only to stop it
            assert not ticked[view.timer].active
            return ticked | {view.followed: followed}
        assert "Training" in ticked[view.status] or "Stopping" in ticked[view.status]
        time.sleep(0.1)
    raise AssertionError("the run did not end")


def zip_of(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def zip_of_entries(pairs: list, top: str) -> dict[str, bytes]:
    """Zip entries of the pairs' source files, in their folders, under ``top``."""
    return {f"{top}{p.parent.name}/{p.name}": p.read_bytes() for pair in pairs for p in (pair.a, pair.b)}


def pair_zip(path: Path, task: str = MEDICAL, top: str = "") -> Path:
    """The bundled pairs of a task as a zip, optionally inside a top folder."""
    return zip_of(path, zip_of_entries(find_pairs(EXAMPLES_DIR / TASKS[task].folder), top))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def session_outputs(fusion_app: FusionApp, kind: str, session: str = SESSION) -> list[Path]:
    """The request folders of a session's ``kind`` of outputs."""
    folder = fusion_app.work_dir / "sessions" / "outputs" / session_folder_name(session) / kind
    return sorted(folder.iterdir()) if folder.is_dir() else []


def refused_evaluation(refusing_app: FusionApp, tabs: Tabs, zip_path: Path | None) -> str:
    """The message of an evaluation that must be refused before any fusion; nothing of it stays behind."""
    with pytest.raises(gr.Error) as error:
        evaluate(refusing_app, tabs, zip_path, progress=lambda *a, **k: pytest.fail("fused"))
    assert session_outputs(refusing_app, "evaluations") == []
    return error.value.message


class Clock:
    """A clock that moves ``step`` seconds each time it is read, and when the test moves it."""

    def __init__(self, step: float = 0.0):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def timed_app(tmp_path: Path, clock: Clock) -> FusionApp:
    return FusionApp(ModelStore(tmp_path / "no-checkpoints", fallback_preset="tiny"), tmp_path / "work",
                         clock=clock)


def refused_training(fusion_app: FusionApp, tabs: Tabs, zip_path: Path | None = None, **options) -> str:
    """The message of a training run refused before it starts; nothing of it stays behind."""
    with pytest.raises(gr.Error) as error:
        fusion_app.start_training(tabs.train, SESSION, zip_path and str(zip_path), MEDICAL, FROM_SCRATCH,
                                  TrainOptions(**{"preset": "tiny", **options}))
    assert list((fusion_app.work_dir / "training").iterdir()) == [] and not fusion_app.trainer.busy
    return error.value.message
