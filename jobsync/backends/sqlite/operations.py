"""Operators' verbs, locks and change waits on SQLite: list_sites, reset_site,
replace_locks, list_locks, clear_locks, read_history, prune, wait_for_change.

``reset_site`` is refused while any node's lease or fence runs
(``rules.lease_expired``).  ``prune`` deletes in short batches so other
writers go in between.  ``wait_for_change`` polls the site's ``signal``
counter (schema.py) at most once per ``poll_interval``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence

from jobsync.backends import _checks as C
from jobsync.backends.base import HistoryRecord, LockRecord, LockSpec, SiteInfo
from jobsync.backends.sqlite import queries as Q
from jobsync.backends.sqlite import rows as R
from jobsync.backends.sqlite.session import _Session
from jobsync.core import rules
from jobsync.core.errors import ConflictError, InvalidArgument
from jobsync.core.hashing import token_function, validate_hash_function, validate_total_tokens


class _Operations(_Session):
    """Sites as operators see them, locks, history, pruning and change waits."""

    def list_sites(self) -> tuple[str, ...]:
        with self._tx("list_sites", write=False) as conn:
            rows = conn.execute(Q.LIST_SITES).fetchall()
        return tuple(row[0] for row in rows)

    def reset_site(self, site: str, total_tokens: int, hash_function: str) -> SiteInfo:
        C.site_name(site)
        total = validate_total_tokens(total_tokens)
        hash_name = validate_hash_function(hash_function)
        with self._tx("reset_site") as conn:
            info, now = self._site(conn, site), self._clock()
            busy = sorted(
                n.name
                for n in self._nodes(conn, site).values()
                if n.fence_until > now or not rules.lease_expired(n, n.incarnation, now)
            )
            if busy:
                raise ConflictError(f"site {site!r} has nodes within their lease: {busy}")
            (top,) = conn.execute(Q.MAX_EPOCH, (site,)).fetchone()
            floor = max(info[R.FLOOR], top or 0)  # epochs never go backwards
            conn.execute(Q.DELETE_TOKENS, (site,))
            conn.execute(Q.INSERT_TOKENS, (site, total, floor))
            conn.execute(Q.RESET_SITE, (site, total, hash_name, floor))
            conn.execute(Q.BUMP, (site,))
            conn.execute(Q.RELEASE_ALL_CLAIMS, (site,))
            token_of = token_function(total, hash_name)  # a lock pins its task's new token
            keys = [key for (key,) in conn.execute(Q.LOCK_KEYS, (site,))]
            conn.executemany(Q.RETOKEN_LOCK, [(site, key, token_of(key)) for key in keys])
            return R.site_info(self._site(conn, site))

    def replace_locks(
        self, site: str, creator: str, locks: Sequence[LockSpec], clear_existing: bool
    ) -> int:
        C.site_name(site)
        C.node_name(creator)
        if not isinstance(clear_existing, bool):
            raise InvalidArgument(f"clear_existing must be a bool, got {clear_existing!r}")
        with self._tx("replace_locks") as conn:
            specs = C.lock_specs(locks, self._site(conn, site)[R.TOTAL])
            now = self._clock()
            conn.execute(Q.PURGE_LOCKS, (site, now))  # an expired lock exists for no one
            conn.executemany(Q.UPSERT_LOCK, [R.lock_params(site, creator, s, now) for s in specs])
            cleared = 0
            if clear_existing:  # deleting after the upsert keeps re-registered created_at
                kept = json.dumps([s.task_key for s in specs])
                cleared = conn.execute(Q.CLEAR_OTHER_LOCKS, (site, creator, kept)).rowcount
            if specs or cleared:
                conn.execute(Q.BUMP, (site,))
        return len(specs)

    def list_locks(self, site: str) -> tuple[LockRecord, ...]:
        C.site_name(site)
        with self._tx("list_locks", write=False) as conn:
            self._site(conn, site)
            rows = conn.execute(Q.SELECT_LOCKS, (site, self._clock()))
            return tuple(R.lock(row) for row in rows)

    def clear_locks(self, site: str, creator: str | None) -> int:
        C.site_name(site)
        C.optional_node_name(creator)
        with self._tx("clear_locks") as conn:
            self._site(conn, site)
            conn.execute(Q.PURGE_LOCKS, (site, self._clock()))
            deleted: int = conn.execute(Q.CLEAR_LOCKS, (site, creator)).rowcount
            if deleted:
                conn.execute(Q.BUMP, (site,))
        return deleted

    # -- history and maintenance ----------------------------------------------
    def read_history(self, site: str, limit: int = 50) -> tuple[HistoryRecord, ...]:
        C.site_name(site)
        C.integer("limit", limit, minimum=1)
        with self._tx("read_history", write=False) as conn:
            self._site(conn, site)
            return tuple(R.history(row) for row in conn.execute(Q.SELECT_HISTORY, (site, limit)))

    def prune(self, site: str, older_than: float, batch_size: int = 10_000) -> Mapping[str, int]:
        C.site_name(site)
        age = C.prune_age(older_than)
        batch = C.integer("batch_size", batch_size, minimum=1)
        with self._tx("prune", write=False) as conn:
            self._site(conn, site)
            cutoff = self._clock() - age
        counts = dict.fromkeys(Q.PRUNE, 0)
        for kind, sql in Q.PRUNE.items():
            deleted = batch
            while deleted == batch:  # short transactions: other writers go in between
                with self._tx(None) as conn:
                    deleted = conn.execute(sql, (site, cutoff, batch)).rowcount
                counts[kind] += deleted
        return counts

    # -- reaction -------------------------------------------------------------
    def wait_for_change(self, site: str, timeout: float) -> bool:
        C.site_name(site)
        deadline = time.monotonic() + C.seconds("timeout", timeout, allow_zero=True)
        verb: str | None = "wait_for_change"
        while True:
            # At most one read per poll_interval, across calls too: a caller that
            # waits in short slices must not turn the poll into a busy loop.
            due = self._last_poll.get(site, -math.inf) + self._poll_interval
            if time.monotonic() >= due or site not in self._seen:
                with self._tx(verb, write=False) as conn:
                    signal = self._site(conn, site)[R.SIGNAL]
                self._last_poll[site] = time.monotonic()
                verb = None
                if signal != self._seen[site]:
                    self._seen[site] = signal
                    return True
                due = self._last_poll[site] + self._poll_interval
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._nudge.take():
                return False
            self._nudge.sleep(min(due - time.monotonic(), remaining))  # lock free meanwhile

    def interrupt_wait(self) -> None:
        """``InterruptibleWait``: the running (or next) ``wait_for_change`` returns now."""
        self._nudge.set()
