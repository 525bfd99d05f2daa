"""Database load: round trips per minute per worker, and transactions on the server.

    python -m benchmarks.load [--quick] [--dsn DSN] [--backends postgres,sqlite]
                              [--scale 10] [--window SECONDS] [--json PATH]

Real ``Job`` objects (three workers: the leader and two followers, 10,000
tokens, each with its own backend handle) run in this process against a real
PostgreSQL and a SQLite file (a temporary one).  Each
worker's backend counts what it sends: ``statistics()['round_trips']``
(PostgreSQL: every statement, BEGIN and COMMIT on the wire; SQLite: every
transaction on the file).  Two windows per backend:

- ``steady``: membership does not change;
- ``churn``: a fourth worker joins, stays 6 heartbeat intervals, leaves
  gracefully (drain), stays away 6 intervals, and again, for the whole
  window: one membership change every 30 s at the default timings.  The
  rows are the three permanent workers; the churning one is left out.

Scaling.  The library's default timings (heartbeat 5 s, timeout 15 s,
reconciliation 30 s, drain 10 s, margin 0.75 s) are all divided by
``--scale`` (default 10: heartbeat 0.5 s), so a window of W seconds holds
W / (5 / scale) heartbeat intervals.  A count is scaled to "per minute at
the default 5 s interval" as ``count / intervals * 12``: everything the
protocol does periodically is paced by these settings, so a count per
heartbeat interval does not depend on the scale.  What is paced by the
wall clock instead is reported unscaled: SQLite's change polling
(``wait_for_change`` reads the site row in a loop, whatever the interval),
as ``polls/real min``.  On PostgreSQL waiting for a change is LISTEN and
costs no round trip.

Server load.  On PostgreSQL the workers run in a scratch database of their
own (created and dropped by the run; a scratch schema where the role may not
create databases), so its ``xact_commit`` in ``pg_stat_database`` counts
their transactions only, even on a shared server.  Reported over a baseline
window before the workers start and over the steady window: transactions per
second at the test timing, and the net (steady minus baseline) scaled to the
default timings (divided by ``scale``).  The whole cluster's sum is printed
too; on a shared server it includes everyone else (and drops when a database
is dropped).  Statistics reach ``pg_stat_database`` with about a second of
delay, small against the window.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from benchmarks._common import (
    DEFAULT_DSN,
    LOCAL_COUNTERS,
    default_dsn,
    postgres_problem,
    scratch_store,
    write_json,
)
from jobsync import CoordinationConfig, Job
from jobsync.backends.base import Backend

Row = dict[str, Any]
DEFAULT = CoordinationConfig()
DEFAULT_INTERVAL = DEFAULT.heartbeat_interval_sec
PER_MINUTE = 60.0 / DEFAULT_INTERVAL
"""Heartbeat intervals in a minute at the default timings (12)."""
NOT_ON_THE_WIRE = (*LOCAL_COUNTERS, "connects")
"""Counters that are not requests of their own (PostgreSQL: LISTEN costs none; ``now``
is local on SQLite; connections are counted apart)."""
STAY = 6
"""Heartbeat intervals the churning worker stays, and stays away."""
WORKERS = ("a", "b", "c")


def scaled_config(scale: float, total_tokens: int = 10_000) -> CoordinationConfig:
    """The library's default timings, ``scale`` times faster."""
    return CoordinationConfig(
        total_tokens=total_tokens,
        heartbeat_interval_sec=DEFAULT.heartbeat_interval_sec / scale,
        heartbeat_timeout_sec=DEFAULT.heartbeat_timeout_sec / scale,
        rebalance_check_interval_sec=DEFAULT.rebalance_check_interval_sec / scale,
        safety_margin_sec=DEFAULT.margin / scale,
        drain_timeout_sec=DEFAULT.drain_timeout_sec / scale,
    )


