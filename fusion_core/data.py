"""Paired image folders for DGD-Fusion: discovering the pairs (and, below, the training dataset).

The only module that lists image folders. A pair root holds two sub-folders, one per source, with
the same file stem in both (the layouts of MSRS, RoadScene, TNO and the Harvard atlas as distributed):

    root/ir/NAME.png  + root/vi/NAME.png                      infrared + visible
    root/MRI/NAME.png + root/CT|PET|SPECT/NAME.png            medical
    root/A/NAME.png   + root/B/NAME.png                       anything else

Folder names are matched case-insensitively. ``PairDataset`` holds the pairs in memory for training.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .color import luma
from .imaging import read_image, to_uint8
from .layers.common import pad_to_multiple

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm")

# (folder of source A, folders that may hold source B), in the order they are tried.
PAIR_LAYOUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ir", ("vi",)),
    ("mri", ("ct", "pet", "spect")),
    ("a", ("b",)),
)


@dataclass(frozen=True)
class ImagePair:
    """One registered pair: name is the shared file stem, a and b the two files."""

    name: str
    a: Path
    b: Path


def _describe_layouts() -> str:
    return ", ".join(f"{{{a}, {'|'.join(bs)}}}" for a, bs in PAIR_LAYOUTS)


def _find_layout(root: Path) -> tuple[Path, Path]:
    """The (A folder, B folder) of root; ValueError when none or more than one layout matches."""
    folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    matches = [(folders[a], folders[b]) for a, bs in PAIR_LAYOUTS if a in folders for b in bs if b in folders]
    if not matches:
        found = ", ".join(sorted(p.name for p in folders.values())) or "no sub-folders"
        raise ValueError(
            f"no pair layout found in {root} (found: {found}); expected two sub-folders, one of "
            f"{_describe_layouts()} (case-insensitive), with the same file names in both"
        )
    if len(matches) > 1:
        pairs = "; ".join(f"{a.name} + {b.name}" for a, b in matches)
        raise ValueError(f"{root} matches more than one pair layout ({pairs}); keep one B folder per root")
    return matches[0]


def _images_by_stem(folder: Path) -> dict[str, Path]:
    """stem -> image file in folder (hidden and non-image files skipped); ValueError on a repeated stem."""
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in images:
            first = images[path.stem].name
            raise ValueError(f"two images share the name {path.stem!r} in {folder}: {first}, {path.name}")
        images[path.stem] = path
    return images


def _unpaired_message(names: list[str], folder: Path, other: Path) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"{len(names)} image(s) in {folder} have no partner of the same name in {other}: {shown}"


def find_pairs(root: str | Path) -> list[ImagePair]:
    """All pairs under root, sorted by name.

    Args:
        root: a folder with one of the layouts of the module docstring.
    Returns:
        ImagePair(name, a, b) for every stem present in both folders, sorted by name.
    Raises:
        ValueError: root is not a folder, no layout (or more than one) matches, an image lacks its partner,
            or the folders hold no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; give the folder that holds the two source sub-folders")
    folder_a, folder_b = _find_layout(root)
    images_a, images_b = _images_by_stem(folder_a), _images_by_stem(folder_b)
    problems = []
    if only_a := sorted(set(images_a) - set(images_b)):
        problems.append(_unpaired_message([images_a[n].name for n in only_a], folder_a, folder_b))
    if only_b := sorted(set(images_b) - set(images_a)):
        problems.append(_unpaired_message([images_b[n].name for n in only_b], folder_b, folder_a))
    if problems:
        raise ValueError("; ".join(problems))
    if not images_a:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder_a} and {folder_b}")
    return [ImagePair(name, images_a[name], images_b[name]) for name in sorted(images_a)]


