"""The dashboard's server: one shared poll of the database, any number of viewers.

Law: the database sees one reader per server, whatever the number of pages
open.  A ``Poller`` thread owns the server's only backend handle.  It waits
on the site's change signal (``wait_for_change``: LISTEN/NOTIFY on
PostgreSQL, a one-row poll on SQLite) for at most ``poll_interval``, then
reads the site's counters (``site_info``, one row) and re-reads the whole
site (``read_cluster`` and the history) only when they moved, when the rows
would read differently on their own (``snapshot.next_deadline``: a lease
ending, since a death bumps no counter), or when the cached document is
``max_age`` old (so the ages shown stay true).  Each re-read becomes a new
version of one cached JSON document.  The tokens measured hot come from the
history: a leader balancing measured load records its hot list in the
history entry of every plan that moves tokens, so the newest entry that
records one is the list as of the latest such plan (``cli.report.hot_tokens``;
a change that moves nothing shows at the next plan that does).

Viewers never reach the database: ``GET /api/state`` answers from the cache,
and ``GET /api/state?after=V`` is a long poll that returns as soon as a
version newer than ``V`` exists (or after ``wait`` seconds with the current
one).  A change reaches every open page within the poll interval plus one
round trip.

Read-only by construction: the handler answers GET and HEAD only, and the
backend handle is used for reads.  Bound to 127.0.0.1 unless told
otherwise; while bound to a loopback address it refuses requests whose
``Host`` is not a loopback name, so a web page elsewhere cannot read the
cluster through a rebound DNS name.  Every asset (``static/``) ships in the
package and is read once at start: no CDN, works offline.

Why the standard library (``http.server``): the server answers a handful of
GETs from a cache; a framework would add a dependency and nothing the page
needs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jobsync.backends.base import Backend
from jobsync.cli.report import Json, hot_tokens
from jobsync.core.errors import InvalidArgument, JobSyncError
from jobsync.dashboard import snapshot
from jobsync.http_reply import GetHandler

log = logging.getLogger("jobsync.dashboard")

POLL_INTERVAL = 0.5
"""Seconds the poller waits on the change signal before reading the counters."""
MAX_AGE = 5.0
"""Seconds after which the cached document is re-read even if nothing changed."""
HISTORY = 50
"""Rebalances in the timeline."""
LONG_POLL_MAX = 30.0
RETRY = 1.0
"""Seconds between attempts while the database is unreachable."""

ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
REFUSAL_HEADERS = {**SECURITY_HEADERS, "Allow": "GET, HEAD"}
"""A refused method's headers: the security headers and the methods allowed."""


