"""PostgreSQL for the test suite: find a server, or start a throwaway one.

A pytest plugin (listed in ``tests/conftest.py``).  Fixtures:

- ``pg_server`` (session): the DSN of a server the tests may use.  Where it
  comes from, in order:

  1. an explicit configuration: ``JOBSYNC_TEST_DSN``, else the libpq ``PG*``
     environment variables (``PGHOST``, ``PGPORT``, ``PGUSER``, ...);
  2. without one, ``127.0.0.1:5432`` as user ``postgres``;
  3. if that server does not answer, or answers but refuses the login, and
     PostgreSQL binaries are installed (``pg_config --bindir``, else
     ``/usr/lib/postgresql/*/bin``, else ``initdb`` on PATH): a throwaway
     cluster in a temporary directory (run as the ``postgres`` OS user when
     the tests run as root; unix socket plus a free loopback port), removed
     at the end of the session.

  An explicit configuration that does not answer goes straight to 3 (it is
  not silently replaced by whatever listens on 5432).  If no server can be
  had, tests marked ``postgres`` are skipped with the reason, or FAIL with it
  when ``JOBSYNC_REQUIRE_POSTGRES=1`` (CI).

- ``pg_dsn`` + ``pg_schema`` (function): the server's DSN and a fresh schema
  name for this test, dropped afterwards, so tests are independent.

- ``owned_pg_server`` (function): an ``OwnedPgServer``, a cluster this test
  owns and may ``stop()``, ``start()``, ``restart()`` or ``kill()`` (an
  immediate shutdown: crash recovery on the next start), always built from
  the local binaries.  ``OwnedPgServer`` also works on its own, as a context
  manager, for suites (fault injection) that need a server to break.

Every test marked ``postgres`` gets ``pg_server`` automatically, so the
skip/fail decision applies even to tests that use only ``owned_pg_server``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.require import POSTGRES, unavailable

DSN_ENV = "JOBSYNC_TEST_DSN"
DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
_PG_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE")


# -- binaries and throwaway clusters ------------------------------------------
def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl, or None if PostgreSQL is not installed."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnedPgServer:
    """A throwaway PostgreSQL cluster in a temporary directory, owned by its creator.

    ``start()``, ``stop()`` (fast shutdown), ``kill()`` (immediate shutdown:
    the next start runs crash recovery), ``restart()``; ``dsn`` stays the same
    across restarts (same port, same data).  ``cleanup()`` stops it and
    removes the directory.  Runs as the ``postgres`` OS user when the caller
    is root (PostgreSQL refuses to run as root).
    """

    def __init__(self, bindir: Path | None = None, *, settings: dict[str, str] | None = None):
        found = bindir or find_bindir()
        if found is None:
            raise RuntimeError("PostgreSQL binaries not found (pg_config --bindir, initdb)")
        self.bindir = found
        self.port = free_port()
        self.settings = {
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "listen_addresses": "127.0.0.1",
            **(settings or {}),
        }
        self._user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="jobsync-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.sockets.mkdir()
        self.log = self.root / "server.log"
        if self._user is not None:
            for path in (self.root, self.sockets):
                shutil.chown(path, user=self._user, group=self._user)
        self.running = False
        self._pg(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def start(self) -> None:
        options = " ".join(f"-c {key}={value}" for key, value in self.settings.items())
        options += f" -p {self.port} -k {self.sockets}"
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                 "-o", options, "start")  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
            self.running = False

    def kill(self) -> None:
        """Stop without a checkpoint, as a crash would (WAL replays on the next start)."""
        self.stop("immediate")

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> OwnedPgServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _pg(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs.update(user=self._user, group=self._user, extra_groups=[])
        done = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.root,
            **kwargs,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{log}".strip()
            )


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return "postgres"


# -- finding a server -----------------------------------------------------------
def probe(dsn: str) -> str | None:
    """None if ``dsn`` accepts our login, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return None


class ServerFinder:
    """Finds (once) a server for the session; owns the throwaway cluster if it started one."""

    def __init__(self) -> None:
        self.dsn: str | None = None
        self.reason = ""
        self.owned: OwnedPgServer | None = None

    def find(self) -> None:
        tried: list[str] = []
        explicit = os.environ.get(DSN_ENV)
        if explicit is None and any(os.environ.get(name) for name in _PG_ENV):
            explicit = ""  # libpq reads the PG* variables
        candidate = DEFAULT_DSN if explicit is None else explicit
        label = DSN_ENV if os.environ.get(DSN_ENV) is not None else "PG* environment"
        label = "127.0.0.1:5432" if explicit is None else label
        problem = probe(candidate)
        if problem is None:
            self.dsn = candidate
            return
        tried.append(f"{label}: {problem}")
        bindir = find_bindir()
        if bindir is None:
            tried.append("no PostgreSQL binaries for a throwaway cluster")
            self.reason = "no PostgreSQL server: " + "; ".join(tried)
            return
        try:
            server = OwnedPgServer(bindir)
            self.owned = server
            server.start()
        except Exception as exc:
            tried.append(f"throwaway cluster from {bindir}: {exc}")
            self.reason = "no PostgreSQL server: " + "; ".join(tried)
            return
        self.dsn = server.dsn

    def close(self) -> None:
        if self.owned is not None:
            self.owned.cleanup()
            self.owned = None


# -- fixtures and hooks -----------------------------------------------------------
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("postgres") is not None:
            names = getattr(item, "fixturenames", None)
            if isinstance(names, list) and "pg_server" not in names:
                names.insert(0, "pg_server")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    finder = ServerFinder()
    finder.find()
    try:
        if finder.dsn is None:
            unavailable(POSTGRES, finder.reason)
        assert finder.dsn is not None
        yield finder.dsn
    finally:
        finder.close()


@pytest.fixture
def pg_dsn(pg_server: str) -> str:
    return pg_server


@pytest.fixture
def pg_schema(pg_server: str) -> Iterator[str]:
    """A schema name of this test's own (created by whoever migrates into it), dropped after."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    drop_schema(pg_server, name)


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SET lock_timeout = '20s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def owned_pg_server(pg_server: str) -> Iterator[OwnedPgServer]:
    """A cluster of this test's own, started; stopped and removed afterwards."""
    try:
        server = OwnedPgServer()
    except RuntimeError as exc:
        unavailable(POSTGRES, str(exc))
        raise
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
