"""The PostgreSQL backend: the production implementation of base.py's ``Backend``.

One ``PostgresBackend`` is one client's handle: one connection (see
``session``: shared by the coordination thread and the user's thread under a
statement lock, LISTEN without holding it, reconnect with backoff), the SQL of
``queries`` and ``plain_queries``, the schema and migrations of ``schema``,
and the row and parameter conversions of ``rows``.  The class is composed of
one part per group of verbs, each a mixin on the shared ``handle._Handle``
(``_call``, ``_lock_site``, ``_bump``): ``membership``, ``planning``
(with the hand-off), ``claims`` and ``operations`` (sites, locks, history,
pruning, waiting for a change).  The contract is base.py's; this module says
only how PostgreSQL keeps it.  psycopg is imported by this package only;
nothing imports it when ``jobsync`` is imported.

Round trips.  A heartbeat, a claim, a completion, a release and read_owned
are one statement each in autocommit (one round trip; the first LISTEN on a
site and a statement's first preparation ride in the same pipeline).  Verbs
that must judge and then write are one short READ COMMITTED transaction.

Clock.  Every time is the server's: ``clock_timestamp()`` (the statement clock)
wherever a lease or deadline is judged, so a judgement holds at the instant
the statement runs, not at its transaction's start.

Isolation.  READ COMMITTED throughout, with row locks.  Every transaction that
writes tokens or counters locks the site row first (``LOCK_SITE``), so plans,
acknowledgements, registrations and releases of one site are serialised and a
plan's per-row conditions are checked against rows no one else can change
before it commits.  Single-statement verbs (heartbeat, claim, completion,
release, open_claims, reap_claims) run in autocommit: one round trip each.

Lock waits.  The session's ``lock_timeout`` (500 ms unless configured) bounds
every wait on a row lock; SQLSTATE 55P03 becomes ``LockTimeout``, and the
verb's transaction, if any, rolls back.  A user's connection passed to
``complete_in``/``release_in`` is the user's: its settings are left alone.

The heartbeat-versus-reap race.  A reap (a DirectAssign away from an expired
incarnation, or reap_claims) must never act on a lease that a heartbeat of
that incarnation renews, and must never hold a lock on another node's row
beyond one statement (a leader paused inside a plan would stall that node's
heartbeats).  So judging a lease expired and marking its row dead is one
autocommit statement (``MARK_EXPIRED_HOLDERS`` before a plan's transaction,
the ``killed`` step of ``REAP``): an UPDATE of the holder's node row whose
WHERE clause holds the expiry.  A heartbeat is an UPDATE of that same row:

- if the heartbeat committed first, the marking UPDATE (after waiting for it,
  if it was in flight) re-evaluates its WHERE on the renewed row, with
  ``clock_timestamp()`` evaluated again (EvalPlanQual), and leaves it alone;
- if the marking committed first, the heartbeat (after waiting, likewise)
  finds the row dead and answers EXPIRED.

A lease judged expired stays expired (a heartbeat renews only a lease that
has not run out, and time only grows), so a row marked dead is rightly dead
for good.  The reap then judges, inside its transaction and without locking
any node row, only from facts no heartbeat can change (``@KEPT`` in
``queries``): the row holds the incarnation and is dead, or holds a newer
incarnation whose fence is over, or there is no row.  A holder whose lease
ran out after the marking statement counts as held: the plan fails with
ConflictError and the leader plans again.  So the two can never both
succeed.  ``tests/backends/test_postgres.py`` hammers exactly this with
threads released by a barrier.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg

from jobsync.backends import _checks as checks
from jobsync.backends.postgres import original
from jobsync.backends.postgres import schema as S
from jobsync.backends.postgres.claims import _Claims
from jobsync.backends.postgres.handle import connection_info, translate
from jobsync.backends.postgres.membership import _Membership
from jobsync.backends.postgres.operations import _Operations
from jobsync.backends.postgres.planning import _Planning


def migrate(
    dsn: str, *, schema: str = "public", prefix: str = "sync_", connect_timeout: float = 5
) -> Mapping[str, int]:
    """Apply the schema migrations for (schema, prefix); safe to run concurrently.

    Returns ``{"from": version_before, "to": version_after}``.  Used by
    ``python -m jobsync migrate``; handles opened with ``migrate=True`` do the
    same on connect.
    """
    S.validate_schema_name(schema)
    S.validate_prefix(prefix)
    timeout = checks.seconds("connect_timeout", connect_timeout)
    info = connection_info(dsn, "jobsync-migrate", timeout)
    try:
        with psycopg.connect(info, autocommit=True) as conn:
            return S.apply_migrations(conn, schema, prefix, upgrade=original.take_over)
    except psycopg.Error as exc:
        raise translate(exc) from exc


class PostgresBackend(_Membership, _Planning, _Claims, _Operations):
    """One client's handle on a PostgreSQL database: the ``Backend`` protocol, and
    ``TransactionalCompletion`` (``complete_in``, ``release_in``)."""

    def __enter__(self) -> PostgresBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
