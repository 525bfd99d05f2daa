"""Fixtures for Job tests on real backends: memory, SQLite files and PostgreSQL.

``backends`` yields a factory ``make(client) -> Backend``: each worker gets its
own handle (its own connection), all on one store.  Timings are short and
real; tests wait for conditions with deadlines, never for fixed sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobsync import CoordinationConfig, Job
from jobsync.backends.base import Backend
from jobsync.backends.memory import MemoryStore
from jobsync.backends.sqlite import SQLiteBackend

FAST = CoordinationConfig(
    total_tokens=64,
    heartbeat_interval_sec=0.2,
    heartbeat_timeout_sec=2.0,
    safety_margin_sec=0.5,
    settle_window_sec=0.2,
    drain_timeout_sec=2.0,
)

Factory = Callable[[str], Backend]


class Backends:
    """Opens handles on one store and closes them all at the end."""

    def __init__(self, kind: str, opener: Factory) -> None:
        self.kind = kind
        self._opener = opener
        self._opened: list[Backend] = []
        self._lock = threading.Lock()

    def __call__(self, client: str) -> Backend:
        handle = self._opener(client)
        with self._lock:
            self._opened.append(handle)
        return handle

    def close(self) -> None:
        for handle in self._opened:
            handle.close()


def _memory() -> Backends:
    store = MemoryStore()
    return Backends("memory", store.connect)


def _sqlite(tmp_path: Path) -> Backends:
    path = tmp_path / "jobsync.db"
    return Backends("sqlite", lambda client: SQLiteBackend(path, client=client))


def _postgres(request: pytest.FixtureRequest) -> Backends:
    from jobsync.backends.postgres import PostgresBackend

    dsn = request.getfixturevalue("pg_dsn")
    schema = request.getfixturevalue("pg_schema")
    return Backends("postgres", lambda client: PostgresBackend(dsn, client=client, schema=schema))


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backends]:
    kind = request.param
    made = _memory() if kind == "memory" else _sqlite(tmp_path) if kind == "sqlite" else None
    made = made or _postgres(request)
    yield made
    made.close()


@pytest.fixture
def memory_backends() -> Iterator[Backends]:
    made = _memory()
    yield made
    made.close()


def eventually(predicate: Callable[[], bool], timeout: float = 10.0, every: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass (a condition, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def start_jobs(backends: Backends, names: list[str], **kwargs: object) -> list[Job]:
    """Enter several Jobs at once (as workers starting together would)."""
    config = kwargs.pop("config", FAST)
    jobs = [
        Job(
            name,
            "site",
            backends(name),
            coordination_config=config,  # type: ignore[arg-type]
            handle_sigterm=False,
            wait_on_enter=30,
            **kwargs,  # type: ignore[arg-type]
        )
        for name in names
    ]
    errors: list[BaseException] = []

    def enter(job: Job) -> None:
        try:
            job.__enter__()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enter, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return jobs


def crash(job: Job) -> None:
    """Simulate a process crash: the coordination thread stops, nothing says goodbye."""
    driver = job._driver
    assert driver is not None
    driver.stop(timeout=5)
    job._halted = True  # a dead process answers nothing
    job._entered = False


def covered(jobs: list[Job], total: int = FAST.total_tokens) -> bool:
    seen: set[int] = set()
    for job in jobs:
        tokens = job.my_tokens
        if seen & tokens:
            return False
        seen |= tokens
    return len(seen) == total


def balanced(jobs: list[Job], total: int = FAST.total_tokens) -> bool:
    counts = [len(job.my_tokens) for job in jobs]
    return covered(jobs, total) and max(counts) - min(counts) <= 1
