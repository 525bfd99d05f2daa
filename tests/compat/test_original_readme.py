"""Each code example of the original jobsync's README runs unchanged against this library.

The examples are data (``original_readme_1_1.md``, with their origin): each
Python block is compiled from that text as it is and run in a namespace that
supplies what the README leaves to its reader (``get_pending_items``,
``process_item``, a ``db`` helper whose ``select`` returns rows with
``to_dict('records')``, a Flask stand-in whose ``run`` serves one probe, a
``time`` whose ``sleep`` returns at once), against a real SQLite file and a
real PostgreSQL schema.  ``config`` is ``jobsync.config``, pointed at that
database by ``SYNC_SQL_URL`` with short timings.  Deprecation warnings are
allowed (the original's names are deprecated aliases); every other warning
fails the test.  Each test then checks what the example did to the database.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import sqlite3
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import pytest

import jobsync
from jobsync import Job, Task, token_for
from jobsync.runtime.config import Settings

README = Path(__file__).with_name("original_readme_1_1.md")
SITE = "production"


def blocks(language: str) -> dict[str, str]:
    """The README's ``language`` code blocks, by the heading above each."""
    text = README.read_text(encoding="utf-8")
    found = re.findall(rf"^## (.+?)\n\n```{language}\n(.*?)```$", text, flags=re.S | re.M)
    return dict(found)


PYTHON = blocks("python")


def test_the_data_holds_every_example() -> None:
    assert list(PYTHON) == [
        "Basic Example",
        "Lock Lifecycle Management",
        "Task Pinning",
        "Lock Management APIs",
        "Health Monitoring",
        "Custom Configuration",
        "Example 1: ETL Pipeline",
        "Example 2: GPU Task Processing",
        "Example 3: Continuous Processing",
    ]
    assert len(blocks("sql")) == 3 and len(blocks("bash")) == 2


# -- the database an example runs against -------------------------------------------
@attrs.define
class Database:
    kind: str
    url: str
    connect: Callable[[], Any]
    """A connection of the test's own, for setting up tables and reading results."""

    def observer(self, site: str = SITE) -> Job:
        return Job("checker", site, self.url, observer=True, handle_sigterm=False)


