"""A worker of the original jobsync (PyPI ``jobsync`` 1.3.14), for the upgrade tests.

Run by the original's own Python (``tests/integration/original.py`` builds its
virtual environment); the suite never imports it.  It uses only the original's
public API, as its README does: ``CoordinationConfig``, ``Job``,
``can_claim_task``, ``add_task``, ``register_lock``.

It processes the pending items of the table ``items`` (those with no row in
``processed``), recording each in ``processed`` with fleet ``original``;
prints ``ready`` once entered; leaves its ``with`` block cleanly on SIGTERM,
after the item in hand (the original installs no handler of its own, so
without this a SIGTERM would end it before its audit is written and its row
deleted).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import types

import psycopg

from jobsync import CoordinationConfig, Job, Task  # the original's

RECORD = "INSERT INTO processed (item, worker, fleet) VALUES (%s, %s, 'original')"


STOP = threading.Event()


def _stop(_signum: int, _frame: types.FrameType | None) -> None:
    STOP.set()  # the loop ends and the with block is left, as after a day's work


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5432)
    p.add_argument("--dbname", required=True)
    p.add_argument("--user", default="postgres")
    p.add_argument("--appname", default="sync_")
    p.add_argument("--name", required=True)
    p.add_argument("--interval", type=int, default=1, help="heartbeat interval, s")
    p.add_argument("--timeout", type=int, default=10, help="heartbeat timeout, s")
    p.add_argument("--once", action="store_true", help="one pass over the items, then leave")
    p.add_argument(
        "--lock",
        action="append",
        default=[],
        metavar="TASK=PATTERN[,PATTERN...][:REASON[:DAYS]]",
        help="a lock the lock provider registers",
    )
    a = p.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    config = CoordinationConfig(
        host=a.host,
        port=a.port,
        dbname=a.dbname,
        user=a.user,
        password="",
        appname=a.appname,
        heartbeat_interval_sec=a.interval,
        heartbeat_timeout_sec=a.timeout,
        token_refresh_initial_interval_sec=1,
        token_refresh_steady_interval_sec=1,
        rebalance_check_interval_sec=1,
        dead_node_check_interval_sec=1,
    )

    def locks(job: Job) -> None:
        for spec in a.lock:
            task, _, rest = spec.partition("=")
            patterns, _, tail = rest.partition(":")
            reason, _, days = tail.partition(":")
            job.register_lock(task, patterns.split(","), reason or None, int(days or 0) or None)

    dsn = f"host={a.host} port={a.port} dbname={a.dbname} user={a.user}"
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        Job(a.name, coordination_config=config, wait_on_enter=1, lock_provider=locks) as job,
    ):
        print("ready", flush=True)
        while True:
            pending = conn.execute(
                "SELECT id FROM items WHERE id NOT IN (SELECT item FROM processed) ORDER BY id"
            ).fetchall()
            for (item,) in pending:
                task = Task(item)
                if job.can_claim_task(task):
                    job.add_task(task)
                    conn.execute(RECORD, (item, a.name))
            if a.once or STOP.wait(0.05):
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
