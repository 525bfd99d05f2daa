"""``MemoryBackend``: one client's handle on a ``MemoryStore``.

The verbs are grouped in mixins over ``_HandleCore``, the plumbing they share
(admission through the store's faults, one atomic run per verb on the site's
state, meeting row locks, the edge-triggered wait): ``_SiteVerbs`` (sites,
membership, planning, hand-off, locks, history) and ``_ClaimVerbs`` (claims,
completion, reaping).  What each verb does to a site is ``SiteState``'s.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import attrs

from jobsync.backends import _checks as checks
from jobsync.backends import base as B
from jobsync.backends.capabilities import Completion
from jobsync.backends.memory.records import ClaimKey
from jobsync.backends.memory.site import SiteState
from jobsync.backends.memory.transaction import MemoryTransaction
from jobsync.backends.node_verbs import DrainOrder, DrainVerb, RegisterVerb
from jobsync.backends.settle import HERE, ClaimOrder, ClaimVerb, Settlement, SettleVerbs
from jobsync.core import rules
from jobsync.core.errors import BackendUnavailable, InvalidArgument
from jobsync.core.hashing import validate_hash_function, validate_total_tokens
from jobsync.core.model import Joining, Reaped

if TYPE_CHECKING:
    from jobsync.backends.memory.store import MemoryStore

_T = TypeVar("_T")

_LOCAL_VERBS = frozenset({"wait_for_change", "now"})
"""``_settle`` outside any user transaction (``None`` is a connection it refuses)."""


def _update_node(
    state: SiteState, name: str, change: Callable[[B.NodeRecord], B.NodeRecord | None]
) -> B.NodeRecord | None:
    """Store ``change(row)`` as the name's row (None: no row, or ``change`` declined);
    bump the counter if the row changed."""
    row = state.nodes.get(name)
    new = None if row is None else change(row)
    if new is not None and new != row:
        state.nodes[name] = new
        state.bump()
    return new


class _HandleCore:
    """What every verb of a handle shares; the reaction verbs and the local ones."""

    def __init__(self, store: MemoryStore, client: str) -> None:
        self.client = client
        self._store = store
        self._closed = False
        self._interrupted = False  # interrupt_wait: the running (or next) wait returns
        self._calls: Counter[str] = Counter()
        self._verb = ""
        self._seen: dict[str, int] = {}
        """Per site, the signal count this handle has been told of (edge trigger)."""

    def _entering(self, verb: str) -> None:
        self._begin(verb)

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

    def _member(self, site: str, name: str, incarnation: int) -> tuple[str, str, int]:
        return checks.site_name(site), checks.node_name(name), checks.incarnation(incarnation)

    # -- reaction -----------------------------------------------------------------

    def wait_for_change(self, site: str, timeout: float) -> bool:
        self._begin("wait_for_change")
        site = checks.site_name(site)
        wait = checks.seconds("timeout", timeout, allow_zero=True)
        store = self._store
        with store._lock:
            state = store._site(site)
            seen = self._seen.setdefault(site, state.signals)
            if state.signals <= seen and not self._interrupted:
                store._changed.wait_for(
                    lambda: state.signals > self._seen[site] or self._interrupted, wait
                )
            if state.signals <= self._seen[site]:
                self._interrupted = False
                return False
            self._seen[site] = state.signals
            return True

    def interrupt_wait(self) -> None:
        """``InterruptibleWait``: wakes the waiter on the store's condition."""
        store = self._store
        with store._lock:
            self._interrupted = True
            store._changed.notify_all()

    def now(self) -> float:
        self._begin("now")
        with self._store._lock:
            return self._store.clock()

    def statistics(self) -> Mapping[str, int]:
        with self._store._lock:
            return {"round_trips": 0, **self._calls}

    def close(self) -> None:
        self._closed = True


