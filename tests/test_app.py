"""The browser app: its handlers called directly, then the launched app through gradio_client.

The network runs with random weights of the tiny preset throughout (an empty checkpoint folder): these tests
check the plumbing and the messages, not fusion quality. Never reads outside the repository.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket
import threading
import time
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.ImageFile
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import Status
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import app
from fusion_app import handlers, inputs, limits
from fusion_app.archive import MAX_ZIP_BYTES, unpack_zip
from fusion_app.handlers import FusionApp, fail
from fusion_app.inputs import EXAMPLES as EXAMPLES_DIR
from fusion_app.inputs import FuseOptions, TrainOptions
from fusion_app.models import AUTO, RANDOM, TASKS, ModelStore
from fusion_app.reports import (
    attention_dependence,
    expert_dependence,
    gate_dependence,
    map_correlation,
    measure_dependence,
    model_cards,
    training_progress,
    training_status,
    weight_note,
)
from fusion_app.sessions import session_folder_name
from fusion_app.texts import (
    ABOUT,
    DEFAULT_WINDOW,
    FROM_SCRATCH,
    METRIC_LEGEND,
    NO_ABLATION,
    SIZES,
    TRAIN_INTRO,
    ablation_notes,
)
from fusion_app.texts import CONVENTIONS as CONVENTION_NOTES
from fusion_app.training import TrainingJob
from fusion_app.views import Tabs, build_tabs
from fusion_core import (
    METRICS,
    PRESETS,
    Intermediates,
    TrainProgress,
    find_pairs,
    read_image,
    write_dicom_secondary_capture,
)
from fusion_core.metrics import VIF_MIN_SIDE

EXAMPLES = {task: find_pairs(EXAMPLES_DIR / spec.folder)[0] for task, spec in TASKS.items()}
MEDICAL = "MRI + CT"
SESSION = "test-session"


@pytest.fixture(scope="module")
def fusion_app(tmp_path_factory) -> FusionApp:
    root = tmp_path_factory.mktemp("app")
    return FusionApp(ModelStore(root / "no-checkpoints", fallback_preset="tiny"), root / "work", poll_seconds=0.1)


@pytest.fixture(scope="module")
def tabs(fusion_app) -> Tabs:
    """The components the handlers name (in a Blocks that is never launched)."""
    with gr.Blocks():
        return build_tabs(fusion_app)


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


# ---------------------------------------------------------------------------------------------- handlers


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


@pytest.mark.slow
def test_evaluates_the_bundled_examples(fusion_app, tabs):
    view = tabs.evaluate
    out = evaluate(fusion_app, tabs, None)
    assert set(out) == set(view.outputs())
    assert "2 pairs" in out[view.summary] and "random weights" in out[view.summary]
    assert "| DGD-Fusion |" in out[view.means] and "Scored with the standard conventions" in out[view.means]
    assert "Means over 2 pairs" in out[view.means] and "mean rank" in out[view.means]
    for shown in (out[view.summary], out[view.means]):  # the server's folders are no one's business
        assert str(fusion_app.work_dir) not in shown and "sessions" not in shown and "docs/" not in shown
    assert len(out[view.rows]) == 2 * 5 and Path(out[view.chart]).is_file()
    assert all(Path(f).suffix == ".csv" for f in out[view.files])


@pytest.mark.slow
def test_evaluates_an_uploaded_zip_and_refuses_zip_slip(fusion_app, tabs, tmp_path):
    archive = pair_zip(tmp_path / "pairs.zip", top="my pairs/")
    out = evaluate(fusion_app, tabs, archive, choice=RANDOM)
    assert "2 pairs" in out[tabs.evaluate.summary] and "uploaded zip" in out[tabs.evaluate.summary]
    with pytest.raises(gr.Error, match="The zip was refused"):
        evaluate(fusion_app, tabs, zip_of(tmp_path / "evil.zip", {"../x.png": b"x"}))


@pytest.mark.slow
def test_evaluates_the_fused_images_a_zip_brings_as_methods(fusion_app, tabs, tmp_path):
    pairs = find_pairs(EXAMPLES_DIR / TASKS[MEDICAL].folder)
    theirs = {f"upload/fused/theirs/{pair.name}.png": pair.b.read_bytes() for pair in pairs}  # B as "fused"
    archive = zip_of(tmp_path / "pairs.zip", {**zip_of_entries(pairs, "upload/"), **theirs})
    view = tabs.evaluate
    out = evaluate(fusion_app, tabs, archive, choice=RANDOM)
    assert "**theirs**" in out[view.summary] and "| theirs |" in out[view.means]
    assert [row[0] for row in out[view.rows] if row[1] == "theirs"] == [pair.name for pair in pairs]
    first = dict([next(iter(theirs.items()))])  # the fused image of the first pair only
    missing = zip_of(tmp_path / "missing.zip", {**zip_of_entries(pairs, "upload/"), **first})
    with pytest.raises(gr.Error, match="method 'theirs' has no image"):
        evaluate(fusion_app, tabs, missing, choice=RANDOM)


@pytest.mark.slow
def test_training_makes_a_selectable_checkpoint(fusion_app, tabs):
    view = tabs.train
    started = train(fusion_app, tabs, stage="both", steps=1, batch=1, lr=1e-3)
    assert "Training" in started[view.status] and started[view.checkpoint_file] is None
    ended = follow(fusion_app, tabs, started)
    status, progress = ended[view.status], ended[view.progress]
    assert "finished (both stages, 1 step each)" in status and 'value="2" max="2"' in progress
    assert "stage 2 of 2 (the fusion head): step 1 of 1" in progress and "left" not in progress
    name = status.split("**")[1]
    for menu in (*view.checkpoint_menus, view.pairs.checkpoint):
        assert name in [value for _, value in ended[menu].choices]
    assert f"{name}/model.safetensors" in zipfile.ZipFile(ended[view.checkpoint_file]).namelist()
    notes = fuse(fusion_app, tabs, EXAMPLES[MEDICAL].a, EXAMPLES[MEDICAL].b, choice=name)[tabs.fuse.notes]
    assert f"by **{name}**" in notes and "random weights" not in notes


@pytest.mark.slow
def test_progress_sends_the_loss_curve_only_when_it_has_new_points(fusion_app, tabs):
    view = tabs.train
    ended = follow(fusion_app, tabs, train(fusion_app, tabs, stage="1", steps=2, batch=1))
    followed = ended[view.followed]
    assert followed.shown == len(fusion_app.runs[followed.name].history) >= 2  # every step drawn by the end
    again = fusion_app.training_progress(view, followed)
    assert view.loss_plot not in again and view.followed not in again and "finished" in again[view.status]
    redrawn = fusion_app.training_progress(view, dataclasses.replace(followed, shown=-1))
    assert redrawn[view.loss_plot] is not None and redrawn[view.followed].shown == 2


@pytest.mark.slow
def test_one_training_at_a_time_and_stop(fusion_app, tabs):
    started = train(fusion_app, tabs, stage="1", steps=500, batch=1)
    with pytest.raises(gr.Error, match="already in progress"):
        train(fusion_app, tabs, stage="1", steps=1, batch=1)
    with pytest.raises(gr.Error, match="another session"):
        fusion_app.stop_training(None)
    assert "Stopping" in fusion_app.stop_training(started[tabs.train.followed])
    ended = follow(fusion_app, tabs, started)
    assert "was stopped at stage 1 of 1 (the diffusion UNet): step" in ended[tabs.train.status]
    assert "of 500" in ended[tabs.train.status] and "left" not in ended[tabs.train.progress]
    assert "No training run" in fusion_app.stop_training(started[tabs.train.followed])


def test_a_session_that_started_nothing_follows_nothing(fusion_app, tabs):
    ticked = fusion_app.training_progress(tabs.train, None)
    assert not ticked[tabs.train.timer].active and "No training run" in ticked[tabs.train.status]


def test_the_size_menu_holds_the_sizes_and_the_ablations_are_apart(tabs):
    assert [value for _, value in tabs.train.options["preset"].choices] == list(SIZES)
    ablations = [value for _, value in tabs.train.ablation.choices]
    assert ablations == [NO_ABLATION, *(name for name in PRESETS if name not in SIZES)]
    notes = ablation_notes()
    assert notes["DFE+GCFS"] == "**DFE+GCFS**: DFE (expert convolutions) and GFS (gates); without GLSA; 4 experts."
    assert notes["GCFS+GLSA"].endswith("without DFE; no experts.") and "3 experts" in notes["DFE_3"]


def running_job(steps: int = 200, step: int = 20) -> TrainingJob:
    job = TrainingJob("run", Path("run"), steps, (1, 2))
    job.record(TrainProgress(stage=1, step=step, total_steps=steps, losses={"diffusion": 0.5},
                             crops_per_second=3.0, eta_seconds=22.0))
    return job


def test_training_progress_counts_the_steps_per_stage_and_drops_the_estimate_on_stop():
    job = running_job()
    shown = training_progress(job, stopping=False)
    assert "stage 1 of 2 (the diffusion UNet): step 20 of 200" in shown and "about 22 s left in this stage" in shown
    assert 'value="20" max="400"' in shown
    stopping = training_progress(job, stopping=True)
    assert "left" not in stopping and "stopping after this step" in stopping
    job.stopped = job.done = True
    assert "left" not in training_progress(job, stopping=True)
    assert "was stopped at stage 1 of 2 (the diffusion UNet): step 20 of 200" in training_status(job)
    job.stage_index = 1
    job.record(TrainProgress(stage=2, step=5, total_steps=200, losses={"fusion": 0.1}, crops_per_second=3.0,
                             eta_seconds=9.0))
    assert "stage 2 of 2 (the fusion head): step 5 of 200" in training_progress(job, stopping=False)


def test_the_texts_a_user_reads_point_nowhere_they_cannot_go(fusion_app):
    hexes = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")
    for text in (ABOUT, TRAIN_INTRO, METRIC_LEGEND, *CONVENTION_NOTES.values()):
        assert not any(word in text for word in ("docs/", "§", "runs/", "TrainConfig", "--")), text[:60]
        assert hexes.findall(text) == []
    assert all(f"**{label}**" in METRIC_LEGEND for label in METRICS)
    assert "MSRS" in ABOUT and "Harvard Whole Brain Atlas" in ABOUT
    assert model_cards(fusion_app.models).startswith("No trained checkpoint")  # the fixture's store is empty
    cards = model_cards(ModelStore())
    assert "### dgd-general" in cards and "### dgd-medical" in cards and "Metrics on MSRS test" in cards


def hand_made_maps(rng, gates: dict, shift: float = 0.0) -> Intermediates:
    """Maps of two DFE layers, the given gates and two flat-ish attention maps; ``shift`` moves the experts."""
    experts = {"down1": np.array([[0.25 + shift, 0.75 - shift]]), "up1": np.array([[0.5, 0.5]])}
    attention = {"glsa1": 0.5 + rng.uniform(-0.02, 0.02, (8, 8)), "glsa2": 0.5 + rng.uniform(-0.02, 0.02, (8, 8))}
    return Intermediates(experts=experts, gates=gates, attention=attention, weight_map=np.full((16, 16), 0.25))


def test_maps_drawn_for_noise_alike_are_said_not_to_depend_on_the_image(rng):
    gates = {"down1": rng.uniform(0, 1, (2, 12, 12)), "mid": rng.uniform(0, 1, (2, 8, 8))}
    maps = hand_made_maps(rng, gates)
    dependence = measure_dependence(maps, maps)
    assert dependence.gates == pytest.approx({"down1": 1.0, "mid": 1.0}) and dependence.experts == 0.0
    assert gate_dependence(dependence).startswith("These gate maps barely depend on this image (down1, mid: "
                                                  "correlation 1.00 with the maps drawn for random noise")
    assert "fixed pattern, not this image's content" in gate_dependence(dependence)
    assert expert_dependence(dependence).startswith("The expert weights barely depend on this image")
    assert attention_dependence(dependence).startswith("The attention maps barely vary across this image")
    assert "25% comes from A" in weight_note(maps.weight_map, "infrared", "visible")


def test_maps_unlike_those_drawn_for_noise_are_said_to_depend_on_the_image(rng):
    image = {"down1": rng.uniform(0, 1, (2, 12, 12)), "mid": rng.uniform(0, 1, (2, 8, 8))}
    noise = {"down1": rng.uniform(0, 1, (2, 12, 12)), "mid": rng.uniform(0, 1, (2, 8, 8))}
    dependence = measure_dependence(hand_made_maps(rng, image, shift=0.3), hand_made_maps(rng, noise))
    assert max(dependence.gates.values()) < 0.9 and dependence.experts == pytest.approx(0.3)
    assert gate_dependence(dependence).startswith("These gate maps depend on this image")
    assert expert_dependence(dependence).startswith("The expert weights depend on this image")
    mixed = measure_dependence(hand_made_maps(rng, image), hand_made_maps(rng, {**noise, "mid": image["mid"]}))
    assert gate_dependence(mixed).startswith("Only 1 of 2 gate layers follow this image (down1: correlation")
    assert "The other 1 barely depend on it (mid: correlation 1.00)" in gate_dependence(mixed)


def test_the_gate_border_is_left_out_of_the_correlation(rng):
    """The same border (the zero padding's) around different interiors: the maps depend on the image."""
    image, noise = np.zeros((1, 12, 12)), np.zeros((1, 12, 12))
    image[:, 2:-2, 2:-2], noise[:, 2:-2, 2:-2] = rng.uniform(0.4, 0.6, (2, 1, 8, 8))
    for maps in (image, noise):
        maps[:, :2], maps[:, -2:], maps[:, :, :2], maps[:, :, -2:] = 1.0, 0.9, 0.8, 0.7
    whole = map_correlation(image[0], noise[0])
    dependence = measure_dependence(hand_made_maps(rng, {"down1": image}), hand_made_maps(rng, {"down1": noise}))
    assert whole > 0.9 and abs(dependence.gates["down1"]) < 0.5
    assert gate_dependence(dependence).startswith("These gate maps depend on this image")


def test_attention_that_spans_the_scale_is_said_to_vary(rng):
    maps = Intermediates(attention={"glsa1": rng.uniform(0.1, 0.9, (8, 8))})
    line = attention_dependence(measure_dependence(maps, maps))
    assert line.startswith("The attention maps vary across this image") and "percentile" in line


def test_training_options_are_checked(fusion_app, tabs):
    with pytest.raises(gr.Error, match="multiple of 64"):
        train(fusion_app, tabs, stage="1", steps=1, crop=50, batch=1)


# ---------------------------------------------------------------------------------------------- launched


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def client(fusion_app, tmp_path_factory):
    demo = app.build_demo(fusion_app)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                **app.LAUNCH_OPTIONS)
    yield Client(demo.local_url, verbose=False, analytics_enabled=False,
                 download_files=str(tmp_path_factory.mktemp("downloads")))
    demo.close()


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_api_fuses_an_example_of_each_task(client, task):
    pair = EXAMPLES[task]
    outputs = client.predict(handle_file(str(pair.a)), handle_file(str(pair.b)), task, AUTO, DEFAULT_WINDOW, 0,
                             DEFAULT_WINDOW, 0, "5, 50, 100", 0, False, False, api_name="/fuse")
    fused = read_image(outputs[0]).pixels
    assert fused.shape[:2] == read_image(pair.a).pixels.shape[:2] and "| DGD-Fusion |" in outputs[6]


