"""One PostgreSQL connection shared by two threads, with LISTEN, counting and reconnect.

Why one connection, and how a waiter wakes: ``notify.py``.

Reconnection: a statement that fails because the connection is gone drops
the connection and raises BackendUnavailable.  The next call reconnects at
once; each failed attempt doubles a capped delay (with jitter) during which
calls raise BackendUnavailable without trying.  After a reconnect every
channel is re-LISTENed and signalled, since notifications may have been lost.
Before each use, input waiting on an idle connection is drained, which both
delivers notifications and notices a server-side termination before a
statement is sent, so that case reconnects without surfacing an error.

Pooled sessions (``pooled=True``, the URL's ``jobsync_pooler=transaction``).
Behind a transaction pooler (PgBouncer's ``pool_mode = transaction``) each
transaction may run on another server connection, so nothing may outlive a
transaction: no LISTEN (``listen`` does nothing; the backend polls instead),
no session settings (``lock_timeout`` and ``idle_in_transaction_session_timeout``
are set with ``set_config(..., true)`` at the start of every transaction), no
prepared statements (``prepare`` is ignored, psycopg's automatic preparation
is off).  A single statement travels as ``BEGIN; settings; statement;
COMMIT`` in one pipeline with one Sync: still one round trip, and one server
transaction, so the pooler hands the client one server connection for it.

Opening a connection (its options and settings, the backoff, pooler
detection): ``connect.py``.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import pq

from jobsync.backends.capabilities import Nudge
from jobsync.backends.postgres.connect import (
    LOCAL_SETTINGS,
    LOCK_TIMEOUT_MS,
    POOLER_HINT,
    Backoff,
    conninfo,
    open_connection,
    permanent_connect_failure,
    settings,
)
from jobsync.backends.postgres.notify import Conn, Cursor, Notifications
from jobsync.core.errors import BackendError, BackendUnavailable

__all__ = [
    "LOCK_TIMEOUT_MS",
    "POOLER_HINT",
    "Session",
    "conninfo",
    "permanent_connect_failure",
]
"""``Session``; and, for the importers of old, names that live in ``connect``."""


class Session(Notifications):
    """A connection that reconnects, counts round trips and (``Notifications``)
    waits for NOTIFY."""

    def __init__(
        self,
        conninfo: str,
        on_connect: Callable[[Session, Conn], None],
        lock_timeout_ms: int = LOCK_TIMEOUT_MS,
        *,
        pooled: bool = False,
    ) -> None:
        self._conninfo = conninfo
        self.lock_timeout_ms = lock_timeout_ms
        self.pooled = pooled
        """Behind a transaction pooler: no state outlives a transaction."""
        self.timeline: str | None = None
        """The server's WAL timeline when this session connected (None when pooled):
        a promotion starts a new one (``jobsync.core.continuity``)."""
        self._in_transaction = False
        # Weak, like the notify handler (notify.py): no reference cycle keeps an
        # abandoned handle (a crashed worker's) alive, and __del__ closes it.
        self._on_connect: Callable[[], Callable[[Session, Conn], None] | None] = (
            weakref.WeakMethod(on_connect) if inspect.ismethod(on_connect) else lambda: on_connect
        )
        self.lock = threading.Lock()
        """Held for every statement (or transaction) on the connection."""
        self._conn: Conn | None = None
        self._closed = False
        self.nudge = Nudge()
        """Cuts a wait or a pause short: ``interrupt`` and ``close`` set it."""
        self._backoff = Backoff()
        self._stats_lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self._prepared: set[bytes] = set()
        super().__init__()

    # -- statements (callers hold ``lock``) ------------------------------------
    def connection(self) -> Conn:
        """The live connection, reconnecting if allowed; BackendUnavailable if not."""
        if self._closed:
            raise BackendUnavailable("the PostgreSQL backend handle is closed")
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            self._drain(conn)
            if self._conn is not None:
                return self._conn
        self.drop()
        wait = self._backoff.remaining()
        if wait > 0:
            raise BackendUnavailable(f"PostgreSQL unreachable; next reconnect in {wait:.2f} s")
        try:
            conn = self._connect()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._backoff.failed()
            if permanent_connect_failure(exc):
                raise BackendError(
                    f"cannot connect to PostgreSQL, and retrying will not help: {exc}"
                ) from exc
            raise BackendUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        self._backoff.succeeded()
        return conn

    def execute(
        self, query: bytes, params: Any = None, *, prepare: bool = False, binary: bool = False
    ) -> Cursor:
        """Send one statement: one round trip.

        LISTENs queued by ``listen`` and the first preparation of a prepared
        statement travel in the same pipeline as the statement, so they cost
        no round trip of their own (libpq >= 14; without pipeline support
        each costs one).
        """
        conn = self._live()
        if self.pooled:
            return self._execute_pooled(conn, query, params, binary)
        needs_prepare = prepare and query not in self._prepared
        if needs_prepare or self._pending:
            if self._pipelines:
                # One Sync: the LISTENs share the statement's implicit
                # transaction, so they take effect when it commits, and
                # are queued again if it fails.
                self.count("round_trips")
                channels = list(self._pending)
                try:
                    with conn.pipeline():
                        self._send_listens(conn)
                        cur = conn.execute(query, params, prepare=prepare or None, binary=binary)
                except BaseException:
                    self._pending = [*channels, *(c for c in self._pending if c not in channels)]
                    raise
                self._prepared.add(query)
                return cur
            self._send_listens(conn)
            if needs_prepare:
                self.count("round_trips")  # Parse waits for its own reply outside a pipeline
            self._prepared.add(query)
        self.count("round_trips")
        return conn.execute(query, params, prepare=prepare or None, binary=binary)

    def _execute_pooled(self, conn: Conn, query: bytes, params: Any, binary: bool) -> Cursor:
        """One round trip that leaves nothing behind on the server connection.

        Inside ``transaction`` a statement goes as it is (the transaction's
        first pipeline set its settings); ``BEGIN`` carries the settings;
        any other statement is its own transaction with them.
        """
        self.count("round_trips")
        if self._in_transaction:
            return conn.execute(query, params, binary=binary)
        begin = query == b"BEGIN"
        try:
            with conn.pipeline():
                cur = conn.execute(b"BEGIN")
                conn.execute(LOCAL_SETTINGS, settings(self.lock_timeout_ms))
                if not begin:
                    cur = conn.execute(query, params, binary=binary)
                    conn.execute(b"COMMIT")
        except BaseException:
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                self._rollback()
            raise
        return cur

    def _live(self) -> Conn:
        """The connection a verb opened with ``connection()``; never a silent reconnect
        in the middle of a verb (its transaction would be lost)."""
        if self._conn is None:
            raise BackendUnavailable("the PostgreSQL connection was lost")
        return self._conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT on the (autocommit) connection; ROLLBACK on any error.

        Queued LISTENs go first, on their own: inside the transaction a
        rollback would undo them.
        """
        self.flush()
        self.execute(b"BEGIN")
        self._in_transaction = True
        try:
            try:
                yield
            except BaseException:
                self._rollback()
                raise
            self.execute(b"COMMIT")
        finally:
            self._in_transaction = False

    def _rollback(self) -> None:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            return
        try:
            self.count("round_trips")
            conn.execute(b"ROLLBACK")
        except psycopg.Error:
            self.drop()

    def drop(self) -> None:
        """Forget the connection (after it failed); the next call reconnects."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
            self._wake()

    def close(self) -> None:
        self.nudge.close()
        with self.lock:
            self._closed = True
            self.drop()
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def pause(self, seconds: float) -> None:
        """Sleep without the lock; ``interrupt`` and ``close`` cut it short."""
        self.nudge.sleep(seconds)

    def interrupt(self) -> None:
        """Make the running (or next) ``wait`` or ``pause`` return now."""
        self.nudge.set()
        self._wake()

    def count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def statistics(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self.stats)

    def _connect(self) -> Conn:
        conn, timeline = open_connection(
            self._conninfo,
            pooled=self.pooled,
            lock_timeout_ms=self.lock_timeout_ms,
            count=self.count,
        )
        self._prepared.clear()
        self._in_transaction = False
        self.timeline = timeline
        try:
            on_connect = self._on_connect()
            if on_connect is None:
                raise BackendUnavailable("the PostgreSQL backend handle is gone")
            on_connect(self, conn)
            self._listen_on(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._signal_every_channel()
        return conn

    def __del__(self) -> None:
        """An abandoned handle (never closed) closes its connection quietly."""
        conn = getattr(self, "_conn", None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        self._close_wake_pipe()
