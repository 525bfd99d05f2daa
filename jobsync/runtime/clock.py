"""The only place the runtime reads real time.

A worker's own lease is measured on a clock that keeps counting through
suspend: ``CLOCK_BOOTTIME`` on Linux, ``time.monotonic`` elsewhere
(docs/PROTOCOL.md section 4, "Clocks").  Everything else in the runtime takes a
``Clock`` so tests and the simulator can drive time by hand: the one clock
moved by hand is ``jobsync.testing.ManualClock``, which implements ``Clock``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Local time for leases and schedules (seconds, arbitrary origin)."""

    def now(self) -> float: ...


def _boottime_reader() -> Callable[[], float]:
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return time.monotonic
    try:
        time.clock_gettime(boottime)
    except OSError:
        return time.monotonic
    # A partial of the builtin is called without a Python frame: this read sits on
    # the can_claim_task hot path.
    return functools.partial(time.clock_gettime, boottime)


class SystemClock:
    """The real clock: CLOCK_BOOTTIME where available, else monotonic."""

    def __init__(self) -> None:
        self.now: Callable[[], float] = _boottime_reader()


def wall_time() -> float:
    """Seconds since the Unix epoch (only for human-facing stamps, never for decisions)."""
    return time.time()


def sleep(seconds: float) -> None:
    """Block the calling thread (used only for ``wait_on_exit``)."""
    if seconds > 0:
        time.sleep(seconds)
