"""The launched app through gradio_client: fusion, a bad upload, evaluation then training, an ablation variant.

The network runs with random weights of the tiny preset (an empty checkpoint folder): the plumbing and the
messages are checked, not fusion quality. Never reads outside the repository.
"""

from __future__ import annotations

import time
import zipfile

import gradio as gr
import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from app_support import EXAMPLES, MEDICAL, fuse, pair_zip, refused_evaluation, zip_of
from fusion_app import limits
from fusion_app.archive import MAX_ZIP_BYTES
from fusion_app.handlers import fail
from fusion_app.models import AUTO, TASKS
from fusion_app.texts import (
    DEFAULT_WINDOW,
    FROM_SCRATCH,
    NO_ABLATION,
)
from fusion_core import (
    read_image,
)


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
