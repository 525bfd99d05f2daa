"""SIGTERM: stop claiming at once, drain, then end the process as it would have ended.

The handler does no I/O: it flips flags and wakes the watchdog (an
``Event.set``; only the watchdog waits on that event).  The watchdog, a daemon
thread of its own, follows ``runtime/shutdown.py``'s policy: it lets open
claims complete until the drain deadline, then releases what is still open
and asks the node to hand its tokens off, and re-delivers SIGTERM when the
node is done or when the policy's exit deadline comes, whichever is first.
It needs nothing from the coordination thread, so it works when that thread
has ended or the node was superseded, and a backend outage cannot hold it
past the deadline (the hand-off's I/O runs on a helper thread).

``redeliver`` sends SIGTERM to the process again; the handler, seeing the
drain over, restores the previous handler and hands the signal to it (for
the default action, the process ends).  So after SIGTERM any program shape
ends by itself: a ``while True`` loop that catches ``Exception``, a Flask
server, a consumer blocked on a queue.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import attrs

from jobsync.runtime.shutdown import DEFAULT_GRACE, ShutdownPolicy, Step

log = logging.getLogger("jobsync.signals")

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

WATCH_POLL = 0.05
"""After SIGTERM, how often the watchdog looks at claims and the node between deadlines."""


class SigtermHandler:
    """Installs itself on SIGTERM for one Job; ``restore`` puts the previous one back."""

    def __init__(self, on_term: Callable[[], None]) -> None:
        self._on_term = on_term
        self._previous: _Handler = None
        self._installed = False
        self._redelivery = threading.Lock()
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
        """After the drain: signal the process again so the previous handler decides.

        Safe from any thread and idempotent: the first call sends the signal."""
        with self._redelivery:
            if self.drained:
                return
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


@attrs.define(eq=False)
class SigtermWatchdog:
    """Drives a ``ShutdownPolicy`` after SIGTERM on a daemon thread of its own.

    The Job supplies what the policy reads and does: ``open_claims()`` (how
    many claims are open), ``hand_off()`` (release them and drain; may block
    on I/O, so it runs on a helper thread), ``node_done()`` (nothing is left
    to hand off) and ``redeliver()``.  ``now`` is the clock ``notify`` is given
    instants on.
    """

    _name: str
    _now: Callable[[], float] = attrs.field(kw_only=True)
    _drain_timeout: float = attrs.field(kw_only=True)
    _open_claims: Callable[[], int] = attrs.field(kw_only=True)
    _hand_off: Callable[[], None] = attrs.field(kw_only=True)
    _node_done: Callable[[], bool] = attrs.field(kw_only=True)
    _redeliver: Callable[[], None] = attrs.field(kw_only=True)
    _grace: float = attrs.field(default=DEFAULT_GRACE, kw_only=True)
    _enforce: bool = attrs.field(default=True, kw_only=True, alias="enforce_deadline")
    _wake: threading.Event = attrs.field(factory=threading.Event, init=False)
    _stopped: bool = attrs.field(default=False, init=False)
    _signalled_at: float | None = attrs.field(default=None, init=False)
    _thread: threading.Thread = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"jobsync-sigterm-{self._name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def notify(self, signalled_at: float) -> None:
        """From the signal handler: no I/O, no lock the handler's thread may hold."""
        self._signalled_at = signalled_at
        self._wake.set()

    def stop(self) -> None:
        """The Job is gone: end the thread without acting (never called by the handler)."""
        self._stopped = True
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        self._wake.wait()
        self._wake.clear()
        if self._stopped or self._signalled_at is None:
            return
        policy = ShutdownPolicy(
            signalled_at=self._signalled_at,
            drain_timeout=self._drain_timeout,
            grace=self._grace,
            enforce_deadline=self._enforce,
        )
        helper: threading.Thread | None = None
        while not self._stopped:
            now = self._now()
            claims = self._open_claims()
            started = helper is not None
            done = helper is not None and not helper.is_alive() and self._node_done()
            step = policy.decide(now, open_claims=claims, drain_started=started, node_done=done)
            if step is Step.EXIT:
                if not done:
                    log.warning(
                        "node %s: SIGTERM drain not finished %.1f s after the signal; "
                        "ending the process anyway",
                        self._name,
                        now - policy.signalled_at,
                    )
                self._redeliver()
                return
            if step is Step.DRAIN:
                helper = threading.Thread(
                    target=self._hand_off_logged, name=f"jobsync-handoff-{self._name}", daemon=True
                )
                helper.start()
                continue
            wake = policy.next_check(now, open_claims=claims, drain_started=started)
            pause = WATCH_POLL if math.isinf(wake) else min(max(0.0, wake - now), WATCH_POLL)
            self._wake.wait(pause)

    def _hand_off_logged(self) -> None:
        try:
            self._hand_off()
        except Exception:
            log.exception("node %s: hand-off after SIGTERM failed", self._name)
