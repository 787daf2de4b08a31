"""The browser app's handlers called directly: building the demo, its events and queue, sessions, fusing each
task's example, DICOM and multi-page uploads, clear messages, zips refused before anything is written.

The network runs with random weights of the tiny preset (an empty checkpoint folder): the plumbing and the
messages are checked, not fusion quality. Never reads outside the repository.
"""

from __future__ import annotations

import dataclasses
import os
import time
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from app_support import EXAMPLES, MEDICAL, SESSION, fuse, pixels, session_outputs, zip_of
from fusion_app import limits
from fusion_app.archive import unpack_zip
from fusion_app.handlers import FusionApp
from fusion_app.inputs import FuseOptions, TrainOptions
from fusion_app.models import AUTO, RANDOM, TASKS, ModelStore
from fusion_app.texts import (
    DEFAULT_WINDOW,
)
from fusion_core import (
    read_image,
    write_dicom_secondary_capture,
)


def test_build_demo_constructs_without_loading_a_model(tmp_path):
    store = ModelStore(tmp_path, fallback_preset="tiny")
    demo = app.build_demo(FusionApp(store, tmp_path / "work"))
    assert isinstance(demo, gr.Blocks)
    assert {"fuse", "evaluate", "train", "stop_training"} <= {d.api_name for d in demo.fns.values()}
    assert store._cache == {}  # lazily: the first fusion loads the pipeline

def test_fuse_and_train_options_have_one_control_each(tabs):
    assert list(tabs.fuse.options) == [f.name for f in dataclasses.fields(FuseOptions)]
    assert list(tabs.train.options) == [f.name for f in dataclasses.fields(TrainOptions)]
    for view, defaults in ((tabs.fuse, FuseOptions()), (tabs.train, TrainOptions())):
        assert {name: control.value for name, control in view.options.items()} == dataclasses.asdict(defaults)

def test_cpu_heavy_events_share_one_concurrency_group_and_progress_ticks(tmp_path):
    demo = app.build_demo(FusionApp(ModelStore(tmp_path, fallback_preset="tiny"), tmp_path / "work"))
    events = {d.api_name: d for d in demo.fns.values()}
    assert {(events[n].concurrency_id, events[n].concurrency_limit) for n in ("fuse", "evaluate", "train")} == {
        ("cpu-heavy", 1)}
    assert events["training_progress"].concurrency_id != "cpu-heavy"
    timers = [block for block in demo.blocks.values() if isinstance(block, gr.Timer)]
    assert len(timers) == 1 and not timers[0].active  # ticks only while a run is followed
    assert events["training_progress"].targets == [(timers[0]._id, "tick")]

def test_the_queue_is_sized_and_holds_only_events_that_work(tmp_path):
    demo = app.build_demo(FusionApp(ModelStore(tmp_path, fallback_preset="tiny"), tmp_path / "work"))
    events = {d.api_name: d for d in demo.fns.values()}
    assert demo._queue.max_size == limits.QUEUE_SIZE
    assert all(events[name].queue for name in ("fuse", "evaluate", "train"))
    assert not events["training_progress"].queue and not events["stop_training"].queue  # never refused as busy
    assert all(d.show_progress != "hidden" for d in (events["fuse"], events["evaluate"]))  # the place in the queue

def test_the_end_of_a_session_removes_its_outputs(tmp_path):
    fusion_app = FusionApp(ModelStore(tmp_path, fallback_preset="tiny"), tmp_path / "work")
    demo = app.build_demo(fusion_app)
    unload = [d for d in demo.fns.values() if any(target[1] == "unload" for target in d.targets)]
    mine, theirs = fusion_app.request_dir("mine", "fused"), fusion_app.request_dir("theirs", "fused")
    assert len(unload) == 1
    unload[0].fn(gr.Request(session_hash="mine"))
    assert not mine.exists() and theirs.is_dir()

def test_a_session_keeps_the_outputs_of_its_latest_request_of_each_kind(tmp_path):
    fusion_app = FusionApp(ModelStore(tmp_path, fallback_preset="tiny"), tmp_path / "work")
    first = fusion_app.request_dir("mine", "fused")
    (first / "fused.png").write_bytes(b"x")
    evaluation = fusion_app.request_dir("mine", "evaluations")
    second = fusion_app.request_dir("mine", "fused")
    assert not first.exists() and second.is_dir() and evaluation.is_dir()
    sessions = fusion_app.work_dir / "sessions" / "outputs"
    assert {p.relative_to(sessions).parts[1:] for p in (second, evaluation)} == {("fused", second.name),
                                                                              ("evaluations", evaluation.name)}
    outside = fusion_app.request_dir("../../outside", "fused")  # a session hash is sent by the browser
    assert outside.resolve().is_relative_to(sessions.resolve()) and len(outside.relative_to(sessions).parts) == 3

