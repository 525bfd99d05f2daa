"""A primary and a streaming replica from the local PostgreSQL binaries, for failover tests.

``ReplicatedPair(synchronous=...)`` starts a primary (``OwnedPgServer`` with
replication settings) and a hot standby made with ``pg_basebackup -R`` into a
temporary directory of its own, on free ports.  The standby reaches the
primary through a ``TcpProxy`` (``tests/integration/harness.py``), so a test
can cut replication off (``replication.partition("blackhole")``) to make an
asynchronous standby fall behind on purpose.  With ``synchronous=True`` the
primary's ``synchronous_standby_names`` names the standby, so every commit is
acknowledged only once the standby has flushed it.

``dsn`` is the multi-host DSN clients use (``target_session_attrs=read-write``:
libpq picks whichever of the two accepts writes).  ``kill_primary()`` is an
immediate shutdown; ``promote()`` promotes the standby and waits for it to
accept writes.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.harness import TcpProxy
from tests.support.pg import OwnedPgServer, free_port

STANDBY_NAME = "jobsync_standby"


class _Standby(OwnedPgServer):
    """An OwnedPgServer whose data directory is a base backup of ``primary``."""

    def __init__(self, primary: OwnedPgServer, source_port: int, settings: dict[str, str]):
        # The base class's setup without initdb: same user, layout and settings.
        self.bindir = primary.bindir
        self.port = free_port()
        self.settings = dict(settings)
        self._user = primary._user
        self.root = Path(tempfile.mkdtemp(prefix="jobsync-pg-standby-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.sockets.mkdir()
        self.log = self.root / "server.log"
        if self._user is not None:
            for path in (self.root, self.sockets):
                shutil.chown(path, user=self._user, group=self._user)
        self.running = False
        self._pg(
            "pg_basebackup", "-D", str(self.data), "-R", "-X", "stream", "-c", "fast",
            "-h", "127.0.0.1", "-p", str(source_port), "-U", "postgres", "--no-sync",
        )  # fmt: skip


class ReplicatedPair:
    """A primary, a standby streaming from it through a proxy, and a multi-host DSN."""

    def __init__(self, *, synchronous: bool, settings: dict[str, str] | None = None) -> None:
        common = {
            "wal_level": "replica",
            "max_wal_senders": "5",
            "hot_standby": "on",
            "wal_keep_size": "64MB",
            "track_commit_timestamp": "on",
            "max_connections": "300",
            **(settings or {}),
        }
        primary_settings = dict(common)
        if synchronous:
            primary_settings["synchronous_standby_names"] = f"'{STANDBY_NAME}'"
        self.synchronous = synchronous
        self.primary = OwnedPgServer(settings=primary_settings)
        self.standby: OwnedPgServer | None = None
        self.replication: TcpProxy | None = None
        try:
            self.primary.start()
            self.replication = TcpProxy("127.0.0.1", self.primary.port)
            standby_settings = {**common, "cluster_name": STANDBY_NAME}
            self.standby = _Standby(self.primary, self.replication.port, standby_settings)
            self.standby.start()
            self.wait_streaming()
        except BaseException:
            self.cleanup()
            raise

    @property
    def dsn(self) -> str:
        assert self.standby is not None
        return (
            f"host=127.0.0.1,127.0.0.1 port={self.primary.port},{self.standby.port} "
            "user=postgres dbname=postgres target_session_attrs=read-write"
        )

    def wait_streaming(self, timeout: float = 30.0) -> None:
        """Until the primary reports the standby streaming (and, if synchronous, as sync)."""
        import psycopg

        want = "sync" if self.synchronous else "async"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.Error):
                with psycopg.connect(self.primary.dsn, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT state, sync_state FROM pg_stat_replication "
                        "WHERE application_name = %s",
                        (STANDBY_NAME,),
                    ).fetchone()
                if row is not None and row[0] == "streaming" and row[1] == want:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the standby is not streaming ({want}) after {timeout:g} s")

    def replay_lag(self) -> tuple[Any, Any]:
        """(the primary's current WAL position, the standby's replayed position)."""
        import psycopg

        assert self.standby is not None
        with psycopg.connect(self.primary.dsn, autocommit=True) as conn:
            sent = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        with psycopg.connect(self.standby.dsn, autocommit=True) as conn:
            replayed = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
        return (sent[0] if sent else None, replayed[0] if replayed else None)

    def kill_primary(self) -> None:
        self.primary.kill()

    def promote(self, timeout: float = 60.0) -> None:
        """Promote the standby and wait until it accepts writes."""
        import psycopg

        assert self.standby is not None
        self.standby._pg("pg_ctl", "-D", str(self.standby.data), "-w", "-t", "60", "promote")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.Error):
                with psycopg.connect(self.standby.dsn, autocommit=True) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and row[0] is False:
                    return
            time.sleep(0.05)
        raise RuntimeError("the standby did not leave recovery after promotion")

    def cleanup(self) -> None:
        if self.standby is not None:
            self.standby.cleanup()
        if self.replication is not None:
            self.replication.close()
        self.primary.cleanup()

    def __enter__(self) -> ReplicatedPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
