"""Uploads on disk: out of Gradio's cache under neutral names, outputs served from the session's folder, all of
it gone when the session ends.

The network runs with random weights of the tiny preset (an empty checkpoint folder): the plumbing and the
messages are checked, not fusion quality. Never reads outside the repository.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import app
from app_support import (
    EXAMPLES,
    MEDICAL,
    SESSION,
    evaluate,
    free_port,
    fuse,
    pair_zip,
    pixels,
    refused_evaluation,
    session_outputs,
    zip_of,
)
from fusion_app import limits
from fusion_app.handlers import FusionApp
from fusion_app.inputs import EXAMPLES as EXAMPLES_DIR
from fusion_app.inputs import TrainOptions
from fusion_app.models import AUTO, TASKS, ModelStore
from fusion_app.texts import (
    DEFAULT_WINDOW,
    FROM_SCRATCH,
)
from fusion_core import (
    find_pairs,
    read_image,
    write_dicom_secondary_capture,
)


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
