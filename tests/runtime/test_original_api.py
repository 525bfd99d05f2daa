"""The original jobsync's API on this library: each old name works with a
DeprecationWarning naming the new spelling, or is refused naming what to do;
``job.connection`` is the user's own connection, never the coordination one.
"""

from __future__ import annotations

import datetime
import re
import sqlite3
import threading
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobsync import CoordinationConfig, Job, RebalanceEvent, Task
from jobsync.errors import ConfigError, InvalidArgument

from .conftest import FAST, eventually


def memory_url() -> str:
    return f"memory://original-{uuid.uuid4().hex[:8]}"


def job(url: str | None = None, **kwargs: Any) -> Job:
    kwargs.setdefault("coordination_config", FAST)
    return Job("worker-01", "site", url or memory_url(), handle_sigterm=False, **kwargs)


def deprecations(call: Callable[[], object]) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call()
    assert all(issubclass(w.category, DeprecationWarning) for w in caught)
    return value, [str(w.message) for w in caught]


# -- Job members ----------------------------------------------------------------------------
def test_each_old_job_member_works_and_names_its_new_spelling() -> None:
    with job() as j:
        value, said = deprecations(lambda: j.nodes)
        assert value == [{"name": "worker-01", "node": "worker-01"}]
        assert said == [
            "job.nodes is deprecated: it only ever held this node: use job.name, or "
            "job.get_active_nodes() for the site's live workers"
        ]
        value, said = deprecations(lambda: j.node_name)
        assert value == "worker-01" and said == ["job.node_name is deprecated: use job.name"]

        _, said = deprecations(lambda: j.set_claim("one"))
        assert said == [
            "job.set_claim is deprecated: use add_task(task), or add_tasks(tasks) for many"
        ]
        deprecations(lambda: j.set_claim(["two", Task("three")]))
        assert j.add_task("one") is False  # claimed already, by set_claim
        claimed = {str(row["task_id"]) for row in j.get_audit()}
        assert claimed == {"one", "two", "three"}

        _, said = deprecations(lambda: j.register_task_lock("t1", "worker-%", "why", 2))
        assert said == ["job.register_task_lock is deprecated: use job.register_lock"]
        value, said = deprecations(lambda: j.register_locks_bulk([("t2", "%", None)]))
        assert value == 1
        assert said == ["job.register_locks_bulk is deprecated: use job.register_task_locks_bulk"]
        locks = {str(lock["task_id"]): lock for lock in j.list_locks()}
        assert set(locks) == {"t1", "t2"} and locks["t1"]["reason"] == "why"
        assert locks["t1"]["expires_at"] is not None


def test_old_rebalance_event_fields_read_as_the_new_ones() -> None:
    seen: list[tuple[object, ...]] = []
    said: list[str] = []

    def on_rebalance(event: RebalanceEvent) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            old = (event.is_initial, event.token_version, event.tokens_added, event.tokens_removed)
        said.extend(str(w.message) for w in caught)
        seen.append((old, (event.first, event.version, len(event.added), len(event.removed))))

    with job(on_rebalance=on_rebalance):
        assert eventually(lambda: bool(seen))
    old, new = seen[0]
    assert old == new == (True, 1, 64, 0)
    assert said[:4] == [
        "RebalanceEvent.is_initial is deprecated: use event.first",
        "RebalanceEvent.token_version is deprecated: use event.version",
        "RebalanceEvent.tokens_added is deprecated: use len(event.added)",
        "RebalanceEvent.tokens_removed is deprecated: use len(event.removed)",
    ]


