"""Checkpoint folders of DGD-Fusion: ``config.json`` + ``model.safetensors`` + ``MODEL_CARD.md`` + ``manifest.json``.

A folder rebuilds its model with no outside flags (nanoGPT / diffusers ``save_pretrained``). Weights are
safetensors only: pickled files (``.pt``, ``.pth``, ``.ckpt``, ``.bin``, ``.pkl``) can run code when
loaded, so they are refused, never unpickled.

A checkpoint is one atomic unit: a process killed at any moment of a save leaves the folder holding the
previous checkpoint or the new one, never a mix (say, the weights of step 4 beside the training state of
step 2, which a resumed run would take for step 2). ``save_model`` works in three moves:

1. stage: every file of the new checkpoint (config, weights, card, then the ``extras``: provenance,
   optimiser state, training state) is written and fsynced into the hidden folder ``.pending/`` inside the
   checkpoint folder;
2. commit: ``.pending/manifest.json``, naming each file with its SHA-256 and size, is written under a
   temporary name and renamed into place. That rename is the moment the new checkpoint exists: before it
   nothing outside ``.pending/`` has changed, and the next save discards the uncommitted folder;
3. switch: each staged file is renamed over its old version, the files of the old manifest that the new one
   does not name are removed, and the manifest moves in last. Each step checks what is already done, so
   the next save (``finish_pending``) completes a switch a kill cut short.

Readers (``read_model``, ``load_model``, ``load_pipeline``, ``read_checkpoint_file``) never write. They read a
half-switched folder as the committed checkpoint (a file from ``.pending/`` while it is still there, else from
the folder), and check each file they read against its manifest entry: a file changed after saving, a copy cut
short or a read racing a save is refused, never mixed in. Files the manifest does not name (a training log,
previews) are not part of the checkpoint and are left alone. The guarantee is against killed processes; file
contents are fsynced before the commit, directory entries are not.

A folder without ``manifest.json`` (the bundled checkpoints in ``assets/checkpoints``, one saved before
manifests existed, one put together by hand) loads as it is: no save of ours was in progress there (it
would have left ``.pending/manifest.json``), so there is nothing it could be half of, and a cut-short
weights file still fails the safetensors header check.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from .config import PRESETS, FusionConfig, describe_json
from .models.dgd_fusion import DGDFusionModel
from .pipeline import FusionPipeline, build_pipeline
from .tasks import TASK_CHECKPOINTS

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "MODEL_CARD.md"
CHECKPOINT_ROOT = Path(__file__).resolve().parent.parent / "assets" / "checkpoints"  # the bundled checkpoints
DEFAULT_CHECKPOINT = CHECKPOINT_ROOT / "dgd-general"  # fuses every task; used when no checkpoint is named
MANIFEST_NAME = "manifest.json"
PENDING_NAME = ".pending"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
FORMAT = "dgd-fusion/2"
# Format 1 predates the weight-map head and the gate initialisation: its GFS channel attention was an
# unbounded MLP, so its weights load but compute something else. Refused with a clear message.
OLD_FORMATS = ("dgd-fusion/1",)


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message says why and what to do."""


def save_model(directory: str | os.PathLike, model: DGDFusionModel, card: str = "",
               extras: dict[str, bytes] | None = None) -> Path:
    """Write ``model`` into ``directory`` (created if needed) as one atomic checkpoint. Returns the folder.

    ``extras`` (file name -> content, e.g. training state) belong to the same checkpoint; the files of an
    earlier checkpoint that this one does not name are removed. Other files (a training log, previews) stay.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    finish_pending(directory)
    _read_manifest(directory)  # a broken manifest is refused before anything is written
    config = {"format": FORMAT, **model.config.to_dict()}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    files = {CONFIG_NAME: (json.dumps(config, indent=2) + "\n").encode(),
             WEIGHTS_NAME: save(state, metadata={"format": FORMAT}),
             CARD_NAME: (card or f"# DGD-Fusion ({model.config.name})\n").encode(),
             **(extras or {})}
    _stage(directory / PENDING_NAME, files)
    finish_pending(directory)
    return directory


def save_pipeline(directory: str | os.PathLike, pipeline: FusionPipeline, card: str = "",
                  extras: dict[str, bytes] | None = None) -> Path:
    """``save_model`` of the pipeline's model."""
    return save_model(directory, pipeline.model, card, extras)


