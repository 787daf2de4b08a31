"""The command line on tiny synthetic pairs in tmp_path and a checkpoint of the tiny fixture."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from conftest import SIZE, write_pairs
from fusion_core.checkpoint import CheckpointError, load_pipeline
from fusion_core.cli import fuse as fuse_command
from fusion_core.cli import main
from fusion_core.imaging import read_image, read_pair, to_uint8, write_fused
from fusion_core.pipeline import FusionPipeline, FusionResult


@pytest.fixture
def pairs(tmp_path) -> Path:
    return write_pairs(tmp_path / "pairs", ("001",))


def _fuse(pairs: Path, checkpoint: Path, output: Path, *extra: str) -> int:
    a, b = pairs / "ir" / "001.png", pairs / "vi" / "001.png"
    return main(["fuse", str(a), str(b), "-o", str(output), "--checkpoint", str(checkpoint), *extra])


def _reference(pairs: Path, checkpoint: Path, seed: int = 0) -> tuple[FusionResult, np.ndarray]:
    """What the CLI should have fused: the same files, checkpoint and seed, in this process; and B."""
    pair = read_pair(pairs / "ir" / "001.png", pairs / "vi" / "001.png")
    result = load_pipeline(checkpoint).fuse(pair.a.pixels, pair.b.pixels,
                                            generator=torch.Generator().manual_seed(seed))
    return result, pair.b.pixels


# -------------------------------------------------------------------------------------------------- fuse


def test_fuse_png_holds_the_pipeline_image(pairs, checkpoint, tmp_path, capsys):
    assert _fuse(pairs, checkpoint, tmp_path / "fused.png") == 0
    result, _ = _reference(pairs, checkpoint)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "fused.png")), result.fused)
    assert f"({SIZE}x{SIZE})" in capsys.readouterr().out


def test_fuse_warns_which_frame_of_a_multi_page_tiff_it_read(pairs, checkpoint, tmp_path, capsys):
    a = Image.open(pairs / "ir" / "001.png")
    a.save(pairs / "ir" / "001.tif", save_all=True, append_images=[Image.new("L", a.size)])
    code = main(["fuse", str(pairs / "ir" / "001.tif"), str(pairs / "vi" / "001.png"), "-o", str(tmp_path / "f.png"),
                 "--checkpoint", str(checkpoint)])
    assert code == 0
    result, _ = _reference(pairs, checkpoint)  # frame 0 is the PNG's image
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "f.png")), result.fused)
    assert "warning: A: the TIFF file holds 2 frames; frame 0 (counting from 0) was read" in capsys.readouterr().err


def test_fuse_colour_tiff_is_16_bit_and_equals_the_shared_writer(pairs, checkpoint, tmp_path):
    assert _fuse(pairs, checkpoint, tmp_path / "fused.tif") == 0
    result, b = _reference(pairs, checkpoint)
    write_fused(tmp_path / "reference.tif", result.y_fused, b)
    assert (tmp_path / "fused.tif").read_bytes() == (tmp_path / "reference.tif").read_bytes()
    stored = np.rint(read_image(tmp_path / "fused.tif").pixels.astype(np.float64) * 65535)
    assert stored.shape == (SIZE, SIZE, 3)
    assert len(np.unique(stored)) > 4096 and np.any(stored % 257)  # not 8-bit levels scaled by 257
    np.testing.assert_array_equal(to_uint8(stored / 65535), result.fused)


def test_fuse_gray_tiff_holds_the_luminance(tmp_path, checkpoint):
    gray = write_pairs(tmp_path / "gray", ("001",), colour=False)
    assert _fuse(gray, checkpoint, tmp_path / "fused.tiff") == 0
    result, _ = _reference(gray, checkpoint)
    stored = np.rint(read_image(tmp_path / "fused.tiff").pixels.astype(np.float64) * 65535)
    # float32 arithmetic, as the pipeline's 8-bit image of a gray pair uses (both keep y_fused's dtype)
    np.testing.assert_array_equal(stored, np.round(result.y_fused * 65535.0))
    assert len(np.unique(stored)) > 256


def test_fuse_dicom_is_an_anonymous_secondary_capture_of_the_fused_image(pairs, checkpoint, tmp_path):
    assert _fuse(pairs, checkpoint, tmp_path / "fused.dcm", "--seed", "3") == 0
    dataset = pydicom.dcmread(tmp_path / "fused.dcm")
    assert dataset.PhotometricInterpretation == "RGB" and dataset.PatientID == "ANONYMOUS"
    result, _ = _reference(pairs, checkpoint, seed=3)
    np.testing.assert_array_equal(dataset.pixel_array, result.fused)


@pytest.mark.parametrize("extra, message", [
    (("-o", "fused.jpg"), r"'fused\.jpg'.*\.png, \.tif or \.tiff \(16-bit\) or \.dcm"),
    (("-o", "fused.png", "--timesteps", "5,5,100"), r"\[5\] repeat"),
    (("-o", "fused.png", "--timesteps", "5,50,1000"), r"0\.\.999"),
])
def test_fuse_refuses_bad_names_and_timesteps_in_one_line(pairs, checkpoint, tmp_path, capsys, monkeypatch,
                                                         extra, message):
    monkeypatch.chdir(tmp_path)
    code = main(["fuse", str(pairs / "ir" / "001.png"), str(pairs / "vi" / "001.png"), "--checkpoint",
                 str(checkpoint), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert re.search(message, err)
    assert not list(tmp_path.glob("fused.*"))


# ---------------------------------------------------------------------------------------------- evaluate


@pytest.mark.slow
def test_evaluate_tabulates_the_network_and_a_baseline(tmp_path, checkpoint, capsys):
    root = write_pairs(tmp_path / "pairs", ("001", "002"))
    out = tmp_path / "evaluation"
    code = main(["evaluate", str(root), "--methods", "dgd,average", "--checkpoint", str(checkpoint),
                 "--out", str(out)])
    assert code == 0
    with open(out / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["name"], r["method"]) for r in rows] == [("001", "dgd"), ("001", "average"), ("002", "dgd"),
                                                        ("002", "average")]
    result, _ = _reference(root, checkpoint)  # the dgd method fuses each pair with seed 0
    np.testing.assert_array_equal(np.asarray(Image.open(out / "fused" / "dgd" / "001.png")), result.fused)
    printed = capsys.readouterr().out
    assert "| dgd |" in printed and "| average |" in printed and "2 pairs x 2 methods" in printed


def test_evaluate_refuses_an_unknown_method(pairs, tmp_path, capsys):
    assert main(["evaluate", str(pairs), "--methods", "average,magic", "--out", str(tmp_path / "o")]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_and_compare_score_an_external_method_beside_the_others(tmp_path, capsys):
    root = write_pairs(tmp_path / "pairs", ("001", "002"))
    other = tmp_path / "theirs"
    other.mkdir()
    for name in ("001", "002"):  # another method's results: here, the visible image itself
        (other / f"{name}.png").write_bytes((root / "vi" / f"{name}.png").read_bytes())
    assert main(["evaluate", str(root), "--methods", "average", "--external", f"theirs={other}",
                 "--out", str(tmp_path / "evaluation")]) == 0
    with open(tmp_path / "evaluation" / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["name"], r["method"]) for r in rows] == [("001", "average"), ("001", "theirs"), ("002", "average"),
                                                        ("002", "theirs")]
    assert "| theirs |" in capsys.readouterr().out
    assert main(["compare", "--data", str(root), "--methods", "average", "--external", f"theirs={other}",
                 "--reference", "theirs", "--out", str(tmp_path / "comparison")]) == 0
    assert "## theirs relative to each method" in (tmp_path / "comparison" / "comparison.md").read_text()
    (other / "002.png").unlink()
    assert main(["evaluate", str(root), "--methods", "average", "--external", f"theirs={other}",
                 "--out", str(tmp_path / "again")]) == 2
    assert "method 'theirs' has no image in" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- fuse a folder


def _fuse_folder(root: Path, checkpoint: Path, out: Path, *extra: str) -> int:
    return main(["fuse", str(root), "-o", str(out), "--checkpoint", str(checkpoint), "--device", "cpu", *extra])


def _pair_reference(root: Path, checkpoint: Path, name: str) -> np.ndarray:
    pair = read_pair(root / "ir" / f"{name}.png", root / "vi" / f"{name}.png")
    result = load_pipeline(checkpoint).fuse(pair.a.pixels, pair.b.pixels, generator=torch.Generator().manual_seed(0))
    return result.fused


@pytest.fixture
def folder_with_a_corrupt_pair(tmp_path) -> Path:
    root = write_pairs(tmp_path / "pairs", ("001", "002", "003"))
    (root / "vi" / "002.png").write_bytes(b"not an image at all")
    return root


def test_fuse_folder_fuses_the_good_pairs_and_lists_the_bad_one(folder_with_a_corrupt_pair, checkpoint, tmp_path,
                                                              capsys):
    out = tmp_path / "fused"
    assert _fuse_folder(folder_with_a_corrupt_pair, checkpoint, out, "--batch", "2") == 1
    assert sorted(p.name for p in out.iterdir()) == ["001.png", "003.png", "failures.csv"]  # no partial files
    for name in ("001", "003"):
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{name}.png")),
                                      _pair_reference(folder_with_a_corrupt_pair, checkpoint, name))
    with open(out / "failures.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["name"], Path(r["b"]).name) for r in rows] == [("002", "002.png")]
    assert rows[0]["error"].startswith("image B: not a recognised image")
    printed = capsys.readouterr()
    assert "fused 2 pairs, skipped 0 already fused, 1 failed" in printed.out and "failed: 002: image B" in printed.err


def test_fuse_folder_warns_which_frame_of_a_multi_page_tiff_it_read(pairs, checkpoint, tmp_path, capsys):
    a = Image.open(pairs / "ir" / "001.png")
    a.save(pairs / "ir" / "001.tif", save_all=True, append_images=[Image.new("L", a.size)])
    (pairs / "ir" / "001.png").unlink()
    assert _fuse_folder(pairs, checkpoint, tmp_path / "fused") == 0
    assert "warning: 001: A: the TIFF file holds 2 frames; frame 0" in capsys.readouterr().err


def test_fuse_folder_resumes_with_the_missing_pairs_only(folder_with_a_corrupt_pair, checkpoint, tmp_path,
                                                       monkeypatch, capsys):
    out = tmp_path / "fused"
    _fuse_folder(folder_with_a_corrupt_pair, checkpoint, out, "--format", "tif")
    (out / "003.tif").unlink()
    Image.fromarray(np.full((SIZE, SIZE), 7, np.uint8)).save(out / "001.tif")  # stands for a finished output
    (folder_with_a_corrupt_pair / "vi" / "002.png").write_bytes((folder_with_a_corrupt_pair / "vi" / "001.png")
                                                               .read_bytes())  # repaired
    fused = []
    original = FusionPipeline.fuse_batch
    monkeypatch.setattr(FusionPipeline, "fuse_batch",
                        lambda self, pairs, **kw: fused.append(len(pairs)) or original(self, pairs, **kw))
    assert _fuse_folder(folder_with_a_corrupt_pair, checkpoint, out, "--format", "tif") == 0
    assert sum(fused) == 2 and "fused 2 pairs, skipped 1 already fused ->" in capsys.readouterr().out
    assert np.all(np.asarray(Image.open(out / "001.tif")) == 7)  # not fused again
    assert sorted(p.name for p in out.iterdir()) == ["001.tif", "002.tif", "003.tif"]  # failures.csv is gone
    assert _fuse_folder(folder_with_a_corrupt_pair, checkpoint, out, "--format", "tif", "--overwrite") == 0
    assert sum(fused) == 5 and not np.all(np.asarray(Image.open(out / "001.tif")) == 7)


def test_fuse_folder_leaves_no_half_file_when_a_write_is_interrupted(pairs, checkpoint, tmp_path, monkeypatch):
    from fusion_core.imaging import write

    def interrupted(fd, data):
        os.write(fd, data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(write, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _fuse_folder(pairs, checkpoint, tmp_path / "fused")
    assert list((tmp_path / "fused").iterdir()) == []


def test_fuse_folder_in_batches_writes_the_files_of_one_pair_at_a_time(checkpoint, tmp_path):
    """--batch 4 (a chunk of four same-size pairs, then one of one) writes, byte for byte, what --batch 1 writes;
    16-bit TIFFs, in which a last-bit difference of Y_F shows (8-bit PNGs mostly round it away)."""
    root = write_pairs(tmp_path / "pairs", ("001", "002", "003", "004", "005"))
    for batch in ("1", "4"):
        assert _fuse_folder(root, checkpoint, tmp_path / batch, "--batch", batch, "--format", "tif") == 0
    one = {p.name: p.read_bytes() for p in sorted((tmp_path / "1").iterdir())}
    four = {p.name: p.read_bytes() for p in sorted((tmp_path / "4").iterdir())}
    assert list(one) == list(four) == [f"00{i}.tif" for i in range(1, 6)]
    assert [name for name in one if four[name] != one[name]] == []


@pytest.mark.parametrize("make_args, message", [
    (lambda pairs: [str(pairs / "ir" / "001.png"), "-o", "x"], "is not a folder of pairs; to fuse one pair"),
    (lambda pairs: [str(pairs / "ir" / "001.png"), str(pairs / "vi" / "001.png"), "-o", "x.png", "--batch", "2"],
     "are for a folder of pairs"),
    (lambda pairs: [str(pairs), "-o", "x", "--batch", "0"], "batch size must be at least 1"),
    (lambda pairs: [str(pairs), "-o", "x", "--timesteps", "5,50"], "reads 3 feature timesteps, got 2"),
])
def test_fuse_usage_errors_exit_with_2(pairs, tmp_path, capsys, monkeypatch, make_args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["fuse", *make_args(pairs), "--preset", "tiny"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------ clear errors everywhere


def _one_error_line(capsys) -> str:
    """The stderr of a refused command: exactly one ``error: ...`` line, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ") or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("output, message", [
    ("missing/out.png", r"output folder .*missing does not exist; create it first"),
    ("file.txt/out.png", r"file\.txt is a file, not a folder"),
])
def test_fuse_refuses_an_output_folder_it_cannot_write_into(pairs, checkpoint, tmp_path, capsys, output, message):
    (tmp_path / "file.txt").write_text("not a folder")
    assert _fuse(pairs, checkpoint, tmp_path / output) == 2
    assert re.search(message, _one_error_line(capsys))
    assert not (tmp_path / "missing").exists() and (tmp_path / "file.txt").read_text() == "not a folder"


