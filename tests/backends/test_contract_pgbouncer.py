"""The shared Backend contract through PgBouncer in transaction pooling mode.

Every handle connects through a real PgBouncer (``tests/support/pgbouncer.py``,
a pool of a few server connections shared by every handle) with
``pooler="transaction"``: no LISTEN, no session settings, no prepared
statements, and ``wait_for_change`` polling the site's change signal.  The
contract is the same, unchanged.  ``test_the_pool_was_shared`` shows the
handles really did share a few server connections.  The rest checks the
setting's entry points (URL option, environment variable, bad values) and the
detection of a pooler by a handle that was not told.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg import errors as pg_errors

from jobsync.backends.base import Backend
from jobsync.backends.postgres import PostgresBackend
from jobsync.backends.postgres.handle import translate
from jobsync.backends.url import open_backend, parse_url
from jobsync.core.errors import ConfigError, InvalidArgument
from jobsync.runtime.config import Settings
from jobsync.testing.backend_contract import BackendContract
from tests.backends.test_contract_postgres import PostgresHarness
from tests.support.pgbouncer import POOL_SIZE, PgBouncer

pytestmark = pytest.mark.postgres


class PooledHarness(PostgresHarness):
    """One schema on one server, every handle through the pooler."""

    def __init__(self, bouncer: PgBouncer, schema: str) -> None:
        super().__init__(bouncer.dsn, schema)

    def connect(self, client: str) -> Backend:
        handle = PostgresBackend(
            self.dsn, client=client, schema=self.schema, pooler="transaction", poll_interval=0.02
        )
        self._handles.append(handle)
        return handle


@pytest.fixture
def harness(pgbouncer: PgBouncer, pg_schema: str) -> Iterator[PooledHarness]:
    made = PooledHarness(pgbouncer, pg_schema)
    yield made
    made.close()


class TestPgBouncerContract(BackendContract):
    """Every contract test, unchanged, through PgBouncer in transaction mode."""


def test_the_pool_was_shared(pgbouncer: PgBouncer, pg_schema: str) -> None:
    """More handles than server connections, all working: the pooler pooled."""
    handles = [
        PostgresBackend(pgbouncer.dsn, client=f"c{i}", schema=pg_schema, pooler="transaction")
        for i in range(POOL_SIZE + 5)
    ]
    try:
        for i, handle in enumerate(handles):
            handle.ensure_site("s", 16, "xxh3")
            handle.register("s", f"n{i}", 10.0)
        pools = [p for p in pgbouncer.show("POOLS") if p["database"] != "pgbouncer"]
        assert sum(p["cl_active"] + p["cl_waiting"] for p in pools) >= len(handles)
        assert 1 <= pgbouncer.server_connections() <= POOL_SIZE
    finally:
        for handle in handles:
            handle.close()


def test_a_handle_not_told_detects_the_pooler(
    pgbouncer: PgBouncer, pg_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    through = PostgresBackend(pgbouncer.dsn, client="through", schema=pg_schema)
    direct = PostgresBackend(pg_dsn, client="direct", schema=pg_schema)
    try:
        assert through.statistics().get("pooler_suspected") == 1
        assert direct.statistics().get("pooler_suspected", 0) == 0
    finally:
        through.close()
        direct.close()


def test_a_vanished_prepared_statement_names_the_setting() -> None:
    for exc in (pg_errors.InvalidSqlStatementName("gone"), pg_errors.DuplicatePreparedStatement()):
        assert "jobsync_pooler=transaction" in str(translate(exc, "claim"))


def test_the_url_option_and_the_environment_variable(pgbouncer: PgBouncer, pg_schema: str) -> None:
    target = parse_url(pgbouncer.url(jobsync_schema=pg_schema, jobsync_poll_interval="250"))
    assert (target.pooler, target.poll_interval) == ("transaction", 0.25)
    assert "jobsync_" not in target.dsn
    assert parse_url("postgresql://u@h/db").pooler == "none"
    handle = open_backend(pgbouncer.url(jobsync_schema=pg_schema), "via-url")
    try:
        assert isinstance(handle, PostgresBackend) and handle.pooler == "transaction"
        handle.ensure_site("s", 16, "xxh3")
        assert handle.wait_for_change("s", 0.0) is False
        assert handle.statistics().get("round_trips", 0) > 0
    finally:
        handle.close()
    env = {"SYNC_SQL_URL": "postgresql://u@h/db?x=1", "SYNC_SQL_POOLER": "Transaction"}
    assert Settings(env).url == "postgresql://u@h/db?x=1&jobsync_pooler=transaction"
    env = {"SYNC_SQL_HOST": "h", "SYNC_SQL_POOLER": "none"}
    assert Settings(env).url.endswith("/postgres?jobsync_pooler=none")
    env = {
        "SYNC_SQL_URL": "postgresql://h/db?jobsync_pooler=none",
        "SYNC_SQL_POOLER": "transaction",
    }
    assert Settings(env).url.endswith("?jobsync_pooler=none")  # the URL's own wins
    assert Settings({"SYNC_SQL_URL": "sqlite:///x.db", "SYNC_SQL_POOLER": "none"}).url == (
        "sqlite:///x.db"
    )


@pytest.mark.parametrize("value", ["session", "", "yes"])
def test_a_bad_pooler_value_is_named(value: str) -> None:
    with pytest.raises(InvalidArgument, match="jobsync_pooler"):
        parse_url(f"postgresql://u@h/db?jobsync_pooler={value}")
    with pytest.raises(ConfigError, match="SYNC_SQL_POOLER"):
        _ = Settings({"SYNC_SQL_POOLER": value}).url
    with pytest.raises(InvalidArgument, match="pooler"):
        PostgresBackend("host=127.0.0.1", pooler=value)


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "soon"])
def test_a_bad_poll_interval_is_named(value: str) -> None:
    with pytest.raises(InvalidArgument, match="jobsync_poll_interval"):
        parse_url(f"postgresql://u@h/db?jobsync_poll_interval={value}")


def test_pooled_handles_share_one_application_name(
    pgbouncer: PgBouncer, pg_dsn: str, pg_schema: str
) -> None:
    """PgBouncer sets a client's own application_name on each server connection it
    lends it (one more statement per transaction): pooled handles all name themselves
    ``jobsync`` unless given a name, so the server connections never need the SET."""
    import psycopg

    handles = [
        PostgresBackend(pgbouncer.dsn, client=f"w{i}", schema=pg_schema, pooler="transaction")
        for i in range(3)
    ]
    named = PostgresBackend(
        pgbouncer.dsn, client="x", schema=pg_schema, pooler="transaction", application_name="ops"
    )
    try:
        for i, handle in enumerate(handles):
            handle.ensure_site("s", 16, "xxh3")
            handle.register("s", f"w{i}", 10.0)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            names = {
                r[0]
                for r in conn.execute(
                    "SELECT application_name FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND (application_name LIKE 'w%%' OR application_name = 'jobsync')"
                )
            }
        assert names == {"jobsync"}
        named.ensure_site("s", 16, "xxh3")
        with named._session.lock:  # what the server was told by the pooler for this one
            row = named._session.connection().execute("SHOW application_name").fetchone()
        assert row is not None and row[0] == "ops"
    finally:
        for handle in (*handles, named):
            handle.close()
