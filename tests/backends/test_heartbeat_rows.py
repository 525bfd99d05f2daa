"""A heartbeat stays O(1) in rows touched: on PostgreSQL, the HEARTBEAT statement's
plan (``EXPLAIN (ANALYZE, BUFFERS)``) returns the same few node rows at 5 nodes and at
60, unless the caller leads, when it reads them all (docs/PROTOCOL.md section 4,
"Noticing a death")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.heartbeat import SITE, explain_heartbeat
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
