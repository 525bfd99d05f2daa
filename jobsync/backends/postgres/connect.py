"""Opening a session's PostgreSQL connection: its options and settings, when to
try again after a failure, which failures no retry will cure, and noticing a
connection pooler.

A session (``session.Session``) opens every connection with ``open_connection``
and asks ``Backoff`` whether it may try yet.

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

import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from jobsync.backends.postgres.notify import Conn

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

SESSION_SETTINGS = (
    b"SELECT set_config('idle_in_transaction_session_timeout', %s, false), "
    b"set_config('lock_timeout', %s, false), pg_backend_pid(), "
    b"CASE WHEN pg_is_in_recovery() THEN NULL "
    b"ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END"
)
"""A direct session's settings, once per connection; also the server's process id
(pooler detection) and WAL timeline (None on a standby)."""
LOCAL_SETTINGS = (
    b"SELECT set_config('idle_in_transaction_session_timeout', %s, true), "
    b"set_config('lock_timeout', %s, true)"
)
"""A pooled session's settings, at the start of every transaction."""


def conninfo(dsn: str, application_name: str, connect_timeout: float) -> str:
    """The DSN with our connection options: the DSN's own keepalive settings win;
    ``application_name`` and ``connect_timeout`` are the caller's."""
    params: dict[str, Any] = dict(KEEPALIVES)
    params.update(conninfo_to_dict(dsn))
    params["application_name"] = application_name
    params["connect_timeout"] = str(max(1, math.ceil(connect_timeout)))
    return make_conninfo("", **params)


def settings(lock_timeout_ms: int) -> tuple[str, str]:
    """The parameters of ``SESSION_SETTINGS`` and ``LOCAL_SETTINGS``."""
    return (str(IDLE_IN_TRANSACTION_TIMEOUT_MS), str(lock_timeout_ms))


def open_connection(
    conninfo: str, *, pooled: bool, lock_timeout_ms: int, count: Callable[[str], None]
) -> tuple[Conn, str | None]:
    """A new autocommit connection with the session's settings (a direct one's, in
    one round trip; a pooled one's travel with each transaction), and the server's
    WAL timeline (None when pooled or on a standby).

    ``count`` is told of the connect and of the round trip.
    """
    conn: Conn = psycopg.connect(conninfo, autocommit=True)
    # Only the hot single statements are prepared, explicitly, so that
    # ``round_trips`` counts exactly what goes over the wire; a pooled
    # session prepares nothing.
    conn.prepare_threshold = None if pooled else 2**31
    try:
        count("connects")
        if pooled:
            return conn, None
        count("round_trips")
        row = conn.execute(SESSION_SETTINGS, settings(lock_timeout_ms)).fetchone()
    except BaseException:
        conn.close()
        raise
    if row is None:
        return conn, None
    if row[2] != conn.info.backend_pid:
        count("pooler_suspected")
        _warn_pooler(conn, int(row[2]))
    return conn, row[3]


def _warn_pooler(conn: Conn, server_pid: int) -> None:
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


class Backoff:
    """When the next connection attempt may be made: at once after a success; after
    each failure, a delay that doubles up to ``BACKOFF_CAP``, with jitter."""

    def __init__(self) -> None:
        self._failures = 0
        self._retry_at = 0.0

    def remaining(self) -> float:
        """Seconds before an attempt is allowed (<= 0: now)."""
        return self._retry_at - time.monotonic()

    def failed(self) -> None:
        self._failures += 1
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay * random.uniform(0.5, 1.0)

    def succeeded(self) -> None:
        self._failures = 0
        self._retry_at = 0.0


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
