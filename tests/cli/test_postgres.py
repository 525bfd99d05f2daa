"""The command line on PostgreSQL: migrate, read a live site, and no schema made by a typo."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest

from jobsync import Job
from jobsync.cli import main

from .conftest import FAST, SITE, Result, run

pytestmark = pytest.mark.postgres


def url_of(dsn: str, schema: str) -> str:
    """A libpq DSN (URL or key=value) as a jobsync URL with its schema option."""
    from psycopg.conninfo import conninfo_to_dict

    parts = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    user = quote(parts.pop("user", ""), safe="")
    password = parts.pop("password", None)
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    database = quote(parts.pop("dbname", ""), safe="")
    host = parts.pop("host", "")
    query = dict(parts, jobsync_schema=schema)
    if host.startswith("/"):  # a unix socket directory goes in the query
        query["host"], host = host, ""
    return f"postgresql://{auth}{host}/{database}?{urlencode(query)}"


@pytest.fixture
def pg_url(pg_dsn: str, pg_schema: str) -> str:
    return url_of(pg_dsn, pg_schema)


@pytest.fixture
def pg_worker(pg_url: str) -> Iterator[Job]:
    assert main(["migrate", "--dsn", pg_url]) == 0
    with Job("pg-1", SITE, pg_url, coordination_config=FAST, handle_sigterm=False) as job:
        yield job


def test_migrate_then_migrate_again(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    first = run(capsys, "migrate", "--dsn", pg_url)
    assert first.code == 0 and "version 0 -> " in first.out, first.err
    again = run(capsys, "migrate", "--dsn", pg_url)
    assert again.code == 0 and "already at" in again.out


def test_reading_an_unmigrated_schema_creates_nothing(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(capsys, "status", "--site", SITE, "--dsn", pg_url)
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.count("\n") == 1 and "schema" in result.err.lower()
    assert "version 0 -> " in run(capsys, "migrate", "--dsn", pg_url).out  # nothing was made


def test_status_which_and_locks_on_a_live_site(
    pg_worker: Job, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def cli(*args: str) -> Result:
        return run(capsys, *args, "--site", SITE, "--dsn", pg_url)

    status = cli("status", "--json")
    assert status.code == 0, status.err
    report = status.json()
    assert report["leader"] == "pg-1" and report["problems"] == []
    assert [n["tokens"] for n in report["nodes"]] == [100]
    which = cli("which", "task-9", "--json").json()
    assert which["owner"] == "pg-1" and which["token"] == pg_worker.task_to_token("task-9")
    assert cli("locks", "add", "task-9", "pg-%").code == 0
    locks = cli("locks", "list", "--json").json()["locks"]
    assert [(lk["task_id"], lk["patterns"]) for lk in locks] == [("task-9", ["pg-%"])]
    assert [lk["task_id"] for lk in pg_worker.list_locks()] == ["task-9"]
