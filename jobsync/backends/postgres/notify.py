"""LISTEN/NOTIFY on a session's one connection, and how a waiter wakes.

Why one connection (base.py allows two): the coordination thread and the
user's thread both run short statements, serialised by ``lock``; a user's call
can delay a heartbeat by at most one short statement (the user's verbs are
single statements).  Waiting for a notification does *not* hold the lock: the
waiter ``select()``s on the connection's socket and on a self-pipe, and takes
the lock only to drain input that arrived (microseconds).  Notifications that
arrive while another thread runs a statement are dispatched by psycopg to
``_on_notify``, which records the channel and writes to the self-pipe, so the
waiter wakes either way.  A second connection used only for LISTEN would
double the server's connection count for no gain in latency.

``Notifications`` is the part of ``session.Session`` that LISTENs and waits:
the channels, the signals recorded by the notify handler and the self-pipe.
It uses the session's lock, connection and counters (declared below).  After
a reconnect every channel is re-LISTENed (with the next statement) and
signalled, since notifications may have been lost meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq, sql

from jobsync.backends.capabilities import Nudge

Conn = psycopg.Connection[tuple[Any, ...]]
Cursor = psycopg.Cursor[tuple[Any, ...]]


class Notifications:
    """Channels, signals and the wait of one session (mixed into ``Session``)."""

    lock: threading.Lock
    nudge: Nudge
    pooled: bool
    _conn: Conn | None
    _closed: bool

    def __init__(self) -> None:
        self._channels: set[str] = set()
        self._pending: list[str] = []
        """Channels to LISTEN on with the next statement."""
        self._pipelines = psycopg.Pipeline.is_supported()
        self._signal_lock = threading.Lock()
        self._signalled: set[str] = set()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def connection(self) -> Conn:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError

    def count(self, key: str) -> None:
        raise NotImplementedError

    def _live(self) -> Conn:
        raise NotImplementedError

    def listen(self, channel: str) -> None:
        """LISTEN on ``channel`` from the next statement on, also after reconnects
        (never in a pooled session: the caller polls)."""
        if not self.pooled and channel not in self._channels:
            self._channels.add(channel)
            self._pending.append(channel)

    def listening(self, channel: str) -> bool:
        return channel in self._channels and channel not in self._pending

    def flush(self) -> None:
        """Send queued LISTENs now (one round trip), e.g. before waiting."""
        if self._pending:
            conn = self._live()
            self.count("round_trips")
            if self._pipelines:
                with conn.pipeline():
                    self._send_listens(conn)
            else:
                self._send_listens(conn, count=True)

    def _send_listens(self, conn: Conn, *, count: bool = False) -> None:
        while self._pending:
            if count:
                self.count("round_trips")
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._pending[0])))
            self._pending.pop(0)

    def _listen_on(self, conn: Conn) -> None:
        """A new connection: every channel is LISTENed again with its next statement,
        and its notifications come to ``_on_notify``."""
        self._pending = sorted(self._channels)
        conn.add_notify_handler(_weak_handler(self))

    def _signal_every_channel(self) -> None:
        """After a reconnect: whatever was sent while we were away is lost, so say so."""
        with self._signal_lock:
            self._signalled.update(self._channels)
        if self._channels:
            self._wake()

    # -- notifications ---------------------------------------------------------
    def wait(self, channel: str, timeout: float) -> bool:
        """True once ``channel`` was signalled since the last True; False after ``timeout``
        or at once when interrupted (``interrupt``).

        Call without holding ``lock``; the channel must be LISTENed already.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._take(channel):
                return True
            if self.nudge.take():  # interrupted: the caller has a local request
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._last_look(channel)
            conn = self._conn
            if conn is None:
                with self.lock:
                    self.connection()  # reconnects (signalling every channel) or raises
                    self.flush()
                continue
            fd = self._fileno(conn)
            watched = [self._wake_r] if fd is None else [self._wake_r, fd]
            try:
                ready, _, _ = select.select(watched, [], [], remaining)
            except (OSError, ValueError):  # the socket closed under us: look again
                ready = []
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            if fd is not None and fd in ready and self.lock.acquire(timeout=remaining):
                try:
                    if self._conn is conn and not self._closed:
                        self._drain(conn)
                finally:
                    self.lock.release()

    def _last_look(self, channel: str) -> bool:
        """Before answering False: read whatever already reached the socket."""
        if self.lock.acquire(blocking=False):
            try:
                conn = self._conn
                if conn is not None and not self._closed:
                    self._drain(conn)
            finally:
                self.lock.release()
        return self._take(channel)

    def _take(self, channel: str) -> bool:
        with self._signal_lock:
            if channel in self._signalled:
                self._signalled.discard(channel)
                return True
            return False

    def _on_notify(self, notify: psycopg.Notify) -> None:
        with self._signal_lock:
            self._signalled.add(notify.channel)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _close_wake_pipe(self) -> None:
        """Close the self-pipe (from ``__del__``: perhaps never opened)."""
        for fd in (getattr(self, "_wake_r", None), getattr(self, "_wake_w", None)):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _drain(self, conn: Conn) -> None:
        """Read whatever an idle connection has received: notifications, or the news
        that the server ended the session (then the connection is dropped)."""
        fd = self._fileno(conn)
        if fd is None:
            self.drop()
            return
        try:
            ready, _, _ = select.select([fd], [], [], 0)
        except (OSError, ValueError):
            self.drop()
            return
        pgconn = conn.pgconn
        if ready:
            try:
                pgconn.consume_input()
            except psycopg.Error:
                self.drop()
                return
        while (notify := pgconn.notifies()) is not None:  # also any already buffered
            handler = pgconn.notify_handler
            if handler is not None:
                handler(notify)
        if pgconn.status != pq.ConnStatus.OK:
            self.drop()

    @staticmethod
    def _fileno(conn: Conn) -> int | None:
        try:
            return conn.fileno()
        except psycopg.Error:
            return None


def _weak_handler(session: Notifications) -> Callable[[psycopg.Notify], None]:
    """The notify handler of ``session``'s connection; weak, so that no reference
    cycle keeps an abandoned session alive."""
    ref = weakref.ref(session)

    def handler(notify: psycopg.Notify) -> None:
        target = ref()
        if target is not None:
            target._on_notify(notify)

    return handler
