"""1,000 workers on one PostgreSQL through PgBouncer (transaction pooling, a small server pool).

    python -m benchmarks.pooled [--quick] [--workers 1000] [--processes 10]
                                [--pool 20] [--window SECONDS] [--json PATH]

A throwaway PostgreSQL cluster (``max_connections = pool + 10``) behind a
throwaway PgBouncer (``tests/support/pgbouncer.py``: ``pool_mode =
transaction``, ``default_pool_size = --pool``).  ``--processes`` Python
processes each run ``workers / processes`` Jobs (one thread each, entered
together) over ``jobsync_pooler=transaction`` with the library's default
timings (heartbeat 5 s, timeout 15 s) and a poll interval of one heartbeat
interval (``jobsync_poll_interval=5000``), so the database sees ``--workers``
workers on at most ``--pool`` server connections.  Measured from the
database (an observer on a direct connection) and the pooler:

- formation: from the first spawn until the token table (10,000 tokens)
  names every worker, balanced (floor/ceil), with nothing pending;
- steady state over ``--window`` seconds: transactions a second
  (``pg_stat_database.xact_commit``), the database's CPU (user + system time
  of every server process, from ``/proc``, as a share of one core), server
  connections (PgBouncer's ``SHOW SERVERS``, sampled every second: the most),
  and the heartbeat round trip's latency percentiles as the workers saw them
  (each process times its Jobs' heartbeats);
- crash heal: SIGKILL of one process (all its Jobs at once): time until no
  token names its workers and the survivors are balanced again;
- graceful hand-off: SIGTERM of another process (its Jobs leave): likewise.

``--quick``: 100 workers in 4 processes, pool 10, a 10 s window (``make
bench`` runs it).  Needs ``pgbouncer`` (Debian package) on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks._common import owned_pg_server, repo_on_path, write_json

TOKENS = 10_000
SITE = "pooled"
WORKER = r"""
import json, sys, threading, time
from jobsync import CoordinationConfig, Job
from jobsync.backends.postgres import PostgresBackend

url, names = sys.argv[1], sys.argv[2].split(",")
latencies, lock = [], threading.Lock()
beat = PostgresBackend.heartbeat

def timed(self, *args, **kwargs):
    started = time.perf_counter()
    try:
        return beat(self, *args, **kwargs)
    finally:
        with lock:
            latencies.append(time.perf_counter() - started)

PostgresBackend.heartbeat = timed
jobs, stop = [], threading.Event()

def run(name):
    job = Job(name, "pooled", url, coordination_config=CoordinationConfig(), wait_on_enter=900,
              handle_sigterm=False)
    job.__enter__()
    jobs.append(job)
    stop.wait()
    job.__exit__(None, None, None)

import signal
signal.signal(signal.SIGTERM, lambda *a: stop.set())
threads = [threading.Thread(target=run, args=(n,)) for n in names]
for t in threads:
    t.start()
while not stop.wait(1.0):
    with lock:
        sample, latencies[:] = list(latencies), []
    print(json.dumps({"ready": len(jobs), "beats": sample}), flush=True)
for t in threads:
    t.join(60)
print(json.dumps({"exited": len(names)}), flush=True)
"""


class Observer:
    """A direct connection to the server: the token table, commits and the server's CPU."""

    def __init__(self, dsn: str, schema: str = "public") -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.schema = schema

    def owners(self) -> tuple[dict[str, int], int]:
        """Tokens per owner, and how many are pending or unowned."""
        try:
            rows = self.conn.execute(
                f'SELECT node, count(*) FROM "{self.schema}".sync_token WHERE site = %s '
                "AND pending_to IS NULL GROUP BY node",
                (SITE,),
            ).fetchall()
        except Exception:  # the schema is not there yet
            return {}, TOKENS
        counts = {r[0]: int(r[1]) for r in rows if r[0] is not None}
        return counts, TOKENS - sum(counts.values())

    def balanced(self, names: set[str]) -> bool:
        counts, loose = self.owners()
        if loose or set(counts) != names:
            return False
        return max(counts.values()) - min(counts.values()) <= 1

    def xact(self) -> int:
        row = self.conn.execute("SELECT sum(xact_commit) FROM pg_stat_database").fetchone()
        return int(row[0]) if row else 0

    def cpu_seconds(self) -> float:
        """User + system CPU of every server process (children of the postmaster)."""
        pids = [
            r[0]
            for r in self.conn.execute("SELECT pid FROM pg_stat_activity").fetchall()
            if r[0] is not None
        ]
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / ticks


