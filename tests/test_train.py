"""Training on a tiny config and a tiny synthetic dataset in tmp_path: exact resume (after a stop, a crash, or a
SIGKILL at any file of a checkpoint), stop requests, atomic checkpoints, the JSON-lines log with each step once,
a 2-process gloo run under torchrun, and the ``train`` command line (its seed draws the initial weights)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_same_weights, seeded_model, train_log, write_dataset
from fusion_core import checkpoint
from fusion_core.baselines import BASELINES
from fusion_core.checkpoint import MANIFEST_NAME, PENDING_NAME, WEIGHTS_NAME, load_model
from fusion_core.cli import main
from fusion_core.config import TrainConfig
from fusion_core.models.dgd_fusion import DGDFusionModel, build_model
from fusion_core.training import (
    LOG_NAME,
    PROVENANCE_NAME,
    Origin,
    Provenance,
    TrainProgress,
    TrainRequest,
    prepare_run,
    read_train_state,
    run_stages,
    train,
)
from fusion_core.validation import ValidationSet

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT_FILES = {"config.json", "model.safetensors", "MODEL_CARD.md", "optimizer.safetensors",
                    "train_state.json", PROVENANCE_NAME, MANIFEST_NAME, LOG_NAME}
STAGE_LOSSES = {1: {"diffusion"}, 2: {"fusion", "intensity", "gradient", "ssim"}}

DDP_SCRIPT = """
import json
import sys
from pathlib import Path
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from fusion_core.config import FusionConfig, TrainConfig
from fusion_core.data import PairDataset
from fusion_core.models.dgd_fusion import DGDFusionModel, build_model
from fusion_core.distributed import setup_distributed
from fusion_core.training import train

data, out, config = Path(sys.argv[1]), Path(sys.argv[2]), FusionConfig.from_dict(json.loads(sys.argv[3]))
context = setup_distributed("cpu")
torch.manual_seed(context.rank)  # a different start on each rank: training must begin from rank 0's weights
model = DGDFusionModel(config)
train_config = TrainConfig(stage=1, steps=3, batch_size=2, crop=32, checkpoint_every=0, preview_every=0)
result = train(model, PairDataset.from_folder(data), train_config, out / "checkpoint", context=context)
state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
save_file(state, out / f"rank{context.rank}.safetensors")
report = {"world_size": context.world_size, "backend": dist.get_backend(), "step": result.step,
          "losses": result.losses}
(out / f"rank{context.rank}.json").write_text(json.dumps(report))
dist.destroy_process_group()
"""

KILL_SCRIPT = """
import importlib
import json
import os
import signal
import sys
import traceback
from pathlib import Path

from fusion_core import checkpoint
from fusion_core.cli import main

training = importlib.import_module("fusion_core.training.state")  # where a training checkpoint is saved


def kill_after(save, event):
    # SIGKILL this process right after the event-th file written or renamed during checkpoint save number save.
    saves, events = [0], [0]
    save_model = training.save_model

    def counting_saves(*args, **kwargs):
        saves[0] += 1
        return save_model(*args, **kwargs)

    def killing(function):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            if saves[0] == save:
                events[0] += 1
                if events[0] == event:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapper

    training.save_model = counting_saves
    checkpoint._write_file = killing(checkpoint._write_file)
    os.replace = killing(os.replace)


# One interpreter for every kill point, each run in a forked child: importing torch and a first run take
# seconds, a fork milliseconds. The parent's own run, never killed, is the reference (and the warm-up).
# argv[2] lists the saves to kill in: "2" after each file in turn (until a child runs past the last), "1:1"
# after the first file only.
root, plan, command = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3:]
assert main([*command, "--out", str(root / "whole")]) == 0
statuses = {}
for entry in plan:
    save, _, only = entry.partition(":")
    statuses[save] = []
    while not statuses[save] or (statuses[save][-1] == -signal.SIGKILL and not only):
        event = int(only) if only else len(statuses[save]) + 1
        pid = os.fork()
        if pid == 0:  # the child never returns to this loop
            code = 1
            try:
                kill_after(int(save), event)
                code = main([*command, "--out", str(root / f"{save}-{event}")])
            except BaseException:
                traceback.print_exc()
            os._exit(code)
        statuses[save].append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
