"""The model of jobsync: the frozen values every layer speaks in.

Node rows, the token table, a consistent cluster view, plan commits and
their writes, hand-off records, lock specs and records, and claim requests.
They are plain data, validated where they are built, with no behaviour
beyond what reads them; the rules that judge them (who is live, whose lease
has expired, who leads, what a heartbeat finds, whether a plan still fits
the rows it read) live in ``jobsync.core.rules``.  The backends store these
values and the runtime drives them; ``jobsync.backends.base`` re-exports
them next to the ``Backend`` protocol.  (Audit records stay there: they
carry a calendar date, and the core takes no calendar type.)

Per-token data is flat: ``TokenTable`` is parallel tuples and an array
indexed by token id, never one object per token.  Every time is a float of
seconds since the Unix epoch on the backend's clock.
"""

from __future__ import annotations

import enum
from array import array

import attrs

NODE_ACTIVE = "active"
NODE_LEAVING = "leaving"
NODE_DEAD = "dead"
NODE_EVICTED = "evicted"
NODE_STATES = (NODE_ACTIVE, NODE_LEAVING, NODE_DEAD, NODE_EVICTED)
CLAIM_STATUSES = ("claimed", "done")
"""An audit row's status: its claim open, or completed (a released claim has no row)."""


class HeartbeatOutcome(enum.Enum):
    """What a heartbeat found (docs/PROTOCOL.md section 4, "Incarnations and leases")."""

    RENEWED = "renewed"
    """This incarnation's lease was unexpired and is now renewed."""
    EXPIRED = "expired"
    """Expired or evicted (or the row is gone): stop claiming, register anew."""
    SUPERSEDED = "superseded"
    """A newer incarnation of the same name holds the row: stop for good."""


@attrs.frozen(kw_only=True)
class SiteInfo:
    """A site's stored constants and counters."""

    site: str
    total_tokens: int
    hash_function: str
    generation: int
    change_counter: int
    plan_basis: int
    """The change counter the latest plan (even one that moved nothing) was computed from."""
    created_at: float


DEAD_NODE_RETENTION = 600.0
"""Seconds after its lease ended that a dead node row is kept for operators to see;
``reap_claims`` deletes it after that (when no token row names it and its fence is over)."""

MIN_PRUNE_AGE = 86_400.0
"""``prune`` refuses younger ages: a completion younger than a day may be of today's
batch, and deleting it would let its task be claimed again."""


@attrs.frozen(kw_only=True)
class Joining:
    """What ``register`` asks for: a new incarnation of ``name`` on ``site``.

    ``process`` identifies the asking process (empty: unknown); ``known`` is the
    last incarnation of the name that process was told of (None: none), so a
    retry whose first reply was lost takes its own row over unfenced and a late
    one is refused (``rules.takeover``).
    """

    site: str
    name: str
    lease_timeout: float
    process: str = ""
    known: int | None = None
    capacity: float = 1.0


@attrs.frozen(kw_only=True)
class Registration:
    """The result of ``register``."""

    incarnation: int
    registered_at: float
    """Backend time of registration; seniority for leader election."""
    change_counter: int
    """The counter after this registration's own bump: a plan whose basis is at
    least this has considered the node."""
    fence_until: float
    """Tokens still held under this name by older incarnations may move to the
    new one only after this instant (the old lease's end); 0.0 if none."""


@attrs.frozen(kw_only=True)
class Heartbeat:
    """The result of ``heartbeat``: one round trip in the steady state."""

    outcome: HeartbeatOutcome
    now: float
    """Backend clock at the heartbeat; the new ``last_heartbeat`` if renewed."""
    change_counter: int
    plan_basis: int
    earliest_other_expiry: float | None = None
    """Asked with ``leading=True`` only: the earliest ``last_heartbeat +
    lease_timeout`` among the *other* live nodes of the site, or None if there
    are none (the one look at every node row; an ordinary heartbeat has None)."""
    live_others: int | None = None
    """Asked with ``leading=True`` only: how many *other* nodes of the site are
    live now.  A drop tells the leader that a peer died even though no counter
    moved (a death bumps nothing).  None when not asked, or where a backend
    cannot say (the node then falls back to timers)."""
    watched_expiry: float | None = None
    """Asked with ``watch=name``: that node's ``last_heartbeat + lease_timeout``
    if it is live now, else None (not live, or no such row)."""


@attrs.frozen(kw_only=True)
class NodeRecord:
    """One node row as stored."""

    name: str
    incarnation: int
    registered_at: float
    last_heartbeat: float
    lease_timeout: float
    state: str
    fence_until: float = 0.0
    process: str = ""
    """The registering process's identity (see ``Backend.register``)."""
    capacity: float = 1.0
    """The node's share of tokens is proportional to it (``jobsync.core.capacity``)."""
    drained_at: float | None = None
    """When an operator drained the node (planned maintenance); None when not drained."""
    drain_until: float | None = None
    """When the drain ends by itself; None with ``drained_at`` set: until undrained."""
    drain_note: str = ""
    """Who drained the node and why, for operators and the rebalance history."""

    @property
    def lease_expires(self) -> float:
        return self.last_heartbeat + self.lease_timeout

    def is_drained(self, now: float) -> bool:
        """Drained: an operator's drain is set and has not run out (``drain_until > now``).

        A drained node stays live (it heartbeats, it may lead) but the leader
        plans it zero tokens."""
        if self.drained_at is None:
            return False
        return self.drain_until is None or self.drain_until > now

    def is_live(self, now: float) -> bool:
        """Live: active or leaving, and ``last_heartbeat + lease_timeout > now``."""
        return self.state in (NODE_ACTIVE, NODE_LEAVING) and self.lease_expires > now


