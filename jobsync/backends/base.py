"""The Backend protocol: the domain verbs the runtime needs, and their contract.

One ``Backend`` object is one client's view of the store: one worker's
connection (PostgreSQL), one process's connection (SQLite), or one simulated
node's handle on a shared in-memory store.  Every verb is scoped by site.
Every time is a float of seconds since the Unix epoch on the *backend's*
clock (PostgreSQL's server clock, the SQLite host's clock, the memory store's
injected clock); worker clocks never decide anything.

The contract is written once, here; implementations do not repeat it
(docs/ARCHITECTURE.md, "Backends").  Shared rules of every verb:

- Atomic: a verb either takes full effect or none (one transaction).
- Errors: driver errors never escape.  A lost or busy connection raises
  ``BackendUnavailable`` (transient; the caller retries); bad arguments raise
  an ``InvalidArgument`` subclass before anything is written; an optimistic
  compare-and-set that lost raises ``ConflictError``; a leader-only verb from a
  node that is not the oldest live node raises ``NotLeader``.
- "Statement clock": where a verb judges a lease expired at its commit, it
  uses the clock at that statement (PostgreSQL ``clock_timestamp()``), not the
  transaction's start, so a lease cannot expire between the check and the
  commit unnoticed.
- Liveness: an incarnation is live while its row is current, its state is
  ``active`` or ``leaving``, and ``last_heartbeat + lease_timeout > now``
  (strict: at exactly ``last_heartbeat + lease_timeout`` it is dead).  Live
  nodes are the ones leadership and planning count.
- Lease expiry (stricter, and what every hand-off away from a holder without
  its acknowledgement requires): an incarnation's lease has EXPIRED when its
  row holds it in state ``dead`` (dead is final: a heartbeat found the lease
  over, a reaper buried it, or it deregistered and left a tombstone); or its
  row holds it and ``last_heartbeat + lease_timeout <= now`` whatever the
  state (an *evicted* incarnation is not live, but its lease still runs until
  then, because the worker may still believe it holds its tokens); or its row
  holds a newer incarnation and ``fence_until <= now``; or no row exists for
  its name (it deregistered).  DirectAssign and reap_claims act only on
  expired leases.
- Change counter: bumped, in the same transaction, by every plan commit that
  writes a token, acknowledgement, finished release, registration, leave,
  deregistration, eviction and lock change.  Heartbeats do not bump it.  Each
  bump also wakes ``wait_for_change`` waiters (PostgreSQL: one NOTIFY per
  transaction, never one per token).
- Incarnations are site-wide increasing integers; generations, epochs and
  incarnations never go backwards, even across a database restart.
- Lost replies: every write verb is safe to repeat after its commit
  succeeded and its answer was lost.  A repeated claim finds its own open
  claim; a repeated registration of the same ``process`` takes its own lost
  incarnation over with no fence; acknowledgements, completions, releases,
  deregistrations and plans are conditioned on what they expect and so
  write nothing the second time.
- Lock waits are bounded.  No verb waits on a row lock held by another
  transaction for longer than the backend's lock timeout (PostgreSQL
  ``lock_timeout``, default 500 ms); past it the verb raises ``LockTimeout``
  (a ``BackendUnavailable``) having written nothing.  Verbs that clean up
  after other incarnations (releasing a dead incarnation's claims in a plan,
  ``reap_claims``, ``deregister``) skip claim rows locked by an open
  transaction (a completion in a user's transaction) instead of waiting;
  ``reap_claims`` releases them later.  ``claim`` never waits on a claim row
  another transaction holds: a task whose claim row exists in committed
  state is not claimed.  A verb never keeps a lock on another node's row
  (the one that node's heartbeat updates) beyond a single statement: judging
  a lease expired and marking it dead is one statement, and is final (a
  heartbeat never renews a lease that has run out).

Token rows.  Every token of a site has one row: ``owner`` (node name or
None), ``incarnation`` (the owning incarnation or None), ``epoch`` (bumped
whenever the owning incarnation changes, even if the name does not), and an
optional pending release: ``pending_to`` (destination name, or None for
"becomes unowned") and ``pending_deadline``.  While a release is pending the
row's owner, incarnation and epoch remain the releaser's: a token in flight
belongs to its releaser until acknowledged or until the releaser's lease
has expired.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs

from jobsync.core.model import (  # re-exported: the values the verbs speak in
    DEAD_NODE_RETENTION,
    MIN_PRUNE_AGE,
    NODE_ACTIVE,
    NODE_DEAD,
    NODE_EVICTED,
    NODE_LEAVING,
    NODE_STATES,
    ClaimRequest,
    ClusterView,
    DirectAssign,
    Glance,
    Heartbeat,
    HeartbeatOutcome,
    HistoryEntry,
    HistoryRecord,
    LockRecord,
    LockSpec,
    NodeRecord,
    OwnedTokens,
    PlanCommit,
    Reaped,
    Registration,
    Revoke,
    SiteInfo,
    TokenTable,
)

__all__ = [
    "AuditRecord",
    "Backend",
    "ClaimRequest",
    "ClusterView",
    "DEAD_NODE_RETENTION",
    "DirectAssign",
    "Glance",
    "Heartbeat",
    "HeartbeatOutcome",
    "HistoryEntry",
    "HistoryRecord",
    "LockRecord",
    "LockSpec",
    "MIN_PRUNE_AGE",
    "NODE_ACTIVE",
    "NODE_DEAD",
    "NODE_EVICTED",
    "NODE_LEAVING",
    "NODE_STATES",
    "NodeRecord",
    "OwnedTokens",
    "PlanCommit",
    "Reaped",
    "Registration",
    "Revoke",
    "SiteInfo",
    "TokenTable",
]


@attrs.frozen(kw_only=True)
class AuditRecord:
    task_key: str
    date: datetime.date
    node: str
    incarnation: int
    token: int
    epoch: int
    status: str
    """``claimed`` or ``done``."""
    claimed_at: float
    completed_at: float | None


@runtime_checkable
class CoordinationBackend(Protocol):
    """The verbs the runtime calls (a worker, an observer).  See the module docstring
    for the rules every verb shares."""

    def ensure_site(self, site: str, total_tokens: int, hash_function: str) -> SiteInfo:
        """Create the site with its constants and ``total_tokens`` unowned token rows
        (epoch 0, or above any epoch the site ever had), or return it if it exists.

        Raises ConfigMismatch, naming both values, if the site exists with a
        different ``total_tokens`` or ``hash_function``.  Safe to race: several
        callers creating one site at once all succeed with one site.
        """
        ...

    def site_info(self, site: str) -> SiteInfo | None:
        """The site's constants and counters, or None if it does not exist."""
        ...

    def register(
        self,
        site: str,
        name: str,
        lease_timeout: float,
        *,
        process: str = "",
        known: int | None = None,
        capacity: float = 1.0,
    ) -> Registration:
        """Register ``name`` as a new incarnation (``last_heartbeat`` = now, state active).

        ``capacity`` is stored in the row (``jobsync.core.capacity`` validates
        it); an operator's drain on the name's row carries over to the new
        incarnation (``rules.takeover``).

        ``process`` identifies the calling process (an opaque string, the same
        for every registration one process makes; stored in the row).  The
        empty string means "unknown" and is never the same process as any
        other registration, itself included.
        ``known`` is the incarnation this process last held under ``name``
        (None for its first registration).

        If a row for ``name`` exists it is taken over: the older incarnation's
        heartbeats answer SUPERSEDED from now on, and ``fence_until`` becomes
        the later of its stored value and the older incarnation's lease end if
        that incarnation was not already dead and belongs to another process
        (an incarnation of the caller's own process adds no fence: the process
        stopped claiming before it registered again, and an incarnation whose
        registration reply was lost never claimed anything).  Bumps the change
        counter.

        Refused with NodeNameConflict, writing nothing, when ``known`` is given
        and the row holds a newer incarnation than ``known`` registered by
        another process: a newer process took the name while this one was
        away, exactly what this process's heartbeat would have answered
        (SUPERSEDED), so an older process can never supersede a newer one by
        registering late.
        """
        ...

    def set_capacity(self, site: str, name: str, incarnation: int, capacity: float) -> bool:
        """Store ``capacity`` in this incarnation's row and bump the counter (the leader
        plans the new split).  False, writing nothing, if the row holds another
        incarnation or none; True without a bump if the capacity is already that."""
        ...

    def heartbeat(
        self, site: str, name: str, incarnation: int, *, watch: str | None = None,
        leading: bool = False,
    ) -> Heartbeat:  # fmt: skip
        """Renew this incarnation's lease if it is unexpired (statement clock).

        One round trip.  Outcomes: RENEWED; EXPIRED if the row is gone, the
        state is dead or evicted, or the lease already ran out (the row is then
        marked dead so it can never be renewed); SUPERSEDED if the row holds a
        newer incarnation.  Only RENEWED writes.

        An ordinary heartbeat touches its own node row and the site row, and
        with ``watch`` (a node name) that node's row, read by its key: its
        lease end if it is live (``Heartbeat.watched_expiry``).  Only with
        ``leading=True`` does it look at every node row of the site, for the
        earliest lease end and the count of the other live nodes (the leader
        asks; docs/PROTOCOL.md section 4, "Noticing a death").  InvalidArgument
        names a bad ``watch`` or a ``leading`` that is not a bool.
        """
        ...

    def mark_leaving(self, site: str, name: str, incarnation: int) -> bool:
        """Set state ``leaving`` for this incarnation if it is live; bump the counter.

        Returns False (writing nothing) if the incarnation is not current and live.
        """
        ...

    def deregister(self, site: str, name: str, incarnation: int) -> bool:
        """Leave for good: this incarnation's remaining tokens become unowned (epoch
        bumped, pending releases cleared), its open claims are released (claim
        rows locked by an open transaction are skipped; ``reap_claims`` releases
        them later) and its row is deleted, unless the row still fences an older
        incarnation (``fence_until`` after the statement clock) or some of its
        claims were skipped as locked: then the row stays, marked dead with its
        fence intact, so the older incarnation's tokens stay out of reach until
        the fence is over (a process that took a name over and then gave up must
        not hand the older process's tokens on while it may still claim them),
        and the leader, seeing a node that is not live, reaps the skipped claims
        once their transaction has ended.  Bumps the counter.  False (nothing
        written) if the row holds another incarnation or none.
        """
        ...

    def read_nodes(self, site: str) -> tuple[float, tuple[NodeRecord, ...]]:
        """The backend's now and every node row of the site, oldest first."""
        ...

    def glance(self, site: str, name: str) -> Glance:
        """The backend's now, the row holding ``name`` and the site's leader
        (``rules.oldest_live``): what a node that does not lead reads after a
        change, in rows touched independent of the number of nodes (the leader
        reads every row with ``read_nodes``).  UnknownSite if the site is missing."""
        ...

    def read_cluster(self, site: str) -> ClusterView:
        """A consistent snapshot for planning: nodes, every token row, unexpired locks."""
        ...

    def commit_plan(self, site: str, commit: PlanCommit) -> int:
        """Apply a plan atomically; return the site's generation afterwards.

        Checks, at commit (statement clock): the site's generation equals
        ``expected_generation`` (else ConflictError); the leader incarnation is
        the oldest live node (else NotLeader); every written row still holds
        what the plan read (else ConflictError); every DirectAssign's expected
        incarnation's lease has expired (else ConflictError).  On any failure nothing
        is written.  With token writes: bumps the generation and the change
        counter, records the history entry, and wakes waiters.  With none: only
        raises ``plan_basis`` to ``basis`` (no generation bump, no counter bump,
        no history) and wakes waiters so joining nodes see they were considered.
        """
        ...

    def read_owned(self, site: str, name: str, incarnation: int) -> OwnedTokens:
        """The tokens held by this incarnation, with epochs, pending flags and incoming count."""
        ...

    def ack_releases(
        self, site: str, name: str, incarnation: int, tokens: Sequence[tuple[int, int]]
    ) -> frozenset[int]:
        """Acknowledge pending releases of (token, epoch) pairs held by this incarnation.

        Each acknowledged token passes to its destination's current incarnation
        (unowned if the destination has no row or is not live) with its epoch
        bumped and the release cleared.  Pairs that do not match (other holder,
        other epoch, nothing pending) are skipped.  Returns the tokens acknowledged;
        bumps the counter if any.
        """
        ...

    def evict_overdue(self, site: str, leader: str, leader_incarnation: int) -> tuple[str, ...]:
        """Leader only (else NotLeader): mark evicted every incarnation holding a
        release whose deadline has passed (deadline <= statement clock).  Its next
        heartbeat answers EXPIRED; its tokens move once its lease has run out.
        Returns the names evicted; bumps the counter if any.
        """
        ...

    def claim(
        self,
        site: str,
        date: datetime.date,
        name: str,
        incarnation: int,
        requests: Sequence[ClaimRequest],
    ) -> frozenset[str]:
        """Claim tasks in one round trip; return the task keys claimed.

        A request is accepted only if its token row holds this incarnation at
        that epoch with no release pending, and no claim or completion exists
        for (site, date, task_key).  Duplicate keys in one call count once.
        """
        ...

    def complete(
        self,
        site: str,
        date: datetime.date,
        incarnation: int,
        task_keys: Sequence[str],
        *,
        cost: float | None = None,
    ) -> frozenset[str]:
        """Mark this incarnation's open claims done; return the keys completed.

        ``cost`` (positive, finite; None: not given) is stored with each
        completed claim for the leader's load estimate (``CompletionFeed``).
        Fenced by the claim itself (not the token's current epoch): a claim
        made before a hand-off may still be completed.  To complete inside the caller's own
        transaction, see ``TransactionalCompletion``.
        """
        ...

    def release(
        self,
        site: str,
        date: datetime.date,
        incarnation: int,
        task_keys: Sequence[str],
    ) -> frozenset[str]:
        """Give back this incarnation's open claims (delete them); return the keys released.

        A claim row locked by an open transaction (for example the
        caller's own, which completed it with ``connection=``) raises
        LockTimeout after the lock timeout.
        """
        ...

    def open_claims(
        self, site: str, date: datetime.date, incarnation: int, task_keys: Sequence[str]
    ) -> frozenset[str]:
        """Which of ``task_keys`` are still open claims of this incarnation (committed
        state; never waits on a lock).  Lets a Job forget completions made in user
        transactions that have since committed."""
        ...

    def read_audit(
        self, site: str, date: datetime.date, name: str | None = None
    ) -> tuple[AuditRecord, ...]:
        """Claims and completions of a date (optionally of one node), by task key."""
        ...

    def reap_claims(self, site: str) -> Reaped:
        """Release open claims whose incarnation's lease has expired (statement clock),
        skipping claim rows locked by an open transaction, and delete node rows
        that are not live, whose lease ended more than ``DEAD_NODE_RETENTION``
        seconds ago, whose fence is over and that no token row names.  Holds no
        lock on a live node's row beyond one statement.  Returns how many claims
        it released and how many open claims of ended incarnations it skipped as
        locked (the caller looks again later while any are)."""
        ...

    def replace_locks(
        self, site: str, creator: str, locks: Sequence[LockSpec], clear_existing: bool
    ) -> int:
        """One transaction: optionally delete ``creator``'s locks, then upsert
        ``locks`` keyed by (site, task_key) with ``creator`` as their creator
        (whoever registers a lock last owns it).  An existing lock keeps its
        ``created_at``.  Bumps the counter.  Returns the number of locks written.
        """
        ...

    def list_locks(self, site: str) -> tuple[LockRecord, ...]:
        """Unexpired locks, ordered by (created_at, task_key)."""
        ...

    def clear_locks(self, site: str, creator: str | None) -> int:
        """Delete ``creator``'s locks, or all the site's locks if None; bump the counter
        if any.  Returns how many were deleted."""
        ...

    def wait_for_change(self, site: str, timeout: float) -> bool:
        """Block until a change of ``site`` is signalled, or ``timeout`` seconds pass.

        Edge-triggered like PostgreSQL's LISTEN: True if any change (a counter
        bump or a plan-basis update) was signalled since this handle's previous
        call (or since it first touched the site), False on timeout.  So a
        change that lands between the caller's last read and this call is never
        lost.  A hint only: correctness rides on the counters that heartbeats
        return.  Memory: a condition variable.  SQLite: polls the site's counters
        every ``poll_interval`` (at most 200 ms; one indexed single-row read per
        poll).  PostgreSQL: LISTEN/NOTIFY on the site's channel.
        """
        ...

    def now(self) -> float:
        """The backend's clock."""
        ...

    def statistics(self) -> Mapping[str, int]:
        """Counters for load tests: per-verb call counts, and ``round_trips``, the
        requests sent to the database (a statement, BEGIN or COMMIT on PostgreSQL; a
        transaction or poll on SQLite; a verb on memory).  A LISTEN wait and a local
        ``now()`` cost none.  Local and safe on a closed handle."""
        ...

    def close(self) -> None:
        """Release the connection; further calls raise BackendUnavailable."""
        ...


