"""A Job's constructor arguments, checked once into one frozen value.

A Job given no site runs in ``SYNC_SITE``, else the site ``"default"``
(``Settings.site``).  A ``CoordinationConfig`` built with the original
jobsync's database fields names the database when the Job's config and the
environment do not; where they do and disagree, ``ConfigError``.

Every check raises before anything is opened: ``InvalidArgument`` for a bad
name, site, duration, callable, date or port (a ``datetime`` is taken as
its date, as the original jobsync did), ``ConfigError`` for a bad
``config`` or ``coordination_config`` (docs/USAGE_GUIDE.md, "Job").
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable

import attrs

from jobsync.backends.base import Backend
from jobsync.backends.url import parse_url, redact, same_database
from jobsync.core.capacity import validate_capacity
from jobsync.core.defences import Defences
from jobsync.core.errors import ConfigError, InvalidArgument
from jobsync.core.patterns import validate_node_name
from jobsync.runtime.config import CoordinationConfig, Settings
from jobsync.runtime.config import config as default_settings
from jobsync.runtime.locking import LockItem
from jobsync.runtime.task import check_port, check_seconds, coordination_of


@attrs.frozen(kw_only=True)
class JobOptions:
    """What a Job was asked to be, validated."""

    name: str
    site: str
    source: Settings | str | Backend
    config: CoordinationConfig
    explicit_config: bool
    wait_on_enter: float
    wait_on_exit: float
    lock_provider: Callable[..., Iterable[LockItem] | None] | None
    clear_existing_locks: bool
    on_rebalance: Callable[..., object] | None
    date: datetime.date | None
    handle_sigterm: bool
    observer: bool
    http: tuple[str, int | None]
    defences: Defences
    capacity: float


def _original_database(source: Settings | str | Backend, url: str) -> str:
    """The database of a Job whose CoordinationConfig named one with the original's
    fields (``database_url``): that URL, unless the Job's config or the
    environment names another (ConfigError: give the database once)."""
    if isinstance(source, Backend):
        raise ConfigError(
            "the database is given twice: a Backend as the Job's config and the original "
            "jobsync's CoordinationConfig(host=..., ...) fields; give it once"
        )
    if isinstance(source, Settings):
        if not source.names_database:
            return source.pooled(url)
        other, where = source.url, "the environment (SYNC_SQL_URL or SYNC_SQL_*)"
    else:
        other, where = source, "the Job's config"
    if not same_database(other, url):
        raise ConfigError(
            f"the database is given twice and differs: {where} says {redact(other)!r}, the "
            f"original jobsync's CoordinationConfig(host=..., ...) fields say {redact(url)!r}; "
            "give it once (a URL as the Job's config, or SYNC_SQL_URL)"
        )
    return other


def job_options(
    node_name: str,
    site: str | None,
    config: Settings | str | Backend | None,
    *,
    coordination_config: CoordinationConfig | None,
    wait_on_enter: float,
    wait_on_exit: float,
    lock_provider: Callable[..., Iterable[LockItem] | None] | None,
    clear_existing_locks: bool,
    on_rebalance: Callable[..., object] | None,
    date: datetime.date | None,
    handle_sigterm: bool,
    observer: bool,
    http_port: int | None,
    http_host: str,
    defences: Defences,
    capacity: float | None = None,
) -> JobOptions:
    """Check a Job's arguments (in the order the Job always checked them)."""
    name = validate_node_name(node_name)
    if site is None:
        site = default_settings.site
    if not isinstance(site, str) or not site:
        raise InvalidArgument(f"site must be a non-empty string, got {site!r}")
    enter = check_seconds("wait_on_enter", wait_on_enter, allow_zero=False)
    exit_ = check_seconds("wait_on_exit", wait_on_exit, allow_zero=True)
    for label, fn in (("lock_provider", lock_provider), ("on_rebalance", on_rebalance)):
        if fn is not None and not callable(fn):
            raise InvalidArgument(f"{label} must be callable, got {fn!r}")
    if isinstance(date, datetime.datetime):  # as the original jobsync: its date only
        date = date.date()
    elif date is not None and not isinstance(date, datetime.date):
        raise InvalidArgument(f"date must be a datetime.date or datetime.datetime, got {date!r}")
    if coordination_config is not None and not isinstance(coordination_config, CoordinationConfig):
        raise ConfigError(
            f"coordination_config must be a CoordinationConfig, got {coordination_config!r}"
        )
    source = default_settings if config is None else config
    if not isinstance(source, (Settings, str)) and not isinstance(source, Backend):
        raise ConfigError(
            f"config must be jobsync.config, a backend URL or a Backend, got {config!r}"
        )
    if coordination_config is not None and coordination_config.database_url is not None:
        source = _original_database(source, coordination_config.database_url)
    if isinstance(source, str):
        parse_url(source)  # a malformed URL is InvalidURL (a ConfigError) here, not at enter
    if capacity is not None:
        share = validate_capacity(capacity)
    else:  # SYNC_CAPACITY, read as the timings are (from the default settings for a URL)
        share = (source if isinstance(source, Settings) else default_settings).capacity
    return JobOptions(
        name=name,
        site=site,
        source=source,
        config=coordination_config or coordination_of(source),
        explicit_config=coordination_config is not None,
        wait_on_enter=enter,
        wait_on_exit=exit_,
        lock_provider=lock_provider,
        clear_existing_locks=bool(clear_existing_locks),
        on_rebalance=on_rebalance,
        date=date,
        handle_sigterm=bool(handle_sigterm),
        observer=bool(observer),
        http=(http_host, check_port(http_port, bool(observer))),
        defences=defences,
        capacity=share,
    )
