"""The command line picks the checkpoint of a pair's task, survives a full disk, and speaks in its flags."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusion_core import CHECKPOINT_ROOT, load_pipeline, read_pair
from fusion_core.cli import main
from fusion_core.imaging import write
from fusion_core.tasks import guess_task

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
WRITE_ALL = write._write_all


@pytest.mark.parametrize("a, b, modalities, task, reason", [
    ("MRI.png", "PET.png", (), "medical", "MRI, PET in the file names"),
    ("case3/mri_t2.png", "case3/ct.png", (), "medical", "MRI, T2, CT in the file names"),
    ("pairs/MRI/001.png", "pairs/SPECT/001.png", (), "medical", "MRI, SPECT in the file names"),
    ("a.dcm", "b.dcm", ("MR", "PT"), "medical", "DICOM modality MR, PT"),
    ("ir/00040N.png", "vi/00040N.png", (), "ivf", "no medical modality or name found"),
    ("FLIR_00006.png", "FLIR_00006_rgb.png", (), "ivf", "no medical modality or name found"),
    ("object.png", "picture.png", (), "ivf", "no medical modality or name found"),  # "ct" only as a word
    ("ir/ct_scene.png", "vi/ct_scene.png", (), "ivf", "no medical modality or name found"),  # ir/vi win
])
def test_the_task_is_read_from_names_and_modalities(a, b, modalities, task, reason):
    guess = guess_task(a, b, modalities)
    assert (guess.task, guess.reason) == (task, reason)


def _copy_pair(tmp_path: Path, task: str, a: str, b: str, names: tuple[str, str]) -> tuple[Path, Path]:
    sources = (EXAMPLES / task / a / "25019.png", EXAMPLES / task / b / "25019.png")
    targets = (tmp_path / names[0], tmp_path / names[1])
    for source, target in zip(sources, targets, strict=True):
        shutil.copy(source, target)
    return targets


@pytest.mark.slow
def test_a_medical_pair_is_fused_with_dgd_medical_and_says_so(tmp_path, capsys):
    a, b = _copy_pair(tmp_path, "mri_pet", "MRI", "PET", ("MRI.png", "PET.png"))
    assert main(["fuse", str(a), str(b), "-o", str(tmp_path / "x.png")]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint: {CHECKPOINT_ROOT / 'dgd-medical'} (medical pair: MRI, PET in the file names)" in out
    pair = read_pair(a, b)
    expected = load_pipeline(CHECKPOINT_ROOT / "dgd-medical").fuse(pair.a.pixels, pair.b.pixels).fused
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), expected)


@pytest.mark.slow
def test_task_flag_overrides_the_names(tmp_path, capsys):
    a, b = _copy_pair(tmp_path, "mri_pet", "MRI", "PET", ("MRI.png", "PET.png"))
    assert main(["fuse", str(a), str(b), "-o", str(tmp_path / "x.png"), "--task", "ivf"]) == 0
    assert f"checkpoint: {CHECKPOINT_ROOT / 'dgd-general'} (--task ivf)" in capsys.readouterr().out


def _pairs(root: Path, names: tuple[str, ...], a: str = "ir", b: str = "vi") -> Path:
    rng = np.random.default_rng(0)
    for name in names:
        for folder, shape in ((a, (32, 32)), (b, (32, 32, 3))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / folder / f"{name}.png")
    return root


def test_a_folder_names_its_checkpoint_by_its_layout(tmp_path, checkpoint, capsys, monkeypatch):
    chosen = []
    monkeypatch.setattr("fusion_core.cli.fuse.resolve_pipeline", lambda folder, *_: chosen.append(folder) or 1 / 0)
    root = _pairs(tmp_path / "pairs", ("001",), "MRI", "CT")
    with pytest.raises(ZeroDivisionError):
        main(["fuse", str(root), "-o", str(tmp_path / "out")])
    assert chosen == [CHECKPOINT_ROOT / "dgd-medical"]
    assert "(medical pair: MRI, CT in the file names)" in capsys.readouterr().out


def _full_disk(monkeypatch, after: int = 0):
    """The atomic writer's writes fail with ENOSPC from file ``after`` + 1 on."""
    calls = []

    def full(fd, data):
        calls.append(fd)
        if len(calls) > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        WRITE_ALL(fd, data)
    monkeypatch.setattr(write, "_write_all", full)


