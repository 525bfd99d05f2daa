"""``MemoryStore``: the shared state of every site, its fault knobs and the
simulator's hooks.

Faults, for the simulator and tests, are set on the store per client name and
apply before a verb does anything (``statistics`` and ``close`` are local and
never fail):

- ``fail_next(client, n)``: the next n calls raise BackendUnavailable;
- ``cut_off(client)`` / ``restore(client)``: a partition of one client;
- ``cut_off_all()`` / ``restore_all()``: a database outage (per-client
  cut-offs are independent of it and stay as they are);
- ``delay(client, seconds)``: every call first sleeps through ``sleeper``
  (injectable, so the simulator can make it virtual);
- ``lose_notifications(client, n)``: the client's handles miss the next n
  wake-ups, as a lost NOTIFY (the next change, or a counter read, still tells);
- ``before_commit``: called as ``hook(client, commit)`` inside ``commit_plan``
  before its checks and outside the lock, so other clients' verbs can land
  between a plan's read and its commit.

Row locks.  ``store.transaction(client)`` opens a ``MemoryTransaction``, the
memory form of a user's database connection inside an open transaction:
passed to ``complete_in`` or ``release_in`` it locks the claim rows it touched
until ``commit`` or ``rollback``.  Verbs meet those locks as base.py says
(claims never wait, cleanup skips locked rows, a completion or release through
the coordination handle meets the lock).  A verb that would wait calls
``_contend``: this store never sleeps, so it raises ``LockTimeout`` at once;
the simulator's store overrides it to let virtual time pass.  ``_inside`` and
``_committed`` are further hooks for the simulator (a pause inside a verb,
holding its locks; a reply lost after the commit); here they do nothing.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Sequence

from jobsync.backends import _checks as checks
from jobsync.backends.base import PlanCommit
from jobsync.backends.memory.handle import MemoryBackend
from jobsync.backends.memory.site import SiteState
from jobsync.backends.memory.transaction import MemoryTransaction
from jobsync.core.defences import PRODUCTION, Defences
from jobsync.core.errors import BackendUnavailable, InvalidArgument, LockTimeout

CommitHook = Callable[[str, PlanCommit], None]


class MemoryStore:
    """The shared state of any number of sites; thread-safe."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        sleeper: Callable[[float], None] = time.sleep,
        defences: Defences = PRODUCTION,
    ) -> None:
        self.clock = clock
        self.sleeper = sleeper
        self.defences = defences
        self.lock_timeout = 0.5
        """Seconds a verb would wait on a row lock (the simulator lets them pass)."""
        self.node_locks: dict[tuple[str, str], object] = {}
        """(site, node name) -> holder: node rows locked across a paused verb."""
        self.before_commit: CommitHook | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._sites: dict[str, SiteState] = {}
        self._handles: weakref.WeakSet[MemoryBackend] = weakref.WeakSet()
        self._failures: dict[str, int] = {}
        self._cut: set[str] = set()
        self._outage = False
        self._delays: dict[str, float] = {}
        self._lost: dict[str, int] = {}

    def connect(self, client: str) -> MemoryBackend:
        """A new handle (one "connection") for ``client`` on this store."""
        if not isinstance(client, str) or not client:
            raise InvalidArgument(f"client must be a non-empty string, got {client!r}")
        handle = MemoryBackend(self, client)
        with self._lock:
            self._handles.add(handle)
        return handle

    def transaction(self, client: str) -> MemoryTransaction:
        """Open a user transaction (pass it to ``complete_in`` or ``release_in``; then
        commit or roll back)."""
        return MemoryTransaction(self, client)

    # -- hooks for the simulator --------------------------------------------------
    def _contend(self, client: str, verb: str, blockers: Sequence[object]) -> None:
        """``verb`` of ``client`` would wait on row locks held by ``blockers``."""
        raise LockTimeout(
            f"{verb} of {client!r}: a row it needs is locked by another transaction "
            f"({', '.join(map(repr, blockers))}); a user transaction that completed or "
            "released a task with connection= holds it until it commits or rolls back"
        )

    def _inside(self, client: str, verb: str, site: str, held: Sequence[tuple[str, str]]) -> None:
        """Called as ``verb`` runs, holding the node rows ``held`` until it commits."""

    def _committed(self, client: str, verb: str) -> None:
        """Called after ``verb`` committed, before its answer reaches ``client``."""

    # -- faults -----------------------------------------------------------------
    def fail_next(self, client: str, n: int = 1) -> None:
        with self._lock:
            self._failures[client] = self._failures.get(client, 0) + checks.integer("n", n)

    def cut_off(self, client: str) -> None:
        with self._lock:
            self._cut.add(client)

    def restore(self, client: str) -> None:
        with self._lock:
            self._cut.discard(client)

    def cut_off_all(self) -> None:
        with self._lock:
            self._outage = True

    def restore_all(self) -> None:
        with self._lock:
            self._outage = False

    def delay(self, client: str, seconds: float) -> None:
        pause = checks.seconds("delay", seconds, allow_zero=True)
        with self._lock:
            self._delays[client] = pause

    def lose_notifications(self, client: str, n: int) -> None:
        with self._lock:
            self._lost[client] = self._lost.get(client, 0) + checks.integer("n", n)

    # -- internals --------------------------------------------------------------
    def _admit(self, client: str) -> None:
        pause = self._delays.get(client, 0.0)
        if pause:
            self.sleeper(pause)
        with self._lock:
            if self._outage or client in self._cut:
                cause = "database outage" if self._outage else "client cut off"
                raise BackendUnavailable(f"memory store unreachable for {client!r} ({cause})")
            left = self._failures.get(client, 0)
            if left:
                self._failures[client] = left - 1
                raise BackendUnavailable(f"injected failure for {client!r} ({left - 1} left)")

    def _site(self, site: str) -> SiteState:
        state = self._sites.get(site)
        if state is None:
            raise InvalidArgument(f"unknown site {site!r}: no worker of it has started yet")
        return state

    def _publish(self, site: str, signals: int) -> None:
        """Wake waiters on ``site``; a client losing notifications misses these."""
        for _ in range(signals):
            unlucky = {
                h.client for h in self._handles if site in h._seen and self._lost.get(h.client)
            }
            for handle in self._handles:
                if handle.client in unlucky:
                    handle._seen[site] += 1
            for client in unlucky:
                self._lost[client] -= 1
        self._changed.notify_all()
