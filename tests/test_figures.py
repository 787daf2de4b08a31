"""The app's views of the network's intermediates and of training: one fixed scale and one colour bar per map
family, the weight map on its own, the loss legend beside the curves, never over them."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from fusion_app.figures import attention_figure, expert_figure, gate_figure, loss_figure, weight_figure
from fusion_core import Intermediates


def _maps(rng) -> Intermediates:
    return Intermediates(
        experts={"down1": np.array([[0.7, 0.3], [0.6, 0.4]]), "up1": np.array([[0.5, 0.5], [0.5, 0.5]])},
        gates={"down1": rng.uniform(0.40, 0.60, (2, 8, 10)), "mid": rng.uniform(0.49, 0.51, (2, 4, 5))},
        attention={"glsa1": rng.uniform(0.47, 0.53, (8, 10)), "glsa2": rng.uniform(0.2, 0.9, (4, 5))},
        weight_map=rng.uniform(0, 1, (16, 20)),
    )


def _images(figure):
    return [image for ax in figure.axes for image in ax.get_images()]


def _colour_bars(figure) -> int:
    """Axes that hold neither an image nor bars: the colour bars'."""
    return sum(1 for ax in figure.axes if not ax.get_images() and not ax.patches and ax.get_visible())


def test_every_gate_map_is_on_the_one_scale_0_to_1_with_one_colour_bar(rng):
    figure = gate_figure(_maps(rng), (5, 50))
    images = _images(figure)
    assert len(images) == 4  # two layers x two timesteps
    assert {(float(i.norm.vmin), float(i.norm.vmax)) for i in images} == {(0.0, 1.0)}
    assert _colour_bars(figure) == 1


def test_gate_columns_carry_their_correlation_with_the_noise_maps(rng):
    figure = gate_figure(_maps(rng), (5, 50), {"down1": 0.21, "mid": 0.998})
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == ["down1\nr = 0.21", "mid\nr = 1.00"]
    assert "random noise" in figure.get_suptitle()


def test_attention_maps_share_the_scale_0_to_1_and_one_colour_bar(rng):
    figure = attention_figure(_maps(rng))
    images = _images(figure)
    assert len(images) == 2 and {(i.norm.vmin, i.norm.vmax) for i in images} == {(0, 1)}
    assert _colour_bars(figure) == 1
    assert [ax.get_title() for ax in figure.axes if ax.get_images()] == ["glsa1 (fusion stage 1)",
                                                                         "glsa2 (fusion stage 2)"]


def test_the_weight_map_is_the_share_of_a_on_an_absolute_scale(rng):
    figure = weight_figure(_maps(rng).weight_map)
    (image,) = _images(figure)
    assert (image.norm.vmin, image.norm.vmax) == (0, 1)
    assert figure.axes[0].get_title() == "Share of A in the result (w_A)"
    assert weight_figure(None) is None


def test_expert_weights_share_the_scale_0_to_1_and_mark_the_weights_for_noise(rng):
    noise = {"down1": np.array([[0.5, 0.5], [0.5, 0.5]]), "up1": np.array([[0.5, 0.5], [0.5, 0.5]])}
    figure = expert_figure(_maps(rng), (5, 50), noise)
    bars = [ax for ax in figure.axes if ax.patches]
    assert len(bars) == 2 and {ax.get_ylim() for ax in bars} == {(0.0, 1.0)}
    crosses = [c for ax in bars for c in ax.collections]
    assert len(crosses) == 4  # one per layer and timestep
    np.testing.assert_allclose(crosses[0].get_offsets()[:, 1], noise["down1"][0])
    assert figure.legends and "for noise" in [t.get_text() for t in figure.legends[0].get_texts()]
    assert not any(ax.collections for ax in expert_figure(_maps(rng), (5, 50)).axes)  # no noise, no crosses


def test_no_maps_no_figures():
    empty = Intermediates()
    assert gate_figure(empty, (5,)) is None and attention_figure(empty) is None
    assert expert_figure(empty, (5,)) is None


def test_the_loss_legend_lies_outside_the_axes():
    history = [{"stage": 1, "step": s, "diffusion": 1.0 / s} for s in range(1, 5)]
    history += [{"stage": 2, "step": s, "fusion": 0.5 / s} for s in range(5, 9)]
    figure = loss_figure(history)
    FigureCanvasAgg(figure).draw()
    (ax,) = figure.axes
    assert ax.get_legend() is None and len(figure.legends) == 1
    legend = figure.legends[0].get_window_extent()
    assert not legend.overlaps(ax.get_window_extent())
    assert all(float(tick).is_integer() for tick in ax.get_xticks())
