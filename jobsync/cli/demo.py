"""``jobsync demo`` (``make demo``): a cluster at work on one machine, checked at the end.

It starts worker processes on an embedded SQLite file (a temporary one
unless ``--dsn sqlite:///PATH``), each running the README loop over one
batch of tasks and recording every processed task in a results table of the
same file, in the transaction that completes its claim.  When a quarter of
the batch is done it kills the leader with SIGKILL; at half it starts one
more worker.  Meanwhile it prints, from the database alone (it is an
observer: it registers no node), the nodes, the tokens each holds, the
tasks each recorded, and every change of token ownership as it happens.

At the end it counts: every task recorded once, none twice, none missing,
and the library's audit agrees.  Exit status 0 only then.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import jobsync
from jobsync.backends.base import Backend, ClusterView
from jobsync.backends.url import open_backend
from jobsync.cli.connect import parse_dsn
from jobsync.cli.demo_worker import RESULTS_DDL, task_ids
from jobsync.cli.report import leader_of, node_state
from jobsync.core.errors import InvalidArgument
from jobsync.dashboard import Dashboard
from jobsync.runtime.config import CoordinationConfig

POLL = 0.2
STATUS_EVERY = 1.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=3, help="workers at the start (default 3)")
    p.add_argument("--tasks", type=int, default=2000, help="tasks in the batch (default 2000)")
    p.add_argument("--work-ms", type=float, default=25.0, help="time per task (default 25)")
    p.add_argument("--total-tokens", type=int, default=1000, help="tokens (default 1000)")
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=0.5,
        metavar="SEC",
        help="seconds between heartbeats (default 0.5)",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=2.0,
        metavar="SEC",
        help="a worker silent this long is dead (default 2)",
    )
    p.add_argument(
        "--kill-at",
        type=float,
        default=0.25,
        metavar="FRACTION",
        help="kill the leader when this share of the batch is done",
    )
    p.add_argument(
        "--add-at",
        type=float,
        default=0.5,
        metavar="FRACTION",
        help="start one more worker when this share is done",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        metavar="SEC",
        help="give up (and fail) after this long",
    )
    p.add_argument(
        "--dsn", metavar="sqlite:///PATH", help="use this SQLite file instead of a temporary one"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument(
        "--dashboard-port",
        type=int,
        default=8080,
        metavar="PORT",
        help="serve the live dashboard here while the demo runs (default 8080, a free "
        "port if it is taken; -1: no dashboard)",
    )


def run(args: argparse.Namespace) -> int:
    config = CoordinationConfig(
        total_tokens=args.total_tokens,
        heartbeat_interval_sec=args.heartbeat_interval,
        heartbeat_timeout_sec=args.heartbeat_timeout,
    )  # validates the timings before anything starts
    if args.workers < 2 or args.tasks < 1:
        raise InvalidArgument("the demo needs --workers >= 2 and --tasks >= 1")
    if not (0 < args.kill_at < 1 and 0 < args.add_at < 1):
        raise InvalidArgument("--kill-at and --add-at are fractions of the batch, between 0 and 1")
    with _workspace(args) as (directory, db):
        demo = Demo(args, config, directory, db)
        try:
            return demo.run()
        finally:
            demo.stop_all()


@contextlib.contextmanager
def _workspace(args: argparse.Namespace) -> Iterator[tuple[Path, str]]:
    if args.dsn:
        target = parse_dsn(args.dsn)
        if target.scheme != "sqlite":
            raise InvalidArgument(
                "the demo records its results in the SQLite file it coordinates through: "
                "--dsn must be sqlite:///PATH"
            )
        db = os.path.abspath(target.path)
        directory = Path(tempfile.mkdtemp(prefix="jobsync-demo-logs-"))
        yield directory, db
        _cleanup(directory, args.keep)
        return
    directory = Path(tempfile.mkdtemp(prefix="jobsync-demo-"))
    try:
        yield directory, str(directory / "demo.db")
    finally:
        _cleanup(directory, args.keep)


def _cleanup(directory: Path, keep: bool) -> None:
    if keep:
        print(f"kept {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)


class Demo:
    """The orchestrator: starts, kills and adds workers, watches the database, checks."""

    def __init__(
        self, args: argparse.Namespace, config: CoordinationConfig, directory: Path, db: str
    ) -> None:
        self.args, self.config, self.directory, self.db = args, config, directory, db
        self.site = "demo" if not args.dsn else time.strftime("demo-%Y%m%d-%H%M%S")
        self.url = "sqlite:///" + db
        self.backend: Backend = open_backend(self.url, client="jobsync-demo")
        self.backend.ensure_site(self.site, config.total_tokens, config.hash_function)
        self.results = sqlite3.connect(db, timeout=30.0, isolation_level=None)
        self.results.execute(RESULTS_DDL)
        now = self.backend.now()
        self.date = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = time.monotonic()
        self.owners: tuple[str | None, ...] = (None,) * config.total_tokens
        self.states: dict[str, str] = {}
        self.victim: str | None = None
        self.killed_at: float | None = None
        self.killed_holding = 0
        self.failed_over = False
        self.failover_took: float | None = None
        self.added: str | None = None
        self.board: Dashboard | None = None

    # -- the run ------------------------------------------------------------
    def run(self) -> int:
        a = self.args
        print(
            f"jobsync {jobsync.__version__} demo: {a.workers} workers, {a.tasks} tasks, "
            f"{a.total_tokens} tokens, heartbeat {a.heartbeat_interval:g} s, "
            f"timeout {a.heartbeat_timeout:g} s\ndatabase: {self.db}  site: {self.site!r}\n"
        )
        self.start_dashboard()
        for i in range(1, a.workers + 1):
            self.start(f"worker-{i}")
        last_status = 0.0
        while self.running():
            if self.elapsed() > a.timeout:
                self.say(f"!!! gave up after {a.timeout:g} s")
                return self.finish(timed_out=True)
            view = self.backend.read_cluster(self.site)
            done = self.show_changes(view)
            self.steer(view, done)
            if self.elapsed() - last_status >= STATUS_EVERY:
                last_status = self.elapsed()
                self.say(self.status_line(view, done))
            time.sleep(POLL)
        self.show_changes(self.backend.read_cluster(self.site))
        return self.finish(timed_out=False)

    def steer(self, view: ClusterView, done: Counter[str]) -> None:
        total, fraction = self.args.tasks, sum(done.values()) / self.args.tasks
        if self.victim is None and fraction >= self.args.kill_at:
            self.kill_leader(view)
        elif (
            self.victim is not None
            and not self.failed_over
            and self.victim not in view.tokens.owner
        ):
            self.failed_over = True
            assert self.killed_at is not None
            took = self.failover_took = time.monotonic() - self.killed_at
            self.say(f"=== failover: {self.victim} owns no token {took:.1f} s after the kill")
        if self.failed_over and self.added is None and fraction >= self.args.add_at:
            self.added = f"worker-{self.args.workers + 1}"
            self.say(f">>> starting {self.added} ({sum(done.values())}/{total} done)")
            self.start(self.added)

    def kill_leader(self, view: ClusterView) -> None:
        leader = leader_of(view.nodes, view.now)
        name = leader.name if leader is not None and leader.name in self.procs else "worker-1"
        held = sum(1 for o in view.tokens.owner if o == name)
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.victim, self.killed_at, self.killed_holding = name, time.monotonic(), held
        self.say(f">>> SIGKILL {name} (the leader, pid {proc.pid}) holding {held} tokens")

    # -- workers ---------------------------------------------------------------
    def start_dashboard(self) -> None:
        """Serve ``jobsync dashboard`` for the demo's site until the demo ends."""
        port = self.args.dashboard_port
        if port < 0:
            return
        backend = open_backend(self.url, client="jobsync-demo-dashboard")
        try:
            try:
                self.board = Dashboard(backend, self.site, port=port).start()
            except InvalidArgument:  # the port is taken: any free one
                self.board = Dashboard(backend, self.site, port=0).start()
        except BaseException:
            backend.close()
            raise
        print(f"dashboard: {self.board.address} (live while the demo runs)\n", flush=True)

    def start(self, name: str) -> None:
        a = self.args
        command = [
            sys.executable,
            "-m",
            "jobsync.cli.demo_worker",
            "--db",
            self.db,
            "--site",
            self.site,
            "--node-name",
            name,
            "--tasks",
            str(a.tasks),
            "--work-ms",
            str(a.work_ms),
            "--date",
            self.date.isoformat(),
            "--total-tokens",
            str(a.total_tokens),
            "--heartbeat-interval",
            str(a.heartbeat_interval),
            "--heartbeat-timeout",
            str(a.heartbeat_timeout),
        ]
        env = dict(os.environ)
        package_root = str(Path(jobsync.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        log = open(self.directory / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.procs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs.values())

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.board is not None:
            self.board.stop()
            self.board.poller.backend.close()
        self.backend.close()
        self.results.close()

    # -- watching -------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        print(f"{self.elapsed():6.1f}s  {text}", flush=True)

    def done_by_node(self) -> Counter[str]:
        rows = self.results.execute(
            "SELECT node, COUNT(*) FROM demo_results WHERE site = ? GROUP BY node", (self.site,)
        )
        return Counter({str(node): int(n) for node, n in rows})

    def show_changes(self, view: ClusterView) -> Counter[str]:
        for node in view.nodes:
            state = node_state(node, view.now)
            if self.states.get(node.name) != state:
                self.say(f"--- {node.name} is {state}")
                self.states[node.name] = state
        for name in set(self.states) - {n.name for n in view.nodes}:
            self.say(f"--- {name} left (row deleted)")
            del self.states[name]
        moves = Counter(
            (old, new)
            for old, new in zip(self.owners, view.tokens.owner, strict=True)
            if old != new
        )
        if moves:
            parts = [
                f"{old or '(unowned)'} -> {new or '(unowned)'}: {n}"
                for (old, new), n in sorted(moves.items(), key=str)
            ]
            self.say(f"moved {sum(moves.values())} tokens: " + ", ".join(parts))
        self.owners = view.tokens.owner
        return self.done_by_node()

    def status_line(self, view: ClusterView, done: Counter[str]) -> str:
        held = Counter(o for o in view.tokens.owner if o is not None)
        leader = leader_of(view.nodes, view.now)
        cells = []
        for name in sorted(set(self.procs) | set(held)):
            state = self.states.get(name, "gone")
            cells.append(f"{name} {state} {held.get(name, 0)}t {done.get(name, 0)}done")
        total = sum(done.values())
        return (
            f"{total:>5}/{self.args.tasks} done | "
            + " | ".join(cells)
            + f" | leader {leader.name if leader else '-'} gen {view.site.generation}"
        )

    # -- the verdict -------------------------------------------------------------
    def finish(self, timed_out: bool) -> int:
        total, distinct = self.results.execute(
            "SELECT COUNT(*), COUNT(DISTINCT task) FROM demo_results WHERE site = ?", (self.site,)
        ).fetchone()
        expected = set(task_ids(self.args.tasks))
        recorded = {
            r[0]
            for r in self.results.execute(
                "SELECT task FROM demo_results WHERE site = ?", (self.site,)
            )
        }
        missing = len(expected - recorded)
        duplicates = total - distinct
        audit = self.backend.read_audit(self.site, self.date)
        audit_done = sum(1 for r in audit if r.status == "done")
        audit_open = len(audit) - audit_done
        crashed = {
            n: p.returncode for n, p in self.procs.items() if n != self.victim and p.returncode != 0
        }
        print()
        print("summary")
        print(
            f"  tasks {self.args.tasks}, results {total}, distinct {distinct}, "
            f"duplicates {duplicates}, missing {missing}"
        )
        print(f"  jobsync audit: {audit_done} done, {audit_open} still claimed")
        print(
            "  per worker: " + ", ".join(f"{n} {c}" for n, c in sorted(self.done_by_node().items()))
        )
        if self.victim is not None and self.failover_took is not None:
            print(
                f"  {self.victim} was killed with SIGKILL holding {self.killed_holding} tokens; "
                f"they had all moved {self.failover_took:.1f} s later "
                f"(heartbeat timeout {self.args.heartbeat_timeout:g} s)"
            )
        ok = not timed_out and not crashed and duplicates == 0 and missing == 0
        ok = ok and audit_done == self.args.tasks and audit_open == 0
        for name, code in crashed.items():
            print(f"  {name} exited with {code}; its log: {self.directory / (name + '.log')}")
            self.args.keep = True
        if ok:
            print("OK: every task was done exactly once (0 duplicates, 0 missing)")
            return 0
        print("FAILED: some task was done twice, not at all, or a worker failed")
        self.args.keep = True
        return 1
