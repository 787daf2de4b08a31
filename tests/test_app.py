"""The browser app: its handlers called directly, then the launched app through gradio_client.

The network runs with random weights of the tiny preset throughout (an empty checkpoint folder): these tests
check the plumbing and the messages, not fusion quality. Never reads outside the repository.
"""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import app
from fusion_app.archive import unpack_zip
from fusion_app.models import AUTO, RANDOM, TASKS, ModelStore
from fusion_core import find_pairs, read_image, write_dicom_secondary_capture

EXAMPLES = {task: find_pairs(app.EXAMPLES / spec.folder)[0] for task, spec in TASKS.items()}
MEDICAL = "MRI + CT"


@pytest.fixture(scope="module")
def fusion_app(tmp_path_factory) -> app.FusionApp:
    root = tmp_path_factory.mktemp("app")
    return app.FusionApp(ModelStore(root / "no-checkpoints", fallback_preset="tiny"), root / "work", poll_seconds=0.1)


def fuse(fusion_app: app.FusionApp, a, b, task: str = MEDICAL, **options) -> tuple:
    """The last (complete) output of the fuse handler."""
    values = {"path_a": a and str(a), "path_b": b and str(b), "task": task, "choice": AUTO,
              "window_a": app.DEFAULT_WINDOW, "frame_a": 0, "window_b": app.DEFAULT_WINDOW, "frame_b": 0,
              "timesteps": "5, 50, 100", "seed": 0, "resample": False, "align": False, **options}
    return list(fusion_app.fuse(**values))[-1]


def zip_of(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def pair_zip(path: Path, task: str = MEDICAL, top: str = "") -> Path:
    """The bundled pairs of a task as a zip, optionally inside a top folder."""
    pairs = find_pairs(app.EXAMPLES / TASKS[task].folder)
    entries = {f"{top}{p.parent.name}/{p.name}": p.read_bytes() for pair in pairs for p in (pair.a, pair.b)}
    return zip_of(path, entries)


# ---------------------------------------------------------------------------------------------- handlers


def test_build_demo_constructs_without_loading_a_model(tmp_path):
    store = ModelStore(tmp_path, fallback_preset="tiny")
    demo = app.build_demo(app.FusionApp(store, tmp_path / "work"))
    assert isinstance(demo, gr.Blocks)
    assert {"fuse", "evaluate", "train", "stop_training"} <= {d.api_name for d in demo.fns.values()}
    assert store._cache == {}  # lazily: the first fusion loads the pipeline


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_fuses_an_example_of_each_task(fusion_app, task):
    pair = EXAMPLES[task]
    fused, slider_a, slider_b, downloads, notes, dicom, table, baselines, experts, gates, attention = fuse(
        fusion_app, pair.a, pair.b, task)
    b = read_image(pair.b).pixels
    assert fused.dtype == np.uint8 and fused.shape == (b.shape if b.ndim == 3 else b.shape[:2])
    assert slider_a[1] is fused and slider_b[0].shape[:2] == fused.shape[:2]
    assert [Path(p).suffix for p in downloads] == [".png", ".tif"] and dicom == ""
    np.testing.assert_array_equal(np.asarray(read_image(downloads[0]).pixels * 255).round(), fused)
    assert "random weights" in notes
    assert "Metric convention: standard" in table and "| DGD-Fusion |" in table and "**" in table
    assert [name for _, name in baselines] == ["average", "max", "laplacian", "guided_filter"]
    assert experts is not None and gates is not None and attention is not None


@pytest.mark.slow
def test_fuses_a_dicom_pair_and_exports_dicom(fusion_app, tmp_path):
    pair = EXAMPLES[MEDICAL]
    paths = []
    for source, modality in ((pair.a, "MR"), (pair.b, "CT")):
        paths.append(tmp_path / f"{modality}.dcm")
        write_dicom_secondary_capture(paths[-1], read_image(source).pixels, modality_hint=modality)
    preview, info, group = fusion_app.preview(str(paths[0]), app.DEFAULT_WINDOW, 0)
    assert preview.shape == (256, 256) and info.startswith("DICOM MR") and group.visible
    outputs = fuse(fusion_app, *paths, window_b="bone (W 2000, L 500)")
    assert Path(outputs[3][-1]).suffix == ".dcm" and read_image(outputs[3][-1]).dicom is not None
    assert "DICOM inputs" in outputs[5] and "| modality | MR | CT |" in outputs[5]
    assert "Anonymous" not in outputs[5] and "preset bone" in outputs[5]


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "Upload source A"),
    (lambda d: d / "empty.png", "empty"),
    (lambda d: d / "notes.txt", "not a recognised image"),
    (lambda d: d / "broken.dcm", "DICOM"),
])
def test_bad_uploads_give_a_clear_message(fusion_app, tmp_path, make, message):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("these are not pixels\n")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff")
    with pytest.raises(gr.Error, match=message):
        fuse(fusion_app, make(tmp_path), EXAMPLES[MEDICAL].b)


def test_bad_preview_warns_and_keeps_working(fusion_app, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="not a recognised image"):
        preview, info, _ = fusion_app.preview(str(tmp_path / "notes.txt"), app.DEFAULT_WINDOW, 0)
    assert preview is None and "not a recognised image" in info
    assert fusion_app.preview(str(EXAMPLES[MEDICAL].a), app.DEFAULT_WINDOW, 0)[0].shape == (256, 256)


