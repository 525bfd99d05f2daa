"""CoordinationConfig, the SYNC_* environment, URLs: validated, with the bad value named."""

from __future__ import annotations

import pytest

from jobsync import CoordinationConfig, Settings
from jobsync.backends.url import _split_options, open_backend
from jobsync.errors import ConfigError, InvalidArgument


def test_defaults_follow_the_design() -> None:
    cfg = CoordinationConfig()
    assert (cfg.total_tokens, cfg.hash_function) == (10_000, "xxh3")
    assert (cfg.heartbeat_interval_sec, cfg.heartbeat_timeout_sec) == (5.0, 15.0)
    assert cfg.margin == 0.75  # max(0.5, 5% of the timeout)
    assert CoordinationConfig(heartbeat_timeout_sec=11.0, heartbeat_interval_sec=1.0).margin == 0.55
    assert CoordinationConfig(heartbeat_timeout_sec=4.0, heartbeat_interval_sec=1.0).margin == 0.5
    assert cfg.ack_timeout == 10.0 and cfg.settle_window == 5.0


def test_timeout_must_cover_two_heartbeats_and_the_margin() -> None:
    CoordinationConfig(heartbeat_interval_sec=1.0, heartbeat_timeout_sec=2.5)  # exactly 2*1+0.5
    with pytest.raises(ConfigError, match=r"heartbeat_timeout_sec=2.49"):
        CoordinationConfig(heartbeat_interval_sec=1.0, heartbeat_timeout_sec=2.49)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("total_tokens", 0),
        ("total_tokens", 1.5),
        ("heartbeat_interval_sec", -1),
        ("heartbeat_interval_sec", float("nan")),
        ("hash_function", "sha1"),
        ("safety_margin_sec", 0),
        ("drain_timeout_sec", "10"),
    ],
)
def test_bad_fields_are_named(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        CoordinationConfig(**{field: value})  # type: ignore[arg-type]


def test_environment_is_read_and_errors_name_the_variable() -> None:
    env = {
        "SYNC_TOTAL_TOKENS": "500",
        "SYNC_HEARTBEAT_INTERVAL": "2",
        "SYNC_HEARTBEAT_TIMEOUT": "6",
        "SYNC_REBALANCE_INTERVAL": "40",
        "SYNC_TOKEN_REFRESH_STEADY": "20",
        "SYNC_COORDINATION_ENABLED": "no",
    }
    cfg = CoordinationConfig.from_env(env)
    assert (cfg.total_tokens, cfg.heartbeat_interval_sec, cfg.heartbeat_timeout_sec) == (500, 2, 6)
    assert cfg.rebalance_check_interval_sec == 20  # both only cap the fallback read
    assert cfg.enabled is False
    for var, raw in [
        ("SYNC_TOTAL_TOKENS", "ten"),
        ("SYNC_HEARTBEAT_TIMEOUT", "-3"),
        ("SYNC_COORDINATION_ENABLED", "maybe"),
        ("SYNC_HEARTBEAT_INTERVAL", "inf"),
    ]:
        with pytest.raises(ConfigError, match=var):
            CoordinationConfig.from_env({var: raw})
    with pytest.raises(ConfigError, match="SYNC_HEARTBEAT_INTERVAL"):
        CoordinationConfig.from_env({"SYNC_HEARTBEAT_INTERVAL": "10"})  # timeout 15 too short


def test_settings_read_on_first_use_and_build_the_url() -> None:
    env: dict[str, str] = {}
    settings = Settings(env)
    env.update(
        SYNC_SQL_HOST="db.internal",
        SYNC_SQL_PORT="6543",
        SYNC_SQL_USERNAME="app",
        SYNC_SQL_PASSWORD="p@ss word",
        SYNC_SQL_DATABASE="jobs",
    )
    assert settings.url == "postgresql://app:p%40ss%20word@db.internal:6543/jobs"
    assert Settings({}).url == "postgresql://postgres@localhost:5432/postgres"
    assert Settings({"SYNC_SQL_URL": "sqlite:///x.db"}).url == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="SYNC_SQL_PORT"):
        Settings({"SYNC_SQL_PORT": "70000"}).url  # noqa: B018


def test_urls_are_checked_and_never_fall_back() -> None:
    for bad in ["", "localhost:5432", "mysql://x", "sqlite://", 3]:
        with pytest.raises(InvalidArgument):
            open_backend(bad)  # type: ignore[arg-type]


def test_url_options_are_split_without_mangling_the_rest() -> None:
    dsn, options = _split_options(
        "postgresql://u@h/db?jobsync_schema=jobs&options=-c%20lock_timeout%3D2s&jobsync_prefix=x_"
    )
    assert options == {"schema": "jobs", "prefix": "x_"}
    assert dsn == "postgresql://u@h/db?options=-c%20lock_timeout%3D2s"  # %20, never "+"
