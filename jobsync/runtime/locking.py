"""A Job's lock API: pin tasks' tokens to nodes matching patterns.

``lock_provider`` runs once at enter (its registrations are collected and
written in one transaction, optionally replacing this node's earlier locks);
afterwards ``register_lock`` and ``register_task_locks_bulk`` write at once.
An observer may pin tasks of a site no worker has created yet only with the
site's constants said explicitly (``coordination_config``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias

import attrs

from jobsync.backends.base import Backend, LockSpec
from jobsync.core.errors import InvalidArgument
from jobsync.core.patterns import validate_node_name
from jobsync.runtime.config import CoordinationConfig
from jobsync.runtime.task import check_seconds, lock_rows, lock_spec

LockItem: TypeAlias = tuple[object, "str | Sequence[str]", "str | None"]


@attrs.define(eq=False)
class JobLocks:
    """The locks one Job registers, lists and clears.

    ``backend`` returns the Job's backend (or raises); ``token`` its task hash
    (an observer's follows the site's stored constants).
    """

    site: str
    creator: str
    config: CoordinationConfig
    _backend: Callable[[], Backend] = attrs.field(kw_only=True)
    _token: Callable[[], Callable[[object], int]] = attrs.field(kw_only=True)
    _observer: bool = attrs.field(kw_only=True)
    _explicit_config: bool = attrs.field(kw_only=True)
    _collecting: list[LockSpec] | None = attrs.field(default=None, init=False)

    def register_bulk(self, items: Iterable[LockItem]) -> int:
        specs = [lock_spec(item, self._token()) for item in items]
        return self._write(specs)

    def register(
        self,
        task_id: object,
        patterns: str | Sequence[str],
        reason: str | None,
        expires_in_days: float | None,
    ) -> int:
        if expires_in_days is not None:
            check_seconds("expires_in_days", expires_in_days, allow_zero=False)
        spec = lock_spec((task_id, patterns, reason), self._token(), expires_in_days)
        return self._write([spec])

    def _write(self, specs: list[LockSpec]) -> int:
        if self._collecting is not None:
            self._collecting.extend(specs)
            return len(specs)
        backend = self._backend()
        if self._observer and backend.site_info(self.site) is None:
            # An operator may pin tasks before the first worker starts, but only with
            # the site's constants said explicitly: a guess would fix them wrongly.
            if not self._explicit_config:
                raise InvalidArgument(
                    f"site {self.site!r} does not exist yet: pass coordination_config with "
                    "its total_tokens and hash_function to create it, or start a worker first"
                )
            cfg = self.config
            backend.ensure_site(self.site, cfg.total_tokens, cfg.hash_function)
        return backend.replace_locks(self.site, self.creator, specs, clear_existing=False)

    def collect(self, provider: Callable[[], Iterable[LockItem] | None]) -> list[LockSpec]:
        """Run ``provider``: what it registers, and what it returns, as lock specs."""
        self._collecting = []
        try:
            returned = provider()
            if returned is not None:
                self._collecting.extend(lock_spec(item, self._token()) for item in returned)
            return self._collecting
        finally:
            self._collecting = None

    def list(self) -> list[dict[str, object]]:
        return lock_rows(self._backend().list_locks(self.site))

    def clear_by_creator(self, creator: str) -> int:
        validate_node_name(creator)
        return self._backend().clear_locks(self.site, creator)

    def clear_all(self) -> int:
        return self._backend().clear_locks(self.site, None)


class LockMethods:
    """The lock API of a Job's facade: each method hands over to ``self._locks``."""

    _locks: JobLocks

    def register_task_locks_bulk(self, items: Iterable[LockItem]) -> int:
        """Pin tasks' tokens to nodes matching patterns: ``[(task_id, patterns, reason), ...]``."""
        return self._locks.register_bulk(items)

    def register_lock(
        self,
        task_id: object,
        patterns: str | Sequence[str],
        reason: str | None = None,
        expires_in_days: float | None = None,
    ) -> int:
        """Pin one task's token; ``expires_in_days`` on the backend's clock."""
        return self._locks.register(task_id, patterns, reason, expires_in_days)

    def list_locks(self) -> list[dict[str, object]]:
        """Every unexpired lock of the site, with the lock that decides its token on conflict."""
        return self._locks.list()

    def clear_locks_by_creator(self, creator: str) -> int:
        return self._locks.clear_by_creator(creator)

    def clear_all_locks(self) -> int:
        return self._locks.clear_all()
