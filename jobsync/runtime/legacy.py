"""The original jobsync's names (1.x, up to 1.3.14), kept so its callers still run.

Each old name is either a deprecated alias, which works and warns with a
``DeprecationWarning`` naming the new spelling, or refused with an error that
names what to do instead; none is silently ignored (docs/USAGE_GUIDE.md,
"Migrating from the original jobsync").

- ``CoordinationConfig`` fields of the original (``LEGACY_FIELDS``): an alias
  (``token_refresh_steady_interval_sec``), a setting this design has no use
  for (accepted with a warning saying why), or refused (the database settings,
  ``appname``, ``locks_enabled=False``, ``minimum_nodes`` above 1).
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

from jobsync.core.errors import ConfigError

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

_DATABASE = "pass the database as the Job's config instead: a URL such as "
REFUSED: Mapping[str, str] = {
    "host": _DATABASE + "postgresql://user:password@host:port/dbname, or SYNC_SQL_HOST",
    "port": _DATABASE + "postgresql://user:password@host:port/dbname, or SYNC_SQL_PORT",
    "dbname": _DATABASE + "postgresql://user:password@host:port/dbname, or SYNC_SQL_DATABASE",
    "user": _DATABASE + "postgresql://user:password@host:port/dbname, or SYNC_SQL_USERNAME",
    "password": _DATABASE + "postgresql://user:password@host:port/dbname, or SYNC_SQL_PASSWORD",
    "appname": "the table prefix is the URL option ?jobsync_prefix=PREFIX (default sync_)",
}
"""Original settings that belong elsewhere now: refused, naming the replacement."""

LEGACY_FIELDS = (
    "token_refresh_steady_interval_sec",
    "locks_enabled",
    "minimum_nodes",
    *IGNORED,
    *REFUSED,
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
        if name in REFUSED:
            raise ConfigError(
                f"CoordinationConfig({name}=...) of the original jobsync is not accepted: "
                f"{REFUSED[name]}"
            )
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
        elif name == "minimum_nodes":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"minimum_nodes must be a positive integer, got {value!r}")
            if value > 1:
                raise ConfigError(
                    f"CoordinationConfig(minimum_nodes={value}) of the original jobsync is not "
                    "accepted: a worker enters as soon as the leader has planned with it; to "
                    "wait for more workers, poll len(job.get_active_nodes()) after entering"
                )
            deprecated(
                "CoordinationConfig(minimum_nodes=1)",
                "it is the only behaviour; remove it",
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
