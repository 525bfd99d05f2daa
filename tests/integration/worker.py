"""One worker process for the fault tests: the README loop over a fixed task list.

    python tests/integration/worker.py '<json config>'   (see ``harness.WorkerSpec``)

The loop is the README's, in a ``while True`` that never looks at
``job.draining``: every pass reads the pending task ids (tasks with no row in
the results table) and, for each one, ``can_claim_task(task) and
add_task(task)``, then does the side effect:

- ``variant="tx"``: in ONE transaction of the worker's own connection, insert
  ``(task_id, node, token, epoch, incarnation, claimed_at)`` into ``results``
  (read from this worker's open claim row, so a lost claim inserts nothing)
  and ``job.complete(task, connection=conn)``; commit only if the completion
  was accepted.  A zombie's write rolls back with its refused completion.
- ``variant="check"``: check-after-claim: re-read ``results`` and insert only
  if the task is not there yet (autocommit), then ``job.complete(task)``.

``results.task_id`` is the primary key, so a second processing of a task is
a unique violation, logged as a ``duplicate`` entry: never a silent double.
When the transaction fails on a connection error (its COMMIT may or may not
have happened), the worker releases the claim (``job.release(task)``,
retried while the database is away): if the commit happened the release
finds nothing, otherwise the task is pending again and gets done again.

What the worker observed is logged, with the observation instant on the
database's clock (local ``time.time()`` plus the offset to
``clock_timestamp()`` measured at start; every process here runs on one host,
so the offset is a round trip at most):

- ``own``: the set ``job.my_tokens`` (exactly the tokens for which
  ``can_claim_task`` answers True now) changed.  The main thread samples it
  before every ``can_claim_task`` call and every ``idle_sample_ms`` when
  idle, so ``t`` is the first sample that saw the new set and ``t_prev`` the
  last sample that saw the old one.
- ``rebalance``: an ``on_rebalance`` event (added/removed/tokens), as the
  callback thread got it.
- ``status``: state, incarnation or leadership changed (polled every 50 ms).
- ``start``, ``ready``, ``conflict``, ``error``, ``exit``, ``duplicate``;
  ``claim_error`` (``add_task`` answered False on a backend error),
  ``outcome`` (a task not done: lost claim, connection error), ``released``,
  ``mark`` (the harness's sync points, see ``harness.Cluster.sync``).

Log entries go to a queue that a logger thread writes to the ``ownership_log``
table over its own direct connection (never through the fault proxy:
instrumentation is not the system under test), or to a JSON-lines file for
the SQLite backend.  On SIGTERM the Job drains and then re-delivers SIGTERM to
the handler that was installed before it, ours: it flushes the log and ends
the process with the default action, as the program would have ended.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jobsync
from jobsync import CoordinationConfig, Job, NodeNameConflict, Task
from jobsync.errors import BackendUnavailable

try:
    from jobsync.errors import LockTimeout
except ImportError:  # a library from before bounded lock waits (JOBSYNC_IT_LIBRARY)

    class LockTimeout(Exception):  # type: ignore[no-redef]
        pass


CFG: dict[str, Any] = json.loads(sys.argv[1]) if __name__ == "__main__" else {}
CONTROL_POLL = 0.1


# -- the log ---------------------------------------------------------------------------
class Log:
    """Entries queue here; one thread writes them out, retrying until it can."""

    COLUMNS = ("node", "pid", "kind", "t", "t_prev", "tokens", "added", "removed", "info")

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.node = cfg["name"]
        self.pid = os.getpid()
        self.offset = 0.0
        # Polled from the ``control`` table by the writer thread (never the main thread).
        self.mark = 0
        self.work_ms = float(cfg.get("work_ms", 0))
        self.hold_ms = 0.0
        # A request to hold one completing transaction open (``Cluster.hold_transaction``):
        # its sequence number and for how long.  Only a worker spawned with ``holder``
        # acts on it.
        self.hold_seq = 0
        self.hold_s = 0.0
        self._control_at = 0.0
        self._control_conn: Any = None
        self._entries: list[tuple[Any, ...]] = []
        self._busy = False
        self._cond = threading.Condition()
        self._conn: Any = None
        self._file: Any = None
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        if self.cfg["log"]["kind"] == "postgres":
            self.offset = self._measure_offset()
        if "path" in self.cfg["log"]:  # PostgreSQL too, with Cluster(log_files=True)
            self._file = open(self.cfg["log"]["path"], "a", encoding="utf-8")  # noqa: SIM115
        self._thread.start()

    def now(self) -> float:
        return time.time() + self.offset

    def emit(
        self,
        kind: str,
        t: float | None = None,
        t_prev: float | None = None,
        tokens: Any = None,
        added: Any = None,
        removed: Any = None,
        info: Any = None,
    ) -> None:
        row = (
            self.node,
            self.pid,
            kind,
            self.now() if t is None else t,
            t_prev,
            None if tokens is None else sorted(tokens),
            None if added is None else sorted(added),
            None if removed is None else sorted(removed),
            None if info is None else json.dumps(info, default=str),
        )
        with self._cond:
            self._entries.append(row)
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._entries or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def _measure_offset(self) -> float:
        while True:
            try:
                conn = self._connect()
                best: tuple[float, float] | None = None
                for _ in range(5):
                    before = time.time()
                    row = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
                    after = time.time()
                    rtt = after - before
                    if best is None or rtt < best[0]:
                        best = (rtt, float(row[0]) - (before + after) / 2)
                assert best is not None
                return best[1]
            except Exception:
                self._drop()
                time.sleep(0.1)

    def _connect(self) -> Any:
        import psycopg

        if self._conn is None:
            self._conn = psycopg.connect(
                self.cfg["log"]["dsn"],
                autocommit=True,
                application_name=f"{self.node}:log",
                connect_timeout=3,
            )
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _run(self) -> None:
        while True:
            self._poll_control()
            with self._cond:
                if not self._entries:
                    self._cond.wait(CONTROL_POLL)
                if not self._entries:
                    continue
                batch, self._entries = self._entries, []
                self._busy = True
            while True:
                try:
                    self._write(batch)
                    break
                except Exception:
                    self._drop()
                    time.sleep(0.1)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _poll_control(self) -> None:
        """The harness's knobs: a sync mark, the work time, the time held in a transaction."""
        if time.monotonic() - self._control_at < CONTROL_POLL:
            return
        self._control_at = time.monotonic()
        try:
            if self.cfg["log"]["kind"] == "postgres":
                row = (
                    self._connect()
                    .execute(
                        "SELECT mark, work_ms, hold_ms, hold_seq, hold_s "
                        f'FROM "{self.cfg["schema"]}".control'
                    )
                    .fetchone()
                )
            else:
                import sqlite3

                if self._control_conn is None:
                    self._control_conn = sqlite3.connect(self.cfg["app_path"], timeout=5)
                row = self._control_conn.execute(
                    "SELECT mark, work_ms, hold_ms, hold_seq, hold_s FROM control"
                ).fetchone()
        except Exception:
            self._drop()
            return
        self.work_ms, self.hold_ms = float(row[1]), float(row[2])
        self.hold_seq, self.hold_s = int(row[3]), float(row[4])
        self.mark = int(row[0])

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        if self._file is not None:
            for row in batch:
                self._file.write(json.dumps(dict(zip(self.COLUMNS, row, strict=True))) + "\n")
            self._file.flush()
            return
        conn = self._connect()
        schema = self.cfg["schema"]
        with conn.cursor() as cur:
            cur.executemany(
                f'INSERT INTO "{schema}".ownership_log '
                "(node, pid, kind, t, t_prev, tokens, added, removed, info) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                batch,
            )


