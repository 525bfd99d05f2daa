"""Open a backend from a URL: ``memory://NAME``, ``sqlite:///PATH``, ``postgresql://...``.

The one parser of backend URLs: workers (``open_backend``) and the command
line (``jobsync.cli.connect``) both take a URL apart with ``parse_url`` and
open it with ``open_parsed``, so one URL means one thing everywhere.

Nothing falls back to another backend on its own: an unknown scheme is an
error naming the URL (with any password in it replaced by ``***``: see
``redact``).  Implementations are imported only when opened, so ``psycopg``
is loaded only for PostgreSQL URLs.

- ``memory://NAME`` shares one in-process store per NAME (``memory://`` is
  the store named ``default``).
- ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (the
  SQLAlchemy convention: three slashes then the path).
- ``postgresql://`` or ``postgres://`` URLs go to psycopg unchanged, except
  the query parameters ``jobsync_schema`` and ``jobsync_prefix``, which pick
  the schema and table prefix, and ``jobsync_lock_timeout``, the longest any
  statement waits on a row lock in whole milliseconds (default 500);
  ``jobsync_pooler`` (``none``, the default, or ``transaction`` behind a
  transaction pooler such as PgBouncer's ``pool_mode = transaction``: no LISTEN,
  no session settings, no prepared statements), and ``jobsync_poll_interval``,
  how often a pooled handle reads a site's change signal while waiting, in
  whole milliseconds (default 1000).  They are removed before connecting.
"""

from __future__ import annotations

import difflib
import re
import threading
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import attrs

from jobsync.backends.base import Backend
from jobsync.core.errors import InvalidArgument, InvalidURL

_stores: dict[str, object] = {}
_stores_lock = threading.Lock()
_OPTIONS = (
    "jobsync_schema",
    "jobsync_prefix",
    "jobsync_lock_timeout",
    "jobsync_pooler",
    "jobsync_poll_interval",
)
POOLERS = ("none", "transaction")
"""``jobsync_pooler`` values (the PostgreSQL handle's ``pooler``)."""


@attrs.frozen(kw_only=True)
class BackendURL:
    """A backend URL taken apart by ``parse_url``; only its scheme's fields are set."""

    scheme: str
    """``memory``, ``sqlite`` or ``postgresql`` (a ``postgres://`` URL included)."""
    store: str = ""
    """memory: the store's name."""
    path: str = ""
    """sqlite: the database file, as written in the URL."""
    dsn: str = ""
    """postgresql: what psycopg connects to (the URL without jobsync's options)."""
    schema: str = "public"
    prefix: str = "sync_"
    lock_timeout: float | None = None
    """postgresql: seconds (``jobsync_lock_timeout``); None for the backend's default."""
    pooler: str = "none"
    """postgresql: ``none`` or ``transaction`` (``jobsync_pooler``)."""
    poll_interval: float | None = None
    """postgresql: seconds (``jobsync_poll_interval``); None for the backend's default."""


def parse_url(url: object, *, term: str = "backend URL") -> BackendURL:
    """Take a backend URL apart, or raise InvalidURL (a ConfigError and an
    InvalidArgument) naming it, redacted.  A PostgreSQL URL is also checked
    the way libpq will read it, so a bad one fails here and not at connect.

    ``term`` is what the caller's users call the URL in error messages (the
    command line's ``--dsn`` says "DSN").
    """
    if not isinstance(url, str) or "://" not in url:
        raise InvalidURL(
            f"a {term} must look like memory://NAME, sqlite:///path/to/file.db or "
            f"postgresql://user@host/db, got {redact(repr(url))}"
        )
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "memory":
        return BackendURL(scheme="memory", store=rest or "default")
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.lower().startswith("sqlite:///") else ""
        if not path:
            raise InvalidURL(
                f"a SQLite {term} needs a path (sqlite:///path/to/file.db), got {redact(repr(url))}"
            )
        return BackendURL(scheme="sqlite", path=path)
    if scheme in ("postgresql", "postgres"):
        dsn, options = _split_options(url, term)
        ms = options.get("lock_timeout")
        poll = options.get("poll_interval")
        return BackendURL(
            scheme="postgresql",
            dsn=dsn,
            schema=options.get("schema", "public"),
            prefix=options.get("prefix", "sync_"),
            lock_timeout=None if ms is None else _milliseconds("jobsync_lock_timeout", ms),
            pooler=pooler_mode("URL option jobsync_pooler", options.get("pooler", "none")),
            poll_interval=None if poll is None else _milliseconds("jobsync_poll_interval", poll),
        )
    raise InvalidURL(f"unknown {term} scheme {scheme!r} in {redact(repr(url))}")


