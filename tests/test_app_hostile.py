"""Hostile inputs: one minimum size, work refused before it starts, refused zips, markup that never renders.

The network runs with random weights of the tiny preset (an empty checkpoint folder): the plumbing and the
messages are checked, not fusion quality. Never reads outside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from app_support import (
    EXAMPLES,
    MEDICAL,
    SESSION,
    Clock,
    fuse,
    pair_zip,
    refused_evaluation,
    refused_training,
    timed_app,
    zip_of,
    zip_of_entries,
)
from fusion_app import handlers, limits
from fusion_app.inputs import EXAMPLES as EXAMPLES_DIR
from fusion_app.models import TASKS
from fusion_app.texts import (
    DEFAULT_WINDOW,
)
from fusion_core import (
    find_pairs,
)
from fusion_core.metrics import VIF_MIN_SIDE

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
