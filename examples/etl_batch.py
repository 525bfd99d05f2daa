"""A batch ETL job: every order of a day loaded exactly once, by however many workers run.

    python examples/etl_batch.py --node-name etl-1 --dsn sqlite:///etl.db &
    python examples/etl_batch.py --node-name etl-2 --dsn sqlite:///etl.db

Each worker extracts the day's orders, transforms the ones whose tokens it
owns, and loads each result in the same database transaction that records
the task as done (``job.complete(task, connection=conn)``).  The load and
the completion commit together or not at all, so a worker killed mid-way
leaves no half-loaded order: its claim is released when its lease ends and
another worker loads that order instead.  That is exactly-once for your own
writes.  Works on SQLite (``sqlite:///``) and PostgreSQL (``postgresql://``):
the output table lives in the database jobsync coordinates through.

The workers pass the batch's date explicitly (``date=``) so that a batch
running across midnight stays one batch.  Each worker stops when the whole
batch is loaded, by whoever.
"""

from __future__ import annotations

import argparse
import datetime
import sqlite3
import time
from typing import Any

import jobsync
from jobsync import Job, Task

DDL = (
    "CREATE TABLE IF NOT EXISTS etl_orders_out "
    "(day TEXT NOT NULL, order_id TEXT NOT NULL, total_cents INTEGER NOT NULL, loaded_by TEXT)"
)


def extract(day: datetime.date, count: int) -> dict[str, int]:
    """Stands in for the source system: order id -> amount in cents."""
    return {f"{day.isoformat()}/order-{i:04d}": 100 + (i * 37) % 900 for i in range(count)}


def transform(amount_cents: int) -> int:
    return round(amount_cents * 1.2)  # add 20% tax


class Output:
    """The destination table, on SQLite or PostgreSQL (both DB-API; placeholders differ)."""

    def __init__(self, dsn: str) -> None:
        self.sqlite = dsn.startswith("sqlite:///")
        self.conn: Any
        if self.sqlite:
            self.conn = sqlite3.connect(dsn[len("sqlite:///") :], timeout=30, isolation_level=None)
            self.mark = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(dsn.split("?", maxsplit=1)[0], autocommit=True)
            self.mark = "%s"
        self.conn.execute(DDL)

    def loaded(self, day: datetime.date) -> set[str]:
        sql = f"SELECT order_id FROM etl_orders_out WHERE day = {self.mark}"
        return {row[0] for row in self.conn.execute(sql, (day.isoformat(),)).fetchall()}

    def load(self, job: Job, task: Task, day: datetime.date, total: int) -> bool:
        """Insert and complete in one transaction; False (nothing written) if the claim was lost."""
        sql = f"INSERT INTO etl_orders_out VALUES ({', '.join([self.mark] * 4)})"
        self.conn.execute("BEGIN IMMEDIATE" if self.sqlite else "BEGIN")
        try:
            done = job.complete(task, connection=self.conn)  # False: the claim was lost
            if done:
                self.conn.execute(sql, (day.isoformat(), task.id, total, job.name))
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT" if done else "ROLLBACK")
        return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--site", default="etl")
    parser.add_argument("--dsn", help="sqlite:///path or postgresql://... (default: SYNC_SQL_*)")
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument(
        "--day", type=datetime.date.fromisoformat, default=datetime.date(2024, 1, 31)
    )
    args = parser.parse_args()
    dsn = args.dsn or jobsync.config.url
    output = Output(dsn)
    orders = extract(args.day, args.orders)

    with Job(args.node_name, args.site, dsn, date=args.day) as job:
        print(f"{job.name}: ready with {len(job.my_tokens)} tokens", flush=True)
        mine = 0
        while not job.draining:
            done = output.loaded(args.day)
            pending = [o for o in orders if o not in done]
            if not pending:
                break
            for order_id in pending:
                task = Task(order_id)
                if job.can_claim_task(task) and job.add_task(task):
                    try:
                        mine += output.load(job, task, args.day, transform(orders[order_id]))
                    except jobsync.errors.BackendUnavailable:
                        job.release(task)  # never leave it for write_audit to mark done
            time.sleep(0.05)  # the rest belongs to other workers: let them finish it
        loaded = len(output.loaded(args.day))
    print(f"{args.node_name}: loaded {mine} orders; the batch has {loaded} of {len(orders)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
