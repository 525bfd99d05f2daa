"""The production driver: one coordination thread that ticks a Node, and one
callback thread that runs ``on_rebalance`` off it.

The coordination thread sleeps in ``backend.wait_for_change`` until the
node's next deadline (its agenda's next wake-up), a notification, or a local
request (drain, stop, a queued completion), whichever comes first, so an
idle worker wakes only when it has something to do: no polling beyond the
heartbeat.  A local request ``poke``s the driver, which interrupts the wait
(``InterruptibleWait``, ``backends/capabilities.py``).  Two cases still look
every ``LOCAL_POLL`` seconds: a backend that cannot interrupt its wait, and
a clock other than the system's (an injected clock may be moved by hand, and
nothing tells the driver).  A final error from the node (see
``runtime/node.py``, "Errors") is kept and re-raised to the user's thread;
every other one is retried inside the node.

Callbacks run one at a time on their own thread; when several events queue
up they are coalesced into one (added/removed merged), a raising callback is
logged and counted, and a hanging one never blocks coordination: shutdown
waits for it at most ``callback_timeout_sec``.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable

from jobsync.backends.capabilities import InterruptibleWait
from jobsync.core.errors import JobSyncError
from jobsync.core.lifecycle import TERMINAL
from jobsync.runtime.clock import Clock, SystemClock
from jobsync.runtime.node import Node, RebalanceEvent, Signal

log = logging.getLogger("jobsync.loop")

LOCAL_POLL = 0.05
"""Seconds between looks for local requests where a wait cannot be interrupted."""
LONGEST_WAIT = 3600.0
"""A wait never asks the backend for longer (the agenda always has a timer sooner)."""


class Driver:
    """Runs ``node.tick`` on a daemon thread until stopped or the node ends."""

    def __init__(
        self,
        node: Node,
        clock: Clock,
        on_events: Callable[[list[RebalanceEvent]], None],
        between_ticks: Callable[[], None] | None = None,
    ) -> None:
        self.node = node
        self.clock = clock
        self.error: BaseException | None = None
        self._on_events = on_events
        self._between = between_ticks
        self._signals: list[Signal] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poked = threading.Event()
        interruptible = isinstance(node.backend, InterruptibleWait)
        self._longest = (
            LONGEST_WAIT if interruptible and isinstance(clock, SystemClock) else LOCAL_POLL
        )
        self._changed = threading.Condition()
        self._ended = False
        self._thread = threading.Thread(target=self._run, name=f"jobsync-{node.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def signal(self, signal: Signal) -> None:
        with self._lock:
            self._signals.append(signal)
        self.poke()

    def poke(self) -> None:
        """A local request is waiting: tick now (from any thread; never raises)."""
        self._poked.set()
        backend = self.node.backend
        if isinstance(backend, InterruptibleWait):
            backend.interrupt_wait()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to end; True if it did within ``timeout`` seconds."""
        self._stop.set()
        self.poke()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block the caller until ``predicate()`` holds after a tick, or timeout."""
        deadline = self.clock.now() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - self.clock.now()
                ended = self._ended or not self._thread.is_alive()
                if remaining <= 0 or (ended and not predicate()):
                    return predicate()
                self._changed.wait(min(remaining, self._longest))  # notified per tick
        return True

    def _run(self) -> None:
        node = self.node
        notified = False
        try:
            while not self._stop.is_set():
                self._poked.clear()  # what pokes from here on is seen by this tick or the next
                with self._lock:
                    signals, self._signals = self._signals, []
                if notified:
                    signals.append(Signal.NOTIFIED)
                wake = node.tick(self.clock.now(), signals)
                if self._between is not None:
                    self._between()
                events = node.take_events()
                if events:
                    self._on_events(events)
                with self._changed:
                    self._changed.notify_all()
                if node.error is not None or node.state in TERMINAL:
                    return
                timeout = max(0.0, min(wake - self.clock.now(), self._longest))
                notified = self._wait(timeout)
        except JobSyncError as exc:
            self.error = exc
            log.error("coordination of %s stopped: %s", node.name, exc)
        except BaseException as exc:  # a bug: keep it for the user's thread
            self.error = exc
            log.exception("coordination of %s crashed", node.name)
        finally:
            with self._changed:
                self._ended = True  # read by wait_for under the same lock: no wake is lost
                self._changed.notify_all()

    def _wait(self, timeout: float) -> bool:
        """Sleep until the node's next wake-up or a poke; True if notified.

        Before the node is registered there is nothing to listen to: the thread
        sleeps on its poke event instead, so a registration that keeps failing
        is retried at the node's backoff, not in a busy loop."""
        if timeout <= 0 or self._poked.is_set():
            return False
        if self.node.registration is None:
            self._poked.wait(timeout)
            return False
        try:
            return self.node.backend.wait_for_change(self.node.site, timeout)
        except JobSyncError:
            self._poked.wait(timeout)
            return False


class CallbackRunner:
    """Runs ``on_rebalance`` callbacks one at a time, coalescing queued events."""

    def __init__(self, callback: Callable[..., object], name: str) -> None:
        self._callback = callback
        self._takes_event = _takes_argument(callback)
        self._pending: RebalanceEvent | None = None
        self._cond = threading.Condition()
        self._closed = False
        self.errors = 0
        self.calls = 0
        self._thread = threading.Thread(target=self._run, name=f"jobsync-cb-{name}", daemon=True)
        self._thread.start()

    def submit(self, events: list[RebalanceEvent]) -> None:
        with self._cond:
            for event in events:
                self._pending = event if self._pending is None else _merge(self._pending, event)
            self._cond.notify()

    def close(self, timeout: float) -> bool:
        """Stop after the queued event; True if the thread ended within ``timeout``."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                event, self._pending = self._pending, None
                if event is None:
                    return
            self.calls += 1
            try:
                if self._takes_event:
                    self._callback(event)
                else:
                    self._callback()
            except Exception:
                self.errors += 1
                log.exception("on_rebalance callback raised")


def _merge(old: RebalanceEvent, new: RebalanceEvent) -> RebalanceEvent:
    """One event equivalent to ``old`` then ``new``, relative to the set before ``old``."""
    before = (old.tokens - old.added) | old.removed
    return RebalanceEvent(
        added=new.tokens - before,
        removed=before - new.tokens,
        tokens=new.tokens,
        version=new.version,
        first=old.first or new.first,
    )


def _takes_argument(callback: Callable[..., object]) -> bool:
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return bool(positional)
