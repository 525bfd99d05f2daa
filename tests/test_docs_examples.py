"""The guides' examples run as written.

- docs/USAGE_GUIDE.md: every ```python block preceded by ``<!-- checked -->``
  runs, in document order and in one namespace, against the memory and
  SQLite backends.
- docs/OPERATOR_GUIDE.md: every ```sql block preceded by
  ``<!-- checked: NAME -->`` runs, in document order, against a real
  PostgreSQL schema populated by running workers (three live ones with
  locks, claims and completions, and one killed with SIGKILL), with
  ``search_path`` set to that schema.  Some results are checked by NAME.
- The least-privilege role script (``<!-- role-script: setup|grants -->``)
  runs against a throwaway schema with roles of its own; workers then run
  as the worker role and ``jobsync status`` as the monitoring role.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from jobsync import CoordinationConfig, Job, Task, token_for

ROOT = Path(__file__).resolve().parent.parent
USAGE = ROOT / "docs" / "USAGE_GUIDE.md"
OPERATOR = ROOT / "docs" / "OPERATOR_GUIDE.md"
BLOCK = re.compile(r"<!--\s*([\w-]+)(?::\s*([\w-]+))?\s*-->\n```(\w+)\n(.*?)\n```", re.S)
SITE = "production"
TOKENS = 64
FAST = CoordinationConfig(
    total_tokens=TOKENS, heartbeat_interval_sec=0.2, heartbeat_timeout_sec=1.0
)


def blocks(path: Path, marker: str, language: str) -> list[tuple[str | None, int, str]]:
    """(name, line, code) of every ``language`` block marked ``<!-- marker[: name] -->``."""
    text = path.read_text()
    return [
        (m.group(2), text.count("\n", 0, m.start(4)) + 1, m.group(4))
        for m in BLOCK.finditer(text)
        if m.group(1) == marker and m.group(3) == language
    ]


def statements(sql: str) -> list[str]:
    """Split a block on semicolons that end a line, dropping comment-only pieces."""
    pieces = re.split(r";[ \t]*(?:--[^\n]*)?$", sql, flags=re.M)
    out = []
    for piece in pieces:
        code = "\n".join(line for line in piece.splitlines() if not line.strip().startswith("--"))
        if code.strip():
            out.append(piece.strip())
    return out


# -- USAGE_GUIDE.md ---------------------------------------------------------------------
def test_usage_guide_examples_run() -> None:
    found = blocks(USAGE, "checked", "python")
    assert len(found) >= 15, "the usage guide lost its checked examples"
    store = f"memory://guide-{uuid.uuid4().hex[:8]}"  # a fresh in-process store per run
    module = types.ModuleType("usage_guide")  # a real module: dataclasses look it up
    sys.modules[module.__name__] = module
    try:
        for _, line, code in found:
            source = code.replace("memory://guide", store)
            exec(compile(source, f"{USAGE.name}:{line}", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]


# -- OPERATOR_GUIDE.md: monitoring and troubleshooting SQL ---------------------------------
def url_of(dsn: str, schema: str, user: str | None = None, password: str | None = None) -> str:
    """A libpq DSN (URL or key=value) as a jobsync URL, optionally as another user."""
    from psycopg.conninfo import conninfo_to_dict

    parts = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    if user is not None:
        parts["user"], parts["password"] = user, password or ""
    name = quote(parts.pop("user", ""), safe="")
    secret = parts.pop("password", "")
    auth = f"{name}:{quote(secret, safe='')}@" if secret else (f"{name}@" if name else "")
    database = quote(parts.pop("dbname", ""), safe="")
    host = parts.pop("host", "")
    query = dict(parts, jobsync_schema=schema)
    if host.startswith("/"):  # a unix socket directory goes in the query
        query["host"], host = host, ""
    return f"postgresql://{auth}{host}/{database}?{urlencode(query)}"


def same_token_pair() -> tuple[str, str]:
    seen: dict[int, str] = {}
    for i in range(10_000):
        task = f"report-{i}"
        token = token_for(task, TOKENS)
        if token in seen:
            return seen[token], task
        seen[token] = task
    raise AssertionError("no two report ids share a token")


def pins(job: Job) -> list[tuple[str, list[str], str]]:
    first, second = same_token_pair()
    return [
        ("render-7", ["gpu-%"], "needs a GPU"),  # no gpu-% worker: unowned
        ("etl-eu", ["eu-%", "%"], "prefer the EU group"),  # falls back to %
        (first, ["worker-0%"], "any worker"),
        (second, ["worker-02"], "only worker-02"),  # same token, other patterns: conflict
    ]


CRASHER = f"""
import os, signal, sys
from jobsync import CoordinationConfig, Job, Task
cfg = CoordinationConfig(
    total_tokens={TOKENS}, heartbeat_interval_sec=0.2, heartbeat_timeout_sec=1.0
)
with Job("worker-09", {SITE!r}, sys.argv[1], coordination_config=cfg) as job:
    for i in range(200):
        task = Task(f"order-{{i}}")
        if job.can_claim_task(task):
            job.add_task(task)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@contextlib.contextmanager
