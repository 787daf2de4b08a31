"""Pair discovery and PairDataset crops on tiny synthetic folders in tmp_path.

The crop tests use pairs where B is a function of A (channels A, A + 1, A + 2 mod 256), so any crop or flip
that cuts A and B at different places breaks the relation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_core.data import PairDataset, case_of, find_pairs, split_pairs
from fusion_core.imaging import write_png


def _write_pair(root: Path, folder_a: str, folder_b: str, name: str, a: np.ndarray, b: np.ndarray) -> None:
    for folder, image in ((folder_a, a), (folder_b, b)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        write_png(root / folder / f"{name}.png", image)


def _related_pair(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A random gray uint8 A and an RGB B with channels A, A + 1, A + 2 (uint8 arithmetic wraps mod 256)."""
    a = rng.integers(0, 256, (height, width), dtype=np.uint8)
    return a, np.stack([a, a + 1, a + 2], axis=-1).astype(np.uint8)


def _related_dataset(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> PairDataset:
    rng = np.random.default_rng(seed)
    for index, (height, width) in enumerate(sizes):
        _write_pair(root, "ir", "vi", f"{index:03d}", *_related_pair(rng, height, width))
    return PairDataset.from_folder(root)


def _as_uint8(batch: torch.Tensor) -> np.ndarray:
    return np.rint(batch.numpy() * 255).astype(np.uint8)


def _assert_related(a_crops: torch.Tensor, b_crops: torch.Tensor) -> None:
    """Every B crop is (A, A + 1, A + 2) of its A crop, pixel for pixel."""
    a, b = _as_uint8(a_crops)[:, 0], _as_uint8(b_crops)
    for channel in range(3):
        np.testing.assert_array_equal(b[:, channel], (a + channel).astype(np.uint8))


def _orientations(crop: np.ndarray) -> dict[str, np.ndarray]:
    return {"none": crop, "horizontal": crop[:, ::-1], "vertical": crop[::-1], "both": crop[::-1, ::-1]}


def _flip_of_window(crop: np.ndarray, image: np.ndarray) -> str | None:
    """Which flip of ``crop`` is a window of ``image`` (None when no flip is)."""
    windows = np.lib.stride_tricks.sliding_window_view(image, crop.shape)
    for flip, oriented in _orientations(crop).items():
        if (windows == oriented).all(axis=(-2, -1)).any():
            return flip
    return None


@pytest.mark.parametrize("folder_a, folder_b", [
    ("ir", "vi"), ("IR", "Vi"), ("MRI", "CT"), ("mri", "pet"), ("Mri", "SPECT"), ("A", "B"), ("a", "b"),
])
def test_find_pairs_recognises_each_layout_case_insensitively(tmp_path, rng, folder_a, folder_b):
    for name in ("002", "001"):
        _write_pair(tmp_path, folder_a, folder_b, name, *_related_pair(rng, 8, 8))
    pairs = find_pairs(tmp_path)
    assert [p.name for p in pairs] == ["001", "002"]
    assert [(p.a, p.b) for p in pairs] == [
        (tmp_path / folder_a / f"{n}.png", tmp_path / folder_b / f"{n}.png") for n in ("001", "002")
    ]


def test_missing_partners_are_refused_naming_the_files(tmp_path, rng):
    _write_pair(tmp_path, "MRI", "CT", "both", *_related_pair(rng, 8, 8))
    write_png(tmp_path / "MRI" / "only_mri.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "CT" / "only_ct.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"only_mri\.png.*only_ct\.png"):
        find_pairs(tmp_path)


def test_pairs_of_different_sizes_are_refused_naming_the_files(tmp_path, rng):
    a, _ = _related_pair(rng, 16, 20)
    _, b = _related_pair(rng, 16, 24)
    _write_pair(tmp_path, "A", "B", "odd", a, b)
    with pytest.raises(ValueError) as error:
        PairDataset.from_folder(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "A" / "odd.png") in message and str(tmp_path / "B" / "odd.png") in message
    assert "20x16" in message and "24x16" in message


@pytest.mark.parametrize("folders", [("ir", "vi", "A", "B"), ("MRI", "CT", "PET")])
def test_two_layouts_in_one_root_are_refused(tmp_path, folders):
    for folder in folders:
        (tmp_path / folder).mkdir()
    with pytest.raises(ValueError, match="more than one pair layout"):
        find_pairs(tmp_path)


def test_crops_of_a_and_b_line_up_pixel_for_pixel_through_flips(tmp_path):
    dataset = _related_dataset(tmp_path, [(40, 48), (37, 53), (32, 32)])
    generator = torch.Generator().manual_seed(0)
    flips = set()
    for _ in range(8):
        indices = [0, 1, 2, 0]
        a_crops, b_crops = dataset.crop_batch(indices, 16, generator)
        assert a_crops.shape == (4, 1, 16, 16) and b_crops.shape == (4, 3, 16, 16)
        _assert_related(a_crops, b_crops)
        for index, crop in zip(indices, _as_uint8(a_crops)[:, 0], strict=True):
            flip = _flip_of_window(crop, dataset.a[index])
            assert flip is not None
            flips.add(flip)
    assert flips == {"none", "horizontal", "vertical", "both"}


def test_same_generator_seed_gives_the_same_batch(tmp_path):
    dataset = _related_dataset(tmp_path, [(40, 48), (37, 53)])
    first, again, other = (dataset.crop_batch([0, 1, 1], 16, torch.Generator().manual_seed(seed))
                           for seed in (7, 7, 8))
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


def test_images_smaller_than_the_crop_are_padded(tmp_path):
    dataset = _related_dataset(tmp_path, [(12, 20)])
    a_crops, b_crops = dataset.crop_batch([0, 0, 0, 0], 32, torch.Generator().manual_seed(0))
    assert a_crops.shape == (4, 1, 32, 32) and b_crops.shape == (4, 3, 32, 32)
    _assert_related(a_crops, b_crops)
    for crop in _as_uint8(a_crops)[:, 0]:
        assert any(np.array_equal(oriented[:12, :20], dataset.a[0]) for oriented in _orientations(crop).values())


def test_gray_b_is_repeated_to_three_channels(tmp_path, rng):
    a = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    _write_pair(tmp_path, "MRI", "PET", "gray", a, a)
    dataset = PairDataset.from_folder(tmp_path)
    whole_a, whole_b = dataset[0]
    assert whole_a.shape == (1, 20, 24) and whole_b.shape == (3, 20, 24)
    a_crops, b_crops = dataset.crop_batch([0, 0], 16, torch.Generator().manual_seed(0))
    for channel in range(3):
        assert torch.equal(b_crops[:, channel], a_crops[:, 0])


def test_split_by_case_keeps_every_slice_of_a_case_on_one_side(tmp_path, rng):
    names = [f"{case}{slice_:03d}" for case in (2, 16, 20, 33, 41) for slice_ in (1, 2, 3)]
    for name in names:
        _write_pair(tmp_path, "MRI", "CT", name, *_related_pair(rng, 8, 8))
    train, test = split_pairs(find_pairs(tmp_path), every=5, by_case=True)
    assert {case_of(p.name) for p in test} == {"41"}  # the 5th of the sorted cases 16, 2, 20, 33, 41
    assert len(test) == 3 and len(train) == 12
    assert not {case_of(p.name) for p in train} & {case_of(p.name) for p in test}
    by_file_train, by_file_test = split_pairs(find_pairs(tmp_path), every=5)
    assert {case_of(p.name) for p in by_file_train} & {case_of(p.name) for p in by_file_test}  # the leak


def test_case_of_strips_the_slice_number():
    assert case_of("16003") == "16" and case_of("2017") == "2" and case_of("00040N") == "00040N"