@pytest.mark.slow
def test_size_mismatch_asks_for_resampling_then_resamples(fusion_app):
    ivf, medical = EXAMPLES["Infrared + visible"], EXAMPLES[MEDICAL]
    with pytest.raises(gr.Error, match="Resample B to A"):
        fuse(fusion_app, medical.a, ivf.b)
    outputs = fuse(fusion_app, medical.a, ivf.b, resample=True, align=True)
    assert outputs[0].shape == (256, 256, 3) and "resized" in outputs[4] and "shifted" in outputs[4]


@pytest.mark.parametrize("timesteps, message", [("five", "whole numbers"), ("5, 50", "reads 3 feature timesteps")])
def test_bad_timesteps_give_a_clear_message(fusion_app, timesteps, message):
    with pytest.raises(gr.Error, match=message):
        fuse(fusion_app, EXAMPLES[MEDICAL].a, EXAMPLES[MEDICAL].b, timesteps=timesteps)


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
def test_evaluates_the_bundled_examples(fusion_app):
    summary, means, chart, rows, files = fusion_app.evaluate(None, MEDICAL, AUTO, "standard", lambda *a, **k: None)
    assert "2 pairs" in summary and "random weights" in summary
    assert "| DGD-Fusion |" in means and "Metric convention: standard" in means
    assert len(rows) == 2 * 5 and Path(chart).is_file() and all(Path(f).suffix == ".csv" for f in files)


@pytest.mark.slow
def test_evaluates_an_uploaded_zip_and_refuses_zip_slip(fusion_app, tmp_path):
    archive = pair_zip(tmp_path / "pairs.zip", top="my pairs/")
    summary, *_ = fusion_app.evaluate(str(archive), MEDICAL, RANDOM, "standard", lambda *a, **k: None)
    assert "2 pairs" in summary and "uploaded zip" in summary
    with pytest.raises(gr.Error, match="The zip was refused"):
        fusion_app.evaluate(str(zip_of(tmp_path / "evil.zip", {"../x.png": b"x"})), MEDICAL, AUTO, "standard")


@pytest.mark.slow
def test_training_makes_a_selectable_checkpoint(fusion_app):
    outputs = list(fusion_app.start_training(None, MEDICAL, "both", 1, 64, 1, 1e-3, "tiny", app.FROM_SCRATCH))
    progress, curve, preview, status, checkpoint_zip, fuse_menu, eval_menu, start_menu = outputs[-1]
    assert "finished at step 2 of 2" in status and 'value="2" max="2"' in progress
    name = status.split("**")[1]
    assert name in [value for _, value in fuse_menu.choices] and name in [v for _, v in start_menu.choices]
    assert f"{name}/model.safetensors" in zipfile.ZipFile(checkpoint_zip).namelist()
    notes = fuse(fusion_app, EXAMPLES[MEDICAL].a, EXAMPLES[MEDICAL].b, choice=name)[4]
    assert f"by **{name}**" in notes and "random weights" not in notes


@pytest.mark.slow  # alone, 3-5 s: the first training of the module (in the full run an earlier one warms up)
def test_one_training_at_a_time_and_stop(fusion_app):
    first = fusion_app.start_training(None, MEDICAL, "1", 500, 64, 1, 1e-4, "tiny", app.FROM_SCRATCH)
    next(first)
    with pytest.raises(gr.Error, match="already in progress"):
        next(fusion_app.start_training(None, MEDICAL, "1", 1, 64, 1, 1e-4, "tiny", app.FROM_SCRATCH))
    assert "Stopping" in fusion_app.stop_training()
    assert "was stopped" in list(first)[-1][3]
    assert "No training run" in fusion_app.stop_training()


def test_training_options_are_checked(fusion_app):
    with pytest.raises(gr.Error, match="multiple of 64"):
        next(fusion_app.start_training(None, MEDICAL, "1", 1, 50, 1, 1e-4, "tiny", app.FROM_SCRATCH))


# ---------------------------------------------------------------------------------------------- launched


@pytest.fixture(scope="module")
def client(fusion_app, tmp_path_factory):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = app.build_demo(fusion_app).queue(max_size=16)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                **app.LAUNCH_OPTIONS)
    yield Client(demo.local_url, verbose=False, analytics_enabled=False,
                 download_files=str(tmp_path_factory.mktemp("downloads")))
    demo.close()


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_api_fuses_an_example_of_each_task(client, task):
    pair = EXAMPLES[task]
    outputs = client.predict(handle_file(str(pair.a)), handle_file(str(pair.b)), task, AUTO, app.DEFAULT_WINDOW, 0,
                             app.DEFAULT_WINDOW, 0, "5, 50, 100", 0, False, False, api_name="/fuse")
    fused = read_image(outputs[0]).pixels
    assert fused.shape[:2] == read_image(pair.a).pixels.shape[:2] and "| DGD-Fusion |" in outputs[6]


@pytest.mark.slow
def test_api_reports_a_bad_upload(client, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(AppError, match="not a recognised image"):
        client.predict(handle_file(str(tmp_path / "notes.txt")), handle_file(str(EXAMPLES[MEDICAL].b)), MEDICAL,
                       AUTO, app.DEFAULT_WINDOW, 0, app.DEFAULT_WINDOW, 0, "", 0, False, False, api_name="/fuse")


@pytest.mark.slow
def test_api_evaluates_and_trains(client):
    summary, means, *_ = client.predict(None, "MRI + PET", AUTO, "standard", api_name="/evaluate")
    assert "2 pairs" in summary and "| DGD-Fusion |" in means
    outputs = client.predict(None, MEDICAL, "2", 1, 64, 1, 1e-4, "tiny", app.FROM_SCRATCH, api_name="/train")
    assert "finished at step 1 of 1" in outputs[3] and outputs[4].endswith(".zip")