def test_the_outputs_of_a_session_idle_for_an_hour_are_pruned(tmp_path):
    fusion_app = FusionApp(ModelStore(tmp_path, fallback_preset="tiny"), tmp_path / "work")
    idle, back = fusion_app.request_dir("idle", "fused"), fusion_app.request_dir("back", "fused")
    long_ago = time.time() - limits.KEEP_OUTPUTS_SECONDS - 60
    for folder in (idle.parent.parent, back.parent.parent):
        os.utime(folder, (long_ago, long_ago))
    newest = fusion_app.request_dir("back", "evaluations")  # a session back after an hour keeps its outputs
    assert not idle.exists() and back.is_dir() and newest.is_dir()

def test_the_app_owns_gradios_cache_and_sweeps_only_its_empty_leftovers(tmp_path):
    assert Path(os.environ["GRADIO_TEMP_DIR"]).parent.name == "dgd-fusion-app"  # set by app.py before gradio
    cache = tmp_path / "gradio"
    (cache / "full").mkdir(parents=True)
    (cache / "empty").mkdir()
    (cache / "tmpleft").touch()
    (cache / "full" / "kept.png").write_bytes(b"data")
    (cache / "tmpdata").write_bytes(b"data")
    long_ago = time.time() - limits.CACHE_LEFTOVER_SECONDS - 60
    for path in (cache / "full", cache / "empty", cache / "tmpleft", cache / "tmpdata"):
        os.utime(path, (long_ago, long_ago))
    (cache / "tmpnew").touch()  # perhaps being written
    fusion_app = FusionApp(ModelStore(tmp_path, fallback_preset="tiny"), tmp_path / "work", cache=cache)
    fusion_app.sessions.sweep()
    assert sorted(p.name for p in cache.iterdir()) == ["full", "tmpdata", "tmpnew"]

def test_a_timer_sweeps_for_the_sessions_that_never_end(tmp_path):
    cache = tmp_path / "gradio"
    cache.mkdir()
    fusion_app = FusionApp(ModelStore(tmp_path, fallback_preset="tiny"), tmp_path / "work", cache=cache)
    idle = fusion_app.request_dir("idle", "fused")
    long_ago = time.time() - limits.KEEP_OUTPUTS_SECONDS - 60
    os.utime(idle.parent.parent, (long_ago, long_ago))
    (cache / "tmpleft").touch()
    os.utime(cache / "tmpleft", (long_ago, long_ago))
    assert fusion_app.sessions.sweep_every(0.05).daemon
    for _ in range(100):
        if not idle.parent.parent.exists() and not (cache / "tmpleft").exists():
            break
        time.sleep(0.05)
    assert not idle.parent.parent.exists() and not (cache / "tmpleft").exists()

@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_fuses_an_example_of_each_task(fusion_app, tabs, task):
    pair, view = EXAMPLES[task], tabs.fuse
    out = fuse(fusion_app, tabs, pair.a, pair.b, task)
    fused, downloads, notes, table = out[view.fused], out[view.downloads], out[view.notes], out[view.metrics]
    slider_a, slider_b, dicom = out[view.slider_a], out[view.slider_b], out[view.dicom_info]
    baselines = out[view.baselines]
    b = read_image(pair.b).pixels
    shown = pixels(fused)
    assert shown.dtype == np.uint8 and shown.shape == (b.shape if b.ndim == 3 else b.shape[:2])
    assert slider_a[1] is fused and pixels(slider_b[0]).shape[:2] == shown.shape[:2]
    assert [Path(p).name for p in downloads] == ["fused.png", "fused_16bit.tif"] and dicom == ""
    assert [Path(p).parent for p in downloads] == session_outputs(fusion_app, "fused") * 2  # this request's folder
    np.testing.assert_array_equal(np.asarray(read_image(downloads[0]).pixels * 255).round(), shown)
    assert "random weights" in notes
    assert "Scored with the standard conventions" in table and "| DGD-Fusion |" in table and "**" in table
    assert "docs/" not in table and "§" not in table
    assert [name for _, name in baselines] == ["average", "max", "laplacian", "guided_filter"]
    source = out[view.maps.source]
    assert source.checkpoint == RANDOM and source.maps is not None and source.names == (TASKS[task].a, TASKS[task].b)
    assert fusion_app.draw_maps(view.maps, source, False) == gr.skip()  # a closed accordion costs nothing
    maps = fusion_app.draw_maps(view.maps, source, True)
    assert set(maps) == set(view.maps.outputs()) and all(maps[plot] is not None for plot in (
        view.maps.weight, view.maps.gates, view.maps.attention, view.maps.experts))
    assert "share of A" in maps[view.maps.weight_note] and "random noise" in maps[view.maps.gate_note]
    assert "random noise" in maps[view.maps.expert_note] and "percentile" in maps[view.maps.attention_note]

