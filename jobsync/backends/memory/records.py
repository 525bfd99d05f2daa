"""Per-site record tables of the memory backend: the claim ledger and the locks.

Plain data, no locking, no clock: the store calls these under its lock with
the verb's ``now``.  The ledger keeps one row per (date, task_key), open
(claimed) or done, and an index of open claims per incarnation so that a
dead incarnation's claims are released without a scan.  Locks are keyed by
task key; an expired lock is treated as absent everywhere (``purge`` drops it
before any lock verb), so re-registering it starts a new ``created_at``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Sequence

import attrs

from jobsync.backends.base import AuditRecord, LockRecord, LockSpec
from jobsync.backends.capabilities import Completion
from jobsync.backends.settle import Kind
from jobsync.core.model import CLAIM_STATUSES

ClaimKey = tuple[datetime.date, str]


@attrs.define(slots=True)
class ClaimRow:
    node: str
    incarnation: int
    token: int
    epoch: int
    claimed_at: float
    completed_at: float | None = None
    cost: float | None = None


class ClaimLedger:
    """Claims and completions of one site, unique per (date, task_key).

    Row locks: an open transaction that completed or released a claim inside
    it (a ``MemoryTransaction``, the memory form of ``complete_in``/``release_in``)
    holds that claim row until it commits or rolls back.  ``holder`` maps the
    locked keys to it; cleanup (``release_all``) skips locked rows, as
    PostgreSQL's ``SKIP LOCKED`` does, and callers that must not skip ask
    ``blockers`` who is in the way.
    """

    def __init__(self) -> None:
        self._rows: dict[ClaimKey, ClaimRow] = {}
        self._open: dict[int, set[ClaimKey]] = {}
        self.holder: dict[ClaimKey, object] = {}

    def blockers(self, keys: Iterable[ClaimKey], holder: object = None) -> list[object]:
        """The holders other than ``holder`` of locks on any of ``keys``, in order."""
        found = [self.holder[k] for k in keys if k in self.holder]
        return [h for h in dict.fromkeys(found) if h is not holder]

    def open_keys_of(self, incarnations: Iterable[int]) -> list[ClaimKey]:
        return [key for inc in incarnations for key in self._open.get(inc, ())]

    def open_of(self, date: datetime.date, incarnation: int, keys: Iterable[str]) -> frozenset[str]:
        mine = self._open.get(incarnation, set())
        return frozenset(k for k in keys if (date, k) in mine)

    def exists(self, key: ClaimKey) -> bool:
        return key in self._rows

    def open_by(self, key: ClaimKey, incarnation: int) -> bool:
        """True if ``key`` is an open claim of ``incarnation`` (a retried claim)."""
        row = self._rows.get(key)
        return row is not None and row.incarnation == incarnation and row.completed_at is None

    def add(self, key: ClaimKey, row: ClaimRow) -> None:
        self._rows[key] = row
        self._open.setdefault(row.incarnation, set()).add(key)

    def open_incarnations(self) -> list[tuple[str, int]]:
        """(node, incarnation) of every incarnation with an open claim."""
        found = []
        for incarnation, keys in self._open.items():
            claim = self._rows[next(iter(keys))]
            found.append((claim.node, incarnation))
        return found

    def settle(
        self,
        kind: Kind,
        date: datetime.date,
        incarnation: int,
        keys: Iterable[str],
        now: float,
        *,
        cost: float | None = None,
    ) -> frozenset[str]:
        """Complete (at ``now``, with ``cost``) or release (delete) ``incarnation``'s
        open claims among ``keys``, as ``kind`` says; the task keys settled."""
        settled = set()
        for key in self._take_open(date, incarnation, keys):
            if kind == "complete":
                self._rows[key].completed_at = now
                self._rows[key].cost = cost
            else:
                del self._rows[key]
            settled.add(key[1])
        return frozenset(settled)

    def release_all(self, incarnation: int) -> int:
        """Delete every open claim of ``incarnation`` not locked by a transaction
        (those stay for a later reap); return how many were deleted."""
        keys = self._open.pop(incarnation, set())
        kept = {key for key in keys if key in self.holder}
        for key in keys - kept:
            del self._rows[key]
        if kept:
            self._open[incarnation] = kept
        return len(keys) - len(kept)

    def audit(self, date: datetime.date, node: str | None) -> tuple[AuditRecord, ...]:
        records = [
            AuditRecord(
                task_key=key,
                date=day,
                node=row.node,
                incarnation=row.incarnation,
                token=row.token,
                epoch=row.epoch,
                status=CLAIM_STATUSES[row.completed_at is not None],
                claimed_at=row.claimed_at,
                completed_at=row.completed_at,
            )
            for (day, key), row in self._rows.items()
            if day == date and (node is None or row.node == node)
        ]
        records.sort(key=lambda r: r.task_key)
        return tuple(records)

    def completions(self, after: float, limit: int) -> tuple[Completion, ...]:
        """Completions after ``after``, oldest first, at most ``limit``."""
        done = sorted(
            [
                ((row.completed_at, row.token, row.claimed_at), row.cost)
                for row in self._rows.values()
                if row.completed_at is not None and row.completed_at > after
            ],
            key=lambda item: item[0],
        )
        return tuple(
            Completion(token=t, claimed_at=c, completed_at=d, cost=cost)
            for (d, t, c), cost in done[:limit]
        )

    def prune(self, cutoff: float) -> int:
        """Delete completions finished before ``cutoff``; open claims stay."""
        old = [
            key
            for key, row in self._rows.items()
            if row.completed_at is not None and row.completed_at < cutoff
        ]
        for key in old:
            del self._rows[key]
        return len(old)

    def clear_open(self) -> int:
        return sum(self.release_all(incarnation) for incarnation in list(self._open))

    def _take_open(
        self, date: datetime.date, incarnation: int, keys: Iterable[str]
    ) -> list[ClaimKey]:
        mine = self._open.get(incarnation)
        if not mine:
            return []
        taken = [(date, key) for key in dict.fromkeys(keys) if (date, key) in mine]
        mine.difference_update(taken)
        if not mine:
            del self._open[incarnation]
        return taken


class LockTable:
    """Locks of one site, keyed by task key; whoever registers a lock last owns it."""

    def __init__(self) -> None:
        self._rows: dict[str, LockRecord] = {}

    def purge(self, now: float) -> None:
        """Forget expired locks (``expires_at <= now``): they no longer exist."""
        expired = [
            k for k, r in self._rows.items() if r.expires_at is not None and r.expires_at <= now
        ]
        for key in expired:
            del self._rows[key]

    def visible(self, now: float) -> tuple[LockRecord, ...]:
        self.purge(now)
        return tuple(sorted(self._rows.values(), key=lambda r: (r.created_at, r.task_key)))

    def replace(
        self, creator: str, specs: Sequence[LockSpec], clear_existing: bool, now: float
    ) -> bool:
        """Clear ``creator``'s locks if asked, then upsert ``specs``; True if anything changed.

        A lock that existed before the call keeps its ``created_at``, even if
        the clear deleted it first: clearing and re-registering one's own
        locks is a refresh, not a new lock.
        """
        self.purge(now)
        before = {key: row.created_at for key, row in self._rows.items()}
        cleared = self._delete(lambda row: row.created_by == creator) if clear_existing else 0
        for spec in specs:
            self._rows[spec.task_key] = LockRecord(
                task_key=spec.task_key,
                token=spec.token,
                patterns=tuple(spec.patterns),
                reason=spec.reason,
                created_by=creator,
                created_at=before.get(spec.task_key, now),
                expires_at=None if spec.expires_in is None else now + spec.expires_in,
            )
        return bool(cleared or specs)

    def clear(self, creator: str | None, now: float) -> int:
        self.purge(now)
        return self._delete(lambda row: creator is None or row.created_by == creator)

    def retoken(self, token_of: Callable[[str], int]) -> None:
        """Recompute every lock's token (after a site's constants changed)."""
        for key, row in self._rows.items():
            self._rows[key] = attrs.evolve(row, token=token_of(key))

    def _delete(self, doomed: Callable[[LockRecord], bool]) -> int:
        keys = [key for key, row in self._rows.items() if doomed(row)]
        for key in keys:
            del self._rows[key]
        return len(keys)
