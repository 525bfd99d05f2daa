"""What every benchmark shares: one timing loop, one scratch store, small helpers.

- Timing: ``stopwatch`` times one call (wall clock and this process's CPU
  time, after an optional ``gc.collect()``); ``timed`` is the loop every
  benchmark repeats a call with (a fixed number of runs, or a minimum and a
  time budget, optionally after a warm-up call); ``per_call_ns`` is that
  loop over a list of arguments, in nanoseconds per call; ``spread`` is the
  (median, min, max) every table prints.
- Scratch stores: ``scratch_store(kind, dsn)`` opens a throwaway store of one
  backend kind (a memory store, a SQLite file in a temporary directory, a
  PostgreSQL schema, or with ``database=True`` a PostgreSQL database of its
  own) and removes it afterwards; ``Scratch.open(client)`` gives as many
  handles on it as a benchmark needs, all closed at the end.
  ``postgres_problem`` says why a server does not answer, so a benchmark
  can skip it instead of failing.
- ``owned_pg_server``: a throwaway PostgreSQL cluster from the local
  binaries (``tests/support/pg.py``), for benchmarks that need server
  settings of their own; ``repo_on_path`` makes the checkout's ``tests``
  package importable (it is not installed).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from jobsync.backends.base import Backend

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
BACKENDS = ("memory", "sqlite", "postgres")
LOCAL_COUNTERS = ("round_trips", "wait_for_change", "now")
"""Backend counters that are not requests of their own: the round-trip total, the
local wait for a change (LISTEN costs none) and the SQLite clock read."""


def default_dsn() -> str:
    """``JOBSYNC_TEST_DSN``, else the local server as postgres."""
    return os.environ.get("JOBSYNC_TEST_DSN", DEFAULT_DSN)


def requests(stats: Mapping[str, int], local: Iterable[str] = LOCAL_COUNTERS) -> int:
    """Requests sent to the database according to a backend's ``statistics()``."""
    skip = set(local)
    return sum(v for k, v in stats.items() if k not in skip)


# -- timing -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample(Generic[T]):
    """One timed call: its result, wall-clock and CPU milliseconds."""

    result: T
    wall_ms: float
    cpu_ms: float


def stopwatch(fn: Callable[[], T], *, collect: bool = False) -> Sample[T]:
    """Time one call of ``fn``; with ``collect``, after a ``gc.collect()`` (so the
    previous step's garbage is not charged to this call)."""
    if collect:
        gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    cpu = time.process_time() - start_cpu
    return Sample(result, (time.perf_counter() - start) * 1000.0, cpu * 1000.0)


@dataclass
class Timing(Generic[T]):
    """The runs of ``timed``: the last result and every run's times (milliseconds)."""

    result: T
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def timed(
    fn: Callable[[], T],
    runs: int,
    *,
    min_runs: int | None = None,
    budget_s: float = 0.0,
    warmup: bool = False,
    collect: bool = False,
) -> Timing[T]:
    """The timing loop: call ``fn`` ``runs`` times, or, with ``min_runs``, at least that
    often and then again while less than ``budget_s`` seconds were spent, up to ``runs``.
    ``warmup`` makes one untimed call first (caches, the allocator)."""
    if warmup:
        fn()
    least = runs if min_runs is None else min(min_runs, runs)
    out: Timing[T] | None = None
    spent = 0.0
    while True:
        sample = stopwatch(fn, collect=collect)
        if out is None:
            out = Timing(sample.result)
        out.result = sample.result
        out.wall_ms.append(sample.wall_ms)
        out.cpu_ms.append(sample.cpu_ms)
        spent += sample.wall_ms / 1000.0
        done = len(out.wall_ms)
        if done >= runs or (done >= least and spent >= budget_s):
            return out


def per_call_ns(fn: Callable[[Any], object], items: Sequence[Any], repeat: int) -> float:
    """Median over ``repeat`` passes of the nanoseconds one ``fn(item)`` takes."""

    def one_pass() -> None:
        for item in items:
            fn(item)

    return statistics.median(timed(one_pass, repeat).wall_ms) * 1e6 / len(items)


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


