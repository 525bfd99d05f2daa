"""Fixtures for the command line: a real SQLite file populated by running Jobs.

The command line is run in-process through ``main(argv)`` (what the console
script calls), so a test reads its exit code, stdout and stderr directly;
``test_entry_points`` runs the real ``python -m jobsync`` once.  Tests wait
for conditions with deadlines, never for fixed sleeps.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from jobsync import CoordinationConfig, Job, Task
from jobsync.cli import main

SITE = "ops"
FAST = CoordinationConfig(total_tokens=100, heartbeat_interval_sec=0.2, heartbeat_timeout_sec=1.0)


@attrs.frozen
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@attrs.define
class Site:
    path: Path
    url: str
    jobs: dict[str, Job]
    stack: contextlib.ExitStack

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> Result:
        return run(capsys, *args, "--dsn", self.url, "--site", SITE)

    def leave(self) -> None:
        """Every Job leaves gracefully (rows deleted)."""
        self.stack.close()
        self.jobs.clear()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(0.02)


@contextlib.contextmanager
def populated(path: Path, url: str | None = None) -> Iterator[Site]:
    """Two live workers (w1 the elder), a lock pinning 'special' to w2, ten tasks done;
    on the SQLite file ``path`` unless ``url`` names another database."""
    url = url or f"sqlite:///{path}"
    with contextlib.ExitStack() as stack:
        jobs = {}
        for name in ("w1", "w2"):
            job = Job(name, SITE, url, coordination_config=FAST, handle_sigterm=False)
            jobs[name] = stack.enter_context(job)
        jobs["w1"].register_lock("special", ["w2"], reason="w2 has the data")
        eventually(lambda: jobs["w2"].can_claim_task(Task("special")))
        pending = set(range(10))

        def work() -> bool:
            for i in sorted(pending):
                for job in jobs.values():
                    task = Task(i)
                    if job.can_claim_task(task) and job.add_task(task) and job.complete(task):
                        pending.discard(i)
            return not pending

        eventually(work)
        yield Site(path=path, url=url, jobs=jobs, stack=stack.pop_all())


@pytest.fixture(scope="module")
def live_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Read-only tests share one cluster."""
    with populated(tmp_path_factory.mktemp("cli") / "jobsync.db") as site, site.stack:
        yield site


@pytest.fixture
def fresh_site(tmp_path: Path) -> Iterator[Site]:
    """Tests that change the site get their own."""
    with populated(tmp_path / "jobsync.db") as site, site.stack:
        yield site


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    """``populated`` on a SQLite file, then on a PostgreSQL schema of the test's own."""
    url = None
    if request.param == "postgres":
        from .test_postgres import url_of

        dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
        url = url_of(dsn, schema)
        assert main(["migrate", "--dsn", url]) == 0
    with populated(tmp_path / "jobsync.db", url) as found, found.stack:
        yield found
