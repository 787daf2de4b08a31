"""The per-request time limit, on a clock the test moves."""

from __future__ import annotations

import numpy as np
import pytest

from fusion_app import limits
from fusion_app.deadline import Deadline, TimeLimitExceeded, evaluate_seconds, fuse_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_deadline_passes_until_its_time_is_up_then_says_where_it_stopped():
    clock = Clock()
    deadline = Deadline.start(30, "try a smaller image", clock)
    deadline.check("before the network")
    clock.now += 30  # exactly the limit is still within it
    deadline.check("before the network")
    assert deadline.elapsed() == 30
    clock.now += 0.5
    with pytest.raises(TimeLimitExceeded) as error:
        deadline.check("after 3 of 10 fused images")
    assert str(error.value) == ("This request took longer than 30 s and was stopped after 3 of 10 fused images; "
                                "try a smaller image.")


def test_a_deadline_is_measured_from_its_start():
    clock = Clock()
    clock.now = 5000.0  # time spent before the start (waiting in the queue) does not count
    Deadline.start(1, "wait", clock).check("at once")


def test_work_that_cannot_end_within_the_limit_is_refused_before_it_starts():
    clock = Clock()
    deadline = Deadline.start(120, "try a smaller image", clock)
    clock.now += 20
    deadline.refuse_beyond(100, "Fusing this pair")  # exactly the limit is still within it
    with pytest.raises(TimeLimitExceeded) as error:
        deadline.refuse_beyond(100.4, "Fusing this pair")
    assert str(error.value) == ("Fusing this pair would take about 100 s on this server, more than the 120 s a "
                                "request may take; try a smaller image.")


def test_a_tile_check_stops_at_the_next_tile_once_the_time_is_up():
    clock = Clock()
    check = Deadline.start(10, "try a smaller image", clock).tile_check("the network's fusion")
    check(1, 25)
    clock.now += 11
    with pytest.raises(TimeLimitExceeded, match="stopped after 2 of 25 tiles of the network's fusion; try a"):
        check(2, 25)


def test_the_estimates_grow_with_the_pixels_and_leave_out_an_accelerators_network(monkeypatch):
    for name, value in (("NETWORK_SECONDS_PER_IMAGE", 4.0), ("NETWORK_SECONDS_PER_MEGAPIXEL", 10.0),
                        ("SCORING_SECONDS_PER_MEGAPIXEL", 9.0), ("METRICS_SECONDS_PER_MEGAPIXEL", 2.0),
                        ("SAFETY_FACTOR", 1.5)):
        monkeypatch.setattr(limits, name, value)
    assert fuse_seconds(2_000_000, network_on_cpu=True) == pytest.approx((4 + 20 + 18) * 1.5)
    assert fuse_seconds(2_000_000, network_on_cpu=True, slowdown=2) == pytest.approx((4 + 20 + 18) * 3)
    assert fuse_seconds(2_000_000, network_on_cpu=False) == pytest.approx(18 * 1.5)
    assert evaluate_seconds(2_000_000, pairs=2, external=1, network_on_cpu=True) == pytest.approx(
        (8 + 20 + 18 + 4) * 1.5)


def test_the_largest_image_the_app_takes_fits_its_fuse_limit():
    assert fuse_seconds(limits.MAX_PIXELS, network_on_cpu=True) <= limits.FUSE_SECONDS


def test_a_tiled_fusion_stops_at_the_first_tile_past_its_time(tiny_pipeline):
    from fusion_app.device import fuse_on_device

    clock = Clock()
    check = Deadline.start(10, "try a smaller image", clock).tile_check("the network's fusion")
    passes = []
    original = tiny_pipeline._fuse_tile

    def one_tile(*args):
        passes.append(1)
        clock.now += 4  # each tile's pass takes 4 s: the third starts at 8 s, the fourth would at 12 s
        return original(*args)

    tiny_pipeline._fuse_tile = one_tile
    tiny_pipeline.tile_size, tiny_pipeline.tile_overlap = 32, 8
    a, b = np.full((70, 90), 100, np.uint8), np.full((70, 90, 3), 50, np.uint8)
    with pytest.raises(TimeLimitExceeded, match="stopped after 3 of 12 tiles of the network's fusion"):
        fuse_on_device(tiny_pipeline, a, b, None, 0, check)
    assert len(passes) == 3
