"""Fixtures for the fault tests: a PostgreSQL cluster of the test's own, and a Cluster on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.pg import OwnedPgServer
from tests.support.pgbouncer import pgbouncer_for
from tests.support.require import POSTGRES, unavailable

SERVER_SETTINGS = {
    # Commit times of the results rows: the checker orders accepted writes by them.
    "track_commit_timestamp": "on",
    # 20 workers x 3 connections (jobsync's, the user's, the log's) + the harness.
    "max_connections": "300",
}


@pytest.fixture
def fault_server(pg_server: str) -> Iterator[OwnedPgServer]:
    """A throwaway cluster this test may stop, restart or kill (see tests/support/pg.py)."""
    try:
        server = OwnedPgServer(settings=SERVER_SETTINGS)
    except RuntimeError as exc:
        unavailable(POSTGRES, str(exc))
        raise
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(params=["direct", "pgbouncer"])
def fault_pooler(request: pytest.FixtureRequest, fault_server: OwnedPgServer) -> Iterator[Any]:
    """None (workers connect directly), or a transaction-mode PgBouncer in front of
    ``fault_server`` that the workers' jobsync connections go through in pooled mode."""
    if request.param == "direct":
        yield None
        return
    with pgbouncer_for(fault_server.dsn, pool_size=10) as bouncer:
        yield bouncer
