"""One SQLite handle: its connection, its transactions, and driver errors translated.

Every read-modify-write runs in ``BEGIN IMMEDIATE``.  SQLite admits one
writer at a time, so a transaction holding the write lock sees every row as
it will be at its commit, and its compare-and-set checks (generation,
leadership, per-row expectations, lease expiry) cannot be raced.  The clock
is read *after* the lock is taken: that reading is base.py's statement clock.
WAL mode lets reads (``read_cluster``, change polls) proceed while a writer
works.

Lock waits (base.py, "Lock waits are bounded").  SQLite's lock is the whole
database: while any write transaction is open, every other writer waits,
every worker's heartbeat included.  ``busy_timeout`` is this backend's lock
timeout and bounds each call's waiting *in all*: for the handle (another
thread's call on it may itself be waiting for the database) and then for
SQLite's write lock.  Past it the call raises ``LockTimeout`` having written
nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping

from jobsync.backends import _checks as C
from jobsync.backends.base import NodeRecord
from jobsync.backends.capabilities import Nudge
from jobsync.backends.sqlite import queries as Q
from jobsync.backends.sqlite import rows as R
from jobsync.backends.sqlite import schema
from jobsync.backends.sqlite.rows import Row
from jobsync.core.errors import (
    BackendError,
    BackendUnavailable,
    ConflictError,
    InvalidArgument,
    JobSyncError,
    LockTimeout,
    SchemaError,
)

MAX_POLL_INTERVAL = 0.2


class _Session:
    """The handle every verb mixin works through (see ``SQLiteBackend``'s docstring).

    One handle is one connection, thread-safe: calls are serialised on
    ``_lock``, held for a whole transaction.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        client: str = "",
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
        poll_interval: float = MAX_POLL_INTERVAL,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidArgument(f"path must be a str or os.PathLike, got {path!r}")
        if not isinstance(client, str):
            raise InvalidArgument(f"client must be a string, got {client!r}")
        if not callable(clock):
            raise InvalidArgument(f"clock must be callable, got {clock!r}")
        busy = C.seconds("busy_timeout", busy_timeout, allow_zero=True)
        if C.seconds("poll_interval", poll_interval) > MAX_POLL_INTERVAL:
            raise InvalidArgument(f"poll_interval must be at most 0.2 s, got {poll_interval!r}")
        self.path, self.client = os.fspath(path), client
        folder = os.path.dirname(os.path.abspath(self.path))
        if self.path != ":memory:" and not os.path.isdir(folder):  # permanent: no retry
            raise BackendError(f"SQLite: no folder {folder!r} for the database {self.path!r}")
        self._clock, self._poll_interval, self._busy = clock, float(poll_interval), busy
        self._lock = threading.RLock()  # the connection's; held for a whole transaction
        self._stats_lock = threading.Lock()  # the counters'; never held while waiting
        self._stats: Counter[str] = Counter(round_trips=0)
        self._seen: dict[str, int] = {}  # per site, the signal this handle was told of
        self._last_poll: dict[str, float] = {}  # per site, monotonic time of the last poll
        self._nudge = Nudge()  # cuts wait_for_change short (interrupt_wait, close)
        self._conn: sqlite3.Connection | None = None
        conn = None
        try:
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            schema.prepare(conn, busy_timeout)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, busy) from exc
            raise
        self._conn = conn

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r}, client={self.client!r})"

    @contextlib.contextmanager
    def _tx(self, verb: str | None, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction on the handle's connection; driver errors translated.

        Waits at most ``busy_timeout`` in all: first for the handle, then for
        the database (SQLite's busy timeout is shortened by the time already
        spent waiting for the handle, and restored after).
        """
        started = time.monotonic()
        if not self._lock.acquire(timeout=self._busy):
            raise LockTimeout(
                lock_message(f"SQLite: {self!r} stayed busy with another thread's call", self._busy)
            )
        try:
            if self._conn is None:
                raise BackendUnavailable(f"{self!r} is closed")
            conn = self._conn
            self._count("round_trips", verb)
            left = self._busy - (time.monotonic() - started)
            shortened = left < self._busy - 0.001
            try:
                if shortened:
                    schema.set_busy_timeout(conn, left)
                try:
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    try:
                        yield conn
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            with contextlib.suppress(sqlite3.Error):  # the first error propagates
                                conn.execute("ROLLBACK")
                        raise
                finally:
                    if shortened:
                        with contextlib.suppress(sqlite3.Error):  # shorter is still bounded
                            schema.set_busy_timeout(conn, self._busy)
            except sqlite3.Error as exc:
                raise translate(exc, self._busy) from exc
        finally:
            self._lock.release()

    def _count(self, *verbs: str | None) -> None:
        with self._stats_lock:
            self._stats.update(verb for verb in verbs if verb is not None)

    def _site(self, conn: sqlite3.Connection, site: str) -> Row:
        found: Row | None = conn.execute(Q.SELECT_SITE, (site,)).fetchone()
        if found is None:
            raise InvalidArgument(f"unknown site {site!r}: no worker of it has started yet")
        self._seen.setdefault(site, found[R.SIGNAL])
        return found

    @staticmethod
    def _nodes(conn: sqlite3.Connection, site: str) -> dict[str, NodeRecord]:
        return {row[0]: R.node(row) for row in conn.execute(Q.SELECT_NODES, (site,))}

    @staticmethod
    def _rows(conn: sqlite3.Connection, site: str, tokens: Iterable[int]) -> dict[int, Row]:
        found = conn.execute(Q.SELECT_SOME_TOKENS, (site, json.dumps(sorted(set(tokens)))))
        return {row[R.ID]: row for row in found}

    @staticmethod
    def _bury(conn: sqlite3.Connection, site: str, dead: Iterable[tuple[str, int]]) -> None:
        """Incarnations whose lease expired: mark their rows dead, release their claims."""
        for name, incarnation in dead:
            conn.execute(Q.MARK_DEAD, (site, name, incarnation))
            conn.execute(Q.RELEASE_CLAIMS, (site, incarnation))

    @staticmethod
    def _member(site: str, name: str, incarnation: int) -> None:
        C.site_name(site)
        C.node_name(name)
        C.incarnation(incarnation)

    def now(self) -> float:  # never waits for the handle: it touches no connection
        if self._conn is None:
            raise BackendUnavailable(f"{self!r} is closed")
        self._count("now")
        return float(self._clock())

    def statistics(self) -> Mapping[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def close(self) -> None:
        self._nudge.close()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def translate(exc: sqlite3.Error, busy_timeout: float, *, callers: bool = False) -> JobSyncError:
    """A driver error as a JobSyncError (see jobsync/core/errors.py); raise it ``from`` exc.

    ``callers``: the statement ran on the caller's connection, in its transaction.
    """
    text = f"SQLite: {exc}"
    if isinstance(exc, sqlite3.OperationalError):
        if "no such table" in str(exc) or "no such column" in str(exc):
            return SchemaError(text)
        if _is_busy(exc):
            return LockTimeout(lock_message(text, busy_timeout, callers=callers))
        return BackendUnavailable(text)  # I/O, cannot open
    if isinstance(exc, sqlite3.IntegrityError):
        return ConflictError(text)
    if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return BackendUnavailable(text)  # a closed connection and the like
    if isinstance(exc, sqlite3.DatabaseError):
        return SchemaError(text)  # not a database, malformed image
    return BackendUnavailable(text)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code): another connection held a lock."""
    name = getattr(exc, "sqlite_errorname", "")  # Python 3.11+
    if name:
        return bool(name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")))
    return "locked" in str(exc) or "busy" in str(exc)


def lock_message(what: str, busy_timeout: float, *, callers: bool = False) -> str:
    text = (
        f"{what} (jobsync waits at most busy_timeout={busy_timeout:g} s): a write transaction"
        " holds the database, perhaps the caller's own, left open after"
        " complete(connection=...) or release(connection=...); on SQLite such a transaction"
        " must be short, because while it is open it blocks every other writer, every"
        " worker's heartbeat included"
    )
    if callers:
        text += (
            "; or the caller's transaction began as a reader and another connection has"
            " written since, so it cannot become a writer: begin it with BEGIN IMMEDIATE"
        )
    return text