def finish_pending(directory: str | os.PathLike) -> None:
    """Complete the switch of a committed save that was cut short; discard a save that never committed."""
    directory = Path(directory)
    pending = directory / PENDING_NAME
    if not pending.is_dir():
        return
    manifest = _read_manifest(pending)
    if manifest is not None:
        stale = (_read_manifest(directory) or {}).keys() - manifest.keys()
        for name in manifest:  # in the order written: config and weights first, training state last
            if (pending / name).exists():
                os.replace(pending / name, directory / name)
        for name in stale:
            (directory / name).unlink(missing_ok=True)
        os.replace(pending / MANIFEST_NAME, directory / MANIFEST_NAME)  # the switch is complete
    shutil.rmtree(pending)


def read_checkpoint_file(directory: str | os.PathLike, name: str) -> bytes | None:
    """The content of the checkpoint file ``name`` in ``directory``; None when the checkpoint has none.

    A committed save whose switch was cut short reads as finished. Without a manifest the file is read as
    it is.

    Raises:
        CheckpointError: the manifest names the file but it is missing or differs from its entry.
    """
    directory = Path(directory)
    manifest, folders = _committed(directory)
    if manifest is not None and name not in manifest:
        return None
    data = _read_first(folders, name)
    if manifest is None:
        return data
    expected = manifest[name]
    if data is None or len(data) != expected["bytes"] or hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise CheckpointError(f"{directory / name} is missing or differs from its entry in {MANIFEST_NAME}: the "
                              "folder was changed after it was saved, copied in part, or is being saved now. "
                              f"Restore the file, or delete {MANIFEST_NAME} to load the folder as it is")
    return data


def is_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a checkpoint's weights (a committed save cut short counts as finished)."""
    manifest, _ = _committed(Path(directory))
    return WEIGHTS_NAME in manifest if manifest is not None else (Path(directory) / WEIGHTS_NAME).exists()


def read_model(directory: str | os.PathLike) -> tuple[FusionConfig, dict[str, torch.Tensor]]:
    """A checkpoint's config and weights, read once and checked against its manifest; nothing is built.

    Raises:
        CheckpointError: missing or pickled weights, a config that is not DGD-Fusion's, or files that differ
            from the folder's manifest.
    """
    directory = Path(directory)
    if directory.is_file() and directory.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(_pickle_message(directory))
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder {directory} does not exist")
    raw = read_checkpoint_file(directory, WEIGHTS_NAME)
    if raw is None:
        pickles = [p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise CheckpointError(_pickle_message(directory / pickles[0]))
        raise CheckpointError(f"{directory} has no {WEIGHTS_NAME}; expected {CONFIG_NAME} + {WEIGHTS_NAME}")
    config = _read_config(directory)
    try:
        return config, load(raw)
    except SafetensorError as error:
        raise CheckpointError(f"{directory / WEIGHTS_NAME} is not a valid safetensors file ({error}); pickled "
                              "weights are refused, convert them with safetensors.torch.save_file") from error


def load_weights(model: DGDFusionModel, weights: dict[str, torch.Tensor], directory: str | os.PathLike) -> None:
    """Load a checkpoint's ``weights`` into ``model``; CheckpointError (naming ``directory``) when they do not fit."""
    path = Path(directory) / WEIGHTS_NAME
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # tensors whose shapes differ raise even with strict=False
        raise CheckpointError(f"{path} does not match {CONFIG_NAME}: {error}") from error
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match {CONFIG_NAME}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> DGDFusionModel:
    """Rebuild a model from a checkpoint folder, in eval mode on ``device``.

    Raises:
        CheckpointError: missing or pickled weights, a config that is not DGD-Fusion's, weights that do
            not match the config, or files that differ from the folder's manifest.
    """
    config, weights = read_model(directory)
    model = DGDFusionModel(config)
    load_weights(model, weights, directory)
    return model.to(device).eval()


def load_pipeline(directory: str | os.PathLike, device: str | torch.device = "cpu") -> FusionPipeline:
    """A pipeline around ``load_model(directory, device)``, marked trained."""
    return FusionPipeline(load_model(directory, device), trained=True)


def _read_config(directory: Path) -> FusionConfig:
    raw = read_checkpoint_file(directory, CONFIG_NAME)
    if raw is None:
        raise CheckpointError(f"{directory} has no {CONFIG_NAME}; expected {CONFIG_NAME} + {WEIGHTS_NAME}")
    path = directory / CONFIG_NAME
    try:
        data = json.loads(raw)
    except ValueError as error:  # not JSON, or not UTF-8
        raise CheckpointError(f"cannot read {path}: {error}") from error
    except RecursionError:  # lists or objects nested thousands deep
        raise CheckpointError(f"cannot read {path}: its JSON is nested too deeply for a config") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold an object ({{...}}), got {describe_json(data)}")
    found = data.pop("format", None)
    if found in OLD_FORMATS:
        raise CheckpointError(f"{directory} was saved by an earlier DGD-Fusion ({found}) whose gates and fusion "
                              f"head differ from this version's ({FORMAT}); retrain it with `python -m "
                              "fusion_core train`")
    if found != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} config")
    try:
        return FusionConfig.from_dict(data, source=CONFIG_NAME)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: {error}") from error


