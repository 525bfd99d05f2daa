"""Claims on SQLite: claim, complete, release, complete_in and release_in (the
same inside the caller's own transaction: base.TransactionalCompletion),
open_claims, read_audit, reap_claims.

SQLite cannot skip a locked claim row as PostgreSQL does: its lock is the
whole file, so while a user's write transaction holding a completion is open
``claim`` and ``reap_claims`` fail with ``LockTimeout`` and are retried.
``reap_claims`` releases the claims of leases ``rules.lease_expired`` judges
over, and deletes the node rows ``rules.purgeable`` allows.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sqlite3
from collections.abc import Callable, Sequence

from jobsync.backends import _checks as C
from jobsync.backends.base import AuditRecord, Reaped
from jobsync.backends.capabilities import Completion
from jobsync.backends.settle import HERE, ClaimOrder, ClaimVerb, Settlement, SettleVerbs
from jobsync.backends.sqlite import queries as Q
from jobsync.backends.sqlite import rows as R
from jobsync.backends.sqlite import schema
from jobsync.backends.sqlite.rows import Row
from jobsync.backends.sqlite.session import _Session, translate
from jobsync.core import rules
from jobsync.core.errors import BackendUnavailable, InvalidArgument


class _Claims(ClaimVerb, SettleVerbs, _Session):
    """Claims, completions and their audit rows."""

    def _claim(self, order: ClaimOrder) -> frozenset[str]:
        site, day = order.site, order.day.isoformat()
        name, incarnation = order.name, order.incarnation
        claimed: set[str] = set()
        with self._tx("claim") as conn:
            checked = C.claim_requests(order.requests, self._site(conn, site)[R.TOTAL])
            now = self._clock()
            rows = self._rows(conn, site, (r.token for r in checked))
            for r in checked:
                row = rows[r.token]
                if (row[R.OWNER], row[R.INC], row[R.EPOCH], row[R.DEADLINE]) != (
                    name, incarnation, r.epoch, None,
                ):  # fmt: skip
                    continue
                params = (site, day, r.task_key, name, incarnation, r.token, r.epoch, now)
                if conn.execute(Q.INSERT_CLAIM, params).rowcount == 1:
                    claimed.add(r.task_key)
                elif conn.execute(Q.OPEN_CLAIM_OF, (site, day, r.task_key, incarnation)).fetchone():
                    claimed.add(r.task_key)  # a retry whose first answer was lost
        return frozenset(claimed)

    def _settle(self, settlement: Settlement, inside: object = HERE) -> frozenset[str]:
        kind, site, keys = settlement.kind, settlement.site, list(settlement.keys)
        day, inc = settlement.day.isoformat(), settlement.incarnation
        query = Q.COMPLETE if kind == "complete" else Q.RELEASE

        def work(conn: sqlite3.Connection) -> frozenset[str]:
            now = self._clock()
            stamp: Row = (now, settlement.cost) if kind == "complete" else ()
            return _each(conn, query, keys, lambda k: (site, day, k, inc, *stamp))

        if inside is not HERE:
            return self._in_callers_tx(inside, kind, site, work)
        with self._tx(kind) as conn:
            self._site(conn, site)
            return work(conn)

    def _in_callers_tx(
        self, conn: object, verb: str, site: str,
        work: Callable[[sqlite3.Connection], frozenset[str]],
    ) -> frozenset[str]:  # fmt: skip
        """A completion or release inside the caller's open transaction: no commit,
        no rollback.

        The caller's transaction should hold the write lock already (``BEGIN
        IMMEDIATE``, or a write before this call).  A transaction that has read
        (the checks here read) but not written is a reader, and SQLite never
        waits to upgrade a reader to a writer (its busy handler is not called:
        waiting could deadlock): while another connection holds the write lock,
        or once one has written since the reader's snapshot, the update answers
        "locked" at once (LockTimeout).  Only a connection in the sqlite3
        module's legacy mode with no transaction open begins one with the update
        itself, and may wait: at most ``busy_timeout`` (the caller's own busy
        timeout, if shorter, is kept; a longer one is restored afterwards).
        """
        if not isinstance(conn, sqlite3.Connection):
            raise InvalidArgument(
                f"connection must be a sqlite3.Connection to {self.path!r}, got {conn!r}"
            )
        autocommit = conn.isolation_level is None or getattr(conn, "autocommit", None) is True
        if autocommit and not conn.in_transaction:  # the statement would commit on its own
            raise InvalidArgument(
                f"connection {conn!r} is in autocommit mode with no open transaction"
            )
        # Not under self._lock: the caller's connection may hold SQLite's write
        # lock while our coordination thread holds self._lock waiting for it
        # (BEGIN IMMEDIATE), and taking both here would deadlock for busy_timeout.
        if self._conn is None:
            raise BackendUnavailable(f"{self!r} is closed")
        self._count("round_trips", verb)
        try:
            files = {row[1]: row[2] for row in conn.execute("PRAGMA database_list")}
            if not _same_file(files.get("main") or "", self.path):
                raise InvalidArgument(
                    f"connection is to {files.get('main')!r}, not to {self.path!r}"
                )
            if conn.execute(Q.SELECT_SITE, (site,)).fetchone() is None:
                raise InvalidArgument(f"unknown site {site!r}: no worker of it has started yet")
            (theirs,) = conn.execute("PRAGMA busy_timeout").fetchone()
            shortened = theirs > self._busy * 1000
            if shortened:
                schema.set_busy_timeout(conn, self._busy)
            try:
                return work(conn)
            finally:
                if shortened:
                    with contextlib.suppress(sqlite3.Error):  # the first error propagates
                        schema.set_busy_timeout(conn, theirs / 1000)
        except sqlite3.Error as exc:
            raise translate(exc, self._busy, callers=True) from exc

    def open_claims(
        self, site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str]
    ) -> frozenset[str]:
        C.site_name(site)
        day = C.claim_date(date).isoformat()
        C.incarnation(incarnation)
        keys = json.dumps(list(dict.fromkeys(C.task_keys(task_keys))))
        with self._tx("open_claims", write=False) as conn:  # a read: WAL never waits on a writer
            self._site(conn, site)
            rows = conn.execute(Q.OPEN_CLAIMS, (site, day, incarnation, keys)).fetchall()
        return frozenset(row[0] for row in rows)

    def read_audit(
        self, site: str, date: datetime.date, name: str | None = None
    ) -> tuple[AuditRecord, ...]:
        C.site_name(site)
        day = C.claim_date(date).isoformat()
        C.optional_node_name(name)
        with self._tx("read_audit", write=False) as conn:
            self._site(conn, site)
            return tuple(R.audit(row) for row in conn.execute(Q.SELECT_AUDIT, (site, day, name)))

    def read_completions(self, site: str, after: float, limit: int) -> tuple[Completion, ...]:
        C.site_name(site)
        after, limit = C.completion_window(after, limit)
        with self._tx("read_completions", write=False) as conn:
            self._site(conn, site)
            found = conn.execute(Q.SELECT_COMPLETIONS, (site, after, limit))
            return tuple(
                Completion(token=t, claimed_at=c, completed_at=d, cost=cost)
                for t, c, d, cost in found
            )

    def reap_claims(self, site: str) -> Reaped:
        """The whole file is locked for the transaction: nothing is ever skipped."""
        C.site_name(site)
        with self._tx("reap_claims") as conn:
            self._site(conn, site)
            now, nodes = self._clock(), self._nodes(conn, site)
            claimers = conn.execute(Q.OPEN_CLAIMERS, (site,)).fetchall()
            released = sum(
                conn.execute(Q.RELEASE_CLAIMS, (site, incarnation)).rowcount
                for name, incarnation in claimers
                if rules.lease_expired(nodes.get(name), incarnation, now)
            )
            if any(not rules.is_live(n, now) for n in nodes.values()):
                named = {name for (name,) in conn.execute(Q.NAMED_BY_TOKENS, (site,))}
                purge = [
                    (site, n.name, n.incarnation)
                    for n in nodes.values()
                    if rules.purgeable(n, now, named_by_tokens=n.name in named)
                ]
                conn.executemany(Q.PURGE_NODE, purge)  # no bump: a dead row counts for no plan
            return Reaped(released=released, skipped=0)


def _each(
    conn: sqlite3.Connection, sql: str, keys: list[str], params: Callable[[str], Row]
) -> frozenset[str]:
    return frozenset(k for k in keys if conn.execute(sql, params(k)).rowcount == 1)


def _same_file(a: str, b: str) -> bool:
    try:
        return bool(a) and os.path.samefile(a, b)
    except OSError:
        return False