def _unwritable(tmp_path: Path) -> tuple[Path, str]:
    """A folder path that cannot be created even by root (it lies under a file), and what the refusal says."""
    (tmp_path / "file.txt").write_text("not a folder")
    return tmp_path / "file.txt" / "out", r"file\.txt is a file, not a folder"


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_train_and_evaluate_refuse_an_out_folder_that_cannot_be_created(pairs, tmp_path, capsys, command):
    out, message = _unwritable(tmp_path)
    args = (["train", "--data", str(pairs), "--preset", "tiny", "--steps", "1", "--batch", "1", "--crop", "64"]
            if command == "train" else ["evaluate", str(pairs), "--methods", "average"])
    assert main([*args, "--out", str(out), "--device", "cpu"]) == 2
    line = _one_error_line(capsys)
    assert re.search(message, line) and str(out) in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_evaluate_refuses_a_read_only_location_naming_it(pairs, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["evaluate", str(pairs), "--methods", "average", "--out", str(locked / "eval")]) == 2
        assert f"{locked} is read-only" in _one_error_line(capsys)
        assert not (locked / "eval").exists()
    finally:
        locked.chmod(0o700)


def test_evaluate_creates_a_missing_out_folder(pairs, tmp_path):
    out = tmp_path / "new" / "nested" / "eval"
    assert main(["evaluate", str(pairs), "--methods", "average", "--out", str(out)]) == 0
    assert (out / "per_image.csv").is_file()


