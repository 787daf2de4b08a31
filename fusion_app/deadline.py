"""A time limit per request: a heavy handler starts a ``Deadline``, refuses work estimated from its pixels to
outlast the limit before starting it (``Deadline.refuse_beyond`` with ``fuse_seconds`` or
``evaluate_seconds``), then checks it between its stages (each baseline of a comparison, each fused image of an
evaluation), so a request that runs past its limit stops at the next check with a message saying where it
stopped and what to try instead. One stage is never cut short: the estimate keeps every request that runs within
its limit, and the checks bound an estimate that was wrong to one stage past it.

The network's fusion of a large pair is one stage of many tiles: ``Deadline.tile_check`` is the callable the
pipeline calls before each tile, so that such a fusion stops at the next tile once the time is up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fusion_app import limits


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

    def refuse_beyond(self, estimate: float, what: str) -> None:
        """Raise ``TimeLimitExceeded`` before work estimated at ``estimate`` seconds starts when it cannot end
        within the limit; ``what`` names the work, e.g. 'Fusing and scoring this 4096 x 4096 pair'."""
        if self.elapsed() + estimate > self.seconds:
            raise TimeLimitExceeded(f"{what} would take about {estimate:.0f} s on this server, more than the "
                                    f"{self.seconds:g} s a request may take; {self.advice}.")

    def tile_check(self, what: str) -> Callable[[int, int], None]:
        """``check`` as the callback before each of the ``total`` tiles of ``what``, e.g. "the network's fusion"."""
        return lambda done, total: self.check(f"after {done} of {total} tiles of {what}")


def fuse_seconds(pixels: int, network_on_cpu: bool, slowdown: float = 1.0, pairs: int = 1) -> float:
    """The estimated time of fusing and scoring ``pairs`` pairs of ``pixels`` per source in all: the network (when
    it runs on the CPU), its metrics, and the four baselines fused and scored; ``slowdown`` when fewer cores are
    left to the request (a training run takes half)."""
    megapixels = pixels / 1e6
    network = limits.NETWORK_SECONDS_PER_IMAGE * pairs + limits.NETWORK_SECONDS_PER_MEGAPIXEL * megapixels
    work = (network if network_on_cpu else 0.0) + limits.SCORING_SECONDS_PER_MEGAPIXEL * megapixels
    return work * slowdown * limits.SAFETY_FACTOR


def evaluate_seconds(pixels: int, pairs: int, external: int, network_on_cpu: bool, slowdown: float = 1.0) -> float:
    """The estimated time of an Evaluate request: ``fuse_seconds`` of its pairs, and the metrics of the
    ``external`` methods' images of them."""
    scored = limits.METRICS_SECONDS_PER_MEGAPIXEL * external * pixels / 1e6 * slowdown * limits.SAFETY_FACTOR
    return fuse_seconds(pixels, network_on_cpu, slowdown, pairs) + scored
