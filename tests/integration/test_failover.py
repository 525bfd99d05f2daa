"""Failover to a replica: real workers, a primary and a streaming standby, a promotion.

The workers reach the pair through one multi-host URL
(``host=a,b port=p1,p2 target_session_attrs=read-write``): when the primary
dies, libpq finds the promoted standby on the next reconnect.  The workers log
ownership to files (``log_files=True``), not to the database under test, so a
failover that loses commits cannot take the checker's evidence with it.

- Synchronous replication (the primary's ``synchronous_standby_names`` names
  the standby): every commit a worker saw is on the standby.  Kill the primary
  mid-run, promote the standby: zero instants of two claimers, nothing lost
  (locks, completions, claims, the audit), every worker back within the
  heartbeat timeout plus a few seconds.
- Asynchronous replication with the standby cut off first (a proxy black-holes
  its stream), then a join, a plan and completions the standby never sees:
  the promoted standby has lost them.  Every worker notices the new timeline
  (``jobsync.core.continuity``), claims nothing for one heartbeat timeout,
  and no two workers ever answer True for one token.

Timings: heartbeat 0.5 s, timeout 2 s (``harness.FAST``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobsync.backends.postgres import PostgresBackend
from jobsync.core.hashing import token_for
from jobsync.core.model import LockSpec
from tests.support.replication import ReplicatedPair

from .harness import FAST, TOLERANCE, Cluster, History, Proc, cluster, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TASKS = 3_000
TOKENS = 64
BACK = FAST.timeout + 3.0
"""Every worker claims again within the heartbeat timeout plus a few seconds of the kill
(the promotion, the reconnect, the continuity quarantine of one timeout)."""


def report(name: str, **numbers: Any) -> None:
    print(f"FAILOVER {json.dumps({'scenario': name, **numbers}, default=str)}", flush=True)


def start(c: Cluster, names: list[str]) -> list[Proc]:
    procs = [c.spawn(name) for name in names]
    c.wait_ready(procs)
    return procs


def committed(c: Cluster) -> dict[str, set[Any]]:
    """What the database holds that must survive a failover without loss."""
    return {
        "results": {r[0] for r in c.query(f"SELECT task_id FROM {c.table('results')}")},
        "done": {
            r[0]
            for r in c.query(f"SELECT task_key FROM {c.table('sync_audit')} WHERE status = 'done'")
        },
        "claims": {r[0] for r in c.query(f"SELECT task_key FROM {c.table('sync_audit')}")},
        "locks": {r[0] for r in c.query(f"SELECT task_key FROM {c.table('sync_lock')}")},
    }


def breaks_noticed(procs: list[Proc]) -> dict[str, int]:
    return {p.name: p.out.read_text(errors="replace").count("timeline changed") for p in procs}


def check(h: History) -> None:
    assert h.duplicates == [], h.duplicates[:5]
    assert h.overlaps() == [], h.overlaps()[:5]
    assert h.epoch_violations() == []
    assert not h.stranded, f"{h.stranded} tasks not done"


def test_failover_to_a_synchronous_replica_loses_nothing(tmp_path: Path) -> None:
    with (
        ReplicatedPair(synchronous=True) as pair,
        cluster(
            workdir=tmp_path, dsn=pair.dsn, tasks=TASKS, tokens=TOKENS, work_ms=10, log_files=True
        ) as c,
    ):
        admin = PostgresBackend(pair.dsn, client="admin", schema=c.schema)
        procs = start(c, ["a", "b", "c", "d"])
        c.wait_balanced(procs, 10)
        lock = LockSpec(task_key="pinned", token=token_for("pinned", TOKENS), patterns=("%",))
        admin.replace_locks(c.site, "admin", [lock], False)
        wait_for(lambda: c.done_count() > 200, 30, "tasks flowing")
        before = committed(c)
        at = c.now()
        pair.kill_primary()
        pair.promote()
        up = c.now()
        c.fault("failover", at, until=up)
        after = committed(c)
        lost = {kind: sorted(before[kind] - after[kind])[:5] for kind in before}
        assert all(not keys for keys in lost.values()), lost
        assert before["locks"] == {"pinned"}
        c.wait_balanced(procs, BACK + 5, "after the failover")
        assert all(p.alive() for p in procs)
        left = c.tasks - c.done_count()
        assert left > 0, "the tasks must still be flowing after the failover"
        c.finish()
        h = c.history()
        check(h)
        back = h.longest_gap(since=at - 0.5)
        noticed = breaks_noticed(procs)
        report(
            "synchronous",
            promotion_s=round(up - at, 3),
            longest_gap_s=round(back, 3),
            continuity_breaks=noticed,
            **h.summary(),
        )
        assert back <= BACK + TOLERANCE
        assert all(n >= 1 for n in noticed.values()), noticed  # the new timeline was seen
        admin.close()


def test_failover_to_an_asynchronous_replica_that_lost_commits(tmp_path: Path) -> None:
    with (
        ReplicatedPair(synchronous=False) as pair,
        cluster(
            workdir=tmp_path, dsn=pair.dsn, tasks=TASKS, tokens=TOKENS, work_ms=10, log_files=True
        ) as c,
    ):
        procs = start(c, ["a", "b", "c"])
        c.wait_balanced(procs, 10)
        wait_for(lambda: c.done_count() > 100, 30, "tasks flowing")
        assert pair.replication is not None
        pair.replication.partition("blackhole")  # the standby hears nothing more
        # History only the old primary will know: a join, its plan and hand-offs,
        # claims and completions.
        late = start(c, ["late"])
        everyone = [*procs, *late]
        c.wait_balanced(everyone, 10, "after the late join")
        seen = c.done_count()
        wait_for(lambda: c.done_count() > seen + 100, 30, "more tasks done")
        done_on_primary = c.done_count()
        generation = c.query(
            f"SELECT generation FROM {c.table('sync_site')} WHERE site = %s", (c.site,)
        )[0][0]
        at = c.now()
        pair.kill_primary()
        pair.promote()
        up = c.now()
        c.fault("failover (async, commits lost)", at, until=up)
        done_after = c.done_count()
        generation_after = c.query(
            f"SELECT generation FROM {c.table('sync_site')} WHERE site = %s", (c.site,)
        )[0][0]
        assert done_after < done_on_primary, "the promoted standby must have lost commits"
        assert generation_after < generation, "and the late join's plan with them"
        c.wait_balanced(everyone, 2 * BACK + 10, "after the failover")
        assert all(p.alive() for p in everyone)
        c.finish()
        h = c.history()
        check(h)
        noticed = breaks_noticed(everyone)
        report(
            "asynchronous, commits lost",
            promotion_s=round(up - at, 3),
            completions_lost=done_on_primary - done_after,
            generation_before_after=(generation, generation_after),
            longest_gap_s=round(h.longest_gap(since=at - 0.5), 3),
            continuity_breaks=noticed,
            **h.summary(),
        )
        assert all(n >= 1 for n in noticed.values()), noticed