@pytest.mark.parametrize("device, message", [
    ("banana", r"--device 'banana' is not a device: use cpu, cuda or cuda:N; CUDA is (not )?present"),
    ("cuda:99", r"--device cuda:99: CUDA is (not )?present.*; use cpu"),
])
def test_fuse_refuses_an_unknown_or_absent_device_listing_the_allowed_ones(pairs, checkpoint, tmp_path, capsys,
                                                                         device, message):
    assert _fuse(pairs, checkpoint, tmp_path / "fused.png", "--device", device) == 2
    assert re.search(message, _one_error_line(capsys))
    assert not (tmp_path / "fused.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_fuse_refuses_cuda_where_there_is_none(pairs, checkpoint, tmp_path, capsys):
    assert _fuse(pairs, checkpoint, tmp_path / "fused.png", "--device", "cuda") == 2
    assert _one_error_line(capsys) == "error: --device cuda: CUDA is not present; use cpu"


@pytest.mark.parametrize("part, field, value, message", [
    ("unet", "channels", [100000], r"unet\.channels must be a whole number in 1\.\.4096, got 100000"),
    ("unet", "num_experts", -1, r"unet\.num_experts must be a whole number in 1\.\.64, got -1"),
    ("unet", "channels", "abc", r"unet\.channels must be a list of 1 to 8 whole numbers, got 'abc'"),
    ("head", "channels", "abc", r"head\.channels must be a whole number in 1\.\.4096, got 'abc'"),
    ("loss", "ssim", -2.0, r"loss\.ssim must be a number in \[0\.0, 1000000\.0\], got -2\.0"),
])
def test_a_checkpoint_config_out_of_range_is_refused_in_one_line(pairs, checkpoint, tmp_path, capsys,
                                                               part, field, value, message):
    config = json.loads((checkpoint / "config.json").read_text())
    config[part][field] = value
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "config.json").write_text(json.dumps(config))
    (edited / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=message):
        load_pipeline(edited)
    assert _fuse(pairs, edited, tmp_path / "fused.png") == 2
    line = _one_error_line(capsys)
    assert re.search(message, line) and "config.json" in line
    assert not (tmp_path / "fused.png").exists()