class _SiteVerbs(_HandleCore, RegisterVerb, DrainVerb):
    """Sites, membership, planning, hand-off, locks and history."""

    # -- sites ------------------------------------------------------------------

    def ensure_site(self, site: str, total_tokens: int, hash_function: str) -> B.SiteInfo:
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

    def site_info(self, site: str) -> B.SiteInfo | None:
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

    def reset_site(self, site: str, total_tokens: int, hash_function: str) -> B.SiteInfo:
        self._begin("reset_site")
        site = checks.site_name(site)
        total = validate_total_tokens(total_tokens)
        name = validate_hash_function(hash_function)
        return self._run(site, lambda s, now: s.reset(total, name, now))

    # -- membership -------------------------------------------------------------

    def _register(self, joining: Joining) -> B.Registration:
        return self._run(joining.site, lambda s, now: s.register(joining, now))

    def set_capacity(self, site: str, name: str, incarnation: int, capacity: float) -> bool:
        self._begin("set_capacity")
        site, name, inc = self._member(site, name, incarnation)
        cap = checks.capacity(capacity)

        def change(row: B.NodeRecord) -> B.NodeRecord | None:
            return attrs.evolve(row, capacity=cap) if row.incarnation == inc else None

        return self._run(site, lambda s, _: _update_node(s, name, change)) is not None

    def heartbeat(
        self, site: str, name: str, incarnation: int, *, watch: str | None = None,
        leading: bool = False,
    ) -> B.Heartbeat:  # fmt: skip
        self._begin("heartbeat")
        site, name, inc = self._member(site, name, incarnation)
        watch, leading = checks.heartbeat_asks(watch, leading)
        store = self._store
        with store._lock:
            holder = store.node_locks.get((site, name))
        if holder is not None:
            store._contend(self.client, "heartbeat", [holder])
        return self._run(site, lambda s, now: s.heartbeat(name, inc, now, watch, leading))

    def mark_leaving(self, site: str, name: str, incarnation: int) -> bool:
        self._begin("mark_leaving")
        site, name, inc = self._member(site, name, incarnation)
        return self._run(site, lambda s, now: s.mark_leaving(name, inc, now))

    def deregister(self, site: str, name: str, incarnation: int) -> bool:
        self._begin("deregister")
        site, name, inc = self._member(site, name, incarnation)
        self._wait_unless_bounded(site, lambda s: s.claims.open_keys_of([inc]))
        return self._run(site, lambda s, now: s.deregister(name, inc, now))

    def read_nodes(self, site: str) -> tuple[float, tuple[B.NodeRecord, ...]]:
        self._begin("read_nodes")
        return self._run(checks.site_name(site), lambda s, now: (now, s.sorted_nodes()))

    def glance(self, site: str, name: str) -> B.Glance:
        self._begin("glance")
        site, name = checks.site_name(site), checks.node_name(name)
        return self._run(
            site,
            lambda s, now: B.Glance(now=now, own=s.nodes.get(name), leader=s.leader(now)),
        )

    # -- planning ---------------------------------------------------------------

    def read_cluster(self, site: str) -> B.ClusterView:
        self._begin("read_cluster")
        return self._run(checks.site_name(site), lambda s, now: s.read_cluster(now))

    def commit_plan(self, site: str, commit: B.PlanCommit) -> int:
        self._begin("commit_plan")
        site, commit = checks.site_name(site), checks.plan_shape(commit)
        hook = self._store.before_commit
        if hook is not None:
            hook(self.client, commit)
        buried = sorted({a.expected_incarnation or 0 for a in commit.assigns} - {0})
        self._wait_unless_bounded(site, lambda s: s.claims.open_keys_of(buried))
        return self._run(site, lambda s, now: s.commit(commit, now))

    def read_owned(self, site: str, name: str, incarnation: int) -> B.OwnedTokens:
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

    def evict_overdue(self, site: str, leader: str, leader_incarnation: int) -> tuple[str, ...]:
        self._begin("evict_overdue")
        site, leader, inc = self._member(site, leader, leader_incarnation)
        return self._run(site, lambda s, now: s.evict(leader, inc, now))

    # -- locks ------------------------------------------------------------------

    def replace_locks(
        self, site: str, creator: str, locks: Sequence[B.LockSpec], clear_existing: bool
    ) -> int:
        self._begin("replace_locks")
        site, creator = checks.site_name(site), checks.node_name(creator)
        if not isinstance(clear_existing, bool):
            raise InvalidArgument(f"clear_existing must be a bool, got {clear_existing!r}")
        return self._run(site, lambda s, now: s.replace_locks(creator, locks, clear_existing, now))

    def list_locks(self, site: str) -> tuple[B.LockRecord, ...]:
        self._begin("list_locks")
        return self._run(checks.site_name(site), lambda s, now: s.list_locks(now))

    def clear_locks(self, site: str, creator: str | None) -> int:
        self._begin("clear_locks")
        site, who = checks.site_name(site), checks.optional_node_name(creator)
        return self._run(site, lambda s, now: s.clear_locks(who, now))

    # -- history and maintenance --------------------------------------------------

    def read_history(self, site: str, limit: int = 50) -> tuple[B.HistoryRecord, ...]:
        self._begin("read_history")
        site, count = checks.site_name(site), checks.integer("limit", limit, minimum=1)
        return self._run(site, lambda s, _: s.read_history(count))

    def _set_drain(self, order: DrainOrder) -> B.NodeRecord | None:
        name, until, text = order.name, order.duration, order.note

        def run(state: SiteState, now: float) -> B.NodeRecord | None:
            if order.drained:
                return _update_node(state, name, lambda row: rules.drain(row, now, until, text))
            return _update_node(state, name, rules.undrain)

        return self._run(order.site, run)

    def prune(self, site: str, older_than: float, batch_size: int = 10_000) -> Mapping[str, int]:
        self._begin("prune")
        site = checks.site_name(site)
        age = checks.prune_age(older_than)
        checks.integer("batch_size", batch_size, minimum=1)
        return self._run(site, lambda s, now: s.prune(age, now))


