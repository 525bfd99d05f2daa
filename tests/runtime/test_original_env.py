"""The original jobsync's environment variables: each honoured or refused, none ignored."""

from __future__ import annotations

import pytest

from jobsync.core.errors import ConfigError
from jobsync.runtime import original_env
from jobsync.runtime.config import Settings

ORIGINAL_VARIABLES = (  # every variable the original 1.1's config module read
    "SYNC_SQL_APPNAME",
    "SYNC_SQL_PROFILE",
    "SYNC_SQL_TIMEZONE",
    "SYNC_SQL_HOST",
    "SYNC_SQL_DATABASE",
    "SYNC_SQL_USERNAME",
    "SYNC_SQL_PASSWORD",
    "SYNC_SQL_PORT",
    "SYNC_COORDINATION_ENABLED",
    "SYNC_HEARTBEAT_INTERVAL",
    "SYNC_HEARTBEAT_TIMEOUT",
    "SYNC_REBALANCE_INTERVAL",
    "SYNC_DEAD_NODE_INTERVAL",
    "SYNC_TOKEN_REFRESH_INITIAL",
    "SYNC_TOKEN_REFRESH_STEADY",
    "SYNC_TOTAL_TOKENS",
    "SYNC_LOCKS_ENABLED",
    "SYNC_LOCK_ORPHAN_WARNING",
    "SYNC_LEADER_LOCK_TIMEOUT",
    "SYNC_HEALTH_CHECK_INTERVAL",
)
HONOURED = {  # variable -> a value the original accepted, and what it becomes here
    "SYNC_SQL_APPNAME": ("myapp_", lambda s: s.url.endswith("?jobsync_prefix=myapp_")),
    "SYNC_SQL_PROFILE": ("postgres", lambda s: s.url.startswith("postgresql://")),
    "SYNC_SQL_HOST": ("db.internal", lambda s: "@db.internal:" in s.url),
    "SYNC_SQL_DATABASE": ("jobs", lambda s: s.url.endswith("/jobs")),
    "SYNC_SQL_USERNAME": ("svc", lambda s: "//svc@" in s.url),
    "SYNC_SQL_PASSWORD": ("pw", lambda s: ":pw@" in s.url),
    "SYNC_SQL_PORT": ("6543", lambda s: ":6543/" in s.url),
    "SYNC_COORDINATION_ENABLED": ("false", lambda s: s.coordination.enabled is False),
    "SYNC_HEARTBEAT_INTERVAL": ("2", lambda s: s.coordination.heartbeat_interval_sec == 2),
    "SYNC_HEARTBEAT_TIMEOUT": ("20", lambda s: s.coordination.heartbeat_timeout_sec == 20),
    "SYNC_REBALANCE_INTERVAL": ("7", lambda s: s.coordination.rebalance_check_interval_sec == 7),
    "SYNC_TOKEN_REFRESH_INITIAL": (
        "5",
        lambda s: s.coordination.rebalance_check_interval_sec == 5,
    ),
    "SYNC_TOKEN_REFRESH_STEADY": (
        "9",
        lambda s: s.coordination.rebalance_check_interval_sec == 9,
    ),
    "SYNC_TOTAL_TOKENS": ("500", lambda s: s.coordination.total_tokens == 500),
    "SYNC_LOCKS_ENABLED": ("true", lambda s: s.coordination.enabled),
}


def test_every_original_variable_is_honoured_or_refused() -> None:
    assert set(HONOURED) | set(original_env.REFUSED) == set(ORIGINAL_VARIABLES)
    assert not set(HONOURED) & set(original_env.REFUSED)


@pytest.mark.parametrize("var", sorted(HONOURED))
def test_an_honoured_variable_means_what_it_meant(var: str) -> None:
    value, holds = HONOURED[var]
    assert holds(Settings({var: value}))


@pytest.mark.parametrize(
    ("var", "value", "replacement"),
    [
        ("SYNC_SQL_TIMEZONE", "US/Eastern", "--timezone"),
        ("SYNC_DEAD_NODE_INTERVAL", "10", "SYNC_HEARTBEAT_TIMEOUT"),
        ("SYNC_LEADER_LOCK_TIMEOUT", "30", "nothing replaces it"),
        ("SYNC_HEALTH_CHECK_INTERVAL", "30", "am_i_healthy"),
        ("SYNC_LOCK_ORPHAN_WARNING", "24", "jobsync status"),
        ("SYNC_SQL_PROFILE", "sqlite", "SYNC_SQL_URL"),
        ("SYNC_LOCKS_ENABLED", "false", "lock_provider"),
    ],
)
def test_a_refused_variable_stops_the_worker_naming_its_replacement(
    var: str, value: str, replacement: str
) -> None:
    for read in (lambda s: s.url, lambda s: s.coordination):
        with pytest.raises(ConfigError) as caught:
            read(Settings({var: value}))
        message = str(caught.value)
        assert var in message and replacement in message and "remove it" in message


def test_the_appname_joins_an_explicit_postgresql_url() -> None:
    url = "postgresql://u@h/db?sslmode=disable"
    settings = Settings({"SYNC_SQL_URL": url, "SYNC_SQL_APPNAME": "myapp_"})
    assert settings.url == url + "&jobsync_prefix=myapp_"
    same = f"{url}&jobsync_prefix=myapp_"
    assert Settings({"SYNC_SQL_URL": same, "SYNC_SQL_APPNAME": "myapp_"}).url == same


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SYNC_SQL_APPNAME": "My-App"}, "SYNC_SQL_APPNAME"),
        ({"SYNC_SQL_APPNAME": "a_", "SYNC_SQL_URL": "postgresql://h/d?jobsync_prefix=b_"}, "b_"),
        ({"SYNC_SQL_APPNAME": "myapp_", "SYNC_SQL_URL": "sqlite:///x.db"}, "sync_*"),
    ],
)
def test_an_appname_that_cannot_work_is_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match="SYNC_SQL_APPNAME") as caught:
        _ = Settings(env).url
    assert named in str(caught.value)


def test_the_default_appname_on_sqlite_changes_nothing() -> None:
    env = {"SYNC_SQL_APPNAME": "sync_", "SYNC_SQL_URL": "sqlite:///x.db"}
    assert Settings(env).url == "sqlite:///x.db"
