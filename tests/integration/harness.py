"""Jepsen-style harness: real worker processes, a real database, faults on purpose.

Reusable by tests and benchmarks (``benchmarks/failover.py``).  Pieces:

- ``Timing``: the coordination timings handed to every worker.
- ``TcpProxy``: a loopback TCP proxy the test controls, to partition one
  worker from PostgreSQL (``partition("blackhole")``: connections stay up but
  no byte moves, new ones hang; ``partition("reset")``: every connection is
  reset and new ones are refused) and to heal it again.
- ``Cluster``: the site under test.  It creates the harness tables next to
  jobsync's (``results``, ``ownership_log``, ``control``), starts workers
  (``tests/integration/worker.py``) as subprocesses, signals them, records
  faults, and kills every process it started when closed.  PostgreSQL or
  SQLite (the SQLite log is one JSON-lines file per worker).
- ``HeartbeatMonitor``: the node table's heartbeats as recorded, polled on a
  connection of its own, to measure how long any worker went without one.
- ``History``: the checker.  It rebuilds, from the workers' ownership logs,
  per-(worker process, token) *runs*: ``start`` is the first sample that saw
  the token claimable, ``end`` the last sample that still saw it (or the
  instant the process was killed).  Every instant at which a worker could
  answer True lies in one of its runs (up to the sampling step, a few
  microseconds while busy and ``idle_sample_ms`` while idle), so:

  * two runs of different processes on one token that intersect are a
    violation of guarantee 1 (``overlaps``);
  * a token's uncovered time between runs is an upper bound of the real gap
    (``gaps``), and the time from a fault to the first run covering each
    token is an upper bound of the heal time (``heal``);
  * the accepted writes (``results`` rows, with the epoch and incarnation of
    the durable claim they were written under and, on PostgreSQL, their
    commit time) must never go back in epoch order per token, and one epoch
    belongs to one incarnation (``epoch_violations``);
  * every task is done exactly once (``duplicates``, ``stranded``).

All times are seconds on the database's clock (epoch seconds).

Teeth runs (by hand, never in CI): ``JOBSYNC_IT_LIBRARY=/path/to/an/older/checkout``
puts that directory first on the workers' ``PYTHONPATH`` (their ``jobsync`` is
imported from there; e.g. ``git archive <commit> jobsync | tar -x -C DIR``), and
``JOBSYNC_IT_DEFENCES_OFF=name,...`` turns those ``jobsync.core.defences``
defences off in every worker.  A test that passes against the library must
then fail on the defect it exists for.

Limit: the workers log to the database under test.  A worker that ends while
the server is down loses its last entries (its final flush waits 3 s, then gives
up), so its runs look open until its exit: do not end workers during a server
outage in a test that checks overlaps (black-hole them with a proxy instead).
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("worker.py")
POOLED = "&jobsync_pooler=transaction&jobsync_poll_interval=200"
"""jobsync's URL options through a transaction pooler: polls at 0.2 s, in scale
with the fault tests' 0.5 s heartbeat (the default 1 s suits the default 5 s)."""
REPO = Path(__file__).resolve().parents[2]


# -- timings -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    heartbeat: float = 0.5
    timeout: float = 2.0
    margin: float = 0.5
    drain_timeout: float = 2.0
    settle: float | None = None  # default: one heartbeat interval
    reconcile: float | None = None  # rebalance_check_interval_sec; default: the library's

    @property
    def crash_bound(self) -> float:
        """The README's guarantee 2: claimable again within timeout + 1 s of a crash."""
        return self.timeout + 1.0

    GRACEFUL_BOUND = 1.0
    """... and within 1 s of a graceful join or leave."""

    @property
    def ack_timeout(self) -> float:
        return 2 * self.heartbeat

    def as_dict(self) -> dict[str, Any]:
        return {
            "heartbeat": self.heartbeat,
            "timeout": self.timeout,
            "margin": self.margin,
            "drain_timeout": self.drain_timeout,
            "settle": self.settle,
            "reconcile": self.reconcile,
        }


FAST = Timing()
"""The suite's timings: heartbeat 0.5 s, timeout 2 s, margin 0.5 s."""

TOLERANCE = 1.0
"""Seconds added to every time bound of the README's guarantees in these tests: a
loaded 2-core CI machine runs the database, the test and up to 20 Python
workers at once, and a worker's threads can wait that long for a core."""


class Stranded(AssertionError):
    """Tasks left undone: the message names who holds each one's claim."""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


