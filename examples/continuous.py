"""A long-running consumer that keeps per-token state, reloaded on every rebalance.

    python examples/continuous.py --node-name stream-1 --dsn sqlite:///stream.db

Some workers hold state per task (an open file, a websocket, a cache warmed
for the accounts they serve).  ``on_rebalance`` tells the worker, on its own
callback thread, which tokens it gained and which it lost, so it can warm
and drop that state.  The event describes the *claimable* set: tokens are
removed from it before they are handed off, and the first event (``first``)
is the initial assignment.  A callback that raises is logged and counted;
one that hangs never blocks coordination.

Runs until SIGTERM or Ctrl-C; the loop stops on ``job.draining``.
"""

from __future__ import annotations

import argparse
import threading
import time

import jobsync
from jobsync import Job, RebalanceEvent, Task


class Accounts:
    """Per-token state: here just the set of tokens whose accounts are warmed up."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.warm: set[int] = set()

    def on_rebalance(self, event: RebalanceEvent) -> None:
        with self.lock:
            self.warm -= event.removed  # drop state for tokens we lost
            self.warm |= event.added  # warm up the ones we gained
        kind = "initial assignment" if event.first else "rebalance"
        print(
            f"{kind}: +{len(event.added)} -{len(event.removed)} tokens, now "
            f"{len(event.tokens)} (version {event.version})",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--site", default="stream")
    parser.add_argument("--dsn", help="sqlite:///path or postgresql://... (default: SYNC_SQL_*)")
    args = parser.parse_args()
    accounts = Accounts()

    with Job(
        args.node_name, args.site, args.dsn or jobsync.config, on_rebalance=accounts.on_rebalance
    ) as job:
        print(f"{job.name}: ready with {len(job.my_tokens)} tokens", flush=True)
        handled = 0
        while not job.draining:
            # One event a tick from a stream: account ids hash to tokens.
            account = f"account-{int(time.time() * 10) % 5000}"
            if job.can_claim_task(Task(account)):
                handled += 1  # handle it with the warmed state (no durable claim needed)
            time.sleep(0.01)
        print(f"{job.name}: draining after {handled} events", flush=True)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
