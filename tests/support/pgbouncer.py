"""PgBouncer for the test suite: a throwaway pooler in front of a test server.

A pytest plugin (listed in ``tests/conftest.py``).  ``PgBouncer`` writes a
configuration into a temporary directory (trust authentication, a free
loopback port, no unix socket) and runs Debian's ``pgbouncer`` in front of
one PostgreSQL server, by default in transaction pooling mode: every
transaction may run on another server connection, which is exactly what
jobsync's pooled mode (``jobsync_pooler=transaction``) must survive.  As root
it runs as the ``postgres`` OS user (PgBouncer refuses to run as root).

Fixtures:

- ``pgbouncer`` (session): a transaction-mode PgBouncer in front of
  ``pg_server``, with a server pool of ``POOL_SIZE`` connections.

Without the binary, tests using it are skipped with the reason, or FAIL with
it when ``JOBSYNC_REQUIRE_PGBOUNCER=1`` (CI installs the package).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.pg import _run_as, free_port
from tests.support.require import PGBOUNCER, unavailable

POOL_SIZE = 10


def find_pgbouncer() -> str | None:
    """The pgbouncer executable, or None."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").is_file() else None


def _dsn_parts(dsn: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in dsn.split())


class PgBouncer:
    """A PgBouncer process in front of ``server_dsn`` (a ``key=value`` DSN).

    ``dsn`` is how clients reach the server through it (same user and
    database).  ``server_connections()`` asks the admin console how many
    server connections it holds.  ``close()`` stops it and removes its files.
    """

    def __init__(
        self,
        server_dsn: str,
        *,
        pool_mode: str = "transaction",
        pool_size: int = POOL_SIZE,
        max_client_conn: int = 2000,
    ) -> None:
        binary = find_pgbouncer()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (Debian package pgbouncer)")
        parts = _dsn_parts(server_dsn)
        self.user = parts.get("user", "postgres")
        self.dbname = parts.get("dbname", "postgres")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="jobsync-pgbouncer-"))
        self.log = self.root / "pgbouncer.log"
        ini = self.root / "pgbouncer.ini"
        (self.root / "userlist.txt").write_text(f'"{self.user}" ""\n')
        target = f"host={parts.get('host', '127.0.0.1')} port={parts.get('port', '5432')}"
        ini.write_text(
            "[databases]\n"
            f"* = {target}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.root / 'userlist.txt'}\n"
            f"admin_users = {self.user}\n"
            f"pool_mode = {pool_mode}\n"
            f"default_pool_size = {pool_size}\n"
            f"max_client_conn = {max_client_conn}\n"
            "max_db_connections = 0\n"
            "server_login_retry = 1\n"
            "ignore_startup_parameters = extra_float_digits\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
            f"logfile = {self.log}\n"
            f"pidfile = {self.root / 'pgbouncer.pid'}\n"
        )
        user = _run_as()
        kwargs: dict[str, Any] = {}
        if user is not None:
            for path in (self.root, *self.root.iterdir()):
                shutil.chown(path, user=user, group=user)
            kwargs.update(user=user, group=user, extra_groups=[])
        self._proc = subprocess.Popen(
            [binary, str(ini)],
            # Not a pipe: PgBouncer also logs to stderr, and a pipe nobody reads
            # fills up and stops it.  The log file has everything.
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
            **kwargs,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={self.dbname}"

    def url(self, **options: str) -> str:
        """A jobsync URL through the pooler, in pooled mode, with extra query options."""
        query = "&".join(
            f"{k}={v}" for k, v in {"jobsync_pooler": "transaction", **options}.items()
        )
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}?{query}"

    def _wait_ready(self, timeout: float = 15.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        problem = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                problem = str(exc).strip()
                time.sleep(0.05)
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise RuntimeError(f"pgbouncer did not start: {problem}\n{log}".strip())

    def show(self, what: str) -> list[dict[str, Any]]:
        """A ``SHOW`` of the admin console, as dicts (``SHOW POOLS``, ``SHOW SERVERS``)."""
        import psycopg

        admin = f"host=127.0.0.1 port={self.port} user={self.user} dbname=pgbouncer"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.prepare_threshold = None
            cur = conn.execute(f"SHOW {what}")
            names = [col.name for col in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def server_connections(self) -> int:
        """Server connections PgBouncer holds now (active, idle, used, tested or logging in)."""
        return len(self.show("SERVERS"))

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # immediate shutdown
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def pgbouncer_for(server_dsn: str, **kwargs: Any) -> Iterator[PgBouncer]:
    """A PgBouncer in front of ``server_dsn``; skips (or fails in CI) without the binary."""
    if find_pgbouncer() is None:
        unavailable(PGBOUNCER, "pgbouncer is not installed (apt-get install pgbouncer)")
    with PgBouncer(server_dsn, **kwargs) as bouncer:
        yield bouncer


@pytest.fixture(scope="session")
def pgbouncer(pg_server: str) -> Iterator[PgBouncer]:
    """A transaction-mode PgBouncer in front of the test server, for the session."""
    with pgbouncer_for(pg_server) as bouncer:
        yield bouncer
