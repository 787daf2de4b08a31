"""The per-request time limit, on a clock the test moves."""

from __future__ import annotations

import pytest

from fusion_app.deadline import Deadline, TimeLimitExceeded


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
