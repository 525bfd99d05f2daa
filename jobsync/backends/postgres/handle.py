"""The base every part of ``PostgresBackend`` shares: one client's handle.

A ``_Handle`` owns the ``Session`` (session.py: one connection shared by the
coordination thread and the user's thread under a statement lock), renders
the statements once the schema is known (``queries.render``), and runs every
verb's body under the statement lock (``_call``), turning driver errors into
``JobSyncError`` values (``translate``).  ``_lock_site`` and ``_bump`` are
the first and the last step of every writer of a site's tokens or counters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from jobsync.backends import _checks as checks
from jobsync.backends.postgres import original, queries
from jobsync.backends.postgres import schema as S
from jobsync.backends.postgres.notify import Conn
from jobsync.backends.postgres.session import LOCK_TIMEOUT_MS, POOLER_HINT, Session, conninfo
from jobsync.backends.url import POOLERS
from jobsync.core.errors import (
    BackendError,
    BackendUnavailable,
    InvalidArgument,
    JobSyncError,
    LockTimeout,
    SchemaError,
)

_T = TypeVar("_T")
Row = tuple[Any, ...]
Queries = dict[str, bytes]
_SCHEMA_ERRORS = (
    pg_errors.UndefinedTable,
    pg_errors.UndefinedColumn,
    pg_errors.UndefinedFunction,
    pg_errors.InvalidSchemaName,
)
_PREPARED_ERRORS = (pg_errors.InvalidSqlStatementName, pg_errors.DuplicatePreparedStatement)
"""What a transaction pooler does to prepared statements of a session-mode client."""
DEFAULT_POLL_INTERVAL = 1.0
"""Seconds between two reads of a site's change signal by a pooled handle waiting
for a change (``wait_for_change``), across calls."""


def translate(exc: psycopg.Error, verb: str | None = None) -> JobSyncError:
    if isinstance(exc, pg_errors.LockNotAvailable):  # 55P03, before its OperationalError base
        return LockTimeout(
            f"{verb or 'a jobsync statement'}: a row it needs is locked by another transaction "
            "(perhaps the caller's own, opened for complete_in(connection, ...) or "
            f"release_in(connection, ...)) past the lock timeout; nothing was written: {exc}"
        )
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return BackendUnavailable(f"PostgreSQL unavailable: {exc}")
    if isinstance(exc, _PREPARED_ERRORS):
        return BackendError(
            f"PostgreSQL error {exc.sqlstate}: {exc}; a prepared statement vanished or "
            f"already exists, as happens behind a transaction pooler: {POOLER_HINT}"
        )
    if isinstance(exc, _SCHEMA_ERRORS):
        return SchemaError(f"jobsync schema missing or damaged: {exc}")
    return BackendError(f"PostgreSQL error {exc.sqlstate or ''}: {exc}".replace("  ", " "))


def connection_info(dsn: str, application_name: str, connect_timeout: float) -> str:
    """``session.conninfo``; a DSN libpq cannot parse is a bad argument."""
    try:
        return conninfo(dsn, application_name, connect_timeout)
    except psycopg.ProgrammingError as exc:
        raise InvalidArgument(f"not a valid PostgreSQL connection string: {exc}") from exc


def _lock_timeout_ms(value: object) -> int:
    """``lock_timeout`` in seconds as PostgreSQL's whole milliseconds (>= 1; 0 would
    mean "wait forever", which is exactly what the setting exists to prevent)."""
    seconds = checks.seconds("lock_timeout", value)
    ms = round(seconds * 1000)
    if not 1 <= ms <= 2**31 - 1:
        raise InvalidArgument(
            f"lock_timeout must be between 0.001 and {(2**31 - 1) / 1000:g} seconds, got {value!r}"
        )
    return ms


def unknown_site(site: str) -> InvalidArgument:
    return InvalidArgument(f"unknown site {site!r}: no worker of it has started yet")


class _Handle:
    """One client's handle on a PostgreSQL database: its session and plumbing."""

    def __init__(
        self,
        dsn: str,
        *,
        client: str = "",
        schema: str = "public",
        prefix: str = "sync_",
        connect_timeout: float = 5,
        application_name: str | None = None,
        migrate: bool = True,
        lock_timeout: float = LOCK_TIMEOUT_MS / 1000,
        pooler: str = "none",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        """``lock_timeout``: seconds any statement of this handle may wait on a row
        lock before the verb raises LockTimeout (PostgreSQL's ``lock_timeout``,
        whole milliseconds, at least one).  ``pooler``: ``"transaction"`` behind a
        transaction pooler (no session state; ``wait_for_change`` polls the site's
        change signal every ``poll_interval`` seconds instead of LISTENing), else
        ``"none"``."""
        if not isinstance(dsn, str):
            raise InvalidArgument(f"dsn must be a string, got {dsn!r}")
        if not isinstance(client, str):
            raise InvalidArgument(f"client must be a string, got {client!r}")
        self.client = client
        self.schema = S.validate_schema_name(schema)
        self.prefix = S.validate_prefix(prefix)
        timeout = checks.seconds("connect_timeout", connect_timeout)
        self.lock_timeout_ms = _lock_timeout_ms(lock_timeout)
        if application_name is not None and not isinstance(application_name, str):
            raise InvalidArgument(f"application_name must be a string, got {application_name!r}")
        if pooler not in POOLERS:
            raise InvalidArgument(f"pooler must be one of {', '.join(POOLERS)}, got {pooler!r}")
        # Behind a transaction pooler every handle names itself alike unless told
        # otherwise: PgBouncer sets a client's own application_name on each server
        # connection it lends it, one more statement per transaction (at 1,000
        # workers, half the server's transactions).
        own = "jobsync" if pooler == "transaction" else (client or "jobsync")
        app = application_name if application_name is not None else own
        self.pooler = pooler
        self.poll_interval = checks.seconds("poll_interval", poll_interval)
        self._signals: dict[str, str] = {}
        self._polled: dict[str, float] = {}
        self._migrate = bool(migrate)
        self._schema_ready = False
        self._q: Queries = {}
        self._channels: dict[str, str] = {}
        self._session = Session(
            connection_info(dsn, app[:63], timeout),
            self._on_connect,
            self.lock_timeout_ms,
            pooled=pooler == "transaction",
        )
        with self._session.lock:
            try:
                self._session.connection()
            except psycopg.Error as exc:
                raise translate(exc) from exc

    def __repr__(self) -> str:
        return f"<PostgresBackend client={self.client!r} schema={self.schema!r}>"

    def _on_connect(self, session: Session, conn: Conn) -> None:
        def count() -> None:
            session.count("round_trips")

        if not self._schema_ready:
            if self._migrate:
                S.apply_migrations(conn, self.schema, self.prefix, count, original.take_over)
            else:
                original.refuse(conn, self.schema, self.prefix)
                S.check_version(conn, self.schema, self.prefix, count)
            self._q = queries.render(conn, self.schema, self.prefix)
            self._schema_ready = True

    def _channel(self, site: str) -> str:
        channel = self._channels.get(site)
        if channel is None:
            channel = self._channels[site] = S.channel_name(self.schema, self.prefix, site)
        return channel

    def _call(
        self,
        verb: str,
        site: str | None,
        body: Callable[[Session, Queries], _T],
        *,
        count: bool = True,
    ) -> _T:
        """Run ``body`` under the statement lock; driver errors become JobSyncErrors.

        ``verb`` is counted in statistics unless ``count`` is False (the later
        steps of one verb), and named in errors.
        """
        session = self._session
        if count:
            session.count(verb)
        with session.lock:
            try:
                session.connection()
                if site is not None:
                    session.listen(self._channel(site))
                return body(session, self._q)
            except psycopg.Error as exc:
                conn = session._conn
                if conn is not None and (conn.closed or conn.broken):
                    session.drop()
                raise translate(exc, verb) from exc

    def _lock_site(self, s: Session, q: Queries, site: str) -> Row:
        """Lock the site row (first, always); (total, generation, counter, basis)."""
        row = s.execute(q["LOCK_SITE"], {"site": site}).fetchone()
        if row is None:
            raise unknown_site(site)
        return row

    def _bump(self, s: Session, q: Queries, site: str, why: str) -> int:
        params = {"site": site, "channel": self._channel(site), "payload": why}
        row = s.execute(q["BUMP"], params).fetchone()
        assert row is not None
        return int(row[0])

    def _member(self, site: str, name: str, incarnation: int) -> tuple[str, str, int]:
        return checks.site_name(site), checks.node_name(name), checks.incarnation(incarnation)

    def timeline(self) -> str | None:
        """The WAL timeline of the server this handle last connected to (None behind a
        transaction pooler): the runtime's continuity check (``core/continuity.py``)."""
        return self._session.timeline

    def statistics(self) -> Mapping[str, int]:
        return self._session.statistics()

    def close(self) -> None:
        self._session.close()