# -- the user's database ------------------------------------------------------------------
class App:
    """The user's own connection: pending items, and the side effect with its completion."""

    def __init__(self, cfg: dict[str, Any], log: Log) -> None:
        self.cfg = cfg
        self.log = log
        self.kind = cfg["backend"]
        self.conn: Any = None
        self.retry_at = 0.0
        self.site = cfg["site"]
        self.date = cfg["date"]
        self.node = cfg["name"]
        self.pid = os.getpid()
        # Called inside the completing transaction, after the completion was accepted.
        self.on_completed: Callable[[Job, Task], None] | None = None
        if self.kind == "postgres":
            s = f'"{cfg["schema"]}"'
            self.results = f"{s}.results"
            self.audit = f"{s}.sync_audit"
            self.p = "%s"
        else:
            self.results, self.audit, self.p = "results", "sync_audit", "?"

    # connection handling: a broken connection is dropped and reopened on the next call
    def ready(self) -> bool:
        if self.conn is not None:
            return True
        if time.monotonic() < self.retry_at:
            return False
        try:
            if self.kind == "postgres":
                import psycopg

                self.conn = psycopg.connect(
                    self.cfg["app_dsn"],
                    autocommit=True,
                    application_name=f"{self.node}:app",
                    connect_timeout=3,
                )
            else:
                import sqlite3

                self.conn = sqlite3.connect(self.cfg["app_path"], timeout=30, isolation_level=None)
        except Exception:
            self.retry_at = time.monotonic() + 0.1
            return False
        return True

    def broken(self) -> None:
        conn, self.conn = self.conn, None
        self.retry_at = time.monotonic() + 0.05
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def pending(self) -> list[int]:
        """Task ids with no result yet."""
        conn = self.conn
        tasks = int(self.cfg["tasks"])
        if self.kind == "postgres":
            sql = (
                f"SELECT g FROM generate_series(0, {tasks - 1}) g "
                f"EXCEPT SELECT task_id FROM {self.results} ORDER BY 1"
            )
        else:
            sql = (
                f"WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g "
                f"WHERE i < {tasks - 1}) SELECT i FROM g EXCEPT SELECT task_id FROM "
                f"{self.results} ORDER BY 1"
            )
        return [r[0] for r in conn.execute(sql).fetchall()]

    def _insert_sql(self, outer: bool) -> str:
        p = self.p
        token = "a.token_id" if self.kind == "postgres" else "a.token"
        claim = (
            f"a.site = {p} AND a.date = {p} AND a.task_key = {p} AND a.node = {p} "
            "AND a.status = 'claimed'"
        )
        cols = "task_id, node, pid, token, epoch, incarnation, claimed_at, variant"
        values = f"{p}, {p}, {p}, {token}, a.epoch, a.incarnation, a.claimed_at, {p}"
        if outer:  # check-after-claim: write even if the claim is gone (that is the pattern)
            return (
                f"INSERT INTO {self.results} ({cols}) SELECT {values} "
                f"FROM (SELECT 1) AS one LEFT JOIN {self.audit} a ON {claim}"
            )
        return (
            f"INSERT INTO {self.results} ({cols}) SELECT {values} FROM {self.audit} a WHERE {claim}"
        )

    def _params(self, task: Task, variant: str) -> tuple[Any, ...]:
        return (
            task.id, self.node, self.pid, variant,
            self.site, self.date, task.key, self.node,
        )  # fmt: skip

    def _is_unique_violation(self, exc: BaseException) -> bool:
        if self.kind == "postgres":
            from psycopg import errors

            return isinstance(exc, errors.UniqueViolation)
        import sqlite3

        return isinstance(exc, sqlite3.IntegrityError)

    def _duplicate(self, task: Task, variant: str) -> None:
        try:
            sql = f"SELECT node, pid, incarnation, epoch FROM {self.results} WHERE task_id = "
            row = self.conn.execute(sql + self.p, (task.id,)).fetchone()
        except Exception:
            row = None
        self.log.emit("duplicate", info={"task": task.id, "variant": variant, "first": row})

    def process_tx(self, job: Job, task: Task) -> str:
        """Side effect and completion in one transaction: 'done', 'lost', 'duplicate', 'error'."""
        if self.log.work_ms:
            time.sleep(self.log.work_ms / 1000)  # the work itself, before the write
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")
            try:
                cur = conn.execute(self._insert_sql(False), self._params(task, "tx"))
                if cur.rowcount != 1:
                    conn.execute("ROLLBACK")
                    job.complete(task)  # the claim is gone (or already done): settle it
                    return "lost"
                if not job.complete(task, connection=conn):
                    conn.execute("ROLLBACK")
                    return "lost"
                if self.on_completed is not None:
                    self.on_completed(job, task)  # still inside the transaction
                if self.log.hold_ms:
                    time.sleep(self.log.hold_ms / 1000)  # a slow user transaction
                conn.execute("COMMIT")
                return "done"
            except BaseException as exc:
                if self._is_unique_violation(exc):
                    conn.execute("ROLLBACK")
                    self._duplicate(task, "tx")
                    _quietly(lambda: job.release(task))
                    return "duplicate"
                raise
        except BackendUnavailable:
            self.broken()  # the completion failed on our connection: release the claim
            return "error"
        except Exception as exc:
            if self._is_connection_error(exc):
                self.broken()
                return "error"
            raise

    def process_check(self, job: Job, task: Task) -> str:
        """Check-after-claim: re-read, write only if not done yet, then complete."""
        conn = self.conn
        try:
            row = conn.execute(
                f"SELECT 1 FROM {self.results} WHERE task_id = {self.p}", (task.id,)
            ).fetchone()
            if row is None:
                if self.log.work_ms:
                    time.sleep(self.log.work_ms / 1000)
                try:
                    conn.execute(self._insert_sql(True), self._params(task, "check"))
                except Exception as exc:
                    if not self._is_unique_violation(exc):
                        raise
                    self._duplicate(task, "check")
            job.complete(task)  # queued and retried by the Job on a transient error
            return "done"
        except Exception as exc:
            if self._is_connection_error(exc):
                self.broken()
                return "error"
            raise

    def _is_connection_error(self, exc: BaseException) -> bool:
        if self.kind == "postgres":
            import psycopg

            return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
        import sqlite3

        return isinstance(exc, sqlite3.OperationalError)


