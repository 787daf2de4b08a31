"""Batch evaluation (built-in methods and other methods' fused images) and pair discovery on tiny synthetic
folders in tmp_path."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusion_core.baselines import BASELINES, fuse_average
from fusion_core.data import ImagePair, find_pairs
from fusion_core.evaluate import evaluate_folder, format_markdown_table, fuse_methods, mean_ranks, score_methods
from fusion_core.imaging import read_image, to_uint8, write_tiff16
from fusion_core.metrics import METRICS, PAPER_METRICS, compute_metrics

SHAPE = (24, 30)  # at least 17x17 for VIF


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _make_ivf_folder(root: Path, names=("001", "002", "003"), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name in names:
        _write(root / "ir" / f"{name}.png", rng.integers(0, 256, SHAPE, dtype=np.uint8))
        _write(root / "vi" / f"{name}.png", rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8))
    return root


class CountingMethod:
    """Wraps a fusion function and counts its calls (to see reuse of fused outputs)."""

    def __init__(self, fuse):
        self.fuse, self.calls = fuse, 0

    def __call__(self, a, b):
        self.calls += 1
        return self.fuse(a, b)


def _flat(a, b):
    return np.full(b.shape, 0.5)


def _markdown_rows(text: str) -> dict[str, list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    return {cells[0]: cells for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows[2:])} | {
        "header": header
    }


# ------------------------------------------------------------------------------------------- pair discovery


def test_find_pairs_recognises_the_layouts(tmp_path):
    for folder_a, folder_b in (("ir", "vi"), ("MRI", "PET"), ("mri", "Spect"), ("A", "B")):
        root = tmp_path / f"{folder_a}_{folder_b}"
        for name in ("b2", "a1"):
            (root / folder_a).mkdir(parents=True, exist_ok=True)
            (root / folder_b).mkdir(parents=True, exist_ok=True)
            (root / folder_a / f"{name}.png").write_bytes(b"")
            (root / folder_b / f"{name}.jpg").write_bytes(b"")
        (root / folder_a / "notes.txt").write_text("not an image")
        (root / folder_b / ".hidden.png").write_bytes(b"")
        pairs = find_pairs(root)
        assert [p.name for p in pairs] == ["a1", "b2"]
        assert pairs[0] == ImagePair("a1", root / folder_a / "a1.png", root / folder_b / "a1.jpg")


def test_find_pairs_names_the_unpaired_files(tmp_path):
    for folder, names in (("ir", ("x", "y")), ("vi", ("x", "z"))):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / f"{name}.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"y\.png.*z\.png"):
        find_pairs(tmp_path)


def test_find_pairs_lists_the_layouts_when_none_matches(tmp_path):
    (tmp_path / "left").mkdir()
    with pytest.raises(ValueError, match=r"\{ir, vi\}.*\{mri, ct\|pet\|spect\}.*\{a, b\}"):
        find_pairs(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        find_pairs(tmp_path / "missing")


def test_find_pairs_rejects_ambiguous_layouts_and_repeated_names(tmp_path):
    for folder in ("MRI", "CT", "PET"):
        (tmp_path / "medical" / folder).mkdir(parents=True)
    with pytest.raises(ValueError, match="more than one pair layout"):
        find_pairs(tmp_path / "medical")
    for folder in ("A", "B"):
        (tmp_path / "dup" / folder).mkdir(parents=True)
        (tmp_path / "dup" / folder / "s.png").write_bytes(b"")
    (tmp_path / "dup" / "A" / "s.tif").write_bytes(b"")
    with pytest.raises(ValueError, match="share the name 's'"):
        find_pairs(tmp_path / "dup")


# ----------------------------------------------------------------------------------------------- evaluation


@pytest.mark.slow
def test_evaluate_folder_writes_every_output(tmp_path):
    root = _make_ivf_folder(tmp_path / "pairs")
    calls = []
    result = evaluate_folder(
        root, {"average": fuse_average, "flat": _flat}, tmp_path / "out",
        progress=lambda done, total, text: calls.append((done, total, text)),
    )
    assert result.num_pairs == 3 and result.methods == ("average", "flat")
    assert [(r.name, r.method) for r in result.rows][:2] == [("001", "average"), ("001", "flat")]
    assert [c[:2] for c in calls] == [(i, 6) for i in range(1, 7)]
    for key in ("per_image_csv", "means_csv", "means_md", "means_png"):
        assert result.files[key].is_file()
    for method in ("average", "flat"):
        fused = np.asarray(Image.open(tmp_path / "out" / "fused" / method / "002.png"))
        assert fused.shape == (*SHAPE, 3) and fused.dtype == np.uint8
    with open(result.files["per_image_csv"], newline="") as handle:
        per_image = list(csv.DictReader(handle))
    assert len(per_image) == 6 and set(per_image[0]) == {"name", "method", *METRICS, "convention"}
    assert per_image[0]["convention"] == "standard"
    mean_en = np.mean([float(r["EN"]) for r in per_image if r["method"] == "average"])
    assert result.means["average"]["EN"] == pytest.approx(mean_en, rel=1e-12)
    with Image.open(result.files["means_png"]) as chart:
        assert chart.format == "PNG" and chart.size[0] > 400


def test_markdown_marks_best_values_and_names_the_convention(tmp_path):
    root = _make_ivf_folder(tmp_path / "pairs")
    result = evaluate_folder(root, {"average": fuse_average, "flat": _flat}, tmp_path / "out", convention="published")
    text = result.files["means_md"].read_text()
    assert text.startswith("Metric convention: published")
    rows = _markdown_rows(text)
    assert rows["header"] == ["method", *METRICS, "mean rank"]
    column = rows["header"].index("EN")
    # A constant image has EN 0 and SF 0, so the average of two random images wins both columns.
    assert rows["average"][column].startswith("**") and not rows["flat"][column].startswith("**")
    assert rows["average"][rows["header"].index("SF")].startswith("**")
    # Ranks over the 7 paper metrics with two methods: each rank is 1 or 2 (1.5 on ties), summing to 3.
    assert sum(result.mean_rank.values()) == pytest.approx(3.0)
    assert result.mean_rank["average"] < result.mean_rank["flat"]


@pytest.mark.slow
def test_second_run_reuses_fused_images(tmp_path):
    root = _make_ivf_folder(tmp_path / "pairs")
    method = CountingMethod(fuse_average)
    first = evaluate_folder(root, {"average": method}, tmp_path / "out")
    assert method.calls == 3
    second = evaluate_folder(root, {"average": method}, tmp_path / "out")
    assert method.calls == 3
    assert [r.values for r in second.rows] == [r.values for r in first.rows]
    evaluate_folder(root, {"average": method}, tmp_path / "out", reuse=False)
    assert method.calls == 6


def test_evaluate_folder_rejects_bad_methods_and_pairs(tmp_path):
    root = _make_ivf_folder(tmp_path / "pairs", names=("001",))
    with pytest.raises(ValueError, match="plain folder name"):
        evaluate_folder(root, {"../escape": fuse_average}, tmp_path / "out")
    with pytest.raises(ValueError, match="no methods"):
        evaluate_folder(root, {}, tmp_path / "out")
    with pytest.raises(ValueError, match="returned shape"):
        evaluate_folder(root, {"cropped": lambda a, b: b[1:]}, tmp_path / "out")
    with pytest.raises(ValueError, match="convention"):
        evaluate_folder(root, {"average": fuse_average}, tmp_path / "out", convention="bits")
    _write(root / "vi" / "001.png", np.zeros((20, 20, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="same size"):
        evaluate_folder(root, {"average": fuse_average}, tmp_path / "out2")


def test_fuse_methods_gives_each_method_a_gray_a_and_returns_uint8():
    rng = np.random.default_rng(1)
    a = read_image(rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8))  # an RGB A: methods get its luma
    b = read_image(rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8))
    seen = []

    def spy(a_in, b_in):
        seen.append((a_in.shape, b_in.shape))
        return b_in

    fused = fuse_methods({"spy": spy, **BASELINES}, a, b, pair="p")
    assert list(fused) == ["spy", *BASELINES] and seen == [(SHAPE, (*SHAPE, 3))]
    assert all(image.dtype == np.uint8 and image.shape == (*SHAPE, 3) for image in fused.values())
    np.testing.assert_array_equal(fused["spy"], np.rint(b.pixels * 255))
    with pytest.raises(ValueError, match="'cropped' returned shape .* for pair 'p'"):
        fuse_methods({"cropped": lambda a, b: b[1:]}, a, b, pair="p")


@pytest.mark.slow
def test_score_methods_scores_against_the_stored_sources_and_matches_evaluate_folder(tmp_path):
    root = _make_ivf_folder(tmp_path / "pairs", names=("001",))
    a, b = read_image(root / "ir" / "001.png"), read_image(root / "vi" / "001.png")
    fused = fuse_methods({"average": fuse_average, "flat": _flat}, a, b)
    scores = score_methods(fused, a, b, convention="published")
    a8, b8 = np.asarray(Image.open(root / "ir" / "001.png")), np.asarray(Image.open(root / "vi" / "001.png"))
    assert list(scores) == ["average", "flat"] and list(scores["flat"]) == list(METRICS)
    assert scores["average"] == compute_metrics(fused["average"], a8, b8, convention="published").values
    result = evaluate_folder(root, {"average": fuse_average, "flat": _flat}, tmp_path / "out", convention="published")
    assert {row.method: row.values for row in result.rows} == scores


# ------------------------------------------------------------------------------------------ external methods


def _external_folder(folder: Path, names=("001", "002", "003"), seed: int = 5) -> Path:
    """Another method's fused images: gray for 001, colour for the others; 003 as a 16-bit TIFF."""
    rng = np.random.default_rng(seed)
    for name in names:
        if name == "003":
            folder.mkdir(parents=True, exist_ok=True)
            write_tiff16(folder / f"{name}.tif", rng.integers(0, 65536, (*SHAPE, 3), dtype=np.uint16))
        else:
            _write(folder / f"{name}.png", rng.integers(0, 256, SHAPE if name == "001" else (*SHAPE, 3), np.uint8))
    return folder