def wait(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"no {what} after {timeout:g} s")
        time.sleep(every)
    return time.monotonic() - started


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {f"p{int(q * 100)}": round(pick(q) * 1000, 2) for q in (0.5, 0.9, 0.99)} | {
        "max": round(ordered[-1] * 1000, 2)
    }


def run(workers: int, processes: int, pool: int, window: float) -> dict[str, Any]:
    repo_on_path()
    from tests.support.pgbouncer import PgBouncer

    settings = {"max_connections": str(pool + 10)}
    with owned_pg_server(settings) as server, PgBouncer(server.dsn, pool_size=pool) as bouncer:
        url = bouncer.url(jobsync_poll_interval="5000")
        names = [f"w{i:04d}" for i in range(workers)]
        groups = [names[i::processes] for i in range(processes)]
        beats: list[float] = []
        ready: dict[int, int] = {}
        lock = threading.Lock()
        procs: list[subprocess.Popen[str]] = []
        observer = Observer(server.dsn)
        servers_seen = [0]
        sampling = threading.Event()

        def follow(index: int, proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                with lock:
                    if "ready" in event:
                        ready[index] = event["ready"]
                        if sampling.is_set():
                            beats.extend(event["beats"])

        def sample_servers() -> None:
            while not stop_sampling.is_set():
                with contextlib.suppress(Exception):
                    servers_seen[0] = max(servers_seen[0], bouncer.server_connections())
                stop_sampling.wait(1.0)

        stop_sampling = threading.Event()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd()])))
        started = time.monotonic()
        try:
            for index, group in enumerate(groups):
                proc = subprocess.Popen(
                    [sys.executable, "-c", WORKER, url, ",".join(group)],
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                procs.append(proc)
                threading.Thread(target=follow, args=(index, proc), daemon=True).start()
            threading.Thread(target=sample_servers, daemon=True).start()
            everyone = set(names)
            wait(lambda: observer.balanced(everyone), 900, "balanced table", every=0.5)
            formation = time.monotonic() - started
            wait(lambda: sum(ready.values()) == workers, 300, "every Job entered")
            sampling.set()
            xact0, cpu0, t0 = observer.xact(), observer.cpu_seconds(), time.monotonic()
            time.sleep(window)
            xact1, cpu1, t1 = observer.xact(), observer.cpu_seconds(), time.monotonic()
            sampling.clear()
            steady_tps = (xact1 - xact0) / (t1 - t0)
            cpu_share = (cpu1 - cpu0) / (t1 - t0)
            with lock:
                latency = percentiles(beats)
                samples = len(beats)
            # crash: SIGKILL the last process; graceful: SIGTERM the one before
            victim, leaver = procs[-1], procs[-2]
            killed = set(groups[-1])
            victim.kill()
            crash_at = time.monotonic()
            crash_heal = wait(lambda: observer.balanced(everyone - killed), 120, "heal after kill")
            crash_heal = time.monotonic() - crash_at
            left = set(groups[-2])
            leaver.send_signal(signal.SIGTERM)
            leave_at = time.monotonic()
            wait(lambda: observer.balanced(everyone - killed - left), 120, "balance after leave")
            hand_off = time.monotonic() - leave_at
        finally:
            stop_sampling.set()
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
            observer.conn.close()
        return {
            "workers": workers,
            "processes": processes,
            "pool": pool,
            "formation_s": round(formation, 1),
            "steady_tps": round(steady_tps, 1),
            "db_cpu_core_share": round(cpu_share, 3),
            "server_connections_max": servers_seen[0],
            "heartbeat_ms": latency,
            "heartbeat_samples": samples,
            "crash_heal_s": round(crash_heal, 2),
            "graceful_hand_off_s": round(hand_off, 2),
            "window_s": window,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100 workers, 4 processes, pool 10")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--processes", type=int)
    parser.add_argument("--pool", type=int)
    parser.add_argument("--window", type=float)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the workers, the pooler and the server are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    quick = {"workers": 100, "processes": 4, "pool": 10, "window": 10.0}
    full = {"workers": 1000, "processes": 10, "pool": 20, "window": 30.0}
    base = quick if args.quick else full
    chosen = {key: getattr(args, key) or value for key, value in base.items()}
    result = run(**chosen)
    print(json.dumps(result, indent=2))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
