"""Schema version 4 (a completion's explicit cost, a plan's hot tokens): a version 3
database upgrades in place, its rows read as they were, and the new columns work.

The version 3 database is built with the schema modules' own statements up to
version 3, and filled with plain SQL as a version 3 library would have left it.
"""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from jobsync.backends.base import ClaimRequest, DirectAssign, HistoryEntry, PlanCommit
from jobsync.backends.postgres import PostgresBackend, migrate
from jobsync.backends.postgres import schema as schema_module
from jobsync.backends.sqlite import SQLiteBackend
from jobsync.backends.sqlite import schema as sqlite_schema
from tests.backends.test_postgres import migrate_to, old_site_rows

SITE = "s"
DAY = datetime.date(2024, 5, 6)


def _check_and_use(db: SQLiteBackend | PostgresBackend) -> None:
    """The version 3 rows read as they were (no cost, no hot list); then claim,
    complete with a cost and plan with hot tokens on the upgraded database."""
    (old,) = db.read_completions(SITE, 0.0, 10)
    assert (old.token, old.claimed_at, old.completed_at, old.cost) == (0, 1.0, 2.0, None)
    (record,) = db.read_history(SITE)
    assert (record.entry.trigger, record.entry.hot) == ("start", None)
    reg = db.register(SITE, "new", 60.0)
    view = db.read_cluster(SITE)
    leader = db.register(SITE, "new", 60.0, known=reg.incarnation)  # a fresh incarnation
    assigns = tuple(
        DirectAssign(
            token=t,
            expected_incarnation=view.tokens.incarnation[t],
            expected_epoch=view.tokens.epoch[t],
            owner="new",
            incarnation=leader.incarnation,
        )
        for t in range(4)
        if view.tokens.owner[t] is None
    )
    entry = HistoryEntry(
        trigger="join", nodes_before=(), nodes_after=("new",), moved=len(assigns), unowned=0,
        duration_ms=1.0, hot=(2,),
    )  # fmt: skip
    view = db.read_cluster(SITE)
    db.commit_plan(
        SITE,
        PlanCommit(
            leader="new",
            leader_incarnation=leader.incarnation,
            expected_generation=view.site.generation,
            basis=view.site.change_counter,
            assigns=assigns,
            history=entry,
        ),
    )
    epoch = db.read_cluster(SITE).tokens.epoch[3]
    request = ClaimRequest(task_key="fresh", token=3, epoch=epoch)
    assert db.claim(SITE, DAY, "new", leader.incarnation, [request]) == {"fresh"}
    assert db.complete(SITE, DAY, leader.incarnation, ["fresh"], cost=4.0) == {"fresh"}
    assert [c.cost for c in db.read_completions(SITE, 0.0, 10)] == [None, 4.0]
    assert [r.entry.hot for r in db.read_history(SITE)] == [(2,), None]


# -- SQLite ------------------------------------------------------------------------------


def _sqlite_v3(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for statement in sqlite_schema.DDL:
            conn.execute(statement)
        for version in (2, 3):
            for statement in sqlite_schema.MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute("INSERT INTO sync_schema VALUES (3)")
        conn.execute(
            "INSERT INTO sync_site (site, total_tokens, hash_function, change_counter,"
            " created_at, signal, incarnation_seq, generation) VALUES ('s', 4, 'xxh3', 2, 0, 2,"
            " 7, 1)"
        )
        conn.executemany(
            "INSERT INTO sync_token (site, token_id, epoch) VALUES ('s', ?, 1)",
            [(t,) for t in range(4)],
        )
        conn.execute(
            "INSERT INTO sync_audit VALUES ('s', ?, 'old', 'gone', 7, 0, 1, 'done', 1.0, 2.0)",
            (DAY.isoformat(),),
        )
        conn.execute(
            "INSERT INTO sync_history (site, generation, leader, at, trigger, nodes_before,"
            " nodes_after, moved, unowned, duration_ms)"
            " VALUES ('s', 1, 'gone', 1.0, 'start', '[]', '[\"gone\"]', 4, 0, 1.0)"
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_a_version_3_sqlite_file_upgrades_in_place(tmp_path: Path) -> None:
    assert sqlite_schema.SCHEMA_VERSION == 4
    path = tmp_path / "v3.db"
    _sqlite_v3(path)
    db = SQLiteBackend(path)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT version FROM sync_schema").fetchall() == [(4,)]
        _check_and_use(db)
    finally:
        db.close()


# -- PostgreSQL --------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_version_3_postgres_schema_upgrades_in_place(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate_to(3, pg_dsn, pg_schema, monkeypatch)
    with psycopg.connect(pg_dsn) as conn:  # a version-3 deployment's rows
        table = old_site_rows(conn, pg_schema, SITE)
        done = "VALUES (%s, %s, 'old', 'gone', 7, 0, 1, 'done', to_timestamp(1), to_timestamp(2))"
        plan = "VALUES (%s, 0, 'gone', to_timestamp(1), 'start', '{{}}', '{{gone}}', 4, 0, 1.0)"
        for name, values, params in (("audit", done, (SITE, DAY)), ("rebalance", plan, (SITE,))):
            conn.execute(sql.SQL("INSERT INTO {} " + values).format(table(name)), params)
    upgraded = migrate(pg_dsn, schema=pg_schema)
    assert upgraded == {"from": 3, "to": schema_module.SCHEMA_VERSION} and upgraded["to"] >= 4
    db = PostgresBackend(pg_dsn, schema=pg_schema, migrate=False)
    try:
        _check_and_use(db)
    finally:
        db.close()