# -- CoordinationConfig ----------------------------------------------------------------------
def test_token_refresh_steady_is_an_alias_that_keeps_the_lower_cap() -> None:
    cfg, said = deprecations(lambda: CoordinationConfig(token_refresh_steady_interval_sec=12))
    assert isinstance(cfg, CoordinationConfig)
    assert cfg.rebalance_check_interval_sec == 12 and cfg.token_refresh_steady_interval_sec is None
    assert said == [
        "CoordinationConfig(token_refresh_steady_interval_sec=...) is deprecated: "
        "use rebalance_check_interval_sec (the lower of the two is kept)"
    ]
    assert cfg == CoordinationConfig(rebalance_check_interval_sec=12)
    wider, _ = deprecations(
        lambda: CoordinationConfig(
            rebalance_check_interval_sec=5, token_refresh_steady_interval_sec=60
        )
    )
    assert isinstance(wider, CoordinationConfig) and wider.rebalance_check_interval_sec == 5


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("dead_node_check_interval_sec", 10, "driven by notifications"),
        ("token_refresh_initial_interval_sec", 5, "driven by notifications"),
        ("health_check_interval_sec", 30, "read from memory"),
        ("leader_lock_timeout_sec", 30, "the leader holds no lock"),
        ("stale_leader_lock_age_sec", 300, "the leader holds no lock"),
        ("stale_rebalance_lock_age_sec", 300, "the leader holds no lock"),
        ("token_distribution_timeout_sec", 60, "wait_on_enter"),
        ("locks_enabled", True, "locks are always on"),
    ],
)
def test_settings_with_no_use_here_are_accepted_saying_why(
    field: str, value: object, why: str
) -> None:
    cfg, said = deprecations(lambda: CoordinationConfig(**{field: value}))  # type: ignore[arg-type]
    assert cfg == CoordinationConfig()
    assert len(said) == 1 and f"CoordinationConfig({field}" in said[0] and why in said[0]


def test_locks_enabled_false_is_refused_naming_the_replacement() -> None:
    with pytest.raises(ConfigError, match=r"CoordinationConfig\(locks_enabled=False\)") as error:
        CoordinationConfig(locks_enabled=False)
    assert "jobsync locks clear --all" in str(error.value)


def test_minimum_nodes_is_a_setting_of_this_library() -> None:
    cfg, said = deprecations(lambda: CoordinationConfig(minimum_nodes=3))
    assert isinstance(cfg, CoordinationConfig) and cfg.minimum_nodes == 3 and said == []
    assert CoordinationConfig().minimum_nodes == 1
    for bad in (0, -1, True, 2.0, "2"):
        with pytest.raises(
            ConfigError, match=rf"minimum_nodes must be a positive integer, got {bad!r}"
        ):
            CoordinationConfig(minimum_nodes=bad)  # type: ignore[arg-type]


