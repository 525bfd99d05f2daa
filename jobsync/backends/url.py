"""Open a backend from a URL: ``memory://NAME``, ``sqlite:///PATH``, ``postgresql://...``.

Nothing falls back to another backend on its own: an unknown scheme is an
error naming the URL.  Implementations are imported only when opened, so
``psycopg`` is loaded only for PostgreSQL URLs.

- ``memory://NAME`` shares one in-process store per NAME (``memory://`` is
  the store named ``default``).
- ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (the
  SQLAlchemy convention: three slashes then the path).
- ``postgresql://`` or ``postgres://`` URLs go to psycopg unchanged, except
  the query parameters ``jobsync_schema`` and ``jobsync_prefix``, which pick
  the schema and table prefix, and ``jobsync_lock_timeout``, the longest any
  statement waits on a row lock in whole milliseconds (default 500); they are
  removed before connecting.
"""

from __future__ import annotations

import threading
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from jobsync.backends.base import Backend
from jobsync.core.errors import InvalidArgument

_stores: dict[str, object] = {}
_stores_lock = threading.Lock()


def memory_store(name: str = "default") -> object:
    """The process-wide MemoryStore called ``name`` (created on first use)."""
    from jobsync.backends.memory import MemoryStore

    with _stores_lock:
        store = _stores.get(name)
        if store is None:
            store = _stores[name] = MemoryStore()
        return store


def open_backend(url: str, client: str = "") -> Backend:
    """Open the backend a URL names, as one client (``client`` is the node name)."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidArgument(
            f"backend URL must look like memory://, sqlite:///path or postgresql://..., got {url!r}"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from jobsync.backends.memory import MemoryStore

        store = memory_store(url.split("://", 1)[1] or "default")
        assert isinstance(store, MemoryStore)
        return store.connect(client or "client")
    if scheme == "sqlite":
        from jobsync.backends.sqlite import SQLiteBackend

        path = url[len("sqlite:///") :] if url.lower().startswith("sqlite:///") else ""
        if not path:
            raise InvalidArgument(
                f"SQLite URL needs a path (sqlite:///path/to/file.db), got {url!r}"
            )
        return SQLiteBackend(path, client=client)
    if scheme in ("postgresql", "postgres"):
        from jobsync.backends.postgres import PostgresBackend

        dsn, options = _split_options(url)
        from jobsync.backends.postgres.session import LOCK_TIMEOUT_MS

        ms = options.get("lock_timeout")
        return PostgresBackend(
            dsn,
            client=client,
            schema=options.get("schema", "public"),
            prefix=options.get("prefix", "sync_"),
            lock_timeout=(
                LOCK_TIMEOUT_MS / 1000 if ms is None else _milliseconds("jobsync_lock_timeout", ms)
            ),
        )
    raise InvalidArgument(f"unknown backend URL scheme {scheme!r} in {url!r}")


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options: dict[str, str] = {}
    kept: list[tuple[str, str]] = []
    for key, value in query:
        if key in ("jobsync_schema", "jobsync_prefix", "jobsync_lock_timeout"):
            options[key.removeprefix("jobsync_")] = value
        else:
            kept.append((key, value))
    # quote, not quote_plus: libpq does not decode "+" as a space.
    dsn = urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote)))
    if not parts.netloc and not dsn.startswith(f"{parts.scheme}://"):
        # urlunsplit drops an empty authority ("postgresql:///db?host=/run/pg"
        # would lose its "//"), which libpq then cannot parse.
        dsn = f"{parts.scheme}://" + dsn[len(parts.scheme) + 1 :]
    return dsn, options


def _milliseconds(option: str, value: str) -> float:
    """A URL option of whole milliseconds (at least 1), as seconds."""
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 2**31 - 1:
        raise InvalidArgument(
            f"URL option {option} must be a whole number of milliseconds between 1 and "
            f"{2**31 - 1}, got {value!r}"
        )
    return int(text) / 1000
