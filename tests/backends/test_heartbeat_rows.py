"""A node's steady reads stay O(1) in rows touched.  On PostgreSQL, the HEARTBEAT
statement's plan (``EXPLAIN (ANALYZE, BUFFERS)``) returns the same few node rows at 5
nodes and at 60, unless the caller leads, when it reads them all (docs/PROTOCOL.md
section 4, "Noticing a death"); a non-leader's read after a change (GLANCE: its own
row and the leader's) returns two node rows at 600 nodes, and READ_OWNED
returns the caller's token rows, not the site's 10,000."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from benchmarks.heartbeat import SITE, explain, explain_heartbeat
from jobsync.backends.base import DirectAssign, PlanCommit
from jobsync.backends.postgres import PostgresBackend

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(pg_dsn: str, pg_schema: str) -> Iterator[PostgresBackend]:
    handle = PostgresBackend(pg_dsn, client="rows", schema=pg_schema)
    handle.ensure_site(SITE, 16, "md5")
    yield handle
    handle.close()


def _grow(db: PostgresBackend, size: int) -> list[tuple[str, int]]:
    now = len(db.read_nodes(SITE)[1])
    for i in range(now, size):
        db.register(SITE, f"n{i:03d}", 3600.0)
    return [(n.name, n.incarnation) for n in db.read_nodes(SITE)[1]]


def test_an_ordinary_heartbeat_reads_the_same_rows_at_any_size(db: PostgresBackend) -> None:
    rows = {}
    for size in (5, 60):
        nodes = _grow(db, size)
        name, inc = nodes[-1]
        ordinary = explain_heartbeat(db, name, inc, leading=False)[1]
        watching = explain_heartbeat(db, name, inc, leading=False, watch=nodes[0][0])[1]
        leading = explain_heartbeat(db, nodes[0][0], nodes[0][1], leading=True)[1]
        rows[size] = (ordinary, watching, leading)
    assert rows[5][0] == rows[60][0] <= 1  # its own row
    assert rows[5][1] == rows[60][1] <= 2  # and the watched one
    assert rows[60][2] >= 60 > rows[5][2]  # the leader reads every row


def _analyze(pg_dsn: str, pg_schema: str) -> None:
    """Table statistics, as autovacuum keeps them on a live database (a fresh table's
    missing statistics make the planner guess a handful of rows and sort them)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'ANALYZE "{pg_schema}".sync_node, "{pg_schema}".sync_token')


def test_a_glance_reads_two_node_rows_at_any_size(
    db: PostgresBackend, pg_dsn: str, pg_schema: str
) -> None:
    rows = {}
    for size in (10, 600):
        nodes = _grow(db, size)
        _analyze(pg_dsn, pg_schema)
        glance = explain(db, "GLANCE", {"site": SITE, "name": nodes[size // 2][0]}, "node")[1]
        every = explain(db, "READ_NODES", {"site": SITE}, "node")[1]
        rows[size] = (glance, every)
    # At 600 rows: the leader by the seniority index, and its own row by key.  (At 10,
    # one page, the planner may rightly prefer to read the page whole.)
    assert rows[600][0] == 2 and rows[10][0] <= 11
    assert rows[600][1] == 600  # what every node read before


def test_read_owned_reads_the_callers_tokens_only(pg_dsn: str, pg_schema: str) -> None:
    db = PostgresBackend(pg_dsn, client="owned", schema=pg_schema)
    try:
        db.ensure_site("owned", 10_000, "md5")
        regs = [db.register("owned", f"n{i}", 3600.0) for i in range(100)]
        view = db.read_cluster("owned")
        assigns = tuple(
            DirectAssign(
                token=t,
                expected_incarnation=None,
                expected_epoch=view.tokens.epoch[t],
                owner=f"n{t % 100}",
                incarnation=regs[t % 100].incarnation,
            )
            for t in range(10_000)
        )
        db.commit_plan(
            "owned",
            PlanCommit(
                leader="n0",
                leader_incarnation=regs[0].incarnation,
                expected_generation=view.site.generation,
                basis=view.site.change_counter,
                assigns=assigns,
            ),
        )
        _analyze(pg_dsn, pg_schema)
        params = {"site": "owned", "name": "n7", "inc": regs[7].incarnation}
        touched = explain(db, "READ_OWNED", params, "token")[1]
        owned = db.read_owned("owned", "n7", regs[7].incarnation)
        assert len(owned.tokens) == 100 and owned.incoming == 0
        assert touched == 100  # its own rows, by the owner index (was all 10,000)
    finally:
        db.close()
