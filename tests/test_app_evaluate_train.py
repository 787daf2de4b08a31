"""The browser app's Evaluate and Train handlers called directly, the size and ablation menus, the texts a
user reads and the measured lines beside the network's maps.

The network runs with random weights of the tiny preset (an empty checkpoint folder): the plumbing and the
messages are checked, not fusion quality. Never reads outside the repository.
"""

from __future__ import annotations

import dataclasses
import re
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from app_support import EXAMPLES, MEDICAL, evaluate, follow, fuse, pair_zip, train, zip_of, zip_of_entries
from fusion_app.inputs import EXAMPLES as EXAMPLES_DIR
from fusion_app.models import RANDOM, TASKS, ModelStore
from fusion_app.reports import (
    attention_dependence,
    expert_dependence,
    gate_dependence,
    map_correlation,
    measure_dependence,
    model_cards,
    training_progress,
    training_status,
    weight_note,
)
from fusion_app.texts import (
    ABOUT,
    METRIC_LEGEND,
    NO_ABLATION,
    SIZES,
    TRAIN_INTRO,
    ablation_notes,
)
from fusion_app.texts import CONVENTIONS as CONVENTION_NOTES
from fusion_app.training import TrainingJob
from fusion_core import (
    METRICS,
    PRESETS,
    Intermediates,
    TrainProgress,
    find_pairs,
)


@pytest.mark.slow
def test_evaluates_the_bundled_examples(fusion_app, tabs):
    view = tabs.evaluate
    out = evaluate(fusion_app, tabs, None)
    assert set(out) == set(view.outputs())
    assert "2 pairs" in out[view.summary] and "random weights" in out[view.summary]
    assert "| DGD-Fusion |" in out[view.means] and "Scored with the standard conventions" in out[view.means]
    assert "Means over 2 pairs" in out[view.means] and "mean rank" in out[view.means]
    for shown in (out[view.summary], out[view.means]):  # the server's folders are no one's business
        assert str(fusion_app.work_dir) not in shown and "sessions" not in shown and "docs/" not in shown
    assert len(out[view.rows]) == 2 * 5 and Path(out[view.chart]).is_file()
    assert all(Path(f).suffix == ".csv" for f in out[view.files])

@pytest.mark.slow
def test_evaluates_an_uploaded_zip_and_refuses_zip_slip(fusion_app, tabs, tmp_path):
    archive = pair_zip(tmp_path / "pairs.zip", top="my pairs/")
    out = evaluate(fusion_app, tabs, archive, choice=RANDOM)
    assert "2 pairs" in out[tabs.evaluate.summary] and "uploaded zip" in out[tabs.evaluate.summary]
    with pytest.raises(gr.Error, match="The zip was refused"):
        evaluate(fusion_app, tabs, zip_of(tmp_path / "evil.zip", {"../x.png": b"x"}))

@pytest.mark.slow
def test_evaluates_the_fused_images_a_zip_brings_as_methods(fusion_app, tabs, tmp_path):
    pairs = find_pairs(EXAMPLES_DIR / TASKS[MEDICAL].folder)
    theirs = {f"upload/fused/theirs/{pair.name}.png": pair.b.read_bytes() for pair in pairs}  # B as "fused"
    archive = zip_of(tmp_path / "pairs.zip", {**zip_of_entries(pairs, "upload/"), **theirs})
    view = tabs.evaluate
    out = evaluate(fusion_app, tabs, archive, choice=RANDOM)
    assert "**theirs**" in out[view.summary] and "| theirs |" in out[view.means]
    assert [row[0] for row in out[view.rows] if row[1] == "theirs"] == [pair.name for pair in pairs]
    first = dict([next(iter(theirs.items()))])  # the fused image of the first pair only
    missing = zip_of(tmp_path / "missing.zip", {**zip_of_entries(pairs, "upload/"), **first})
    with pytest.raises(gr.Error, match="method 'theirs' has no image"):
        evaluate(fusion_app, tabs, missing, choice=RANDOM)

@pytest.mark.slow
def test_training_makes_a_selectable_checkpoint(fusion_app, tabs):
    view = tabs.train
    started = train(fusion_app, tabs, stage="both", steps=1, batch=1, lr=1e-3)
    assert "Training" in started[view.status] and started[view.checkpoint_file] is None
    ended = follow(fusion_app, tabs, started)
    status, progress = ended[view.status], ended[view.progress]
    assert "finished (both stages, 1 step each)" in status and 'value="2" max="2"' in progress
    assert "stage 2 of 2 (the fusion head): step 1 of 1" in progress and "left" not in progress
    name = status.split("**")[1]
    for menu in (*view.checkpoint_menus, view.pairs.checkpoint):
        assert name in [value for _, value in ended[menu].choices]
    assert f"{name}/model.safetensors" in zipfile.ZipFile(ended[view.checkpoint_file]).namelist()
    notes = fuse(fusion_app, tabs, EXAMPLES[MEDICAL].a, EXAMPLES[MEDICAL].b, choice=name)[tabs.fuse.notes]
    assert f"by **{name}**" in notes and "random weights" not in notes

