"""Upgrading from the original jobsync, against databases the real original made.

Every database here was created and used by the original itself (PyPI
``jobsync`` 1.3.14 running as real processes, or the 1.1.1 release's own
schema code; see ``original.py``), never by a hand-written imitation of its
tables.  What must hold:

- a worker or a command of this library on such a database stops with one
  ``OriginalSchemaFound`` naming ``python -m jobsync migrate``, and creates
  nothing;
- ``migrate --dry-run`` prints the plan and changes nothing;
- ``migrate`` moves the original's tables aside (nothing deleted) and carries
  its locks (creator, reason, expiry) and audit over; a second run, or
  several at once, do it exactly once;
- with original workers heartbeating, new workers claim nothing until the last
  original stops or times out, then take over: no item is processed by both.
"""

from __future__ import annotations

import datetime
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobsync import Job, Task
from jobsync.backends.url import open_backend
from jobsync.core.errors import InvalidArgument, OriginalSchemaFound, SchemaError
from jobsync.runtime.config import Settings
from jobsync.upgrade import migrate
from tests.integration import original as O

pytestmark = pytest.mark.postgres

LOCKS = ("gpu-1=gpu-%:needs a GPU:7", "etl-eu=eu-%,%:prefer the EU")
ITEMS = 40
SITE = "production"


@pytest.fixture(scope="module")
def original_python() -> Path:
    return O.environment()[0]


@pytest.fixture
def db(pg_server: str) -> Iterator[dict[str, str]]:
    with O.scratch_database(pg_server) as params:
        yield params


def _run_original_once(python: Path, db: dict[str, str], tmp: Path, **kw: Any) -> None:
    """One original worker registers the locks, processes every item, and leaves
    cleanly (its audit written, its node row deleted), as a day's run would."""
    O.prepare_items(db, ITEMS)
    args = [f"--lock={spec}" for spec in LOCKS] + ["--once"]
    if "appname" in kw:
        args.append(f"--appname={kw['appname']}")
    worker = O.original_worker(python, db, "orig-1", *args, log=tmp / "orig-1.log")
    assert worker.wait(timeout=120) == 0, (tmp / "orig-1.log").read_text()
    done = _count(db, "SELECT count(DISTINCT item) FROM processed")
    assert done == ITEMS, (tmp / "orig-1.log").read_text()


def _snapshot(db: dict[str, str]) -> dict[str, object]:
    """Every table of the database with an md5 of its rows, in name order."""
    out: dict[str, object] = {}
    with psycopg.connect(O.dsn(db), autocommit=True) as conn:
        names = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
        for (name,) in names:
            row = conn.execute(
                f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM \"{name}\" t"
            ).fetchone()
            out[name] = row
    return out


def _migrate(db: dict[str, str], **kw: Any) -> Any:
    lines: list[str] = []
    kw.setdefault("total_tokens", 10_000)
    kw.setdefault("hash_function", "xxh3")
    outcome = migrate(O.dsn(db), say=lines.append, **kw)
    return outcome, "\n".join(lines)


def _cli(db: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobsync", "migrate", "--dsn", O.url(db), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=O.ROOT,
        check=False,
    )


