"""The app's views of the network's intermediates: per-map colour scales, gate activity, the weight map."""

from __future__ import annotations

import numpy as np

from fusion_app.figures import attention_figure, expert_figure, gate_figure
from fusion_core import Intermediates


def _maps(rng) -> Intermediates:
    return Intermediates(
        gates={"down1": rng.uniform(0.40, 0.60, (2, 8, 10)), "mid": rng.uniform(0.49, 0.51, (2, 4, 5))},
        gate_activity={"down1": np.array([[0.12, 0.05, 0.07, 0.02], [0.10, 0.04, 0.06, 0.01]]),
                       "mid": np.array([[0.01, 0.0, 0.0, 0.01], [0.01, 0.0, 0.0, 0.01]])},
        attention={"glsa1": rng.uniform(0.3, 0.7, (8, 10))},
        weight_map=rng.uniform(0, 1, (16, 20)),
    )


def test_each_gate_map_has_its_own_scale_with_its_true_range(rng):
    maps = _maps(rng)
    figure = gate_figure(maps, (5, 50))
    images = [image for ax in figure.axes for image in ax.get_images()]
    assert len(images) == 4  # two layers x two timesteps
    ranges = sorted((round(float(i.norm.vmin), 6), round(float(i.norm.vmax), 6)) for i in images)
    expected = sorted((round(float(m.min()), 6), round(float(m.max()), 6))
                      for layer in ("down1", "mid") for m in maps.gates[layer])
    assert ranges == expected
    labels = {t.get_text() for ax in figure.axes for t in ax.get_yticklabels()}
    assert f"{maps.gates['mid'][0].min():.2f}" in labels and f"{maps.gates['down1'][1].max():.2f}" in labels


def test_gate_figure_draws_the_activity_of_each_layer(rng):
    figure = gate_figure(_maps(rng), (5, 50))
    bars = [ax for ax in figure.axes if ax.patches]
    assert len(bars) == 1
    heights = [round(p.get_height(), 6) for p in bars[0].patches]
    assert 0.11 in heights and 0.01 in heights  # the spread of down1 and mid, averaged over timesteps


def test_head_figure_shows_the_weight_map_on_an_absolute_scale(rng):
    figure = attention_figure(_maps(rng))
    titles = [ax.get_title() for ax in figure.axes]
    assert any(t.startswith("weight map") for t in titles) and any(t.startswith("glsa1") for t in titles)
    weight = next(ax for ax in figure.axes if ax.get_title().startswith("weight map")).get_images()[0]
    assert (weight.norm.vmin, weight.norm.vmax) == (0, 1)


def test_head_figure_without_a_weight_map_shows_the_attention_alone(rng):
    figure = attention_figure(Intermediates(attention={"glsa1": rng.uniform(0, 1, (4, 5)),
                                                       "glsa2": rng.uniform(0, 1, (4, 5))}))
    titles = [ax.get_title() for ax in figure.axes if ax.get_images()]
    assert titles == ["glsa1 (fusion stage 1)", "glsa2 (fusion stage 2)"]


def test_no_maps_no_figures():
    empty = Intermediates()
    assert gate_figure(empty, (5,)) is None and attention_figure(empty) is None
    assert expert_figure(empty, (5,)) is None