def test_external_images_are_scored_as_compute_metrics_scores_them_one_by_one(tmp_path):
    root = _make_ivf_folder(tmp_path / "pairs")
    other = _external_folder(tmp_path / "other")
    result = evaluate_folder(root, {"average": fuse_average}, tmp_path / "out", external={"other": other})
    assert result.methods == ("average", "other")
    assert [(r.name, r.method) for r in result.rows][:2] == [("001", "average"), ("001", "other")]
    for name, suffix in (("001", ".png"), ("002", ".png"), ("003", ".tif")):
        fused = to_uint8(read_image(other / f"{name}{suffix}").pixels)
        a, b = (np.asarray(Image.open(root / folder / f"{name}.png")) for folder in ("ir", "vi"))
        row = next(r for r in result.rows if (r.name, r.method) == (name, "other"))
        assert row.values == compute_metrics(fused, a, b).values
    means = _markdown_rows(result.files["means_md"].read_text())
    assert "other" in means and set(result.mean_rank) == {"average", "other"}
    assert not (tmp_path / "out" / "fused" / "other").exists()  # read in place, not copied


def test_missing_external_images_are_named_before_anything_is_fused(tmp_path):
    root = _make_ivf_folder(tmp_path / "pairs")
    other = _external_folder(tmp_path / "other", names=("002",))
    method = CountingMethod(fuse_average)
    with pytest.raises(ValueError, match=r"method 'other' has no image in .*other of 2 pair\(s\): 001, 003"):
        evaluate_folder(root, {"average": method}, tmp_path / "out", external={"other": other})
    assert method.calls == 0


