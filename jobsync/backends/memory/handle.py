"""The in-memory backend: a shared, thread-safe store and one handle per client.

``MemoryStore`` holds the state of any number of sites; ``store.connect(client)``
returns a ``MemoryBackend``, one client's "connection", implementing the
``Backend`` protocol of base.py exactly as its docstrings state (the contract is
written there, not here).  Tests, the simulator and ``memory://`` URLs use it.

Atomicity: every verb runs under the store's one ``RLock`` and reads the
injected clock once, inside it; that reading is the verb's statement clock.
Waiters of ``wait_for_change`` sleep on a ``Condition`` of the same lock.

Faults, for the simulator and tests, are set on the store per client name and
apply before a verb does anything (``statistics`` and ``close`` are local and
never fail):

- ``fail_next(client, n)``: the next n calls raise BackendUnavailable;
- ``cut_off(client)`` / ``restore(client)``: a partition of one client;
- ``cut_off_all()`` / ``restore_all()``: a database outage (per-client
  cut-offs are independent of it and stay as they are);
- ``delay(client, seconds)``: every call first sleeps through ``sleeper``
  (injectable, so the simulator can make it virtual);
- ``lose_notifications(client, n)``: the client's handles miss the next n
  wake-ups, as a lost NOTIFY (the next change, or a counter read, still tells);
- ``before_commit``: called as ``hook(client, commit)`` inside ``commit_plan``
  before its checks and outside the lock, so other clients' verbs can land
  between a plan's read and its commit.

Row locks.  ``store.transaction(client)`` opens a ``MemoryTransaction``, the
memory form of a user's database connection inside an open transaction:
passed as ``complete(connection=tx)`` or ``release(connection=tx)`` it locks
the claim rows it touched until ``commit`` or ``rollback``.  Verbs meet those
locks as base.py says (claims never wait, cleanup skips locked rows, a
completion or release through the coordination handle meets the lock).  A
verb that would wait calls ``_contend``: this store never sleeps, so it
raises ``LockTimeout`` at once; the simulator's store overrides it to let
virtual time pass.  ``_inside`` and ``_committed`` are further hooks for the
simulator (a pause inside a verb, holding its locks; a reply lost after the
commit); here they do nothing.
"""

from __future__ import annotations

import datetime
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from jobsync.backends import _checks as checks
from jobsync.backends._memory_records import ClaimKey
from jobsync.backends._memory_state import SiteState
from jobsync.backends.base import (
    AuditRecord,
    ClaimRequest,
    ClusterView,
    Heartbeat,
    HistoryRecord,
    LockRecord,
    LockSpec,
    NodeRecord,
    OwnedTokens,
    PlanCommit,
    Registration,
    SiteInfo,
)
from jobsync.core.defences import PRODUCTION, Defences
from jobsync.core.errors import BackendUnavailable, InvalidArgument, LockTimeout
from jobsync.core.hashing import validate_hash_function, validate_total_tokens

_T = TypeVar("_T")

CommitHook = Callable[[str, PlanCommit], None]
_LOCAL_VERBS = frozenset({"wait_for_change", "now"})