def running_cluster(url: str) -> Iterator[list[Job]]:
    """Three live workers with locks, claims and completions, and one killed worker."""
    with contextlib.ExitStack() as stack:
        jobs = [
            stack.enter_context(
                Job(
                    f"worker-0{i}",
                    SITE,
                    url,
                    coordination_config=FAST,
                    handle_sigterm=False,
                    lock_provider=pins if i == 1 else None,
                )
            )
            for i in (1, 2, 3)
        ]
        done = subprocess.run(
            [sys.executable, "-c", CRASHER, url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
        assert done.returncode == -9, done.stderr[-2000:]
        # worker-09 is dead once its lease ran out and the leader planned without it.
        wait_for(
            lambda: all(len(j.my_tokens) == (TOKENS - 1) // 3 for j in jobs),
            20,
            "the three workers to share the dead worker's tokens",
        )
        for job in jobs:
            for i in range(200):
                task = Task(f"order-{i}")
                if job.can_claim_task(task) and job.add_task(task) and i % 3:
                    job.complete(task)  # every third one stays open
        yield jobs


@pytest.mark.postgres
def test_operator_guide_queries_run(pg_dsn: str, pg_schema: str) -> None:
    import psycopg
    from psycopg import sql

    found = blocks(OPERATOR, "checked", "sql")
    names = [name for name, _, _ in found]
    assert len(found) >= 20 and len(set(names)) == len(names), names
    url = url_of(pg_dsn, pg_schema)
    results: dict[str, list[tuple[Any, ...]]] = {}
    with running_cluster(url), psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(pg_schema)))
        for name, line, code in found:
            for statement in statements(code):
                try:
                    cursor = conn.execute(statement.encode())
                except psycopg.Error as exc:
                    pytest.fail(f"{OPERATOR.name}:{line} ({name}) fails: {exc}")
                rows = cursor.fetchall() if cursor.description is not None else []
            assert name is not None
            results[name] = rows

    live = {"worker-01", "worker-02", "worker-03"}
    assert live <= {r[0] for r in results["readme-live-nodes"]}
    assert sum(r[1] for r in results["readme-tokens-per-node"]) == TOKENS
    nodes = {r[0]: r for r in results["nodes"]}
    assert {n for n, r in nodes.items() if r[3]} == live and not nodes["worker-09"][3]
    assert results["leader"][0][0] == "worker-01"
    per_node = {r[0]: r[1] for r in results["tokens-per-node"]}
    assert per_node == {"worker-01": 21, "worker-02": 21, "worker-03": 21, "(unowned)": 1}
    assert results["balance"] == [(3, 21, 21, 0, 1)]
    assert results["site-counters"][0][0] == SITE and results["site-counters"][0][1] == TOKENS
    assert results["history"] and results["history"][0][5] == 1  # one token unowned
    assert results["progress"][0][1] > 0 and results["progress"][0][2] > 0
    assert live <= {r[0] for r in results["connections"]}
    assert len(results["token"]) == 1
    assert results["task-audit"] and results["task-audit"][0][6] == "done"
    assert [r[0] for r in results["not-live-nodes"]] == ["worker-09"]
    assert results["not-live-nodes"][0][4:] == (0, 0)  # its tokens and claims were handed on
    assert results["stranded-tokens"] == []
    assert {r[0] for r in results["open-claims"]} == live
    assert results["stuck-claims"] == []  # nothing is 10 minutes old
    assert len(results["locks"]) == 4 and sum(r[-1] for r in results["locks"]) == 3
    assert len(results["lock-conflicts"]) == 1
    assert [r[1] for r in results["unsatisfied-pins"]] == ["render-7"]
    assert results["duplicate-names"] == []
    assert {r[0] for r in results["table-health"]} >= {"sync_node", "sync_token", "sync_audit"}
    assert results["forget-dead-nodes"] == []  # worker-09 died seconds ago, not an hour
    assert results["schema-version"][0][0] == 1


def test_statement_splitting() -> None:
    assert statements("SELECT 1;\n-- a comment\nSELECT 2;  -- why\n") == [
        "SELECT 1",
        "-- a comment\nSELECT 2",
    ]


# -- OPERATOR_GUIDE.md: the least-privilege role ---------------------------------------------
ROLES = ("jobsync_owner", "jobsync_worker", "jobsync_monitor")
WRITES = {"forget-dead-nodes"}  # checked queries the monitoring role may not run


@pytest.mark.postgres
def test_least_privilege_role_script(pg_dsn: str, pg_schema: str) -> None:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    from jobsync.backends import postgres
    from jobsync.cli import main

    script = {name: code for name, _, code in blocks(OPERATOR, "role-script", "sql")}
    assert set(script) == {"setup", "grants"}
    tag = uuid.uuid4().hex[:8]
    roles = {role: f"{role}_{tag}" for role in ROLES}
    password = uuid.uuid4().hex

    def adapt(code: str) -> str:
        for role, unique in roles.items():
            code = code.replace(role, unique)
        code = re.sub(r"'change-me-\w+'", f"'{password}'", code)
        return re.sub(r"\bjobsync\b", pg_schema, code)  # the schema name

    def url(role: str) -> str:
        return url_of(pg_dsn, pg_schema, roles[role], password)

    def dsn(role: str) -> str:
        return make_conninfo(pg_dsn, user=roles[role], password=password)

    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        try:
            admin.execute(adapt(script["setup"]).encode())
        except psycopg.errors.InsufficientPrivilege as exc:
            pytest.skip(f"the test server's user cannot create roles: {exc}")
        try:
            assert postgres.migrate(dsn("jobsync_owner"), schema=pg_schema)["to"] >= 1
            with psycopg.connect(dsn("jobsync_owner"), autocommit=True) as owner:
                owner.execute(adapt(script["grants"]).encode())
            _run_as_worker(url("jobsync_worker"), dsn("jobsync_worker"))
            monitor = ["--site", SITE, "--dsn", url("jobsync_monitor")]
            for command in (["status"], ["nodes"], ["tokens"], ["which", "order-1"], ["history"]):
                assert main([*command, *monitor]) == 0, command
            assert main(["locks", "list", *monitor]) == 0
            assert main(["site", "show", *monitor]) == 0
            assert main(["locks", "add", "x", "%", *monitor]) == 2  # reads, and only reads
            # The guide's queries, as the monitoring role, on its own search_path.
            with psycopg.connect(dsn("jobsync_monitor"), autocommit=True) as monitor_conn:
                for name, line, code in blocks(OPERATOR, "checked", "sql"):
                    if name in WRITES:
                        continue
                    for statement in statements(code):
                        try:
                            monitor_conn.execute(statement.encode()).fetchall()
                        except psycopg.Error as exc:
                            pytest.fail(f"{OPERATOR.name}:{line} ({name}) as the monitor: {exc}")
        finally:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(pg_schema))
            admin.execute(drop)
            for unique in roles.values():
                admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(unique)))
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(unique)))