# -- one cluster of Jobs ----------------------------------------------------------------
class Cluster:
    """Jobs of one site in this process, each on a backend handle of its own."""

    def __init__(self, opener: Callable[[str], Backend], cfg: CoordinationConfig) -> None:
        self.opener = opener
        self.cfg = cfg
        self.jobs: dict[str, Job] = {}
        self.handles: dict[str, Backend] = {}

    def enter(self, name: str) -> Job:
        handle = self.opener(name)
        job = Job(name, "load", handle, coordination_config=self.cfg, handle_sigterm=False)
        try:
            job.__enter__()
        except BaseException:
            handle.close()
            raise
        self.jobs[name], self.handles[name] = job, handle
        return job

    def leave(self, name: str) -> None:
        job, handle = self.jobs.pop(name), self.handles.pop(name)
        try:
            job.__exit__(None, None, None)
        finally:
            handle.close()

    def balanced(self) -> bool:
        sizes = [len(j.my_tokens) for j in list(self.jobs.values())]
        return sum(sizes) == self.cfg.total_tokens and max(sizes) - min(sizes) <= 1

    def wait_balanced(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.balanced():
            if time.monotonic() > deadline:
                sizes = {n: len(j.my_tokens) for n, j in self.jobs.items()}
                raise TimeoutError(f"not balanced after {timeout:g} s: {sizes}")
            time.sleep(0.02)

    def counters(self, names: Sequence[str] = WORKERS) -> dict[str, dict[str, int]]:
        """Backend counters of the permanent workers (the churning one comes and goes)."""
        return {n: dict(self.handles[n].statistics()) for n in names}

    def node_stats(self, names: Sequence[str] = WORKERS) -> dict[str, dict[str, int]]:
        return {n: dict(self.jobs[n].statistics()) for n in names}

    def close(self) -> None:
        for name in list(self.jobs):
            with contextlib.suppress(Exception):
                self.leave(name)


def _delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _rows(
    backend: str,
    phase: str,
    cluster: Cluster,
    before: dict[str, dict[str, int]],
    after: dict[str, dict[str, int]],
    intervals: float,
    seconds: float,
    health: dict[str, int],
) -> list[Row]:
    rows = []
    for name in WORKERS:
        d = _delta(after[name], before[name])
        verbs = {k: v for k, v in d.items() if k not in NOT_ON_THE_WIRE}
        requests = sum(verbs.values())
        total = d.get("round_trips", 0)
        if backend == "sqlite":
            # One transaction per verb; every other read is a change poll.
            coordination, polls = requests, total - requests
        else:
            coordination, polls = total, 0
        rows.append(
            {
                "backend": backend,
                "phase": phase,
                "worker": name,
                "role": "leader" if cluster.jobs[name].am_i_leader() else "follower",
                "seconds": round(seconds, 3),
                "intervals": round(intervals, 2),
                "round_trips": total,
                "per_minute": coordination / intervals * PER_MINUTE,
                "heartbeats_per_minute": d.get("heartbeat", 0) / intervals * PER_MINUTE,
                "verbs_per_minute": {
                    k: round(v / intervals * PER_MINUTE, 2) for k, v in sorted(verbs.items())
                },
                "polls_per_real_minute": polls / seconds * 60.0 if backend == "sqlite" else 0.0,
                "unhealthy_events": health.get(name, 0),
            }
        )
    return rows


def _health(cluster: Cluster) -> dict[str, int]:
    """Re-registrations, transient errors and heartbeat failures so far, per worker."""
    return {
        n: s.get("reregistrations", 0)
        + s.get("transient_errors", 0)
        + s.get("heartbeat_failures", 0)
        for n, s in cluster.node_stats().items()
    }


def _churn(
    cluster: Cluster,
    stop: threading.Event,
    interval: float,
    changes: list[float],
    errors: list[BaseException],
) -> None:
    """Join, stay, leave, stay away, until ``stop``; records each membership change."""
    n = 0
    try:
        while not stop.is_set():
            n += 1
            name = f"churn{n}"
            changes.append(time.monotonic())
            cluster.enter(name)
            if stop.wait(STAY * interval):
                cluster.leave(name)
                break
            changes.append(time.monotonic())
            cluster.leave(name)
            stop.wait(STAY * interval)
    except BaseException as exc:  # reported by the measuring thread
        errors.append(exc)


class Xact:
    """``xact_commit`` read over a connection of its own: of one database, and of all."""

    def __init__(self, dsn: str, database: str) -> None:
        import psycopg

        self.database = database
        self.conn = psycopg.connect(dsn, autocommit=True)

    def read(self) -> tuple[int, int]:
        """(the database's, the whole cluster's) committed transactions so far."""
        row = self.conn.execute(
            "SELECT coalesce(sum(xact_commit) FILTER (WHERE datname = %s), 0)::bigint,"
            " sum(xact_commit)::bigint FROM pg_stat_database",
            (self.database,),
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def close(self) -> None:
        self.conn.close()


def measure(
    backend: str,
    opener: Callable[[str], Backend],
    *,
    scale: float,
    window: float,
    total_tokens: int = 10_000,
    xact: Xact | None = None,
    churn: bool = True,
    baseline_window: float = 10.0,
) -> list[Row]:
    """Steady and churn windows on one backend; rows per permanent worker (+ xact)."""
    cfg = scaled_config(scale, total_tokens)
    interval = cfg.heartbeat_interval_sec
    rows: list[Row] = []
    baseline: tuple[tuple[int, int], float] | None = None
    if xact is not None:
        start, t0 = xact.read(), time.monotonic()
        time.sleep(baseline_window)
        end = xact.read()
        baseline = ((end[0] - start[0], end[1] - start[1]), time.monotonic() - t0)
    cluster = Cluster(opener, cfg)
    try:
        for name in WORKERS:  # in order: "a" is the oldest, so the leader
            cluster.enter(name)
        cluster.wait_balanced(60 * interval)
        time.sleep(2 * interval)  # the last plan's acknowledgements and reads are done

        health = _health(cluster)
        before, x0, t0 = cluster.counters(), xact.read() if xact else (0, 0), time.monotonic()
        time.sleep(window)
        after, x1, t1 = cluster.counters(), xact.read() if xact else (0, 0), time.monotonic()
        seconds = t1 - t0
        bad = {n: v - health.get(n, 0) for n, v in _health(cluster).items()}
        rows += _rows(backend, "steady", cluster, before, after, seconds / interval, seconds, bad)
        if xact is not None and baseline is not None:
            (base_db, base_all), base_seconds = baseline
            db_rate, all_rate = (x1[0] - x0[0]) / seconds, (x1[1] - x0[1]) / seconds
            rows.append(
                {
                    "backend": backend,
                    "phase": "steady",
                    "worker": "server",
                    "role": "xact_commit",
                    "database": xact.database,
                    "seconds": round(seconds, 3),
                    "workers": len(WORKERS),
                    "db_per_s": db_rate,
                    "db_baseline_per_s": base_db / base_seconds,
                    "db_per_s_at_default": (db_rate - base_db / base_seconds) / scale,
                    "cluster_per_s": all_rate,
                    "cluster_baseline_per_s": base_all / base_seconds,
                    "heartbeats_per_s_at_default": len(WORKERS) / DEFAULT_INTERVAL,
                }
            )
        if churn:
            health = _health(cluster)
            stop, changes, errors = threading.Event(), [], []
            churner = threading.Thread(
                target=_churn, args=(cluster, stop, interval, changes, errors), daemon=True
            )
            before, t0 = cluster.counters(), time.monotonic()
            churner.start()
            time.sleep(window)
            after, t1 = cluster.counters(), time.monotonic()
            stop.set()
            churner.join(60 * interval)
            if errors:
                raise RuntimeError("the churning worker failed") from errors[0]
            seconds = t1 - t0
            bad = {n: v - health.get(n, 0) for n, v in _health(cluster).items()}
            churn_rows = _rows(
                backend, "churn", cluster, before, after, seconds / interval, seconds, bad
            )
            inside = sum(1 for c in changes if c < t1)
            for row in churn_rows:
                row["changes_per_minute"] = inside / (seconds / interval) * PER_MINUTE
            rows += churn_rows
    finally:
        cluster.close()
    return rows


def run(
    dsn: str = DEFAULT_DSN,
    quick: bool = False,
    *,
    backends: Sequence[str] = ("postgres", "sqlite"),
    scale: float = 10.0,
    window: float | None = None,
    total_tokens: int = 10_000,
    churn: bool = True,
    baseline_window: float | None = None,
) -> list[Row]:
    """Every backend's rows; a PostgreSQL that does not answer gives one ``skipped`` row."""
    window = window if window is not None else (10.0 if quick else 30.0)
    baseline = baseline_window if baseline_window is not None else min(window, 10.0)
    rows: list[Row] = []
    for backend in backends:
        if backend not in ("postgres", "sqlite"):
            raise ValueError(f"unknown backend {backend!r}")
        problem = postgres_problem(dsn) if backend == "postgres" else None
        if problem is not None:
            rows.append({"backend": backend, "skipped": problem})
            continue
        # PostgreSQL: a scratch database of its own, so that its ``xact_commit`` counts
        # our workers only (the server may be shared); a scratch schema where the role
        # may not create databases (its count then includes everyone else's).
        with (
            scratch_store(backend, dsn, database=True, prefix="jobsync_load") as store,
            contextlib.ExitStack() as stack,
        ):
            xact = None
            if backend == "postgres":
                assert store.database is not None
                xact = Xact(dsn, store.database)
                stack.callback(xact.close)
            rows += measure(
                backend,
                store.open,
                scale=scale,
                window=window,
                total_tokens=total_tokens,
                xact=xact,
                churn=churn,
                baseline_window=baseline,
            )
    return rows


def table(rows: Sequence[Row], scale: float) -> str:
    interval = DEFAULT_INTERVAL / scale
    head = (
        f"{'backend':<9} {'phase':<7} {'worker':<9} {'rt/min':>7} {'hb/min':>7} "
        f"{'polls/real min':>14}  other requests per minute"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['backend']:<9} skipped: {r['skipped']}")
            continue
        if r["role"] == "xact_commit":
            continue
        others = ", ".join(
            f"{k} {v:.1f}" for k, v in r["verbs_per_minute"].items() if k != "heartbeat"
        )
        polls = f"{r['polls_per_real_minute']:.0f}" if r["backend"] == "sqlite" else "-"
        flag = (
            f"  ({r['unhealthy_events']} lease/transient events!)" if r["unhealthy_events"] else ""
        )
        lines.append(
            f"{r['backend']:<9} {r['phase']:<7} {r['role']:<9} {r['per_minute']:>7.1f} "
            f"{r['heartbeats_per_minute']:>7.1f} {polls:>14}  {others}{flag}"
        )
    churn = [r for r in rows if r.get("phase") == "churn" and "changes_per_minute" in r]
    runs = [r for r in rows if "intervals" in r]
    if runs:
        lines.append(
            f"(per worker; timings scaled {scale:g}x: heartbeat {interval:g} s, windows of "
            f"{runs[0]['seconds']:.0f} s = {runs[0]['intervals']:.0f} intervals; "
            f"rt/min = round trips per heartbeat interval x {PER_MINUTE:g}, i.e. per minute "
            f"at the default {DEFAULT_INTERVAL:g} s interval)"
        )
    if churn:
        lines.append(
            f"(churn: {churn[0]['changes_per_minute']:.1f} membership changes per minute at "
            "the default timings)"
        )
    for r in rows:
        if r.get("role") == "xact_commit":
            lines.append(
                f"{r['backend']} xact_commit of database {r['database']}: "
                f"{r['db_per_s']:.2f}/s in the steady window ({r['db_baseline_per_s']:.2f}/s "
                f"before the workers started) for {r['workers']} workers at {interval:g} s; "
                f"net at the default {DEFAULT_INTERVAL:g} s: {r['db_per_s_at_default']:.2f}/s "
                f"(the heartbeats alone: {r['heartbeats_per_s_at_default']:.2f}/s).  "
                f"Whole cluster: {r['cluster_per_s']:.1f}/s "
                f"(before: {r['cluster_baseline_per_s']:.1f}/s)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", default=default_dsn())
    parser.add_argument("--quick", action="store_true", help="10 s windows instead of 30 s")
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--scale", type=float, default=10.0, help="timing compression")
    parser.add_argument("--window", type=float, help="seconds per window")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    rows = run(args.dsn, args.quick, backends=names, scale=args.scale, window=args.window)
    print(table(rows, args.scale))
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