# -- scratch stores ---------------------------------------------------------------------------
def postgres_problem(dsn: str) -> str | None:
    """None if ``dsn`` answers, else why not (one line)."""
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}"
    return None


def _drop(dsn: str, what: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    statement = {
        "schema": "DROP SCHEMA IF EXISTS {} CASCADE",
        "database": "DROP DATABASE IF EXISTS {} WITH (FORCE)",
    }[what]
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SET lock_timeout = '20s'")
        conn.execute(sql.SQL(statement).format(sql.Identifier(name)))


@contextlib.contextmanager
def _postgres_place(dsn: str, name: str, database: bool) -> Iterator[tuple[str, str, str | None]]:
    """(the DSN to use, its database, the schema or None): a scratch database where asked
    and the role may create one, else a scratch schema in the DSN's database."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as admin:
        created = False
        if database:
            try:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created = True
            except psycopg.errors.InsufficientPrivilege:
                pass
        row = admin.execute("SELECT current_database()").fetchone()
        assert row is not None
        current = str(row[0])
    if created:
        try:
            yield make_conninfo(dsn, dbname=name), name, None
        finally:
            _drop(dsn, "database", name)
        return
    try:
        yield dsn, current, name
    finally:
        _drop(dsn, "schema", name)


@dataclass
class Scratch:
    """A throwaway store: ``open(client)`` gives a new handle on it."""

    kind: str
    open: Callable[[str], Backend]
    location: str
    """The SQLite file; the PostgreSQL schema or database; ``memory``."""
    dsn: str | None = None
    """PostgreSQL: the DSN the handles use."""
    database: str | None = None
    """PostgreSQL: the database the handles write to."""


@contextlib.contextmanager
def scratch_store(
    kind: str, dsn: str | None = None, *, database: bool = False, prefix: str = "jobsync_bench"
) -> Iterator[Scratch]:
    """A throwaway store of ``kind`` (``memory``, ``sqlite`` or ``postgres``), removed on exit
    with every handle ``open`` gave.  PostgreSQL: a scratch schema in ``dsn``'s database, or
    with ``database`` a scratch database of its own (so ``pg_stat_database`` counts its
    handles alone) where the role may create one."""
    handles: list[Backend] = []

    def keep(handle: Backend) -> Backend:
        handles.append(handle)
        return handle

    def close_all() -> None:
        for handle in reversed(handles):
            handle.close()

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with contextlib.ExitStack() as stack:
        if kind == "memory":
            from jobsync.backends.memory import MemoryStore

            store = MemoryStore()
            stack.callback(close_all)
            yield Scratch(kind, lambda client: keep(store.connect(client)), "memory")
        elif kind == "sqlite":
            from jobsync.backends.sqlite import SQLiteBackend

            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{prefix}-"))
            path = os.path.join(tmp, f"{prefix}.db")
            stack.callback(close_all)  # before the directory goes
            yield Scratch(kind, lambda client: keep(SQLiteBackend(path, client=client)), path)
        elif kind == "postgres":
            from jobsync.backends.postgres import PostgresBackend

            target, db, schema = stack.enter_context(
                _postgres_place(dsn or default_dsn(), name, database)
            )
            stack.callback(close_all)  # before the schema or database is dropped

            def open_pg(client: str) -> Backend:
                if schema is None:
                    return keep(PostgresBackend(target, client=client))
                return keep(PostgresBackend(target, client=client, schema=schema))

            yield Scratch(kind, open_pg, schema or db, dsn=target, database=db)
        else:
            raise ValueError(f"unknown backend {kind!r}")


# -- the checkout's tests package -------------------------------------------------------------
def repo_on_path() -> None:
    """Make ``tests`` (not installed, found from the checkout) importable."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def owned_pg_server(settings: Mapping[str, str]) -> Iterator[Any]:
    """A throwaway PostgreSQL cluster with ``settings`` (``tests/support/pg.py``)."""
    repo_on_path()
    from tests.support.pg import OwnedPgServer

    with OwnedPgServer(settings=dict(settings)) as server:
        yield server


# -- output -----------------------------------------------------------------------------------
def write_json(path: str | os.PathLike[str] | None, payload: object) -> None:
    """Write ``payload`` as indented JSON to ``path`` (nothing when None)."""
    if path is not None:
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")
