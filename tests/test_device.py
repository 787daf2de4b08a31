"""On a ZeroGPU Space (the ``spaces`` package importable) fusion and evaluation run inside ``spaces.GPU``; without
it the same functions run as they are."""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import torch

import fusion_app.device as device


def _with_fake_spaces(monkeypatch) -> tuple[types.ModuleType, list[str]]:
    """fusion_app.device imported again beside a ``spaces`` module whose GPU decorator records each call."""
    calls: list[str] = []

    def gpu(fn):
        def lent(*args, **kwargs):
            calls.append(fn.__name__)
            return fn(*args, **kwargs)
        return lent

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    return importlib.reload(device), calls


def test_fusion_and_evaluation_run_inside_spaces_gpu(monkeypatch, tiny_pipeline, tmp_path):
    try:
        zero_gpu, calls = _with_fake_spaces(monkeypatch)
        assert zero_gpu.ON_ZERO_GPU
        a, b = np.full((16, 16), 100, np.uint8), np.full((16, 16, 3), 50, np.uint8)
        zero_gpu.fuse_on_device(tiny_pipeline, a, b, None, 0)
        assert calls == ["fuse_on_device"]
        monkeypatch.setattr(zero_gpu, "evaluate_folder", lambda *args, **kwargs: "scored")
        assert zero_gpu.evaluate_on_device(tmp_path, tiny_pipeline, "net", tmp_path, "standard", None, {}) == "scored"
        assert calls == ["fuse_on_device", "evaluate_on_device"]
    finally:
        monkeypatch.delitem(sys.modules, "spaces")
        importlib.reload(device)


def test_without_spaces_the_calls_run_as_they_are(tiny_pipeline):
    assert not device.ON_ZERO_GPU and device.on_accelerator(len) is len
    a, b = np.full((16, 16), 100, np.uint8), np.full((16, 16, 3), 50, np.uint8)
    expected = tiny_pipeline.fuse(a, b, generator=torch.Generator().manual_seed(0)).fused
    np.testing.assert_array_equal(device.fuse_on_device(tiny_pipeline, a, b, None, 0).fused, expected)