def open_backend(url: str, client: str = "") -> Backend:
    """Open the backend a URL names, as one client (``client`` is the node name)."""
    return open_parsed(parse_url(url), client)


def open_parsed(target: BackendURL, client: str = "", *, migrate: bool = True) -> Backend:
    """Open a parsed URL as one client.  ``migrate=False``: a PostgreSQL handle does
    not create or upgrade its schema (SQLite always prepares its file on open)."""
    if target.scheme == "memory":
        from jobsync.backends.memory import MemoryStore

        store = memory_store(target.store)
        assert isinstance(store, MemoryStore)
        return store.connect(client or "client")
    if target.scheme == "sqlite":
        from jobsync.backends.sqlite import SQLiteBackend

        return SQLiteBackend(target.path, client=client)
    from jobsync.backends.postgres import PostgresBackend

    extra: dict[str, Any] = {}
    if target.lock_timeout is not None:
        extra["lock_timeout"] = target.lock_timeout
    if target.poll_interval is not None:
        extra["poll_interval"] = target.poll_interval
    return PostgresBackend(
        target.dsn,
        client=client,
        schema=target.schema,
        prefix=target.prefix,
        migrate=migrate,
        pooler=target.pooler,
        **extra,
    )


def same_database(a: str, b: str) -> bool:
    """True if two backend URLs name the same tables: for PostgreSQL the same
    connection parameters (port 5432 when unset), schema and prefix, whatever
    the spelling or jobsync's other options; otherwise the same parsed URL."""
    first, second = parse_url(a), parse_url(b)
    if first.scheme != "postgresql" or second.scheme != "postgresql":
        return first == second
    from psycopg.conninfo import conninfo_to_dict

    def place(target: BackendURL) -> tuple[dict[str, str], str, str]:
        params = {key: str(value) for key, value in conninfo_to_dict(target.dsn).items()}
        params.setdefault("port", "5432")
        return params, target.schema, target.prefix

    return place(first) == place(second)


def memory_store(name: str = "default") -> object:
    """The process-wide MemoryStore called ``name`` (created on first use)."""
    from jobsync.backends.memory import MemoryStore

    with _stores_lock:
        store = _stores.get(name)
        if store is None:
            store = _stores[name] = MemoryStore()
        return store


def redact(text: object) -> str:
    """``text`` with any password in it (URL or libpq ``password=``) replaced by ``***``."""
    out = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", str(text))
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", out)


def _split_options(url: str, term: str = "backend URL") -> tuple[str, dict[str, str]]:
    """A PostgreSQL URL without jobsync's query options, and those options (unprefixed)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidURL(f"not a valid {term}: {exc}: {redact(repr(url))}") from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    options: dict[str, str] = {}
    kept: list[tuple[str, str]] = []
    for key, value in query:
        if key in _OPTIONS:
            options[key.removeprefix("jobsync_")] = value
        elif key.lower().startswith("jobsync"):
            close = difflib.get_close_matches(key, _OPTIONS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InvalidURL(
                f"unknown jobsync option {key!r} in the {term}{hint}; "
                f"the options are {', '.join(_OPTIONS)}"
            )
        else:
            kept.append((key, value))
    # quote, not quote_plus: libpq does not decode "+" as a space.
    dsn = urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote)))
    if not parts.netloc and not dsn.startswith(f"{parts.scheme}://"):
        # urlunsplit drops an empty authority ("postgresql:///db?host=/run/pg"
        # would lose its "//"), which libpq then cannot parse.
        dsn = f"{parts.scheme}://" + dsn[len(parts.scheme) + 1 :]
    _check_libpq(dsn, term)
    return dsn, options


def _check_libpq(dsn: str, term: str) -> None:
    """Parse ``dsn`` as libpq will (a bad escape, an unknown query parameter)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        detail = " ".join(str(exc).split())
        raise InvalidURL(f"not a valid PostgreSQL {term}: {redact(detail)}") from None


def pooler_mode(what: str, value: str) -> str:
    """A pooler mode (case and surrounding blanks ignored), or InvalidArgument naming ``what``."""
    mode = value.strip().lower()
    if mode not in POOLERS:
        raise InvalidArgument(f"{what} must be one of {', '.join(POOLERS)}, got {value!r}")
    return mode


def _milliseconds(option: str, value: str) -> float:
    """A URL option of whole milliseconds (at least 1), as seconds."""
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 2**31 - 1:
        raise InvalidURL(
            f"URL option {option} must be a whole number of milliseconds between 1 and "
            f"{2**31 - 1}, got {value!r}"
        )
    return int(text) / 1000
