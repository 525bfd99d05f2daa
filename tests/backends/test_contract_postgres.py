"""The shared Backend contract on PostgreSQL (the server's clock, which tests cannot set).

Each test gets its own schema (``pg_schema``); every ``connect`` is a new
``PostgresBackend`` (its own connection).  Contract tests that must stand
exactly on an instant skip themselves (``controls_clock`` is False); the
others wait out short leases by polling the server's clock.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobsync.backends.base import Backend
from jobsync.backends.postgres import PostgresBackend
from jobsync.testing.backend_contract import BackendContract, wait_by_polling

pytestmark = pytest.mark.postgres


class PostgresHarness:
    """One schema on one server; the clock is the server's."""

    controls_clock = False

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self._handles: list[PostgresBackend] = []

    def connect(self, client: str) -> Backend:
        handle = PostgresBackend(self.dsn, client=client, schema=self.schema)
        self._handles.append(handle)
        return handle

    def set_time(self, instant: float) -> None:
        raise AssertionError("the PostgreSQL clock cannot be set")

    def wait_until(self, instant: float) -> None:
        if not self._handles:
            self.connect("clock")
        wait_by_polling(self._handles[0], instant, step=0.005)

    def close(self) -> None:
        for handle in self._handles:
            handle.close()


@pytest.fixture
def harness(pg_dsn: str, pg_schema: str) -> Iterator[PostgresHarness]:
    made = PostgresHarness(pg_dsn, pg_schema)
    yield made
    made.close()


class TestPostgresContract(BackendContract):
    """Every contract test, unchanged, on PostgreSQL."""