@pytest.mark.slow
def test_progress_sends_the_loss_curve_only_when_it_has_new_points(fusion_app, tabs):
    view = tabs.train
    ended = follow(fusion_app, tabs, train(fusion_app, tabs, stage="1", steps=2, batch=1))
    followed = ended[view.followed]
    assert followed.shown == len(fusion_app.runs[followed.name].history) >= 2  # every step drawn by the end
    again = fusion_app.training_progress(view, followed)
    assert view.loss_plot not in again and view.followed not in again and "finished" in again[view.status]
    redrawn = fusion_app.training_progress(view, dataclasses.replace(followed, shown=-1))
    assert redrawn[view.loss_plot] is not None and redrawn[view.followed].shown == 2

@pytest.mark.slow
def test_one_training_at_a_time_and_stop(fusion_app, tabs):
    started = train(fusion_app, tabs, stage="1", steps=500, batch=1)
    with pytest.raises(gr.Error, match="already in progress"):
        train(fusion_app, tabs, stage="1", steps=1, batch=1)
    with pytest.raises(gr.Error, match="another session"):
        fusion_app.stop_training(None)
    assert "Stopping" in fusion_app.stop_training(started[tabs.train.followed])
    ended = follow(fusion_app, tabs, started)
    assert "was stopped at stage 1 of 1 (the diffusion UNet): step" in ended[tabs.train.status]
    assert "of 500" in ended[tabs.train.status] and "left" not in ended[tabs.train.progress]
    assert "No training run" in fusion_app.stop_training(started[tabs.train.followed])

def test_a_session_that_started_nothing_follows_nothing(fusion_app, tabs):
    ticked = fusion_app.training_progress(tabs.train, None)
    assert not ticked[tabs.train.timer].active and "No training run" in ticked[tabs.train.status]

def test_the_size_menu_holds_the_sizes_and_the_ablations_are_apart(tabs):
    assert [value for _, value in tabs.train.options["preset"].choices] == list(SIZES)
    ablations = [value for _, value in tabs.train.ablation.choices]
    assert ablations == [NO_ABLATION, *(name for name in PRESETS if name not in SIZES)]
    notes = ablation_notes()
    assert notes["DFE+GCFS"] == "**DFE+GCFS**: DFE (expert convolutions) and GFS (gates); without GLSA; 4 experts."
    assert notes["GCFS+GLSA"].endswith("without DFE; no experts.") and "3 experts" in notes["DFE_3"]

def running_job(steps: int = 200, step: int = 20) -> TrainingJob:
    job = TrainingJob("run", Path("run"), steps, (1, 2))
    job.record(TrainProgress(stage=1, step=step, total_steps=steps, losses={"diffusion": 0.5},
                             crops_per_second=3.0, eta_seconds=22.0))
    return job

def test_training_progress_counts_the_steps_per_stage_and_drops_the_estimate_on_stop():
    job = running_job()
    shown = training_progress(job, stopping=False)
    assert "stage 1 of 2 (the diffusion UNet): step 20 of 200" in shown and "about 22 s left in this stage" in shown
    assert 'value="20" max="400"' in shown
    stopping = training_progress(job, stopping=True)
    assert "left" not in stopping and "stopping after this step" in stopping
    job.stopped = job.done = True
    assert "left" not in training_progress(job, stopping=True)
    assert "was stopped at stage 1 of 2 (the diffusion UNet): step 20 of 200" in training_status(job)
    job.stage_index = 1
    job.record(TrainProgress(stage=2, step=5, total_steps=200, losses={"fusion": 0.1}, crops_per_second=3.0,
                             eta_seconds=9.0))
    assert "stage 2 of 2 (the fusion head): step 5 of 200" in training_progress(job, stopping=False)

