"""Where the command line connects: ``--dsn`` or the library's own environment.

The URL is parsed by the library's one parser (``jobsync.backends.url``), its
errors speaking of a "DSN" as ``--dsn`` does.  The command line is an
observer: it reads and writes through the Backend protocol and never
registers a node.  Two things differ from a worker opening the same URL,
because an operator's typo must not create anything:

- a SQLite URL must name a file that exists (``migrate`` creates it);
- a PostgreSQL handle does not apply migrations (``migrate`` does), so a
  wrong database name is an error instead of a fresh empty schema.

``memory://`` lives inside one process, so it is refused: the command line
could never see a worker's store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from jobsync.backends.base import Backend
from jobsync.backends.url import BackendURL, open_parsed, parse_url
from jobsync.core.errors import InvalidArgument
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
    if target.scheme == "sqlite" and not create and not os.path.exists(target.path):
        raise InvalidArgument(f"no SQLite database at {target.path!r} (check --dsn)")
    return open_parsed(target, CLIENT, migrate=create)


def one_line(text: object) -> str:
    """An error message on one line (driver messages span several)."""
    return " ".join(str(text).split())
