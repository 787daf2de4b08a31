"""A time limit per request: a heavy handler starts a ``Deadline`` and checks it between its stages (each
baseline of a comparison, each fused image of an evaluation), so a request that runs past its limit stops at
the next check with a message saying where it stopped and what to try instead. One stage is never cut short:
the limit bounds the work to one stage past it, and the app's size limits bound a stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


class TimeLimitExceeded(Exception):
    """A request ran past its ``Deadline``; the message is meant for the person who sent it."""


@dataclass(frozen=True)
class Deadline:
    """``seconds`` from ``started`` on ``clock``; ``advice`` ends the message (what to try instead)."""

    seconds: float
    advice: str
    started: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def start(cls, seconds: float, advice: str, clock: Callable[[], float] = time.monotonic) -> Deadline:
        """A deadline ``seconds`` from now."""
        return cls(seconds, advice, clock(), clock)

    def elapsed(self) -> float:
        return self.clock() - self.started

    def check(self, where: str) -> None:
        """Raise ``TimeLimitExceeded`` once the time is up; ``where`` says how far the request got, e.g.
        'after 3 of 10 fused images'."""
        if self.elapsed() > self.seconds:
            raise TimeLimitExceeded(f"This request took longer than {self.seconds:g} s and was stopped {where}; "
                                    f"{self.advice}.")
