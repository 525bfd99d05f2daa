"""Claims on PostgreSQL: claim, complete, release, complete_in, release_in,
open_claims, read_audit, reap_claims.

Each is one autocommit statement (one round trip).  ``complete_in`` and
``release_in`` (base.py's ``TransactionalCompletion``) run the same statements
as ``complete`` and ``release`` on the caller's own connection, inside its
open transaction, leaving that connection's settings alone.  ``reap_claims``
judges expiry as ``rules.lease_expired`` does and purges dead rows as
``rules.purgeable`` does (``settle_queries.REAP``).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import psycopg

from jobsync.backends import _checks as checks
from jobsync.backends.base import DEAD_NODE_RETENTION, AuditRecord, Reaped
from jobsync.backends.capabilities import Completion
from jobsync.backends.postgres import rows
from jobsync.backends.postgres.handle import Queries, Row, _Handle, translate, unknown_site
from jobsync.backends.postgres.session import Session
from jobsync.backends.settle import HERE, ClaimOrder, ClaimVerb, Settlement, SettleVerbs
from jobsync.core.errors import (
    InvalidArgument,
)


class _Claims(ClaimVerb, SettleVerbs, _Handle):
    """An incarnation's claims on tasks, and their completion."""

    def _claim(self, order: ClaimOrder) -> frozenset[str]:
        site = order.site
        # Everything but the upper token bound, which the statement checks.
        wanted = checks.claim_requests(order.requests, 2**31)
        params = {
            "site": site,
            "date": order.day,
            "name": order.name,
            "inc": order.incarnation,
            "keys": [r.task_key for r in wanted],
            "tokens": [r.token for r in wanted],
            "epochs": [r.epoch for r in wanted],
        }

        def body(s: Session, q: Queries) -> frozenset[str]:
            row = s.execute(q["CLAIM"], params, prepare=True).fetchone()
            assert row is not None
            total, bad, claimed = row
            if total is None:
                raise unknown_site(site)
            if bad:
                checks.claim_requests(wanted, total)  # raises, naming the token
            return frozenset(claimed)

        return self._call("claim", site, body)

    def _settle(self, settlement: Settlement, inside: object = HERE) -> frozenset[str]:
        # A claim row locked by an open transaction makes this wait, at most
        # the lock timeout, then raise LockTimeout.
        query = settlement.kind.upper()
        params = {
            "site": settlement.site,
            "date": settlement.day,
            "inc": settlement.incarnation,
            "keys": list(settlement.keys),
        }
        if settlement.kind == "complete":
            params["cost"] = settlement.cost
        if inside is HERE:
            return self._run(settlement.kind, query, settlement.site, params)
        return self._run_on(inside, settlement.kind + "_in", query, settlement.site, params)

    def _run(self, verb: str, query: str, site: str, params: dict[str, Any]) -> frozenset[str]:
        """One prepared statement on jobsync's own connection (one round trip)."""

        def body(s: Session, q: Queries) -> frozenset[str]:
            return self._keys(site, s.execute(q[query], params, prepare=True).fetchone())

        return self._call(verb, site, body)

    def _run_on(
        self, conn: object, verb: str, query: str, site: str, params: dict[str, Any]
    ) -> frozenset[str]:
        """One statement inside the caller's own transaction; the caller commits.

        The connection is the user's: its settings (``lock_timeout`` among
        them) are left as the user made them.
        """
        if not isinstance(conn, psycopg.Connection):
            raise InvalidArgument(
                "connection must be a psycopg (3) Connection to the same database, "
                f"got {type(conn).__name__}"
            )
        if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            # The update would commit on its own: not exactly-once with the side effect.
            raise InvalidArgument(
                f"connection is in autocommit mode with no open transaction; {verb} "
                "inside `with connection.transaction():` or with autocommit off"
            )
        session = self._session
        session.count(verb)
        if not self._q:
            with session.lock:
                try:
                    session.connection()
                except psycopg.Error as exc:
                    raise translate(exc) from exc
        session.count("round_trips")
        try:
            row = conn.execute(self._q[query], params).fetchone()
        except psycopg.Error as exc:
            raise translate(exc, verb) from exc
        return self._keys(site, row)

    @staticmethod
    def _keys(site: str, row: Row | None) -> frozenset[str]:
        assert row is not None
        if not row[0]:
            raise unknown_site(site)
        return frozenset(row[1])

    def open_claims(
        self, site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str]
    ) -> frozenset[str]:
        site, params = _claim_keys(site, date, incarnation, task_keys)

        def body(s: Session, q: Queries) -> frozenset[str]:
            return self._keys(site, s.execute(q["OPEN_CLAIMS"], params).fetchone())

        return self._call("open_claims", site, body)

    def read_audit(
        self, site: str, date: datetime.date, name: str | None = None
    ) -> tuple[AuditRecord, ...]:
        site, day = checks.site_name(site), checks.claim_date(date)
        node = checks.optional_node_name(name)

        def body(s: Session, q: Queries) -> tuple[AuditRecord, ...]:
            params = {"site": site, "date": day, "name": node}
            found = s.execute(q["READ_AUDIT"], params).fetchall()
            if not found:
                raise unknown_site(site)
            records = [rows.record(AuditRecord, r[1:10]) for r in found if r[1] is not None]
            records.sort(key=lambda r: r.task_key)
            return tuple(records)

        return self._call("read_audit", site, body)

    def read_completions(self, site: str, after: float, limit: int) -> tuple[Completion, ...]:
        site = checks.site_name(site)
        after, limit = checks.completion_window(after, limit)

        def body(s: Session, q: Queries) -> tuple[Completion, ...]:
            params = {"site": site, "after": after, "limit": limit}
            found = s.execute(q["READ_COMPLETIONS"], params).fetchall()
            if not found:
                raise unknown_site(site)
            # to_timestamp may round ``after`` down a microsecond: drop the row it read.
            return tuple(
                Completion(token=r[1], claimed_at=r[2], completed_at=r[3], cost=r[4])
                for r in found
                if r[1] is not None and r[3] > after
            )

        return self._call("read_completions", site, body)

    def reap_claims(self, site: str) -> Reaped:
        site = checks.site_name(site)

        params = {"site": site, "retention": DEAD_NODE_RETENTION}

        # One autocommit statement, without the site lock (see settle_queries.REAP).
        # Its last column counts the ended incarnations' claims in the statement's
        # snapshot, those it deleted included: the rest were skipped as locked.
        def body(s: Session, q: Queries) -> Reaped:
            row = s.execute(q["REAP"], params).fetchone()
            assert row is not None
            if not row[0]:
                raise unknown_site(site)
            released = int(row[1])
            return Reaped(released=released, skipped=max(0, int(row[3]) - released))

        return self._call("reap_claims", site, body)


def _claim_keys(
    site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    """The checked site, and the parameters of a statement on an incarnation's claims."""
    site, day = checks.site_name(site), checks.claim_date(date)
    inc, keys = checks.incarnation(incarnation), list(checks.task_keys(task_keys))
    return site, {"site": site, "date": day, "inc": inc, "keys": keys}
