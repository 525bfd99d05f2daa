"""Configuration: the frozen CoordinationConfig and the environment-backed settings.

``CoordinationConfig`` is validated on construction (docs/PROTOCOL.md section 4,
"Clocks"): the config is valid only if
``heartbeat_timeout >= 2 * heartbeat_interval + safety_margin``, so a worker
always gets a second heartbeat attempt before its lease ends.

``jobsync.config`` is a ``Settings`` object that reads the ``SYNC_*``
environment variables on first use, never at import, and names the variable
in every error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import attrs

from jobsync.core.capacity import DEFAULT_CAPACITY, MAX_CAPACITY, MIN_CAPACITY, validate_capacity
from jobsync.core.errors import ConfigError
from jobsync.core.hashing import DEFAULT_HASH, DEFAULT_TOTAL_TOKENS, HASH_FUNCTIONS
from jobsync.runtime import original_env
from jobsync.runtime.legacy import LEGACY_FIELDS, original_database, translate_legacy


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{attr.name} must be a positive number of seconds, got {value!r}")


def _optional_positive(
    inst: object, attr: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None:
        _positive(inst, attr, value)  # type: ignore[arg-type]


def _total_tokens(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"total_tokens must be a positive integer, got {value!r}")


def _hash_name(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if value not in HASH_FUNCTIONS:
        known = ", ".join(sorted(HASH_FUNCTIONS))
        raise ConfigError(f"hash_function must be one of {known}, got {value!r}")


def _minimum_nodes(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"minimum_nodes must be a positive integer, got {value!r}")


def _hidden(url: str | None) -> str:
    if url is None:
        return "None"
    from jobsync.backends.url import redact

    return repr(redact(url))


def _legacy(validator: Callable[..., None] | None = None) -> Any:
    """An original jobsync field: not compared, not shown, None once built."""
    return attrs.field(default=None, validator=validator, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class CoordinationConfig:
    """How a site's nodes coordinate.  Every time is in seconds.

    ``safety_margin_sec`` defaults to max(0.5, 5% of the timeout);
    ``ack_timeout_sec`` to 2 x the heartbeat interval; ``settle_window_sec``
    to one heartbeat interval.  ``rebalance_check_interval_sec`` only bounds
    the fallback reconciliation read: it never delays reaction to a change.
    The original jobsync's fields are accepted with a ``DeprecationWarning`` or
    refused with a ``ConfigError`` naming the replacement (``runtime/legacy.py``);
    its database fields become ``database_url``.
    """

    total_tokens: int = attrs.field(default=DEFAULT_TOTAL_TOKENS, validator=_total_tokens)
    hash_function: str = attrs.field(default=DEFAULT_HASH, validator=_hash_name)
    heartbeat_interval_sec: float = attrs.field(default=5.0, validator=_positive)
    heartbeat_timeout_sec: float = attrs.field(default=15.0, validator=_positive)
    rebalance_check_interval_sec: float = attrs.field(default=30.0, validator=_positive)
    safety_margin_sec: float | None = attrs.field(default=None, validator=_optional_positive)
    ack_timeout_sec: float | None = attrs.field(default=None, validator=_optional_positive)
    settle_window_sec: float | None = attrs.field(default=None, validator=_optional_positive)
    drain_timeout_sec: float = attrs.field(default=10.0, validator=_positive)
    callback_timeout_sec: float = attrs.field(default=5.0, validator=_positive)
    load_half_life_sec: float | None = attrs.field(default=None, validator=_optional_positive)
    """Set (seconds), the leader balances measured load too (``runtime/loadtrack.py``)."""
    minimum_nodes: int = attrs.field(default=1, validator=_minimum_nodes)
    """The leader distributes no token until this many workers are live (it is
    the leader's value that counts); once any of them holds a token the site
    keeps serving with whoever is live, however few."""
    enabled: bool = True
    database_url: str | None = attrs.field(default=None, init=False, repr=_hidden)
    """The database the original's fields named (``host``, ``port``, ``dbname``,
    ``user``, ``password``, ``appname``, deprecated), as a URL; None without them.
    A Job given this config and no database uses it."""
    # The original jobsync's fields (runtime/legacy.py): deprecated or refused,
    # and None on every built config.
    token_refresh_steady_interval_sec: float | None = _legacy(_optional_positive)
    token_refresh_initial_interval_sec: float | None = _legacy()
    dead_node_check_interval_sec: float | None = _legacy()
    health_check_interval_sec: float | None = _legacy()
    leader_lock_timeout_sec: float | None = _legacy()
    stale_leader_lock_age_sec: float | None = _legacy()
    stale_rebalance_lock_age_sec: float | None = _legacy()
    token_distribution_timeout_sec: float | None = _legacy()
    locks_enabled: bool | None = _legacy()
    host: str | None = _legacy()
    port: int | None = _legacy()
    dbname: str | None = _legacy()
    user: str | None = _legacy()
    password: str | None = _legacy()
    appname: str | None = _legacy()

    def __attrs_post_init__(self) -> None:
        given = {name: getattr(self, name) for name in LEGACY_FIELDS}
        if any(value is not None for value in given.values()):
            cap = translate_legacy(given, self.rebalance_check_interval_sec, stacklevel=5)
            object.__setattr__(self, "rebalance_check_interval_sec", cap)
            object.__setattr__(self, "database_url", original_database(given, stacklevel=5))
            for name in LEGACY_FIELDS:
                object.__setattr__(self, name, None)
        margin = self.margin
        needed = 2 * self.heartbeat_interval_sec + margin
        if self.heartbeat_timeout_sec < needed:
            raise ConfigError(
                f"heartbeat_timeout_sec={self.heartbeat_timeout_sec!r} must be at least "
                f"2 * heartbeat_interval_sec + safety_margin_sec = {needed!r}"
            )

    @property
    def margin(self) -> float:
        """The effective safety margin."""
        if self.safety_margin_sec is not None:
            return self.safety_margin_sec
        return max(0.5, 0.05 * self.heartbeat_timeout_sec)

    @property
    def ack_timeout(self) -> float:
        return self.ack_timeout_sec or 2 * self.heartbeat_interval_sec

    @property
    def settle_window(self) -> float:
        return self.settle_window_sec or self.heartbeat_interval_sec

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CoordinationConfig:
        """Build from ``SYNC_*`` variables; an unset variable keeps the default."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        if "SYNC_TOTAL_TOKENS" in env:
            kwargs["total_tokens"] = _env_int(env, "SYNC_TOTAL_TOKENS")
        if "SYNC_HASH_FUNCTION" in env:
            kwargs["hash_function"] = env["SYNC_HASH_FUNCTION"]
        for var, field in (
            ("SYNC_HEARTBEAT_INTERVAL", "heartbeat_interval_sec"),
            ("SYNC_HEARTBEAT_TIMEOUT", "heartbeat_timeout_sec"),
            ("SYNC_DRAIN_TIMEOUT", "drain_timeout_sec"),
        ):
            if var in env:
                kwargs[field] = _env_seconds(env, var)
        caps = [
            _env_seconds(env, var)
            for var in (
                "SYNC_REBALANCE_INTERVAL",
                "SYNC_TOKEN_REFRESH_STEADY",
                "SYNC_TOKEN_REFRESH_INITIAL",
            )
            if var in env
        ]
        if caps:
            kwargs["rebalance_check_interval_sec"] = min(caps)
        if "SYNC_COORDINATION_ENABLED" in env:
            kwargs["enabled"] = _env_bool(env, "SYNC_COORDINATION_ENABLED")
        try:
            return cls(**kwargs)  # type: ignore[arg-type]
        except ConfigError as exc:
            message = str(exc)
            for field, var in _ENV_NAMES.items():
                if field in kwargs:
                    message = message.replace(field, f"{var} ({field})")
            raise ConfigError(f"from the environment: {message}") from None


