"""Checkpoint folders of DGD-Fusion: ``config.json`` + ``model.safetensors`` + ``MODEL_CARD.md``.

A folder rebuilds its pipeline with no outside flags (nanoGPT / diffusers ``save_pretrained``). Weights are
safetensors only: pickled files (``.pt``, ``.pth``, ``.ckpt``, ``.bin``, ``.pkl``) can run code when
loaded, so they are refused, never unpickled. Each file is written under a temporary name and renamed
into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import FusionConfig
from .pipeline import FusionPipeline

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "MODEL_CARD.md"
CHECKPOINT_ROOT = Path(__file__).resolve().parent.parent / "assets" / "checkpoints"  # the bundled checkpoints
DEFAULT_CHECKPOINT = CHECKPOINT_ROOT / "dgd-general"  # fuses every task; used when no checkpoint is named
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
FORMAT = "dgd-fusion/2"
# Format 1 predates the weight-map head and the gate initialisation: its GFS channel attention was an
# unbounded MLP, so its weights load but compute something else. Refused with a clear message.
OLD_FORMATS = ("dgd-fusion/1",)


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message says why and what to do."""


def save_pipeline(directory: str | os.PathLike, pipeline: FusionPipeline, card: str = "",
                  extras: dict[str, bytes] | None = None) -> Path:
    """Write ``pipeline`` into ``directory`` (created if needed). Returns the folder path.

    Every file is written to a temporary name and renamed into place, so each file is always whole; other
    files in the folder (a training log, previews) are left alone. ``extras`` (training state) are written
    after the weights, in the order given, so the last one can mark a finished checkpoint.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, **pipeline.config.to_dict()}
    _write_atomic(directory / CONFIG_NAME, lambda path: path.write_text(json.dumps(config, indent=2) + "\n"))
    state = {k: v.detach().contiguous().cpu() for k, v in pipeline.state_dict().items()}
    _write_atomic(directory / WEIGHTS_NAME, lambda path: save_file(state, path, metadata={"format": FORMAT}))
    text = card or f"# DGD-Fusion ({pipeline.config.name})\n"
    _write_atomic(directory / CARD_NAME, lambda path: path.write_text(text))
    for name, content in (extras or {}).items():
        _write_atomic(directory / name, lambda path, content=content: path.write_bytes(content))
    return directory


def load_pipeline(directory: str | os.PathLike, device: str | torch.device = "cpu") -> FusionPipeline:
    """Rebuild a pipeline from a checkpoint folder, in eval mode on ``device``.

    Raises:
        CheckpointError: missing or pickled weights, a config that is not DGD-Fusion's, or weights that do
            not match the config.
    """
    directory = Path(directory)
    if directory.is_file() and directory.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(_pickle_message(directory))
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder {directory} does not exist")
    weights = directory / WEIGHTS_NAME
    if not weights.exists():
        pickles = [p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise CheckpointError(_pickle_message(directory / pickles[0]))
        raise CheckpointError(f"{directory} has no {WEIGHTS_NAME}; expected {CONFIG_NAME} + {WEIGHTS_NAME}")
    pipeline = FusionPipeline(_read_config(directory), trained=True)
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights} is not a valid safetensors file ({error}); pickled weights are "
                              "refused, convert them with safetensors.torch.save_file") from error
    try:
        missing, unexpected = pipeline.load_state_dict(state, strict=False)
    except RuntimeError as error:  # tensors whose shapes differ raise even with strict=False
        raise CheckpointError(f"{weights} does not match {CONFIG_NAME}: {error}") from error
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match {CONFIG_NAME}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    return pipeline.to(device).eval()


def _read_config(directory: Path) -> FusionConfig:
    try:
        data = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {directory / CONFIG_NAME}: {error}") from error
    found = data.pop("format", None)
    if found in OLD_FORMATS:
        raise CheckpointError(f"{directory} was saved by an earlier DGD-Fusion ({found}) whose gates and fusion "
                              f"head differ from this version's ({FORMAT}); retrain it with `python -m "
                              "fusion_core train`")
    if found != FORMAT:
        raise CheckpointError(f"{directory / CONFIG_NAME} is not a {FORMAT} config")
    try:
        return FusionConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{directory / CONFIG_NAME}: {error}") from error


def _pickle_message(path: Path) -> str:
    return (f"{path.name} is a pickled file, which can run arbitrary code when loaded; DGD-Fusion only "
            f"loads {WEIGHTS_NAME} folders. Convert trusted weights with safetensors.torch.save_file")


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary sibling of ``path``, then rename it over ``path``."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