def test_fuse_on_a_full_disk_keeps_the_old_output_and_exits_1(tmp_path, checkpoint, capsys, monkeypatch):
    root = _pairs(tmp_path / "pairs", ("001",))
    output = tmp_path / "x.tif"
    output.write_bytes(b"an earlier, valid result")
    _full_disk(monkeypatch)
    status = main(["fuse", str(root / "ir" / "001.png"), str(root / "vi" / "001.png"), "-o", str(output),
                   "--checkpoint", str(checkpoint)])
    errors = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert errors == [f"error: not enough disk space to write {output}; free some space or write elsewhere"]
    assert output.read_bytes() == b"an earlier, valid result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "pairs", "x.tif"]


def test_a_folder_run_on_a_full_disk_names_the_pair_and_resumes(tmp_path, checkpoint, capsys, monkeypatch):
    root = _pairs(tmp_path / "pairs", ("001", "002", "003"))
    out = tmp_path / "out"
    _full_disk(monkeypatch, after=1)  # 001 is written, 002 is not
    status = main(["fuse", str(root), "-o", str(out), "--checkpoint", str(checkpoint)])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 1
    assert error.startswith("error: stopped at pair 002: not enough disk space to write ")
    assert error.endswith("run the same command again to go on from there")
    assert sorted(p.name for p in out.iterdir()) == ["001.png"]
    monkeypatch.setattr(write, "_write_all", WRITE_ALL)
    assert main(["fuse", str(root), "-o", str(out), "--checkpoint", str(checkpoint)]) == 0
    assert "fused 2 pairs, skipped 1 already fused" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["001.png", "002.png", "003.png"]


def test_a_size_mismatch_is_refused_in_flag_terms(tmp_path, checkpoint, capsys):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(tmp_path / "b.png")
    status = main(["fuse", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "x.png"),
                   "--checkpoint", str(checkpoint)])
    error = capsys.readouterr().err
    assert status == 2 and "give --resample to resize B to A's size" in error and "on_size_mismatch" not in error


def test_methods_naming_nothing_are_refused_in_flag_terms(tmp_path, capsys):
    root = _pairs(tmp_path / "pairs", ("001",))
    assert main(["evaluate", str(root), "--methods", ",", "--out", str(tmp_path / "eval")]) == 2
    error = capsys.readouterr().err
    assert "--methods ',' names no method; give a comma-separated list, e.g. --methods dgd," in error
    assert "baselines.BASELINES" not in error


def test_evaluate_fuses_again_a_damaged_earlier_image(tmp_path, capsys):
    root = _pairs(tmp_path / "pairs", ("001",))
    out = tmp_path / "eval"
    assert main(["evaluate", str(root), "--methods", "average", "--out", str(out)]) == 0
    fused = out / "fused" / "average" / "001.png"
    good = fused.read_bytes()
    fused.write_bytes(good[: len(good) // 2])  # an earlier run's truncated image
    assert main(["evaluate", str(root), "--methods", "average", "--out", str(out)]) == 0
    assert fused.read_bytes() == good


@pytest.mark.parametrize("flags, message", [
    (["--batch", "1000000"], "error: --batch-size must be a whole number in 1..256, got 1000000"),
    (["--loss-ssim", "-3"], "error: --loss-ssim must be a number in [0.0, 1000000.0], got -3.0"),
])
def test_training_settings_are_refused_by_their_flags(tmp_path, capsys, flags, message):
    root = _pairs(tmp_path / "pairs", ("001",))
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run"), *flags]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "run").exists()