def _run_as_worker(url: str, dsn: str) -> None:
    """What workers do, as the worker role: every verb that writes."""
    import psycopg

    today = datetime.date(2024, 1, 31)
    with psycopg.connect(dsn, autocommit=True) as conn, contextlib.ExitStack() as stack:
        first = stack.enter_context(
            Job(
                "worker-01",
                SITE,
                url,
                coordination_config=FAST,
                handle_sigterm=False,
                lock_provider=pins,
                clear_existing_locks=True,
                date=today,
            )
        )
        second = stack.enter_context(
            Job("worker-02", SITE, url, coordination_config=FAST, handle_sigterm=False, date=today)
        )
        first.register_lock("x-task", "worker-%", expires_in_days=1)
        claimed = 0
        for i in range(60):
            task = Task(f"order-{i}")
            for job in (first, second):
                if not (job.can_claim_task(task) and job.add_task(task)):
                    continue
                claimed += 1
                if i % 3 == 0:
                    assert job.release(task)
                elif i % 3 == 1:
                    with conn.transaction():
                        assert job.complete(task, connection=conn)
                else:
                    assert job.complete(task)
        assert claimed > 40  # all but the orders on render-7's (unowned) token
        assert first.clear_locks_by_creator("worker-01") >= 1
        assert second.drain()
        stack.close()