@pytest.mark.slow
def test_api_reports_a_bad_upload(client, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(AppError, match="not a recognised image"):
        client.predict(handle_file(str(tmp_path / "notes.txt")), handle_file(str(EXAMPLES[MEDICAL].b)), MEDICAL,
                       AUTO, DEFAULT_WINDOW, 0, DEFAULT_WINDOW, 0, "", 0, False, False, api_name="/fuse")


@pytest.mark.slow
def test_api_evaluates_then_trains_and_follows_the_run(client):
    summary, means, *_ = client.predict(None, "MRI + PET", AUTO, "standard", api_name="/evaluate")
    assert "2 pairs" in summary and "| DGD-Fusion |" in means
    started = client.predict(None, MEDICAL, FROM_SCRATCH, "tiny", "2", 1, 1, 64, 1e-4, NO_ABLATION,
                             api_name="/train")
    assert started[1] == "Training…"
    for _ in range(600):  # the client's session holds the run it started, as a browser tab's does
        progress, status, _, _, checkpoint_zip, *_ = client.predict(api_name="/training_progress")
        if status != "Training…":
            break
        time.sleep(0.2)
    assert "finished (stage 2, the fusion head: 1 step)" in status and checkpoint_zip.endswith(".zip")
    card = zipfile.ZipFile(checkpoint_zip).read(f"{status.split('**')[1]}/MODEL_CARD.md").decode()
    assert "`tiny` preset" in card


@pytest.mark.slow
def test_api_trains_an_ablation_variant_in_place_of_the_size(client):
    client.predict(None, MEDICAL, FROM_SCRATCH, "tiny", "2", 1, 1, 64, 1e-4, "GCFS+GLSA", api_name="/train")
    for _ in range(600):
        _, status, _, _, checkpoint_zip, *_ = client.predict(api_name="/training_progress")
        if status != "Training…":
            break
        time.sleep(0.2)
    card = zipfile.ZipFile(checkpoint_zip).read(f"{status.split('**')[1]}/MODEL_CARD.md").decode()
    assert "`GCFS+GLSA` preset" in card


def test_messages_are_escaped_since_gradio_renders_them_as_html():
    assert fail("got 'five' <b> & more").message == "got 'five' &lt;b&gt; &amp; more"  # quotes stay quotes


def test_too_small_and_too_large_images_are_refused_before_fusion(fusion_app, tabs, tmp_path, monkeypatch):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(gr.Error, match=r"source A \(MRI\) is 2 x 2 pixels; .* at least 17 x 17 pixels"):
        fuse(fusion_app, tabs, tmp_path / "tiny.png", tmp_path / "tiny.png")
    monkeypatch.setattr(limits, "MAX_PIXELS", 100 * 100)
    with pytest.raises(gr.Error, match=r"is 256 x 256 pixels; the app fuses at most 10,000 .*python -m fusion_core"):
        fuse(fusion_app, tabs, EXAMPLES[MEDICAL].a, EXAMPLES[MEDICAL].b)


@pytest.fixture
def refusing_app(tmp_path) -> FusionApp:
    """An app of its own, so that its work folder shows what a refused evaluation left."""
    return FusionApp(ModelStore(tmp_path / "no-checkpoints", fallback_preset="tiny"), tmp_path / "work")


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


def test_evaluation_is_bounded_before_any_fusion(refusing_app, tabs, tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_EVALUATE_PAIRS", 1)
    assert refused_evaluation(refusing_app, tabs, pair_zip(tmp_path / "pairs.zip")) == (
        "pairs.zip holds 2 pairs; the app evaluates at most 1. Use `python -m fusion_core evaluate` for more.")
    monkeypatch.setattr(limits, "MAX_EVALUATE_PAIRS", 50)
    monkeypatch.setattr(limits, "MAX_PIXELS", 100 * 100)
    message = refused_evaluation(refusing_app, tabs, pair_zip(tmp_path / "pairs.zip"))
    assert message.startswith(f"MRI/{EXAMPLES[MEDICAL].a.name} is 256 x 256 pixels; the app fuses at most 10,000")


def test_evaluation_names_the_bad_file_of_a_zip(refusing_app, tabs, tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tiny)
    entries = {"MRI/a.png": tiny.read_bytes(), "CT/a.png": tiny.read_bytes()}
    message = refused_evaluation(refusing_app, tabs, zip_of(tmp_path / "small.zip", entries))
    assert message.startswith("MRI/a.png is 2 x 2 pixels") and "at least 17 x 17" in message
    entries = {"MRI/a.png": b"not pixels", "CT/a.png": tiny.read_bytes()}
    assert refused_evaluation(refusing_app, tabs, zip_of(tmp_path / "text.zip", entries)).startswith("MRI/a.png: ")
    message = refused_evaluation(refusing_app, tabs, zip_of(tmp_path / "dot.zip", {".": b"x"}))
    assert message == "The zip was refused: the zip entry '.' names no file."


def test_the_app_caps_the_size_of_an_upload():
    assert app.LAUNCH_OPTIONS["max_file_size"] == MAX_ZIP_BYTES


# ---------------------------------------------------------------------------------------------- time limits


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


def test_a_fusion_out_of_time_before_the_network_does_not_run_it(tabs, tmp_path):
    fusion_app = timed_app(tmp_path, Clock(step=limits.FUSE_SECONDS + 1))  # every stage looks slow
    with pytest.raises(gr.Error, match=f"longer than {limits.FUSE_SECONDS} s and was stopped before the network"):
        fuse(fusion_app, tabs, EXAMPLES[MEDICAL].a, EXAMPLES[MEDICAL].b)
    assert fusion_app.models._cache == {}  # no network was even loaded


@pytest.mark.slow
def test_a_fusion_out_of_time_keeps_its_image_and_stops_the_comparison(tabs, tmp_path):
    clock = Clock()
    steps = fuse_steps(timed_app(tmp_path, clock), tabs, EXAMPLES[MEDICAL].a, EXAMPLES[MEDICAL].b)
    first = next(steps)
    assert pixels(first[tabs.fuse.fused]).shape == (256, 256) and "| DGD-Fusion |" in first[tabs.fuse.metrics]
    clock.now += limits.FUSE_SECONDS + 1
    with pytest.raises(gr.Error) as error:
        next(steps)
    assert error.value.message == (
        f"This request took longer than {limits.FUSE_SECONDS} s and was stopped while comparing with the classical "
        "baselines (the fused image above is complete); try a smaller image, or `python -m fusion_core fuse` on "
        "your own machine.")


def test_an_evaluation_out_of_time_stops_at_the_next_image_and_leaves_nothing(tabs, tmp_path):
    clock, ticks = Clock(), []
    fusion_app = timed_app(tmp_path, clock)

    def progress(done_total, desc):
        ticks.append(done_total)
        clock.now += limits.EVALUATE_SECONDS + 1

    with pytest.raises(gr.Error) as error:
        evaluate(fusion_app, tabs, None, progress=progress)
    assert ticks == [(1, 10)]  # 2 pairs x 5 methods: stopped at the second image
    assert error.value.message == (
        f"This request took longer than {limits.EVALUATE_SECONDS} s and was stopped after 2 of 10 fused images; try "
        "fewer or smaller pairs, or `python -m fusion_core evaluate` on your own machine.")
    assert session_outputs(fusion_app, "evaluations") == []


# ---------------------------------------------------------------------------------------------- train tab bounds


def refused_training(fusion_app: FusionApp, tabs: Tabs, zip_path: Path | None = None, **options) -> str:
    """The message of a training run refused before it starts; nothing of it stays behind."""
    with pytest.raises(gr.Error) as error:
        fusion_app.start_training(tabs.train, SESSION, zip_path and str(zip_path), MEDICAL, FROM_SCRATCH,
                                  TrainOptions(**{"preset": "tiny", **options}))
    assert list((fusion_app.work_dir / "training").iterdir()) == [] and not fusion_app.trainer.busy
    return error.value.message


def test_training_is_bounded_before_it_starts(refusing_app, tabs, tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_TRAIN_PAIRS", 1)
    assert refused_training(refusing_app, tabs, pair_zip(tmp_path / "pairs.zip")) == (
        "pairs.zip holds 2 pairs; the app trains on at most 1. Use `python -m fusion_core train` for more.")
    monkeypatch.setattr(limits, "MAX_TRAIN_PIXELS", 256 * 256)
    monkeypatch.setattr(limits, "MAX_TRAIN_PAIRS", 500)
    assert refused_training(refusing_app, tabs) == (
        "The bundled MRI + CT example set holds 131,072 pixels per source; the app trains on at most 65,536 in all "
        "(a run holds them in memory). Use fewer or smaller pairs, or `python -m fusion_core train`.")
    monkeypatch.setattr(limits, "MAX_TRAIN_PIXELS", 2**28)
    message = refused_training(refusing_app, tabs, steps=limits.MAX_TRAIN_STEPS + 1)
    assert message == (f"Steps per stage must lie between 1 and {limits.MAX_TRAIN_STEPS:,} in the app (got "
                       f"{limits.MAX_TRAIN_STEPS + 1:,}); train longer with `python -m fusion_core train`.")
    monkeypatch.setattr(limits, "MAX_PIXELS", 100 * 100)
    message = refused_training(refusing_app, tabs, pair_zip(tmp_path / "pairs.zip"))
    assert message.startswith(f"MRI/{EXAMPLES[MEDICAL].a.name} is 256 x 256 pixels; the app fuses at most 10,000")


def test_the_train_tab_says_its_seed_and_limits_in_plain_words(tmp_path):
    demo = app.build_demo(FusionApp(ModelStore(tmp_path, fallback_preset="tiny"), tmp_path / "work"))
    texts = [block.value or "" for block in demo.blocks.values() if isinstance(block, gr.Markdown)]
    train = next(text for text in texts if text.startswith("Train or fine-tune"))
    assert "the same random seed (0)" in train and "TrainConfig" not in train
    assert "at most 500 pairs" in train and "10,000 steps" in train


def test_an_out_of_range_seed_is_refused_before_fusion(refusing_app, tabs):
    with pytest.raises(gr.Error, match=r"seed must be a whole number in 0\.\.4294967295, got -1"):
        fuse(refusing_app, tabs, EXAMPLES[MEDICAL].a, EXAMPLES[MEDICAL].b, seed=-1)
    assert refusing_app.models._cache == {}


# ---------------------------------------------------------------------------------------------- a full queue


class HeldApp(FusionApp):
    """An app whose fusions wait until the test lets them go."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started, self.go = threading.Event(), threading.Event()

    def fuse(self, view, session, *args):
        self.started.set()
        assert self.go.wait(60)
        yield {view.notes: "done"}


@pytest.mark.slow
def test_a_full_queue_refuses_a_request_saying_so(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "QUEUE_SIZE", 1)
    held = HeldApp(ModelStore(tmp_path / "no-checkpoints", fallback_preset="tiny"), tmp_path / "work")
    demo = app.build_demo(held)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                **app.LAUNCH_OPTIONS)
    try:
        client = Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=False)
        inputs = (None, None, MEDICAL, AUTO, DEFAULT_WINDOW, 0, DEFAULT_WINDOW, 0, "5, 50, 100", 0, False,
                  False)
        running = client.submit(*inputs, api_name="/fuse")
        assert held.started.wait(30)
        waiting = client.submit(*inputs, api_name="/fuse")
        for _ in range(300):  # until it has joined the queue
            if waiting.status().code == Status.IN_QUEUE:
                break
            time.sleep(0.05)
        assert waiting.status().code == Status.IN_QUEUE
        with pytest.raises(Exception, match="Queue is full"):
            client.submit(*inputs, api_name="/fuse").result(timeout=30)
        held.go.set()
        assert running.result(timeout=30)[4] == waiting.result(timeout=30)[4] == "done"
    finally:
        held.go.set()
        demo.close()


# ---------------------------------------------------------------------------------------------- one decoding


@pytest.fixture
def decodes(monkeypatch) -> list[tuple[int, int]]:
    """The sizes of the images Pillow decodes while the test runs (a header read decodes nothing)."""
    seen, load = [], PIL.ImageFile.ImageFile.load

    def counting_load(image):
        if image.tile:  # pixels not decoded yet
            seen.append(image.size)
        return load(image)

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", counting_load)
    return seen


def test_a_fusion_reads_each_upload_once(tabs, tmp_path, monkeypatch, decodes):
    reads = []

    def counting_read(path, **options):
        reads.append(str(path))
        return read_image(path, **options)

    monkeypatch.setattr(inputs, "read_image", counting_read)
    pair = EXAMPLES[MEDICAL]
    fusion_app = timed_app(tmp_path, Clock(step=limits.FUSE_SECONDS + 1))  # stopped once the sources are read
    with pytest.raises(gr.Error, match="before the network"):
        fuse(fusion_app, tabs, pair.a, pair.b)
    assert sorted(reads) == sorted([str(pair.a), str(pair.b)]) and len(decodes) == 2


def test_a_registered_pair_keeps_its_sources_as_read():
    a, b = (inputs.read_bounded(path, name) for path, name in ((EXAMPLES[MEDICAL].a, "A"), (EXAMPLES[MEDICAL].b, "B")))
    pair = inputs.load_pair(a, b, TASKS[MEDICAL], resample=False, align=False)
    assert pair.a is a and pair.b is b and pair.a.bit_depth == 8  # 8-bit sources are scored as exact integers
    aligned = inputs.load_pair(a, b, TASKS[MEDICAL], resample=False, align=True)
    assert aligned.a is a and aligned.shift is not None and "shifted" in aligned.warnings[0]


def test_the_pairs_of_a_zip_are_checked_from_their_headers(tmp_path, decodes):
    root = unpack_zip(str(pair_zip(tmp_path / "pairs.zip")), tmp_path / "pairs")
    pairs = find_pairs(root)
    assert inputs.check_pairs(pairs, root, "pairs.zip", "evaluate", 50) == 2 * 256 * 256
    assert decodes == []


def test_a_pair_of_two_sizes_is_refused_before_any_decoding(refusing_app, tabs, tmp_path, decodes):
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(small)
    entries = {"MRI/a.png": EXAMPLES[MEDICAL].a.read_bytes(), "CT/a.png": small.read_bytes()}
    message = refused_evaluation(refusing_app, tabs, zip_of(tmp_path / "sizes.zip", entries))
    assert message == ("MRI/a.png is 256 x 256 pixels but CT/a.png is 32 x 32; the two sources of a pair must be "
                       "registered to one size.")
    assert decodes == []


@pytest.mark.slow
def test_an_evaluation_decodes_each_source_once(fusion_app, tabs, decodes):
    evaluate(fusion_app, tabs, None)  # the bundled MRI + CT examples: two pairs of two 256 x 256 files
    assert decodes == [(256, 256)] * 4


@pytest.mark.slow
def test_a_training_run_decodes_each_source_once(fusion_app, tabs, decodes):
    started = train(fusion_app, tabs, stage="1", steps=1, batch=1)
    assert decodes == [(256, 256)] * 4  # PairDataset has read the pairs before the run starts
    assert "finished" in follow(fusion_app, tabs, started)[tabs.train.status]


# ---------------------------------------------------------------------------------------------- hostile inputs

IMG = '<img src="x">'
LINK = '<a style="color:red;font-size:60px">CLICK HERE</a>'


def gray_png(path: Path, height: int, width: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width), np.uint8)).save(path)
    return path


def assert_escaped(message: str, *names: str) -> None:
    """The message shows the names as text: escaped once, no markup left."""
    for name in names:
        assert name.replace("<", "&lt;").replace(">", "&gt;") in message
    assert "<img" not in message and "<a " not in message


def test_one_minimum_size_for_everything_done_on_a_pair(fusion_app, tabs, tmp_path):
    assert limits.MIN_SIDE == VIF_MIN_SIDE == 17  # the largest window of the metrics
    for height, width in ((7, 7), (16, 16), (8, 4000)):
        a = gray_png(tmp_path / f"{height}x{width}.png", height, width)
        with pytest.raises(gr.Error) as error:
            fuse(fusion_app, tabs, a, a)
        assert error.value.message == (f"source A (MRI) is {width} x {height} pixels; the app fuses images of at "
                                       "least 17 x 17 pixels (the metrics' window).")
    smallest = gray_png(tmp_path / "17.png", 17, 17)
    table = fuse(fusion_app, tabs, smallest, smallest)[tabs.fuse.metrics]
    assert "| DGD-Fusion |" in table and "nan" not in table.lower()


def test_a_pair_below_the_minimum_in_a_zip_is_refused_before_any_fusion(refusing_app, tabs, tmp_path):
    thin = gray_png(tmp_path / "thin.png", 8, 4000).read_bytes()
    message = refused_evaluation(refusing_app, tabs, zip_of(tmp_path / "thin.zip", {"MRI/a.png": thin,
                                                                                     "CT/a.png": thin}))
    assert message == ("MRI/a.png is 4000 x 8 pixels; the app fuses images of at least 17 x 17 pixels (the "
                       "metrics' window).")


def test_any_value_error_of_the_library_is_a_message_not_gradios_generic_error(refusing_app, tabs, monkeypatch):
    def failing(*args, **kwargs):
        raise ValueError("the window <b>does not fit</b>")

    monkeypatch.setattr(handlers, "fuse_on_device", failing)
    with pytest.raises(gr.Error) as error:
        fuse(refusing_app, tabs, EXAMPLES[MEDICAL].a, EXAMPLES[MEDICAL].b)
    assert error.value.message == "the window &lt;b&gt;does not fit&lt;/b&gt;"


def test_work_that_cannot_finish_in_time_is_refused_before_it_starts(refusing_app, tabs, tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "NETWORK_SECONDS_PER_MEGAPIXEL", 10_000.0)  # a much slower machine
    monkeypatch.setattr(refusing_app, "slowdown", lambda: 1.0)  # an idle one
    with pytest.raises(gr.Error) as error:
        fuse(refusing_app, tabs, EXAMPLES[MEDICAL].a, EXAMPLES[MEDICAL].b)
    estimate = (limits.NETWORK_SECONDS_PER_IMAGE + (10_000 + limits.SCORING_SECONDS_PER_MEGAPIXEL) * 0.065536) * 1.5
    assert error.value.message == (
        f"Fusing and scoring this 256 x 256 pair would take about {estimate:.0f} s on this server, more than the "
        f"{limits.FUSE_SECONDS} s a request may take; try a smaller image, or `python -m fusion_core fuse` on your "
        "own machine.")
    assert refusing_app.models._cache == {}  # no network was even loaded
    message = refused_evaluation(refusing_app, tabs, None)
    assert message.startswith("Evaluating 2 pairs of 0.1 megapixels per source in all would take about ")
    assert message.endswith(f"more than the {limits.EVALUATE_SECONDS} s a request may take; try fewer or smaller "
                            "pairs, or `python -m fusion_core evaluate` on your own machine.")


def test_the_estimate_grows_with_the_machines_load_and_a_training_run(refusing_app, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert refusing_app.slowdown() == 1.0
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0 * (os.cpu_count() or 1), 0.0, 0.0))
    assert refusing_app.slowdown() == 3.0
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(refusing_app.trainer, "fusion_threads", lambda: refusing_app.trainer.cores / 2)
    assert refusing_app.slowdown() == 2.0


def test_the_networks_fusion_is_checked_between_tiles(tabs, tmp_path, monkeypatch):
    clock = Clock()

    def tiled(pipeline, a, b, timesteps, seed, on_tile):
        clock.now += limits.FUSE_SECONDS + 1  # the first tile ran past the limit
        on_tile(1, 4)
        pytest.fail("the fusion went on after its time was up")

    monkeypatch.setattr(handlers, "fuse_on_device", tiled)
    with pytest.raises(gr.Error) as error:
        fuse(timed_app(tmp_path, clock), tabs, EXAMPLES[MEDICAL].a, EXAMPLES[MEDICAL].b)
    assert error.value.message == (
        f"This request took longer than {limits.FUSE_SECONDS} s and was stopped after 1 of 4 tiles of the network's "
        "fusion; try a smaller image, or `python -m fusion_core fuse` on your own machine.")


def encrypted_zip(path: Path, entries: dict[str, bytes]) -> Path:
    """A zip whose first entry says it is encrypted (bit 0 of its flags, in the local and the central header)."""
    data = bytearray(zip_of(path, entries).read_bytes())
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kind", ["encrypted", "long name", "deep path"])
def test_refused_zips_are_a_clear_message_in_evaluate_and_train(refusing_app, tabs, tmp_path, kind):
    png = gray_png(tmp_path / "a.png", 32, 32).read_bytes()
    if kind == "encrypted":
        upload = encrypted_zip(tmp_path / "secret.zip", {"MRI/a.png": png, "CT/a.png": png})
        expected = "'MRI/a.png' is encrypted; zip the files again without a password."
    elif kind == "long name":
        upload = zip_of(tmp_path / "long.zip", {"MRI/" + "a" * 300 + ".png": png})
        expected = "has a name of 304 bytes, more than the 255 a file system takes."
    else:
        upload = zip_of(tmp_path / "deep.zip", {"/".join(["d"] * 2100) + ".png": png})
        expected = "has a path of 4203 characters, more than the limit of 1024."
    evaluated = refused_evaluation(refusing_app, tabs, upload)
    trained = refused_training(refusing_app, tabs, upload)
    for message in (evaluated, trained):
        assert message.startswith("The zip was refused: the zip entry '") and message.endswith(expected)
        assert len(message) < 250


def test_markup_in_entry_and_file_names_never_renders(refusing_app, tabs, tmp_path, monkeypatch):
    png = gray_png(tmp_path / "a.png", 32, 32).read_bytes()
    message = refused_evaluation(refusing_app, tabs, zip_of(tmp_path / "text.zip", {
        f"MRI/{IMG}.png": b"not pixels", f"CT/{IMG}.png": png}))
    assert message.startswith("MRI/&lt;img src=\"x\"&gt;.png: ")
    assert_escaped(message, IMG)
    message = refused_training(refusing_app, tabs, encrypted_zip(tmp_path / "link.zip", {f"MRI/{LINK}.png": png}))
    assert_escaped(message, LINK)
    monkeypatch.setattr(limits, "MAX_EVALUATE_PAIRS", 1)
    message = refused_evaluation(refusing_app, tabs, pair_zip(tmp_path / f"{IMG}.zip"))
    assert_escaped(message, IMG)
    warnings = []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    (tmp_path / f"{IMG}.png").write_text("not an image")  # a file name holds no '/', so no closing tag
    column = tabs.fuse.source_a
    shown = refusing_app.preview(column, SESSION, str(tmp_path / f"{IMG}.png"), DEFAULT_WINDOW, 0)
    assert len(warnings) == 1 and "<" not in shown[column.info]
    assert_escaped(warnings[0], IMG)


def test_markdown_shows_upload_text_as_it_is():
    from fusion_app.reports import evaluation_summary, plain

    summary = evaluation_summary(2, f"the uploaded zip ({LINK} [x](http://e) *b*)", "dgd-general", {})
    assert "<a " not in summary and "&lt;a style" in summary and "\\[x\\](http://e) \\*b\\*" in summary
    assert plain("plain name-1.png") == "plain name-1.png"


def test_method_folders_with_markup_in_their_names_are_refused(refusing_app, tabs, tmp_path):
    entries = zip_of_entries(find_pairs(EXAMPLES_DIR / TASKS[MEDICAL].folder), "")
    entries |= {f"fused/{IMG}/{Path(name).name}": data for name, data in entries.items() if name.startswith("MRI/")}
    message = refused_evaluation(refusing_app, tabs, zip_of(tmp_path / "methods.zip", entries))
    assert message.startswith("The folder fused/'&lt;img src=\"x\"&gt;' of the zip names a method")
    assert_escaped(message, IMG)


# ---------------------------------------------------------------------------------------------- uploads on disk


def gradio_upload(cache: Path, data: bytes, name: str) -> Path:
    """A file as Gradio keeps an upload: in a folder of its cache named after its content, under its name."""
    path = cache / hashlib.sha256(data).hexdigest() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def uploading_app(tmp_path: Path) -> FusionApp:
    return FusionApp(ModelStore(tmp_path / "no-checkpoints", fallback_preset="tiny"), tmp_path / "work",
                     cache=tmp_path / "gradio")


def test_uploads_leave_gradios_cache_keep_no_name_and_go_when_the_session_ends(tabs, tmp_path):
    fusion_app, pair = uploading_app(tmp_path), EXAMPLES[MEDICAL]
    paths = []
    for source, modality in ((pair.a, "MR"), (pair.b, "CT")):
        made = tmp_path / "made.dcm"
        write_dicom_secondary_capture(made, read_image(source).pixels, modality_hint=modality)
        paths.append(gradio_upload(tmp_path / "gradio", made.read_bytes(), f"Doe_Jane_{modality}.dcm"))
        made.unlink()
    column = tabs.fuse.source_a
    assert pixels(fusion_app.source_changed(column, SESSION, str(paths[0]))[column.preview]).shape == (256, 256)
    assert not paths[0].parent.exists()  # Gradio's copy and its folder are gone
    out = fuse(fusion_app, tabs, *paths)  # the browser sends the same paths again
    assert [Path(p).name for p in out[tabs.fuse.downloads]] == ["fused.png", "fused_16bit.tif", "fused.dcm"]
    uploads = fusion_app.sessions.upload_folder(SESSION)
    assert len(list(uploads.iterdir())) == 2 and all(p.name.startswith("upload-") for p in uploads.iterdir())
    assert [p for p in tmp_path.rglob("*") if "Doe" in p.name] == []
    fusion_app.end_session(SESSION)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    with pytest.raises(gr.Error, match=r"The uploaded file Doe_Jane_MR.dcm is no longer on the server .* again"):
        fuse(fusion_app, tabs, *paths)


def test_a_zip_upload_leaves_gradios_cache_and_goes_when_the_session_ends(tabs, tmp_path, monkeypatch):
    fusion_app = uploading_app(tmp_path)
    upload = gradio_upload(tmp_path / "gradio", pair_zip(tmp_path / "made.zip").read_bytes(), "Doe_Jane.zip")
    (tmp_path / "made.zip").unlink()
    monkeypatch.setattr(limits, "MAX_EVALUATE_PAIRS", 1)
    message = refused_evaluation(fusion_app, tabs, upload)
    assert message.startswith("Doe_Jane.zip holds 2 pairs")  # named as uploaded, in memory only
    assert not upload.parent.exists() and [p for p in tmp_path.rglob("*") if "Doe" in p.name] == []
    fusion_app.end_session(SESSION)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_gradios_copies_of_the_bundled_examples_stay_for_every_session(tmp_path):
    fusion_app = uploading_app(tmp_path)
    example = gradio_upload(tmp_path / "gradio", EXAMPLES[MEDICAL].a.read_bytes(), EXAMPLES[MEDICAL].a.name)
    assert fusion_app.upload("mine", str(example)).path == example and example.is_file()
    fusion_app.end_session("mine")
    assert fusion_app.upload("theirs", str(example)).path == example


def test_one_upload_sent_by_two_sessions_is_copied_for_each(tmp_path):
    fusion_app = uploading_app(tmp_path)
    path = gradio_upload(tmp_path / "gradio", b"pixels", "scan.png")  # one content, one path in Gradio's cache
    mine, theirs = fusion_app.upload("mine", str(path)), fusion_app.upload("theirs", str(path))
    assert mine.path != theirs.path and mine.path.read_bytes() == theirs.path.read_bytes() == b"pixels"
    assert mine.name == theirs.name == "scan.png" and not path.exists()
    fusion_app.end_session("mine")
    assert fusion_app.upload("theirs", str(path)) == theirs


def renamed_copy(source: Path, path: Path) -> Path:
    """``source``'s pixels under another name, as a PNG of other bytes (a text chunk): not a bundled example."""
    info = PngInfo()
    info.add_text("Comment", "a copy")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(source).save(path, pnginfo=info)
    return path


def files_with_data(folder: Path) -> dict[str, int]:
    """The files of ``folder`` that hold data, with their sizes (Gradio also leaves empty temporary files at the
    top of its cache, which the sweep removes)."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")
            if p.is_file() and p.stat().st_size > 0}


@pytest.mark.slow
def test_a_fusion_leaves_nothing_in_gradios_cache_and_its_files_go_with_the_session(tmp_path, monkeypatch):
    cache, work, downloads = tmp_path / "gradio", tmp_path / "work", tmp_path / "downloads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))  # read as the components are built
    fusion_app = FusionApp(ModelStore(tmp_path / "no-checkpoints", fallback_preset="tiny"), work, cache=cache)
    demo = app.build_demo(fusion_app)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                **app.LAUNCH_OPTIONS)
    try:
        pair = EXAMPLES["Infrared + visible"]
        a = renamed_copy(pair.a, tmp_path / "sent" / "Doe_Jane_infrared.png")
        b = renamed_copy(pair.b, tmp_path / "sent" / "Doe_Jane_visible.png")
        client = Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=str(downloads))
        before = files_with_data(cache)
        outputs = client.predict(handle_file(str(a)), handle_file(str(b)), "Infrared + visible", AUTO,
                                 DEFAULT_WINDOW, 0, DEFAULT_WINDOW, 0, "5, 50, 100", 0, False, False,
                                 api_name="/fuse")
        assert files_with_data(cache) == before  # the uploads left it, and no output was copied into it
        shown = fusion_app.sessions.folder(client.session_hash)
        assert [Path(p).name for p in outputs[3]] == ["fused.png", "fused_16bit.tif"]
        np.testing.assert_array_equal(pixels(outputs[0]), pixels(next(shown.rglob("shown/fused.png"))))
        assert [p for p in (*work.rglob("*"), *cache.rglob("*"), *downloads.rglob("*")) if "Doe" in p.name] == []
        fusion_app.end_session(client.session_hash)
        assert [p for p in work.rglob("*") if p.is_file()] == [] and files_with_data(cache) == before
    finally:
        demo.close()


def test_a_model_card_names_no_uploaded_zip(tmp_path):
    fusion_app = uploading_app(tmp_path)
    upload = gradio_upload(tmp_path / "gradio", pair_zip(tmp_path / "made.zip").read_bytes(), "Doe_Jane.zip")
    _, data, _, _ = fusion_app._training_inputs(tmp_path / "pairs", fusion_app.upload(SESSION, str(upload)), MEDICAL,
                                                FROM_SCRATCH, TrainOptions(preset="tiny"))
    assert data == "an uploaded zip of 2 pairs"


@pytest.mark.slow
def test_an_evaluated_zip_is_worked_on_outside_the_served_outputs(tabs, tmp_path):
    fusion_app, pairs = uploading_app(tmp_path), find_pairs(EXAMPLES_DIR / TASKS[MEDICAL].folder)
    entries = {f"Doe_Jane/{p.parent.name}/Doe_{p.name}": p.read_bytes() for pair in pairs for p in (pair.a, pair.b)}
    upload = gradio_upload(tmp_path / "gradio", zip_of(tmp_path / "made.zip", entries).read_bytes(), "pairs.zip")
    (tmp_path / "made.zip").unlink()
    served = fusion_app.sessions.outputs
    seen = []

    def progress(*args, **kwargs):  # while the pairs are fused: their names are on disk, never where it is served
        seen.append([p for p in served.rglob("*") if "Doe" in p.name])

    out = evaluate(fusion_app, tabs, upload, progress=progress)
    assert seen and all(names == [] for names in seen)
    shown = [out[tabs.evaluate.chart], *out[tabs.evaluate.files]]
    assert [Path(p).parent for p in shown] == session_outputs(fusion_app, "evaluations") * 3
    assert [p for p in tmp_path.rglob("*") if "Doe" in p.name] == []  # the scratch folder went with the request
    fusion_app.end_session(SESSION)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