def _pickle_message(path: Path) -> str:
    return (f"{path.name} is a pickled file, which can run arbitrary code when loaded; DGD-Fusion only "
            f"loads {WEIGHTS_NAME} folders. Convert trusted weights with safetensors.torch.save_file")


def _stage(pending: Path, files: dict[str, bytes]) -> None:
    """Moves 1 and 2: write ``files`` into ``pending``, then commit them with their manifest."""
    pending.mkdir()
    try:
        for name, data in files.items():
            _write_file(pending / name, data)
        entries = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                   for name, data in files.items()}
        temporary = pending / f".{MANIFEST_NAME}"
        _write_file(temporary, (json.dumps({"files": entries}, indent=2) + "\n").encode())
        os.replace(temporary, pending / MANIFEST_NAME)  # the commit
    except BaseException:
        shutil.rmtree(pending, ignore_errors=True)  # a save that failed before its commit leaves nothing
        raise


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _committed(directory: Path) -> tuple[dict[str, dict] | None, tuple[Path, ...]]:
    """The manifest of the committed checkpoint (None: no manifest) and the folders holding its files,
    the staged ones first."""
    pending = directory / PENDING_NAME
    manifest = _read_manifest(pending)
    if manifest is not None:
        return manifest, (pending, directory)
    return _read_manifest(directory), (directory,)


def _read_manifest(folder: Path) -> dict[str, dict] | None:
    """File name -> {"sha256", "bytes"} from ``folder``'s manifest; None when it has none."""
    path = folder / MANIFEST_NAME
    try:
        files = json.loads(path.read_bytes())["files"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"cannot read {path} ({error!r}); delete it to load the folder as it is") from error
    if not isinstance(files, dict) or not all(_is_entry(name, entry) for name, entry in files.items()):
        raise CheckpointError(f"{path} is not a DGD-Fusion manifest; delete it to load the folder as it is")
    return files


def _is_entry(name: str, entry: object) -> bool:
    """A plain file name of the folder itself (``finish_pending`` removes the old ones) with a hash and size."""
    plain = name == Path(name).name and not name.startswith(".")
    hashed = isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("bytes"), int)
    return plain and hashed


def _read_first(folders: tuple[Path, ...], name: str) -> bytes | None:
    """The file ``name`` from the first folder that has it (a save may move it from one to the next)."""
    for folder in folders:
        try:
            return (folder / name).read_bytes()
        except FileNotFoundError:
            continue
    return None


def default_checkpoint(task: str = "ivf") -> Path | None:
    """The bundled checkpoint trained for ``task`` ("ivf" or "medical", ``tasks.TASK_CHECKPOINTS``), else the
    bundled general one, which fuses every task; None when neither is installed."""
    for folder in (CHECKPOINT_ROOT / TASK_CHECKPOINTS[task], DEFAULT_CHECKPOINT):
        if (folder / WEIGHTS_NAME).exists():
            return folder
    return None


def resolve_pipeline(checkpoint: str | os.PathLike | None, preset: str, device: str) -> FusionPipeline:
    """The named checkpoint, else the bundled default, else random weights of ``preset``."""
    checkpoint = checkpoint or default_checkpoint()
    if checkpoint:
        return load_pipeline(checkpoint, device)
    return build_pipeline(PRESETS[preset]).to(device)