def test_a_worker_and_a_command_on_the_originals_database_are_told_the_command(
    original_python: Path, db: dict[str, str], tmp_path: Path
) -> None:
    _run_original_once(original_python, db, tmp_path)
    before = _snapshot(db)
    with pytest.raises(OriginalSchemaFound) as caught, Job("new-1", SITE, O.url(db)):
        pass
    message = str(caught.value)
    assert "python -m jobsync migrate" in message and "sync_node" in message
    assert isinstance(caught.value, SchemaError)
    status = subprocess.run(
        [sys.executable, "-m", "jobsync", "status", "--dsn", O.url(db)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=O.ROOT,
        check=False,
    )
    assert status.returncode == 2
    assert status.stderr.count("\n") == 1 and "python -m jobsync migrate" in status.stderr
    assert "Traceback" not in status.stderr
    assert _snapshot(db) == before  # nothing created, nothing changed


def test_a_dry_run_prints_the_plan_and_changes_nothing(
    original_python: Path, db: dict[str, str], tmp_path: Path
) -> None:
    _run_original_once(original_python, db, tmp_path)
    before = _snapshot(db)
    done = _cli(db, "--site", SITE, "--dry-run")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "sync_node -> sync_v1_node" in out
    assert "carry 2 unexpired lock(s)" in out
    assert f"carry {ITEMS} audit row(s)" in out
    assert "dry run: nothing was changed" in out
    assert _snapshot(db) == before
    # The operator guide shows this very output (the schema version aside).
    guide = (O.ROOT / "docs" / "OPERATOR_GUIDE.md").read_text()
    shown = re.search(r"<!-- upgrade: dry-run -->\n```text\n(.*?)\n```", guide, re.S)
    assert shown is not None
    version = re.compile(r"version 0 -> \d+")
    assert version.sub("", shown.group(1)) == version.sub("", out.strip())


def test_migrate_without_a_site_names_the_option(
    original_python: Path, db: dict[str, str], tmp_path: Path
) -> None:
    _run_original_once(original_python, db, tmp_path)
    with pytest.raises(InvalidArgument, match="--site"):
        _migrate(db)
    done = _cli(db)
    assert done.returncode == 2 and "--site" in done.stderr and "Traceback" not in done.stderr


def test_migrate_keeps_the_locks_and_the_audit_and_moves_the_tables_aside(
    original_python: Path, db: dict[str, str], tmp_path: Path
) -> None:
    _run_original_once(original_python, db, tmp_path)
    with psycopg.connect(O.dsn(db), autocommit=True) as conn:
        old_locks = conn.execute(
            "SELECT task_id, node_patterns, reason, created_by, created_at, expires_at"
            " FROM sync_lock ORDER BY task_id"
        ).fetchall()
        old_audit = conn.execute("SELECT date, task_id, node FROM sync_audit").fetchall()
    before = {k: v for k, v in _snapshot(db).items() if k.startswith("sync_")}
    outcome, said = _migrate(db, site=SITE)
    assert outcome.state == "upgraded", said
    assert (outcome.done.locks_carried, outcome.done.audit_carried) == (2, ITEMS)
    after = _snapshot(db)
    for name, content in before.items():  # aside, row for row
        assert after[name.replace("sync_", "sync_v1_", 1)] == content

    backend = open_backend(O.url(db), client="check")
    try:
        locks = {lock.task_key: lock for lock in backend.list_locks(SITE)}
        assert sorted(locks) == [row[0] for row in old_locks]
        for task, patterns, reason, creator, created, expires in old_locks:
            lock = locks[task]
            assert list(lock.patterns) == patterns
            assert (lock.reason, lock.created_by) == (reason, creator)
            assert lock.created_at == pytest.approx(created.timestamp(), abs=1e-5)
            if expires is None:
                assert lock.expires_at is None
            else:
                assert lock.expires_at == pytest.approx(expires.timestamp(), abs=1e-5)
        day = old_audit[0][0]
        audit = backend.read_audit(SITE, day)
        assert sorted((r.task_key, r.node, r.status) for r in audit) == sorted(
            (task, node, "done") for _, task, node in old_audit
        )
    finally:
        backend.close()

    # Exactly once across the upgrade: a task the original did today is done for us too.
    with Job("new-1", SITE, O.url(db), date=day, wait_on_enter=60) as job:
        assert job.list_locks()  # the carried locks are the site's
        done_by_original = Task(old_audit[0][1])
        assert not job.add_task(done_by_original)


def test_migrate_twice_does_it_once(
    original_python: Path, db: dict[str, str], tmp_path: Path
) -> None:
    _run_original_once(original_python, db, tmp_path)
    first = _cli(db, "--site", SITE)
    assert first.returncode == 0 and "upgraded:" in first.stdout, first.stderr
    snapshot = _snapshot(db)
    second = _cli(db, "--site", SITE)
    assert second.returncode == 0, second.stderr
    assert "upgraded from the original jobsync earlier" in second.stdout
    assert f"2 lock(s) and {ITEMS} audit row(s)" in second.stdout
    assert _snapshot(db) == snapshot


def test_migrate_run_concurrently_does_it_once(
    original_python: Path, db: dict[str, str], tmp_path: Path
) -> None:
    _run_original_once(original_python, db, tmp_path)
    command = [sys.executable, "-m", "jobsync", "migrate", "--dsn", O.url(db), "--site", SITE]
    runs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, outputs
    assert sum("upgraded:" in out for out, _ in outputs) == 1, outputs
    with psycopg.connect(O.dsn(db), autocommit=True) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM sync_lock), (SELECT count(*) FROM sync_audit),"
            " (SELECT count(*) FROM pg_tables WHERE tablename LIKE 'sync\\_v1\\_%')"
        ).fetchone()
    assert counts == (2, ITEMS, 10)  # nine tables aside and the handover's row


