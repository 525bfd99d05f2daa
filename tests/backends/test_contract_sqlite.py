"""The shared Backend contract on SQLite, plus what only SQLite has.

The harness opens one temporary file per test and gives every client its own
``SQLiteBackend`` (its own connection) on it, all reading one ManualClock:
SQLite's clock is the host's, injected here so the contract's boundary tests
can stand exactly on an instant.
"""

from __future__ import annotations

import datetime
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobsync.backends.base import Backend, ClaimRequest, DirectAssign, LockSpec, PlanCommit
from jobsync.backends.capabilities import TransactionalCompletion
from jobsync.backends.sqlite import SQLiteBackend
from jobsync.backends.sqlite.schema import SCHEMA_VERSION
from jobsync.core.errors import (
    BackendError,
    BackendUnavailable,
    InvalidArgument,
    LockTimeout,
    SchemaError,
)
from jobsync.testing.backend_contract import BackendContract
from jobsync.testing.clock import ManualClock

SITE = "s"
DAY = datetime.date(2024, 1, 2)


class SQLiteHarness:
    """One SQLite file and one clock; every ``connect`` is a new connection."""

    controls_clock = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = ManualClock()
        self._handles: list[SQLiteBackend] = []

    def connect(self, client: str) -> Backend:
        handle = SQLiteBackend(self.path, client=client, clock=self.clock, poll_interval=0.01)
        self._handles.append(handle)
        return handle

    def set_time(self, instant: float) -> None:
        self.clock.set(instant)

    def wait_until(self, instant: float) -> None:
        if self.clock() < instant:
            self.clock.set(instant)

    def close(self) -> None:
        for handle in self._handles:
            handle.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[SQLiteHarness]:
    made = SQLiteHarness(tmp_path / "contract.db")
    yield made
    made.close()


class TestSQLiteContract(BackendContract):
    """Every contract test, unchanged, on SQLite."""


# -- SQLite only -----------------------------------------------------------------
@pytest.fixture
def db(harness: SQLiteHarness) -> SQLiteBackend:
    backend = harness.connect("main")
    assert isinstance(backend, SQLiteBackend)
    backend.ensure_site(SITE, 4, "xxh3")
    return backend


def _own_everything(db: SQLiteBackend, name: str = "a") -> int:
    """Register ``name`` and give it every token; return its incarnation."""
    incarnation = db.register(SITE, name, 60.0).incarnation
    view = db.read_cluster(SITE)
    db.commit_plan(
        SITE,
        PlanCommit(
            leader=name,
            leader_incarnation=incarnation,
            expected_generation=view.site.generation,
            basis=view.site.change_counter,
            assigns=tuple(
                DirectAssign(
                    token=t, expected_incarnation=None, expected_epoch=0,
                    owner=name, incarnation=incarnation,
                )
                for t in range(len(view.tokens))
            ),
        ),
    )  # fmt: skip
    return incarnation


def _claim(db: SQLiteBackend, incarnation: int, key: str, name: str = "a") -> frozenset[str]:
    owned = db.read_owned(SITE, name, incarnation)
    # Any owned token will do: the backend fences on the token, not on the key's hash.
    request = ClaimRequest(task_key=key, token=owned.tokens[0], epoch=owned.epochs[0])
    return db.claim(SITE, DAY, name, incarnation, [request])