def test_wrong_size_and_unreadable_external_images_are_named(tmp_path):
    root = _make_ivf_folder(tmp_path / "pairs")
    other = _external_folder(tmp_path / "other")
    _write(other / "002.png", np.zeros((SHAPE[0], SHAPE[1] - 2), np.uint8))
    (other / "001.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"2 external image\(s\) cannot be scored: method 'other', pair 001: .*"
                                         r"not a recognised image.*pair 002: 002.png is 28x24, the pair is 30x24"):
        evaluate_folder(root, {"average": fuse_average}, tmp_path / "out", external={"other": other})
    assert not (tmp_path / "out" / "means.csv").exists()


def test_external_names_must_be_new_folder_names(tmp_path):
    root = _make_ivf_folder(tmp_path / "pairs", names=("001",))
    other = _external_folder(tmp_path / "other", names=("001",))
    with pytest.raises(ValueError, match=r"method name\(s\) average given both as a method and as external images"):
        evaluate_folder(root, {"average": fuse_average}, tmp_path / "out", external={"average": other})
    with pytest.raises(ValueError, match="is not a folder of images"):
        evaluate_folder(root, {}, tmp_path / "out", external={"other": tmp_path / "nowhere"})
    only = evaluate_folder(root, {}, tmp_path / "out", external={"other": other})  # no built-in method needed
    assert only.methods == ("other",) and only.mean_rank == {"other": 1.0}


# ---------------------------------------------------------------------------------------------------- tables


def test_format_markdown_table_and_mean_ranks():
    means = {
        "x": {label: 1.0 for label in METRICS},
        "y": {label: 2.0 for label in METRICS} | {"EN": 1.0},
    }
    ranks = mean_ranks(means)
    # y wins 6 of the 7 paper metrics; EN is a tie (both 1.5): x = (6 * 2 + 1.5) / 7, y = (6 + 1.5) / 7.
    assert ranks == pytest.approx({"x": 13.5 / 7, "y": 7.5 / 7})
    text = format_markdown_table(means, convention="standard", mean_rank=ranks, caption="two rows")
    lines = text.splitlines()
    assert lines[0].startswith("Metric convention: standard") and lines[2] == "two rows"
    rows = _markdown_rows(text)
    assert rows["x"][1] == "**1.0000**" and rows["y"][1] == "**1.0000**"  # EN tie: both bold
    assert rows["y"][2] == "**2.0000**" and rows["x"][2] == "1.0000"
    assert rows["y"][-1] == f"**{7.5 / 7:.4f}**"  # lowest mean rank is best
    assert len(PAPER_METRICS) == 7
