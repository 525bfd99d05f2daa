"""PostgreSQL plan-commit benchmark: ``python -m benchmarks.pg_plan_commit [--dsn DSN] [--quick]``.

Times ``PostgresBackend.commit_plan`` end to end (argument checks, every
statement, the commit) on the three plans the brief holds it to, each on a
fresh site of 10,000 tokens in a scratch schema that is dropped afterwards:

- ``initial``: the first plan of an empty site, 10,000 tokens from unowned to
  7 live nodes;
- ``remap``: every one of the 10,000 rows re-mapped: all held by 7 expired
  incarnations (a cold start after an outage), handed straight to 7 new ones;
- ``move``: one of 7 nodes crashed; its 1,429 tokens go to the other 6.

An extra row, ``revoke``, times the graceful variant of ``move`` (1,429
revokes from a live node).  Prints median, min and max over several runs
against the 30 ms target.  ``run(dsn, quick=False)`` returns the rows.  The
DSN defaults to ``JOBSYNC_TEST_DSN``, else 127.0.0.1:5432 as postgres.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable

import psycopg
from psycopg import sql

from jobsync.backends.base import ClusterView, DirectAssign, PlanCommit, Revoke
from jobsync.backends.postgres import PostgresBackend

TOTAL = 10_000
NODES = 7
TARGET_MS = 30.0
SHORT_LEASE = 1.0
"""Leases the setup waits out: long enough to build a 10,000-token plan on a busy box."""
DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

Setup = Callable[[PostgresBackend, str], PlanCommit]


def _register(
    db: PostgresBackend, site: str, prefix: str, lease: float = 600.0
) -> list[tuple[str, int]]:
    return [
        (f"{prefix}{i}", db.register(site, f"{prefix}{i}", lease).incarnation) for i in range(NODES)
    ]


def _commit(
    db: PostgresBackend,
    site: str,
    leader: tuple[str, int],
    assigns: tuple[DirectAssign, ...] = (),
    revokes: tuple[Revoke, ...] = (),
) -> PlanCommit:
    view = db.read_cluster(site)
    return PlanCommit(
        leader=leader[0],
        leader_incarnation=leader[1],
        expected_generation=view.site.generation,
        basis=view.site.change_counter,
        assigns=assigns,
        revokes=revokes,
    )


def _assign_all(
    db: PostgresBackend, site: str, nodes: list[tuple[str, int]]
) -> tuple[DirectAssign, ...]:
    view = db.read_cluster(site)
    return tuple(
        DirectAssign(
            token=t,
            expected_incarnation=view.tokens.incarnation[t],
            expected_epoch=view.tokens.epoch[t],
            owner=nodes[t % NODES][0],
            incarnation=nodes[t % NODES][1],
        )
        for t in range(TOTAL)
    )


def _initial(db: PostgresBackend, site: str) -> PlanCommit:
    nodes = _register(db, site, "n")
    return _commit(db, site, nodes[0], assigns=_assign_all(db, site, nodes))


def _remap(db: PostgresBackend, site: str) -> PlanCommit:
    old = _register(db, site, "old", SHORT_LEASE)
    db.commit_plan(site, _commit(db, site, old[0], assigns=_assign_all(db, site, old)))
    time.sleep(SHORT_LEASE + 0.05)  # every old lease runs out
    new = _register(db, site, "new")
    return _commit(db, site, new[0], assigns=_assign_all(db, site, new))


def _crashed(db: PostgresBackend, site: str) -> tuple[list[tuple[str, int]], list[int]]:
    """7 nodes share the tokens; node 1 (1,429 tokens) has a short lease.  Returns
    the 6 others and node 1's tokens."""
    leader = (f"n{0}", db.register(site, "n0", 600.0).incarnation)
    victim = ("n1", db.register(site, "n1", SHORT_LEASE).incarnation)
    others = [(f"n{i}", db.register(site, f"n{i}", 600.0).incarnation) for i in range(2, NODES)]
    nodes = [leader, victim, *others]
    db.commit_plan(site, _commit(db, site, leader, assigns=_assign_all(db, site, nodes)))
    return [leader, *others], [t for t in range(TOTAL) if t % NODES == 1]


