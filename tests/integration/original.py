"""The original jobsync for the upgrade tests: its own virtual environment, scratch
databases, and its workers as real processes.

The original (PyPI ``jobsync`` 1.3.14, pinned with its dependencies in
``original-requirements.txt``) is installed from PyPI into a virtual
environment outside the repository, built once per machine under
``$JOBSYNC_ORIGINAL_CACHE`` (default ``~/.cache/jobsync-tests``): built in a
temporary folder and renamed into place, so two runs never see half of one.
The 1.1.1 wheel is downloaded beside it (its dependencies were never
published; only its schema code is run, by ``original_v1_1.py``).  Nothing of
the original is copied into the repository.

If PyPI cannot be reached the tests are skipped with the reason, or fail with
it under ``JOBSYNC_REQUIRE_ORIGINAL=1`` (CI).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.require import ORIGINAL, unavailable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
REQUIREMENTS = HERE / "original-requirements.txt"
VERSION = "1.3.14"
V1_1 = "1.1.1"


def _cache() -> Path:
    base = os.environ.get("JOBSYNC_ORIGINAL_CACHE") or Path.home() / ".cache" / "jobsync-tests"
    return Path(base)


def _unavailable(reason: str) -> NoReturn:
    unavailable(ORIGINAL, f"the original jobsync could not be installed from PyPI: {reason}")


def _pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "-q", "--disable-pip-version-check", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )


def environment() -> tuple[Path, Path]:
    """(the original 1.3.14's Python, the 1.1.1 wheel), built on first use."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    final = _cache() / f"original-{VERSION}-{digest}"
    python, wheel = final / "bin" / "python", final / f"jobsync-{V1_1}-py3-none-any.whl"
    if python.exists() and wheel.exists():
        return python, wheel
    final.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix="building-", dir=final.parent))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(build)], check=True, timeout=300)
        _pip(build / "bin" / "python", "install", "-r", str(REQUIREMENTS))
        _pip(
            build / "bin" / "python", "download", "--no-deps", f"jobsync=={V1_1}", "-d", str(build)
        )
        os.rename(build, final)  # scripts keep the old path in their #!; we use python -m
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(build, ignore_errors=True)
        if python.exists() and wheel.exists():  # another run won the race
            return python, wheel
        detail = getattr(exc, "stderr", "") or str(exc)
        _unavailable(" ".join(str(detail).split())[-300:])
    return python, wheel


@contextmanager
def scratch_database(server: str) -> Iterator[dict[str, str]]:
    """A fresh database on the test server, dropped afterwards: the original keeps
    its tables in ``public``, so each test gets a database of its own.  Yields
    libpq parameters (host, port, user, dbname)."""
    params = {k: str(v) for k, v in conninfo_to_dict(server).items()}
    name = f"upgrade_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield {**params, "dbname": name}
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def dsn(db: dict[str, str]) -> str:
    return make_conninfo(**db)


def url(db: dict[str, str], **options: str) -> str:
    """The database as a jobsync URL (``options``: ``jobsync_prefix=...``)."""
    host = db.get("host", "127.0.0.1")
    query = "&".join(f"{k}={v}" for k, v in options.items())
    if host.startswith("/"):
        query = f"host={host}" + (f"&{query}" if query else "")
        host = ""
    port = db.get("port", "5432")
    base = f"postgresql://{db.get('user', 'postgres')}@{host}:{port}/{db['dbname']}"
    return base + (f"?{query}" if query else "")


def prepare_items(db: dict[str, str], count: int) -> None:
    """``items`` (the work) and ``processed`` (who did each; no key, so a second
    processing of an item shows as a second row)."""
    with psycopg.connect(dsn(db), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS items (id integer PRIMARY KEY)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS processed (item integer NOT NULL, worker text NOT NULL,"
            " fleet text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        add_items(conn, 1, count)


def add_items(conn: psycopg.Connection[tuple[object, ...]], first: int, last: int) -> None:
    conn.execute(
        "INSERT INTO items SELECT generate_series(%s::int, %s::int) ON CONFLICT DO NOTHING",
        (first, last),
    )


def original_worker(
    python: Path, db: dict[str, str], name: str, *args: str, log: Path
) -> subprocess.Popen[str]:
    """Start a worker of the original (``original_worker.py``) in its own Python."""
    command = [str(python), str(HERE / "original_worker.py"), "--dbname", db["dbname"]]
    command += ["--host", db.get("host", "127.0.0.1"), "--port", db.get("port", "5432")]
    command += ["--user", db.get("user", "postgres"), "--name", name, *args]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("SYNC_")}
    return _start(command, log, env, HERE)


def new_worker(
    db: dict[str, str], name: str, site: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start a worker of this library (``upgrade_worker.py``) in the suite's Python."""
    command = [sys.executable, str(HERE / "upgrade_worker.py"), "--url", url(db)]
    command += ["--name", name, "--site", site]
    return _start(command, log, {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, ROOT)


def _start(command: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    with log.open("w") as out:  # the child keeps its own copy of the file
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd
        )


def wait_for(condition: object, timeout: float, what: str, poll: float = 0.05) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` after ``timeout`` seconds."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def log_says(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text(errors="replace")
