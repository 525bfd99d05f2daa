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

Detecting a pooler.  A direct session's ``pg_backend_pid()`` is the process id
the server announced at connect (``conn.info.backend_pid``); a pooler answers
the client's startup itself, with an id of its own.  A session that is not
pooled compares the two in its first statement (no extra round trip): if they
differ, it counts ``pooler_suspected`` and logs (once per process and address)
what to set.
A session-mode pooler needs nothing; only a transaction pooler does, and the
wire does not say which, so the library warns rather than switches.  After
the fact, a prepared statement that vanished or already exists (SQLSTATE 26000,
42P05) is what a transaction pooler does to a session-mode client: the
backend's error names the setting (``handle.translate``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobsync.backends.capabilities import Nudge
from jobsync.backends.postgres.notify import Conn, Cursor, Notifications
from jobsync.core.errors import BackendError, BackendUnavailable

log = logging.getLogger("jobsync.postgres")

BACKOFF_BASE = 0.05
BACKOFF_CAP = 0.5
"""Short, so workers coming back from an outage reconnect within one settle window."""
IDLE_IN_TRANSACTION_TIMEOUT_MS = 10_000
"""A worker paused inside one of our transactions holds the site row lock; the
server ends such a session after this long, freeing the site for the others."""
LOCK_TIMEOUT_MS = 500
"""Default ``lock_timeout`` of jobsync's session: no statement waits on a row
lock longer than this (base.py, "Lock waits are bounded"); the server then
raises SQLSTATE 55P03, which the backend reports as LockTimeout.  Only
jobsync's own connection is set; a user's connection passed to
``complete_in``/``release_in`` keeps the user's settings."""
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
}
"""Defaults for a dead peer to be noticed within about 20 s, idle or not (a DSN's
own settings win)."""
POOLER_HINT = (
    "if it pools by transaction (PgBouncer pool_mode = transaction), add "
    "jobsync_pooler=transaction to the URL (or set SYNC_SQL_POOLER=transaction)"
)
_warned_pooler: set[str] = set()
"""Where a pooler was reported already (one warning per process and address)."""


def conninfo(dsn: str, application_name: str, connect_timeout: float) -> str:
    """The DSN with our connection options: the DSN's own keepalive settings win;
    ``application_name`` and ``connect_timeout`` are the caller's."""
    params: dict[str, Any] = dict(KEEPALIVES)
    params.update(conninfo_to_dict(dsn))
    params["application_name"] = application_name
    params["connect_timeout"] = str(max(1, math.ceil(connect_timeout)))
    return make_conninfo("", **params)


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
        # Weak, like the notify handler below: no reference cycle keeps an
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
        self._failures = 0
        self._retry_at = 0.0
        self._stats_lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self._channels: set[str] = set()
        self._prepared: set[bytes] = set()
        self._pending: list[str] = []
        """Channels to LISTEN on with the next statement."""
        self._pipelines = psycopg.Pipeline.is_supported()
        self._signal_lock = threading.Lock()
        self._signalled: set[str] = set()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

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
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            raise BackendUnavailable(f"PostgreSQL unreachable; next reconnect in {wait:.2f} s")
        try:
            conn = self._connect()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._failures += 1
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (self._failures - 1))
            self._retry_at = time.monotonic() + delay * random.uniform(0.5, 1.0)
            if permanent_connect_failure(exc):
                raise BackendError(
                    f"cannot connect to PostgreSQL, and retrying will not help: {exc}"
                ) from exc
            raise BackendUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        self._failures = 0
        self._retry_at = 0.0
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
                conn.execute(_LOCAL_SETTINGS, self._settings())
                if not begin:
                    cur = conn.execute(query, params, binary=binary)
                    conn.execute(b"COMMIT")
        except BaseException:
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                self._rollback()
            raise
        return cur

    def _settings(self) -> tuple[str, str]:
        return (str(IDLE_IN_TRANSACTION_TIMEOUT_MS), str(self.lock_timeout_ms))

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
        conn: Conn = psycopg.connect(self._conninfo, autocommit=True)
        # Only the hot single statements are prepared, explicitly, so that
        # ``round_trips`` counts exactly what goes over the wire; a pooled
        # session prepares nothing.
        conn.prepare_threshold = None if self.pooled else 2**31
        self._prepared.clear()
        self._in_transaction = False
        try:
            self.count("connects")
            if not self.pooled:
                self.count("round_trips")
                row = conn.execute(_SESSION_SETTINGS, self._settings()).fetchone()
                if row is not None and row[2] != conn.info.backend_pid:
                    self._suspect_pooler(conn, int(row[2]))
                self.timeline = None if row is None else row[3]
            on_connect = self._on_connect()
            if on_connect is None:
                raise BackendUnavailable("the PostgreSQL backend handle is gone")
            on_connect(self, conn)
            self._pending = sorted(self._channels)  # re-LISTEN with the next statement
            conn.add_notify_handler(_weak_handler(self))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        with self._signal_lock:  # whatever was sent while we were away is lost: say so
            self._signalled.update(self._channels)
        if self._channels:
            self._wake()
        return conn

    def _suspect_pooler(self, conn: Conn, server_pid: int) -> None:
        self.count("pooler_suspected")
        where = f"{conn.info.host}:{conn.info.port}"
        if where not in _warned_pooler:
            _warned_pooler.add(where)
            log.warning(
                "the PostgreSQL connection to %s goes through a connection pooler (the "
                "server process %d is not the process %d announced at connect); %s",
                where,
                server_pid,
                conn.info.backend_pid,
                POOLER_HINT,
            )

    def __del__(self) -> None:
        """An abandoned handle (never closed) closes its connection quietly."""
        conn = getattr(self, "_conn", None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        for fd in (getattr(self, "_wake_r", None), getattr(self, "_wake_w", None)):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


_SESSION_SETTINGS = (
    b"SELECT set_config('idle_in_transaction_session_timeout', %s, false), "
    b"set_config('lock_timeout', %s, false), pg_backend_pid(), "
    b"CASE WHEN pg_is_in_recovery() THEN NULL "
    b"ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END"
)
_LOCAL_SETTINGS = (
    b"SELECT set_config('idle_in_transaction_session_timeout', %s, true), "
    b"set_config('lock_timeout', %s, true)"
)


def _weak_handler(session: Session) -> Callable[[psycopg.Notify], None]:
    ref = weakref.ref(session)

    def handler(notify: psycopg.Notify) -> None:
        target = ref()
        if target is not None:
            target._on_notify(notify)

    return handler


_PERMANENT = (
    "authentication failed",  # password, ident, peer, ...
    "no pg_hba.conf entry",
    "no password supplied",
    "invalid port number",
    "invalid integer value",
)


def permanent_connect_failure(exc: Exception) -> bool:
    """A connection attempt the same settings will never turn into a success: the
    login or the database name is wrong (the server says so in its FATAL message,
    which carries no SQLSTATE to the client).  A refused port, a timeout or a host
    name that does not resolve stay transient: a database starting beside its
    workers looks exactly like that."""
    text = str(exc)
    if "FATAL" in text and "does not exist" in text:  # database "x" / role "x"
        return True
    return any(marker in text for marker in _PERMANENT)