@pytest.mark.slow
def test_fuses_a_dicom_pair_and_exports_dicom(fusion_app, tabs, tmp_path):
    pair = EXAMPLES[MEDICAL]
    paths = []
    for source, modality in ((pair.a, "MR"), (pair.b, "CT")):
        paths.append(tmp_path / f"Doe_Jane_{modality}.dcm")  # named after a patient, as DICOM files often are
        write_dicom_secondary_capture(paths[-1], read_image(source).pixels, modality_hint=modality)
    column = tabs.fuse.source_a
    shown = fusion_app.preview(column, SESSION, str(paths[0]), DEFAULT_WINDOW, 0)
    assert pixels(shown[column.preview]).shape == (256, 256) and shown[column.info].startswith("DICOM MR")
    assert shown[column.dicom].visible and not shown[column.frames].visible  # one frame: nothing to choose
    out = fuse(fusion_app, tabs, *paths, window_b="bone (W 2000, L 500)")
    downloads, summary = out[tabs.fuse.downloads], out[tabs.fuse.dicom_info]
    assert [Path(p).name for p in downloads] == ["fused.png", "fused_16bit.tif", "fused.dcm"]  # no name carried
    assert read_image(downloads[-1]).dicom is not None
    assert "DICOM inputs" in summary and "| modality | MR | CT |" in summary
    assert "Anonymous" not in summary and "preset bone" in summary

def test_a_new_upload_resets_its_dicom_options_and_shows_its_preview(fusion_app, tabs):
    column = tabs.fuse.source_b
    shown = fusion_app.source_changed(column, SESSION, str(EXAMPLES[MEDICAL].b))
    assert shown[column.window]["value"] == DEFAULT_WINDOW and shown[column.frame]["value"] == 0
    assert pixels(shown[column.preview]).shape == (256, 256) and not shown[column.dicom].visible
    assert not shown[column.frames].visible
    cleared = fusion_app.source_changed(column, SESSION, None)
    assert cleared[column.preview] is None and cleared[column.info] == ""

def multi_page_tiff(source: Path, path: Path) -> Path:
    """``source``'s image as the first page of a TIFF and its negative as the second."""
    image = Image.open(source).convert("L")
    image.save(path, save_all=True, append_images=[Image.eval(image, lambda v: 255 - v)])
    return path

def test_a_multi_page_tiff_shows_its_frame_choice_and_the_frame_read(fusion_app, tabs, tmp_path):
    column, tiff = tabs.fuse.source_a, multi_page_tiff(EXAMPLES[MEDICAL].a, tmp_path / "a.tif")
    shown = fusion_app.source_changed(column, SESSION, str(tiff))
    assert shown[column.frames].visible and not shown[column.dicom].visible
    assert shown[column.info] == "256 × 256 px · 8-bit · gray · 2 frames"
    first = pixels(shown[column.preview])  # the next preview of this column replaces its file
    second = fusion_app.preview(column, SESSION, str(tiff), DEFAULT_WINDOW, 1)[column.preview]
    np.testing.assert_array_equal(pixels(second), 255 - first)

@pytest.mark.slow
def test_fusing_a_multi_page_tiff_says_which_frame_was_fused(fusion_app, tabs, tmp_path):
    tiff = multi_page_tiff(EXAMPLES[MEDICAL].a, tmp_path / "a.tif")
    notes = fuse(fusion_app, tabs, tiff, EXAMPLES[MEDICAL].b, frame_a=1)[tabs.fuse.notes]
    assert "⚠️ A: the TIFF file holds 2 frames; frame 1 (counting from 0) was read" in notes

def test_the_source_labels_follow_the_task(fusion_app, tabs):
    shown = fusion_app.task_changed(tabs.fuse, "MRI + PET", AUTO)
    assert shown[tabs.fuse.source_a.file].label == "Source A: MRI"
    assert shown[tabs.fuse.source_b.file].label == "Source B: PET"
    assert "warning-note" in shown[tabs.fuse.model_note].elem_classes  # no checkpoint: random weights

@pytest.mark.parametrize("make, message", [
    (lambda d: None, "Upload source A"),
    (lambda d: d / "empty.png", "empty"),
    (lambda d: d / "notes.txt", "not a recognised image"),
    (lambda d: d / "broken.dcm", "DICOM"),
])
def test_bad_uploads_give_a_clear_message(fusion_app, tabs, tmp_path, make, message):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("these are not pixels\n")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff")
    with pytest.raises(gr.Error, match=message):
        fuse(fusion_app, tabs, make(tmp_path), EXAMPLES[MEDICAL].b)