def _pg_url(dsn: str, schema: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    parts = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    auth = quote(parts.pop("user", "postgres"), safe="")
    if "password" in parts:
        auth += ":" + quote(parts.pop("password"), safe="")
    where = f"{parts.pop('host', '127.0.0.1')}:{parts.pop('port', '5432')}"
    name = quote(parts.pop("dbname", "postgres"), safe="")
    query = f"jobsync_schema={schema}&options=" + quote(f"-csearch_path={schema}", safe="")
    return f"postgresql://{auth}@{where}/{name}?{query}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Database]:
    if request.param == "sqlite":
        path = tmp_path / "jobs.db"
        db = Database("sqlite", f"sqlite:///{path}", lambda: sqlite3.connect(path))
    else:
        import psycopg

        dsn = request.getfixturevalue("pg_server")
        schema = request.getfixturevalue("pg_schema")
        url = _pg_url(dsn, schema)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        dsn_url = url.split("?")[0] + "?options=" + quote(f"-csearch_path={schema}", safe="")
        db = Database("postgresql", url, lambda: psycopg.connect(dsn_url, autocommit=True))
    for name in [k for k in os.environ if k.startswith("SYNC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SYNC_SQL_URL", db.url)
    monkeypatch.setenv("SYNC_HEARTBEAT_INTERVAL", "0.2")
    monkeypatch.setenv("SYNC_HEARTBEAT_TIMEOUT", "1")
    jobsync.config.reload()
    yield db
    jobsync.config.reload()


def run_example(title: str, namespace: dict[str, Any], then: str | None = None) -> list[str]:
    """Run the README's block ``title`` unchanged, then call the function it defined
    called ``then`` (if any); return the deprecations met."""
    code = compile(PYTHON[title], f"<original README: {title}>", "exec")
    namespace.setdefault("__name__", "original_readme")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(code, namespace)
        if then is not None:
            namespace[then]()
    others = [w for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert not others, [str(w.message) for w in others]
    return [str(w.message) for w in caught]


def audit(db: Database) -> dict[str, str]:
    """task id -> status of the site's claims today."""
    with db.observer() as job:
        return {str(row["task_id"]): str(row["status"]) for row in job.get_audit()}


def locks(db: Database, site: str = SITE) -> list[dict[str, object]]:
    with db.observer(site) as job:
        return job.list_locks()


def base(**names: Any) -> dict[str, Any]:
    """A namespace with what the README's first block imports (``from jobsync import
    Job, Task, config``), which its later blocks use without importing."""
    return {"Job": Job, "Task": Task, "config": jobsync.config, **names}


# -- the examples ---------------------------------------------------------------------
def test_basic_example(database: Database) -> None:
    items = [f"item-{i}" for i in range(40)]
    processed: list[str] = []
    run_example(
        "Basic Example",
        base(get_pending_items=lambda: items, process_item=processed.append),
    )
    assert sorted(processed) == sorted(items)  # alone in its site: every task is its own
    assert audit(database) == dict.fromkeys(items, "done")  # leaving completed the claims


def test_lock_lifecycle_management(database: Database) -> None:
    heavy = ["heavy-a", "heavy-b"]
    seen: dict[str, object] = {}

    def process_tasks(job: Job) -> None:
        seen["locks"] = sorted(str(lock["task_id"]) for lock in job.list_locks())
        seen["claimable"] = [job.can_claim_task(Task(t)) for t in heavy]

    ns = base(get_current_heavy_tasks=lambda: heavy, process_tasks=process_tasks)
    run_example("Lock Lifecycle Management", ns)
    assert seen["locks"] == heavy
    assert seen["claimable"] == [False, False]  # 'worker' does not match 'high-mem-%'
    assert sorted(str(lock["task_id"]) for lock in ns["locks"]) == heavy  # the admin's review
    assert locks(database, "prod") == []  # the admin's clear_all_locks()


def test_task_pinning(database: Database) -> None:
    gpu = [f"render-{i}" for i in range(5)]
    other = [f"etl-{i}" for i in range(30)]
    done: dict[str, list[str]] = {"gpu": [], "any": []}
    run_example(
        "Task Pinning",
        base(
            get_gpu_task_ids=lambda: gpu,
            get_all_tasks=lambda: gpu + other,
            process_gpu_task=done["gpu"].append,
            process_task=done["any"].append,
        ),
    )
    assert sorted(done["gpu"]) == sorted(gpu + other)  # worker-gpu-01 matches '%gpu%'
    pinned = {token_for(t) for t in gpu}
    assert sorted(done["any"]) == sorted(t for t in other if token_for(t) not in pinned)
    kept = sorted((str(lock["task_id"]), lock["node_pattern"]) for lock in locks(database))
    assert kept == [(t, "%gpu%") for t in sorted(gpu)]  # a lock per task, kept after both left


def test_lock_management_apis(database: Database, capsys: pytest.CaptureFixture[str]) -> None:
    with Job("worker-01", SITE, database.url, handle_sigterm=False) as job:
        job.register_task_locks_bulk([("a", "gpu-%", "r"), ("b", ["big-%", "%"], "r")])
        expected = {
            f"Token {job.task_to_token(t)} -> {p}" for t, p in (("a", "gpu-%"), ("b", "big-%"))
        }
        run_example("Lock Management APIs", base(job=job))
        assert job.list_locks() == []
    assert set(capsys.readouterr().out.splitlines()) == expected


def _flask_stand_in(answers: list[object]) -> types.ModuleType:
    """``flask`` as far as the README uses it: ``run`` serves one request per route."""
    module = types.ModuleType("flask")

    class Flask:
        def __init__(self, name: str) -> None:
            self.views: dict[str, Callable[[], object]] = {}

        def route(self, path: str) -> Callable[[Callable[[], object]], Callable[[], object]]:
            def register(view: Callable[[], object]) -> Callable[[], object]:
                self.views[path] = view
                return view

            return register

        def run(self, host: str, port: int) -> None:
            answers.extend((path, view()) for path, view in self.views.items())

    module.Flask = Flask  # type: ignore[attr-defined]
    module.jsonify = lambda body: body  # type: ignore[attr-defined]
    return module


def test_health_monitoring(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[object] = []
    monkeypatch.setitem(sys.modules, "flask", _flask_stand_in(answers))
    run_example("Health Monitoring", base())
    assert answers == [("/health/ready", ({"status": "ready"}, 200))]


def test_custom_configuration(database: Database) -> None:
    seen: dict[str, object] = {}

    def process_tasks(job: Job) -> None:
        seen.update(tokens=len(job.my_tokens), healthy=job.am_i_healthy(), cfg=job.config)

    run_example(
        "Custom Configuration", base(base_config=jobsync.config, process_tasks=process_tasks)
    )
    assert seen["tokens"] == 50_000 and seen["healthy"] is True
    cfg = seen["cfg"]
    assert isinstance(cfg, jobsync.CoordinationConfig)
    assert (cfg.heartbeat_interval_sec, cfg.heartbeat_timeout_sec) == (3, 9)
    assert cfg.rebalance_check_interval_sec == 15


def test_etl_pipeline(database: Database) -> None:
    loaded: list[str] = []

    def list_s3_files(day: datetime.date) -> list[str]:
        return [f"s3://bucket/{day:%Y-%m-%d}/part-{i}.csv" for i in range(25)]

    ns = base(
        today=datetime.date.today,
        list_s3_files=list_s3_files,
        extract_from_s3=lambda path: path,
        transform_data=lambda data: data.upper(),
        load_to_warehouse=loaded.append,
    )
    run_example("Example 1: ETL Pipeline", ns, then="run_daily_etl")
    files = list_s3_files(datetime.date.today())
    assert sorted(loaded) == sorted(f.upper() for f in files)
    assert audit(database) == dict.fromkeys(files, "done")


class _Rows:
    """What the original's ``db.select`` returned, as far as the README reads it."""

    def __init__(self, rows: list[dict[str, object]]) -> None:
        self._rows = rows

    def to_dict(self, orient: str) -> list[dict[str, object]]:
        assert orient == "records"
        return self._rows


def _select(cn: Any, sql: str, *args: object) -> _Rows:
    cursor = cn.execute(sql, args)
    names = [column[0] for column in cursor.description]
    return _Rows([dict(zip(names, row, strict=True)) for row in cursor.fetchall()])


def test_gpu_task_processing(database: Database) -> None:
    tasks = {f"task-{i}": i % 4 == 0 for i in range(20)}
    with contextlib.closing(database.connect()) as conn:
        conn.execute("CREATE TABLE tasks (task_id TEXT PRIMARY KEY, requires_gpu BOOLEAN)")
        for task_id, needs in tasks.items():
            conn.execute(
                "INSERT INTO tasks VALUES (%s, %s)".replace(
                    "%s", "?" if database.kind == "sqlite" else "%s"
                ),
                (task_id, needs),
            )
        if database.kind == "sqlite":
            conn.commit()
    inferred: list[str] = []
    ns = base(
        db=types.SimpleNamespace(select=_select),
        get_pending_tasks=lambda: list(tasks),
        run_model_inference=inferred.append,
    )
    deprecations = run_example("Example 2: GPU Task Processing", ns, then="process_gpu_tasks")
    assert sorted(inferred) == sorted(tasks)  # worker-gpu-01 matches '%gpu%'
    pinned = sorted(
        (str(lk["task_id"]), lk["node_pattern"], lk["reason"]) for lk in locks(database)
    )
    assert pinned == sorted((t, "%gpu%", "gpu_required") for t, gpu in tasks.items() if gpu)
    assert any("job._cn is deprecated: use job.connection" in w for w in deprecations)


def test_continuous_processing(database: Database) -> None:
    batches = [[f"event-{i}" for i in range(10)], [f"event-{i}" for i in range(10, 15)], []]
    processed: list[str] = []
    slept: list[float] = []
    ns = base(
        get_pending_tasks=lambda: batches.pop(0),
        process_task=processed.append,
        time=types.SimpleNamespace(sleep=slept.append),
    )
    run_example("Example 3: Continuous Processing", ns, then="continuous_processor")
    assert sorted(processed) == sorted(f"event-{i}" for i in range(15))
    assert slept == [5, 5]
    assert audit(database) == {f"event-{i}": "done" for i in range(15)}


# -- the monitoring queries and the environment ---------------------------------------
@pytest.mark.postgres
def test_monitoring_queries(pg_server: str, pg_schema: str) -> None:
    import psycopg

    url = _pg_url(pg_server, pg_schema)
    fast = jobsync.CoordinationConfig(heartbeat_interval_sec=0.2, heartbeat_timeout_sec=1.0)
    with Job("worker-01", SITE, url, coordination_config=fast, handle_sigterm=False):
        dsn = url.split("?")[0] + "?options=" + quote(f"-csearch_path={pg_schema}", safe="")
        with psycopg.connect(dsn, autocommit=True) as conn:
            answers = [conn.execute(sql).fetchall() for sql in blocks("sql").values()]
    active, tokens, leader = answers
    assert [row[0] for row in active] == ["worker-01"]
    assert [(row[0], row[1], float(row[2])) for row in tokens] == [("worker-01", 10_000, 100.0)]
    assert leader == [("worker-01",)]


def test_environment_variables_are_read_as_the_original_read_them() -> None:
    environ: dict[str, str] = {}
    for block in blocks("bash").values():
        for line in block.splitlines():
            if line.startswith("export "):
                name, value = line.removeprefix("export ").split("#")[0].strip().split("=", 1)
                environ[name] = value
    settings = Settings(environ)
    assert settings.url == "postgresql://postgres:postgres@localhost:5432/jobsync"
    cfg = settings.coordination
    assert (cfg.enabled, cfg.total_tokens) == (True, 10_000)
    assert (cfg.heartbeat_interval_sec, cfg.heartbeat_timeout_sec) == (5, 15)
    assert cfg.rebalance_check_interval_sec == 30


# -- the usage guide's "after" forms ------------------------------------------------------
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "USAGE_GUIDE.md"


def after_blocks() -> dict[str, str]:
    """The migration section's ``<!-- compat -->`` blocks, by their first comment line."""
    text = GUIDE.read_text(encoding="utf-8")
    found = re.findall(r"<!-- compat -->\n```python\n# (.+?), after.*?\n(.*?)```", text, re.S)
    return dict(found)


def test_the_guide_shows_every_example_after() -> None:
    titles = {title.split(" (")[0] for title in after_blocks()}
    assert titles == set(PYTHON) - {"Lock Management APIs", "Custom Configuration"}  # unchanged


@pytest.mark.parametrize("title", sorted(after_blocks()))
def test_the_guide_after_forms_run_without_deprecations(database: Database, title: str) -> None:
    with contextlib.closing(database.connect()) as conn:
        conn.execute("CREATE TABLE tasks (task_id TEXT PRIMARY KEY, requires_gpu BOOLEAN)")
        conn.execute("INSERT INTO tasks VALUES ('render-1', TRUE), ('etl-1', FALSE)")
        if database.kind == "sqlite":
            conn.commit()
    done: list[object] = []
    batches = [["render-1", "etl-1"]]
    ns = base(
        get_pending_items=lambda: ["item-1", "item-2"],
        get_pending_tasks=lambda: batches.pop(0) if batches else [],
        get_current_heavy_tasks=lambda: ["heavy-1"],
        get_all_tasks=lambda: ["render-1", "etl-1"],
        list_s3_files=lambda day: [f"s3://bucket/{day}/part-0.csv"],
        extract_from_s3=lambda path: path,
        transform_data=lambda data: data,
        register_locks=lambda job: [("render-1", "%gpu%", "requires_gpu")],
        time=types.SimpleNamespace(sleep=done.append),
    )
    for name in ("process_item", "process_tasks", "process_gpu_task", "process_task"):
        ns[name] = done.append
    ns["load_to_warehouse"] = ns["run_model_inference"] = done.append
    code = compile(after_blocks()[title], f"<usage guide: {title}, after>", "exec")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(code, ns)
    assert [str(w.message) for w in caught] == []
    assert done or title == "Health Monitoring"  # each did its work (that one asserts its own)
