"""The one clock moved by hand: runtime code reads it as a ``Clock``
(``clock.now()``), backends with an injectable clock (memory, SQLite) call it
(``clock()``).  Both read the same instant."""

from __future__ import annotations

import threading

from jobsync.runtime.clock import Clock

DEFAULT_START = 1_700_000_000.0
"""An arbitrary Unix time, far from zero so that ``t - lease`` stays positive."""


class ManualClock:
    """A float clock that moves only when told, and never backwards.

    Implements ``jobsync.runtime.clock.Clock`` (``now``); calling it reads the
    same time, for backends that take a ``Callable[[], float]``.  ``set`` and
    ``advance`` move it.  Thread-safe.
    """

    def __init__(self, start: float = DEFAULT_START) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def __call__(self) -> float:
        return self._now

    def set(self, instant: float) -> None:
        """Move to ``instant``; ValueError if that is earlier than now."""
        with self._lock:
            if instant < self._now:
                raise ValueError(f"ManualClock cannot go back from {self._now!r} to {instant!r}")
            self._now = float(instant)

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0); return the new time."""
        if seconds < 0:
            raise ValueError(f"ManualClock cannot advance by a negative {seconds!r}")
        with self._lock:
            self._now += seconds
            return self._now


def _is_a_clock(clock: ManualClock) -> Clock:
    """Checked by mypy: a ManualClock is a runtime ``Clock``."""
    return clock
