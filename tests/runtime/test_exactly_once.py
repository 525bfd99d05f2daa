"""Exactly once, as users write the loop (README example 3), on the user's own table.

Workers share a table of pending items.  Each claims with
``can_claim_task(task) and add_task(task)`` and then either

- records its side effect and the completion in ONE transaction of its own
  connection (``job.complete(task, connection=conn)``), or
- uses the check-after-claim pattern: re-read the item and act only if it is
  still pending.

Workers join, leave and crash mid-run.  The assertion is on the side
effects in the user's table, not on the library's audit rows.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from jobsync import Job, Task
from jobsync.backends.base import Backend
from jobsync.backends.sqlite import SQLiteBackend

from .conftest import FAST, crash, eventually

ITEMS = 600
SQLITE_ITEMS = 240  # one writer at a time: SQLite's busy handler makes contention slow


class Store:
    """The user's database: a table of items and an effect count per item."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.items = SQLITE_ITEMS if kind == "sqlite" else ITEMS
        if kind == "sqlite":
            self.path = tmp_path / "app.db"
            conn = self.connect()
            conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, effects INTEGER NOT NULL)")
            conn.executemany("INSERT INTO items VALUES (?, 0)", [(i,) for i in range(self.items)])
            conn.commit()
            conn.close()
        else:
            self.dsn = request.getfixturevalue("pg_dsn")
            self.schema = request.getfixturevalue("pg_schema")
            conn = self.connect()
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.execute(f'CREATE TABLE "{self.schema}".items (id int PRIMARY KEY, effects int)')
            conn.execute(
                f'INSERT INTO "{self.schema}".items SELECT g, 0 FROM generate_series(0, %s) g',
                (self.items - 1,),
            )
            conn.commit()
            conn.close()

    def table(self) -> str:
        return "items" if self.kind == "sqlite" else f'"{self.schema}".items'

    def param(self) -> str:
        return "?" if self.kind == "sqlite" else "%s"

    def connect(self) -> object:
        if self.kind == "sqlite":
            return sqlite3.connect(self.path, timeout=30, isolation_level=None)
        import psycopg

        return psycopg.connect(self.dsn)

    def backend(self, client: str) -> Backend:
        if self.kind == "sqlite":
            return SQLiteBackend(self.path, client=client)
        from jobsync.backends.postgres import PostgresBackend

        return PostgresBackend(self.dsn, client=client, schema=self.schema)

    def counts(self) -> dict[int, int]:
        conn = self.connect()
        rows = conn.execute(f"SELECT id, effects FROM {self.table()}").fetchall()  # type: ignore[attr-defined]
        conn.close()  # type: ignore[attr-defined]
        return dict(rows)


class Worker:
    """A user's worker thread running the README loop until every item is done."""

    def __init__(self, store: Store, name: str, style: str) -> None:
        self.store = store
        self.name = name
        self.style = style
        self.stop = threading.Event()
        self.job = Job(
            name,
            "site",
            store.backend(name),
            coordination_config=FAST,
            handle_sigterm=False,
            wait_on_enter=30,
        )
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Worker:
        self.job.__enter__()
        self.thread.start()
        return self

    def run(self) -> None:
        conn = self.store.connect()
        try:
            while not self.stop.is_set():
                pending = self.pending(conn)
                if not pending:
                    return
                for item in pending:
                    if self.stop.is_set():
                        return
                    task = Task(item)
                    if self.job.can_claim_task(task) and self.job.add_task(task):
                        self.process(conn, task)
        except BaseException as exc:
            self.error = exc
        finally:
            conn.close()  # type: ignore[attr-defined]

    def pending(self, conn: object) -> list[int]:
        table = self.store.table()
        sql = f"SELECT id FROM {table} WHERE effects = 0 ORDER BY id"
        rows = conn.execute(sql).fetchall()  # type: ignore[attr-defined]
        if self.store.kind == "postgres":
            conn.commit()  # type: ignore[attr-defined]
        return [r[0] for r in rows]

    def process(self, conn: object, task: Task) -> None:
        table, p = self.store.table(), self.store.param()
        if self.style == "transactional":
            if self.store.kind == "sqlite":
                conn.execute("BEGIN IMMEDIATE")  # type: ignore[attr-defined]
            conn.execute(f"UPDATE {table} SET effects = effects + 1 WHERE id = {p}", (task.id,))  # type: ignore[attr-defined]
            if self.job.complete(task, connection=conn):
                conn.commit()  # type: ignore[attr-defined]
            else:
                conn.rollback()  # type: ignore[attr-defined]
            return
        # check-after-claim: re-read the item's state before acting
        row = conn.execute(f"SELECT effects FROM {table} WHERE id = {p}", (task.id,)).fetchone()  # type: ignore[attr-defined]
        if row[0] == 0:
            conn.execute(f"UPDATE {table} SET effects = effects + 1 WHERE id = {p}", (task.id,))  # type: ignore[attr-defined]
        conn.commit()  # type: ignore[attr-defined]
        self.job.complete(task)

    def leave(self) -> None:
        self.stop.set()
        self.thread.join()
        self.job.__exit__(None, None, None)

    def die(self) -> None:
        self.stop.set()
        crash(self.job)
        self.thread.join()


@pytest.mark.parametrize("style", ["transactional", "check_after_claim"])
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_every_item_exactly_once_through_joins_leaves_and_crashes(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, style: str
) -> None:
    store = Store(kind, tmp_path, request)
    done = lambda: all(v >= 1 for v in store.counts().values())  # noqa: E731
    some_done: Callable[[int], Callable[[], bool]] = lambda n: (  # noqa: E731
        lambda: sum(v >= 1 for v in store.counts().values()) >= n
    )
    workers = [Worker(store, name, style).start() for name in ("a", "b")]
    items = store.items
    assert eventually(some_done(items // 6), 60)
    workers.append(Worker(store, "c", style).start())  # a join mid-run
    assert eventually(some_done(items // 3), 60)
    workers[0].die()  # a crash mid-run, claims and all
    assert eventually(some_done(items // 2), 60)
    workers[1].leave()  # a graceful leave mid-run
    workers.append(Worker(store, "d", style).start())
    assert eventually(done, 120), store.counts()
    for worker in workers[2:]:
        worker.leave()
    assert all(w.error is None for w in workers), [w.error for w in workers]
    counts = store.counts()
    assert len(counts) == items
    twice = {k: v for k, v in counts.items() if v != 1}
    assert twice == {}
