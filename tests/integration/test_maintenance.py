"""Planned maintenance with real worker processes on SQLite and PostgreSQL.

Three workers (``tests/integration/worker.py``) at 1 s / 3 s timings run
tasks while an operator drains one (``jobsync.runtime.maintenance.drain_node``
on the workers' own URL, as ``jobsync drain`` does): within about a second the
drained worker holds and claims nothing while it stays alive, the other two
cover every token; undraining gives it its share back in exactly the lower
bound of moves.  The ownership logs prove no instant of two claimers
(``History.overlaps``) and every task done once.  States are awaited with
deadlines; the wall time is not asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobsync.core.planner import lower_bound_moves
from jobsync.runtime.maintenance import drain_node, undrain_node

from .harness import TOLERANCE, Cluster, Timing, cluster, wait_for

pytestmark = [pytest.mark.slow]

TIMING = Timing(heartbeat=1.0, timeout=3.0, margin=0.5, drain_timeout=2.0)
TOKENS = 64
SOON = 1.0 + TOLERANCE
"""A drain is a graceful change: about a second, plus the suite's tolerance."""
NAMES = ["m-a", "m-b", "m-c"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"sqlite_path": tmp_path / "jobs.db"}
    return {"dsn": request.getfixturevalue("fault_server").dsn}


def url_of(c: Cluster) -> str:
    """The URL the workers use (PostgreSQL: with the cluster's schema)."""
    if c.dsn is not None:
        return c._url(c.dsn)
    return f"sqlite:///{c.sqlite_path}"


def table_owners(c: Cluster) -> list[str | None]:
    rows = c.query(
        f"SELECT token_id, node FROM {c.table('sync_token')} WHERE site = %s ORDER BY token_id",
        (c.site,),
    )
    return [node for _, node in rows]


def test_drain_moves_a_running_worker_to_zero_and_undrain_gives_its_share_back(
    where: dict[str, Any], tmp_path: Path
) -> None:
    with cluster(
        workdir=tmp_path, tokens=TOKENS, tasks=1_500, timing=TIMING, work_ms=5, **where
    ) as c:
        procs = [c.spawn(name) for name in NAMES]
        c.wait_ready(procs)
        c.wait_balanced(procs, 15, "at start")
        a, b, d = procs
        url = url_of(c)

        row = drain_node(url, c.site, "m-b", reason="integration test", by="it")
        assert row.drain_note == "by it: integration test"

        def drained() -> bool:
            c.sync([b])
            return table_owners(c).count("m-b") == 0 and not c.current_sets().get(b.instance)

        wait_for(drained, SOON, "m-b at zero tokens, in the table and in its claimable set")
        c.wait_balanced([a, d], SOON, "the others covering every token")
        assert b.alive(), b.tail()
        node = c.query(
            f"SELECT state FROM {c.table('sync_node')} WHERE site = %s AND name = %s",
            (c.site, "m-b"),
        )
        assert node == [("active",)]

        before = table_owners(c)
        bound = lower_bound_moves(TOKENS, before, NAMES)
        assert bound == TOKENS // 3  # 64 over three: m-b's share of 21
        undrain_node(url, c.site, "m-b")
        c.wait_balanced(procs, SOON, "after the undrain")
        after = table_owners(c)
        assert sum(1 for x, y in zip(before, after, strict=True) if x != y) == bound
        assert all(y == "m-b" for x, y in zip(before, after, strict=True) if x != y)

        c.finish()
        h = c.history()
        assert h.overlaps() == [], h.overlaps()[:5]
        assert h.epoch_violations() == []
        assert h.duplicates == [] and h.stranded == 0