# -- the original's database fields ---------------------------------------------------------
def test_the_database_fields_build_the_url_the_original_connected_to() -> None:
    cfg, said = deprecations(
        lambda: CoordinationConfig(
            host="db.internal", dbname="jobs", user="app", password="s3cr@t", appname="myapp_"
        )
    )
    assert isinstance(cfg, CoordinationConfig)
    assert (
        cfg.database_url == "postgresql://app:s3cr%40t@db.internal:5432/jobs?jobsync_prefix=myapp_"
    )
    assert said == [
        "CoordinationConfig(host=..., dbname=..., user=..., password=..., appname=...) is "
        "deprecated: pass the database as a URL, Job(..., config='postgresql://app:***@"
        "db.internal:5432/jobs?jobsync_prefix=myapp_') or SYNC_SQL_URL (appname is its "
        "jobsync_prefix option)"
    ]
    assert "s3cr" not in repr(cfg) and cfg.host is None and cfg.password is None
    # the original's defaults for the fields not given: localhost:5432/jobsync, postgres
    only_prefix, _ = deprecations(lambda: CoordinationConfig(appname="other_"))
    assert isinstance(only_prefix, CoordinationConfig)
    assert only_prefix.database_url == (
        "postgresql://postgres:postgres@localhost:5432/jobsync?jobsync_prefix=other_"
    )
    port, _ = deprecations(lambda: CoordinationConfig(port=6543, host="::1"))
    assert isinstance(port, CoordinationConfig)
    assert port.database_url == (
        "postgresql://postgres:postgres@[::1]:6543/jobsync?jobsync_prefix=sync_"
    )
    assert CoordinationConfig().database_url is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("port", "5432", "port=...) must be a TCP port"),
        ("port", 70000, "port=...) must be a TCP port"),
        ("host", "", "host=...) must be a non-empty string"),
        ("dbname", 5, "dbname=...) must be a non-empty string"),
        ("password", 1234, "password=...) must be a string"),
        ("appname", "My-App", "appname=...) (the table prefix) must be"),
    ],
)
def test_a_bad_database_field_is_refused_naming_it(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        CoordinationConfig(**{field: value})  # type: ignore[arg-type]


def quiet_config(**fields: Any) -> CoordinationConfig:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return CoordinationConfig(**fields)


def test_a_job_given_the_database_twice_differently_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("SYNC_SQL_URL", "SYNC_SQL_HOST", "SYNC_SQL_APPNAME", "SYNC_SQL_DATABASE"):
        monkeypatch.delenv(name, raising=False)
    cfg = quiet_config(host="db.internal", dbname="jobs", appname="myapp_")
    # alone, it names the Job's database
    alone = Job("worker-01", coordination_config=cfg, handle_sigterm=False)
    assert alone._options.source == cfg.database_url
    # the same database spelled as a URL is no conflict (jobsync's other options kept)
    same = "postgresql://postgres:postgres@db.internal/jobs?jobsync_prefix=myapp_&jobsync_lock_timeout=900"
    assert Job("w", "s", same, coordination_config=cfg)._options.source == same
    with pytest.raises(
        ConfigError, match="the database is given twice and differs: the Job's config"
    ):
        Job("w", "s", "postgresql://postgres:postgres@db.internal/jobs", coordination_config=cfg)
    with pytest.raises(ConfigError, match="the database is given twice: a Backend"):
        from jobsync.backends.url import open_backend

        backend = open_backend(memory_url())
        Job("w", "s", backend, coordination_config=cfg)
    monkeypatch.setenv("SYNC_SQL_URL", "postgresql://postgres@elsewhere/jobs")
    with pytest.raises(ConfigError, match=r"the environment \(SYNC_SQL_URL or SYNC_SQL_\*\)"):
        Job("w", "s", coordination_config=cfg)
    monkeypatch.setenv("SYNC_SQL_URL", same)
    assert Job("w", "s", coordination_config=cfg)._options.source == same


# -- the site ---------------------------------------------------------------------------------
def test_a_job_given_no_site_runs_in_sync_site_else_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SYNC_SITE", raising=False)
    url = memory_url()
    with Job("worker-01", config=url, coordination_config=FAST, handle_sigterm=False) as j:
        assert j.site == "default"
        with Job("checker", "default", url, observer=True, handle_sigterm=False) as seen:
            assert seen.get_active_nodes() == ["worker-01"]
    monkeypatch.setenv("SYNC_SITE", "eu-west")
    assert Job("worker-01", config=url).site == "eu-west"
    monkeypatch.setenv("SYNC_SITE", " ")
    with pytest.raises(ConfigError, match="SYNC_SITE must name a site, got ' '"):
        Job("worker-01", config=url)


# -- the date --------------------------------------------------------------------------------
def test_a_datetime_date_is_taken_at_the_constructor() -> None:
    with job(date=datetime.datetime(2024, 5, 1, 23, 30)) as j:
        assert j.date == datetime.date(2024, 5, 1) and type(j.date) is datetime.date
        assert j.add_task("report") is True
        assert [row["date"] for row in j.get_audit()] == [datetime.date(2024, 5, 1)]


@pytest.mark.parametrize("bad", ["2024-05-01", 20240501, datetime.time(12)])
def test_a_date_of_another_type_is_refused_at_the_constructor(bad: object) -> None:
    with pytest.raises(
        InvalidArgument, match=r"date must be a datetime\.date or datetime\.datetime"
    ):
        job(date=bad)


# -- job.connection -------------------------------------------------------------------------
def test_sqlite_connection_is_the_users_own_and_closes_with_the_job(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    with job(url) as j:
        conn = j.connection
        assert isinstance(conn, sqlite3.Connection) and j.connection is conn
        assert conn is not getattr(j._backend, "_conn", None)
        conn.execute("CREATE TABLE items (id TEXT)")
        conn.execute("INSERT INTO items VALUES ('a')")
        conn.commit()
        assert conn.execute("SELECT count(*) FROM sync_node").fetchone() == (1,)
        cn, said = deprecations(lambda: j._cn)
        assert cn is conn and said == ["job._cn is deprecated: use job.connection"]
    with pytest.raises(sqlite3.ProgrammingError):  # closed when the Job left
        conn.execute("SELECT 1")


def test_a_given_db_connection_is_handed_back_and_left_open(tmp_path: Path) -> None:
    mine = sqlite3.connect(tmp_path / "app.db")
    with job(db_connection=mine) as j:
        assert j.connection is mine
    assert mine.execute("SELECT 1").fetchone() == (1,)


def test_a_db_connection_that_is_a_url_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="db_connection must be an open database connection"):
        job(db_connection="postgresql://localhost/jobs")


def test_memory_has_no_connection_to_give() -> None:
    with job() as j, pytest.raises(InvalidArgument, match="has no database to query"):
        _ = j.connection


@pytest.mark.postgres
def test_a_long_query_on_the_connection_never_delays_a_heartbeat(
    pg_dsn: str, pg_schema: str
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(pg_dsn)
    url = (
        f"postgresql://{parts.get('user', 'postgres')}@{parts.get('host', '127.0.0.1')}:"
        f"{parts.get('port', 5432)}/{parts.get('dbname', 'postgres')}?jobsync_schema={pg_schema}"
    )
    with job(url) as j:
        conn = j.connection
        mine = conn.execute("SELECT pg_backend_pid(), current_setting('application_name')")
        pid, app = mine.fetchone()
        assert app == "worker-01/queries"
        others = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'worker-01'"
        ).fetchall()
        assert others and pid not in {row[0] for row in others}  # not the coordination one
        before = j.statistics()["heartbeats"]
        conn.execute("SELECT pg_sleep(1.5)")  # 7 heartbeat intervals of FAST
        during = j.statistics()["heartbeats"] - before
        assert during >= 3, during
        assert j.am_i_healthy()


# -- errors that retrying cannot fix -----------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.parametrize(
    ("change", "says"),
    [("dbname", 'database "jobsync_no_such_db" does not exist'), ("user", "does not exist")],
)
def test_a_wrong_database_or_login_fails_at_once(pg_dsn: str, change: str, says: str) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from jobsync.errors import BackendError, BackendUnavailable

    wrong = {"dbname": "jobsync_no_such_db", "user": "jobsync_no_such_role"}[change]
    parts = conninfo_to_dict(pg_dsn)
    host, port = parts.get("host", "127.0.0.1"), parts.get("port", 5432)
    user, db = parts.get("user", "postgres"), parts.get("dbname", "postgres")
    if change == "dbname":
        db = wrong
    else:
        user = wrong
    assert make_conninfo(pg_dsn)  # the server's DSN parses: only the one part is wrong
    url = f"postgresql://{user}@{host}:{port}/{db}"
    # Retried, this would end in TimeoutError after wait_on_enter; it ends at once instead.
    with pytest.raises(BackendError, match="retrying will not help") as error:
        job(url, wait_on_enter=60).__enter__()
    assert not isinstance(error.value, BackendUnavailable)
    assert says in str(error.value)