_ENV_NAMES = {
    "heartbeat_interval_sec": "SYNC_HEARTBEAT_INTERVAL",
    "heartbeat_timeout_sec": "SYNC_HEARTBEAT_TIMEOUT",
    "drain_timeout_sec": "SYNC_DRAIN_TIMEOUT",
    "total_tokens": "SYNC_TOTAL_TOKENS",
    "hash_function": "SYNC_HASH_FUNCTION",
}


def _env_int(env: Mapping[str, str], var: str) -> int:
    return int(_env_number(env, var, int, "integer"))


def _env_seconds(env: Mapping[str, str], var: str) -> float:
    return _env_number(env, var, float, "number of seconds")


def _env_number(
    env: Mapping[str, str], var: str, parse: Callable[[str], float], kind: str
) -> float:
    """A positive finite number from ``var``, or ConfigError naming it."""
    raw = env[var]
    try:
        value = parse(raw.strip())
    except ValueError:
        raise ConfigError(f"{var} must be a positive {kind}, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{var} must be a positive {kind}, got {raw!r}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env_bool(env: Mapping[str, str], var: str) -> bool:
    raw = env[var].strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{var} must be one of true/false/1/0/yes/no/on/off, got {env[var]!r}")


@attrs.frozen(kw_only=True)
class DatabaseSettings:
    """Where the PostgreSQL database is (the README's defaults: localhost:5432)."""

    host: str = "localhost"
    port: int = 5432
    database: str = "postgres"
    username: str = "postgres"
    password: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DatabaseSettings:
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        for var, field in (
            ("SYNC_SQL_HOST", "host"),
            ("SYNC_SQL_DATABASE", "database"),
            ("SYNC_SQL_USERNAME", "username"),
            ("SYNC_SQL_PASSWORD", "password"),
        ):
            if var in env:
                kwargs[field] = env[var]
        if "SYNC_SQL_PORT" in env:
            port = _env_int(env, "SYNC_SQL_PORT")
            if port > 65535:
                raise ConfigError(f"SYNC_SQL_PORT must be a TCP port, got {env['SYNC_SQL_PORT']!r}")
            kwargs["port"] = port
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        auth = quote(self.username, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(self.database, safe='')}"


def _with_pooler(url: str, pooler: str | None) -> str:
    """``url`` with ``jobsync_pooler`` from ``SYNC_SQL_POOLER`` (a URL's own wins;
    other schemes are left alone)."""
    if pooler is None:
        return url
    from jobsync.backends.url import POOLERS

    mode = pooler.strip().lower()
    if mode not in POOLERS:
        raise ConfigError(f"SYNC_SQL_POOLER must be one of {', '.join(POOLERS)}, got {pooler!r}")
    if not url.lower().startswith(("postgresql://", "postgres://")) or "jobsync_pooler=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}jobsync_pooler={mode}"


DEFAULT_SITE = "default"
"""The site of a Job given none and no ``SYNC_SITE``."""

_DATABASE_VARS = (
    "SYNC_SQL_URL",
    "SYNC_SQL_HOST",
    "SYNC_SQL_PORT",
    "SYNC_SQL_DATABASE",
    "SYNC_SQL_USERNAME",
    "SYNC_SQL_PASSWORD",
    "SYNC_SQL_APPNAME",
)


class Settings:
    """``jobsync.config``: the environment's settings, read on first use.

    ``SYNC_SQL_URL`` (any backend URL) wins over the ``SYNC_SQL_*`` parts;
    ``SYNC_SQL_APPNAME`` is the table prefix; the original jobsync's other
    settings are honoured or refused as ``original_env`` says.
    ``SYNC_SQL_POOLER`` (``none`` or ``transaction``) adds ``jobsync_pooler``
    to a PostgreSQL URL that does not set it.  ``SYNC_SITE`` is the site of a
    Job given none (default ``"default"``).  ``reload()`` forgets what was
    read so the next use reads again.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        self._coordination: CoordinationConfig | None = None
        self._database: DatabaseSettings | None = None

    def _env(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    @property
    def coordination(self) -> CoordinationConfig:
        # A racing first use reads the same environment twice: harmless.
        if self._coordination is None:
            self._refuse_originals()
            self._coordination = CoordinationConfig.from_env(self._env())
        return self._coordination

    @property
    def database(self) -> DatabaseSettings:
        if self._database is None:
            self._database = DatabaseSettings.from_env(self._env())
        return self._database

    @property
    def url(self) -> str:
        env = self._env()
        self._refuse_originals()
        explicit = env.get("SYNC_SQL_URL")
        url = original_env.with_appname(explicit if explicit else self.database.url, env)
        return _with_pooler(url, env.get("SYNC_SQL_POOLER"))

    def pooled(self, url: str) -> str:
        """``url`` with ``SYNC_SQL_POOLER``'s mode, as ``url`` adds it."""
        return _with_pooler(url, self._env().get("SYNC_SQL_POOLER"))

    def _refuse_originals(self) -> None:
        """The original jobsync's settings are honoured or refused (``original_env``)."""
        error = original_env.refusal(self._env())
        if error is not None:
            raise error

    @property
    def site(self) -> str:
        """``SYNC_SITE``, else ``"default"``: the site of a Job given none (the
        original jobsync had one site per table prefix)."""
        raw = self._env().get("SYNC_SITE")
        if raw is None:
            return DEFAULT_SITE
        if not raw.strip():
            raise ConfigError(f"SYNC_SITE must name a site, got {raw!r}")
        return raw

    @property
    def names_database(self) -> bool:
        """True if the environment says where the database is (``SYNC_SQL_URL``,
        a ``SYNC_SQL_*`` part or ``SYNC_SQL_APPNAME``)."""
        return any(var in self._env() for var in _DATABASE_VARS)

    @property
    def capacity(self) -> float:
        """``SYNC_CAPACITY`` (default 1): this worker's share of tokens, in proportion
        to the others' (``jobsync.core.capacity``); ConfigError naming a bad value."""
        raw = self._env().get("SYNC_CAPACITY")
        if raw is None:
            return DEFAULT_CAPACITY
        try:
            return validate_capacity(float(raw.strip()), "SYNC_CAPACITY")
        except ValueError:  # not a number, or out of range (InvalidArgument)
            raise ConfigError(
                f"SYNC_CAPACITY must be a finite number from {MIN_CAPACITY} to "
                f"{MAX_CAPACITY:g}, got {raw!r}"
            ) from None

    def reload(self) -> None:
        self._coordination = None
        self._database = None

    def __repr__(self) -> str:
        return "<jobsync.config: settings from SYNC_* environment variables>"


config = Settings()
