"""``job.connection``: a connection for the user's own queries, apart from coordination.

Law: the coordination thread never uses this connection, and this connection
never carries coordination, so a long query of the user's cannot delay a
heartbeat (on SQLite, a write transaction left open on it still holds the
file's one write lock: keep those short).  It is opened on first use, to the
database the Job's ``config`` names, and closed when the Job leaves; a
connection passed as ``db_connection=`` (the original jobsync's argument) is
handed back as it is and never closed by jobsync.

- PostgreSQL: a psycopg connection in autocommit mode (``with
  conn.transaction():`` for a transaction), ``application_name`` the node
  name followed by ``/queries``.
- SQLite: a ``sqlite3`` connection with Python's default transaction
  handling, usable from any thread (one at a time).
- ``memory://`` has no database to query: refused, naming it.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from jobsync.backends.base import Backend
from jobsync.backends.url import parse_url, redact
from jobsync.core.errors import BackendError, BackendUnavailable, InvalidArgument
from jobsync.runtime.config import Settings


class UserConnection:
    """The one user connection of a Job, opened on demand."""

    def __init__(self, name: str, source: Settings | str | Backend, given: object = None) -> None:
        if isinstance(given, (str, bytes)):
            raise InvalidArgument(
                "db_connection must be an open database connection (psycopg or sqlite3); "
                "pass a URL as the Job's config instead"
            )
        self._name = name
        self._source = source
        self._given = given
        self._opened: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        """The connection: the one given, else one opened now (once)."""
        if self._given is not None:
            return self._given
        with self._lock:
            if self._opened is None:
                self._opened = self._open()
            return self._opened

    def close(self) -> None:
        """Close the connection jobsync opened (a given one is the caller's)."""
        with self._lock:
            conn, self._opened = self._opened, None
        if conn is not None:
            conn.close()

    def _open(self) -> Any:
        source = self._source
        if isinstance(source, Backend):
            path = getattr(source, "path", None)
            if isinstance(path, str):  # a SQLite backend object
                return _sqlite(path)
            raise InvalidArgument(
                "job.connection needs the database's URL: this Job was given a backend "
                "object; pass a URL (or jobsync.config) as config, or db_connection="
            )
        url = source.url if isinstance(source, Settings) else source
        target = parse_url(url)
        if target.scheme == "sqlite":
            return _sqlite(target.path)
        if target.scheme == "postgresql":
            return _postgres(target.dsn, f"{self._name}/queries"[:63])
        raise InvalidArgument(
            f"job.connection: {redact(url)} has no database to query "
            "(memory:// lives in this process); use sqlite:/// or postgresql://"
        )


def _sqlite(path: str) -> sqlite3.Connection:
    try:
        return sqlite3.connect(path, check_same_thread=False)
    except sqlite3.Error as exc:
        raise BackendError(f"job.connection: cannot open SQLite {path!r}: {exc}") from exc


def _postgres(dsn: str, application_name: str) -> Any:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from jobsync.backends.postgres.session import permanent_connect_failure

    if "connect_timeout" not in conninfo_to_dict(dsn):
        dsn = make_conninfo(dsn, connect_timeout=5)
    try:
        return psycopg.connect(dsn, autocommit=True, application_name=application_name)
    except psycopg.Error as exc:
        kind = BackendError if permanent_connect_failure(exc) else BackendUnavailable
        raise kind(f"job.connection: cannot connect to PostgreSQL: {exc}") from exc
