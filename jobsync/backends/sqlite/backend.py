"""SQLite backend: processes on one host coordinate through one database file.

Every read-modify-write runs in ``BEGIN IMMEDIATE``.  SQLite admits one
writer at a time, so a transaction holding the write lock sees every row as
it will be at its commit, and its compare-and-set checks (generation,
leadership, per-row expectations, lease expiry) cannot be raced.  The clock
is read *after* the lock is taken: that reading is base.py's statement clock.
WAL mode lets reads (``read_cluster``, change polls) proceed while a writer
works.  Schema and SQL text live in ``_sqlite_schema``.

Lock waits (base.py, "Lock waits are bounded").  SQLite's lock is the whole
database: while any write transaction is open, every other writer waits,
every worker's heartbeat included.  ``busy_timeout`` is this backend's lock
timeout and bounds each call's waiting *in all*: for the handle (another
thread's call on it may itself be waiting for the database) and then for
SQLite's write lock.  Past it the call raises ``LockTimeout`` having written
nothing.  So a user's write transaction held open (``complete`` or
``release`` with ``connection=``) cannot hang a worker, but it does stall
every writer of the file while it lasts, and must be short.  SQLite cannot
skip a locked claim row as PostgreSQL does: ``claim``, ``reap_claims`` and
``deregister`` fail with ``LockTimeout`` instead, and are retried.

Two judgements of an incarnation, as base.py defines them: *live*
(``rules.is_live``: leadership, release destinations, ``mark_leaving``)
and *lease expired* (``rules.lease_expired``: DirectAssign,
``finish_expired_releases``, ``reap_claims``).  An evicted incarnation is
not live but holds its lease until it runs out.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import sqlite3
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from jobsync.backends import _checks as C
from jobsync.backends import _sqlite_schema as S
from jobsync.backends._sqlite_schema import Row
from jobsync.backends.base import (
    NODE_ACTIVE,
    NODE_DEAD,
    NODE_EVICTED,
    NODE_LEAVING,
    AuditRecord,
    ClaimRequest,
    ClusterView,
    Heartbeat,
    HeartbeatOutcome,
    HistoryRecord,
    LockRecord,
    LockSpec,
    NodeRecord,
    OwnedTokens,
    PlanCommit,
    Registration,
    SiteInfo,
    TokenTable,
)
from jobsync.core import rules
from jobsync.core.errors import (
    BackendUnavailable,
    ConfigMismatch,
    ConflictError,
    InvalidArgument,
    JobSyncError,
    LockTimeout,
    NotLeader,
    SchemaError,
)
from jobsync.core.hashing import token_function, validate_hash_function, validate_total_tokens

MAX_POLL_INTERVAL = 0.2
_RUNNING = (NODE_ACTIVE, NODE_LEAVING)
# Positions in a sync_site row (S.SITE_COLUMNS) and a token row (S.TOKEN_COLUMNS).
_TOTAL, _GENERATION, _COUNTER, _BASIS, _SIGNAL, _INCARNATIONS, _FLOOR = 1, 3, 4, 5, 7, 8, 9
_ID, _OWNER, _INC, _EPOCH, _DEST, _DEADLINE = S.TOKEN_POSITIONS


class SQLiteBackend:
    """The Backend protocol over one SQLite file shared by the processes of one host.

    The backend's clock is this host's clock (``clock``, ``time.time`` unless a
    test injects one): SQLite lives on one host by construction, so the host
    clock is the database clock.  One handle is one connection, thread-safe
    (calls are serialised on a lock).  ``busy_timeout`` bounds every call's
    waiting for locks (see the module docstring).  ``wait_for_change`` polls
    the site's signal counter every ``poll_interval`` seconds (at most 0.2).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        client: str = "",
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
        poll_interval: float = MAX_POLL_INTERVAL,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidArgument(f"path must be a str or os.PathLike, got {path!r}")
        if not isinstance(client, str):
            raise InvalidArgument(f"client must be a string, got {client!r}")
        if not callable(clock):
            raise InvalidArgument(f"clock must be callable, got {clock!r}")
        busy = C.seconds("busy_timeout", busy_timeout, allow_zero=True)
        if C.seconds("poll_interval", poll_interval) > MAX_POLL_INTERVAL:
            raise InvalidArgument(f"poll_interval must be at most 0.2 s, got {poll_interval!r}")
        self.path, self.client = os.fspath(path), client
        self._clock, self._poll_interval, self._busy = clock, float(poll_interval), busy
        self._lock = threading.RLock()  # the connection's; held for a whole transaction
        self._stats_lock = threading.Lock()  # the counters'; never held while waiting
        self._stats: Counter[str] = Counter(round_trips=0)
        self._seen: dict[str, int] = {}  # per site, the signal this handle was told of
        self._last_poll: dict[str, float] = {}  # per site, monotonic time of the last poll
        self._conn: sqlite3.Connection | None = None
        conn = None
        try:
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            S.prepare(conn, busy_timeout)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, busy) from exc
            raise
        self._conn = conn

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r}, client={self.client!r})"

    # -- plumbing -------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self, verb: str | None, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction on the handle's connection; driver errors translated.

        Waits at most ``busy_timeout`` in all: first for the handle, then for
        the database (SQLite's busy timeout is shortened by the time already
        spent waiting for the handle, and restored after).
        """
        started = time.monotonic()
        if not self._lock.acquire(timeout=self._busy):
            raise LockTimeout(
                _lock_message(
                    f"SQLite: {self!r} stayed busy with another thread's call", self._busy
                )
            )
        try:
            if self._conn is None:
                raise BackendUnavailable(f"{self!r} is closed")
            conn = self._conn
            self._count("round_trips", verb)
            left = self._busy - (time.monotonic() - started)
            shortened = left < self._busy - 0.001
            try:
                if shortened:
                    S.set_busy_timeout(conn, left)
                try:
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    try:
                        yield conn
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            with contextlib.suppress(sqlite3.Error):  # the first error propagates
                                conn.execute("ROLLBACK")
                        raise
                finally:
                    if shortened:
                        with contextlib.suppress(sqlite3.Error):  # shorter is still bounded
                            S.set_busy_timeout(conn, self._busy)
            except sqlite3.Error as exc:
                raise _translate(exc, self._busy) from exc
        finally:
            self._lock.release()

    def _count(self, *verbs: str | None) -> None:
        with self._stats_lock:
            self._stats.update(verb for verb in verbs if verb is not None)

    def _site(self, conn: sqlite3.Connection, site: str) -> Row:
        found: Row | None = conn.execute(S.SELECT_SITE, (site,)).fetchone()
        if found is None:
            raise InvalidArgument(f"unknown site {site!r}: ensure_site creates it")
        self._seen.setdefault(site, found[_SIGNAL])
        return found

    @staticmethod
    def _nodes(conn: sqlite3.Connection, site: str) -> dict[str, NodeRecord]:
        return {row[0]: S.node(row) for row in conn.execute(S.SELECT_NODES, (site,))}

    @staticmethod
    def _rows(conn: sqlite3.Connection, site: str, tokens: Iterable[int]) -> dict[int, Row]:
        found = conn.execute(S.SELECT_SOME_TOKENS, (site, json.dumps(sorted(set(tokens)))))
        return {row[_ID]: row for row in found}

    @staticmethod
    def _bury(conn: sqlite3.Connection, site: str, dead: Iterable[tuple[str, int]]) -> None:
        """Incarnations whose lease expired: mark their rows dead, release their claims."""
        for name, incarnation in dead:
            conn.execute(S.MARK_DEAD, (site, name, incarnation))
            conn.execute(S.RELEASE_CLAIMS, (site, incarnation))

    # -- sites ----------------------------------------------------------------
    def ensure_site(self, site: str, total_tokens: int, hash_function: str) -> SiteInfo:
        C.site_name(site)
        total = validate_total_tokens(total_tokens)
        hash_name = validate_hash_function(hash_function)
        with self._tx("ensure_site") as conn:
            if conn.execute(S.SELECT_SITE, (site,)).fetchone() is None:
                conn.execute(S.INSERT_SITE, (site, total, hash_name, 0, self._clock()))
                conn.execute(S.INSERT_TOKENS, (site, total, 0))
            found = self._site(conn, site)
        if (found[_TOTAL], found[2]) != (total, hash_name):
            raise ConfigMismatch(
                f"site {site!r} stores total_tokens={found[_TOTAL]}, hash_function={found[2]!r};"
                f" got total_tokens={total}, hash_function={hash_name!r}"
            )
        return S.site_info(found)

    def site_info(self, site: str) -> SiteInfo | None:
        C.site_name(site)
        with self._tx("site_info", write=False) as conn:
            if conn.execute(S.SELECT_SITE, (site,)).fetchone() is None:
                return None
            return S.site_info(self._site(conn, site))

    def list_sites(self) -> tuple[str, ...]:
        with self._tx("list_sites", write=False) as conn:
            rows = conn.execute("SELECT site FROM sync_site ORDER BY site").fetchall()
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
            (top,) = conn.execute(S.MAX_EPOCH, (site,)).fetchone()
            floor = max(info[_FLOOR], top or 0)  # epochs never go backwards
            conn.execute(S.DELETE_TOKENS, (site,))
            conn.execute(S.INSERT_TOKENS, (site, total, floor))
            conn.execute(S.RESET_SITE, (site, total, hash_name, floor))
            conn.execute(S.BUMP, (site,))
            conn.execute(S.RELEASE_ALL_CLAIMS, (site,))
            token_of = token_function(total, hash_name)  # a lock pins its task's new token
            keys = [key for (key,) in conn.execute(S.LOCK_KEYS, (site,))]
            conn.executemany(S.RETOKEN_LOCK, [(site, key, token_of(key)) for key in keys])
            return S.site_info(self._site(conn, site))

    # -- membership -----------------------------------------------------------
    def register(
        self, site: str, name: str, lease_timeout: float, *, process: str = "",
        known: int | None = None,
    ) -> Registration:  # fmt: skip
        C.site_name(site)
        C.node_name(name)
        lease = C.seconds("lease_timeout", lease_timeout)
        process = C.process_id(process)
        known = C.known_incarnation(known)
        with self._tx("register") as conn:
            info, now = self._site(conn, site), self._clock()
            incarnation = info[_INCARNATIONS] + 1
            node = rules.takeover(
                self._nodes(conn, site).get(name), site=site, name=name,
                incarnation=incarnation, lease=lease, now=now, process=process, known=known,
            )  # fmt: skip
            fence = node.fence_until
            row = (site, name, incarnation, now, now, lease, NODE_ACTIVE, fence, process)
            conn.execute(S.UPSERT_NODE, row)
            conn.execute(S.TAKE_INCARNATION, (site, incarnation))
            conn.execute(S.BUMP, (site,))
        return Registration(
            incarnation=incarnation, registered_at=now, change_counter=info[_COUNTER] + 1,
            fence_until=fence,
        )  # fmt: skip

    def heartbeat(self, site: str, name: str, incarnation: int) -> Heartbeat:
        self._member(site, name, incarnation)
        with self._tx("heartbeat") as conn:
            info, now = self._site(conn, site), self._clock()
            nodes = self._nodes(conn, site)
            node = nodes.get(name)
            outcome, after = rules.heartbeat(node, incarnation, now)
            if outcome is HeartbeatOutcome.RENEWED:
                conn.execute(S.RENEW, (site, name, now))
            elif after is not node:  # found expired: never renewable again
                conn.execute(S.MARK_DEAD, (site, name, incarnation))
        others = [
            n.lease_expires for n in nodes.values() if n.name != name and rules.is_live(n, now)
        ]
        return Heartbeat(
            outcome=outcome, now=now, change_counter=info[_COUNTER], plan_basis=info[_BASIS],
            earliest_other_expiry=min(others, default=None), live_others=len(others),
        )  # fmt: skip

    def mark_leaving(self, site: str, name: str, incarnation: int) -> bool:
        self._member(site, name, incarnation)
        with self._tx("mark_leaving") as conn:
            self._site(conn, site)
            node = self._nodes(conn, site).get(name)
            if (
                node is None
                or node.incarnation != incarnation
                or not rules.is_live(node, self._clock())
            ):
                return False
            if node.state != NODE_LEAVING:
                conn.execute(S.SET_STATE, (site, name, NODE_LEAVING))
                conn.execute(S.BUMP, (site,))
            return True

    def deregister(self, site: str, name: str, incarnation: int) -> bool:
        self._member(site, name, incarnation)
        with self._tx("deregister") as conn:
            self._site(conn, site)
            now, node = self._clock(), self._nodes(conn, site).get(name)
            if node is None or node.incarnation != incarnation:
                return False
            changed = conn.execute(S.FREE_TOKENS, (site, incarnation)).rowcount
            changed += conn.execute(S.RELEASE_CLAIMS, (site, incarnation)).rowcount
            # The whole file is locked: no claim is ever skipped, so only a fence keeps a row.
            if not rules.leaves_tombstone(node, now, claims_left=False):
                changed += conn.execute(S.DELETE_NODE, (site, name)).rowcount
            elif node.state != NODE_DEAD:  # a tombstone: the older incarnation stays fenced
                changed += conn.execute(S.BURY_NODE, (site, name, incarnation)).rowcount
            if changed:  # a repeat on a tombstone (its reply lost) writes nothing
                conn.execute(S.BUMP, (site,))
            return bool(changed)

    def read_nodes(self, site: str) -> tuple[float, tuple[NodeRecord, ...]]:
        C.site_name(site)
        with self._tx("read_nodes", write=False) as conn:
            self._site(conn, site)
            return self._clock(), _seniority(self._nodes(conn, site).values())

    # -- planning -------------------------------------------------------------
    def read_cluster(self, site: str) -> ClusterView:
        C.site_name(site)
        with self._tx("read_cluster", write=False) as conn:
            info, now = self._site(conn, site), self._clock()
            nodes = self._nodes(conn, site)
            rows = conn.execute(S.SELECT_TOKENS, (site,)).fetchall()
            locks = tuple(S.lock(row) for row in conn.execute(S.SELECT_LOCKS, (site, now)))
        owner, incarnation, epoch, dest, deadline = zip(*rows, strict=True)
        table = TokenTable(
            owner=owner, incarnation=incarnation, epoch=array("q", epoch), pending_to=dest,
            pending_deadline=deadline,
        )  # fmt: skip
        return ClusterView(
            now=now, site=S.site_info(info), nodes=_seniority(nodes.values()), tokens=table,
            locks=locks,
        )  # fmt: skip

    def commit_plan(self, site: str, commit: PlanCommit) -> int:
        C.site_name(site)
        C.plan_shape(commit)
        with self._tx("commit_plan") as conn:
            info, now = self._site(conn, site), self._clock()
            C.plan_tokens(commit, info[_TOTAL])
            generation = info[_GENERATION]
            if commit.basis > info[_COUNTER]:
                raise InvalidArgument(
                    f"plan basis {commit.basis} is above site {site!r}'s change counter"
                    f" {info[_COUNTER]}"
                )
            nodes = self._nodes(conn, site)
            written = [a.token for a in commit.assigns] + [r.token for r in commit.revokes]
            rows = self._rows(conn, site, written)
            rules.plan_misfit(
                commit, site=site, generation=generation, tokens=S.TokenColumns(rows),
                nodes=nodes, now=now,
            )  # fmt: skip
            updates, dead = S.plan_rows(site, commit, rows, now)
            if not written:
                conn.execute(S.RAISE_BASIS, (site, commit.basis))
                return int(generation)
            conn.executemany(S.UPDATE_TOKEN, updates)  # only the rows that change
            self._bury(conn, site, dead)
            generation += 1
            conn.execute(S.NEW_GENERATION, (site, generation, commit.basis))
            conn.execute(S.BUMP, (site,))
            if commit.history is not None:
                record = HistoryRecord(
                    generation=generation, leader=commit.leader, at=now, entry=commit.history
                )
                conn.execute(S.INSERT_HISTORY, S.history_params(site, record))
            return int(generation)

    def read_owned(self, site: str, name: str, incarnation: int) -> OwnedTokens:
        self._member(site, name, incarnation)
        with self._tx("read_owned", write=False) as conn:
            info, now = self._site(conn, site), self._clock()
            rows = conn.execute(S.SELECT_OWNED, (site, name, incarnation)).fetchall()
            (incoming,) = conn.execute(S.COUNT_INCOMING, (site, name, incarnation)).fetchone()
        return OwnedTokens(
            now=now, change_counter=info[_COUNTER], plan_basis=info[_BASIS],
            tokens=tuple(r[0] for r in rows), epochs=tuple(r[1] for r in rows),
            pending=frozenset(r[0] for r in rows if r[2] is not None), incoming=incoming,
        )  # fmt: skip

    # -- hand-off -------------------------------------------------------------
    def ack_releases(
        self, site: str, name: str, incarnation: int, tokens: Sequence[tuple[int, int]]
    ) -> frozenset[int]:
        self._member(site, name, incarnation)
        with self._tx("ack_releases") as conn:
            pairs = C.token_epochs(tokens, self._site(conn, site)[_TOTAL])
            now, nodes = self._clock(), self._nodes(conn, site)
            rows = self._rows(conn, site, (token for token, _ in pairs))
            done: dict[int, Row] = {}
            for token, epoch in pairs:
                row = rows[token]
                held = (row[_OWNER], row[_INC], row[_EPOCH]) == (name, incarnation, epoch)
                if held and row[_DEADLINE] is not None:
                    done[token] = S.handoff(site, row, nodes, now)
            conn.executemany(S.UPDATE_TOKEN, done.values())
            if done:
                conn.execute(S.BUMP, (site,))
        return frozenset(done)

    def finish_expired_releases(self, site: str) -> frozenset[int]:
        C.site_name(site)
        with self._tx("finish_expired_releases") as conn:
            self._site(conn, site)
            now, nodes = self._clock(), self._nodes(conn, site)
            rows = conn.execute(S.SELECT_PENDING, (site,)).fetchall()
            expired = [r for r in rows if rules.lease_expired(nodes.get(r[_OWNER]), r[_INC], now)]
            self._bury(conn, site, {(r[_OWNER], r[_INC]) for r in expired})
            conn.executemany(S.UPDATE_TOKEN, [S.handoff(site, r, nodes, now) for r in expired])
            if expired:
                conn.execute(S.BUMP, (site,))
        return frozenset(row[_ID] for row in expired)

    def evict_overdue(self, site: str, leader: str, leader_incarnation: int) -> tuple[str, ...]:
        self._member(site, leader, leader_incarnation)
        with self._tx("evict_overdue") as conn:
            self._site(conn, site)
            now, nodes = self._clock(), self._nodes(conn, site)
            _require_leader(site, nodes, now, leader, leader_incarnation)
            overdue = conn.execute(S.OVERDUE, (site, now)).fetchall()
            names = sorted({name for name, inc in overdue if S.running(nodes.get(name), inc)})
            conn.executemany(S.SET_STATE, [(site, name, NODE_EVICTED) for name in names])
            if names:
                conn.execute(S.BUMP, (site,))
        return tuple(names)

    # -- claims and completion ------------------------------------------------
    def claim(
        self, site: str, date: datetime.date, name: str, incarnation: int,
        requests: Sequence[ClaimRequest],
    ) -> frozenset[str]:  # fmt: skip
        self._member(site, name, incarnation)
        day = C.claim_date(date).isoformat()
        claimed: set[str] = set()
        with self._tx("claim") as conn:
            checked = C.claim_requests(requests, self._site(conn, site)[_TOTAL])
            now = self._clock()
            rows = self._rows(conn, site, (r.token for r in checked))
            for r in checked:
                row = rows[r.token]
                if (row[_OWNER], row[_INC], row[_EPOCH], row[_DEADLINE]) != (
                    name, incarnation, r.epoch, None,
                ):  # fmt: skip
                    continue
                params = (site, day, r.task_key, name, incarnation, r.token, r.epoch, now)
                if conn.execute(S.INSERT_CLAIM, params).rowcount == 1:
                    claimed.add(r.task_key)
                elif conn.execute(S.OPEN_CLAIM_OF, (site, day, r.task_key, incarnation)).fetchone():
                    claimed.add(r.task_key)  # a retry whose first answer was lost
        return frozenset(claimed)

    def complete(
        self, site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str],
        connection: object | None = None,
    ) -> frozenset[str]:  # fmt: skip
        C.site_name(site)
        day = C.claim_date(date).isoformat()
        C.incarnation(incarnation)
        keys = list(dict.fromkeys(C.task_keys(task_keys)))
        if connection is not None:
            now = self._clock()
            return self._in_callers_tx(
                connection, "complete", site,
                lambda c: _each(c, S.COMPLETE, keys, lambda k: (site, day, k, incarnation, now)),
            )  # fmt: skip
        with self._tx("complete") as conn:
            self._site(conn, site)
            now = self._clock()
            return _each(conn, S.COMPLETE, keys, lambda k: (site, day, k, incarnation, now))

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
            if conn.execute(S.SELECT_SITE, (site,)).fetchone() is None:
                raise InvalidArgument(f"unknown site {site!r}: ensure_site creates it")
            (theirs,) = conn.execute("PRAGMA busy_timeout").fetchone()
            shortened = theirs > self._busy * 1000
            if shortened:
                S.set_busy_timeout(conn, self._busy)
            try:
                return work(conn)
            finally:
                if shortened:
                    with contextlib.suppress(sqlite3.Error):  # the first error propagates
                        S.set_busy_timeout(conn, theirs / 1000)
        except sqlite3.Error as exc:
            raise _translate(exc, self._busy, callers=True) from exc

    def release(
        self, site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str],
        connection: object | None = None,
    ) -> frozenset[str]:  # fmt: skip
        C.site_name(site)
        day = C.claim_date(date).isoformat()
        C.incarnation(incarnation)
        keys = list(dict.fromkeys(C.task_keys(task_keys)))

        def work(conn: sqlite3.Connection) -> frozenset[str]:
            return _each(conn, S.RELEASE, keys, lambda k: (site, day, k, incarnation))

        if connection is not None:
            return self._in_callers_tx(connection, "release", site, work)
        with self._tx("release") as conn:
            self._site(conn, site)
            return work(conn)

    def open_claims(
        self, site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str]
    ) -> frozenset[str]:
        C.site_name(site)
        day = C.claim_date(date).isoformat()
        C.incarnation(incarnation)
        keys = json.dumps(list(dict.fromkeys(C.task_keys(task_keys))))
        with self._tx("open_claims", write=False) as conn:  # a read: WAL never waits on a writer
            self._site(conn, site)
            rows = conn.execute(S.OPEN_CLAIMS, (site, day, incarnation, keys)).fetchall()
        return frozenset(row[0] for row in rows)

    def read_audit(
        self, site: str, date: datetime.date, name: str | None = None
    ) -> tuple[AuditRecord, ...]:
        C.site_name(site)
        day = C.claim_date(date).isoformat()
        C.optional_node_name(name)
        with self._tx("read_audit", write=False) as conn:
            self._site(conn, site)
            return tuple(S.audit(row) for row in conn.execute(S.SELECT_AUDIT, (site, day, name)))

    def reap_claims(self, site: str) -> int:
        C.site_name(site)
        with self._tx("reap_claims") as conn:
            self._site(conn, site)
            now, nodes = self._clock(), self._nodes(conn, site)
            claimers = conn.execute(S.OPEN_CLAIMERS, (site,)).fetchall()
            released = sum(
                conn.execute(S.RELEASE_CLAIMS, (site, incarnation)).rowcount
                for name, incarnation in claimers
                if rules.lease_expired(nodes.get(name), incarnation, now)
            )
            if any(not rules.is_live(n, now) for n in nodes.values()):
                named = {name for (name,) in conn.execute(S.NAMED_BY_TOKENS, (site,))}
                purge = [
                    (site, n.name, n.incarnation)
                    for n in nodes.values()
                    if rules.purgeable(n, now, named_by_tokens=n.name in named)
                ]
                conn.executemany(S.PURGE_NODE, purge)  # no bump: a dead row counts for no plan
            return released

    # -- locks ----------------------------------------------------------------
    def replace_locks(
        self, site: str, creator: str, locks: Sequence[LockSpec], clear_existing: bool
    ) -> int:
        C.site_name(site)
        C.node_name(creator)
        if not isinstance(clear_existing, bool):
            raise InvalidArgument(f"clear_existing must be a bool, got {clear_existing!r}")
        with self._tx("replace_locks") as conn:
            specs = C.lock_specs(locks, self._site(conn, site)[_TOTAL])
            now = self._clock()
            conn.execute(S.PURGE_LOCKS, (site, now))  # an expired lock exists for no one
            conn.executemany(S.UPSERT_LOCK, [S.lock_params(site, creator, s, now) for s in specs])
            cleared = 0
            if clear_existing:  # deleting after the upsert keeps re-registered created_at
                kept = json.dumps([s.task_key for s in specs])
                cleared = conn.execute(S.CLEAR_OTHER_LOCKS, (site, creator, kept)).rowcount
            if specs or cleared:
                conn.execute(S.BUMP, (site,))
        return len(specs)

    def list_locks(self, site: str) -> tuple[LockRecord, ...]:
        C.site_name(site)
        with self._tx("list_locks", write=False) as conn:
            self._site(conn, site)
            rows = conn.execute(S.SELECT_LOCKS, (site, self._clock()))
            return tuple(S.lock(row) for row in rows)

    def clear_locks(self, site: str, creator: str | None) -> int:
        C.site_name(site)
        C.optional_node_name(creator)
        with self._tx("clear_locks") as conn:
            self._site(conn, site)
            conn.execute(S.PURGE_LOCKS, (site, self._clock()))
            deleted: int = conn.execute(S.CLEAR_LOCKS, (site, creator)).rowcount
            if deleted:
                conn.execute(S.BUMP, (site,))
        return deleted

    # -- history and maintenance ----------------------------------------------
    def read_history(self, site: str, limit: int = 50) -> tuple[HistoryRecord, ...]:
        C.site_name(site)
        C.integer("limit", limit, minimum=1)
        with self._tx("read_history", write=False) as conn:
            self._site(conn, site)
            return tuple(S.history(row) for row in conn.execute(S.SELECT_HISTORY, (site, limit)))

    def prune(self, site: str, older_than: float, batch_size: int = 10_000) -> Mapping[str, int]:
        C.site_name(site)
        age = C.prune_age(older_than)
        batch = C.integer("batch_size", batch_size, minimum=1)
        with self._tx("prune", write=False) as conn:
            self._site(conn, site)
            cutoff = self._clock() - age
        counts = dict.fromkeys(S.PRUNE, 0)
        for kind, sql in S.PRUNE.items():
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
                    signal = self._site(conn, site)[_SIGNAL]
                self._last_poll[site] = time.monotonic()
                verb = None
                if signal != self._seen[site]:
                    self._seen[site] = signal
                    return True
                due = self._last_poll[site] + self._poll_interval
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(max(0.0, min(due - time.monotonic(), remaining)))  # lock free meanwhile

    def now(self) -> float:  # never waits for the handle: it touches no connection
        if self._conn is None:
            raise BackendUnavailable(f"{self!r} is closed")
        self._count("now")
        return float(self._clock())

    def statistics(self) -> Mapping[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @staticmethod
    def _member(site: str, name: str, incarnation: int) -> None:
        C.site_name(site)
        C.node_name(name)
        C.incarnation(incarnation)


# -- judgements and row arithmetic (pure) ----------------------------------------
def _translate(exc: sqlite3.Error, busy_timeout: float, *, callers: bool = False) -> JobSyncError:
    """A driver error as a JobSyncError (see jobsync/core/errors.py); raise it ``from`` exc.

    ``callers``: the statement ran on the caller's connection, in its transaction.
    """
    text = f"SQLite: {exc}"
    if isinstance(exc, sqlite3.OperationalError):
        if "no such table" in str(exc) or "no such column" in str(exc):
            return SchemaError(text)
        if _is_busy(exc):
            return LockTimeout(_lock_message(text, busy_timeout, callers=callers))
        return BackendUnavailable(text)  # I/O, cannot open
    if isinstance(exc, sqlite3.IntegrityError):
        return ConflictError(text)
    if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return BackendUnavailable(text)  # a closed connection and the like
    if isinstance(exc, sqlite3.DatabaseError):
        return SchemaError(text)  # not a database, malformed image
    return BackendUnavailable(text)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code): another connection held a lock."""
    name = getattr(exc, "sqlite_errorname", "")  # Python 3.11+
    if name:
        return bool(name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")))
    return "locked" in str(exc) or "busy" in str(exc)


def _lock_message(what: str, busy_timeout: float, *, callers: bool = False) -> str:
    text = (
        f"{what} (jobsync waits at most busy_timeout={busy_timeout:g} s): a write transaction"
        " holds the database, perhaps the caller's own, left open after"
        " complete(connection=...) or release(connection=...); on SQLite such a transaction"
        " must be short, because while it is open it blocks every other writer, every"
        " worker's heartbeat included"
    )
    if callers:
        text += (
            "; or the caller's transaction began as a reader and another connection has"
            " written since, so it cannot become a writer: begin it with BEGIN IMMEDIATE"
        )
    return text


def _each(
    conn: sqlite3.Connection, sql: str, keys: list[str], params: Callable[[str], Row]
) -> frozenset[str]:
    return frozenset(k for k in keys if conn.execute(sql, params(k)).rowcount == 1)


def _same_file(a: str, b: str) -> bool:
    try:
        return bool(a) and os.path.samefile(a, b)
    except OSError:
        return False


def _seniority(nodes: Iterable[NodeRecord]) -> tuple[NodeRecord, ...]:
    return tuple(sorted(nodes, key=rules.seniority))


def _require_leader(
    site: str, nodes: Mapping[str, NodeRecord], now: float, name: str, inc: int
) -> None:
    lead = rules.oldest_live(nodes.values(), now)
    if lead is None or (lead.name, lead.incarnation) != (name, inc):
        oldest = "no live node" if lead is None else f"{lead.name!r} ({lead.incarnation})"
        raise NotLeader(
            f"{name!r} incarnation {inc} is not the oldest live node of site {site!r}; "
            f"the leader is {oldest}"
        )
