"""The ``split`` and ``bench`` commands on tiny synthetic pairs and the tiny preset."""

from __future__ import annotations

import json

import pytest

from conftest import write_pairs
from fusion_core.cli import main


def test_split_holds_out_every_fifth_pair(tmp_path, capsys):
    names = ("a", "b", "c", "d", "e", "f")
    root = write_pairs(tmp_path / "pairs", names)
    assert main(["split", str(root), "--every", "5", "--out", str(tmp_path / "split")]) == 0
    for split, held in (("train", ["a", "b", "c", "d", "f"]), ("test", ["e"])):
        for folder in ("ir", "vi"):
            assert sorted(p.stem for p in (tmp_path / "split" / split / folder).iterdir()) == held
    assert (tmp_path / "split" / "test" / "vi" / "e.png").read_bytes() == (root / "vi" / "e.png").read_bytes()
    assert "5 train and 1 test pairs" in capsys.readouterr().out


def test_bench_measures_a_checkpoint_folder_by_its_saved_architecture(tmp_path, checkpoint, capsys):
    report_path = tmp_path / "bench.json"
    assert main(["bench", "--presets", str(checkpoint), "--repeats", "1", "--size", "40x32", "--in-process",
                 "--batches", "", "--out", str(report_path)]) == 0
    fuse = json.loads(report_path.read_text())["results"][0]
    assert (fuse["kind"], fuse["preset"]) == ("fuse", str(checkpoint)) and fuse["median_s"] > 0
    assert main(["bench", "--presets", str(tmp_path / "nothing"), "--in-process"]) == 2
    assert "neither one of" in capsys.readouterr().err


def test_bench_runs_the_tiny_preset_in_process(tmp_path, capsys):
    report_path = tmp_path / "bench.json"
    code = main(["bench", "--presets", "tiny", "--repeats", "2", "--size", "40x32", "--in-process",
                 "--batches", "1,2", "--out", str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["isolated"] is False
    results = report["results"]
    assert [(r["kind"], r["preset"], r["device"]) for r in results] == [
        ("fuse", "tiny", "cpu"), ("average", None, "cpu"), ("metrics", None, "cpu")]
    assert all(r["size"] == "40x32" and r["runs"] == 2 and r["median_s"] > 0 and r["peak_memory_mb"] > 0
               for r in results)
    throughput = report["throughput"]
    assert [(r["preset"], r["device"], r["batch"], r["pairs"]) for r in throughput] == [
        ("tiny", "cpu", 1, 2), ("tiny", "cpu", 2, 2)]
    assert all(r["pairs_per_s"] == pytest.approx(2 / r["median_s"]) and r["runs"] == 2 for r in throughput)
