"""A worker of this library for the upgrade tests, beside the original's workers.

``python upgrade_worker.py --url URL --name NAME --site SITE``: enters (a
handover in progress keeps it waiting inside ``__enter__``), prints ``ready``,
then processes the pending items of ``items`` exactly once each (``can_claim_task
and add_task``, then ``complete``), recording each in ``processed`` with fleet
``new``.  SIGTERM drains it as jobsync does for any worker.
"""

from __future__ import annotations

import argparse
import sys
import time

import psycopg

from jobsync import CoordinationConfig, Job, Task


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--site", required=True)
    a = p.parse_args()
    config = CoordinationConfig(heartbeat_interval_sec=1, heartbeat_timeout_sec=4)
    dsn = a.url.split("?")[0]
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        Job(a.name, a.site, a.url, coordination_config=config, wait_on_enter=300) as job,
    ):
        print("ready", flush=True)
        while not job.draining:
            pending = conn.execute(
                "SELECT id FROM items WHERE id NOT IN (SELECT item FROM processed) ORDER BY id"
            ).fetchall()
            for (item,) in pending:
                task = Task(item)
                if job.can_claim_task(task) and job.add_task(task):
                    conn.execute(
                        "INSERT INTO processed (item, worker, fleet) VALUES (%s, %s, 'new')",
                        (item, a.name),
                    )
                    job.complete(task)
            time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
