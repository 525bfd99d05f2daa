"""One worker of ``jobsync demo``: the README loop, recording each task exactly once.

Run by the demo as ``python -m jobsync.cli.demo_worker ...``.  It processes
the batch until every task is recorded (by any worker), then leaves the
``with`` block, which hands its tokens off.

Exactly-once: the result row and the completion commit in one SQLite
transaction on the worker's own connection (``job.complete(task,
connection=conn)``).  If the worker dies first, the transaction rolls back,
the claim is released when its lease ends, and the task's new owner does it.
"""

from __future__ import annotations

import argparse
import datetime
import sqlite3
import sys
import time
from collections.abc import Sequence

from jobsync.backends.base import Backend
from jobsync.core.errors import BackendUnavailable
from jobsync.runtime.config import CoordinationConfig
from jobsync.runtime.job import Job, Task

RESULTS_DDL = (
    "CREATE TABLE IF NOT EXISTS demo_results "
    "(site TEXT NOT NULL, task TEXT NOT NULL, node TEXT NOT NULL, at REAL NOT NULL)"
)
IDLE_SLEEP = 0.05


def task_ids(count: int) -> list[str]:
    return [f"task-{i:05d}" for i in range(count)]


def connect_results(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode; transactions are opened explicitly."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(RESULTS_DDL)
    return conn


def pending(conn: sqlite3.Connection, site: str, ids: Sequence[str]) -> list[str]:
    """``get_pending_items()``: the batch minus what any worker recorded."""
    done = {row[0] for row in conn.execute("SELECT task FROM demo_results WHERE site = ?", (site,))}
    return [i for i in ids if i not in done]


def record(conn: sqlite3.Connection, job: Job, task: Task) -> bool:
    """Insert the result and complete the claim in one transaction; False if the claim was lost."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = job.complete(task, connection=conn)
        if done:
            conn.execute(
                "INSERT INTO demo_results (site, task, node, at) VALUES (?, ?, ?, ?)",
                (job.site, task.key, job.name, time.time()),
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT" if done else "ROLLBACK")
    return done


def work(job: Job, conn: sqlite3.Connection, ids: Sequence[str], seconds: float) -> int:
    """Process until every task is recorded or the node drains; return how many were ours."""
    mine = 0
    while not _stopping(job):
        todo = pending(conn, job.site, ids)
        if not todo:
            break
        progressed = False
        for item_id in todo:
            if _stopping(job):
                break
            task = Task(item_id)
            if job.can_claim_task(task) and job.add_task(task):
                time.sleep(seconds)  # the "processing"
                try:
                    recorded = record(conn, job, task)
                except BackendUnavailable:
                    job.release(task)  # never let write_audit mark it done without a result
                    continue
                mine += recorded
                progressed = True
        if not progressed:
            time.sleep(IDLE_SLEEP)
    return mine


def _stopping(job: Job) -> bool:
    # A function, not the property inline: mypy would narrow ``job.draining`` to
    # False inside ``while not job.draining`` and call the inner check unreachable.
    return job.draining


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jobsync-demo-worker")
    p.add_argument("--db", required=True, help="the SQLite file")
    p.add_argument("--site", required=True)
    p.add_argument("--node-name", required=True)
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--work-ms", type=float, required=True)
    p.add_argument("--date", required=True, type=datetime.date.fromisoformat)
    p.add_argument("--total-tokens", type=int, required=True)
    p.add_argument("--heartbeat-interval", type=float, required=True)
    p.add_argument("--heartbeat-timeout", type=float, required=True)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    config = CoordinationConfig(
        total_tokens=args.total_tokens,
        heartbeat_interval_sec=args.heartbeat_interval,
        heartbeat_timeout_sec=args.heartbeat_timeout,
    )
    conn = connect_results(args.db)
    source: str | Backend = "sqlite:///" + args.db
    with Job(args.node_name, args.site, source, coordination_config=config, date=args.date) as job:
        print(f"{job.name}: ready with {len(job.my_tokens)} tokens", flush=True)
        mine = work(job, conn, task_ids(args.tasks), args.work_ms / 1e3)
        print(f"{job.name}: recorded {mine} tasks; leaving", flush=True)
    conn.close()
    print(f"{args.node_name}: left", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