def test_a_missing_sqlite_folder_fails_at_once(tmp_path: Path) -> None:
    from jobsync.errors import BackendError, BackendUnavailable

    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'jobs.db'}"
    with pytest.raises(BackendError, match="no folder") as error:
        job(url, wait_on_enter=60).__enter__()
    assert not isinstance(error.value, BackendUnavailable)
    assert not (tmp_path / "no-such-folder").exists()


def test_a_refused_port_is_retried_as_transient() -> None:
    """A database starting beside its workers refuses connections for a while:
    that is retried within wait_on_enter (here short), then TimeoutError."""
    with pytest.raises(TimeoutError, match="stayed unavailable"):
        job("postgresql://postgres@127.0.0.1:1/postgres", wait_on_enter=0.3).__enter__()


# -- the empty pattern -----------------------------------------------------------------------
def test_the_empty_pattern_is_refused_at_every_entry() -> None:
    from jobsync.errors import InvalidPattern

    with job() as j:
        with pytest.raises(InvalidPattern, match="pattern '' matches no node"):
            j.register_lock("t", "")
        with pytest.raises(InvalidPattern):
            j.register_task_locks_bulk([("t", ["gpu-%", ""], None)])
        assert j.list_locks() == []
    with pytest.raises(InvalidPattern):
        job(lock_provider=lambda _: [("t", "", None)]).__enter__()


def test_threads_do_not_share_a_half_opened_connection(tmp_path: Path) -> None:
    with job(f"sqlite:///{tmp_path / 'jobs.db'}") as j:
        got: list[object] = []
        threads = [threading.Thread(target=lambda: got.append(j.connection)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(got) == 8 and all(conn is got[0] for conn in got)
