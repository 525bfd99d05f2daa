"""Each Python example of the original jobsync's README at 1.3.14 runs unchanged here.

The examples are data (``original_readme_1_3_14.md``, with their origin),
compiled from that text as it is, as ``test_original_readme.py`` does for
the 1.1 README.  They name their database in the original's
``CoordinationConfig`` fields: ``host='localhost'`` (port 5432),
``dbname='jobsync'``, ``user``/``password`` ``postgres``, tables prefixed
``myapp_``.  So that they run unchanged and still on a scratch database,
each test gets a throwaway PostgreSQL cluster listening on port 5432 of a
free loopback address (127.0.0.2 and up: the shared server keeps
127.0.0.1), ``PGHOSTADDR`` pointing libpq there (``localhost`` is then only
the name the connection is made under), and a fresh ``jobsync`` database.

The namespace supplies what the README leaves to its reader (the task
lists, ``process_*``, a ``logger``, ``shutdown``, a ``time`` whose ``sleep``
drives the scenario, Flask's ``app``).  Deprecation warnings are allowed (the
original's names are deprecated aliases); every other warning fails the
test.  Each test then checks what the example did in the database.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from jobsync import CoordinationConfig, Job
from tests.support.require import POSTGRES, unavailable

from .test_original_readme import _flask_stand_in

README = Path(__file__).with_name("original_readme_1_3_14.md")
PREFIX = "myapp_"


def blocks(language: str) -> dict[str, str]:
    """The README's ``language`` code blocks, by the heading above each."""
    text = README.read_text(encoding="utf-8")
    found = re.findall(rf"^## ([^\n]+)\n\n```{language}\n(.*?)```$", text, flags=re.S | re.M)
    return dict(found)


PYTHON = blocks("python")
HEALTH = "Health Monitoring and Custom Configuration: Health checks for load balancers"
TUNING = "Health Monitoring and Custom Configuration: Coordination tuning"
FIELDS = "CoordinationConfig(host=..., dbname=..., user=..., password=..., appname=...)"


def test_the_data_holds_every_example() -> None:
    assert list(PYTHON) == [
        "Basic Example",
        "Long-Running Task Example",
        "Configuration",
        "Basic Task Processing",
        "Task Pinning (GPU tasks on GPU workers)",
        "Task Locking and Pinning",
        HEALTH,
        TUNING,
    ]
    assert list(blocks("sql")) == ["Monitoring"]


# -- the database the examples name -------------------------------------------------------------
def _free_loopback() -> str | None:
    """A loopback address whose port 5432 is free (the shared server holds 127.0.0.1)."""
    for last in range(2, 40):
        address = f"127.0.0.{last}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, 5432))
            except OSError:
                continue
        return address
    return None


@attrs.define
class Scratch:
    address: str

    @property
    def dsn(self) -> str:
        return f"host={self.address} port=5432 user=postgres dbname=jobsync"

    def url(self, prefix: str = PREFIX) -> str:
        return f"postgresql://postgres@{self.address}:5432/jobsync?jobsync_prefix={prefix}"

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    def observer(self, prefix: str = PREFIX) -> Job:
        return Job("checker", "default", self.url(prefix), observer=True, handle_sigterm=False)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from tests.support.pg import OwnedPgServer, find_bindir

    address = _free_loopback() if sys.platform.startswith("linux") else None
    if find_bindir() is None or address is None:
        # The original's README names port 5432, so its server needs a loopback
        # address of its own (the shared server holds 127.0.0.1:5432).
        unavailable(POSTGRES, "no PostgreSQL binaries or free port 5432 on a loopback address")
    server = OwnedPgServer(settings={"listen_addresses": address})
    server.port = 5432
    try:
        server.start()
        yield address
    finally:
        server.cleanup()


