"""Failover with real worker processes: crash, graceful leave and join, on PostgreSQL and SQLite.

    python -m benchmarks.failover [--backend postgres|sqlite|both] [--timing fast|default|both]
                                  [--workers 3] [--repeat 3] [--dsn DSN] [--json PATH]

Reuses the fault harness (``tests/integration/harness.py``): every worker is
a process running the README loop (``tests/integration/worker.py``), its
completions in the same transaction as its side effect, and logging what
``my_tokens`` says on the database's clock.  Per repetition, on a cluster of
``--workers`` workers (64 tokens, 2,000 tasks flowing at 10 ms each):

- ``join``: a new worker registers -> every token claimable, loads within one;
- ``leave``: SIGTERM to a follower -> its tokens claimable by the others
  (the process drains and ends by itself);
- ``crash``: SIGKILL of a follower -> its tokens claimable by the others;
- ``crash-leader``: SIGKILL of the leader -> the same.

Times are from the event (registration on the database's clock; the
signal) to the first sample, in a worker's main thread, that saw the last of
the tokens claimable: what a user's loop experiences.  Bounds are the README's
guarantee 2: ``timeout + 1 s`` after a crash, ``1 s`` after a join or leave.
Timings: ``fast`` is heartbeat 0.5 s / timeout 2 s / margin 0.5 s (the fault
tests'); ``default`` is the library's 5 s / 15 s (a crash then takes ~16 s).

PostgreSQL: ``--dsn``, else a throwaway cluster from the local binaries
(``tests/support/pg.py``), 3 connections per worker (jobsync's, the
worker's own, its log's).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._common import owned_pg_server, repo_on_path, spread, write_json

repo_on_path()
from tests.integration.harness import Cluster, Proc, Timing, wait_for  # noqa: E402

TIMINGS = {
    "fast": Timing(heartbeat=0.5, timeout=2.0, margin=0.5, drain_timeout=2.0),
    "default": Timing(heartbeat=5.0, timeout=15.0, margin=0.75, drain_timeout=10.0),
}
TOKENS = 64
TASKS = 2_000


@contextlib.contextmanager
def _postgres(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with owned_pg_server({"track_commit_timestamp": "on", "max_connections": "200"}) as s:
        yield s.dsn


def _cluster(backend: str, dsn: str | None, timing: Timing, workdir: Path) -> Cluster:
    if backend == "postgres":
        return Cluster(
            workdir=workdir, dsn=dsn, tokens=TOKENS, tasks=TASKS, timing=timing, work_ms=10
        )
    return Cluster(
        workdir=workdir,
        sqlite_path=workdir / "jobsync.db",
        tokens=TOKENS,
        tasks=TASKS,
        timing=timing,
        work_ms=10,
    )


def _one_round(backend: str, dsn: str | None, timing: Timing, workers: int) -> dict[str, float]:
    """One cluster: join, leave, crash of a follower, crash of the leader."""
    patience = timing.timeout * 3 + 30
    with tempfile.TemporaryDirectory(prefix="jobsync-failover-") as tmp:
        c = _cluster(backend, dsn, timing, Path(tmp))
        try:
            live = [c.spawn(f"w{i}") for i in range(workers)]
            c.wait_ready(live, patience)
            c.wait_balanced(live, patience)
            times: dict[str, float] = {}

            joiner = c.spawn(f"w{workers}")
            c.wait_ready([joiner], patience)
            live.append(joiner)
            members = [p.instance for p in live]
            registered = c.registered_at(joiner.name)
            c.wait_balanced(live, patience)

            leaver = _follower(c, live)
            left = c.signal(leaver, signal.SIGTERM)
            c.wait_exits([leaver], patience)
            live.remove(leaver)
            c.wait_balanced(live, patience)

            victim = _follower(c, live)
            crashed = c.kill(victim)
            live.remove(victim)
            c.wait_balanced(live, patience)

            leader = next(p for p in live if p.name == c.leader())
            crashed_leader = c.kill(leader)
            live.remove(leader)
            c.wait_balanced(live, patience)

            h = c.history()
            times["join"] = h.balanced_at(registered, members) - registered
            times["leave"] = h.heal(left, excluding=[leaver.instance])
            times["crash"] = h.heal(crashed, excluding=[victim.instance])
            times["crash-leader"] = h.heal(crashed_leader, excluding=[leader.instance])
            assert not h.overlaps(), h.overlaps()[:3]
            return times
        finally:
            c.close()


def _follower(c: Cluster, live: list[Proc]) -> Proc:
    leader = wait_for(c.leader, 10, "a leader")
    return next(p for p in live if p.name != leader)


def run(
    backends: list[str], timings: list[str], workers: int, repeat: int, dsn: str | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for backend in backends:
        with _postgres(dsn) if backend == "postgres" else contextlib.nullcontext(None) as url:
            for name in timings:
                timing = TIMINGS[name]
                rounds = [_one_round(backend, url, timing, workers) for _ in range(repeat)]
                for event in ("join", "leave", "crash", "crash-leader"):
                    values = [r[event] for r in rounds]
                    median, _, high = spread(values)
                    bound = (
                        timing.crash_bound if event.startswith("crash") else timing.GRACEFUL_BOUND
                    )
                    rows.append(
                        {
                            "backend": backend,
                            "timing": name,
                            "event": event,
                            "median_s": round(median, 3),
                            "max_s": round(high, 3),
                            "bound_s": bound,
                            "runs": len(values),
                        }
                    )
                    row = rows[-1]
                    print(
                        f"{backend:<9} {name:<8} {event:<13} median {row['median_s']:7.3f} s"
                        f"  max {row['max_s']:7.3f} s  bound {bound:5.1f} s  ({len(values)} runs)",
                        flush=True,
                    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--timing", choices=["fast", "default", "both"], default="both")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn", help="a PostgreSQL DSN (default: a throwaway local cluster)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    timings = ["fast", "default"] if args.timing == "both" else [args.timing]
    started = time.monotonic()
    rows = run(backends, timings, args.workers, args.repeat, args.dsn)
    print(f"({time.monotonic() - started:.0f} s)")
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