def test_the_texts_a_user_reads_point_nowhere_they_cannot_go(fusion_app):
    hexes = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")
    for text in (ABOUT, TRAIN_INTRO, METRIC_LEGEND, *CONVENTION_NOTES.values()):
        assert not any(word in text for word in ("docs/", "§", "runs/", "TrainConfig", "--")), text[:60]
        assert hexes.findall(text) == []
    assert all(f"**{label}**" in METRIC_LEGEND for label in METRICS)
    assert "MSRS" in ABOUT and "Harvard Whole Brain Atlas" in ABOUT
    assert model_cards(fusion_app.models).startswith("No trained checkpoint")  # the fixture's store is empty
    cards = model_cards(ModelStore())
    assert "### dgd-general" in cards and "### dgd-medical" in cards and "Metrics on MSRS test" in cards

def hand_made_maps(rng, gates: dict, shift: float = 0.0) -> Intermediates:
    """Maps of two DFE layers, the given gates and two flat-ish attention maps; ``shift`` moves the experts."""
    experts = {"down1": np.array([[0.25 + shift, 0.75 - shift]]), "up1": np.array([[0.5, 0.5]])}
    attention = {"glsa1": 0.5 + rng.uniform(-0.02, 0.02, (8, 8)), "glsa2": 0.5 + rng.uniform(-0.02, 0.02, (8, 8))}
    return Intermediates(experts=experts, gates=gates, attention=attention, weight_map=np.full((16, 16), 0.25))

def test_maps_drawn_for_noise_alike_are_said_not_to_depend_on_the_image(rng):
    gates = {"down1": rng.uniform(0, 1, (2, 12, 12)), "mid": rng.uniform(0, 1, (2, 8, 8))}
    maps = hand_made_maps(rng, gates)
    dependence = measure_dependence(maps, maps)
    assert dependence.gates == pytest.approx({"down1": 1.0, "mid": 1.0}) and dependence.experts == 0.0
    assert gate_dependence(dependence).startswith("These gate maps barely depend on this image (down1, mid: "
                                                  "correlation 1.00 with the maps drawn for random noise")
    assert "fixed pattern, not this image's content" in gate_dependence(dependence)
    assert expert_dependence(dependence).startswith("The expert weights barely depend on this image")
    assert attention_dependence(dependence).startswith("The attention maps barely vary across this image")
    assert "25% comes from A" in weight_note(maps.weight_map, "infrared", "visible")

def test_maps_unlike_those_drawn_for_noise_are_said_to_depend_on_the_image(rng):
    image = {"down1": rng.uniform(0, 1, (2, 12, 12)), "mid": rng.uniform(0, 1, (2, 8, 8))}
    noise = {"down1": rng.uniform(0, 1, (2, 12, 12)), "mid": rng.uniform(0, 1, (2, 8, 8))}
    dependence = measure_dependence(hand_made_maps(rng, image, shift=0.3), hand_made_maps(rng, noise))
    assert max(dependence.gates.values()) < 0.9 and dependence.experts == pytest.approx(0.3)
    assert gate_dependence(dependence).startswith("These gate maps depend on this image")
    assert expert_dependence(dependence).startswith("The expert weights depend on this image")
    mixed = measure_dependence(hand_made_maps(rng, image), hand_made_maps(rng, {**noise, "mid": image["mid"]}))
    assert gate_dependence(mixed).startswith("Only 1 of 2 gate layers follow this image (down1: correlation")
    assert "The other 1 barely depend on it (mid: correlation 1.00)" in gate_dependence(mixed)

def test_the_gate_border_is_left_out_of_the_correlation(rng):
    """The same border (the zero padding's) around different interiors: the maps depend on the image."""
    image, noise = np.zeros((1, 12, 12)), np.zeros((1, 12, 12))
    image[:, 2:-2, 2:-2], noise[:, 2:-2, 2:-2] = rng.uniform(0.4, 0.6, (2, 1, 8, 8))
    for maps in (image, noise):
        maps[:, :2], maps[:, -2:], maps[:, :, :2], maps[:, :, -2:] = 1.0, 0.9, 0.8, 0.7
    whole = map_correlation(image[0], noise[0])
    dependence = measure_dependence(hand_made_maps(rng, {"down1": image}), hand_made_maps(rng, {"down1": noise}))
    assert whole > 0.9 and abs(dependence.gates["down1"]) < 0.5
    assert gate_dependence(dependence).startswith("These gate maps depend on this image")

def test_attention_that_spans_the_scale_is_said_to_vary(rng):
    maps = Intermediates(attention={"glsa1": rng.uniform(0.1, 0.9, (8, 8))})
    line = attention_dependence(measure_dependence(maps, maps))
    assert line.startswith("The attention maps vary across this image") and "percentile" in line

def test_training_options_are_checked(fusion_app, tabs):
    with pytest.raises(gr.Error, match="multiple of 64"):
        train(fusion_app, tabs, stage="1", steps=1, crop=50, batch=1)
