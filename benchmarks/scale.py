"""Scale: 50 real worker processes on one PostgreSQL, and 1,000 simulated nodes.

    python -m benchmarks.scale [--quick] [--workers 50] [--nodes 1000]
                               [--timing default|fast] [--window SECONDS]
                               [--skip-processes] [--skip-sim] [--json PATH]

Processes.  A throwaway PostgreSQL cluster (``tests/support/pg.py``'s
``OwnedPgServer``) with ``max_connections = workers + 10``: one connection
per worker, the observer's, and the three reserved for superusers, so a
worker that opened a second connection would be refused.  Each worker is a
process running a small Job script (below): it enters a ``Job`` over a
``postgresql://`` URL and reports on stdout, with ``time.time()``, every
change of ``job.my_tokens`` (the exact set ``can_claim_task`` answers True
for; sampled when ``on_rebalance`` fires and every 50 ms) and of its
leadership.  Every process runs on this host, so their clocks agree.

- formation: from the first spawn until every worker is ready and the
  claimable sets are disjoint, cover all 10,000 tokens and are balanced
  (floor/ceil); also from the last worker's import (Python start-up done,
  which on a small box is most of it) to that instant;
- connections: ``pg_stat_activity`` client backends per worker
  (``application_name`` is the node name), sampled every second: the most
  any worker had at once, and the peak total;
- database load: ``pg_stat_database.xact_commit`` summed over the cluster
  (ours alone) over a steady window, less the observer's own statements;
  and how many of the node table's updates (the heartbeats) were HOT
  (``pg_stat_user_tables.n_tup_hot_upd``: no index entry written);
- crash heal: SIGKILL of a follower; time until its tokens are all claimable
  by the others (as they report), and until the survivors are balanced;
  ``xact_commit`` per second over that heal as well.

Timings: ``default`` is the library's (heartbeat 5 s, timeout 15 s); ``fast``
is heartbeat 0.5 s, timeout 2 s (what the fault tests use).

Simulation.  ``jobsync.sim.VirtualCluster``: real ``Node`` objects on one
memory store under virtual time, default timings, 10,000 tokens, the
invariant checker on.  All nodes start at the same instant: formation in
virtual seconds; requests per virtual second in steady state (every verb
but the local wait); a follower crashes: heal and rebalance in virtual
seconds; and the wall time of each part.

``--quick``: 10 processes at the fast timings with a 10 s window, and 200
simulated nodes.  ``run_processes`` and ``run_sim`` return the results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

from benchmarks._common import owned_pg_server, requests, write_json
from jobsync import CoordinationConfig
from jobsync.sim import VirtualCluster

Row = dict[str, Any]
TOKENS = 10_000
TIMINGS = {"default": (5.0, 15.0), "fast": (0.5, 2.0)}
"""Heartbeat interval and timeout, seconds."""
SAMPLE_EVERY = 1.0
"""Seconds between two ``pg_stat_activity`` samples."""

WORKER = r"""
import json, sys, threading, time
from jobsync import CoordinationConfig, Job
import jobsync.backends.postgres

