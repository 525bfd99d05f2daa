"""Entering and leaving a Job: the order in which its parts start and stop.

One duty: the sequence, not the parts.  What each mode builds is
``runtime/modes.py``'s ``Session``; this module says when.  Entering a
worker: open the backend, learn the date, bind the claim ledger, start the
node and its thread (with the lock provider's registrations), serve health,
wait until ready, install the SIGTERM guard (``runtime/sigterm.py``); an
observer stops after the date (hashing with the site's stored constants); a
standalone Job (coordination disabled) only serves health.  A failure on the
way tears down what was built.  Leaving normally completes the open claims,
leaving by an exception releases them (docs/PROTOCOL.md section 4); then the
uncertain ones are settled, the node drains and everything is torn down.

Between ticks, on the coordination thread, the Job counts heartbeats (for
the status's heartbeat age) and continuity breaks (after one, the ledger
sends its recent completions again), then lets the ledger retry and tidy.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from jobsync.core.errors import InvalidArgument, JobSyncError
from jobsync.core.hashing import token_function
from jobsync.runtime import clock as clocks
from jobsync.runtime.config import CoordinationConfig
from jobsync.runtime.health import HealthServer
from jobsync.runtime.ledger import ClaimLedger
from jobsync.runtime.locking import JobLocks
from jobsync.runtime.modes import Session
from jobsync.runtime.options import JobOptions
from jobsync.runtime.sigterm import SigtermGuard
from jobsync.runtime.task import Standalone
from jobsync.runtime.userconn import UserConnection

log = logging.getLogger("jobsync.job")
_J = TypeVar("_J", bound="LifetimeMethods")


class LifetimeMethods:
    """How a Job enters and leaves (part of its facade), over the attributes the
    Job sets."""

    name: str
    observer: bool
    config: CoordinationConfig
    health_server: HealthServer | None
    _options: JobOptions
    _capacity: float
    _now: Callable[[], float]
    _token: Callable[[object], int]
    _date: datetime.date | None
    _session: Session
    _ledger: ClaimLedger
    _locks: JobLocks
    _user_connection: UserConnection
    _sigterm: SigtermGuard | None
    _holder: Any
    _used: bool
    _halted: bool
    _entered: bool
    _beats: tuple[int, float]
    _breaks: int
    _start_health: Callable[[], None]  # the Job's (health is served for a Job)
    write_audit: Callable[[], int]  # the Job's

    def __enter__(self: _J) -> _J:
        if self._entered or self._used:
            raise InvalidArgument(
                f"Job {self.name!r} was already entered; a Job is entered once (make a new one)"
            )
        self._used = True
        if not self.config.enabled:  # standalone: every task is ours
            self._holder = Standalone(self.config.total_tokens)
            self._date = self._date or datetime.datetime.now(datetime.timezone.utc).date()
            self._start_health()
            self._entered = True
            return self
        try:
            self._enter()
        except BaseException:
            self._teardown(deregister=True)
            raise
        self._entered = True
        return self

    def _enter(self) -> None:
        session, opts = self._session, self._options
        deadline = self._now() + opts.wait_on_enter
        backend = session.open(opts.source, deadline)
        if self._date is None:
            self._date = session.backend_date(backend, deadline)
        self._ledger.bind(backend, self._date)
        if self.observer:
            info = session.observe(backend, deadline)
            if info is not None:  # hash task ids with the site's constants, not ours
                self._token = token_function(info.total_tokens, info.hash_function)
            return
        provider = opts.lock_provider
        node = session.start_worker(
            backend,
            deadline,
            locks=None if provider is None else lambda: self._locks.collect(lambda: provider(self)),
            clear_existing_locks=opts.clear_existing_locks,
            defences=opts.defences,
            on_rebalance=opts.on_rebalance,
            between_ticks=self._between_ticks,
            capacity=self._capacity,
        )
        self._holder = node.publisher
        if session.driver is not None:  # a queued completion is retried at once
            self._ledger.wake = session.driver.poke
        self._start_health()
        session.wait_ready()
        if opts.handle_sigterm:
            guard = SigtermGuard(
                session,
                self._ledger,
                now=self._now,
                halt=self._halt,
                enforce_deadline=opts.defences.sigterm_deadline,
            )
            if guard.install():
                self._sigterm = guard

    def _halt(self) -> None:
        """Stop claiming at once (a drain or SIGTERM began); safe in a signal handler."""
        self._halted = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._entered:
            return
        self._entered = False
        if self._session.node is None:
            self._teardown(deregister=False)
            return
        try:
            if exc_type is None:
                self.write_audit()
            else:
                self._ledger.release_all()
            self._ledger.release_uncertain()
        except JobSyncError as error:
            log.warning("node %s: could not settle claims at exit: %s", self.name, error)
        clocks.sleep(self._options.wait_on_exit)
        self.drain()
        self._teardown(deregister=True)
        if exc_type is None:
            self._session.raise_if_stopped()

    def drain(self) -> bool:
        """Stop claiming, hand every token off and leave; True if handed off in time.

        Blocks for at most ``heartbeat_timeout + ack_timeout`` seconds.
        """
        if self._session.node is None or self._session.driver is None:
            return True
        self._halt()
        return self._session.drain()

    def _teardown(self, deregister: bool) -> None:
        self._session.teardown(deregister)
        self._user_connection.close()
        if self.health_server is not None:
            self.health_server.close()
            self.health_server = None
        if self._sigterm is not None:
            guard, self._sigterm = self._sigterm, None
            guard.close()

    def _between_ticks(self) -> None:
        """On the coordination thread after each tick: retries and bookkeeping."""
        node = self._session.node
        if node is None:
            return
        now = self._now()
        if node.stats["heartbeats"] != self._beats[0]:
            self._beats = (node.stats["heartbeats"], now)
        interval = self.config.rebalance_check_interval_sec
        breaks = node.stats.get("continuity_breaks", 0)
        if breaks != self._breaks:  # the database lost history: completions may be gone
            self._breaks = breaks
            self._ledger.resend_recent()
        self._ledger.between_ticks(now, node.lease_valid(now), interval)
