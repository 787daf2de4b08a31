"""The app's bounds: time limits, the Train tab's bounds, a full queue, and each source decoded once.

The network runs with random weights of the tiny preset (an empty checkpoint folder): the plumbing and the
messages are checked, not fusion quality. Never reads outside the repository.
"""

from __future__ import annotations

import threading
import time

import gradio as gr
import numpy as np
import PIL.ImageFile
import pytest
from gradio_client import Client
from gradio_client.utils import Status
from PIL import Image

import app
from app_support import (
    EXAMPLES,
    MEDICAL,
    Clock,
    evaluate,
    follow,
    free_port,
    fuse,
    fuse_steps,
    pair_zip,
    pixels,
    refused_evaluation,
    refused_training,
    session_outputs,
    timed_app,
    train,
    zip_of,
)
from fusion_app import inputs, limits
from fusion_app.archive import unpack_zip
from fusion_app.handlers import FusionApp
from fusion_app.models import AUTO, TASKS, ModelStore
from fusion_app.texts import (
    DEFAULT_WINDOW,
)
from fusion_core import (
    find_pairs,
    read_image,
)


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