# -- the proxy -----------------------------------------------------------------------------
class TcpProxy:
    """A loopback TCP proxy to ``(host, port)``, listening on 127.0.0.1.

    Modes: ``pass`` (forward), ``blackhole`` (accept, but move no byte either
    way: what a worker sees when a network path silently drops packets),
    ``oneway`` (requests reach the server, its replies are dropped: an
    asymmetric partition) and ``reset`` (reset every connection, refuse new
    ones).  ``heal()`` goes back to ``pass``; bytes held during a black hole
    are delivered then, as TCP retransmission would.  ``dropped`` counts the
    reply bytes lost in ``oneway``.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self.mode = "pass"
        self._closed = False
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._accept_loop, name="proxy", daemon=True)
        self._thread.start()

    def partition(self, mode: str = "blackhole") -> None:
        if mode not in ("blackhole", "oneway", "reset"):
            raise ValueError(f"unknown partition mode {mode!r}")
        with self._lock:
            self.mode = mode
            pairs = list(self._pairs) if mode == "reset" else []
        for pair in pairs:
            self._reset(pair)

    def heal(self) -> None:
        with self._lock:
            self.mode = "pass"

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._reset(pair)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.1)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.mode == "reset":
                self._abort(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._abort(client)
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, upstream)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, upstream = pair
        other = {client: upstream, upstream: client}
        try:
            while not self._closed:
                mode = self.mode
                if mode == "reset":
                    break
                if mode == "blackhole":
                    time.sleep(0.01)  # leave the bytes where they are
                    continue
                ready, _, _ = select.select([client, upstream], [], [], 0.05)
                for sock in ready:
                    if self.mode not in ("pass", "oneway"):
                        break
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is upstream and self.mode == "oneway":
                        self.dropped += len(data)  # the reply is lost
                        continue
                    other[sock].sendall(data)
        except OSError:
            pass
        finally:
            self._reset(pair)

    def _reset(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
        for sock in pair:
            self._abort(sock)

    @staticmethod
    def _abort(sock: socket.socket) -> None:
        """Close with RST (SO_LINGER 0), as a middlebox dropping the flow would."""
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        with contextlib.suppress(OSError):
            sock.close()


# -- worker processes ---------------------------------------------------------------------
@dataclass
class Proc:
    """One worker process the cluster started."""

    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    started_at: float
    via: str  # "direct" or the proxy's port
    killed_at: float | None = None
    stopped_at: float | None = None
    exited_at: float | None = None
    signals: list[tuple[str, float]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def instance(self) -> tuple[str, int]:
        return (self.name, self.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.out.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


@dataclass
class Fault:
    kind: str
    at: float  # when the fault began (database clock)
    victims: tuple[tuple[str, int], ...] = ()
    until: float | None = None  # when the fault ended (a pause, an outage, a partition)
    info: dict[str, Any] = field(default_factory=dict)


class Cluster:
    """A site of worker processes on one database, plus the tables the checker reads."""

    def __init__(
        self,
        *,
        workdir: Path,
        dsn: str | None = None,
        sqlite_path: Path | None = None,
        tokens: int = 64,
        tasks: int = 20_000,
        timing: Timing = FAST,
        variant: str = "tx",
        work_ms: float = 0.0,
        site: str = "faults",
        schema: str | None = None,
        pooler: Any = None,
        log_files: bool = False,
    ) -> None:
        """``pooler``: a ``tests.support.pgbouncer.PgBouncer`` in front of ``dsn``;
        workers then reach jobsync's tables through it in pooled mode
        (``jobsync_pooler=transaction``), while their own connection (which
        psycopg would prepare statements on) and the log stay direct.
        ``log_files``: PostgreSQL workers log ownership to files, not to the
        database under test (a failover that loses commits would lose log
        entries too, and with them the checker's evidence)."""
        if (dsn is None) == (sqlite_path is None):
            raise ValueError("give exactly one of dsn (PostgreSQL) or sqlite_path")
        self.workdir = workdir
        self.dsn = dsn
        self.sqlite_path = sqlite_path
        self.backend = "postgres" if dsn is not None else "sqlite"
        self.tokens = tokens
        self.tasks = tasks
        self.timing = timing
        self.variant = variant
        self.site = site
        self.schema = schema or f"it_{uuid.uuid4().hex[:12]}"
        self.pooler = pooler
        self.log_files = log_files
        self.procs: list[Proc] = []
        self.faults: list[Fault] = []
        self.proxies: list[TcpProxy] = []
        self.offset = 0.0
        self._conn: Any = None
        self._seq = 0
        self.date = ""
        self._setup(work_ms)

    # -- database ----------------------------------------------------------------------
    def _setup(self, work_ms: float) -> None:
        if self.backend == "postgres":
            conn = self.conn()
            s = f'"{self.schema}"'
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            conn.execute(
                f"""CREATE TABLE {s}.results (
                    task_id integer PRIMARY KEY, node text NOT NULL, pid integer NOT NULL,
                    token integer, epoch bigint, incarnation bigint, claimed_at timestamptz,
                    variant text NOT NULL,
                    written_at timestamptz NOT NULL DEFAULT clock_timestamp())"""
            )
            conn.execute(
                f"""CREATE TABLE {s}.ownership_log (
                    id bigserial PRIMARY KEY, node text NOT NULL, pid integer NOT NULL,
                    kind text NOT NULL, t double precision NOT NULL, t_prev double precision,
                    tokens integer[], added integer[], removed integer[], info jsonb,
                    inserted_at timestamptz NOT NULL DEFAULT clock_timestamp())"""
            )
            conn.execute(
                f"CREATE TABLE {s}.control (mark integer NOT NULL, work_ms real NOT NULL, "
                "hold_ms real NOT NULL, hold_seq integer NOT NULL, hold_s real NOT NULL)"
            )
            conn.execute(f"INSERT INTO {s}.control VALUES (0, %s, 0, 0, 0)", (work_ms,))
            self.offset = self._measure_offset()
            row = conn.execute("SELECT (clock_timestamp() AT TIME ZONE 'UTC')::date").fetchone()
            self.date = row[0].isoformat()
        else:
            import sqlite3

            assert self.sqlite_path is not None
            conn = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                """CREATE TABLE results (
                    task_id INTEGER PRIMARY KEY, node TEXT NOT NULL, pid INTEGER NOT NULL,
                    token INTEGER, epoch INTEGER, incarnation INTEGER, claimed_at REAL,
                    variant TEXT NOT NULL, written_at REAL)"""
            )
            conn.execute(
                "CREATE TABLE control (mark INTEGER NOT NULL, work_ms REAL NOT NULL, "
                "hold_ms REAL NOT NULL, hold_seq INTEGER NOT NULL, hold_s REAL NOT NULL)"
            )
            conn.execute("INSERT INTO control VALUES (0, ?, 0, 0, 0)", (work_ms,))
            conn.close()
            self.date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()

    def conn(self) -> Any:
        """The harness's own autocommit connection (direct, never through a proxy)."""
        if self.backend == "sqlite":
            import sqlite3

            assert self.sqlite_path is not None
            return sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None)
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            assert self.dsn is not None
            self._conn = psycopg.connect(
                self.dsn, autocommit=True, application_name="harness", connect_timeout=5
            )
        return self._conn

    def query(
        self, sql: str, params: Iterable[Any] = (), retry: float = 30.0
    ) -> list[tuple[Any, ...]]:
        """Run one read on the harness connection, retrying while the server is down."""
        deadline = time.monotonic() + retry
        while True:
            try:
                if self.backend == "sqlite":
                    conn = self.conn()
                    try:
                        return list(conn.execute(sql.replace("%s", "?"), tuple(params)).fetchall())
                    finally:
                        conn.close()
                return list(self.conn().execute(sql, tuple(params)).fetchall())
            except Exception:
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        self._conn.close()
                    self._conn = None
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def _measure_offset(self) -> float:
        conn = self.conn()
        best: tuple[float, float] | None = None
        for _ in range(5):
            before = time.time()
            row = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
            after = time.time()
            if best is None or after - before < best[0]:
                best = (after - before, float(row[0]) - (before + after) / 2)
        assert best is not None
        return best[1]

    def now(self) -> float:
        """The database clock, estimated locally (same host: the offset is a round trip)."""
        return time.time() + self.offset

    def table(self, name: str) -> str:
        return f'"{self.schema}".{name}' if self.backend == "postgres" else name

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        if self.backend == "sqlite":
            conn = self.conn()
            try:
                conn.execute(sql.replace("%s", "?"), params)
            finally:
                conn.close()
        else:
            self.conn().execute(sql, params)

    def set_work(self, work_ms: float, hold_ms: float = 0.0) -> None:
        """Per-task work time (and time held inside the completing transaction), live:
        workers pick it up within 0.1 s."""
        self._write(
            f"UPDATE {self.table('control')} SET work_ms = %s, hold_ms = %s", (work_ms, hold_ms)
        )

    def hold_transaction(self, seconds: float) -> None:
        """Ask the workers spawned with ``holder=True`` to keep their next completing
        transaction open for ``seconds`` (see ``worker.Worker.hold``)."""
        self._write(
            f"UPDATE {self.table('control')} SET hold_seq = hold_seq + 1, hold_s = %s",
            (seconds,),
        )

    def sync(self, procs: Iterable[Proc], timeout: float = 10) -> None:
        """Wait until each of ``procs`` logged a new mark: what it logged before is in."""
        procs = list(procs)
        self._write(f"UPDATE {self.table('control')} SET mark = mark + 1", ())
        mark = int(self.query(f"SELECT mark FROM {self.table('control')}")[0][0])
        wanted = {p.pid for p in procs}

        def marked() -> bool:
            self._check_alive(procs)
            got = {
                e["pid"]
                for e in self.entries()
                if e["kind"] == "mark" and (e["info"] or {}).get("mark", 0) >= mark
            }
            return wanted <= got

        wait_for(marked, timeout, f"workers {sorted(wanted)} to log mark {mark}\n{self.tails()}")

    def done_count(self) -> int:
        return int(self.query(f"SELECT count(*) FROM {self.table('results')}")[0][0])

    def finish(self, timeout: float = 120, stall: float = 10) -> None:
        """Let the remaining tasks flow fast and wait until every one is done; raise
        ``Stranded`` if none got done for ``stall`` seconds."""
        self.set_work(0)
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while True:
            done = self.done_count()
            if done == self.tasks:
                return
            if done != last:
                last, since = done, time.monotonic()
            if time.monotonic() - since >= stall or time.monotonic() >= deadline:
                raise Stranded(
                    f"{self.tasks - done} of {self.tasks} tasks not done, none done for "
                    f"{time.monotonic() - since:.0f} s: {self.stranded_claims()}"
                )
            time.sleep(0.05)

    def stranded_claims(self) -> list[dict[str, Any]]:
        """Undone tasks and their claim rows: who holds them, and is that incarnation live."""
        if self.backend != "postgres":
            return []
        rows = self.query(
            f"""SELECT a.task_key, a.node, a.incarnation, a.status,
                    round(extract(epoch FROM a.claimed_at)::numeric, 3),
                    n.incarnation, n.state
                FROM {self.table("sync_audit")} a
                LEFT JOIN {self.table("sync_node")} n ON n.site = a.site AND n.name = a.node
                WHERE a.site = %s AND NOT EXISTS (
                    SELECT 1 FROM {self.table("results")} r WHERE r.task_id::text = a.task_key)
                ORDER BY a.task_key LIMIT 20""",
            (self.site,),
        )
        keys = ("task", "node", "claim_incarnation", "status", "claimed_at", "node_incarnation",
                "node_state")  # fmt: skip
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # -- processes -----------------------------------------------------------------------
    def proxy(self) -> TcpProxy:
        """A new proxy in front of the PostgreSQL server (one per partitionable worker)."""
        assert self.backend == "postgres" and self.dsn is not None
        info = _dsn_parts(self.dsn)
        proxy = TcpProxy(info.get("host", "127.0.0.1"), int(info.get("port", 5432)))
        self.proxies.append(proxy)
        return proxy

    def _url(self, dsn: str) -> str:
        info = _dsn_parts(dsn)
        user = info.get("user", "postgres")
        auth = user + (":" + info["password"] if info.get("password") else "")
        hosts = info.get("host", "127.0.0.1").split(",")
        ports = info.get("port", "5432").split(",")
        netloc = ",".join(f"{h}:{p}" for h, p in zip(hosts, ports, strict=True))  # multi-host
        extra = "".join(
            f"&{key}={info[key]}" for key in ("target_session_attrs",) if key in info
        )
        return (
            f"postgresql://{auth}@{netloc}/"
            f"{info.get('dbname', 'postgres')}?jobsync_schema={self.schema}{extra}"
        )

    def spawn(
        self,
        name: str,
        *,
        proxy: TcpProxy | None = None,
        app_direct: bool = False,
        variant: str | None = None,
        timing: Timing | None = None,
        **extra: Any,
    ) -> Proc:
        """Start one worker process (it runs until signalled).

        With ``proxy``, the worker reaches PostgreSQL through it: jobsync's
        connection and, unless ``app_direct``, the worker's own connection too.
        """
        timing = timing or self.timing
        off = [n for n in os.environ.get("JOBSYNC_IT_DEFENCES_OFF", "").split(",") if n]
        if off:
            extra["defences_off"] = sorted({*extra.get("defences_off", ()), *off})
        cfg: dict[str, Any] = {
            "name": name,
            "site": self.site,
            "backend": self.backend,
            "schema": self.schema,
            "date": self.date,
            "tasks": self.tasks,
            "tokens": self.tokens,
            "variant": variant or self.variant,
            "timing": timing.as_dict(),
            **extra,
        }
        self._seq += 1
        if self.backend == "postgres":
            assert self.dsn is not None
            route = self.dsn
            if proxy is not None:
                info = _dsn_parts(self.dsn)
                info.update(host="127.0.0.1", port=str(proxy.port))
                route = " ".join(f"{k}={v}" for k, v in info.items())
            cfg["url"] = self._url(route)
            if self.pooler is not None and proxy is None:
                cfg["url"] = self._url(self.pooler.dsn) + POOLED
            cfg["app_dsn"] = self.dsn if app_direct else route
            cfg["log"] = {"kind": "postgres", "dsn": self.dsn}
            if self.log_files:
                cfg["log"]["path"] = str(self.workdir / f"log-{self._seq}.jsonl")
        else:
            assert self.sqlite_path is not None
            cfg["url"] = f"sqlite:///{self.sqlite_path}"
            cfg["app_path"] = str(self.sqlite_path)
            cfg["log"] = {"kind": "file", "path": str(self.workdir / f"log-{self._seq}.jsonl")}
        out = self.workdir / f"worker-{self._seq}-{name}.out"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        library = os.environ.get("JOBSYNC_IT_LIBRARY")  # a teeth run: another jobsync
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [library, str(REPO), env.get("PYTHONPATH")])
        )
        with open(out, "wb") as sink:
            popen = subprocess.Popen(
                [sys.executable, str(WORKER), json.dumps(cfg)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
            )
        proc = Proc(
            name=name,
            popen=popen,
            out=out,
            started_at=self.now(),
            via="direct" if proxy is None else str(proxy.port),
        )
        self.procs.append(proc)
        return proc

    def signal(self, proc: Proc, sig: int) -> float:
        """Send ``sig``; returns the instant (database clock) it was sent."""
        at = self.now()
        os.kill(proc.pid, sig)
        proc.signals.append((signal.Signals(sig).name, at))
        if sig == signal.SIGKILL:
            proc.killed_at = at
        elif sig == signal.SIGSTOP:
            proc.stopped_at = at
        return at

    def kill(self, *procs: Proc) -> float:
        """SIGKILL every one of ``procs`` at once (one instant for all)."""
        at = self.now()
        for proc in procs:
            os.kill(proc.pid, signal.SIGKILL)
            proc.killed_at = at
            proc.signals.append(("SIGKILL", at))
        for proc in procs:
            proc.popen.wait(timeout=10)
        return at

    def wait_exits(self, procs: Iterable[Proc], timeout: float) -> dict[str, float]:
        """Wait until each of ``procs`` ended by itself; seconds from now until each did."""
        procs = list(procs)
        since = self.now()

        def ended() -> bool:
            for proc in procs:
                if proc.exited_at is None and not proc.alive():
                    proc.exited_at = self.now()
            return all(p.exited_at is not None for p in procs)

        wait_for(ended, timeout, f"{[p.name for p in procs]} to exit", every=0.005)
        return {p.name: round(p.exited_at - since, 3) for p in procs if p.exited_at is not None}

    def sessions(self, proc: Proc) -> dict[str, tuple[str, str]]:
        """The server's view of a worker's sessions: role -> (state, last query)."""
        rows = self.query(
            "SELECT application_name, state, query FROM pg_stat_activity "
            "WHERE application_name IN (%s, %s)",
            (proc.name, f"{proc.name}:app"),
        )
        return {("jobsync" if r[0] == proc.name else "app"): (r[1], r[2]) for r in rows}

    def settled_sessions(self, proc: Proc, timeout: float = 5) -> dict[str, tuple[str, str]]:
        """``sessions`` once no statement of the (stopped or cut off) worker is running."""

        def settled() -> dict[str, tuple[str, str]] | None:
            found = self.sessions(proc)
            return found if all(state != "active" for state, _ in found.values()) else None

        found: dict[str, tuple[str, str]] = wait_for(
            settled,
            timeout,
            f"{proc.name}'s sessions to settle",
            every=0.005,
        )
        return found

    def fault(self, kind: str, at: float, victims: Iterable[Proc] = (), **info: Any) -> Fault:
        record = Fault(kind=kind, at=at, victims=tuple(p.instance for p in victims), info=info)
        self.faults.append(record)
        return record

    def live(self) -> list[Proc]:
        return [p for p in self.procs if p.alive()]

    def reap(self) -> None:
        """Note the exit time of processes that ended by themselves."""
        for proc in self.procs:
            if proc.exited_at is None and not proc.alive():
                proc.exited_at = self.now()

    def close(self) -> None:
        """Kill every process this cluster started (stopped ones too) and the proxies."""
        for proc in self.procs:
            if proc.alive():
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.popen.wait(timeout=10)
        for proxy in self.proxies:
            proxy.close()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}[{p.pid}] ---\n{p.tail()}" for p in self.procs)

    # -- reading what the workers logged -----------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        if self.backend == "postgres" and not self.log_files:
            rows = self.query(
                f"SELECT node, pid, kind, t, t_prev, tokens, added, removed, info "
                f"FROM {self.table('ownership_log')} ORDER BY t, id"
            )
            keys = ("node", "pid", "kind", "t", "t_prev", "tokens", "added", "removed", "info")
            return [dict(zip(keys, row, strict=True)) for row in rows]
        found: list[dict[str, Any]] = []
        for path in sorted(self.workdir.glob("log-*.jsonl")):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry.get("info"), str):
                        entry["info"] = json.loads(entry["info"])
                    found.append(entry)
        found.sort(key=lambda e: e["t"])
        return found

    def current_sets(self) -> dict[tuple[str, int], frozenset[int]]:
        """Each live worker process's claimable set, as it last logged it."""
        alive = {p.instance for p in self.procs if p.alive() and p.stopped_at is None}
        sets: dict[tuple[str, int], frozenset[int]] = {}
        for entry in self.entries():
            key = (entry["node"], entry["pid"])
            if entry["kind"] == "own" and key in alive:
                sets[key] = frozenset(entry["tokens"] or ())
        return {k: v for k, v in sets.items() if k in alive}

    def logged(self, proc: Proc, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["pid"] == proc.pid and e["kind"] == kind]

    def wait_ready(self, procs: Iterable[Proc], timeout: float = 60) -> None:
        wanted = {p.pid for p in procs}

        def ready() -> bool:
            self._check_alive(p for p in self.procs if p.pid in wanted)
            seen = {e["pid"] for e in self.entries() if e["kind"] == "ready"}
            return wanted <= seen

        wait_for(ready, timeout, f"workers {sorted(wanted)} to be ready\n{self.tails()}")

    def _check_alive(self, procs: Iterable[Proc]) -> None:
        for proc in procs:
            if not proc.alive() and proc.killed_at is None:
                raise AssertionError(
                    f"worker {proc.name}[{proc.pid}] exited ({proc.popen.returncode}):\n"
                    f"{proc.tail(40)}"
                )

    def balanced(self, procs: Iterable[Proc]) -> bool:
        """Every token claimable by exactly one of ``procs``, and loads within one token."""
        procs = list(procs)
        sets = self.current_sets()
        loads = [len(sets.get(p.instance, frozenset())) for p in procs]
        union: set[int] = set()
        for p in procs:
            union |= sets.get(p.instance, frozenset())
        return (
            len(union) == self.tokens and sum(loads) == self.tokens and max(loads) - min(loads) <= 1
        )

    def wait_balanced(self, procs: Iterable[Proc], timeout: float, what: str = "") -> None:
        """Poll until ``procs`` split the tokens evenly, confirmed after a sync mark (so
        the verdict is not read from log entries older than the fault)."""
        procs = list(procs)
        deadline = time.monotonic() + timeout

        def check() -> bool:
            self._check_alive(procs)
            if not self.balanced(procs):
                return False
            self.sync(procs, timeout=max(1.0, deadline - time.monotonic()))
            return self.balanced(procs)

        wait_for(
            check,
            timeout,
            f"balance over {[p.name for p in procs]} {what}\n"
            f"{ {k[0]: len(v) for k, v in self.current_sets().items()} }",
        )

    def leader(self) -> str | None:
        """The oldest live node (docs/PROTOCOL.md section 4), from the node table."""
        if self.backend == "postgres":
            live = "last_heartbeat + lease_timeout * interval '1 second' > clock_timestamp()"
            params: tuple[Any, ...] = (self.site,)
        else:
            live, params = "last_heartbeat + lease_timeout > %s", (self.site, self.now())
        rows = self.query(
            f"SELECT name FROM {self.table('sync_node')} WHERE site = %s "
            f"AND state IN ('active', 'leaving') AND {live} ORDER BY created_on, name LIMIT 1",
            params,
        )
        return rows[0][0] if rows else None

    def registered_at(self, name: str) -> float:
        """When the node of that name registered (its current incarnation), database clock."""
        column = "extract(epoch FROM created_on)" if self.backend == "postgres" else "created_on"
        rows = self.query(
            f"SELECT {column} FROM {self.table('sync_node')} WHERE site = %s AND name = %s",
            (self.site, name),
        )
        return float(rows[0][0])

    def node_row(self, name: str) -> dict[str, Any] | None:
        """The node table's row of that name (PostgreSQL): incarnation, state, times."""
        rows = self.query(
            f"SELECT incarnation, state, extract(epoch FROM created_on), "
            f"extract(epoch FROM last_heartbeat), extract(epoch FROM fence_until), "
            f"extract(epoch FROM clock_timestamp()) "
            f"FROM {self.table('sync_node')} WHERE site = %s AND name = %s",
            (self.site, name),
        )
        if not rows:
            return None
        keys = ("incarnation", "state", "created_on", "last_heartbeat", "fence_until", "now")
        row = dict(zip(keys, rows[0], strict=True))
        for key in keys[2:]:
            row[key] = None if row[key] is None else float(row[key])
        return row

    def heartbeats(self) -> HeartbeatMonitor:
        """A running ``HeartbeatMonitor`` on this cluster's node table (stop it)."""
        assert self.backend == "postgres" and self.dsn is not None
        return HeartbeatMonitor(self.dsn, self.table("sync_node"), self.site)

    def token_counts(self) -> dict[str | None, int]:
        """sync_token: tokens per owning node (None: unowned)."""
        rows = self.query(
            f"SELECT node, count(*) FROM {self.table('sync_token')} WHERE site = %s GROUP BY node",
            (self.site,),
        )
        return {r[0]: int(r[1]) for r in rows}

    def history(self) -> History:
        """Everything the checker needs, read once (after the fault sequence)."""
        self.reap()
        results: list[dict[str, Any]] = []
        if self.backend == "postgres":
            commit = "extract(epoch FROM pg_xact_commit_timestamp(xmin))"
            try:
                self.query("SELECT pg_xact_commit_timestamp(xmin) FROM pg_class LIMIT 1", retry=0)
            except Exception:
                commit = "NULL::float8"
            rows = self.query(
                f"SELECT task_id, node, pid, token, epoch, incarnation, "
                f"extract(epoch FROM claimed_at), extract(epoch FROM written_at), {commit} "
                f"FROM {self.table('results')}"
            )
        else:
            rows = self.query(
                "SELECT task_id, node, pid, token, epoch, incarnation, claimed_at, written_at, "
                "NULL FROM results"
            )
        keys = ("task", "node", "pid", "token", "epoch", "incarnation", "claimed_at", "written_at",
                "committed_at")  # fmt: skip
        for row in rows:
            results.append(dict(zip(keys, row, strict=True)))
        ends: dict[tuple[str, int], float] = {}
        for proc in self.procs:
            if proc.killed_at is not None:
                ends[proc.instance] = proc.killed_at
            elif proc.exited_at is not None:
                ends[proc.instance] = proc.exited_at
        return History(
            entries=self.entries(),
            results=results,
            tasks=self.tasks,
            tokens=self.tokens,
            ends=ends,
            observed_until=self.now(),
            faults=list(self.faults),
        )