(root / "statuses.json").write_text(json.dumps(statuses))
"""


def _train_config(stage: int, steps: int, **overrides) -> TrainConfig:
    options = {"batch_size": 2, "crop": 32, "checkpoint_every": 0, "preview_every": 0, "log_every": 1}
    return TrainConfig(stage=stage, steps=steps, **{**options, **overrides})


def _stop_at(step: int, stop: threading.Event):
    def progress(report: TrainProgress) -> None:
        if report.step == step:
            stop.set()
    return progress


def _killable_command(data: Path) -> list[str]:
    """A seeded stage-1 run from random weights of the tiny preset: 3 steps, checkpoints at step 2 and at the end."""
    return ["train", "--data", str(data), "--stage", "1", "--preset", "tiny", "--steps", "3", "--batch", "2",
            "--crop", "64", "--checkpoint-every", "2", "--preview-every", "0", "--log-every", "1", "--seed", "3"]


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory) -> tuple[Path, Path, dict[int, list[Path]]]:
    """``_killable_command`` SIGKILLed right after the first file written by its first checkpoint, and right
    after each file written or renamed by its second, in turn. Returns the data folder, the uninterrupted
    run's folder and the killed runs' folders by checkpoint, in kill order."""
    root = tmp_path_factory.mktemp("killed")
    data = write_dataset(root / "data")
    (root / "kill.py").write_text(KILL_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(root / "kill.py"), str(root), "1:1,2", *_killable_command(data)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = json.loads((root / "statuses.json").read_text())
    assert statuses["1"] == [-signal.SIGKILL], done.stderr[-3000:]
    assert statuses["2"][-1] == 0 and set(statuses["2"][:-1]) == {-signal.SIGKILL}, done.stderr[-3000:]
    assert len(statuses["2"]) > 2 * 5  # each of the five files was written, then renamed into place
    runs = {1: [root / "1-1"], 2: [root / f"2-{event}" for event in range(1, len(statuses["2"]))]}
    return data, root / "whole", runs


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2])
def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tiny_config, dataset, tmp_path, stage):
    whole = seeded_model(tiny_config)
    train(whole, dataset, _train_config(stage, 10), tmp_path / "whole")
    stop = threading.Event()
    first = train(seeded_model(tiny_config), dataset, _train_config(stage, 10), tmp_path / "parts",
                  progress=_stop_at(5, stop), stop=stop)
    assert first.stopped and first.step == 5
    resumed = seeded_model(tiny_config, seed=1)  # different weights: everything must come from the checkpoint
    second = train(resumed, dataset, _train_config(stage, 10), tmp_path / "parts", resume=True)
    assert not second.stopped and second.step == 10
    assert_same_weights(resumed.state_dict(), whole.state_dict())


def test_stop_request_leaves_a_loadable_checkpoint_at_the_step_reached(tiny_config, dataset, tmp_path):
    out, stop = tmp_path / "run", threading.Event()
    pipeline = seeded_model(tiny_config)
    result = train(pipeline, dataset, _train_config(1, 10, checkpoint_every=2), out,
                   progress=_stop_at(3, stop), stop=stop)
    assert result.stopped and result.step == 3
    assert read_train_state(out)["step"] == 3
    assert_same_weights(load_model(out).state_dict(), pipeline.state_dict())
    assert {p.name for p in out.iterdir()} == CHECKPOINT_FILES


def test_failed_checkpoint_write_keeps_the_previous_checkpoint_whole(tiny_config, dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(seeded_model(tiny_config), dataset, _train_config(1, 2), out)
    before = {name: (out / name).read_bytes() for name in CHECKPOINT_FILES - {LOG_NAME}}
    write = checkpoint._write_file

    def crash_half_way_through_the_weights(path, data):
        if path.name == WEIGHTS_NAME:
            path.write_bytes(data[: len(data) // 2])
            raise OSError("disk full")
        write(path, data)

    monkeypatch.setattr(checkpoint, "_write_file", crash_half_way_through_the_weights)
    with pytest.raises(OSError, match="disk full"):
        train(seeded_model(tiny_config), dataset, _train_config(1, 4), out, resume=True)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert {p.name for p in out.iterdir()} == CHECKPOINT_FILES
    assert read_train_state(out)["step"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("save", [1, 2], ids=["before-the-first-checkpoint", "at-any-file-of-the-second"])
def test_run_killed_during_a_checkpoint_resumes_to_the_uninterrupted_weights(killed_runs, restore_sigint, save):
    """Killed before its first checkpoint is committed, a run resumes from the weights its seed draws; killed
    in its second, from step 2, or from the end once that checkpoint is committed. Each step is logged once."""
    data, whole, runs = killed_runs
    expected = load_model(whole).state_dict()
    for folder in runs[save]:
        assert main([*_killable_command(data), "--out", str(folder), "--resume"]) == 0
        assert_same_weights(load_model(folder).state_dict(), expected, folder.name)
        assert [line["step"] for line in train_log(folder)] == [1, 2, 3], folder.name
        assert not (folder / PENDING_NAME).exists()


def _crash_and_resume(tiny_config, dataset, out: Path, monkeypatch, progress=None) -> list[dict]:
    """Stage 2, 4 steps, a checkpoint and a validation every 2 steps. The first run dies where the caller made it
    raise "killed" (no final save, as after a kill); the second resumes with nothing patched. Returns the log."""
    config = _train_config(2, 4, checkpoint_every=2, validate_every=2)
    validation = ValidationSet([(dataset.a[0], dataset.b[0])])
    with pytest.raises(RuntimeError, match="killed"):
        train(seeded_model(tiny_config), dataset, config, out, progress=progress, validation=validation)
    monkeypatch.undo()
    train(seeded_model(tiny_config), dataset, config, out, resume=True, validation=validation)
    return train_log(out)


def test_resumed_run_drops_the_log_lines_after_its_checkpoint(tiny_config, dataset, tmp_path, monkeypatch):
    def killed_after_logging_step_3(report: TrainProgress) -> None:
        if report.step == 3:
            raise RuntimeError("killed")

    lines = _crash_and_resume(tiny_config, dataset, tmp_path, monkeypatch, killed_after_logging_step_3)
    assert [line["step"] for line in lines if "validation" not in line] == [1, 2, 3, 4]
    assert [line["step"] for line in lines if "validation" in line] == [0, 2, 4]


def test_a_steps_validation_is_logged_before_its_checkpoint(tiny_config, dataset, tmp_path, monkeypatch):
    loop = importlib.import_module("fusion_core.training.loop")
    save = loop.save_training_checkpoint

    def killed_right_after_saving(*args):
        save(*args)
        raise RuntimeError("killed")

    monkeypatch.setattr(loop, "save_training_checkpoint", killed_right_after_saving)
    lines = _crash_and_resume(tiny_config, dataset, tmp_path, monkeypatch)
    assert [line["step"] for line in lines if "validation" not in line] == [1, 2, 3, 4]
    assert [line["step"] for line in lines if "validation" in line] == [0, 2, 4]


@pytest.mark.parametrize("stage", [1, 2])
def test_train_log_lines_are_json_with_the_stage_losses(tiny_config, dataset, tmp_path, stage):
    train(seeded_model(tiny_config), dataset, _train_config(stage, 4, log_every=2), tmp_path)
    lines = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert [(line["stage"], line["step"]) for line in lines] == [(stage, 2), (stage, 4)]
    for line in lines:
        assert STAGE_LOSSES[stage] <= line.keys()
        assert all(math.isfinite(line[name]) for name in STAGE_LOSSES[stage])


@pytest.mark.slow
def test_gate_lr_trains_the_head_and_only_the_gate_branches_of_the_unet(tiny_config, dataset, tmp_path):
    pipeline = seeded_model(tiny_config)
    before = {name: t.clone() for name, t in pipeline.unet.state_dict().items()}
    train(pipeline, dataset, _train_config(2, 2, gate_lr=1e-3), tmp_path)
    changed = {name for name, t in pipeline.unet.state_dict().items() if not torch.equal(t, before[name])}
    gate_names = {name for name, p in pipeline.unet.named_parameters()
                  if any(p is q for q in pipeline.unet.gate_parameters())}
    assert gate_names and all(".spatial." in name or ".channel." in name for name in gate_names)
    assert changed == gate_names
    frozen = seeded_model(tiny_config)
    train(frozen, dataset, _train_config(2, 2), tmp_path / "frozen")
    assert_same_weights(frozen.unet.state_dict(), before)


@pytest.mark.slow
def test_stage_two_logs_its_validation_rank_at_step_zero_and_every_n_steps(tiny_config, dataset, tmp_path):
    pairs = list(zip(dataset.a, dataset.b, strict=True))
    result = train(seeded_model(tiny_config), dataset, _train_config(2, 4, validate_every=2), tmp_path,
                   validation=ValidationSet(pairs))
    lines = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    checks = [line for line in lines if "validation" in line]
    assert [line["step"] for line in checks] == [0, 2, 4]
    assert checks[0]["train_seconds"] < 0.01  # nothing trained yet; validating is not training time
    assert [line["train_seconds"] for line in checks] == sorted(line["train_seconds"] for line in checks)
    assert checks[-1]["train_seconds"] <= result.wall_seconds
    for line in checks:
        assert 1 <= line["validation"]["rank"] <= 5 and set(line["validation"]["means"]) == {"dgd", *BASELINES}


def test_stage_one_logs_no_validation(tiny_config, dataset, tmp_path):
    pairs = list(zip(dataset.a, dataset.b, strict=True))
    train(seeded_model(tiny_config), dataset, _train_config(1, 2, validate_every=1), tmp_path,
          validation=ValidationSet(pairs))
    assert all("validation" not in json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines())


@pytest.mark.slow
def test_two_process_gloo_run_ends_with_identical_weights_on_both_ranks(tiny_config, data_dir, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(data_dir), str(tmp_path),
               json.dumps(tiny_config.to_dict())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [(r["world_size"], r["backend"], r["step"]) for r in reports] == [(2, "gloo", 3)] * 2
    assert reports[0]["losses"] != reports[1]["losses"]  # each rank saw its own crops...
    rank0, rank1 = (load_file(tmp_path / f"rank{rank}.safetensors") for rank in (0, 1))
    assert_same_weights(rank0, rank1)  # ...yet the averaged gradients kept the weights in step
    assert_same_weights(load_model(tmp_path / "checkpoint").state_dict(), rank0)
    start = seeded_model(tiny_config, seed=0)  # rank 0's starting weights
    assert_same_weights({n: t for n, t in rank0.items() if n.startswith("head.")},
                         {f"head.{n}": t for n, t in start.head.state_dict().items()})  # frozen in stage 1
    assert any(not torch.equal(rank0[f"unet.{n}"], t) for n, t in start.unet.state_dict().items())


def test_dropout_draws_from_the_step_generator_not_the_global_one(tiny_config, dataset, tmp_path):
    """With dropout on, two runs with one seed end bit-identical though the global generator moved in between."""
    config = dataclasses.replace(tiny_config, unet=dataclasses.replace(tiny_config.unet, dropout=0.3))
    runs = []
    for name, seed in (("first", 1), ("second", 2)):
        torch.manual_seed(seed)  # a different global state before each run
        torch.rand(17)
        model = build_model(config, torch.Generator().manual_seed(0))
        train(model, dataset, _train_config(1, 3), tmp_path / name)
        runs.append(model.state_dict())
    assert_same_weights(*runs)
    plain = build_model(tiny_config, torch.Generator().manual_seed(0))
    train(plain, dataset, _train_config(1, 3), tmp_path / "plain")
    assert any(not torch.equal(plain.state_dict()[n], t) for n, t in runs[0].items())  # the dropout did act


def test_a_step_beyond_the_memory_budget_is_refused_before_anything_is_built_or_read(tmp_path, monkeypatch):
    """prepare_run checks the step's memory on the configs alone: no network, no data (the folder is missing)."""
    monkeypatch.setattr(DGDFusionModel, "__init__", lambda *args: pytest.fail("a network was built"))
    request = TrainRequest(data=(str(tmp_path / "nowhere"),), out=str(tmp_path / "out"), preset="gpu", stage="2",
                           train=TrainConfig(batch_size=256, crop=256))
    with pytest.raises(ValueError, match=r"^batch 256 of 256x256 crops: a stage-2 step of 'gpu' needs about 829 GB, "
                                         r"more than the 64 GB this project allows; use at most batch 19$"):
        prepare_run(request)
    assert not (tmp_path / "out").exists()


def test_run_stages_refuses_a_step_beyond_the_memory_budget_before_writing(tiny_config, dataset, tmp_path):
    """The app and the ablation call run_stages directly: the same check, before the first stage starts."""
    small = TrainConfig(stage=1, steps=1, batch_size=2, crop=32, checkpoint_every=0, preview_every=0)
    huge = dataclasses.replace(small, stage=2, batch_size=256, crop=4096)
    with pytest.raises(ValueError, match=r"^batch 256 of 4096x4096 crops: a stage-2 step of 'tiny' needs about"):
        run_stages(build_model(tiny_config), dataset, [small, huge], tmp_path / "out",
                   provenance=Provenance("tiny", Origin(), Origin()))
    assert not (tmp_path / "out").exists()