def find_images(folder: str | Path) -> dict[str, Path]:
    """name (file stem) -> image file of ``folder``, listed as the source folders of a pair root are.

    Raises:
        ValueError: ``folder`` is not a folder, or two of its images share a name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of images")
    return _images_by_stem(folder)


def case_of(name: str) -> str:
    """The case a Harvard-style name belongs to: the name without its last three digits (16003 -> 16)."""
    return name[:-3] if len(name) > 3 and name[-3:].isdigit() else name


def split_pairs(pairs: list[ImagePair], every: int = 5, *, by_case: bool = False
                ) -> tuple[list[ImagePair], list[ImagePair]]:
    """Deterministic hold-out: sort by name; positions every-1, 2*every-1, ... are test, the rest train.

    With ``by_case`` the positions are those of the sorted cases (``case_of``), and every pair of a test case
    is test: neighbouring slices of one case are near copies, so a split by file leaks them into both halves.
    Returns (train, test).
    """
    if every < 2:
        raise ValueError(f"every must be at least 2 (one test pair in every N), got {every}")
    ordered = sorted(pairs, key=lambda p: p.name)
    if by_case:
        held = set(sorted({case_of(p.name) for p in ordered})[every - 1::every])
        test = [p for p in ordered if case_of(p.name) in held]
    else:
        test = ordered[every - 1::every]
    return [p for p in ordered if p not in test], test


def write_split(root: str | Path, out_dir: str | Path, every: int = 5, *, by_case: bool = False) -> dict[str, int]:
    """Copy the pairs of root into out_dir/train and out_dir/test with root's folder names (``split_pairs``).

    Files are hard-linked where the file system allows, copied otherwise. Returns the pair count per split.
    """
    pairs = find_pairs(root)
    counts = {}
    for split, chosen in zip(("train", "test"), split_pairs(pairs, every, by_case=by_case), strict=True):
        for pair in chosen:
            for source in (pair.a, pair.b):
                target = Path(out_dir) / split / source.parent.name / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    _link_or_copy(source, target)
        counts[split] = len(chosen)
    return counts


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class PairDataset(Dataset):
    """Registered pairs held in memory as uint8, A gray and B RGB (a gray B repeated, docs/design.md §2).

    ``__getitem__`` gives whole images as float tensors in [0, 1]; ``crop_batch`` draws random crops and
    flips from a generator, so a batch is a pure function of (indices, generator state).
    Images are kept at 8 bits: 16-bit sources are rounded on loading.
    """

    def __init__(self, pairs: list[ImagePair]):
        if not pairs:
            raise ValueError("no image pairs to train on")
        self.names = [p.name for p in pairs]
        self.a: list[np.ndarray] = []
        self.b: list[np.ndarray] = []
        for pair in pairs:
            a, b = read_image(pair.a).pixels, read_image(pair.b).pixels
            if a.shape[:2] != b.shape[:2]:
                raise ValueError(f"pair {pair.name}: {pair.a} is {a.shape[1]}x{a.shape[0]} but {pair.b} is "
                                 f"{b.shape[1]}x{b.shape[0]}; every pair must have one size")
            self.a.append(to_uint8(luma(a) if a.ndim == 3 else a))
            self.b.append(to_uint8(b if b.ndim == 3 else np.repeat(b[..., None], 3, axis=2)))

    @classmethod
    def from_folder(cls, root: str | os.PathLike) -> PairDataset:
        return cls(find_pairs(root))

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole pair: A (1, H, W), B (3, H, W), float32 in [0, 1]."""
        return _to_tensor(self.a[index][..., None]), _to_tensor(self.b[index])

    def crop_batch(self, indices: list[int], crop: int, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random ``crop`` x ``crop`` windows with random flips: A (B, 1, c, c), B (B, 3, c, c) in [0, 1].

        Images smaller than the crop are reflect-padded first. A and B are cut at the same place.
        """
        a_crops, b_crops = [], []
        for index in indices:
            pair = torch.cat(self[index], dim=0)  # (4, H, W)
            if min(pair.shape[1:]) < crop:
                pair = pad_to_multiple(pair[None], crop)[0][0]
            top = int(torch.randint(0, pair.shape[1] - crop + 1, (1,), generator=generator))
            left = int(torch.randint(0, pair.shape[2] - crop + 1, (1,), generator=generator))
            pair = pair[:, top:top + crop, left:left + crop]
            flips = torch.rand(2, generator=generator)
            if flips[0] < 0.5:
                pair = pair.flip(-1)
            if flips[1] < 0.5:
                pair = pair.flip(-2)
            a_crops.append(pair[:1])
            b_crops.append(pair[1:])
        return torch.stack(a_crops), torch.stack(b_crops)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) -> float32 (C, H, W) in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0

