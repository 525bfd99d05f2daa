"""One heartbeat's cost as the site grows: 10 node rows against 1,000.

    python -m benchmarks.heartbeat [--quick] [--dsn DSN] [--nodes 10,1000] [--beats N]
                                   [--backends LIST]

For each backend (memory, SQLite in a temporary file, PostgreSQL in a scratch
schema) and each site size, registers that many nodes with long leases, then
times ``heartbeat`` of one ordinary node (not the oldest, so it does not
lead; it watches the oldest, as the runtime's heartbeat does) and of the
oldest one asking as the leader (``leading=True``): median
and 99th percentile in microseconds over ``--beats`` calls.  On PostgreSQL it
also runs the ``HEARTBEAT`` statement under ``EXPLAIN (ANALYZE, BUFFERS)``
and reports the shared buffers it touched (hit + read) and the node rows its
plan nodes returned: an ordinary heartbeat must not grow with the site.

If PostgreSQL does not answer, its rows say so and the others still run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any

from benchmarks._common import BACKENDS, default_dsn, postgres_problem, scratch_store
from jobsync.backends.base import Backend

SITE = "hb"
QUICK_NODES = (10, 200)


def _register(db: Backend, count: int) -> list[tuple[str, int]]:
    db.ensure_site(SITE, 64, "md5")
    return [(f"n{i:05d}", db.register(SITE, f"n{i:05d}", 3600.0).incarnation) for i in range(count)]


def _beats(
    db: Backend, name: str, inc: int, beats: int, *, leading: bool, watch: str | None
) -> list[float]:
    times = []
    for _ in range(beats):
        start = time.perf_counter()
        db.heartbeat(SITE, name, inc, watch=watch, leading=leading)
        times.append((time.perf_counter() - start) * 1e6)
    return times


def _walk(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _walk(child)


def explain(db: Backend, query: str, params: dict[str, Any], table: str) -> tuple[int, int]:
    """On PostgreSQL: (shared buffers hit + read, rows the plan's scans of ``table``
    returned) for one run of the named statement under EXPLAIN ANALYZE."""
    session, queries = db._session, db._q  # type: ignore[attr-defined]
    with session.lock:
        conn = session.connection()
        with conn.transaction():
            text = b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries[query]
            row = conn.execute(text, params).fetchone()
            assert row is not None
    raw = row[0]
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    buffers = sum(int(plan.get(k, 0)) for k in ("Shared Hit Blocks", "Shared Read Blocks"))
    rows = 0
    for part in _walk(plan):
        scan = "Scan" in part.get("Node Type", "")  # not an Update node: the same row
        if scan and part.get("Relation Name", "").endswith(table):
            rows += int(part.get("Actual Rows", 0)) * int(part.get("Actual Loops", 1))
    return buffers, rows


def explain_heartbeat(
    db: Backend, name: str, inc: int, *, leading: bool, watch: str | None = None
) -> tuple[int, int]:
    """(buffers, node rows) of one HEARTBEAT statement (``explain``)."""
    params = {"site": SITE, "name": name, "inc": inc, "leading": leading, "watch": watch}
    return explain(db, "HEARTBEAT", params, "node")


def run(
    backends: Sequence[str], sizes: Sequence[int], beats: int, dsn: str
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for kind in backends:
        if kind == "postgres" and (problem := postgres_problem(dsn)) is not None:
            rows.append({"backend": kind, "error": problem})
            continue
        for size in sizes:
            with scratch_store(kind, dsn) as store:
                db = store.open("bench")
                nodes = _register(db, size)
                leader = nodes[0][0]
                for who, (name, inc), leading in (
                    ("ordinary", nodes[len(nodes) // 2], False),
                    ("leader", nodes[0], True),
                ):
                    watch = None if leading else leader  # as the runtime asks
                    times = _beats(db, name, inc, beats, leading=leading, watch=watch)
                    row: dict[str, object] = {
                        "backend": kind,
                        "nodes": size,
                        "who": who,
                        "p50_us": statistics.median(times),
                        "p99_us": sorted(times)[int(0.99 * (len(times) - 1))],
                    }
                    if kind == "postgres":
                        row["buffers"], row["node_rows"] = explain_heartbeat(
                            db, name, inc, leading=leading, watch=watch
                        )
                    rows.append(row)
    return rows


def table(rows: Sequence[dict[str, object]]) -> str:
    lines = [
        f"{'backend':<9} {'nodes':>6} {'who':<9} {'p50 us':>9} {'p99 us':>9} "
        f"{'buffers':>8} {'node rows':>10}"
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['backend']:<9} skipped: {r['error']}")
            continue
        lines.append(
            f"{r['backend']:<9} {r['nodes']:>6} {r['who']:<9} {r['p50_us']:>9.0f} "
            f"{r['p99_us']:>9.0f} {r.get('buffers', ''):>8} {r.get('node_rows', ''):>10}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 200 nodes, 100 beats")
    parser.add_argument("--dsn", default=default_dsn())
    parser.add_argument("--nodes", default="10,1000", help="site sizes (comma-separated)")
    parser.add_argument("--beats", type=int, default=500)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args(argv)
    sizes = QUICK_NODES if args.quick else tuple(int(n) for n in args.nodes.split(","))
    beats = 100 if args.quick else args.beats
    rows = run(args.backends.split(","), sizes, beats, args.dsn)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