def test_a_custom_appname_is_the_table_prefix(
    original_python: Path, db: dict[str, str], tmp_path: Path
) -> None:
    _run_original_once(original_python, db, tmp_path, appname="myapp_")
    with pytest.raises(OriginalSchemaFound, match="myapp_node"):
        open_backend(O.url(db, jobsync_prefix="myapp_"), client="x").close()
    env = {"SYNC_SQL_URL": O.url(db), "SYNC_SQL_APPNAME": "myapp_"}  # the original's variable
    with pytest.raises(OriginalSchemaFound, match="myapp_node"):
        open_backend(Settings(env).url, client="x").close()
    outcome, said = _migrate(db, prefix="myapp_", site=SITE)
    assert outcome.state == "upgraded", said
    with psycopg.connect(O.dsn(db), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM myapp_v1_node").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM myapp_lock").fetchone() == (2,)


def _layout_1_1(python: Path, wheel: Path, db: dict[str, str]) -> None:
    """The 1.1 tables by the 1.1.1 release's own code, then rows as 1.1 wrote them:
    zone-less wall-clock times (US/Eastern), token locks, ``item`` audit rows."""
    subprocess.run(
        [str(python), str(O.HERE / "original_v1_1.py"), str(wheel), O.dsn(db), "sync_"],
        check=True,
        timeout=120,
        cwd=O.HERE,
    )
    with psycopg.connect(O.dsn(db), autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'US/Eastern'")
        conn.execute(
            "INSERT INTO sync_lock (token_id, node_pattern, reason, created_at, created_by,"
            " expires_at) VALUES (17, 'gpu-%', 'needs a GPU', localtimestamp, 'old-1', NULL),"
            " (18, 'eu-%', 'expired', localtimestamp - interval '2 days', 'old-1',"
            " localtimestamp - interval '1 day')"
        )
        conn.execute(
            "INSERT INTO sync_audit (created_on, node, item, date) VALUES"
            " ('2024-03-01 09:00', 'old-1', 'a', '2024-03-01'),"
            " ('2024-03-01 09:05', 'old-2', 'a', '2024-03-01'),"
            " ('2024-03-01 10:00', 'old-2', 'b', '2024-03-01')"
        )


def test_the_1_1_layout_upgrades_with_its_token_locks_and_zoneless_times(
    original_python: Path, db: dict[str, str]
) -> None:
    _layout_1_1(original_python, O.environment()[1], db)
    with pytest.raises(SchemaError, match="SYNC_HASH_FUNCTION=md5"):
        _migrate(db, site=SITE)  # xxh3 would pin other tasks than token 17's
    outcome, said = _migrate(db, site=SITE, hash_function="md5")
    assert outcome.state == "upgraded", said
    assert "the 1.1 layout" in said and "US/Eastern" in said
    backend = open_backend(O.url(db), client="check")
    try:
        (lock,) = backend.list_locks(SITE)  # the expired one is left aside
        assert (lock.task_key, lock.token, list(lock.patterns)) == ("token:17", 17, ["gpu-%"])
        audit = backend.read_audit(SITE, datetime.date(2024, 3, 1))
        first = {r.task_key: r for r in audit}
        assert sorted(first) == ["a", "b"]
        assert first["a"].node == "old-1"  # the first to do it, once
        eastern_nine = datetime.datetime(2024, 3, 1, 14, 0, tzinfo=datetime.timezone.utc)
        assert first["a"].completed_at == eastern_nine.timestamp()
    finally:
        backend.close()


class _Feeder:
    """New items every 50 ms until stopped, as a live system's work keeps arriving."""

    def __init__(self, db: dict[str, str]) -> None:
        self.db, self.last = db, 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with psycopg.connect(O.dsn(self.db), autocommit=True) as conn:
            while not self.stopped.wait(0.05):
                self.last += 1
                O.add_items(conn, self.last, self.last)

    def stop(self) -> int:
        self.stopped.set()
        self.thread.join(timeout=10)
        return self.last


def _count(db: dict[str, str], query: str, *params: object) -> Any:
    with psycopg.connect(O.dsn(db), autocommit=True) as conn:
        row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def _wait_started(worker: subprocess.Popen[str], log: Path) -> None:
    """Until the worker says ``ready``; fail with its log if it ends first."""
    O.wait_for(
        lambda: O.log_says(log, "ready") or worker.poll() is not None, 60, f"{log.stem} to start"
    )
    assert worker.poll() is None, log.read_text()


@pytest.mark.slow
def test_zero_downtime_new_workers_claim_nothing_until_the_originals_stop_then_take_over(
    original_python: Path, db: dict[str, str], tmp_path: Path
) -> None:
    O.prepare_items(db, 0)
    feeder = _Feeder(db)
    processes: list[subprocess.Popen[str]] = []
    try:
        originals = []
        for name in ("orig-1", "orig-2"):
            # One after the other: the original creates its tables with CREATE
            # TABLE IF NOT EXISTS, which two processes starting at once can race
            # on (a unique violation in pg_type ends the loser at start).
            log = tmp_path / f"{name}.log"
            originals.append(O.original_worker(original_python, db, name, "--timeout=6", log=log))
            worker = originals[-1]
            processes.append(worker)
            _wait_started(worker, log)
        processed_by = "SELECT count(*) FROM processed WHERE fleet = %s"
        O.wait_for(lambda: _count(db, processed_by, "original") >= 20, 60, "originals at work")

        armed = _cli(db, "--site", SITE, "--original-timeout", "6")
        assert armed.returncode == 0 and "armed:" in armed.stdout, armed.stdout + armed.stderr
        logs = [tmp_path / f"new-{i}.log" for i in (1, 2)]
        news = [O.new_worker(db, f"new-{i}", SITE, log) for i, log in enumerate(logs, 1)]
        processes += news
        O.wait_for(
            lambda: all(O.log_says(log, "original jobsync worker(s) to stop") for log in logs),
            60,
            "the new workers to wait for the originals",
        )
        # Both fleets run on one database: the originals go on, the new ones wait.
        waiting = _count(db, processed_by, "original")
        O.wait_for(lambda: _count(db, processed_by, "original") >= waiting + 20, 60, "more work")
        assert _count(db, processed_by, "new") == 0

        originals[0].send_signal(signal.SIGTERM)  # leaves cleanly: audit written, row gone
        originals[1].send_signal(signal.SIGKILL)  # its heartbeat times out
        assert originals[0].wait(timeout=30) == 0, (tmp_path / "orig-1.log").read_text()
        originals[1].wait(timeout=30)
        stopped = time.monotonic()
        O.wait_for(lambda: all(O.log_says(log, "ready") for log in logs), 60, "the takeover")
        O.wait_for(lambda: _count(db, processed_by, "new") > 0, 60, "the new workers' work")
        took_over = time.monotonic() - stopped
        last = feeder.stop()
        O.wait_for(
            lambda: _count(db, "SELECT count(DISTINCT item) FROM processed") == last,
            60,
            "every item processed",
        )
        # The original's monitoring SQL (its README) on the upgraded, single-site database.
        live = "SELECT count(*) FROM sync_node WHERE last_heartbeat > now() - interval '15 seconds'"
        assert _count(db, live) == 2
        with psycopg.connect(O.dsn(db), autocommit=True) as conn:
            per_worker = dict(
                conn.execute("SELECT node, count(*) FROM sync_token GROUP BY node").fetchall()
            )
        assert set(per_worker) == {"new-1", "new-2"} and sum(per_worker.values()) == 10_000
    finally:
        feeder.stop()
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    with psycopg.connect(O.dsn(db), autocommit=True) as conn:
        both = conn.execute(
            "SELECT item FROM processed GROUP BY item"
            " HAVING count(*) FILTER (WHERE fleet = 'original') > 0"
            " AND count(*) FILTER (WHERE fleet = 'new') > 0"
        ).fetchall()
        twice_by_new = conn.execute(
            "SELECT item FROM processed WHERE fleet = 'new' GROUP BY item HAVING count(*) > 1"
        ).fetchall()
        last_original, first_new = conn.execute(
            "SELECT max(at) FILTER (WHERE fleet = 'original'),"
            " min(at) FILTER (WHERE fleet = 'new') FROM processed"
        ).fetchone()
        carried = conn.execute(
            "SELECT count(*) FROM sync_audit WHERE node = 'orig-1' AND status = 'done'"
        ).fetchone()
    assert both == [], f"processed by an original and a new worker: {both}"
    assert twice_by_new == []
    assert last_original < first_new  # nothing claimed while an original was live
    assert carried is not None and carried[0] > 0  # orig-1's audit, written as it left
    print(f"\nnew workers processing {took_over:.2f} s after the originals stopped")
