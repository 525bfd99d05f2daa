"""SIGTERM: stop claiming at once, drain, then end the process as it would have ended.

The handler does no I/O: it flips flags and asks the coordination thread to
drain.  When the drain is over, ``redeliver`` sends SIGTERM to the process
again; the handler, seeing the drain done, restores the previous handler
and hands the signal to it (for the default action, the process ends).  So
after SIGTERM any program shape ends by itself: a ``while True`` loop that
catches ``Exception``, a Flask server, a consumer blocked on a queue.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class SigtermHandler:
    """Installs itself on SIGTERM for one Job; ``restore`` puts the previous one back."""

    def __init__(self, on_term: Callable[[], None]) -> None:
        self._on_term = on_term
        self._previous: _Handler = None
        self._installed = False
        self.received = False
        self.drained = False

    def install(self) -> bool:
        """Install if on the main thread; False (and nothing changed) elsewhere."""
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread of the main interpreter
            return False
        self._installed = True
        return True

    def restore(self) -> None:
        if self._installed:
            try:
                signal.signal(signal.SIGTERM, self._previous)
            except (ValueError, TypeError):
                return
            self._installed = False

    def redeliver(self) -> None:
        """After the drain: signal the process again so the previous handler decides."""
        self.drained = True
        os.kill(os.getpid(), signal.SIGTERM)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.drained:
            if not self.received:
                self.received = True
                self._on_term()
            return
        previous = self._previous
        self.restore()
        if callable(previous):
            previous(signum, frame)
        elif previous in (signal.SIG_DFL, None):
            os.kill(os.getpid(), signal.SIGTERM)
        # SIG_IGN: the process had chosen to ignore SIGTERM; so do we.
