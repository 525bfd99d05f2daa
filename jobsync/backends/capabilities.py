"""The optional capabilities a backend may offer beyond ``base.Backend``.

Each is a runtime-checkable protocol: the runtime asks ``isinstance(backend,
CompletionFeed)`` before it relies on one.  All three shipped backends offer
all of them; a backend of your own may leave them out.  ``Nudge`` is the
shipped backends' way of offering ``InterruptibleWait``.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs


@attrs.frozen(kw_only=True)
class Completion:
    """A completed claim as the leader's load estimate reads it: its token, when it was
    claimed and completed (backend time, seconds) and the explicit cost given to
    ``complete`` (None: the estimate takes the duration)."""

    token: int
    claimed_at: float
    completed_at: float
    cost: float | None = None


@runtime_checkable
class CompletionFeed(Protocol):
    """A backend that lists completions in the order they finished, in bounded batches:
    what the leader's per-token load estimate reads (``jobsync.core.loadestimate``)."""

    def read_completions(self, site: str, after: float, limit: int) -> tuple[Completion, ...]:
        """At most ``limit`` completions of any date with ``completed_at > after``,
        oldest first (one round trip; on PostgreSQL and SQLite an index range scan).
        A caller pages on by passing the last ``completed_at`` it got; completions
        sharing that instant beyond a full batch are skipped (the estimate tolerates
        it).  InvalidArgument names a bad ``after`` or ``limit`` (1..100,000)."""
        ...


@runtime_checkable
class TransactionalCompletion(Protocol):
    """A backend that can complete or release claims inside the caller's own open
    transaction, so that a side effect in the same database commits if and only if
    the completion does.  ``connection`` is the caller's connection to the same
    database (PostgreSQL: a psycopg 3 ``Connection`` inside an open transaction;
    SQLite: a ``sqlite3.Connection`` to the same file; memory: a
    ``MemoryTransaction``); anything else raises InvalidArgument.  The caller
    commits or rolls back; the rows touched stay locked until then (see the
    module docstring, "Lock waits are bounded")."""

    def complete_in(
        self, connection: object, site: str, date: datetime.date, incarnation: int,
        task_keys: Sequence[str], *, cost: float | None = None,
    ) -> frozenset[str]:  # fmt: skip
        """``complete`` inside the caller's transaction; the keys it completed there."""
        ...

    def release_in(
        self, connection: object, site: str, date: datetime.date, incarnation: int,
        task_keys: Sequence[str],
    ) -> frozenset[str]:  # fmt: skip
        """``release`` inside the caller's transaction; the keys it released there."""
        ...


@runtime_checkable
class InterruptibleWait(Protocol):
    """A backend whose ``wait_for_change`` another thread can cut short: what lets a
    worker's coordination thread sleep until its next deadline and still notice a
    local request (a drain, a stop, a queued completion) at once.  Without it the
    runtime looks for local requests every 50 ms."""

    def interrupt_wait(self) -> None:
        """Make the ``wait_for_change`` running on this handle return False now, or
        if none runs, the next one to start (once).  Safe from any thread; never
        raises, closed or not."""
        ...


class Nudge:
    """A sticky wake-up for one waiter: ``set`` from any thread; ``sleep`` returns
    early once set; ``take`` answers whether it was set and clears it.  ``close``
    sets it for good (a closing handle's waiter must not sleep on)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._closed = False

    def set(self) -> None:
        self._event.set()

    def take(self) -> bool:
        with self._lock:
            if not self._event.is_set():
                return False
            if not self._closed:
                self._event.clear()
            return True

    def sleep(self, seconds: float) -> None:
        self._event.wait(max(0.0, seconds))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._event.set()
