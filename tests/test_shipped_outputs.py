"""The shipped checkpoints fuse every bundled example exactly as they did when the hashes were recorded.

``data/shipped_fused_sha256.json`` holds the SHA-256 of each fused uint8 image, made with one CPU thread (a
float sum's order, and so a rounding, can change with the thread count). A change that moves one grey level
of one example fails here: restructurings must keep the pixels; a retrained checkpoint rewrites the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion_core import CHECKPOINT_ROOT, load_pipeline, read_pair

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
EXPECTED = json.loads((Path(__file__).parent / "data" / "shipped_fused_sha256.json").read_text())
SOURCES = {"ivf": ("ir", "vi"), "mri_ct": ("MRI", "CT"), "mri_pet": ("MRI", "PET"), "mri_spect": ("MRI", "SPECT")}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_example_is_listed():
    pairs = {f"{checkpoint}/{task}/{path.stem}" for checkpoint in ("dgd-general", "dgd-medical")
             for task, (a, _) in SOURCES.items() for path in (EXAMPLES / task / a).iterdir()}
    assert pairs == set(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", ["dgd-general", "dgd-medical"])
def test_shipped_checkpoint_fuses_examples_as_recorded(checkpoint, one_thread):
    pipeline = load_pipeline(CHECKPOINT_ROOT / checkpoint)
    for task, (a_dir, b_dir) in SOURCES.items():
        for a_path in sorted((EXAMPLES / task / a_dir).iterdir()):
            pair = read_pair(a_path, EXAMPLES / task / b_dir / a_path.name)
            fused = pipeline.fuse(pair.a.pixels, pair.b.pixels).fused
            digest = hashlib.sha256(np.ascontiguousarray(fused).tobytes()).hexdigest()
            assert digest == EXPECTED[f"{checkpoint}/{task}/{a_path.stem}"], f"{task}/{a_path.name} changed"