class MemoryStore:
    """The shared state of any number of sites; thread-safe."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        sleeper: Callable[[float], None] = time.sleep,
        defences: Defences = PRODUCTION,
    ) -> None:
        self.clock = clock
        self.sleeper = sleeper
        self.defences = defences
        self.lock_timeout = 0.5
        """Seconds a verb would wait on a row lock (the simulator lets them pass)."""
        self.node_locks: dict[tuple[str, str], object] = {}
        """(site, node name) -> holder: node rows locked across a paused verb."""
        self.before_commit: CommitHook | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._sites: dict[str, SiteState] = {}
        self._handles: weakref.WeakSet[MemoryBackend] = weakref.WeakSet()
        self._failures: dict[str, int] = {}
        self._cut: set[str] = set()
        self._outage = False
        self._delays: dict[str, float] = {}
        self._lost: dict[str, int] = {}

    def connect(self, client: str) -> MemoryBackend:
        """A new handle (one "connection") for ``client`` on this store."""
        if not isinstance(client, str) or not client:
            raise InvalidArgument(f"client must be a non-empty string, got {client!r}")
        handle = MemoryBackend(self, client)
        with self._lock:
            self._handles.add(handle)
        return handle

    def transaction(self, client: str) -> MemoryTransaction:
        """Open a user transaction (pass it as ``connection=``; then commit or roll back)."""
        return MemoryTransaction(self, client)

    # -- hooks for the simulator --------------------------------------------------
    def _contend(self, client: str, verb: str, blockers: Sequence[object]) -> None:
        """``verb`` of ``client`` would wait on row locks held by ``blockers``."""
        raise LockTimeout(
            f"{verb} of {client!r}: a row it needs is locked by another transaction "
            f"({', '.join(map(repr, blockers))}); a user transaction that completed or "
            "released a task with connection= holds it until it commits or rolls back"
        )

    def _inside(self, client: str, verb: str, site: str, held: Sequence[tuple[str, str]]) -> None:
        """Called as ``verb`` runs, holding the node rows ``held`` until it commits."""

    def _committed(self, client: str, verb: str) -> None:
        """Called after ``verb`` committed, before its answer reaches ``client``."""

    # -- faults -----------------------------------------------------------------
    def fail_next(self, client: str, n: int = 1) -> None:
        with self._lock:
            self._failures[client] = self._failures.get(client, 0) + checks.integer("n", n)

    def cut_off(self, client: str) -> None:
        with self._lock:
            self._cut.add(client)

    def restore(self, client: str) -> None:
        with self._lock:
            self._cut.discard(client)

    def cut_off_all(self) -> None:
        with self._lock:
            self._outage = True

    def restore_all(self) -> None:
        with self._lock:
            self._outage = False

    def delay(self, client: str, seconds: float) -> None:
        pause = checks.seconds("delay", seconds, allow_zero=True)
        with self._lock:
            self._delays[client] = pause

    def lose_notifications(self, client: str, n: int) -> None:
        with self._lock:
            self._lost[client] = self._lost.get(client, 0) + checks.integer("n", n)

    # -- internals --------------------------------------------------------------
    def _admit(self, client: str) -> None:
        pause = self._delays.get(client, 0.0)
        if pause:
            self.sleeper(pause)
        with self._lock:
            if self._outage or client in self._cut:
                cause = "database outage" if self._outage else "client cut off"
                raise BackendUnavailable(f"memory store unreachable for {client!r} ({cause})")
            left = self._failures.get(client, 0)
            if left:
                self._failures[client] = left - 1
                raise BackendUnavailable(f"injected failure for {client!r} ({left - 1} left)")

    def _site(self, site: str) -> SiteState:
        state = self._sites.get(site)
        if state is None:
            raise InvalidArgument(f"unknown site {site!r}: ensure_site creates it")
        return state

    def _publish(self, site: str, signals: int) -> None:
        """Wake waiters on ``site``; a client losing notifications misses these."""
        for _ in range(signals):
            unlucky = {
                h.client for h in self._handles if site in h._seen and self._lost.get(h.client)
            }
            for handle in self._handles:
                if handle.client in unlucky:
                    handle._seen[site] += 1
            for client in unlucky:
                self._lost[client] -= 1
        self._changed.notify_all()


class MemoryBackend:
    """One client's handle on a ``MemoryStore``: the ``Backend`` protocol."""

    def __init__(self, store: MemoryStore, client: str) -> None:
        self.client = client
        self._store = store
        self._closed = False
        self._calls: Counter[str] = Counter()
        self._verb = ""
        self._seen: dict[str, int] = {}
        """Per site, the signal count this handle has been told of (edge trigger)."""

    def __repr__(self) -> str:
        return f"<MemoryBackend client={self.client!r}{' closed' if self._closed else ''}>"

    def _begin(self, verb: str) -> None:
        self._verb = verb
        if self._closed:
            raise BackendUnavailable(f"memory backend handle of {self.client!r} is closed")
        with self._store._lock:
            self._calls[verb] += 1
            if verb not in _LOCAL_VERBS:  # as PostgreSQL: a LISTEN wait costs no round trip
                self._calls["round_trips"] += 1
        self._store._admit(self.client)

    def _run(
        self,
        site: str,
        operation: Callable[[SiteState, float], _T],
        held: Sequence[tuple[str, str]] = (),
    ) -> _T:
        """Run ``operation(state, now)`` atomically on ``site``, then wake waiters."""
        store = self._store
        verb = self._verb
        store._inside(self.client, verb, site, held)
        with store._lock:
            state = store._site(site)
            self._seen.setdefault(site, state.signals)
            before = state.signals
            result = operation(state, store.clock())
            if state.signals != before:
                store._publish(site, state.signals - before)
        store._committed(self.client, verb)
        return result

    def _peek(self, site: str, look: Callable[[SiteState, float], _T]) -> _T:
        """Read ``site`` under the lock without the verb hooks (what a verb will meet)."""
        store = self._store
        with store._lock:
            return look(store._site(site), store.clock())

    def _wait_for_claims(self, site: str, keys: Callable[[SiteState], Sequence[ClaimKey]]) -> None:
        """Meet the row locks on claim ``keys`` as a verb that does not skip them (only rows
        the verb would write: a row its conditions rule out is passed over unlocked)."""
        blockers = self._peek(site, lambda s, _: s.claims.blockers(keys(s)))
        if blockers:
            self._store._contend(self.client, self._verb, blockers)

    def _wait_unless_bounded(
        self, site: str, keys: Callable[[SiteState], Sequence[ClaimKey]]
    ) -> None:
        """Cleanup and claims skip locked rows; with that defence off they wait."""
        if not self._store.defences.bounded_lock_waits:
            self._wait_for_claims(site, keys)

    # -- sites ------------------------------------------------------------------
    def ensure_site(self, site: str, total_tokens: int, hash_function: str) -> SiteInfo:
        self._begin("ensure_site")
        site = checks.site_name(site)
        total = validate_total_tokens(total_tokens)
        name = validate_hash_function(hash_function)
        store = self._store
        with store._lock:
            state = store._sites.get(site)
            if state is None:
                state = store._sites[site] = SiteState(
                    site, total, name, store.clock(), store.defences
                )
            state.check_constants(total, name)
            self._seen.setdefault(site, state.signals)
            return state.info()

    def site_info(self, site: str) -> SiteInfo | None:
        self._begin("site_info")
        site = checks.site_name(site)
        with self._store._lock:
            if site not in self._store._sites:
                return None
            return self._run(site, lambda s, _: s.info())

    def list_sites(self) -> tuple[str, ...]:
        self._begin("list_sites")
        with self._store._lock:
            return tuple(sorted(self._store._sites))

    def reset_site(self, site: str, total_tokens: int, hash_function: str) -> SiteInfo:
        self._begin("reset_site")
        site = checks.site_name(site)
        total = validate_total_tokens(total_tokens)
        name = validate_hash_function(hash_function)
        return self._run(site, lambda s, now: s.reset(total, name, now))

    # -- membership -------------------------------------------------------------
    def register(
        self,
        site: str,
        name: str,
        lease_timeout: float,
        *,
        process: str = "",
        known: int | None = None,
    ) -> Registration:
        self._begin("register")
        site, name = checks.site_name(site), checks.node_name(name)
        lease = checks.seconds("lease_timeout", lease_timeout)
        who, last = checks.process_id(process), checks.known_incarnation(known)
        return self._run(site, lambda s, now: s.register(name, lease, now, who, last))

    def heartbeat(self, site: str, name: str, incarnation: int) -> Heartbeat:
        self._begin("heartbeat")
        site, name, inc = self._member(site, name, incarnation)
        store = self._store
        with store._lock:
            holder = store.node_locks.get((site, name))
        if holder is not None:
            store._contend(self.client, "heartbeat", [holder])
        return self._run(site, lambda s, now: s.heartbeat(name, inc, now))

    def mark_leaving(self, site: str, name: str, incarnation: int) -> bool:
        self._begin("mark_leaving")
        site, name, inc = self._member(site, name, incarnation)
        return self._run(site, lambda s, now: s.mark_leaving(name, inc, now))

    def deregister(self, site: str, name: str, incarnation: int) -> bool:
        self._begin("deregister")
        site, name, inc = self._member(site, name, incarnation)
        self._wait_unless_bounded(site, lambda s: s.claims.open_keys_of([inc]))
        return self._run(site, lambda s, now: s.deregister(name, inc, now))

    def read_nodes(self, site: str) -> tuple[float, tuple[NodeRecord, ...]]:
        self._begin("read_nodes")
        return self._run(checks.site_name(site), lambda s, now: (now, s.sorted_nodes()))

    # -- planning ---------------------------------------------------------------
    def read_cluster(self, site: str) -> ClusterView:
        self._begin("read_cluster")
        return self._run(checks.site_name(site), lambda s, now: s.read_cluster(now))

    def commit_plan(self, site: str, commit: PlanCommit) -> int:
        self._begin("commit_plan")
        site, commit = checks.site_name(site), checks.plan_shape(commit)
        hook = self._store.before_commit
        if hook is not None:
            hook(self.client, commit)
        buried = sorted({a.expected_incarnation or 0 for a in commit.assigns} - {0})
        self._wait_unless_bounded(site, lambda s: s.claims.open_keys_of(buried))
        return self._run(site, lambda s, now: s.commit(commit, now))

    def read_owned(self, site: str, name: str, incarnation: int) -> OwnedTokens:
        self._begin("read_owned")
        site, name, inc = self._member(site, name, incarnation)
        return self._run(site, lambda s, now: s.read_owned(name, inc, now))

    # -- hand-off ---------------------------------------------------------------
    def ack_releases(
        self, site: str, name: str, incarnation: int, tokens: Sequence[tuple[int, int]]
    ) -> frozenset[int]:
        self._begin("ack_releases")
        site, name, inc = self._member(site, name, incarnation)

        def ack(state: SiteState, now: float) -> frozenset[int]:
            return state.ack(name, inc, checks.token_epochs(tokens, len(state.tokens)), now)

        return self._run(site, ack)

    def finish_expired_releases(self, site: str) -> frozenset[int]:
        self._begin("finish_expired_releases")
        return self._run(checks.site_name(site), lambda s, now: s.finish_expired(now))

    def evict_overdue(self, site: str, leader: str, leader_incarnation: int) -> tuple[str, ...]:
        self._begin("evict_overdue")
        site, leader, inc = self._member(site, leader, leader_incarnation)
        return self._run(site, lambda s, now: s.evict(leader, inc, now))

    # -- claims and completion --------------------------------------------------
    def claim(
        self,
        site: str,
        date: datetime.date,
        name: str,
        incarnation: int,
        requests: Sequence[ClaimRequest],
    ) -> frozenset[str]:
        self._begin("claim")
        site, name, inc = self._member(site, name, incarnation)
        day = checks.claim_date(date)
        self._wait_unless_bounded(
            site, lambda s: [(day, r.task_key) for r in requests if isinstance(r, ClaimRequest)]
        )
        return self._run(site, lambda s, now: s.claim(day, name, inc, requests, now))

    def complete(
        self,
        site: str,
        date: datetime.date,
        incarnation: int,
        task_keys: Sequence[str],
        connection: object | None = None,
    ) -> frozenset[str]:
        self._begin("complete")
        site, day, inc = (
            checks.site_name(site),
            checks.claim_date(date),
            checks.incarnation(incarnation),
        )
        keys = checks.task_keys(task_keys)
        if connection is not None:
            tx = self._transaction(connection)
            return self._run(site, lambda s, _: tx.stage(s, "complete", day, inc, keys))
        self._wait_for_claims(site, lambda s: [(day, k) for k in s.claims.open_of(day, inc, keys)])
        return self._run(site, lambda s, now: s.claims.complete(day, inc, keys, now))

    def release(
        self,
        site: str,
        date: datetime.date,
        incarnation: int,
        task_keys: Sequence[str],
        connection: object | None = None,
    ) -> frozenset[str]:
        self._begin("release")
        site, day, inc = (
            checks.site_name(site),
            checks.claim_date(date),
            checks.incarnation(incarnation),
        )
        keys = checks.task_keys(task_keys)
        if connection is not None:
            tx = self._transaction(connection)
            return self._run(site, lambda s, _: tx.stage(s, "release", day, inc, keys))
        self._wait_for_claims(site, lambda s: [(day, k) for k in s.claims.open_of(day, inc, keys)])
        return self._run(site, lambda s, _: s.claims.release(day, inc, keys))

    def open_claims(
        self, site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str]
    ) -> frozenset[str]:
        self._begin("open_claims")
        site, day = checks.site_name(site), checks.claim_date(date)
        inc, keys = checks.incarnation(incarnation), checks.task_keys(task_keys)
        return self._run(site, lambda s, _: s.claims.open_of(day, inc, keys))

    def _transaction(self, connection: object) -> MemoryTransaction:
        if not isinstance(connection, MemoryTransaction) or connection.store is not self._store:
            raise InvalidArgument(
                "connection must be a MemoryTransaction of the same store "
                f"(store.transaction(client)), got {type(connection).__name__}"
            )
        if not connection.open:
            raise InvalidArgument("connection is a transaction that already ended")
        return connection

    def read_audit(
        self, site: str, date: datetime.date, name: str | None = None
    ) -> tuple[AuditRecord, ...]:
        self._begin("read_audit")
        site, day = checks.site_name(site), checks.claim_date(date)
        node = checks.optional_node_name(name)
        return self._run(site, lambda s, _: s.claims.audit(day, node))

    def reap_claims(self, site: str) -> int:
        self._begin("reap_claims")
        site = checks.site_name(site)
        held: list[tuple[str, str]] = []
        if not self._store.defences.short_reap_locks:
            # The old shape: every claimer's node row locked for the whole transaction.
            held = [(site, n) for n in self._peek(site, lambda s, _: s.claimer_names())]

        def gone_keys(state: SiteState) -> list[ClaimKey]:
            now = self._store.clock()
            claimers = state.claims.open_incarnations()
            return state.claims.open_keys_of(
                inc for name, inc in claimers if state.gone(name, inc, now)
            )

        self._wait_unless_bounded(site, gone_keys)
        return self._run(site, lambda s, now: s.reap(now), held)

    # -- locks ------------------------------------------------------------------
    def replace_locks(
        self, site: str, creator: str, locks: Sequence[LockSpec], clear_existing: bool
    ) -> int:
        self._begin("replace_locks")
        site, creator = checks.site_name(site), checks.node_name(creator)
        if not isinstance(clear_existing, bool):
            raise InvalidArgument(f"clear_existing must be a bool, got {clear_existing!r}")
        return self._run(site, lambda s, now: s.replace_locks(creator, locks, clear_existing, now))

    def list_locks(self, site: str) -> tuple[LockRecord, ...]:
        self._begin("list_locks")
        return self._run(checks.site_name(site), lambda s, now: s.list_locks(now))

    def clear_locks(self, site: str, creator: str | None) -> int:
        self._begin("clear_locks")
        site, who = checks.site_name(site), checks.optional_node_name(creator)
        return self._run(site, lambda s, now: s.clear_locks(who, now))

    # -- history and maintenance --------------------------------------------------
    def read_history(self, site: str, limit: int = 50) -> tuple[HistoryRecord, ...]:
        self._begin("read_history")
        site, count = checks.site_name(site), checks.integer("limit", limit, minimum=1)
        return self._run(site, lambda s, _: s.read_history(count))

    def prune(self, site: str, older_than: float, batch_size: int = 10_000) -> Mapping[str, int]:
        self._begin("prune")
        site = checks.site_name(site)
        age = checks.prune_age(older_than)
        checks.integer("batch_size", batch_size, minimum=1)
        return self._run(site, lambda s, now: s.prune(age, now))

    # -- reaction -----------------------------------------------------------------
    def wait_for_change(self, site: str, timeout: float) -> bool:
        self._begin("wait_for_change")
        site = checks.site_name(site)
        wait = checks.seconds("timeout", timeout, allow_zero=True)
        store = self._store
        with store._lock:
            state = store._site(site)
            seen = self._seen.setdefault(site, state.signals)
            if state.signals <= seen:
                store._changed.wait_for(lambda: state.signals > self._seen[site], wait)
            if state.signals <= self._seen[site]:
                return False
            self._seen[site] = state.signals
            return True

    def now(self) -> float:
        self._begin("now")
        with self._store._lock:
            return self._store.clock()

    def statistics(self) -> Mapping[str, int]:
        with self._store._lock:
            return {"round_trips": 0, **self._calls}

    def close(self) -> None:
        self._closed = True

    def _member(self, site: str, name: str, incarnation: int) -> tuple[str, str, int]:
        return checks.site_name(site), checks.node_name(name), checks.incarnation(incarnation)