@attrs.frozen(kw_only=True)
class TokenTable:
    """Every token row of a site, as flat parallel sequences indexed by token id."""

    owner: tuple[str | None, ...]
    incarnation: tuple[int | None, ...]
    epoch: array[int]
    pending_to: tuple[str | None, ...]
    """Destination of a pending release; meaningful only where pending_deadline is set."""
    pending_deadline: tuple[float | None, ...]
    """None when no release is pending for the token."""

    def __len__(self) -> int:
        return len(self.owner)

    def is_pending(self, token: int) -> bool:
        return self.pending_deadline[token] is not None


@attrs.frozen(kw_only=True)
class LockSpec:
    """A lock to register: pins the token of ``task_key`` to nodes matching ``patterns``."""

    task_key: str
    """The task's canonical string (``str(task_id)``)."""
    token: int
    patterns: tuple[str, ...]
    reason: str | None = None
    expires_in: float | None = None
    """Seconds from the backend's now; None never expires."""


@attrs.frozen(kw_only=True)
class LockRecord:
    """A stored lock."""

    task_key: str
    token: int
    patterns: tuple[str, ...]
    reason: str | None
    created_by: str
    created_at: float
    expires_at: float | None


@attrs.frozen(kw_only=True)
class ClusterView:
    """One consistent snapshot of a site for planning (read in one transaction)."""

    now: float
    site: SiteInfo
    nodes: tuple[NodeRecord, ...]
    tokens: TokenTable
    locks: tuple[LockRecord, ...]
    """Unexpired locks only (``expires_at`` None or ``> now``)."""


@attrs.frozen(kw_only=True)
class Reaped:
    """What one reap did: claims it released, and open claims of ended incarnations
    it left because an open transaction held their rows (a dead worker's, until
    the server sees its connection end): a later reap must look again."""

    released: int
    skipped: int


@attrs.frozen(kw_only=True)
class Glance:
    """A non-leader's read of the node rows: its own and the leader's, nothing else.

    What ``read_nodes`` would give a node that does not lead, in rows touched
    independent of the site's size: the leader is ``rules.oldest_live`` of
    every row, found in seniority order (the first live row), and the node's
    own row says whether an operator drained it."""

    now: float
    own: NodeRecord | None
    """The row of the asking name (whichever incarnation holds it), or None."""
    leader: NodeRecord | None
    """The oldest live row of the site (``rules.oldest_live``), or None when none is live."""

    @property
    def nodes(self) -> tuple[NodeRecord, ...]:
        """The rows read, oldest first, each once."""
        rows = {(r.name, r.incarnation): r for r in (self.leader, self.own) if r is not None}
        return tuple(sorted(rows.values(), key=lambda r: (r.registered_at, r.name)))


@attrs.frozen(kw_only=True)
class OwnedTokens:
    """What one incarnation holds, for its claimable snapshot."""

    now: float
    change_counter: int
    plan_basis: int
    tokens: tuple[int, ...]
    """Tokens whose row names this incarnation, ascending (pending ones included)."""
    epochs: tuple[int, ...]
    """The epoch of each token in ``tokens``."""
    pending: frozenset[int]
    """Those of ``tokens`` with a release pending: not claimable, to acknowledge."""
    incoming: int
    """Tokens on their way to this node: pending releases destined to its name,
    and tokens held under its name by an older incarnation."""


@attrs.frozen(kw_only=True)
class DirectAssign:
    """Plan write: give ``token`` straight to (``owner``, ``incarnation``).

    Allowed only when the row still holds ``expected_incarnation`` at
    ``expected_epoch`` and that incarnation's lease has EXPIRED (see the
    module docstring: an evicted but unexpired incarnation does not qualify;
    None = unowned).  The
    transaction marks the expired incarnation dead (statement clock), clears
    any pending release, bumps the epoch and releases the dead incarnation's
    open claims.  ``owner`` None leaves the token unowned.
    """

    token: int
    expected_incarnation: int | None
    expected_epoch: int
    owner: str | None
    incarnation: int | None


@attrs.frozen(kw_only=True)
class Revoke:
    """Plan write: ask the live holder of ``token`` to release it to ``destination``.

    Conditioned on ``expected_incarnation`` and ``expected_epoch``.  If no
    release is pending, records one with deadline ``commit time +
    ack_timeout``; if one is pending, only its destination changes (never
    cleared, re-attributed or extended).  ``destination`` may be the releaser
    itself (the token comes back to it at a new epoch) or None (unowned).
    """

    token: int
    expected_incarnation: int
    expected_epoch: int
    destination: str | None


@attrs.frozen(kw_only=True)
class HistoryEntry:
    """One rebalance, recorded in the plan's own transaction."""

    trigger: str
    nodes_before: tuple[str, ...]
    nodes_after: tuple[str, ...]
    moved: int
    unowned: int
    duration_ms: float
    hot: tuple[int, ...] | None = None
    """The tokens measured hot when the plan was made (None: load is not balanced)."""


@attrs.frozen(kw_only=True)
class HistoryRecord:
    generation: int
    leader: str
    at: float
    entry: HistoryEntry


@attrs.frozen(kw_only=True)
class PlanCommit:
    """Everything one plan writes, in one compare-and-set transaction."""

    leader: str
    leader_incarnation: int
    expected_generation: int
    basis: int
    """The change counter the plan was computed from (recorded as plan_basis)."""
    assigns: tuple[DirectAssign, ...] = ()
    revokes: tuple[Revoke, ...] = ()
    ack_timeout: float = 10.0
    history: HistoryEntry | None = None


@attrs.frozen(kw_only=True)
class ClaimRequest:
    """One task to claim: its canonical key, its token and the epoch the claimer holds."""

    task_key: str
    token: int
    epoch: int