def test_the_file_is_in_wal_mode_with_the_monitoring_names(
    db: SQLiteBackend, harness: SQLiteHarness
) -> None:
    incarnation = _own_everything(db)
    conn = sqlite3.connect(harness.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        rows = conn.execute("SELECT name, created_on, last_heartbeat FROM sync_node").fetchall()
        assert rows == [("a", harness.clock(), harness.clock())]
        tokens = conn.execute("SELECT token_id, node FROM sync_token ORDER BY token_id").fetchall()
        assert tokens == [(t, "a") for t in range(4)]
        assert conn.execute("SELECT version FROM sync_schema").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()
    assert incarnation == 1


def test_a_busy_file_raises_lock_timeout_from_the_driver_error(
    db: SQLiteBackend, harness: SQLiteHarness
) -> None:
    impatient = SQLiteBackend(harness.path, clock=harness.clock, busy_timeout=0.05)
    blocker = sqlite3.connect(harness.path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(LockTimeout) as caught:
            impatient.register(SITE, "a", 60.0)
        assert isinstance(caught.value, BackendUnavailable)  # transient, retried
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        assert "locked" in str(caught.value)
        assert "must be short" in str(caught.value)
        blocker.execute("ROLLBACK")
        assert impatient.register(SITE, "a", 60.0).incarnation == 1  # nothing was written
    finally:
        blocker.close()
        impatient.close()


def test_a_closed_handle_raises_backend_unavailable(db: SQLiteBackend) -> None:
    db.close()
    with pytest.raises(BackendUnavailable):
        db.site_info(SITE)
    with pytest.raises(BackendUnavailable):
        db.now()
    db.close()  # idempotent
    assert db.statistics()["round_trips"] >= 1


def test_sqlite_offers_transactional_completion(db: SQLiteBackend) -> None:
    assert isinstance(db, TransactionalCompletion)


def test_completion_inside_the_callers_transaction_commits_with_it(
    db: SQLiteBackend, harness: SQLiteHarness
) -> None:
    incarnation = _own_everything(db)
    assert _claim(db, incarnation, "t1") == {"t1"}
    mine = sqlite3.connect(harness.path)
    try:
        mine.execute("CREATE TABLE effects (task TEXT)")
        mine.commit()
        mine.execute("INSERT INTO effects VALUES ('t1')")
        assert db.complete_in(mine, SITE, DAY, incarnation, ["t1"]) == {"t1"}
        mine.rollback()  # the side effect and the completion go together
        assert [r.status for r in db.read_audit(SITE, DAY)] == ["claimed"]
        mine.execute("INSERT INTO effects VALUES ('t1')")
        assert db.complete_in(mine, SITE, DAY, incarnation, ["t1"]) == {"t1"}
        assert [r.status for r in db.read_audit(SITE, DAY)] == ["claimed"]  # not yet committed
        mine.commit()
        assert [r.status for r in db.read_audit(SITE, DAY)] == ["done"]
        assert mine.execute("SELECT task FROM effects").fetchall() == [("t1",)]
    finally:
        mine.close()


def test_completion_refuses_other_connections(db: SQLiteBackend, tmp_path: Path) -> None:
    incarnation = _own_everything(db)
    _claim(db, incarnation, "t1")
    with pytest.raises(InvalidArgument, match=r"sqlite3\.Connection"):
        db.complete_in(object(), SITE, DAY, incarnation, ["t1"])
    elsewhere = sqlite3.connect(tmp_path / "other.db")
    try:
        with pytest.raises(InvalidArgument, match=r"other\.db"):
            db.complete_in(elsewhere, SITE, DAY, incarnation, ["t1"])
    finally:
        elsewhere.close()
    assert [r.status for r in db.read_audit(SITE, DAY)] == ["claimed"]


def test_completion_needs_the_callers_transaction_open_in_autocommit_mode(
    db: SQLiteBackend, harness: SQLiteHarness
) -> None:
    incarnation = _own_everything(db)
    _claim(db, incarnation, "t1")
    mine = sqlite3.connect(harness.path, isolation_level=None)
    try:
        with pytest.raises(InvalidArgument, match="autocommit"):
            db.complete_in(mine, SITE, DAY, incarnation, ["t1"])
        mine.execute("BEGIN IMMEDIATE")
        assert db.complete_in(mine, SITE, DAY, incarnation, ["t1"]) == {"t1"}
        mine.execute("ROLLBACK")
        assert [r.status for r in db.read_audit(SITE, DAY)] == ["claimed"]
    finally:
        mine.close()


def test_a_newer_schema_is_refused(harness: SQLiteHarness) -> None:
    SQLiteBackend(harness.path).close()
    conn = sqlite3.connect(harness.path)
    conn.execute("UPDATE sync_schema SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="99"):
        SQLiteBackend(harness.path)


def test_a_file_that_is_not_a_database_is_a_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(SchemaError) as caught:
        SQLiteBackend(path)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


def test_a_missing_directory_is_an_error_retrying_cannot_fix(tmp_path: Path) -> None:
    """Not BackendUnavailable: a worker's enter would retry it for wait_on_enter."""
    with pytest.raises(BackendError, match="no folder") as caught:
        SQLiteBackend(tmp_path / "no" / "such" / "dir.db")
    assert not isinstance(caught.value, BackendUnavailable)
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"poll_interval": 0.5},
        {"poll_interval": 0},
        {"busy_timeout": -1.0},
        {"busy_timeout": float("nan")},
        {"client": 3},
    ],
)
def test_bad_options_are_refused(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        SQLiteBackend(tmp_path / "x.db", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "x.db").exists()


def test_round_trips_count_transactions(db: SQLiteBackend) -> None:
    before = db.statistics()
    db.register(SITE, "a", 60.0)
    db.read_cluster(SITE)
    after = db.statistics()
    assert after["round_trips"] - before["round_trips"] == 2
    assert after["register"] == 1 and after["read_cluster"] == 1


def test_one_handle_serves_two_threads_at_once(db: SQLiteBackend) -> None:
    incarnation = _own_everything(db)
    errors: list[BaseException] = []
    woke: list[bool] = []

    def beat() -> None:
        try:
            for _ in range(200):
                db.heartbeat(SITE, "a", incarnation)
        except BaseException as exc:
            errors.append(exc)

    def wait() -> None:
        try:
            woke.append(db.wait_for_change(SITE, 10.0))
        except BaseException as exc:
            errors.append(exc)

    db.wait_for_change(SITE, 0)  # consume the changes made so far
    threads = [threading.Thread(target=beat), threading.Thread(target=wait)]
    for thread in threads:
        thread.start()
    for n in range(100):
        assert _claim(db, incarnation, f"t{n}") == {f"t{n}"}
    assert woke == []  # claims and heartbeats signal nothing
    db.replace_locks(SITE, "admin", [LockSpec(task_key="t0", token=0, patterns=("a",))], False)
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert woke == [True]
    assert len(db.read_audit(SITE, DAY)) == 100


def test_completion_in_the_callers_transaction_never_waits_on_the_coordination_thread(
    db: SQLiteBackend, harness: SQLiteHarness
) -> None:
    # Regression: a completion in the caller's transaction took the handle's lock while
    # the caller held SQLite's write lock, and a heartbeat holding the handle's lock waited
    # for the write lock: both stalled for the whole busy timeout, and so did every other
    # worker.
    incarnation = _own_everything(db)
    assert _claim(db, incarnation, "t1") == {"t1"}
    mine = sqlite3.connect(harness.path, isolation_level=None)
    beat: list[object] = []
    try:
        mine.execute("BEGIN IMMEDIATE")  # the user's write transaction
        heartbeat = threading.Thread(
            target=lambda: beat.append(db.heartbeat(SITE, "a", incarnation).outcome)
        )
        heartbeat.start()
        heartbeat.join(0.2)  # the heartbeat is now waiting for the write lock
        started = time.monotonic()
        assert db.complete_in(mine, SITE, DAY, incarnation, ["t1"]) == {"t1"}
        mine.execute("COMMIT")
        heartbeat.join()
        assert time.monotonic() - started < 2.0  # busy_timeout is 5 s
        assert [str(o) for o in beat] == ["HeartbeatOutcome.RENEWED"]
    finally:
        mine.close()