class MemoryTransaction:
    """A user's open transaction on a ``MemoryStore`` (use as ``connection=``).

    Completions and releases staged in it lock their claim rows and take
    effect at ``commit``; ``rollback`` drops them.  As a context manager it
    commits on success and rolls back on an exception.
    """

    def __init__(self, store: MemoryStore, client: str) -> None:
        self.store = store
        self.client = client
        self.open = True
        self._ops: list[tuple[SiteState, str, datetime.date, int, frozenset[str]]] = []
        self._locked: list[tuple[SiteState, ClaimKey]] = []

    def __repr__(self) -> str:
        return f"<MemoryTransaction of {self.client!r}{'' if self.open else ' ended'}>"

    def stage(
        self, state: SiteState, kind: str, day: datetime.date, inc: int, keys: Sequence[str]
    ) -> frozenset[str]:
        """Lock and stage ``kind`` of this incarnation's open claims among ``keys``."""
        mine = state.claims.open_of(day, inc, keys)
        blockers = state.claims.blockers([(day, k) for k in mine], self)
        if blockers:
            self.store._contend(self.client, kind, blockers)
        for key in mine:
            if state.claims.holder.get((day, key)) is not self:
                state.claims.holder[day, key] = self
                self._locked.append((state, (day, key)))
        self._ops.append((state, kind, day, inc, mine))
        return mine

    def commit(self) -> None:
        with self.store._lock:
            self._end()
            for state, kind, day, inc, keys in self._ops:
                if kind == "complete":
                    state.claims.complete(day, inc, keys, self.store.clock())
                else:
                    state.claims.release(day, inc, keys)
            self._ops.clear()

    def rollback(self) -> None:
        with self.store._lock:
            self._end()
            self._ops.clear()

    def _end(self) -> None:
        if not self.open:
            raise InvalidArgument(f"{self!r} already ended")
        self.open = False
        for state, key in self._locked:
            if state.claims.holder.get(key) is self:
                del state.claims.holder[key]
        self._locked.clear()

    def __enter__(self) -> MemoryTransaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.open:
            self.commit() if exc_type is None else self.rollback()