def _spread(
    view: ClusterView, tokens: list[int], nodes: list[tuple[str, int]]
) -> tuple[DirectAssign, ...]:
    """Direct moves of ``tokens`` (held by an expired node) round-robin over ``nodes``."""
    return tuple(
        DirectAssign(
            token=t,
            expected_incarnation=view.tokens.incarnation[t],
            expected_epoch=view.tokens.epoch[t],
            owner=nodes[i % len(nodes)][0],
            incarnation=nodes[i % len(nodes)][1],
        )
        for i, t in enumerate(tokens)
    )


def _move(db: PostgresBackend, site: str) -> PlanCommit:
    nodes, victim = _crashed(db, site)
    time.sleep(SHORT_LEASE + 0.05)  # the victim's lease runs out
    return _commit(db, site, nodes[0], assigns=_spread(db.read_cluster(site), victim, nodes))


def _revoke(db: PostgresBackend, site: str) -> PlanCommit:
    nodes, victim = _crashed(db, site)
    view = db.read_cluster(site)
    revokes = tuple(
        Revoke(
            token=t,
            expected_incarnation=view.tokens.incarnation[t] or 0,
            expected_epoch=view.tokens.epoch[t],
            destination=nodes[i % len(nodes)][0],
        )
        for i, t in enumerate(victim)
    )
    return _commit(db, site, nodes[0], revokes=revokes)


SCENARIOS: tuple[tuple[str, str, Setup], ...] = (
    ("initial", "initial plan, 10,000 tokens into an empty site", _initial),
    ("remap", "re-map all 10,000 rows (expired holders)", _remap),
    ("move", "move 1,429 tokens of a crashed node", _move),
    ("revoke", "revoke 1,429 tokens (graceful, extra)", _revoke),
)


def run(dsn: str, quick: bool = False) -> list[dict[str, object]]:
    """Time each scenario; one row per scenario (milliseconds)."""
    runs = 3 if quick else 9
    schema = f"jobsync_bench_{uuid.uuid4().hex[:10]}"
    db = PostgresBackend(dsn, client="bench", schema=schema)
    rows: list[dict[str, object]] = []
    try:
        for key, label, setup in SCENARIOS:
            times = []
            for i in range(runs):
                site = f"{key}-{i}"
                db.ensure_site(site, TOTAL, "xxh3")
                plan = setup(db, site)
                start = time.perf_counter()
                db.commit_plan(site, plan)
                times.append((time.perf_counter() - start) * 1000)
            rows.append(
                {
                    "scenario": key,
                    "description": label,
                    "writes": len(plan.assigns) + len(plan.revokes),
                    "runs": runs,
                    "median_ms": statistics.median(times),
                    "min_ms": min(times),
                    "max_ms": max(times),
                    "target_ms": TARGET_MS,
                }
            )
    finally:
        db.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return rows


def _table(rows: list[dict[str, object]]) -> str:
    lines = [
        f"{'plan commit':<48} {'writes':>7} {'median':>8} {'min':>8} {'max':>8}  target",
    ]
    for row in rows:
        verdict = "ok" if float(row["median_ms"]) <= TARGET_MS else "OVER"  # type: ignore[arg-type]
        lines.append(
            f"{row['description']!s:<48} {row['writes']!s:>7} {row['median_ms']:>6.1f}ms "
            f"{row['min_ms']:>6.1f}ms {row['max_ms']:>6.1f}ms  <= {TARGET_MS:.0f} ms {verdict}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", default=os.environ.get("JOBSYNC_TEST_DSN", DEFAULT_DSN))
    parser.add_argument("--quick", action="store_true", help="3 runs per scenario instead of 9")
    args = parser.parse_args(argv)
    with psycopg.connect(args.dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    print(f"PostgreSQL {version[0] if version else '?'} at {args.dsn!r}")
    print(_table(run(args.dsn, quick=args.quick)))


if __name__ == "__main__":
    main()
