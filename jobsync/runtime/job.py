"""The Job a user holds: the README's API, a thin facade over parts with one duty each.

Guarantees users get (docs/PROTOCOL.md section 4) and where they come from:

- ``can_claim_task`` reads one immutable snapshot (``runtime/publishing.py``)
  and the local boot clock: True only for tokens this incarnation holds, with
  no release pending, while its own lease lasts and before a drain or
  SIGTERM began.
- ``add_task`` is the durable, epoch-fenced claim; it returns False (never
  raises) on a transient backend error.  Completion is fenced by the claim.
  Open, queued and uncertain claims are the ledger's (``runtime/ledger.py``).
- Leaving the ``with`` block normally completes the open claims, then
  drains (revokes acknowledged, row deleted); leaving it by an exception
  releases them so the next owner redoes the work (the order of entering and
  leaving: ``runtime/lifetime.py``).  What entering builds, per mode
  (worker, observer, standalone), is ``runtime/modes.py``.
- SIGTERM: the handler only sets flags; a watchdog thread follows
  ``runtime/shutdown.py`` (open claims until ``drain_timeout_sec``, then
  release and drain), and the process ends by ``drain_timeout_sec`` plus a
  one-second grace whatever the backend does (``runtime/sigterm.py``,
  ``runtime/signals.py``).
- Locks: ``runtime/locking.py``.
- ``job.connection``: a connection of the user's own, never the coordination
  one (``runtime/userconn.py``); the original jobsync's names are deprecated
  aliases or refused (``runtime/legacy.py``).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from typing import Any

from jobsync.backends.base import Backend
from jobsync.core.defences import PRODUCTION, Defences
from jobsync.core.hashing import token_function
from jobsync.core.loadestimate import check_cost
from jobsync.runtime import clock as clocks
from jobsync.runtime.config import CoordinationConfig, Settings
from jobsync.runtime.health import HealthServer, serve_health
from jobsync.runtime.ledger import UNCERTAIN_LIMIT, ClaimLedger
from jobsync.runtime.legacy import LegacyJobMethods
from jobsync.runtime.lifetime import LifetimeMethods
from jobsync.runtime.locking import JobLocks, LockItem, LockMethods
from jobsync.runtime.loop import Driver
from jobsync.runtime.maintenance import CapacityMethods
from jobsync.runtime.modes import Session
from jobsync.runtime.node import Node
from jobsync.runtime.options import job_options
from jobsync.runtime.sigterm import SigtermGuard
from jobsync.runtime.snapshot import ClaimSnapshot
from jobsync.runtime.status import ReportMethods
from jobsync.runtime.task import (
    Fixed,
    Task,
    audit_rows,
    task_key,
)
from jobsync.runtime.userconn import UserConnection

__all__ = ["UNCERTAIN_LIMIT", "Job", "LockItem", "Task"]


class Job(LifetimeMethods, LockMethods, ReportMethods, LegacyJobMethods, CapacityMethods):
    """One worker of a site, used as a context manager.  See the README for the loop.

    Entering, leaving and draining are ``LifetimeMethods`` (``runtime/lifetime.py``),
    the lock API ``LockMethods`` (``runtime/locking.py``), what users read
    ``ReportMethods`` (``runtime/status.py``), the original jobsync's names
    ``LegacyJobMethods`` (``runtime/legacy.py``), capacity and planned
    maintenance ``CapacityMethods`` (``runtime/maintenance.py``)."""

    def __init__(
        self,
        node_name: str,
        site: str | None = None,
        config: Settings | str | Backend | None = None,
        *,
        coordination_config: CoordinationConfig | None = None,
        wait_on_enter: float = 120,
        wait_on_exit: float = 0,
        lock_provider: Callable[[Job], Iterable[LockItem] | None] | None = None,
        clear_existing_locks: bool = False,
        on_rebalance: Callable[..., object] | None = None,
        date: datetime.date | None = None,
        handle_sigterm: bool = True,
        observer: bool = False,
        clock: clocks.Clock | None = None,
        http_port: int | None = None,
        http_host: str = "127.0.0.1",
        db_connection: object = None,
        capacity: float | None = None,
        _defences: Defences = PRODUCTION,
    ) -> None:
        """``site`` defaults to ``SYNC_SITE``, else ``"default"`` (the original
        jobsync had no sites).  ``db_connection`` (the original jobsync's
        argument) is handed back as ``job.connection`` for your queries;
        jobsync coordinates on a connection of its own.  ``capacity`` (default
        ``SYNC_CAPACITY``, else 1) sets this worker's share of tokens in
        proportion to the others'.
        ``_defences`` is for jobsync's own tests of its defences; never pass it."""
        opts = job_options(
            node_name,
            site,
            config,
            coordination_config=coordination_config,
            wait_on_enter=wait_on_enter,
            wait_on_exit=wait_on_exit,
            lock_provider=lock_provider,
            clear_existing_locks=clear_existing_locks,
            on_rebalance=on_rebalance,
            date=date,
            handle_sigterm=handle_sigterm,
            observer=observer,
            http_port=http_port,
            http_host=http_host,
            defences=_defences,
            capacity=capacity,
        )
        self._options = opts
        self._capacity = opts.capacity
        self.name, self.site, self.observer = opts.name, opts.site, opts.observer
        self.config = opts.config
        self.health_server: HealthServer | None = None
        self._beats = (0, -1.0)  # (heartbeats seen, local time the count last grew)
        self._breaks = 0  # continuity breaks the node has seen (see _between_ticks)
        self._clock = clock or clocks.SystemClock()
        self._now = self._clock.now
        self._token = token_function(self.config.total_tokens, self.config.hash_function)
        self._date = opts.date
        self._user_connection = UserConnection(self.name, opts.source, db_connection)
        self._session = Session(self.name, self.site, self.config, self._clock, opts.wait_on_enter)
        self._ledger = ClaimLedger(self.site, self.name)
        self._locks = JobLocks(
            self.site,
            self.name,
            self.config,
            backend=self._require_backend,
            token=lambda: self._token,
            observer=self.observer,
            explicit_config=opts.explicit_config,
        )
        self._sigterm: SigtermGuard | None = None
        self._holder: Any = Fixed(ClaimSnapshot.empty(self.config.total_tokens))
        self._used = False
        self._halted = False
        self._standalone_claims: set[str] = set()
        self._entered = False

    # -- the parts (read by tests and the health server) ---------------------------
    @property
    def _backend(self) -> Backend | None:
        return self._session.backend

    @property
    def _node(self) -> Node | None:
        return self._session.node

    @property
    def _driver(self) -> Driver | None:
        return self._session.driver

    @property
    def connection(self) -> Any:
        """A connection to the Job's database for your own queries (psycopg or
        sqlite3), never the one coordination uses: nothing run on it delays a
        heartbeat.  Opened on first use, closed when the Job leaves; with
        ``db_connection=``, that connection.  ``job._cn`` is its deprecated alias."""
        return self._user_connection.get()

    @property
    def counters(self) -> dict[str, int]:
        """This Job's own counters (``statistics()`` adds the node's and the backend's)."""
        return self._ledger.statistics.as_dict()

    # -- entering and leaving (the sequence is LifetimeMethods') --------------------
    def _start_health(self) -> None:
        host, port = self._options.http
        if port is not None:
            self.health_server = serve_health(self, port=port, host=host)

    # -- the hot path ---------------------------------------------------------
    def can_claim_task(self, task: object) -> bool:
        """True iff this worker may take ``task`` now (never raises on backend trouble)."""
        snap = self._holder.snapshot
        key = task.key if type(task) is Task else task
        return (
            snap.owned[self._token(key)] == 1 and self._now() < snap.lease_deadline
        ) and not self._halted

    def task_to_token(self, task_id: object) -> int:
        return self._token(task_key(task_id))

    # -- claims ------------------------------------------------------------------
    def add_task(self, task: object) -> bool:
        """Durably claim ``task``; False if another worker holds or finished it, or on error."""
        return bool(self._claim([task]))

    def add_tasks(self, tasks: Iterable[object]) -> set[object]:
        """Claim many in one round trip; return the inputs that were claimed."""
        return self._claim(list(tasks))

    def _claim(self, tasks: list[object]) -> set[object]:
        self._session.raise_if_stopped()
        keys = [task_key(t) for t in tasks]
        if not self.config.enabled:
            fresh = {
                t for t, k in zip(tasks, keys, strict=True) if k not in self._standalone_claims
            }
            self._standalone_claims.update(keys)
            return fresh
        snap: ClaimSnapshot = self._holder.snapshot
        if self._halted or self._now() >= snap.lease_deadline:
            return set()
        got = self._ledger.claim(keys, snap, self._token)
        return {t for t, k in zip(tasks, keys, strict=True) if k in got}

    def complete(
        self, task: object, connection: object | None = None, *, cost: float | None = None
    ) -> bool:
        """Mark a task this Job claimed as done; True if recorded.

        ``cost`` (a positive finite number, in any unit of your choosing) is
        what the task cost, for the leader's measured load
        (``load_half_life_sec``) when wall time is not the measure: the
        estimate uses it instead of the claim's duration.

        With ``connection`` (your own psycopg or sqlite3 connection, inside your
        open transaction) the completion commits or rolls back with your side
        effect; if it returns False, roll your transaction back.  If your
        transaction rolls back after a True, the claim stays yours and is
        released when the Job exits, so another worker redoes the task.
        Without ``connection``, a transient error queues the completion for
        retry while the lease lasts (returns False;
        ``statistics()['completions_queued']``).
        """
        key = task_key(task)
        cost = check_cost(cost)
        if not self.config.enabled:
            return key in self._standalone_claims
        if connection is not None:
            return self._ledger.complete_in(key, connection, cost)
        return self._ledger.complete(key, cost)

    def release(self, task: object, connection: object | None = None) -> bool:
        """Give a claimed task back (it failed); another worker may claim it.

        With ``connection`` (as for ``complete``: your own connection, inside your
        open transaction) the release commits or rolls back with your
        transaction.  A task you already completed in that same transaction is
        no longer an open claim there: the release answers False, and rolling
        the transaction back is what gives the task back (the claim stays yours
        and is released when the Job exits).  Without ``connection``, a claim
        row that another transaction keeps locked (usually your own open one)
        is waited on only for the backend's lock timeout: then ``LockTimeout``
        is raised, naming the task.
        """
        return self._ledger.release(task_key(task), connection)

    def write_audit(self) -> int:
        """Complete every open claim of this Job in one batch; return how many were recorded."""
        return self._ledger.complete_all()

    def get_audit(self) -> list[dict[str, object]]:
        """This site's claims and completions for the Job's date."""
        backend = self._require_backend()
        return audit_rows(backend.read_audit(self.site, self.date))
