"""The original jobsync's names (1.x, up to 1.3.14), kept so its callers still run.

Each old name is either a deprecated alias, which works and warns with a
``DeprecationWarning`` naming the new spelling, or refused with an error that
names what to do instead; none is silently ignored (docs/USAGE_GUIDE.md,
"Migrating from the original jobsync").

- ``CoordinationConfig`` fields of the original (``LEGACY_FIELDS``): an alias
  (``token_refresh_steady_interval_sec``), a setting this design has no use
  for (accepted with a warning saying why), the database settings
  (``DATABASE_FIELDS``: ``host``, ``port``, ``dbname``, ``user``,
  ``password`` and ``appname``, accepted with a warning naming the URL they
  build, ``original_database``), or refused (``locks_enabled=False``).
  ``minimum_nodes`` is a field of this library's config, not an alias.
- Job members (``LegacyJobMethods``): ``nodes``, ``node_name``, ``set_claim``,
  ``register_task_lock``, ``register_locks_bulk`` and ``_cn`` (``connection``).
- ``RebalanceEvent`` fields ``is_initial``, ``token_version``,
  ``tokens_added`` and ``tokens_removed`` are properties of the event
  (``runtime/publishing.py``), each warning through ``deprecated``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote

from jobsync.core.errors import ConfigError
from jobsync.runtime import original_env

_NO_USE = "nothing replaces it"
_REACTS = "reaction to a change is driven by notifications, not by a polling interval"

IGNORED: Mapping[str, str] = {
    "dead_node_check_interval_sec": f"{_NO_USE}: {_REACTS}",
    "token_refresh_initial_interval_sec": f"{_NO_USE}: {_REACTS}",
    "health_check_interval_sec": f"{_NO_USE}: health is read from memory on each call",
    "leader_lock_timeout_sec": f"{_NO_USE}: the leader holds no lock (plans are fenced)",
    "stale_leader_lock_age_sec": f"{_NO_USE}: the leader holds no lock (plans are fenced)",
    "stale_rebalance_lock_age_sec": f"{_NO_USE}: the leader holds no lock (plans are fenced)",
    "token_distribution_timeout_sec": "the Job's wait_on_enter bounds the wait for tokens",
}
"""Original settings this design has no use for: accepted, with a warning saying why."""

ORIGINAL_DATABASE: Mapping[str, str | int] = {
    "host": "localhost",
    "port": 5432,
    "dbname": "jobsync",
    "user": "postgres",
    "password": "postgres",
    "appname": "sync_",
}
"""The original's database fields and its defaults for them (PostgreSQL only)."""

DATABASE_FIELDS = tuple(ORIGINAL_DATABASE)

LEGACY_FIELDS = (
    "token_refresh_steady_interval_sec",
    "locks_enabled",
    *IGNORED,
    *DATABASE_FIELDS,
)
"""Every original ``CoordinationConfig`` field this library's does not have."""


def deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` (an original jobsync name) is deprecated in favour of ``new``."""
    warnings.warn(f"{old} is deprecated: {new}", DeprecationWarning, stacklevel=stacklevel)


def translate_legacy(values: Mapping[str, Any], rebalance_cap: float, stacklevel: int) -> float:
    """Check the original fields given (not None) to a CoordinationConfig; warn for
    each accepted one, refuse the others.  Returns ``rebalance_check_interval_sec``
    as ``token_refresh_steady_interval_sec`` lowers it (as ``SYNC_TOKEN_REFRESH_STEADY``
    does)."""
    for name, value in values.items():
        if value is None:
            continue
        if name in ORIGINAL_DATABASE:
            continue  # original_database reads them
        if name == "locks_enabled":
            if value is not True:
                raise ConfigError(
                    "CoordinationConfig(locks_enabled=False) of the original jobsync is not "
                    "accepted: locks are always honoured; register none, or clear them "
                    "(job.clear_all_locks() or `jobsync locks clear --all`)"
                )
            deprecated(
                "CoordinationConfig(locks_enabled=True)",
                "locks are always on; remove it",
                stacklevel,
            )
        elif name == "token_refresh_steady_interval_sec":
            deprecated(
                f"CoordinationConfig({name}=...)",
                "use rebalance_check_interval_sec (the lower of the two is kept)",
                stacklevel,
            )
            rebalance_cap = min(rebalance_cap, float(value))
        else:
            deprecated(f"CoordinationConfig({name}=...)", f"{IGNORED[name]}; remove it", stacklevel)
    return rebalance_cap


def original_database(values: Mapping[str, Any], stacklevel: int) -> str | None:
    """The PostgreSQL URL the original's database fields name, or None if none is set.

    Built as the original built its connection: every field not given takes
    the original's default (``ORIGINAL_DATABASE``: localhost:5432, database
    ``jobsync``, user and password ``postgres``), and ``appname`` is the
    table prefix (the URL option ``jobsync_prefix``).  Warns once, naming the
    URL to pass instead (password hidden); ConfigError names a bad value.
    """
    given = {name: values[name] for name in DATABASE_FIELDS if values.get(name) is not None}
    if not given:
        return None
    for name in ("host", "dbname", "user"):
        value = given.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"CoordinationConfig({name}=...) must be a non-empty string")
    password = given.get("password")
    if password is not None and not isinstance(password, str):
        raise ConfigError("CoordinationConfig(password=...) must be a string")
    port = given.get("port", ORIGINAL_DATABASE["port"])
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"CoordinationConfig(port=...) must be a TCP port, got {port!r}")
    field = dict(ORIGINAL_DATABASE, **given)
    prefix = original_env.check_prefix(field["appname"], "CoordinationConfig(appname=...)")
    host = str(field["host"])
    where = f"[{host}]" if ":" in host else host
    query = f"?jobsync_prefix={prefix}"
    if host.startswith("/"):  # a socket directory: libpq takes it as the host parameter
        where, query = "", f"{query}&host={quote(host, safe='/')}"
    auth = f"{quote(str(field['user']), safe='')}:{quote(str(field['password']), safe='')}"
    url = f"postgresql://{auth}@{where}:{port}/{quote(str(field['dbname']), safe='')}{query}"
    names = ", ".join(f"{name}=..." for name in given)
    shown = url.replace(":" + quote(str(field["password"]), safe="") + "@", ":***@", 1)
    deprecated(
        f"CoordinationConfig({names})",
        f"pass the database as a URL, Job(..., config={shown!r}) or SYNC_SQL_URL "
        "(appname is its jobsync_prefix option)",
        stacklevel,
    )
    return url


class _Job(Protocol):
    """What the aliases call on the Job."""

    name: str

    @property
    def connection(self) -> Any: ...

    def add_task(self, task: object) -> bool: ...

    def add_tasks(self, tasks: Iterable[object]) -> set[object]: ...

    register_lock: Callable[..., int]
    register_task_locks_bulk: Callable[[Iterable[Any]], int]


class LegacyJobMethods:
    """The original Job members that changed name or shape, as deprecated aliases."""

    @property
    def _cn(self: _Job) -> Any:
        """The original's connection attribute: ``job.connection``."""
        deprecated("job._cn", "use job.connection")
        return self.connection

    @property
    def node_name(self: _Job) -> str:
        """The original's name for ``job.name``."""
        deprecated("job.node_name", "use job.name")
        return self.name

    @property
    def nodes(self: _Job) -> list[dict[str, str]]:
        """The original's ``nodes``: a list holding only this node."""
        deprecated(
            "job.nodes",
            "it only ever held this node: use job.name, or job.get_active_nodes() for the "
            "site's live workers",
        )
        return [{"name": self.name, "node": self.name}]

    def set_claim(self: _Job, item: object) -> None:
        """The original's claim without an ownership check: ``add_task`` (or
        ``add_tasks`` for an iterable that is not a string), which claims only
        tasks whose token this worker holds."""
        deprecated("job.set_claim", "use add_task(task), or add_tasks(tasks) for many")
        if isinstance(item, Iterable) and not isinstance(item, (str, bytes)):
            self.add_tasks(item)
        else:
            self.add_task(item)

    def register_task_lock(
        self: _Job,
        task_id: object,
        node_pattern: str | Sequence[str],
        reason: str | None = None,
        expires_in_days: float | None = None,
    ) -> None:
        """The original's single-lock call: ``register_lock``."""
        deprecated("job.register_task_lock", "use job.register_lock")
        self.register_lock(task_id, node_pattern, reason, expires_in_days)

    def register_locks_bulk(self: _Job, locks: Iterable[Any]) -> int:
        """The name jobsync 1.3 gave ``register_task_locks_bulk``."""
        deprecated("job.register_locks_bulk", "use job.register_task_locks_bulk")
        return self.register_task_locks_bulk(locks)