@pytest.fixture
def scratch(cluster: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Scratch]:
    import psycopg

    with psycopg.connect(f"host={cluster} port=5432 user=postgres dbname=postgres") as conn:
        conn.autocommit = True
        conn.execute("DROP DATABASE IF EXISTS jobsync WITH (FORCE)")
        conn.execute("CREATE DATABASE jobsync")
    for name in [k for k in __import__("os").environ if k.startswith(("SYNC_", "PG"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PGHOSTADDR", cluster)  # libpq connects to "localhost" there
    yield Scratch(cluster)


def run_example(title: str, namespace: dict[str, Any]) -> list[str]:
    """Run the README's block ``title`` unchanged; return the deprecations met."""
    code = compile(PYTHON[title], f"<original README 1.3.14: {title}>", "exec")
    namespace.setdefault("__name__", "original_readme")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(code, namespace)
    others = [w for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert not others, [str(w.message) for w in others]
    return [str(w.message) for w in caught]


def tables(scratch: Scratch) -> set[str]:
    rows = scratch.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    return {str(name) for (name,) in rows}


def audit(scratch: Scratch) -> dict[str, str]:
    with scratch.observer() as job:
        return {str(row["task_id"]): str(row["status"]) for row in job.get_audit()}


def locks(scratch: Scratch) -> list[tuple[str, object, object, object]]:
    with scratch.observer() as job:
        return sorted(
            (str(lk["task_id"]), lk["node_patterns"], lk["reason"], lk["created_by"])
            for lk in job.list_locks()
        )


# -- the examples --------------------------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.parametrize("title", ["Basic Example", "Basic Task Processing"])
def test_basic_examples(scratch: Scratch, title: str) -> None:
    items = [f"item-{i}" for i in range(30)]
    processed: list[str] = []
    said = run_example(
        title, {"get_pending_items": lambda: items, "process_item": processed.append}
    )
    assert sorted(processed) == sorted(items)  # alone in its site: every task is its own
    assert audit(scratch) == dict.fromkeys(items, "done")  # claimed, then completed
    assert {"myapp_node", "myapp_token", "myapp_lock"} <= tables(scratch)
    assert not any(name.startswith("sync_") for name in tables(scratch))  # appname is the prefix
    assert any(message.startswith(FIELDS + " is deprecated") for message in said)


@pytest.mark.postgres
def test_long_running_task_example(scratch: Scratch) -> None:
    """The callback reads the global ``job``; ``time.sleep`` starts a second worker,
    waits for the callback to report the halved share, and ends the loop."""
    said: list[str] = []
    ns: dict[str, Any] = {"shutdown": False}
    ns["logger"] = types.SimpleNamespace(info=said.append)

    def sleep(seconds: float) -> None:
        assert seconds == 1
        config = ns["coord_config"]
        with Job("worker-02", coordination_config=config, handle_sigterm=False) as second:
            assert wait_for(lambda: "Rebalance: now own 5000 tokens" in said)
            assert len(second.my_tokens) == 5000
            with scratch.observer() as seen:
                assert sorted(seen.get_active_nodes()) == ["worker-01", "worker-02"]
        ns["shutdown"] = True

    ns["time"] = types.SimpleNamespace(sleep=sleep)
    run_example("Long-Running Task Example", ns)
    assert ns["shutdown"] is True
    assert ns["job"].name == "worker-01"


def wait_for(condition: Any, timeout: float = 30) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_configuration() -> None:
    ns: dict[str, Any] = {}
    said = run_example("Configuration", ns)
    cfg = ns["coord_config"]
    assert (cfg.total_tokens, cfg.hash_function) == (10_000, "double_sha256")
    assert cfg.database_url == (
        "postgresql://postgres:postgres@localhost:5432/jobsync?jobsync_prefix=myapp_"
    )
    assert said == [
        "CoordinationConfig(host=..., port=..., dbname=..., user=..., password=..., "
        "appname=...) is deprecated: pass the database as a URL, Job(..., config="
        "'postgresql://postgres:***@localhost:5432/jobsync?jobsync_prefix=myapp_') or "
        "SYNC_SQL_URL (appname is its jobsync_prefix option)"
    ]


@pytest.mark.postgres
def test_task_pinning(scratch: Scratch) -> None:
    gpu = [f"render-{i}" for i in range(5)]
    other = [f"etl-{i}" for i in range(20)]
    done: list[str] = []
    ns = {
        "get_gpu_task_ids": lambda: gpu,
        "get_all_tasks": lambda: gpu + other,
        "process_gpu_task": done.append,
    }
    said = run_example("Task Pinning (GPU tasks on GPU workers)", ns)
    assert sorted(done) == sorted(gpu + other)  # worker-gpu-01 matches '%gpu%' and is alone
    expected = [(t, ["%gpu%"], "requires_gpu", "worker-gpu-01") for t in sorted(gpu)]
    assert locks(scratch) == expected  # a lock per task, kept after the worker left
    assert "job.register_locks_bulk is deprecated: use job.register_task_locks_bulk" in said


@pytest.mark.postgres
def test_task_locking_and_pinning(scratch: Scratch) -> None:
    # a lock this worker registered on an earlier run: clear_existing_locks drops it
    with Job("worker-gpu-01", "default", scratch.url(), handle_sigterm=False) as before:
        before.register_lock("stale", "%", "an old run")
    gpu = [f"train-{i}" for i in range(4)]
    other = [f"etl-{i}" for i in range(20)]
    seen: dict[str, bool] = {}
    tokens: dict[str, int] = {}

    def process_tasks(job: Job) -> None:
        for task in gpu + other:
            seen[task] = job.can_claim_task(task)
            tokens[task] = job.task_to_token(task)

    ns = {"get_gpu_task_ids": lambda: gpu, "process_tasks": process_tasks}
    run_example("Task Locking and Pinning", ns)
    chain = ["gpu-primary-01", "%-gpu"]
    assert locks(scratch) == [(t, chain, "requires_gpu", "worker-gpu-01") for t in sorted(gpu)]
    # 'worker-gpu-01' matches neither pattern: the pinned tokens wait for a node that does
    pinned = {tokens[t] for t in gpu}
    assert not any(seen[t] for t in gpu)
    assert all(seen[t] for t in other if tokens[t] not in pinned)


@pytest.mark.postgres
def test_health_check(scratch: Scratch, monkeypatch: pytest.MonkeyPatch) -> None:
    flask = _flask_stand_in([])
    monkeypatch.setitem(sys.modules, "flask", flask)
    app = flask.Flask("app")  # type: ignore[attr-defined]
    worker = Job("worker-01", config=scratch.url(), handle_sigterm=False)
    with worker:
        run_example(HEALTH, {"app": app, "job": worker})
        assert app.views["/health/ready"]() == ({"status": "ready"}, 200)
    assert app.views["/health/ready"]() == ({"status": "not_ready"}, 503)  # it has left


@pytest.mark.postgres
def test_coordination_tuning_waits_for_two_nodes(scratch: Scratch) -> None:
    ns: dict[str, Any] = {"CoordinationConfig": CoordinationConfig}  # imported further up
    run_example(TUNING, ns)
    cfg: CoordinationConfig = ns["coord_config"]
    assert (cfg.total_tokens, cfg.minimum_nodes) == (50_000, 2)
    assert (cfg.heartbeat_interval_sec, cfg.heartbeat_timeout_sec) == (3, 9)
    assert cfg.rebalance_check_interval_sec == 15
    assert cfg.database_url is not None and cfg.database_url.endswith("?jobsync_prefix=myapp_")
    # what minimum_nodes=2 does: worker-01 alone leads, and distributes nothing
    first = Job("worker-01", coordination_config=cfg, handle_sigterm=False)
    entered, leave = threading.Event(), threading.Event()

    def run_first() -> None:
        with first:
            entered.set()
            leave.wait(60)

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        # past its settle window (one heartbeat interval) by two heartbeats
        assert wait_for(lambda: first._node is not None and first._node.stats["heartbeats"] >= 3)
        assert not entered.is_set()
        with scratch.observer() as seen:
            assert seen.get_active_nodes() == ["worker-01"]
        assert scratch.query("SELECT count(*) FROM myapp_token WHERE node IS NOT NULL") == [(0,)]
        with Job("worker-02", coordination_config=cfg, handle_sigterm=False) as second:
            assert entered.wait(30)
            assert len(first.my_tokens) == len(second.my_tokens) == 25_000
    finally:
        leave.set()
        thread.join(60)


@pytest.mark.postgres
def test_monitoring_query(scratch: Scratch) -> None:
    (sql,) = blocks("sql").values()
    cfg = CoordinationConfig(heartbeat_interval_sec=0.2, heartbeat_timeout_sec=1.0)
    url = scratch.url("sync_")
    with Job("worker-01", config=url, coordination_config=cfg, handle_sigterm=False):
        assert scratch.query(sql) == [(1,)]  # the live worker, in the original's sync_node
    assert scratch.query(sql) == [(0,)]  # it left