class SnapshotCache:
    """The latest document, its version, and the viewers waiting for a newer one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 0
        self._body = b""
        self._document: Json = {}
        self._closed = False

    @property
    def version(self) -> int:
        with self._cond:
            return self._version

    def publish(self, document: Json) -> int:
        """Store a new version of the document; wake every waiting viewer."""
        with self._cond:
            self._version += 1
            document = dict(document, version=self._version)
            self._document = document
            self._body = json.dumps(document, separators=(",", ":"), default=str).encode()
            self._cond.notify_all()
            return self._version

    def failed(self, message: str) -> int:
        """The database could not be read: the last document again, marked stale."""
        with self._cond:
            document = dict(self._document)
        return self.publish(dict(document, error=message, stale=True))

    def document(self) -> Json:
        with self._cond:
            return self._document

    def wait(self, after: int | None, timeout: float) -> tuple[int, bytes]:
        """The current (version, body) once the version exceeds ``after`` or time runs out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (
                not self._closed
                and (self._version == 0 or (after is not None and self._version <= after))
                and (left := deadline - time.monotonic()) > 0
            ):
                self._cond.wait(left)
            return self._version, self._body

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Poller:
    """The one thread that reads the database (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        site: str,
        cache: SnapshotCache,
        *,
        poll_interval: float = POLL_INTERVAL,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend, self.site, self.cache = backend, site, cache
        self.poll_interval, self.max_age, self.clock = poll_interval, max_age, clock
        self.reads = 0
        """Full re-reads of the site so far (each one a new version)."""
        self._stop = threading.Event()
        self._key: tuple[int, int, int] | None = None
        self._deadline: float | None = None
        self._read_at = -float("inf")
        self._thread = threading.Thread(target=self._run, name="jobsync-dashboard", daemon=True)

    def start(self) -> None:
        self.refresh()  # the first document before any viewer arrives (raises if unreadable)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.poll_interval + 5.0)

    def refresh(self) -> None:
        """Re-read the whole site and publish it."""
        view = self.backend.read_cluster(self.site)
        history = self.backend.read_history(self.site, limit=HISTORY)
        document = snapshot.build(view, history, hot=hot_tokens(history))
        site = view.site
        self._key = (site.generation, site.change_counter, site.plan_basis)
        deadline = document["next_deadline"]
        self._deadline = float(deadline) if isinstance(deadline, (int, float)) else None
        self._read_at = self.clock()
        self.reads += 1
        self.cache.publish(document)

    def step(self) -> bool:
        """One poll: wait for a change, read the counters, re-read if due; True if it did."""
        self.backend.wait_for_change(self.site, self.poll_interval)
        info = self.backend.site_info(self.site)
        if info is None:
            raise InvalidArgument(f"site {self.site!r} no longer exists")
        key = (info.generation, info.change_counter, info.plan_basis)
        due = key != self._key or self.clock() - self._read_at >= self.max_age
        if not due and self._deadline is not None:
            due = self.backend.now() >= self._deadline
        if due:
            self.refresh()
        return due

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                if failing:
                    self.refresh()
                    failing = False
                self.step()
            except JobSyncError as exc:
                if not failing:
                    log.warning("dashboard: cannot read site %s: %s", self.site, exc)
                failing = True
                self.cache.failed(" ".join(str(exc).split()))
                self._stop.wait(RETRY)


class Dashboard:
    """A running dashboard: the poller and the HTTP server, started together."""

    def __init__(
        self,
        backend: Backend,
        site: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        poll_interval: float = POLL_INTERVAL,
        max_age: float = MAX_AGE,
    ) -> None:
        self.cache = SnapshotCache()
        self.poller = Poller(
            backend, site, self.cache, poll_interval=poll_interval, max_age=max_age
        )
        assets = _load_assets()
        loopback = host in LOOPBACK_HOSTS or host.startswith("127.")
        handler = _handler(self.cache, assets, loopback)
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise InvalidArgument(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="jobsync-dashboard-http", daemon=True
        )

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}/"

    def start(self) -> Dashboard:
        try:
            self.poller.start()
        except BaseException:
            self.httpd.server_close()
            raise
        self._thread.start()
        return self

    def wait(self) -> None:
        """Serve until interrupted (KeyboardInterrupt) or stopped from another thread."""
        while self._thread.is_alive():
            self._thread.join(1.0)

    def stop(self) -> None:
        self.poller.stop()
        self.cache.close()
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _load_assets() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("jobsync.dashboard") / "static"
    return {path: ((folder / name).read_bytes(), kind) for path, (name, kind) in ASSETS.items()}


def _handler(
    cache: SnapshotCache, assets: dict[str, tuple[bytes, str]], loopback: bool
) -> type[BaseHTTPRequestHandler]:
    class Handler(GetHandler):
        server_version = "jobsync-dashboard"
        protocol_version = "HTTP/1.1"

        def answer(self, send_body: bool) -> None:
            if loopback and not _loopback_host(self.headers.get("Host", "")):
                self._send(HTTPStatus.MISDIRECTED_REQUEST, b"not a loopback host\n", "text/plain")
                return
            url = urlsplit(self.path)
            if url.path == "/api/state":
                self._state(url.query, send_body)
            elif url.path in assets:
                body, kind = assets[url.path]
                self._send(HTTPStatus.OK, body, kind, send_body)
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", send_body)

        def _state(self, query: str, send_body: bool) -> None:
            params = parse_qs(query)
            try:
                after = int(params["after"][0]) if "after" in params else None
                wait = min(float(params.get("wait", ["25"])[0]), LONG_POLL_MAX)
            except ValueError:
                self._send(HTTPStatus.BAD_REQUEST, b"bad after or wait\n", "text/plain")
                return
            _, body = cache.wait(after, max(wait, 0.0) if after is not None else 5.0)
            self._send(HTTPStatus.OK, body, "application/json", send_body)

        def _refuse(self) -> None:
            self.reply(
                HTTPStatus.METHOD_NOT_ALLOWED, b"read-only\n", "text/plain", True, REFUSAL_HEADERS
            )

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

        def _send(self, status: HTTPStatus, body: bytes, kind: str, send_body: bool = True) -> None:
            self.reply(status, body, kind, send_body, SECURITY_HEADERS)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("dashboard: " + format, *args)

    return Handler


def _loopback_host(header: str) -> bool:
    host = header.strip()
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host in LOOPBACK_HOSTS or host.startswith("127.")
