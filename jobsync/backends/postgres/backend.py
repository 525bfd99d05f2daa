"""The PostgreSQL backend: the production implementation of base.py's ``Backend``.

One ``PostgresBackend`` is one client's handle: one connection (see
``_pg_conn``: shared by the coordination thread and the user's thread under a
statement lock, LISTEN without holding it, reconnect with backoff), the SQL of
``_pg_sql``, the schema and migrations of ``_pg_schema``, and the row and
parameter conversions of ``_pg_values``.  The contract is base.py's; this
module says only how PostgreSQL keeps it.  psycopg is imported here and in
those helpers only; nothing imports them when ``jobsync`` is imported.

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
``_pg_sql``): the row holds the incarnation and is dead, or holds a newer
incarnation whose fence is over, or there is no row.  A holder whose lease
ran out after the marking statement counts as held: the plan fails with
ConflictError and the leader plans again.  So the two can never both
succeed.  ``tests/backends/test_postgres.py`` hammers exactly this with
threads released by a barrier.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from jobsync.backends import _checks as checks
from jobsync.backends.base import (
    DEAD_NODE_RETENTION,
    NODE_ACTIVE,
    NODE_LEAVING,
    AuditRecord,
    ClaimRequest,
    ClusterView,
    DirectAssign,
    Heartbeat,
    HeartbeatOutcome,
    HistoryEntry,
    HistoryRecord,
    LockRecord,
    LockSpec,
    NodeRecord,
    OwnedTokens,
    PlanCommit,
    Registration,
    Revoke,
    SiteInfo,
)
from jobsync.backends.postgres import queries as _pg_sql
from jobsync.backends.postgres import rows as V
from jobsync.backends.postgres import schema as _pg_schema
from jobsync.backends.postgres.session import LOCK_TIMEOUT_MS, Conn, Session, conninfo
from jobsync.core.errors import (
    BackendError,
    BackendUnavailable,
    ConfigMismatch,
    ConflictError,
    InvalidArgument,
    JobSyncError,
    LockTimeout,
    NodeNameConflict,
    NotLeader,
    SchemaError,
)
from jobsync.core.hashing import token_for, validate_hash_function, validate_total_tokens

_T = TypeVar("_T")
Row = tuple[Any, ...]
Queries = dict[str, bytes]
_RUNNING = (NODE_ACTIVE, NODE_LEAVING)
_SCHEMA_ERRORS = (
    pg_errors.UndefinedTable,
    pg_errors.UndefinedColumn,
    pg_errors.UndefinedFunction,
    pg_errors.InvalidSchemaName,
)


def migrate(
    dsn: str, *, schema: str = "public", prefix: str = "sync_", connect_timeout: float = 5
) -> Mapping[str, int]:
    """Apply the schema migrations for (schema, prefix); safe to run concurrently.

    Returns ``{"from": version_before, "to": version_after}``.  Used by
    ``python -m jobsync migrate``; handles opened with ``migrate=True`` do the
    same on connect.
    """
    _pg_schema.validate_schema_name(schema)
    _pg_schema.validate_prefix(prefix)
    info = _conninfo(dsn, "jobsync-migrate", checks.seconds("connect_timeout", connect_timeout))
    try:
        with psycopg.connect(info, autocommit=True) as conn:
            return _pg_schema.apply_migrations(conn, schema, prefix)
    except psycopg.Error as exc:
        raise _translate(exc) from exc


def _translate(exc: psycopg.Error, verb: str | None = None) -> JobSyncError:
    if isinstance(exc, pg_errors.LockNotAvailable):  # 55P03, before its OperationalError base
        return LockTimeout(
            f"{verb or 'a jobsync statement'}: a row it needs is locked by another transaction "
            "(perhaps the caller's own, opened for complete_in(connection, ...) or "
            f"release_in(connection, ...)) past the lock timeout; nothing was written: {exc}"
        )
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return BackendUnavailable(f"PostgreSQL unavailable: {exc}")
    if isinstance(exc, _SCHEMA_ERRORS):
        return SchemaError(f"jobsync schema missing or damaged: {exc}")
    return BackendError(f"PostgreSQL error {exc.sqlstate or ''}: {exc}".replace("  ", " "))


def _conninfo(dsn: str, application_name: str, connect_timeout: float) -> str:
    """``_pg_conn.conninfo``; a DSN libpq cannot parse is a bad argument."""
    try:
        return conninfo(dsn, application_name, connect_timeout)
    except psycopg.ProgrammingError as exc:
        raise InvalidArgument(f"not a valid PostgreSQL connection string: {exc}") from exc


def _lock_timeout_ms(value: object) -> int:
    """``lock_timeout`` in seconds as PostgreSQL's whole milliseconds (>= 1; 0 would
    mean "wait forever", which is exactly what the setting exists to prevent)."""
    seconds = checks.seconds("lock_timeout", value)
    ms = round(seconds * 1000)
    if not 1 <= ms <= 2**31 - 1:
        raise InvalidArgument(
            f"lock_timeout must be between 0.001 and {(2**31 - 1) / 1000:g} seconds, got {value!r}"
        )
    return ms


def _unknown_site(site: str) -> InvalidArgument:
    return InvalidArgument(f"unknown site {site!r}: ensure_site creates it")


class PostgresBackend:
    """One client's handle on a PostgreSQL database: the ``Backend`` protocol."""

    def __init__(
        self,
        dsn: str,
        *,
        client: str = "",
        schema: str = "public",
        prefix: str = "sync_",
        connect_timeout: float = 5,
        application_name: str | None = None,
        migrate: bool = True,
        lock_timeout: float = LOCK_TIMEOUT_MS / 1000,
    ) -> None:
        """``lock_timeout``: seconds any statement of this handle may wait on a row
        lock before the verb raises LockTimeout (PostgreSQL's ``lock_timeout``,
        whole milliseconds, at least one)."""
        if not isinstance(dsn, str):
            raise InvalidArgument(f"dsn must be a string, got {dsn!r}")
        if not isinstance(client, str):
            raise InvalidArgument(f"client must be a string, got {client!r}")
        self.client = client
        self.schema = _pg_schema.validate_schema_name(schema)
        self.prefix = _pg_schema.validate_prefix(prefix)
        timeout = checks.seconds("connect_timeout", connect_timeout)
        self.lock_timeout_ms = _lock_timeout_ms(lock_timeout)
        if application_name is not None and not isinstance(application_name, str):
            raise InvalidArgument(f"application_name must be a string, got {application_name!r}")
        app = application_name if application_name is not None else (client or "jobsync")
        self._migrate = bool(migrate)
        self._schema_ready = False
        self._q: Queries = {}
        self._channels: dict[str, str] = {}
        self._session = Session(
            _conninfo(dsn, app[:63], timeout), self._on_connect, self.lock_timeout_ms
        )
        with self._session.lock:
            try:
                self._session.connection()
            except psycopg.Error as exc:
                raise _translate(exc) from exc

    def __repr__(self) -> str:
        return f"<PostgresBackend client={self.client!r} schema={self.schema!r}>"

    def __enter__(self) -> PostgresBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------
    def _on_connect(self, session: Session, conn: Conn) -> None:
        def count() -> None:
            session.count("round_trips")

        if not self._schema_ready:
            if self._migrate:
                _pg_schema.apply_migrations(conn, self.schema, self.prefix, count)
            else:
                _pg_schema.check_version(conn, self.schema, self.prefix, count)
            self._q = _pg_sql.render(conn, self.schema, self.prefix)
            self._schema_ready = True

    def _channel(self, site: str) -> str:
        channel = self._channels.get(site)
        if channel is None:
            channel = self._channels[site] = _pg_schema.channel_name(self.schema, self.prefix, site)
        return channel

    def _call(
        self,
        verb: str,
        site: str | None,
        body: Callable[[Session, Queries], _T],
        *,
        count: bool = True,
    ) -> _T:
        """Run ``body`` under the statement lock; driver errors become JobSyncErrors.

        ``verb`` is counted in statistics unless ``count`` is False (the later
        steps of one verb), and named in errors.
        """
        session = self._session
        if count:
            session.count(verb)
        with session.lock:
            try:
                session.connection()
                if site is not None:
                    session.listen(self._channel(site))
                return body(session, self._q)
            except psycopg.Error as exc:
                conn = session._conn
                if conn is not None and (conn.closed or conn.broken):
                    session.drop()
                raise _translate(exc, verb) from exc

    def _lock_site(self, s: Session, q: Queries, site: str) -> Row:
        """Lock the site row (first, always); (total, generation, counter, basis)."""
        row = s.execute(q["LOCK_SITE"], {"site": site}).fetchone()
        if row is None:
            raise _unknown_site(site)
        return row

    def _bump(self, s: Session, q: Queries, site: str, why: str) -> int:
        params = {"site": site, "channel": self._channel(site), "payload": why}
        row = s.execute(q["BUMP"], params).fetchone()
        assert row is not None
        return int(row[0])

    def _check_leader(self, s: Session, q: Queries, site: str, name: str, inc: int) -> None:
        row = s.execute(q["LEADER"], {"site": site}).fetchone()
        if row is None or (row[0], row[1]) != (name, inc):
            oldest = "no live node" if row is None else f"{row[0]!r} ({row[1]})"
            raise NotLeader(
                f"{name!r} incarnation {inc} is not the oldest live node of site "
                f"{site!r}; the leader is {oldest}"
            )

    # -- sites ----------------------------------------------------------------
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

    # -- membership -----------------------------------------------------------
    def register(
        self,
        site: str,
        name: str,
        lease_timeout: float,
        *,
        process: str = "",
        known: int | None = None,
    ) -> Registration:
        site, name = checks.site_name(site), checks.node_name(name)
        lease = checks.seconds("lease_timeout", lease_timeout)
        who, last = checks.process_id(process), checks.known_incarnation(known)

        def body(s: Session, q: Queries) -> Registration:
            # A refusal raises inside the transaction, which rolls back the
            # incarnation counter's bump too: nothing is written.
            with s.transaction():
                row = s.execute(q["NEXT_INCARNATION"], {"site": site}).fetchone()
                if row is None:
                    raise _unknown_site(site)
                inc, counter = row
                params = {
                    "site": site,
                    "name": name,
                    "lease": lease,
                    "inc": inc,
                    "process": who,
                    "known": last,
                    "channel": self._channel(site),
                }
                node = s.execute(q["UPSERT_NODE"], params).fetchone()
                assert node is not None
                refused, held, registered_at, fence = node[:4]
                if refused:
                    raise NodeNameConflict(
                        f"node name {name!r} of site {site!r} is held by incarnation {held}, "
                        f"registered by another process after this process's incarnation "
                        f"{last}; registration refused, nothing written"
                    )
            return Registration(
                incarnation=inc,
                registered_at=registered_at,
                change_counter=counter,
                fence_until=fence,
            )

        return self._call("register", site, body)

    def heartbeat(self, site: str, name: str, incarnation: int) -> Heartbeat:
        site, name, inc = self._member(site, name, incarnation)
        params = {"site": site, "name": name, "inc": inc}

        def body(s: Session, q: Queries) -> Heartbeat:
            row = s.execute(q["HEARTBEAT"], params, prepare=True).fetchone()
            assert row is not None
            now, counter, basis, earliest, held, state, renewed, live_others = row
            if counter is None:
                raise _unknown_site(site)
            if held is not None and held > inc:
                outcome = HeartbeatOutcome.SUPERSEDED
            elif held == inc and state in _RUNNING and renewed:
                outcome = HeartbeatOutcome.RENEWED
            else:
                outcome = HeartbeatOutcome.EXPIRED
            return Heartbeat(
                outcome=outcome,
                now=now,
                change_counter=counter,
                plan_basis=basis,
                # summed here, as NodeRecord.lease_expires sums it
                earliest_other_expiry=None if earliest is None else earliest[0] + earliest[1],
                live_others=live_others,
            )

        return self._call("heartbeat", site, body)

    def mark_leaving(self, site: str, name: str, incarnation: int) -> bool:
        site, name, inc = self._member(site, name, incarnation)
        params = {"site": site, "name": name, "inc": inc}

        def body(s: Session, q: Queries) -> bool:
            with s.transaction():
                self._lock_site(s, q, site)
                row = s.execute(q["LEAVING_STATE"], params).fetchone()
                if row is None:
                    return False
                if row[0] != NODE_LEAVING:
                    s.execute(q["SET_LEAVING"], params)
                    self._bump(s, q, site, "leave")
            return True

        return self._call("mark_leaving", site, body)

    def deregister(self, site: str, name: str, incarnation: int) -> bool:
        site, name, inc = self._member(site, name, incarnation)
        params = {"site": site, "name": name, "inc": inc}

        def body(s: Session, q: Queries) -> bool:
            with s.transaction():
                self._lock_site(s, q, site)
                row = s.execute(q["DEREGISTER"], params).fetchone()
                assert row is not None
                held, changed = row
                if not (held and changed):  # a repeat (its first reply lost) writes nothing
                    return False
                self._bump(s, q, site, "deregister")
            return True

        return self._call("deregister", site, body)

    def read_nodes(self, site: str) -> tuple[float, tuple[NodeRecord, ...]]:
        site = checks.site_name(site)

        def body(s: Session, q: Queries) -> tuple[float, tuple[NodeRecord, ...]]:
            rows = s.execute(q["READ_NODES"], {"site": site}).fetchall()
            if not rows[0][1]:
                raise _unknown_site(site)
            nodes = [V.node(r[2:]) for r in rows if r[2] is not None]
            nodes.sort(key=lambda n: (n.registered_at, n.name))
            return rows[0][0], tuple(nodes)

        return self._call("read_nodes", site, body)

    # -- planning -------------------------------------------------------------
    def read_cluster(self, site: str) -> ClusterView:
        site = checks.site_name(site)

        def body(s: Session, q: Queries) -> ClusterView:
            row = s.execute(q["READ_CLUSTER"], {"site": site}, binary=True).fetchone()
            if row is None:
                raise _unknown_site(site)
            return V.cluster_view(row)

        return self._call("read_cluster", site, body)

    def commit_plan(self, site: str, commit: PlanCommit) -> int:
        site, commit = checks.site_name(site), V.plan_shape(commit)
        holders = sorted(
            {a.expected_incarnation for a in commit.assigns if a.expected_incarnation is not None}
        )

        def body(s: Session, q: Queries) -> int:
            if holders:
                # Its own statement, before the transaction (see the module
                # docstring): marks dead the holders whose lease has run out.
                s.execute(q["MARK_EXPIRED_HOLDERS"], {"site": site, "incs": holders})
            with s.transaction():
                total, generation, counter, _ = self._lock_site(s, q, site)
                V.plan_tokens(commit, total)
                if commit.basis > counter:
                    raise InvalidArgument(
                        f"plan basis {commit.basis} is above site {site!r}'s change counter "
                        f"{counter}"
                    )
                if commit.expected_generation != generation:
                    raise ConflictError(
                        f"site {site!r} is at generation {generation}; the plan expected "
                        f"{commit.expected_generation}"
                    )
                self._check_leader(s, q, site, commit.leader, commit.leader_incarnation)
                channel = {"channel": self._channel(site), "payload": "plan"}
                if not (commit.assigns or commit.revokes):
                    params = {"site": site, "basis": commit.basis, **channel}
                    s.execute(q["RAISE_BASIS"], params)
                    return int(generation)
                if commit.assigns:
                    self._assign(s, q, site, commit, total)
                if commit.revokes:
                    self._revoke(s, q, site, commit)
                row = s.execute(q["FINISH_PLAN"], self._finish_params(site, commit, channel))
                result = row.fetchone()
                assert result is not None
                return int(result[0])

        return self._call("commit_plan", site, body)

    def _assign(self, s: Session, q: Queries, site: str, commit: PlanCommit, total: int) -> None:
        assigns = commit.assigns
        samples: dict[int, int] = {}  # expected incarnation -> one of its tokens
        for a in assigns:
            if a.expected_incarnation is not None:
                samples.setdefault(a.expected_incarnation, a.token)
        p: dict[str, Any] = {
            "site": site,
            "incs": sorted(samples),
            "samples": [samples[i] for i in sorted(samples)],
        }
        if samples:
            held = s.execute(q["HELD_HOLDERS"], p).fetchone()
            if held is not None:
                raise ConflictError(
                    f"incarnation {held[1]} of {held[0]!r} still holds its lease (or it ran "
                    "out only after this plan began); a live owner must be revoked, not "
                    "reassigned"
                )
        if len(assigns) * 4 >= total:
            query, params = q["ASSIGN"], V.dense_assigns(site, assigns, total)
        else:
            query, params = q["ASSIGN_FEW"], V.compact_assigns(site, assigns)
        if s.execute(query, params).rowcount != len(assigns):
            self._row_conflict(s, q, site, commit)
        if samples:
            s.execute(q["BURY"], p)

    def _revoke(self, s: Session, q: Queries, site: str, commit: PlanCommit) -> None:
        revokes = commit.revokes
        params = {
            "site": site,
            "ack": commit.ack_timeout,
            "tokens": V.csv([r.token for r in revokes]),
            "exp_incs": V.csv([r.expected_incarnation for r in revokes]),
            "exp_epochs": V.csv([r.expected_epoch for r in revokes]),
            "dests": [r.destination for r in revokes],
        }
        if s.execute(q["REVOKE"], params).rowcount != len(revokes):
            self._row_conflict(s, q, site, commit)

    def _row_conflict(self, s: Session, q: Queries, site: str, commit: PlanCommit) -> None:
        writes: list[DirectAssign | Revoke] = [*commit.assigns, *commit.revokes]
        params = {"site": site, "tokens": [w.token for w in writes]}
        rows = {r[0]: r for r in s.execute(q["TOKEN_ROWS"], params).fetchall()}
        for w in writes:
            _, inc, epoch = rows.get(w.token, (w.token, None, None))
            if (inc, epoch) != (w.expected_incarnation, w.expected_epoch):
                raise ConflictError(
                    f"token {w.token} holds incarnation {inc} at epoch {epoch}; the plan "
                    f"expected {w.expected_incarnation} at {w.expected_epoch}"
                )
        raise ConflictError(f"site {site!r}: a token row changed under the plan")

    @staticmethod
    def _finish_params(site: str, commit: PlanCommit, channel: dict[str, str]) -> dict[str, Any]:
        h = commit.history or HistoryEntry(
            trigger="", nodes_before=(), nodes_after=(), moved=0, unowned=0, duration_ms=0.0
        )
        return {
            "site": site,
            "basis": commit.basis,
            "leader": commit.leader,
            "history": commit.history is not None,
            "trigger": h.trigger,
            "before": list(h.nodes_before),
            "after": list(h.nodes_after),
            "moved": h.moved,
            "unowned": h.unowned,
            "duration": float(h.duration_ms),
            **channel,
        }

    def read_owned(self, site: str, name: str, incarnation: int) -> OwnedTokens:
        site, name, inc = self._member(site, name, incarnation)
        params = {"site": site, "name": name, "inc": inc}

        def body(s: Session, q: Queries) -> OwnedTokens:
            row = s.execute(q["READ_OWNED"], params, prepare=True).fetchone()
            if row is None:
                raise _unknown_site(site)
            now, counter, basis, tokens, epochs, pending, incoming = row
            return OwnedTokens(
                now=now,
                change_counter=counter,
                plan_basis=basis,
                tokens=tuple(tokens or ()),
                epochs=tuple(epochs or ()),
                pending=frozenset(pending or ()),
                incoming=incoming,
            )

        return self._call("read_owned", site, body)

    # -- hand-off -------------------------------------------------------------
    def ack_releases(
        self, site: str, name: str, incarnation: int, tokens: Sequence[tuple[int, int]]
    ) -> frozenset[int]:
        site, name, inc = self._member(site, name, incarnation)

        def body(s: Session, q: Queries) -> frozenset[int]:
            with s.transaction():
                total = self._lock_site(s, q, site)[0]
                pairs = checks.token_epochs(tokens, total)
                if not pairs:
                    return frozenset()
                params = {
                    "site": site,
                    "name": name,
                    "inc": inc,
                    "tokens": [t for t, _ in pairs],
                    "epochs": [e for _, e in pairs],
                }
                done = frozenset(r[0] for r in s.execute(q["ACK"], params).fetchall())
                if done:
                    self._bump(s, q, site, "ack")
            return done

        return self._call("ack_releases", site, body)

    def evict_overdue(self, site: str, leader: str, leader_incarnation: int) -> tuple[str, ...]:
        site, leader, inc = self._member(site, leader, leader_incarnation)

        def body(s: Session, q: Queries) -> tuple[str, ...]:
            with s.transaction():
                self._lock_site(s, q, site)
                self._check_leader(s, q, site, leader, inc)
                # The eviction and the bump are one statement, the last before
                # COMMIT: the evicted nodes' rows stay locked no longer.
                params = {"site": site, "channel": self._channel(site), "payload": "evict"}
                row = s.execute(q["EVICT"], params).fetchone()
                assert row is not None
            return tuple(sorted(set(row[0] or ())))

        return self._call("evict_overdue", site, body)

    # -- claims and completion ------------------------------------------------
    def claim(
        self,
        site: str,
        date: datetime.date,
        name: str,
        incarnation: int,
        requests: Sequence[ClaimRequest],
    ) -> frozenset[str]:
        site, name, inc = self._member(site, name, incarnation)
        day = checks.claim_date(date)
        # Everything but the upper token bound, which the statement checks.
        wanted = checks.claim_requests(requests, 2**31)
        params = {
            "site": site,
            "date": day,
            "name": name,
            "inc": inc,
            "keys": [r.task_key for r in wanted],
            "tokens": [r.token for r in wanted],
            "epochs": [r.epoch for r in wanted],
        }

        def body(s: Session, q: Queries) -> frozenset[str]:
            row = s.execute(q["CLAIM"], params, prepare=True).fetchone()
            assert row is not None
            total, bad, claimed = row
            if total is None:
                raise _unknown_site(site)
            if bad:
                checks.claim_requests(wanted, total)  # raises, naming the token
            return frozenset(claimed)

        return self._call("claim", site, body)

    def complete(
        self, site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str]
    ) -> frozenset[str]:
        site, params = _claim_keys(site, date, incarnation, task_keys)

        def body(s: Session, q: Queries) -> frozenset[str]:
            return self._keys(site, s.execute(q["COMPLETE"], params, prepare=True).fetchone())

        return self._call("complete", site, body)

    def complete_in(
        self,
        connection: object,
        site: str,
        date: datetime.date,
        incarnation: int,
        task_keys: Sequence[str],
    ) -> frozenset[str]:
        site, params = _claim_keys(site, date, incarnation, task_keys)
        return self._run_on(connection, "complete_in", "COMPLETE", site, params)

    def release_in(
        self,
        connection: object,
        site: str,
        date: datetime.date,
        incarnation: int,
        task_keys: Sequence[str],
    ) -> frozenset[str]:
        site, params = _claim_keys(site, date, incarnation, task_keys)
        return self._run_on(connection, "release_in", "RELEASE", site, params)

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
                    raise _translate(exc) from exc
        session.count("round_trips")
        try:
            row = conn.execute(self._q[query], params).fetchone()
        except psycopg.Error as exc:
            raise _translate(exc, verb) from exc
        return self._keys(site, row)

    @staticmethod
    def _keys(site: str, row: Row | None) -> frozenset[str]:
        assert row is not None
        if not row[0]:
            raise _unknown_site(site)
        return frozenset(row[1])

    def release(
        self, site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str]
    ) -> frozenset[str]:
        site, params = _claim_keys(site, date, incarnation, task_keys)

        # A claim row locked by an open transaction makes this wait, at most
        # the lock timeout, then raise LockTimeout.
        def body(s: Session, q: Queries) -> frozenset[str]:
            return self._keys(site, s.execute(q["RELEASE"], params, prepare=True).fetchone())

        return self._call("release", site, body)

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
            rows = s.execute(q["READ_AUDIT"], {"site": site, "date": day, "name": node})
            found = rows.fetchall()
            if not found:
                raise _unknown_site(site)
            records = [
                AuditRecord(
                    task_key=r[1],
                    date=r[2],
                    node=r[3],
                    incarnation=r[4],
                    token=r[5],
                    epoch=r[6],
                    status=r[7],
                    claimed_at=r[8],
                    completed_at=r[9],
                )
                for r in found
                if r[1] is not None
            ]
            records.sort(key=lambda r: r.task_key)
            return tuple(records)

        return self._call("read_audit", site, body)

    def reap_claims(self, site: str) -> int:
        site = checks.site_name(site)

        params = {"site": site, "retention": DEAD_NODE_RETENTION}

        # One autocommit statement, without the site lock (see _pg_sql.REAP).
        def body(s: Session, q: Queries) -> int:
            row = s.execute(q["REAP"], params).fetchone()
            assert row is not None
            if not row[0]:
                raise _unknown_site(site)
            return int(row[1])

        return self._call("reap_claims", site, body)

    # -- locks ----------------------------------------------------------------
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
                raise _unknown_site(site)
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

    # -- history and maintenance ------------------------------------------------
    def read_history(self, site: str, limit: int = 50) -> tuple[HistoryRecord, ...]:
        site, count = checks.site_name(site), checks.integer("limit", limit, minimum=1)

        def body(s: Session, q: Queries) -> tuple[HistoryRecord, ...]:
            rows = s.execute(q["READ_HISTORY"], {"site": site, "limit": count}).fetchall()
            if not rows:
                raise _unknown_site(site)
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
                raise _unknown_site(site)
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

    # -- reaction -------------------------------------------------------------
    def wait_for_change(self, site: str, timeout: float) -> bool:
        site = checks.site_name(site)
        wait = checks.seconds("timeout", timeout, allow_zero=True)
        channel = self._channel(site)

        def touch(s: Session, q: Queries) -> None:
            if not s.listening(channel):  # first touch: the site must exist
                if s.execute(q["SITE_EXISTS"], {"site": site}).fetchone() is None:
                    raise _unknown_site(site)
                s.listen(channel)
            s.flush()

        self._call("wait_for_change", None, touch)
        try:
            return self._session.wait(channel, wait)
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def now(self) -> float:
        def body(s: Session, q: Queries) -> float:
            row = s.execute(q["NOW"]).fetchone()
            assert row is not None
            return float(row[0])

        return self._call("now", None, body)

    def statistics(self) -> Mapping[str, int]:
        return self._session.statistics()

    def close(self) -> None:
        self._session.close()

    def _member(self, site: str, name: str, incarnation: int) -> tuple[str, str, int]:
        return checks.site_name(site), checks.node_name(name), checks.incarnation(incarnation)


def _counter(query: str, params: dict[str, Any]) -> Callable[[Session, Queries], int]:
    """A body running one statement whose single value is a count."""

    def body(s: Session, q: Queries) -> int:
        row = s.execute(q[query], params).fetchone()
        assert row is not None
        return int(row[0])

    return body


def _claim_keys(
    site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    """The checked site, and the parameters of a statement on an incarnation's claims."""
    site, day = checks.site_name(site), checks.claim_date(date)
    inc, keys = checks.incarnation(incarnation), list(checks.task_keys(task_keys))
    return site, {"site": site, "date": day, "inc": inc, "keys": keys}