def _quietly(fn: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):
        fn()


# -- the loop ----------------------------------------------------------------------------
class Worker:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.log = Log(cfg)
        self.app = App(cfg, self.log)
        self.job: Job | None = None
        self.seen: frozenset[int] = frozenset()
        self.seen_at = 0.0
        self.status: tuple[Any, ...] = ()
        self.status_at = 0.0
        self.idle_sample = float(cfg.get("idle_sample_ms", 2)) / 1000
        self.stop_reason: str | None = None
        self.mark = 0
        self.counts = {"done": 0, "lost": 0, "duplicate": 0, "error": 0}
        self.conflicted = False
        self.holds = 0
        if cfg.get("holder"):
            self.app.on_completed = self.hold

    # observation -----------------------------------------------------------------
    def sample(self) -> None:
        job = self.job
        assert job is not None
        current = job.my_tokens
        t = self.log.now()
        if current is not self.seen and current != self.seen:
            self.log.emit(
                "own",
                t=t,
                t_prev=self.seen_at,
                tokens=current,
                added=current - self.seen,
                removed=self.seen - current,
            )
            self.seen = current
        self.seen_at = t
        if time.monotonic() - self.status_at >= 0.05:
            self.poll_status()
        if self.log.mark != self.mark:
            # Everything this process logged before is older: the harness's sync point.
            self.mark = self.log.mark
            self.log.emit("mark", info={"mark": self.mark, "tokens": len(current)})

    def poll_status(self) -> None:
        job = self.job
        assert job is not None
        self.status_at = time.monotonic()
        st = job.get_coordination_status()
        key = (st["state"], st["incarnation"], st["leader"], st["error"])
        if key != self.status:
            self.status = key
            self.log.emit("status", info=st)
        if st["state"] == "superseded":
            if not self.conflicted:
                self.conflicted = True
                self.log.emit("conflict", info={"error": st["error"]})
                # ``ignore_conflict``: a while-True loop that never looks (it keeps
                # sampling; can_claim_task answers False for good).
                if not self.cfg.get("ignore_conflict") and self.stop_reason is None:
                    self.stop_reason = "conflict"
        elif st["error"] and self.stop_reason is None:
            self.stop_reason = "error"
            self.log.emit("error", info={"error": st["error"]})

    def on_rebalance(self, event: jobsync.RebalanceEvent) -> None:
        self.log.emit(
            "rebalance",
            tokens=event.tokens,
            added=event.added,
            removed=event.removed,
            info={"version": event.version, "first": event.first},
        )

    def hold(self, job: Job, task: Task) -> None:
        """With ``holder``: when the harness asks (``Cluster.hold_transaction``), keep the
        transaction that just completed ``task`` open for ``hold_s`` seconds (its claim
        row stays locked), sampling all along; with ``pin_to``, first pin the task's
        token to that worker and wait until it left this one; with ``release_inside``, call
        ``job.release(task)`` without a connection and log how it ended and how long
        it took (``hold_release``; never logged if it hangs)."""
        log = self.log
        if log.hold_seq <= self.holds:
            return
        self.holds = log.hold_seq
        began, seconds = log.now(), log.hold_s
        token = job.task_to_token(task.id)
        log.emit("hold_begin", t=began, info={"task": task.id, "token": token, "seconds": seconds})
        pin_to = self.cfg.get("pin_to")
        if pin_to:
            # Pin the held task's token to another worker: the leader moves it there, and
            # that worker, seeing the task pending (our insert is not committed), tries
            # to claim it while our transaction keeps its claim row locked.
            job.register_lock(task.id, pin_to, "held transaction")
            moved = time.monotonic() + 5
            while token in job.my_tokens and time.monotonic() < moved:
                self.sample()
                time.sleep(self.idle_sample)
            self.sample()
            log.emit("hold_moved", info={"token": token, "moved": token not in job.my_tokens})
        if self.cfg.get("release_inside"):
            t0 = time.monotonic()
            info: dict[str, Any]
            try:
                info = {"returned": job.release(task)}
            except LockTimeout as exc:
                info = {"raised": "LockTimeout", "error": str(exc)}
            except Exception as exc:
                info = {"raised": type(exc).__name__, "error": str(exc)}
            info["seconds"] = round(time.monotonic() - t0, 4)
            log.emit("hold_release", info={"task": task.id, **info})
        end = time.monotonic() + max(0.0, began + seconds - log.now())
        while time.monotonic() < end:
            self.sample()
            time.sleep(self.idle_sample)
        log.emit("hold_end", info={"task": task.id, "held_s": round(log.now() - began, 3)})

    def idle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self.stop_reason is None:
            self.sample()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(self.idle_sample, left))

    # the program -------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.cfg
        self.log.start()
        signal.signal(signal.SIGTERM, self.on_final_sigterm)
        self.log.emit(
            "start",
            info={
                "offset": self.log.offset,
                "variant": cfg["variant"],
                "library": os.path.dirname(jobsync.__file__),
                "defences_off": cfg.get("defences_off", []),
            },
        )
        timing = cfg["timing"]
        coordination = CoordinationConfig(
            total_tokens=int(cfg["tokens"]),
            heartbeat_interval_sec=timing["heartbeat"],
            heartbeat_timeout_sec=timing["timeout"],
            safety_margin_sec=timing["margin"],
            drain_timeout_sec=timing["drain_timeout"],
            **({"settle_window_sec": timing["settle"]} if timing.get("settle") else {}),
            **(
                {"rebalance_check_interval_sec": timing["reconcile"]}
                if timing.get("reconcile")
                else {}
            ),
        )
        off = list(cfg.get("defences_off", ()))
        if cfg.get("unsafe_no_self_fencing"):
            # Answer True until a heartbeat says otherwise.  Only the harness's own
            # meta-test sets it.
            off.append("self_fencing")
        tasks = [Task(i) for i in range(int(cfg["tasks"]))]
        process = self.app.process_tx if cfg["variant"] == "tx" else self.app.process_check
        self.job = Job(
            cfg["name"],
            cfg["site"],
            cfg["url"],
            coordination_config=coordination,
            date=datetime.date.fromisoformat(cfg["date"]),
            on_rebalance=self.on_rebalance,
            wait_on_enter=float(cfg.get("wait_on_enter", 60)),
            **without_defences(off),
        )
        try:
            with self.job as job:
                self.sample()
                self.log.emit("ready", info={"tokens": len(job.my_tokens)})
                unsettled: list[Task] = []
                while self.stop_reason is None:  # the README's while True (draining unseen)
                    self.sample()
                    self.release(unsettled)
                    if not self.app.ready():
                        self.idle(0.05)
                        continue
                    try:
                        pending = self.app.pending()
                    except Exception as exc:
                        if not self.app._is_connection_error(exc):
                            raise
                        self.app.broken()
                        self.idle(0.05)
                        continue
                    if not pending:
                        self.idle(0.5)
                        continue
                    claimed = 0
                    for task in (tasks[i] for i in pending):
                        self.sample()
                        if self.stop_reason is not None or not self.app.ready():
                            break
                        if job.can_claim_task(task):
                            errors = job.counters["claim_errors"]
                            try:
                                added = job.add_task(task)
                            except NodeNameConflict:
                                if not self.cfg.get("ignore_conflict"):
                                    raise
                                continue  # a while-True loop that catches and goes on
                            if not added:
                                if job.counters["claim_errors"] != errors:
                                    # add_task answered False on a backend error: whether
                                    # the claim committed is unknown to this worker.
                                    self.log.emit("claim_error", info={"task": task.id})
                                continue
                            claimed += 1
                            outcome = process(job, task)
                            if outcome == "error":
                                unsettled.append(task)
                        else:
                            continue
                        if outcome != "done":
                            self.log.emit("outcome", info={"task": task.id, "outcome": outcome})
                        self.counts[outcome] += 1
                    if not claimed:
                        self.idle(0.02)
                self.log.emit("leaving", info={"reason": self.stop_reason, **self.counts})
        except NodeNameConflict as exc:
            self.log.emit("exit", info={**self.counts, "code": 3, "error": str(exc)})
            self.log.flush(3)
            return 3
        except BaseException as exc:
            self.log.emit("exit", info={**self.counts, "code": 2, "error": repr(exc)})
            self.log.flush(3)
            raise
        self.log.emit("exit", info={"code": 0, **self.counts})
        self.log.flush(3)
        return 0

    def release(self, unsettled: list[Task]) -> None:
        """Give back claims whose transaction failed (its COMMIT may or may not have
        happened: a release finds nothing if it did), so the task is done again."""
        job = self.job
        assert job is not None
        while unsettled:
            try:
                released = job.release(unsettled[0])
            except BackendUnavailable:
                return  # next pass
            self.log.emit("released", info={"task": unsettled[0].id, "released": released})
            unsettled.pop(0)

    def on_final_sigterm(self, signum: int, frame: object) -> None:
        """Ours, installed before the Job's: it runs after the drain (or before enter).
        With ``final_delay_s``, the program's own shutdown takes that long first (the
        process, and any transaction it holds open, lives on after the Job is done)."""
        if self.job is not None:
            self.sample()
        delay = float(self.cfg.get("final_delay_s", 0))
        if delay:
            self.log.emit("final_delay", info={"seconds": delay})
            time.sleep(delay)
        self.log.emit("exit", info={"code": -signal.SIGTERM, **self.counts})
        self.log.flush(3)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def without_defences(names: list[str]) -> dict[str, Any]:
    """``Job`` keyword arguments turning the named safety defences off: jobsync's
    test-only ``Defences`` (``jobsync.core.defences``), for meta-tests and teeth runs."""
    if not names:
        return {}
    if "_defences" in inspect.signature(Job).parameters:
        from jobsync.core.defences import Defences

        return {"_defences": Defences.without(*names)}
    if names == ["self_fencing"]:  # a library from before Defences (JOBSYNC_IT_LIBRARY)
        import jobsync.runtime.snapshot as snapshot

        snapshot.SELF_FENCING = False  # type: ignore[attr-defined]
        return {}
    raise SystemExit(f"this jobsync ({jobsync.__file__}) cannot turn off {names}")


def main() -> int:
    logging.basicConfig(
        level=logging.INFO if CFG.get("verbose") else logging.WARNING,
        format=f"%(asctime)s {CFG['name']}[{os.getpid()}] %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    return Worker(CFG).run()


if __name__ == "__main__":
    raise SystemExit(main())