def say(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()

say(ev="start", t=time.time())  # the imports are done
cfg = json.loads(sys.argv[1])
config = CoordinationConfig(
    total_tokens=cfg["tokens"],
    heartbeat_interval_sec=cfg["heartbeat"],
    heartbeat_timeout_sec=cfg["timeout"],
)
changed, stop = threading.Event(), threading.Event()

def watch_stdin():
    sys.stdin.read()
    stop.set()
    changed.set()

threading.Thread(target=watch_stdin, daemon=True).start()
with Job(cfg["name"], cfg["site"], cfg["url"], coordination_config=config,
         on_rebalance=changed.set, handle_sigterm=False, wait_on_enter=600) as job:
    say(ev="ready", t=time.time())
    last, leading = None, None
    while not stop.is_set():
        changed.clear()
        tokens, lead = job.my_tokens, job.am_i_leader()
        if tokens != last or lead != leading:
            say(ev="own", t=time.time(), tokens=sorted(tokens), leader=lead)
            last, leading = tokens, lead
        changed.wait(0.05)
say(ev="exit", t=time.time())
"""


# -- what the workers said --------------------------------------------------------------
class State:
    """Replayed worker reports: each worker's claimable set, who is ready, who leads."""

    def __init__(self) -> None:
        self.tokens: dict[str, frozenset[int]] = {}
        self.ready: set[str] = set()
        self.leaders: set[str] = set()

    def apply(self, name: str, event: Mapping[str, Any]) -> None:
        if event["ev"] == "ready":
            self.ready.add(name)
        elif event["ev"] == "own":
            self.tokens[name] = frozenset(event["tokens"])
            (self.leaders.add if event["leader"] else self.leaders.discard)(name)


def balanced(state: State, names: Iterable[str], total: int) -> bool:
    """Every one of ``names`` ready; their sets disjoint, covering ``total``, floor/ceil."""
    names = list(names)
    if not all(n in state.ready for n in names):
        return False
    sizes = [len(state.tokens.get(n, ())) for n in names]
    if sum(sizes) != total or max(sizes) - min(sizes) > 1:
        return False
    union: set[int] = set()
    for n in names:
        union |= state.tokens.get(n, frozenset())
    return len(union) == total


class Monitor:
    """Reads every worker's stdout (one thread each) into one time-ordered history."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.history: list[tuple[float, str, dict[str, Any]]] = []
        self.state = State()
        self.threads: list[threading.Thread] = []

    def follow(self, name: str, stream: IO[str]) -> None:
        thread = threading.Thread(target=self._read, args=(name, stream), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _read(self, name: str, stream: IO[str]) -> None:
        with contextlib.suppress(OSError, ValueError):  # the stream closed under us
            for line in stream:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                with self.lock:
                    self.history.append((float(event["t"]), name, event))
                    self.state.apply(name, event)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def wait(
        self,
        predicate: Callable[[State], bool],
        timeout: float,
        what: str,
        procs: Mapping[str, subprocess.Popen[str]] | None = None,
    ) -> None:
        """Until ``predicate`` holds; fails early if one of ``procs`` has ended."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if predicate(self.state):
                    return
            for name, proc in (procs or {}).items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{what}: worker {name} exited ({proc.returncode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout:g} s")
            time.sleep(0.05)

    def first_time(
        self, predicate: Callable[[State], bool], since: float, exclude: str | None = None
    ) -> float | None:
        """The earliest reported instant >= ``since`` at which ``predicate`` held."""
        with self.lock:
            events = sorted(self.history, key=lambda e: e[0])
        state = State()
        for t, name, event in events:
            if name == exclude and t >= since:
                continue
            state.apply(name, event)
            if t >= since and predicate(state):
                return t
        return None

    def times(self, kind: str) -> list[float]:
        with self.lock:
            return [t for t, _, e in self.history if e["ev"] == kind]


class Observer:
    """One connection that samples ``pg_stat_activity`` and reads ``xact_commit``."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.lock = threading.Lock()
        self.statements = 0
        self.per_worker: dict[str, int] = {}
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _execute(self, query: str) -> list[tuple[Any, ...]]:
        with self.lock:
            self.statements += 1
            return self.conn.execute(query).fetchall()

    def xact(self) -> tuple[int, int]:
        """(committed transactions of the whole cluster, our statements so far)."""
        with self.lock:
            self.statements += 1
            row = self.conn.execute(
                "SELECT sum(xact_commit)::bigint FROM pg_stat_database"
            ).fetchone()
            assert row is not None
            return int(row[0]), self.statements

    def node_updates(self) -> tuple[int, int]:
        """(updates, HOT updates) of the node table, where every heartbeat writes."""
        with self.lock:
            self.statements += 1
            row = self.conn.execute(
                "SELECT coalesce(sum(n_tup_upd), 0)::bigint,"
                " coalesce(sum(n_tup_hot_upd), 0)::bigint"
                " FROM pg_stat_user_tables WHERE relname = 'sync_node'"
            ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

    def start(self) -> None:
        self._thread.start()

    def _sample(self) -> None:
        import psycopg

        while not self._stop.wait(SAMPLE_EVERY):
            try:
                rows = self._execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity"
                    " WHERE backend_type = 'client backend' GROUP BY 1"
                )
            except psycopg.Error:
                return  # the server went away: nothing more to sample
            self.peak_total = max(self.peak_total, sum(int(r[1]) for r in rows))
            for app, count in rows:
                self.per_worker[str(app)] = max(self.per_worker.get(str(app), 0), int(count))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.close()


# -- processes ----------------------------------------------------------------------------
def _stop(procs: Iterable[subprocess.Popen[str]], monitor: Monitor) -> None:
    """SIGKILL every worker (the server is thrown away), reap it, close its pipes."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    monitor.join(10)  # every reader has seen its EOF
    for proc in procs:
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _lease_left(dsn: str, name: str) -> float:
    """Seconds until ``name``'s lease runs out, on the database's clock (a short-lived
    handle of its own)."""
    from jobsync.backends.postgres import PostgresBackend

    with PostgresBackend(dsn, client="observer", migrate=False) as db:
        now, nodes = db.read_nodes("scale")
    return next(n.lease_expires for n in nodes if n.name == name) - now


def run_processes(
    workers: int = 50, timing: str = "default", window: float = 60.0, tokens: int = TOKENS
) -> Row:
    """Formation, connections, steady load and crash heal of real worker processes."""
    heartbeat, timeout = TIMINGS[timing]
    max_connections = workers + 10
    patience = 120.0 + 2.0 * workers + 4 * timeout
    with owned_pg_server({"max_connections": str(max_connections)}) as server:
        url = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        observer = Observer(server.dsn)
        monitor = Monitor()
        procs: dict[str, subprocess.Popen[str]] = {}
        names = [f"w{i:02d}" for i in range(workers)]
        try:
            observer.start()
            spawned = time.time()
            for name in names:
                cfg = {
                    "name": name,
                    "site": "scale",
                    "url": url,
                    "tokens": tokens,
                    "heartbeat": heartbeat,
                    "timeout": timeout,
                }
                proc = subprocess.Popen(
                    [sys.executable, "-c", WORKER, json.dumps(cfg)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                procs[name] = proc
                assert proc.stdout is not None
                monitor.follow(name, proc.stdout)
            monitor.wait(lambda s: balanced(s, names, tokens), patience, "formation", procs)
            formed = monitor.first_time(lambda s: balanced(s, names, tokens), spawned)
            assert formed is not None
            started, ready = monitor.times("start"), monitor.times("ready")

            time.sleep(2 * heartbeat)  # the last plan's acknowledgements and reads are done
            u0, (x0, q0), t0 = observer.node_updates(), observer.xact(), time.time()
            time.sleep(window)
            u1, (x1, q1), t1 = observer.node_updates(), observer.xact(), time.time()
            # Our own statements are transactions too (the reading ones included).
            steady = (x1 - x0 - (q1 - q0)) / (t1 - t0)

            with monitor.lock:
                leaders = set(monitor.state.leaders)
                victim = next(n for n in names if n not in leaders)
                lost = monitor.state.tokens[victim]
            survivors = [n for n in names if n != victim]
            lease_left = _lease_left(server.dsn, victim)
            (x2, q2), killed = observer.xact(), time.time()
            procs[victim].send_signal(signal.SIGKILL)

            def covered(s: State) -> bool:
                held: set[int] = set()
                for n in survivors:
                    held |= s.tokens.get(n, frozenset())
                return lost <= held

            others = {n: p for n, p in procs.items() if n != victim}
            monitor.wait(covered, 4 * timeout + 30, "crash heal", others)
            healed = monitor.first_time(covered, killed, exclude=victim)
            monitor.wait(lambda s: balanced(s, survivors, tokens), patience, "rebalance", others)
            (x3, q3), t3 = observer.xact(), time.time()
            rebalanced = monitor.first_time(
                lambda s: balanced(s, survivors, tokens), killed, exclude=victim
            )
            assert healed is not None and rebalanced is not None
            heal_rate = (x3 - x2 - (q3 - q2)) / (t3 - killed)
            connections = {n: observer.per_worker.get(n, 0) for n in names}
        finally:
            _stop(procs.values(), monitor)
            observer.close()
    return {
        "workers": workers,
        "timing": timing,
        "heartbeat_s": heartbeat,
        "timeout_s": timeout,
        "tokens": tokens,
        "max_connections": max_connections,
        "formation_s": formed - spawned,
        "all_started_s": max(started) - spawned,
        "all_ready_s": max(ready) - spawned,
        "formation_after_last_start_s": formed - max(started),
        "connections_per_worker_max": max(connections.values()),
        "connections_per_worker_min": min(connections.values()),
        "peak_client_connections": observer.peak_total,
        "steady_window_s": t1 - t0,
        "xact_per_s": steady,
        "xact_per_worker_per_interval": steady / workers * heartbeat,
        "node_updates": u1[0] - u0[0],
        "node_hot_updates": u1[1] - u0[1],
        "victim_tokens": len(lost),
        "lease_left_s": lease_left,
        "heal_s": healed - killed,
        "rebalanced_s": rebalanced - killed,
        "heal_xact_per_s": heal_rate,
    }


# -- simulation ----------------------------------------------------------------------------
def _sim_balanced(c: VirtualCluster, names: list[str], total: int) -> bool:
    if not c.ready(names):
        return False
    sets = c.claimable()
    sizes = [len(sets.get(n, ())) for n in names]
    return sum(sizes) == total and max(sizes) - min(sizes) <= 1 and len(sets) == len(names)


def _requests(c: VirtualCluster) -> int:
    return sum(requests(sim.handle.statistics()) for sim in c.nodes.values())


def run_sim(nodes: int = 1_000, tokens: int = TOKENS, seed: int = 1, steady: float = 60.0) -> Row:
    """Formation, steady requests, crash heal of ``nodes`` simulated nodes (virtual time)."""
    cfg = CoordinationConfig(total_tokens=tokens)
    wall = time.perf_counter()
    c = VirtualCluster(cfg, seed=seed, check=True)
    names = [f"n{i:04d}" for i in range(nodes)]
    start = c.now
    for name in names:
        c.add(name)
    if not c.run_until(lambda: _sim_balanced(c, names, tokens), 600):
        raise TimeoutError(f"{nodes} simulated nodes not balanced in 600 virtual s")
    formation, formation_wall = c.now - start, time.perf_counter() - wall

    wall = time.perf_counter()
    c.run_for(2 * cfg.heartbeat_interval_sec)
    before, t0 = _requests(c), c.now
    c.run_for(steady)
    per_s = (_requests(c) - before) / (c.now - t0)
    steady_wall = time.perf_counter() - wall

    wall = time.perf_counter()
    leader = c.leader()
    victim = next(n for n in names if leader is None or n != leader.key)
    lost = c.claimable()[victim]
    survivors = [n for n in names if n != victim]
    now, records = c.nodes[victim].handle.read_nodes(c.site)
    lease_left = next(r.lease_expires for r in records if r.name == victim) - now
    c.crash(victim)
    killed = c.now

    def covered() -> bool:
        held: set[int] = set()
        for n, toks in c.claimable().items():
            if n != victim:
                held |= toks
        return lost <= held

    if not c.run_until(covered, 600):
        raise TimeoutError("crash not healed in 600 virtual s")
    healed = c.now - killed
    if not c.run_until(lambda: _sim_balanced(c, survivors, tokens), 600):
        raise TimeoutError("not rebalanced in 600 virtual s")
    rebalanced = c.now - killed
    c.check_exclusive()
    return {
        "nodes": nodes,
        "tokens": tokens,
        "heartbeat_s": cfg.heartbeat_interval_sec,
        "timeout_s": cfg.heartbeat_timeout_sec,
        "formation_virtual_s": formation,
        "formation_wall_s": formation_wall,
        "steady_requests_per_virtual_s": per_s,
        "steady_requests_per_node_per_min": per_s / nodes * 60.0,
        "steady_virtual_s": steady,
        "steady_wall_s": steady_wall,
        "victim_tokens": len(lost),
        "lease_left_virtual_s": lease_left,
        "heal_virtual_s": healed,
        "rebalanced_virtual_s": rebalanced,
        "crash_wall_s": time.perf_counter() - wall,
        "events": c.events,
    }


# -- output ---------------------------------------------------------------------------------
def process_table(r: Row) -> str:
    return "\n".join(
        [
            f"{r['workers']} worker processes on one PostgreSQL (timing {r['timing']}: heartbeat "
            f"{r['heartbeat_s']:g} s, timeout {r['timeout_s']:g} s; T={r['tokens']:,}; "
            f"max_connections={r['max_connections']})",
            f"  formation (spawn -> all ready and balanced)    {r['formation_s']:8.2f} s",
            f"    of which Python start-up (last import done)  {r['all_started_s']:8.2f} s",
            f"    last import done -> balanced                 "
            f"{r['formation_after_last_start_s']:8.2f} s",
            f"    spawn -> all ready                           {r['all_ready_s']:8.2f} s",
            f"  connections per worker (pg_stat_activity)     "
            f"{r['connections_per_worker_min']}..{r['connections_per_worker_max']}"
            f"   (peak client backends {r['peak_client_connections']}, observer included)",
            f"  steady load, xact_commit (whole cluster)       {r['xact_per_s']:8.2f} /s"
            f"   ({r['xact_per_worker_per_interval']:.2f} per worker per heartbeat interval,"
            f" over {r['steady_window_s']:.0f} s)",
            f"  node-table updates in that window (HOT)        {r['node_updates']:8d}"
            f"   ({r['node_hot_updates']} HOT, heap-only: no index write)",
            f"  crash heal: {r['victim_tokens']} tokens claimable elsewhere  {r['heal_s']:8.2f} s"
            f"   (its lease had {r['lease_left_s']:.2f} s left at the kill:"
            f" {r['heal_s'] - r['lease_left_s']:.2f} s after it ran out)",
            f"  crash: survivors balanced again               {r['rebalanced_s']:8.2f} s",
            f"  xact_commit from the kill to balanced         {r['heal_xact_per_s']:8.2f} /s",
        ]
    )


def sim_table(r: Row) -> str:
    return "\n".join(
        [
            f"{r['nodes']:,} simulated nodes (VirtualCluster, T={r['tokens']:,}, heartbeat "
            f"{r['heartbeat_s']:g} s, timeout {r['timeout_s']:g} s, invariants checked)",
            f"  formation (all start at once -> balanced)  {r['formation_virtual_s']:8.2f} "
            f"virtual s  ({r['formation_wall_s']:.1f} s wall)",
            f"  steady requests                            "
            f"{r['steady_requests_per_virtual_s']:8.1f} /virtual s  "
            f"({r['steady_requests_per_node_per_min']:.1f} per node per minute; "
            f"{r['steady_virtual_s']:g} virtual s in {r['steady_wall_s']:.1f} s wall)",
            f"  crash heal: {r['victim_tokens']} tokens claimable elsewhere "
            f"{r['heal_virtual_s']:8.2f} virtual s  (lease had {r['lease_left_virtual_s']:.2f}"
            f" s left: {r['heal_virtual_s'] - r['lease_left_virtual_s']:.3f} s after it ran out)",
            f"  crash: survivors balanced again           {r['rebalanced_virtual_s']:8.2f} "
            f"virtual s  ({r['crash_wall_s']:.1f} s wall)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10 processes, 200 simulated nodes")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--timing", choices=sorted(TIMINGS))
    parser.add_argument("--window", type=float, help="seconds of steady state measured")
    parser.add_argument("--skip-processes", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    workers = args.workers or (10 if args.quick else 50)
    nodes = args.nodes or (200 if args.quick else 1_000)
    timing = args.timing or ("fast" if args.quick else "default")
    window = args.window or (10.0 if args.quick else 60.0)
    out: dict[str, Row] = {}
    if not args.skip_processes:
        started = time.monotonic()
        out["processes"] = run_processes(workers, timing, window)
        print(process_table(out["processes"]))
        print(f"  ({time.monotonic() - started:.0f} s wall)", flush=True)
    if not args.skip_sim:
        out["sim"] = run_sim(nodes)
        print(sim_table(out["sim"]))
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
