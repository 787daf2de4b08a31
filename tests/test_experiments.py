"""The paper's experiment protocols on tiny configs and tiny synthetic pairs in tmp_path: the Table 4
ablation (six variants, same steps and seed, resumable) and the Tables 1-3 comparison (percentages)."""

from __future__ import annotations

import csv
import importlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import make_pair, tiny
from fusion_core import experiments
from fusion_core.baselines import BASELINES
from fusion_core.checkpoint import WEIGHTS_NAME
from fusion_core.cli import main
from fusion_core.config import TrainConfig
from fusion_core.experiments import ABLATION_VARIANTS, percent_above, run_ablation, run_comparison, split_steps
from fusion_core.imaging import write_png
from fusion_core.metrics import PAPER_METRICS
from fusion_core.training import LOG_NAME, read_train_state

ABLATION = importlib.import_module("fusion_core.experiments.ablation")  # its warm-up calls train
STAGES = importlib.import_module("fusion_core.training.run")  # run_stages, the loop over stages, calls train

BASE = TrainConfig(batch_size=2, crop=32, checkpoint_every=0, preview_every=0, log_every=1)


def _write_pairs(root: Path, count: int = 3, size: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for folder in ("ir", "vi"):
        (root / folder).mkdir(parents=True)
    for index in range(count):
        a, b = make_pair(rng, size, size)
        write_png(root / "ir" / f"{index:03d}.png", a)
        write_png(root / "vi" / f"{index:03d}.png", b)
    return root


def _ablation(data: Path, out: Path, **options):
    options = {"steps": 4, "base_train_config": BASE, "config_transform": tiny, "device": "cpu", **options}
    return run_ablation([data / "train"], data / "test", out, **options)


def _refuse_training(*args, **kwargs):
    raise AssertionError("train() was called for a finished variant")


def _weights_mtimes(out: Path) -> dict[str, int]:
    return {name: (out / name / WEIGHTS_NAME).stat().st_mtime_ns for name in ABLATION_VARIANTS}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    _write_pairs(root / "train", seed=0)
    _write_pairs(root / "test", seed=1)
    return root


@pytest.fixture(scope="module")
def ablation(data, tmp_path_factory):
    return _ablation(data, tmp_path_factory.mktemp("ablation"))


# ------------------------------------------------------------------------------------------------- ablation


def test_split_steps_gives_three_quarters_to_stage_1_and_at_least_one_step_each():
    assert split_steps(4) == (3, 1)
    assert split_steps(2) == (1, 1)
    assert split_steps(1000) == (750, 250)
    with pytest.raises(ValueError, match="at least 2"):
        split_steps(1)


@pytest.mark.slow
def test_ablation_trains_every_variant_the_same_steps_and_seed(ablation):
    assert list(ablation.runs) == list(ABLATION_VARIANTS)
    assert (ablation.plan.stage1_steps, ablation.plan.stage2_steps) == (3, 1)
    for run in ablation.runs.values():
        state = read_train_state(run.checkpoint)
        assert (state["stage"], state["step"], state["train_config"]["seed"]) == (2, 1, BASE.seed)
        assert not run.reused and all(seconds > 0 for seconds in run.stage_seconds)
    parameters = {run.parameters for run in ablation.runs.values()}
    assert len(parameters) > 1  # the switches really change the networks


@pytest.mark.slow
def test_ablation_writes_the_table_curves_and_report(ablation):
    files = ablation.files
    with open(files["ablation_csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["variant"] for row in rows] == list(ABLATION_VARIANTS)
    assert all(math.isfinite(float(row[label])) for row in rows for label in (*PAPER_METRICS, "mean_rank"))
    table = files["ablation_md"].read_text()
    assert table.startswith("Metric convention: standard")
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 2 + 6
    assert "**" in table
    assert files["curves_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = files["report_md"].read_text()
    assert table in report and "](curves.png)" in report and "4 = 3 (stage 1, UNet) + 1 (stage 2" in report
    assert all(f"| {name} |" in report.split("## Training wall time")[1] for name in ABLATION_VARIANTS)


@pytest.mark.slow
def test_second_ablation_run_reuses_finished_variants(ablation, data, monkeypatch):
    before = _weights_mtimes(ablation.out_dir)
    monkeypatch.setattr(ABLATION, "train", _refuse_training)
    monkeypatch.setattr(STAGES, "train", _refuse_training)
    again = _ablation(data, ablation.out_dir)
    assert all(run.reused for run in again.runs.values())
    assert _weights_mtimes(ablation.out_dir) == before
    assert again.means == ablation.means
    assert [run.stage_seconds for run in again.runs.values()] == [run.stage_seconds for run in ablation.runs.values()]


@pytest.mark.slow
def test_ablation_refuses_a_folder_trained_with_other_settings(ablation, data):
    with pytest.raises(ValueError, match="other settings"):
        _ablation(data, ablation.out_dir, steps=6)


@pytest.mark.slow
def test_interrupted_variant_resumes_at_stage_2(data, tmp_path, monkeypatch):
    class Interrupt(Exception):
        pass

    def stop_in_stage_2(variant, report):
        if report.stage == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        _ablation(data, tmp_path, variants=("DFE_3",), progress=stop_in_stage_2)
    assert read_train_state(tmp_path / "DFE_3")["stage"] == 1
    stages = []
    real_train = STAGES.train
    monkeypatch.setattr(STAGES, "train", lambda *args, **kwargs: stages.append(args[2].stage) or
                        real_train(*args, **kwargs))
    result = _ablation(data, tmp_path, variants=("DFE_3",))
    assert stages == [2]
    assert read_train_state(tmp_path / "DFE_3")["step"] == result.plan.stage2_steps
    log = (tmp_path / "DFE_3" / LOG_NAME).read_text().splitlines()
    # stage 1 ran once; stage 2's step 1, logged before the interruption, was dropped on resuming and logged again
    assert [(line["stage"], line["step"]) for line in map(json.loads, log)] == [(1, 1), (1, 2), (1, 3), (2, 1)]


@pytest.mark.slow
def test_budget_is_converted_to_steps_once_and_kept(data, tmp_path, monkeypatch):
    first = _ablation(data, tmp_path, steps=None, budget_minutes=0.01, variants=("DFE_3",))
    plan = first.plan
    assert plan.budget_minutes == 0.01 and plan.slowest_variant == "DFE_3" and plan.seconds_per_step > 0
    assert plan.steps == max(2, math.floor(0.01 * 60 / plan.seconds_per_step))
    monkeypatch.setattr(ABLATION, "train", _refuse_training)  # no new warm-up
    monkeypatch.setattr(STAGES, "train", _refuse_training)  # no retraining
    assert _ablation(data, tmp_path, steps=None, budget_minutes=0.01, variants=("DFE_3",)).plan == plan


# ----------------------------------------------------------------------------------------------- comparison


def test_percent_above_on_known_values():
    assert percent_above(6.0, 5.0) == pytest.approx(20.0)
    assert percent_above(4.0, 5.0) == pytest.approx(-20.0)
    assert percent_above(1.0, -2.0) == pytest.approx(150.0)  # relative to |other|
    assert percent_above(0.0, 0.0) == 0.0
    assert percent_above(-1.0, 0.0) == -math.inf


def test_comparison_tables_the_reference_lead_in_percent(data, tmp_path):
    methods = {name: BASELINES[name] for name in ("max", "average", "laplacian")}
    result = run_comparison(data / "test", methods, tmp_path, reference="max")
    with open(tmp_path / "means.csv") as handle:
        means = {row["method"]: {label: float(row[label]) for label in PAPER_METRICS} for row in csv.DictReader(handle)}
    with open(result.files["comparison_csv"]) as handle:
        rows = list(csv.DictReader(handle))
    percent_rows = {row["method"]: row for row in rows if row["quantity"] == "percent max above"}
    assert set(percent_rows) == {"average", "laplacian"}
    for method, row in percent_rows.items():
        for label in PAPER_METRICS:
            expected = (means["max"][label] - means[method][label]) / abs(means[method][label]) * 100
            assert float(row[label]) == pytest.approx(expected, rel=1e-9)
    text = result.files["comparison_md"].read_text()
    expected_en = (means["max"]["EN"] - means["average"]["EN"]) / abs(means["average"]["EN"]) * 100
    assert f"| average | {expected_en:+.2f}% |" in text
    with pytest.raises(ValueError, match="reference"):
        run_comparison(data / "test", methods, tmp_path, reference="dgd")


# ---------------------------------------------------------------------------------------------- command line


def test_compare_command_writes_the_comparison(data, tmp_path, capsys):
    code = main(["compare", "--data", str(data / "test"), "--methods", "average,max", "--reference", "max",
                 "--out", str(tmp_path)])
    assert code == 0
    assert "| max vs |" in capsys.readouterr().out
    assert (tmp_path / "comparison.md").exists() and (tmp_path / "comparison.csv").exists()


def test_ablation_command_passes_its_settings(tmp_path, monkeypatch, capsys):
    calls = []
    (tmp_path / "ablation.md").write_text("| table |\n")

    def fake_run_ablation(train_roots, test_root, out_dir, **options):
        calls.append((train_roots, test_root, out_dir, options))
        files = {"ablation_md": tmp_path / "ablation.md", "report_md": tmp_path / "report.md"}
        return SimpleNamespace(files=files, runs={}, plan=SimpleNamespace(steps=0))

    monkeypatch.setattr(experiments, "run_ablation", fake_run_ablation)
    code = main(["ablation", "--data", "a", "b", "--test", "t", "--budget-minutes", "90", "--out", "o",
                 "--batch", "4", "--crop", "64", "--seed", "7", "--variants", "ALL,DFE_3"])
    assert code == 0 and "| table |" in capsys.readouterr().out
    (train_roots, test_root, out_dir, options), = calls
    assert (train_roots, test_root, out_dir) == (["a", "b"], "t", "o")
    assert (options["budget_minutes"], options["steps"], options["variants"]) == (90.0, None, ["ALL", "DFE_3"])
    base = options["base_train_config"]
    assert (base.batch_size, base.crop, base.seed) == (4, 64, 7)
    with pytest.raises(SystemExit):
        main(["ablation", "--data", "a", "--test", "t", "--budget-minutes", "1", "--steps", "4", "--out", "o"])
