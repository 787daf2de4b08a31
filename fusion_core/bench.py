"""The performance benchmark of DGD-Fusion: ``python -m fusion_core bench`` (docs/design.md §5).

For a pair of the given size: the median latency of ``FusionPipeline.fuse`` over several runs after one
warm-up (the mean beside it), and the peak memory, for each preset and device; the same figures for the
plain average of the two images as a reference; the time of all metrics for one pair; optionally a large
pair fused through tiles; and the throughput of ``FusionPipeline.fuse_batch`` in pairs per second at each
batch size (1, 4 and 8 by default: ``max(batches)`` different pairs of that size per run; on the CPU, where
``fuse_batch`` gives each pair its own pass, the batch sizes differ only by noise). Each measurement runs in
a fresh process, so its peak resident memory (CPU) or peak allocated memory (CUDA) is its own;
``isolate=False`` measures in the calling process instead, which saves a process start (seconds: each imports
torch) per measurement for a quick check, but then the CPU peak is the whole process's so far. A preset is
measured with random weights (latency does not depend on their values); a checkpoint folder in place of a
preset measures the architecture it was saved with (the bundled checkpoints' GFS mask options, for example).
"""

from __future__ import annotations

import multiprocessing
import platform
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from .baselines import BASELINES
from .checkpoint import is_checkpoint, load_pipeline
from .config import PRESETS
from .metrics import compute_metrics
from .pipeline import FusionPipeline, build_pipeline


def synthetic_pair(width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A gray A and an RGB B with smooth structure and texture, uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    a = 0.5 + 0.4 * np.sin(12 * x) * np.cos(9 * y) + 0.05 * rng.standard_normal((height, width))
    b = np.stack([0.5 + 0.4 * np.cos(7 * x + c) * np.sin(11 * y) for c in range(3)], axis=-1)
    b += 0.05 * rng.standard_normal(b.shape)
    return (np.clip(a, 0, 1) * 255).astype(np.uint8), (np.clip(b, 0, 1) * 255).astype(np.uint8)


def _time(call: Callable[[], object], repeats: int, sync: Callable[[], None]) -> dict[str, float]:
    call()
    sync()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - began)
    return {"median_s": statistics.median(times), "mean_s": statistics.fmean(times), "runs": repeats}


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kilobytes


def _pipeline(preset: str) -> FusionPipeline:
    """A preset with random weights, or the checkpoint saved in the folder ``preset``."""
    return build_pipeline(PRESETS[preset]) if preset in PRESETS else load_pipeline(preset)


def _measure(kind: str, preset: str, device: str, size: tuple[int, int], repeats: int) -> dict:
    """Runs in a child process: one measurement and its own peak memory."""
    a, b = synthetic_pair(*size)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if kind == "fuse":
        pipeline = _pipeline(preset).to(device)
        call = partial(pipeline.fuse, a, b)
    elif kind == "average":
        call = partial(BASELINES["average"], a / 255.0, b / 255.0)
    else:
        fused = (BASELINES["average"](a / 255.0, b / 255.0) * 255).round().astype(np.uint8)
        call = partial(compute_metrics, fused, a, b)
    baseline_mb = _peak_memory_mb(device) if device.startswith("cpu") else 0.0
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    timing = _time(call, repeats, sync)
    return {"kind": kind, "preset": preset if kind == "fuse" else None, "device": device,
            "size": f"{size[0]}x{size[1]}", **timing, "peak_memory_mb": _peak_memory_mb(device),
            "memory_before_mb": baseline_mb}


def _measure_batch(preset: str, device: str, size: tuple[int, int], batch: int, pairs: int, repeats: int) -> dict:
    """Runs in a child process: ``pairs`` different pairs fused ``batch`` at a time; pairs per second."""
    pipeline = _pipeline(preset).to(device)
    sources = [synthetic_pair(*size, seed=seed) for seed in range(pairs)]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    timing = _time(partial(pipeline.fuse_batch, sources, batch_size=batch), repeats, sync)
    return {"preset": preset, "device": device, "size": f"{size[0]}x{size[1]}", "batch": batch, "pairs": pairs,
            **timing, "pairs_per_s": pairs / timing["median_s"], "peak_memory_mb": _peak_memory_mb(device)}


def _child(queue: multiprocessing.Queue, measure: Callable[..., dict], args: tuple) -> None:
    queue.put(measure(*args))


def _in_child(measure: Callable[..., dict], *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, measure, args))
    process.start()
    result = queue.get()
    process.join()
    return result


def run_benchmark(presets: list[str], repeats: int = 5, size: tuple[int, int] = (640, 480),
                  large: tuple[int, int] | None = None, device: str = "cpu", isolate: bool = True,
                  batches: tuple[int, ...] = (1, 4, 8)) -> dict:
    """Run every measurement, each in a fresh process unless ``isolate`` is False; a JSON-ready report.

    ``batches``: batch sizes whose fuse_batch throughput is measured for each preset and device (none: skip).
    """
    unknown = [p for p in presets if p not in PRESETS and not is_checkpoint(p)]
    if unknown:
        raise ValueError(f"unknown presets {unknown}: neither one of {sorted(PRESETS)} nor a checkpoint folder")
    if any(b < 1 for b in batches):
        raise ValueError(f"batch sizes must be at least 1, got {batches}")
    devices = ["cpu", "cuda"] if device == "all" else [device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    measure = _in_child if isolate else (lambda fn, *args: fn(*args))
    results, throughput = [], []
    for dev in devices:
        results += [measure(_measure, "fuse", preset, dev, size, repeats) for preset in presets]
        if large is not None:
            results.append(measure(_measure, "fuse", presets[0], dev, large, 1))
        throughput += [measure(_measure_batch, preset, dev, size, batch, max(batches), repeats)
                       for preset in presets for batch in batches]
    results.append(measure(_measure, "average", "", "cpu", size, repeats))
    results.append(measure(_measure, "metrics", "", "cpu", size, repeats))
    return {"machine": {"platform": platform.platform(), "processor": platform.machine(),
                        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
            "isolated": isolate, "results": results, "throughput": throughput}
