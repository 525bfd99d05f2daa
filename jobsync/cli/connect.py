"""Where the command line connects: ``--dsn`` or the library's own environment.

The command line is an observer: it reads and writes through the Backend
protocol and never registers a node.  Two things differ from a worker
opening the same URL, because an operator's typo must not create anything:

- a SQLite URL must name a file that exists (``migrate`` creates it);
- a PostgreSQL handle does not apply migrations (``migrate`` does), so a
  wrong database name is an error instead of a fresh empty schema.

``memory://`` lives inside one process, so it is refused: the command line
could never see a worker's store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from jobsync.backends.base import Backend
from jobsync.backends.url import _split_options
from jobsync.core.errors import InvalidArgument
from jobsync.runtime.config import Settings

CLIENT = "jobsync-cli"


def resolve_url(dsn: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``--dsn`` if given, else ``SYNC_SQL_URL``, else the ``SYNC_SQL_*`` parts."""
    if dsn:
        return dsn
    return Settings(environ).url


def scheme_of(url: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise InvalidArgument(
            f"a DSN must look like sqlite:///path/to/file.db or postgresql://user@host/db, "
            f"got {redact(url)!r}"
        )
    return url.split("://", 1)[0].lower()


def sqlite_path(url: str) -> str:
    path = url[len("sqlite:///") :] if url.lower().startswith("sqlite:///") else ""
    if not path:
        raise InvalidArgument(f"a SQLite DSN needs a path (sqlite:///path/to/file.db), got {url!r}")
    return path


def open_cli_backend(url: str, *, create: bool = False) -> Backend:
    """Open ``url`` for an operator command (see the module docstring)."""
    scheme = scheme_of(url)
    if scheme == "sqlite":
        from jobsync.backends.sqlite import SQLiteBackend

        path = sqlite_path(url)
        if not create and not os.path.exists(path):
            raise InvalidArgument(f"no SQLite database at {path!r} (check --dsn)")
        return SQLiteBackend(path, client=CLIENT)
    if scheme in ("postgresql", "postgres"):
        from jobsync.backends.postgres import PostgresBackend

        dsn, options = _split_options(url)
        return PostgresBackend(
            dsn,
            client=CLIENT,
            schema=options.get("schema", "public"),
            prefix=options.get("prefix", "sync_"),
            migrate=create,
        )
    if scheme == "memory":
        raise InvalidArgument(
            "memory:// lives inside one process: the command line cannot see a worker's "
            "store; use sqlite:///path or postgresql://..."
        )
    raise InvalidArgument(f"unknown DSN scheme {scheme!r} in {redact(url)!r}")


def redact(text: object) -> str:
    """``text`` with any password in it (URL or libpq ``password=``) replaced by ``***``."""
    out = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", str(text))
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", out)


def one_line(text: object) -> str:
    """An error message on one line (driver messages span several)."""
    return " ".join(str(text).split())
