"""Where the command line connects: ``--dsn`` or the library's own environment.

The URL is parsed by the library's one parser (``jobsync.backends.url``), its
errors speaking of a "DSN" as ``--dsn`` does.  The command line is an
observer: it reads and writes through the Backend protocol and never
registers a node.  Two things differ from a worker opening the same URL,
because an operator's typo must not create anything:

- a SQLite URL must name a jobsync database that exists: a missing file, or
  a file without jobsync's tables, is an error and stays untouched
  (``migrate`` creates the schema);
- a PostgreSQL handle does not apply migrations (``migrate`` does), so a
  wrong database name is an error instead of a fresh empty schema.

``memory://`` lives inside one process, so it is refused: the command line
could never see a worker's store.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from jobsync.backends.base import Backend
from jobsync.backends.url import BackendURL, open_parsed, parse_url
from jobsync.core.errors import InvalidArgument, SchemaError
from jobsync.runtime.config import Settings

CLIENT = "jobsync-cli"


def resolve_url(dsn: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``--dsn`` if given, else ``SYNC_SQL_URL``, else the ``SYNC_SQL_*`` parts."""
    if dsn:
        return dsn
    return Settings(environ).url


def parse_dsn(url: str) -> BackendURL:
    """``url`` taken apart by the library's parser; its errors name a DSN."""
    return parse_url(url, term="DSN")


def open_cli_backend(url: str, *, create: bool = False) -> Backend:
    """Open ``url`` for an operator command (see the module docstring)."""
    target = parse_dsn(url)
    if target.scheme == "memory":
        raise InvalidArgument(
            "memory:// lives inside one process: the command line cannot see a worker's "
            "store; use sqlite:///path or postgresql://..."
        )
    if target.scheme == "sqlite" and not create:
        _require_jobsync_file(target.path)
    return open_parsed(target, CLIENT, migrate=create)


def _require_jobsync_file(path: str) -> None:
    """A SQLite file that exists and holds jobsync's schema, read without writing."""
    if not os.path.exists(path):
        raise InvalidArgument(f"no SQLite database at {path!r} (check --dsn)")
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sync_schema'"
            ).fetchone()
    except sqlite3.Error as exc:
        raise SchemaError(f"cannot read {path!r} as a SQLite database: {exc}") from None
    if found is None:
        raise SchemaError(
            f"{path!r} is not a jobsync database (it has no jobsync tables) and was left "
            "untouched; check --dsn, or run `jobsync migrate` to add jobsync's tables to it"
        )


def one_line(text: object) -> str:
    """An error message on one line (driver messages span several)."""
    return " ".join(str(text).split())
