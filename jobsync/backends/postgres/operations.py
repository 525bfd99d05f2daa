"""Operations on PostgreSQL: sites, locks, history, pruning and reaction
(ensure_site, site_info, list_sites, reset_site, replace_locks, list_locks,
clear_locks, read_history, prune, wait_for_change, now).

Their statements are ``plain_queries``'; none judges a lease as a protocol rule
does.  Writers lock the site row first and bump the change counter, as every
writer does.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg

from jobsync.backends import _checks as checks
from jobsync.backends.base import (
    HistoryEntry,
    HistoryRecord,
    LockRecord,
    LockSpec,
    SiteInfo,
)
from jobsync.backends.postgres import rows as V
from jobsync.backends.postgres.handle import Queries, _Handle, translate, unknown_site
from jobsync.backends.postgres.session import Session
from jobsync.core.errors import (
    BackendUnavailable,
    ConfigMismatch,
    ConflictError,
    InvalidArgument,
)
from jobsync.core.hashing import token_for, validate_hash_function, validate_total_tokens


class _Operations(_Handle):
    """Sites, locks, history, pruning, and waiting for a change."""

    def ensure_site(self, site: str, total_tokens: int, hash_function: str) -> SiteInfo:
        site = checks.site_name(site)
        total = validate_total_tokens(total_tokens)
        name = validate_hash_function(hash_function)

        def body(s: Session, q: Queries) -> SiteInfo:
            s.execute(q["ENSURE_SITE"], {"site": site, "total": total, "hash": name})
            row = s.execute(q["SITE_INFO"], {"site": site}).fetchone()
            assert row is not None
            info = V.site_info(row)
            if (info.total_tokens, info.hash_function) != (total, name):
                raise ConfigMismatch(
                    f"site {site!r} stores total_tokens={info.total_tokens}, "
                    f"hash_function={info.hash_function!r}; got total_tokens={total}, "
                    f"hash_function={name!r}"
                )
            return info

        return self._call("ensure_site", site, body)

    def site_info(self, site: str) -> SiteInfo | None:
        site = checks.site_name(site)

        def body(s: Session, q: Queries) -> SiteInfo | None:
            row = s.execute(q["SITE_INFO"], {"site": site}).fetchone()
            return None if row is None else V.site_info(row)

        return self._call("site_info", site, body)

    def list_sites(self) -> tuple[str, ...]:
        def body(s: Session, q: Queries) -> tuple[str, ...]:
            return tuple(row[0] for row in s.execute(q["LIST_SITES"]).fetchall())

        return self._call("list_sites", None, body)

    def reset_site(self, site: str, total_tokens: int, hash_function: str) -> SiteInfo:
        site = checks.site_name(site)
        total = validate_total_tokens(total_tokens)
        name = validate_hash_function(hash_function)

        def body(s: Session, q: Queries) -> SiteInfo:
            p: dict[str, Any] = {"site": site, "total": total, "hash": name}
            with s.transaction():
                self._lock_site(s, q, site)
                busy = sorted(r[0] for r in s.execute(q["BUSY_NODES"], p).fetchall())
                if busy:
                    raise ConflictError(
                        f"site {site!r} has nodes within their lease {busy}; reset refused"
                    )
                floor = s.execute(q["RESET_FLOOR"], p).fetchone()
                assert floor is not None
                s.execute(q["RESET_DELETE_TOKENS"], p)
                row = s.execute(q["RESET_TOKENS"], {**p, "floor": floor[0]}).fetchone()
                assert row is not None
                s.execute(q["RESET_CLAIMS"], p)
                keys = [r[0] for r in s.execute(q["LOCK_KEYS"], p).fetchall()]
                if keys:
                    tokens = [token_for(key, total, name) for key in keys]
                    s.execute(q["RETOKEN_LOCKS"], {**p, "keys": keys, "tokens": tokens})
                s.execute(q["NOTIFY"], {"channel": self._channel(site), "payload": "reset"})
            return V.site_info(row)

        return self._call("reset_site", site, body)

    def replace_locks(
        self, site: str, creator: str, locks: Sequence[LockSpec], clear_existing: bool
    ) -> int:
        site, creator = checks.site_name(site), checks.node_name(creator)
        if not isinstance(clear_existing, bool):
            raise InvalidArgument(f"clear_existing must be a bool, got {clear_existing!r}")

        def body(s: Session, q: Queries) -> int:
            with s.transaction():
                total = self._lock_site(s, q, site)[0]
                specs = checks.lock_specs(locks, total)
                for spec in specs:
                    V.check_lock_text(spec)
                s.execute(q["PURGE_LOCKS"], {"site": site})
                keys = [spec.task_key for spec in specs]
                cleared = 0
                if clear_existing:
                    params = {"site": site, "creator": creator, "keep": keys}
                    cleared = s.execute(q["CLEAR_CREATOR_LOCKS"], params).rowcount
                if specs:
                    s.execute(q["UPSERT_LOCKS"], V.lock_params(site, creator, specs))
                if cleared or specs:
                    self._bump(s, q, site, "locks")
            return len(specs)

        return self._call("replace_locks", site, body)

    def list_locks(self, site: str) -> tuple[LockRecord, ...]:
        site = checks.site_name(site)

        def body(s: Session, q: Queries) -> tuple[LockRecord, ...]:
            rows = s.execute(q["LIST_LOCKS"], {"site": site}).fetchall()
            if not rows:
                raise unknown_site(site)
            return tuple(
                sorted((V.lock(r[1:]) for r in rows if r[1] is not None), key=V.lock_order)
            )

        return self._call("list_locks", site, body)

    def clear_locks(self, site: str, creator: str | None) -> int:
        site, who = checks.site_name(site), checks.optional_node_name(creator)

        def body(s: Session, q: Queries) -> int:
            with s.transaction():
                self._lock_site(s, q, site)
                s.execute(q["PURGE_LOCKS"], {"site": site})
                params: dict[str, Any] = {"site": site, "creator": who, "keep": []}
                deleted = s.execute(q["CLEAR_CREATOR_LOCKS"], params).rowcount
                if deleted:
                    self._bump(s, q, site, "locks")
            return deleted

        return self._call("clear_locks", site, body)

    def read_history(self, site: str, limit: int = 50) -> tuple[HistoryRecord, ...]:
        site, count = checks.site_name(site), checks.integer("limit", limit, minimum=1)

        def body(s: Session, q: Queries) -> tuple[HistoryRecord, ...]:
            rows = s.execute(q["READ_HISTORY"], {"site": site, "limit": count}).fetchall()
            if not rows:
                raise unknown_site(site)
            return tuple(
                HistoryRecord(
                    generation=r[1],
                    leader=r[2],
                    at=r[3],
                    entry=HistoryEntry(
                        trigger=r[4],
                        nodes_before=tuple(r[5]),
                        nodes_after=tuple(r[6]),
                        moved=r[7],
                        unowned=r[8],
                        duration_ms=r[9],
                        hot=None if r[10] is None else tuple(r[10]),
                    ),
                )
                for r in rows
                if r[1] is not None
            )

        return self._call("read_history", site, body)

    def prune(self, site: str, older_than: float, batch_size: int = 10_000) -> Mapping[str, int]:
        """Each batch is its own short statement, so heartbeats interleave with a long prune."""
        site = checks.site_name(site)
        age = checks.prune_age(older_than)
        batch = checks.integer("batch_size", batch_size, minimum=1)

        def cutoff_of(s: Session, q: Queries) -> datetime.datetime:
            row = s.execute(q["PRUNE_CUTOFF"], {"site": site, "age": age}).fetchone()
            if row is None:
                raise unknown_site(site)
            return row[0]  # type: ignore[no-any-return]

        cutoff = self._call("prune", site, cutoff_of)
        counts = {"audit": 0, "history": 0}
        for kind, query in (("audit", "PRUNE_AUDIT"), ("history", "PRUNE_HISTORY")):
            params = {"site": site, "cutoff": cutoff, "batch": batch}
            while True:
                deleted = self._call("prune", None, _counter(query, params), count=False)
                counts[kind] += deleted
                if deleted < batch:
                    break
        return counts

    def wait_for_change(self, site: str, timeout: float) -> bool:
        """LISTEN/NOTIFY; behind a transaction pooler, a poll of the site row's
        version (``SITE_SIGNAL``) at most once per ``poll_interval``, across
        calls, so a caller waiting in short slices does not poll in a busy loop
        (the first call on a site is its first touch).  ``interrupt_wait`` cuts
        either short."""
        site = checks.site_name(site)
        wait = checks.seconds("timeout", timeout, allow_zero=True)
        if self._session.pooled:
            return self._poll_for_change(site, wait)
        channel = self._channel(site)

        def touch(s: Session, q: Queries) -> None:
            if not s.listening(channel):  # first touch: the site must exist
                if s.execute(q["SITE_EXISTS"], {"site": site}).fetchone() is None:
                    raise unknown_site(site)
                s.listen(channel)
            s.flush()

        self._call("wait_for_change", None, touch)
        try:
            return self._session.wait(channel, wait)
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def _poll_for_change(self, site: str, wait: float) -> bool:
        deadline = time.monotonic() + wait
        counted = False

        def read(s: Session, q: Queries) -> str:
            row = s.execute(q["SITE_SIGNAL"], {"site": site}).fetchone()
            if row is None:
                raise unknown_site(site)
            return str(row[0])

        while True:
            due = self._polled.get(site, -math.inf) + self.poll_interval
            if site not in self._signals or time.monotonic() >= due:
                signal = self._call("wait_for_change", None, read, count=not counted)
                counted = True
                self._polled[site] = time.monotonic()
                seen = self._signals.setdefault(site, signal)
                if signal != seen:
                    self._signals[site] = signal
                    return True
                due = self._polled[site] + self.poll_interval
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._session.nudge.take():
                return False
            self._session.pause(min(due - time.monotonic(), remaining))
            if self._session.closed:
                raise BackendUnavailable("the PostgreSQL backend handle is closed")

    def interrupt_wait(self) -> None:
        """``InterruptibleWait``: the self-pipe the waiter selects on, and its pause."""
        self._session.interrupt()

    def now(self) -> float:
        def body(s: Session, q: Queries) -> float:
            row = s.execute(q["NOW"]).fetchone()
            assert row is not None
            return float(row[0])

        return self._call("now", None, body)


def _counter(query: str, params: dict[str, Any]) -> Callable[[Session, Queries], int]:
    """A body running one statement whose single value is a count."""

    def body(s: Session, q: Queries) -> int:
        row = s.execute(q[query], params).fetchone()
        assert row is not None
        return int(row[0])

    return body