class _ClaimVerbs(_HandleCore, ClaimVerb, SettleVerbs):
    """Claims, completion (here or in a user's transaction) and reaping."""

    def _claim(self, order: ClaimOrder) -> frozenset[str]:
        site, day, name, inc = order.site, order.day, order.name, order.incarnation
        requests = order.requests
        self._wait_unless_bounded(
            site, lambda s: [(day, r.task_key) for r in requests if isinstance(r, B.ClaimRequest)]
        )
        return self._run(site, lambda s, now: s.claim(day, name, inc, requests, now))

    def _settle(self, settlement: Settlement, inside: object = HERE) -> frozenset[str]:
        """Here, meeting the row locks on the claims, or staged ``inside`` the user's
        transaction (a ``MemoryTransaction``, checked), which locks them until it ends.
        Either way the verb is counted, and faults meet it, by its kind's name."""
        kind, site, day = settlement.kind, settlement.site, settlement.day
        inc, keys, cost = settlement.incarnation, settlement.keys, settlement.cost
        if inside is not HERE:
            tx = self._transaction(inside)
            return self._run(site, lambda s, _: tx.stage(s, settlement))
        self._wait_for_claims(site, lambda s: [(day, k) for k in s.claims.open_of(day, inc, keys)])
        return self._run(site, lambda s, now: s.claims.settle(kind, day, inc, keys, now, cost=cost))

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
    ) -> tuple[B.AuditRecord, ...]:
        self._begin("read_audit")
        site, day = checks.site_name(site), checks.claim_date(date)
        node = checks.optional_node_name(name)
        return self._run(site, lambda s, _: s.claims.audit(day, node))

    def read_completions(self, site: str, after: float, limit: int) -> tuple[Completion, ...]:
        self._begin("read_completions")
        site = checks.site_name(site)
        after, limit = checks.completion_window(after, limit)
        return self._run(site, lambda s, _: s.claims.completions(after, limit))

    def reap_claims(self, site: str) -> Reaped:
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


class MemoryBackend(_SiteVerbs, _ClaimVerbs):
    """One client's handle on a ``MemoryStore``: the ``Backend`` protocol and
    ``TransactionalCompletion`` (its connection: a ``MemoryTransaction``)."""

    def __repr__(self) -> str:
        return f"<MemoryBackend client={self.client!r}{' closed' if self._closed else ''}>"