def test_bad_preview_warns_and_keeps_working(fusion_app, tabs, tmp_path):
    column = tabs.fuse.source_a
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="not a recognised image"):
        shown = fusion_app.preview(column, SESSION, str(tmp_path / "notes.txt"), DEFAULT_WINDOW, 0)
    assert shown[column.preview] is None and "not a recognised image" in shown[column.info]
    assert column.dicom not in shown  # the DICOM options stay as they were
    shown = fusion_app.preview(column, SESSION, str(EXAMPLES[MEDICAL].a), DEFAULT_WINDOW, 0)
    assert pixels(shown[column.preview]).shape == (256, 256)

@pytest.mark.slow
def test_size_mismatch_asks_for_resampling_then_resamples(fusion_app, tabs):
    ivf, medical = EXAMPLES["Infrared + visible"], EXAMPLES[MEDICAL]
    with pytest.raises(gr.Error, match="Resample B to A"):
        fuse(fusion_app, tabs, medical.a, ivf.b)
    out = fuse(fusion_app, tabs, medical.a, ivf.b, resample=True, align=True)
    notes = out[tabs.fuse.notes]
    assert pixels(out[tabs.fuse.fused]).shape == (256, 256, 3) and "resized" in notes and "shifted" in notes

@pytest.mark.parametrize("timesteps, message", [("five", "whole numbers"), ("5, 50", "reads 3 feature timesteps")])
def test_bad_timesteps_give_a_clear_message(fusion_app, tabs, timesteps, message):
    with pytest.raises(gr.Error, match=message):
        fuse(fusion_app, tabs, EXAMPLES[MEDICAL].a, EXAMPLES[MEDICAL].b, timesteps=timesteps)

@pytest.mark.parametrize("entries, message", [
    ({"../evil.png": b"x"}, "outside the folder"),
    ({"ok/../../evil.png": b"x"}, "outside the folder"),
    ({"/etc/evil.png": b"x"}, "absolute path"),
    ({"C:/evil.png": b"x"}, "absolute path"),
    ({f"MRI/{i}.png": b"x" for i in range(5)}, "more than the limit of 4"),
    ({"MRI/big.png": b"\0" * 2000}, "more than the limit"),
    ({}, "empty"),
])
def test_unsafe_zips_are_refused_before_anything_is_written(tmp_path, entries, message):
    archive = zip_of(tmp_path / "upload.zip", entries)
    with pytest.raises(ValueError, match=message):
        unpack_zip(str(archive), tmp_path / "out", max_files=4, max_bytes=1000)
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.png").exists()

@pytest.mark.parametrize("entries, message", [
    ({".": b"x", "MRI/a.png": b"x"}, "'.' names no file"),
    ({"MRI": b"x", "MRI/a.png": b"x"}, "both a file and a folder named 'MRI'"),
    ({"MRI/a.png": b"x", "MRI": b"x"}, "both a file and a folder named 'MRI'"),
])
def test_entries_that_cannot_be_files_are_refused_before_anything_is_written(tmp_path, entries, message):
    with pytest.raises(ValueError, match=message):
        unpack_zip(str(zip_of(tmp_path / "upload.zip", entries)), tmp_path / "out")
    assert not (tmp_path / "out").exists()

@pytest.mark.parametrize("field, message", [("CRC", "Bad CRC-32"), ("size", "")])
def test_a_damaged_entry_is_named(tmp_path, field, message):
    archive = zip_of(tmp_path / "upload.zip", {"MRI/a.png": b"pixels" * 100})
    data = bytearray(archive.read_bytes())
    at = data.index(b"pixels")  # stored uncompressed: flip a byte of the data, or shorten the declared size
    if field == "CRC":
        data[at] ^= 0xFF
    else:
        header = data.rindex(b"PK\x01\x02")  # the central directory's size fields, which zipfile reads
        data[header + 24:header + 28] = (100).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"entry 'MRI/a.png' cannot be unpacked.*{message}"):
        unpack_zip(str(archive), tmp_path / "out")

def test_symlinks_and_non_zips_are_refused(tmp_path):
    link = zipfile.ZipInfo("MRI/link.png")
    link.external_attr = 0o120777 << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as archive:
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(ValueError, match="symbolic link"):
        unpack_zip(str(tmp_path / "link.zip"), tmp_path / "out")
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        unpack_zip(str(tmp_path / "fake.zip"), tmp_path / "out")