@runtime_checkable
class OperatorBackend(Protocol):
    """The verbs operators' tools call (the command line): sites, history, pruning,
    planned maintenance."""

    def list_sites(self) -> tuple[str, ...]:
        """The names of every site in the store, sorted (for operators' views)."""
        ...

    def reset_site(self, site: str, total_tokens: int, hash_function: str) -> SiteInfo:
        """Operator command: change a site's constants and rebuild its token rows.

        Refused with ConflictError while any node of the site is live.  Epochs
        of the new rows start above every epoch the site had.
        """
        ...

    def read_history(self, site: str, limit: int = 50) -> tuple[HistoryRecord, ...]:
        """The latest rebalances, newest first."""
        ...

    def set_drain(
        self,
        site: str,
        name: str,
        drained: bool,
        *,
        duration: float | None = None,
        note: str = "",
    ) -> NodeRecord | None:
        """Planned maintenance: drain the node ``name`` (or undrain it, ``drained`` False).

        Draining records ``drained_at`` = now (backend clock), ``drain_until``
        = now + ``duration`` (None: until undrained) and ``note`` (who and why)
        in the name's row, whatever incarnation holds it; undraining clears
        all three.  Bumps the counter, so the leader plans the node to zero
        tokens (or its share back).  Returns the row as written, or None
        (nothing written) if the site has no row for ``name``.
        """
        ...

    def prune(self, site: str, older_than: float, batch_size: int = 10_000) -> Mapping[str, int]:
        """Delete audit rows and history older than ``older_than`` seconds (backend
        clock), in batches; return the counts deleted per kind.  Open claims are
        never pruned.  ``older_than`` below ``MIN_PRUNE_AGE`` (one day) is refused
        with InvalidArgument naming the value: a completion of today's batch, once
        pruned, would let its task be claimed again."""
        ...


@runtime_checkable
class Backend(CoordinationBackend, OperatorBackend, Protocol):
    """Every verb: what each shipped backend implements."""