class HeartbeatMonitor:
    """Polls ``last_heartbeat`` of every node row on a connection of its own (direct,
    never through a proxy) every ``every`` seconds, on a thread, and keeps each
    distinct value per (name, incarnation): the heartbeats as the database
    recorded them.  ``worst(since, until)`` is, per node name, the longest time
    without a recorded heartbeat within ``[since, until]``: between two
    consecutive ones, or from the last one to ``until`` (a heartbeat that stopped
    for good counts up to the end).  A new incarnation's first heartbeat is its
    registration."""

    def __init__(self, dsn: str, table: str, site: str, every: float = 0.02) -> None:
        import psycopg

        self._conn = psycopg.connect(
            dsn, autocommit=True, application_name="harness-heartbeats", connect_timeout=5
        )
        self._sql = (
            f"SELECT name, incarnation, extract(epoch FROM last_heartbeat), state "
            f"FROM {table} WHERE site = %s"
        )
        self._site = site
        self._every = every
        self._stop = threading.Event()
        self.beats: dict[tuple[str, int], list[float]] = defaultdict(list)
        self.states: dict[tuple[str, int], str] = {}
        self.polls = 0
        self._thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                for name, inc, beat, state in self._conn.execute(self._sql, (self._site,)):
                    seen = self.beats[(name, int(inc))]
                    if not seen or float(beat) > seen[-1]:
                        seen.append(float(beat))
                    self.states[(name, int(inc))] = state
                self.polls += 1
            self._stop.wait(self._every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self._conn.close()

    def worst(
        self, since: float, until: float, names: Iterable[str] | None = None
    ) -> dict[str, float]:
        """Per node name: the longest stretch of ``[since, until]`` with no heartbeat of
        any of its incarnations (from ``since`` itself if none came before it)."""
        wanted = None if names is None else set(names)
        per_name: dict[str, list[float]] = defaultdict(list)
        for (name, _), beats in self.beats.items():
            if wanted is None or name in wanted:
                per_name[name].extend(beats)
        found: dict[str, float] = {}
        for name, unsorted in per_name.items():
            beats = sorted(unsorted)
            before = [b for b in beats if b <= since]
            marks = [before[-1] if before else since] + [b for b in beats if since < b <= until]
            marks.append(until)
            found[name] = round(max(b - a for a, b in itertools.pairwise(marks)), 3)
        return found


def _dsn_parts(dsn: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    return {k: str(v) for k, v in conninfo_to_dict(dsn).items()}


# -- the checker -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One process's uninterrupted ownership of one token, as its main thread saw it."""

    instance: tuple[str, int]
    token: int
    start: float  # first sample that saw it claimable
    end: float  # last sample that saw it (or the instant the process was killed)
    open: bool  # still held at the end of the log


@dataclass
class History:
    entries: list[dict[str, Any]]
    results: list[dict[str, Any]]
    tasks: int
    tokens: int
    ends: dict[tuple[str, int], float]
    observed_until: float
    faults: list[Fault]
    runs: list[Run] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.runs = self._runs()

    def _runs(self) -> list[Run]:
        opened: dict[tuple[tuple[str, int], int], float] = {}
        last_t: dict[tuple[str, int], float] = {}
        runs: list[Run] = []
        for entry in self.entries:
            if entry["kind"] != "own":
                continue
            inst = (entry["node"], entry["pid"])
            last_t[inst] = entry["t"]
            for token in entry["added"] or ():
                opened[(inst, token)] = entry["t"]
            for token in entry["removed"] or ():
                start = opened.pop((inst, token), None)
                if start is not None:
                    runs.append(Run(inst, token, start, float(entry["t_prev"]), open=False))
        for (inst, token), start in opened.items():
            end = self.ends.get(inst, self.observed_until)
            runs.append(Run(inst, token, start, max(end, start), open=True))
        runs.sort(key=lambda r: (r.token, r.start))
        return runs

    # -- exactly once --------------------------------------------------------------------
    @property
    def duplicates(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["kind"] == "duplicate"]

    @property
    def stranded(self) -> int:
        return self.tasks - len({r["task"] for r in self.results})

    # -- guarantee 1 -------------------------------------------------------------------------
    def overlaps(self) -> list[tuple[Run, Run]]:
        """Pairs of runs of different processes on one token that intersect in time."""
        found = []
        by_token: dict[int, list[Run]] = defaultdict(list)
        for run in self.runs:
            by_token[run.token].append(run)
        for runs in by_token.values():
            runs.sort(key=lambda r: r.start)
            for i, a in enumerate(runs):
                for b in runs[i + 1 :]:
                    if b.start > a.end:
                        break
                    if b.instance != a.instance:
                        found.append((a, b))
        return found

    def epoch_violations(self) -> list[str]:
        """Accepted writes per token, in commit (else claim) order: epochs never go back,
        and one epoch belongs to one incarnation."""
        problems = []
        by_token: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in self.results:
            if row["token"] is not None and row["epoch"] is not None:
                by_token[row["token"]].append(row)
        for token, rows in by_token.items():
            owner: dict[int, int] = {}
            for row in rows:
                inc = owner.setdefault(row["epoch"], row["incarnation"])
                if inc != row["incarnation"]:
                    problems.append(
                        f"token {token} epoch {row['epoch']}: incarnations {inc} and "
                        f"{row['incarnation']}"
                    )
            rows.sort(key=lambda r: r["claimed_at"])
            for a, b in itertools.pairwise(rows):
                if b["epoch"] < a["epoch"]:
                    problems.append(
                        f"token {token}: task {b['task']} claimed at epoch {b['epoch']} after "
                        f"task {a['task']} at epoch {a['epoch']}"
                    )
        return problems

    # -- time -------------------------------------------------------------------------------
    def first_owned(self) -> dict[int, float]:
        first: dict[int, float] = {}
        for run in self.runs:
            first[run.token] = min(first.get(run.token, math.inf), run.start)
        return first

    def gaps(self, since: float | None = None, until: float | None = None) -> dict[int, float]:
        """Per token, the longest time (within [since, until]) no process had it, counted
        only after the token was first owned."""
        until = self.observed_until if until is None else until
        longest: dict[int, float] = {}
        by_token: dict[int, list[Run]] = defaultdict(list)
        for run in self.runs:
            by_token[run.token].append(run)
        for token in range(self.tokens):
            runs = sorted(by_token.get(token, []), key=lambda r: r.start)
            if not runs:
                longest[token] = math.inf
                continue
            covered_to = runs[0].end
            worst = 0.0
            lo = runs[0].start if since is None else max(since, runs[0].start)
            for run in runs[1:]:
                if run.start > covered_to:
                    a, b = max(covered_to, lo), min(run.start, until)
                    if b > a:
                        worst = max(worst, b - a)
                covered_to = max(covered_to, run.end)
            if covered_to < until:
                worst = max(worst, until - max(covered_to, lo))
            longest[token] = worst
        return longest

    def gap_list(
        self, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Every uncovered interval (longest first): token, from, to, who had it, who got it."""
        until = self.observed_until if until is None else until
        found: list[dict[str, Any]] = []
        by_token: dict[int, list[Run]] = defaultdict(list)
        for run in self.runs:
            by_token[run.token].append(run)
        for token, runs in by_token.items():
            runs.sort(key=lambda r: r.start)
            last = runs[0]
            for run in runs[1:]:
                if run.start > last.end and (since is None or run.start > since):
                    a = last.end if since is None else max(last.end, since)
                    found.append({
                        "token": token, "from": a, "to": min(run.start, until),
                        "seconds": round(min(run.start, until) - a, 3),
                        "had": last.instance, "got": run.instance,
                    })  # fmt: skip
                if run.end > last.end:
                    last = run
        found.sort(key=lambda g: -g["seconds"])
        return found

    def longest_gap(self, since: float | None = None, until: float | None = None) -> float:
        return max(self.gaps(since, until).values())

    def heal(self, after: float, excluding: Iterable[tuple[str, int]] = ()) -> float:
        """Seconds from ``after`` until every token was claimable by some process not in
        ``excluding`` (the longest wait of any token)."""
        skip = set(excluding)
        worst = 0.0
        for token in range(self.tokens):
            starts = [
                max(run.start, after)
                for run in self.runs
                if run.token == token and run.instance not in skip and run.end >= after
            ]
            if not starts:
                return math.inf
            worst = max(worst, min(starts) - after)
        return worst

    def balanced_at(self, after: float, instances: Iterable[tuple[str, int]]) -> float:
        """The first instant at or after ``after`` at which ``instances`` split every token
        among themselves with loads within one (inf if never, in what was logged)."""
        members = list(instances)
        instants = sorted({after} | {r.start for r in self.runs if r.start >= after})
        for t in instants:
            sets = self.sets_at(t)
            loads = [len(sets.get(i, ())) for i in members]
            union = set().union(*(sets.get(i, set()) for i in members))
            if len(union) == self.tokens == sum(loads) and max(loads) - min(loads) <= 1:
                return t
        return math.inf

    def sets_at(self, t: float) -> dict[tuple[str, int], set[int]]:
        sets: dict[tuple[str, int], set[int]] = defaultdict(set)
        for run in self.runs:
            if run.start <= t <= run.end:
                sets[run.instance].add(run.token)
        return dict(sets)

    def max_held_after(self, t: float) -> int:
        """The most tokens any one process held at once at or after ``t``."""
        events: dict[tuple[str, int], list[tuple[float, int]]] = defaultdict(list)
        for run in self.runs:
            if run.end >= t:
                events[run.instance].append((max(run.start, t), 1))
                events[run.instance].append((run.end, -1))
        best = 0
        for evs in events.values():
            held = 0
            for _, step in sorted(evs, key=lambda e: (e[0], -e[1])):
                held += step
                best = max(best, held)
        return best

    def runs_of(self, instance: tuple[str, int]) -> list[Run]:
        return [r for r in self.runs if r.instance == instance]

    def summary(self, **extra: Any) -> dict[str, Any]:
        """The numbers the report asks for (printed by every test)."""
        first = self.first_owned()
        return {
            "tasks_done_twice": len(self.duplicates),
            "tasks_stranded": self.stranded,
            "overlaps": len(self.overlaps()),
            "epoch_violations": len(self.epoch_violations()),
            "longest_token_gap_s": round(
                self.longest_gap(since=max(first.values()) if first else None), 3
            ),
            **extra,
        }


@contextlib.contextmanager
def cluster(**kwargs: Any) -> Iterator[Cluster]:
    """``with cluster(...) as c:`` -- every process is killed when the block ends."""
    made = Cluster(**kwargs)
    try:
        yield made
    finally:
        made.close()
