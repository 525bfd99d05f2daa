"""The README's three-terminal example: one worker of a site, until SIGTERM or Ctrl-C.

Run it in three terminals with three names; each takes a third of the
tokens, and stopping one gives its share to the others within a second
(a crash: within the heartbeat timeout)::

    python examples/worker.py --node-name worker-01 --dsn sqlite:///jobsync.db
    python examples/worker.py --node-name worker-02 --dsn sqlite:///jobsync.db
    python examples/worker.py --node-name worker-03 --dsn sqlite:///jobsync.db

Without ``--dsn`` the connection comes from ``SYNC_SQL_URL`` or the
``SYNC_SQL_*`` variables (PostgreSQL on localhost by default), timings from
``SYNC_HEARTBEAT_INTERVAL`` / ``SYNC_HEARTBEAT_TIMEOUT``.

Every ``--every`` seconds a new batch of ``--batch-size`` items appears (the
same ids for every worker, so the tokens split them).  On SIGTERM (``kill``,
``docker stop``, Kubernetes) jobsync stops claiming at once, the loop sees
``job.draining`` and ends, the open claims are recorded, the tokens are
handed off, and then the process ends by SIGTERM as it would have without
jobsync (exit status 143).  ``--http-port`` serves /health/live,
/health/ready and /metrics (``--http-host 0.0.0.0`` for probes from outside).
"""

from __future__ import annotations

import argparse
import time

import jobsync
from jobsync import Job, Task


def get_pending_items(batch_size: int, every: float) -> tuple[int, list[str]]:
    """Stands in for your queue or table: the current batch of item ids."""
    batch = int(time.time() // every)
    return batch, [f"{batch}-{i}" for i in range(batch_size)]


def process_item(item_id: str) -> None:
    time.sleep(0.001)  # your work here


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--site", default="production")
    parser.add_argument("--dsn", help="sqlite:///path or postgresql://... (default: SYNC_SQL_*)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between batches")
    parser.add_argument("--http-port", type=int, help="serve health and metrics (0: any port)")
    parser.add_argument("--http-host", default="127.0.0.1")
    args = parser.parse_args()
    config = args.dsn or jobsync.config

    with Job(
        args.node_name, args.site, config, http_port=args.http_port, http_host=args.http_host
    ) as job:
        print(f"{job.name}: ready with {len(job.my_tokens)} tokens", flush=True)
        if job.health_server is not None:
            print(f"{job.name}: health on {job.health_server.url}", flush=True)
        last = None
        while not job.draining:
            batch, items = get_pending_items(args.batch_size, args.every)
            if batch == last:
                time.sleep(0.05)
                continue
            done = 0
            for item_id in items:
                task = Task(item_id)
                if job.can_claim_task(task) and job.add_task(task):
                    process_item(item_id)
                    done += 1
            job.write_audit()
            last = batch
            print(
                f"{job.name}: batch {batch}: {done} of {len(items)} items, "
                f"{len(job.my_tokens)} tokens",
                flush=True,
            )
        print(f"{job.name}: draining", flush=True)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("interrupted: claims released, tokens handed off")
        raise SystemExit(130) from None