@pytest.mark.parametrize("extra, message", [
    (("--crop", "32"), r"--crop 32: crop must be a multiple of 64"),
    (("--crop", "64", "--seed", str(2**70)), r"seed must be a whole number in 0\.\.4294967295, got 1180591620717"),
    (("--crop", "64", "--seed", "-1"), r"seed must be a whole number in 0\.\.4294967295, got -1"),
])
def test_train_refuses_a_bad_crop_or_seed_before_writing_anything(pairs, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main(["train", "--data", str(pairs), "--out", str(out), "--preset", "tiny", "--steps", "1",
                 "--batch", "1", "--device", "cpu", *extra]) == 2
    line = _one_error_line(capsys)
    assert re.search(message, line) and "pad_to_multiple" not in line
    assert not out.exists()


def test_unexpected_errors_keep_their_traceback(pairs, checkpoint, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(fuse_command, "read_pair", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        _fuse(pairs, checkpoint, tmp_path / "fused.png")
    monkeypatch.setattr(fuse_command, "read_pair", lambda *a, **k: (_ for _ in ()).throw(OSError("no file named")))
    with pytest.raises(OSError, match="no file named"):
        _fuse(pairs, checkpoint, tmp_path / "fused.png")


def test_an_os_error_on_a_named_output_is_one_line(pairs, checkpoint, tmp_path, capsys, monkeypatch):
    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(fuse_command, "write_fused", denied)
    assert _fuse(pairs, checkpoint, tmp_path / "fused.png") == 2
    assert _one_error_line(capsys) == f"error: Permission denied: {tmp_path / 'fused.png'}"


def test_gates_prints_each_layer_with_its_correlation_on_white_noise(tmp_path, checkpoint, capsys):
    root = write_pairs(tmp_path / "pairs", ("001", "002"))
    assert main(["gates", str(root), "--checkpoint", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| layer"))
    assert header.endswith("| correlation with the map on white noise |")
    rows = [line for line in out.splitlines() if line.startswith(("| down", "| mid", "| up"))]
    assert len(rows) == 9 and all(len(row.split("|")) == 8 for row in rows)
    assert all(-1 <= float(row.split("|")[6]) <= 1 for row in rows)
    assert "2 pairs; mean over 9 GFS layers" in out


def test_train_refuses_a_batch_beyond_the_bound_in_one_line(pairs, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(pairs), "--out", str(out), "--preset", "tiny", "--steps", "1",
                 "--batch", "1000000", "--device", "cpu"]) == 2
    assert _one_error_line(capsys) == "error: --batch-size must be a whole number in 1..256, got 1000000"
    assert not out.exists()


def test_train_refuses_a_step_beyond_the_memory_budget_in_one_line(pairs, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(pairs), "--out", str(out), "--preset", "tiny", "--steps", "1",
                 "--batch", "256", "--crop", "4096", "--device", "cpu"]) == 2
    assert re.search(r"batch 256 of 4096x4096 crops: a stage-1 step of 'tiny' needs about .* use at most batch \d+$",
                     _one_error_line(capsys))
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("config, message", [
    ("[1, 2]", r"config\.json must hold an object \(\{\.\.\.\}\), got a list$"),
    ('{"format": "dgd-fusion/2", "unet": {"channels": [4096, 4096, 4096, 4096]}}',
     r"unet\.channels \[4096, 4096, 4096, 4096\], head\.channels 16: about 10\.6 G parameters"),
])
def test_fuse_refuses_a_hostile_config_json_in_one_line(pairs, checkpoint, tmp_path, capsys, config, message):
    (checkpoint / "manifest.json").unlink()  # a folder put together by hand loads as it is
    (checkpoint / "config.json").write_text(config)
    output = tmp_path / "fused.png"
    assert _fuse(pairs, checkpoint, output) == 2
    assert re.search(message, _one_error_line(capsys))
    assert not output.exists()
