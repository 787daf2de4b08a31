"""Data-parallel commands: how work is shared over ranks, and 2-process gloo runs under torchrun (folder fusion
and evaluation) against one process. Tiny synthetic pairs and a checkpoint of the tiny fixture in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fusion_core.checkpoint import save_pipeline
from fusion_core.cli import main
from fusion_core.distributed import all_gather, share
from fusion_core.imaging import write_png

REPO = Path(__file__).resolve().parent.parent
NAMES = ("001", "002", "003", "004", "005")


@pytest.mark.parametrize("world_size, chunk", [(1, 1), (2, 1), (2, 2), (3, 2), (4, 3)])
def test_share_gives_every_item_to_one_rank_and_keeps_chunks_together(world_size, chunk):
    items = list(range(11))
    shares = [share(items, rank, world_size, chunk) for rank in range(world_size)]
    assert sorted(i for part in shares for i in part) == items
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    for rank, part in enumerate(shares):
        assert part == [i for c in chunks[rank::world_size] for i in c]


def test_share_refuses_a_rank_outside_the_world_and_gathers_alone():
    with pytest.raises(ValueError, match="rank 2 of 2"):
        share([1, 2], 2, 2)
    assert all_gather({"a": 1}, 1) == [{"a": 1}]


@pytest.fixture
def pairs_and_checkpoint(tmp_path, tiny_pipeline) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    root = tmp_path / "pairs"
    for name in NAMES:
        for folder, shape in (("ir", (32, 40)), ("vi", (32, 40, 3))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            write_png(root / folder / f"{name}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root, save_pipeline(tmp_path / "checkpoint", tiny_pipeline)


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 -m fusion_core ARGS`` on the CPU (gloo), one thread each."""
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2", "-m",
               "fusion_core", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_two_process_folder_fusion_writes_the_files_of_one_process(pairs_and_checkpoint, tmp_path):
    root, checkpoint = pairs_and_checkpoint
    flags = ["--checkpoint", str(checkpoint), "--device", "cpu", "--batch", "2"]
    done = _torchrun("fuse", str(root), "-o", str(tmp_path / "two"), *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    # every pair fused once over both ranks (rank 0 counts what every rank fused), and printed once
    assert done.stdout.count("fused 5 pairs, skipped 0 already fused ->") == 1
    assert main(["fuse", str(root), "-o", str(tmp_path / "one"), *flags]) == 0
    two, one = _files(tmp_path / "two"), _files(tmp_path / "one")
    assert list(two) == [f"{name}.png" for name in NAMES] and two == one


@pytest.mark.slow
def test_two_process_evaluation_writes_the_tables_of_one_process(pairs_and_checkpoint, tmp_path):
    root, checkpoint = pairs_and_checkpoint
    flags = ["--methods", "dgd,average", "--checkpoint", str(checkpoint), "--device", "cpu"]
    done = _torchrun("evaluate", str(root), *flags, "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("5 pairs x 2 methods") == 1
    assert main(["evaluate", str(root), *flags, "--out", str(tmp_path / "one")]) == 0
    for table in ("per_image.csv", "means.csv", "means.md"):
        assert (tmp_path / "two" / table).read_bytes() == (tmp_path / "one" / table).read_bytes()
    assert _files(tmp_path / "two" / "fused" / "dgd") == _files(tmp_path / "one" / "fused" / "dgd")
