"""The node: one worker's protocol logic as a tick-driven state machine.

``Node.tick(now, events)`` reads the backend, asks the core and writes back,
then returns the local instant by which it wants to be ticked again.  It
never reads a clock, sleeps or starts a thread: the production loop
(``runtime/loop.py``) and the simulator (``jobsync.sim``) both drive this
same class, so what the simulator proves is what production runs.

How the hand-off protocol (docs/PROTOCOL.md section 4) lands here:

- Lease.  The local lease ends at ``send time of the last successful
  heartbeat + heartbeat_timeout - safety_margin``, with ``now`` taken before
  the request is sent.  The published snapshot carries that deadline, so
  ``can_claim_task`` answers False past it without waiting for this thread.
- Heartbeat outcomes.  RENEWED extends the lease; EXPIRED self-fences at
  once and registers a new incarnation (tokens still recorded under the name
  come back through the leader with zero moves, once the old lease is over);
  SUPERSEDED self-fences for good and surfaces ``NodeNameConflict``.
- Reaction.  A change counter or plan basis that moved since the last read,
  a notification, or the fallback reconciliation period makes the node read
  its nodes and its tokens; otherwise the heartbeat is the only round trip.
- Failover.  A node that does not lead watches the leader of its latest
  read: its heartbeat returns that node's lease end (or says it is no longer
  live: then the node reads again); the leader's heartbeat returns the
  earliest lease end among all the others.  If this node would lead once
  that node is gone, it schedules one look at exactly that instant.  Only
  the leader's heartbeat reads every node row (docs/PROTOCOL.md section 4,
  "Noticing a death").
- Hand-off.  Tokens with a pending release leave the snapshot *before* the
  acknowledgement is sent.  The leader's writes come from ``leader.decide``.
- Reaping.  The leader releases the claims of ended incarnations when it
  reads that one it has not reaped yet is no longer live (dead, or gone:
  deregistered), and once more a reconciliation interval later for claim
  rows a user's open transaction kept locked; a quiet site reaps nothing.
- Drain.  ``DRAIN`` marks the row leaving; the node stops claiming at once,
  acknowledges its revokes as they come, and deregisters once it holds
  nothing.
- Errors.  Only a final error ends a node: ``NodeNameConflict`` (a newer
  process owns the name; raised by ``register`` it ends the node exactly as
  a SUPERSEDED heartbeat does), and configuration or programming errors
  from the store (``ConfigError``, ``SchemaError``, ``InvalidArgument``,
  ``IllegalTransition``).  Every other ``JobSyncError`` (unavailable, a lock
  timeout, ``NotLeader`` or ``ConflictError`` from a leader whose lease ended
  mid-pass, any other ``BackendError``) is retried with capped backoff,
  counted and logged, and the next attempt reads leadership again.
- Lost replies.  A node has one process identity and passes it, with the
  last incarnation it knows, to every ``register``.  A registration whose
  reply was lost is retried as a registration (the backend hands this
  process its own lost incarnation back), never answered by heartbeating
  the old incarnation, which would find the lost one and stop for good.
- Defences.  ``defences`` (``jobsync.core.defences``) is ``PRODUCTION`` except
  in the simulator's tests of its own teeth; each False field brings back
  exactly one defect (docs/PROTOCOL.md section 7).
- Agenda.  Everything the node means to do later is an entry of its
  ``agenda`` (``runtime/agenda.py``) with a reason: the wants ``refresh``
  (read nodes and tokens) and ``lead`` (plan), the timers ``heartbeat``,
  ``refresh`` (reconciliation), ``peer-check``, ``lead`` (the leader's next
  look), ``lease-end`` and the quiet ``reap``, the settle-window gate on
  ``lead`` and the backoff after a failed step.  ``agenda.last_wake`` says
  why the latest tick ran.
- Parts.  Registration and heartbeats are ``runtime/membership.py``, the
  leader's pass ``runtime/leading.py``, the published snapshot and events
  ``runtime/publishing.py``; this class steps them and reads the rows.
"""

from __future__ import annotations

import enum
import logging
import random
import uuid
from collections.abc import Callable, Iterable

from jobsync.backends.base import Backend, NodeRecord, Registration
from jobsync.core import rules
from jobsync.core.defences import PRODUCTION, Defences
from jobsync.core.errors import (
    BackendUnavailable,
    ConfigError,
    IllegalTransition,
    InvalidArgument,
    JobSyncError,
    NodeNameConflict,
    SchemaError,
)
from jobsync.core.lifecycle import CLAIMING, TERMINAL, NodeEvent, NodeState, transition
from jobsync.runtime.agenda import ALWAYS, NEVER, Agenda
from jobsync.runtime.config import CoordinationConfig
from jobsync.runtime.leading import HEARTBEAT, LEAD, PEER_CHECK, REFRESH, Leading
from jobsync.runtime.membership import Membership
from jobsync.runtime.publishing import Publisher, RebalanceEvent
from jobsync.runtime.snapshot import ClaimSnapshot

__all__ = ["FINAL_ERRORS", "NEVER", "Node", "RebalanceEvent", "Signal"]

log = logging.getLogger("jobsync.node")

FINAL_ERRORS: tuple[type[JobSyncError], ...] = (
    NodeNameConflict,
    ConfigError,
    SchemaError,
    InvalidArgument,
    IllegalTransition,
)
"""Errors that end a node: retrying cannot help (see the module docstring)."""


STATS = (
    "heartbeats",
    "heartbeat_failures",
    "transient_errors",
    "retried_errors",
    "plans_committed",
    "plan_conflicts",
    "acks",
    "reregistrations",
    "evictions",
    "reaps",
)
"""The counters every node keeps from its start (others appear when first counted)."""


class Signal(enum.Enum):
    """Events a driver hands to ``tick``."""

    NOTIFIED = "notified"
    DRAIN = "drain"


class Node:
    """One worker's coordination state.  Drive it with ``tick``; read ``snapshot``."""

    def __init__(
        self,
        backend: Backend,
        site: str,
        name: str,
        config: CoordinationConfig,
        *,
        rng: random.Random | None = None,
        plan_timer: Callable[[], float] | None = None,
        defences: Defences = PRODUCTION,
        process: str | None = None,
        capacity: float = 1.0,
    ) -> None:
        """``process`` identifies the process this node runs in for ``register``
        (default: a fresh random identity, one per Node); the simulator passes
        one per simulated process.  ``capacity`` is registered with every
        incarnation (``set_capacity`` changes it).  ``defences`` is for the
        simulator only."""
        self.backend = backend
        self.capacity = capacity
        self.drained = False  # an operator drained this node (its row, at the latest read)
        self.held = 0  # tokens this incarnation held at the latest read
        self.defences = defences
        self.process = uuid.uuid4().hex if process is None else process
        self.site = site
        self.name = name
        self.config = config
        self.state = NodeState.STARTING
        self.registration: Registration | None = None
        self.error: JobSyncError | None = None
        self.is_leader = False
        self.nodes: tuple[NodeRecord, ...] = ()
        """The node rows of the latest read: every row while leading, else this
        node's own and the leader's (``_read_rows``)."""
        self.generation = 0
        self.stats: dict[str, int] = dict.fromkeys(STATS, 0)
        self.agenda = Agenda()
        self.agenda.want(REFRESH, reason="start")
        self.agenda.at(HEARTBEAT, ALWAYS, reason="start")
        self.rng = rng or random.Random()
        self.leading = Leading(self, plan_timer)
        self.membership = Membership(self)
        self.publisher = Publisher(
            config.total_tokens, self.agenda, self_fencing=defences.self_fencing
        )
        self.offset = 0.0  # backend time - local time, from the latest response
        self._failures = 0
        self.seen = (-1, -1)  # (change counter, plan basis) last read
        self._drain_requested = False
        self.marked_leaving = False
        self.live_names: frozenset[str] = frozenset()

    # -- public view ------------------------------------------------------
    @property
    def snapshot(self) -> ClaimSnapshot:
        return self.publisher.snapshot

    @snapshot.setter
    def snapshot(self, snap: ClaimSnapshot) -> None:
        """Replace the published snapshot as is (the simulator's tests of invariant 1)."""
        self.publisher.snapshot = snap

    @property
    def token_version(self) -> int:
        return self.publisher.version

    @property
    def events(self) -> list[RebalanceEvent]:
        """Rebalance events not taken yet."""
        return self.publisher.events

    def take_events(self) -> list[RebalanceEvent]:
        return self.publisher.take_events()

    @property
    def incarnation(self) -> int | None:
        return self.registration.incarnation if self.registration else None

    @property
    def ready(self) -> bool:
        return self.state is NodeState.ACTIVE

    @property
    def draining(self) -> bool:
        return self._drain_requested

    @property
    def maintenance(self) -> str | None:
        """Planned maintenance (an operator's drain): None, ``"draining"`` while
        tokens are still held, ``"drained"`` at zero (as of the latest read)."""
        if not self.drained:
            return None
        return "draining" if self.held else "drained"

    @property
    def waiting_for(self) -> str:
        """What stands between this node and ready, in words (for timeouts and status)."""
        return waiting_for(self)

    def lease_valid(self, now: float) -> bool:
        return now < self.publisher.lease_deadline

    def backend_time(self, now: float) -> float:
        """The backend's clock estimated from the latest response."""
        return now + self.offset

    # -- the step ---------------------------------------------------------
    def tick(self, now: float, events: Iterable[Signal] = ()) -> float:
        """Advance the protocol at local instant ``now``; return when to tick next."""
        agenda = self.agenda
        for event in events:
            if event is Signal.NOTIFIED:
                agenda.want(REFRESH, reason="notified")
            elif event is Signal.DRAIN:
                self._drain_requested = True
        if self.state in TERMINAL:
            return NEVER
        agenda.note(now)  # agenda.last_wake: why this tick ran
        if log.isEnabledFor(logging.DEBUG):
            log.debug("node %s: %s", self.name, agenda.last_wake)
        if not agenda.deferred(now):
            agenda.resume()  # a step may back off again (a plan that lost its race)
            try:
                self._step(now)
                self._failures = 0
            except JobSyncError as exc:
                if not self._retryable(exc):
                    raise
                self._on_transient(now, exc)
        self._enforce_lease(now)
        if self.state in TERMINAL:
            return NEVER
        return agenda.next_wakeup(now, asleep=() if self.is_leader else (LEAD,))

    def _step(self, now: float) -> None:
        if self.state is NodeState.STARTING:
            self.membership.start(now)
        elif self.membership.registering:
            self.membership.reregister(now)
        if self.state in TERMINAL:
            return
        if self._drain_requested:
            self._begin_drain()
        agenda = self.agenda
        if agenda.is_due(PEER_CHECK, now):  # before a heartbeat can move it
            agenda.want(REFRESH, reason="a peer's lease ended")
            agenda.want(LEAD, reason="a peer's lease ended")
        if agenda.is_due(HEARTBEAT, now):
            self.membership.heartbeat(now)
            if self.state in TERMINAL:
                return
        if agenda.is_due(REFRESH, now):
            self._refresh(now)
            if self.state in TERMINAL:
                return
        if self.is_leader and agenda.is_due(LEAD, now):
            self.leading.lead(now)

    def _retryable(self, exc: JobSyncError) -> bool:
        if isinstance(exc, BackendUnavailable):
            return True
        if not self.defences.retry_leader_errors:  # test-only: the old, fatal behaviour
            return False
        return not isinstance(exc, FINAL_ERRORS)

    def _on_transient(self, now: float, exc: JobSyncError) -> None:
        self._failures += 1
        self.stats["transient_errors"] += 1
        # Re-read once reachable: whatever the failed step was writing (an
        # acknowledgement, a deregistration) is retried after the backoff rather
        # than left to the next change, the eviction deadline or reconciliation;
        # the read also settles who leads now (a NotLeader mid-pass).
        self.agenda.want(REFRESH, reason=f"retry after {type(exc).__name__}")
        base = min(self.config.heartbeat_interval_sec / 2, 0.05 * 2 ** min(self._failures, 10))
        until = now + base * (0.8 + 0.4 * self.rng.random())
        self.agenda.defer(until, reason=f"backoff after {type(exc).__name__}")
        if isinstance(exc, BackendUnavailable):
            log.warning("node %s: backend unavailable (%s); retrying", self.name, exc)
        else:
            self.stats["retried_errors"] += 1
            log.warning(
                "node %s: %s (%s); reading leadership again and retrying",
                self.name,
                type(exc).__name__,
                exc,
            )

    # -- reading what concerns us -----------------------------------------
    def _refresh(self, now: float) -> None:
        assert self.registration is not None
        inc = self.registration.incarnation
        backend_now, nodes, top = self._read_rows(inc)
        self.offset = backend_now - now
        self.nodes = nodes
        previous_leader = self.is_leader
        self.is_leader = top is not None and top.name == self.name and top.incarnation == inc
        live = frozenset(n.name for n in nodes if rules.is_live(n, backend_now))
        if self.is_leader and (not previous_leader or live != self.live_names):
            # a peer died since the last read: no counter says so
            self.agenda.want(LEAD, reason="leadership or membership changed")
        self.live_names = live
        owned = self.backend.read_owned(self.site, self.name, inc)
        self.agenda.met(REFRESH)
        interval = self.config.rebalance_check_interval_sec
        self.agenda.at(REFRESH, now + interval, reason="reconciliation")
        self.leading.watch(now, nodes, backend_now, top)
        changed = (owned.change_counter, owned.plan_basis) != self.seen
        if changed and self.is_leader and owned.plan_basis < owned.change_counter:
            self.agenda.want(LEAD, reason="changes not planned yet")
        self.seen = (owned.change_counter, owned.plan_basis)
        mine = next((n for n in nodes if n.name == self.name and n.incarnation == inc), None)
        self.drained = mine is not None and mine.is_drained(backend_now)
        self.held = len(owned.tokens)
        claimable = {
            t: e for t, e in zip(owned.tokens, owned.epochs, strict=True) if t not in owned.pending
        }
        if self.drained:  # planned maintenance: claim nothing while the leader moves them
            claimable = {}
        if (
            self.state in CLAIMING
            and not self._drain_requested
            and not self.membership.quarantined(now)
        ):
            self.publisher.tokens(inc, claimable)
        if owned.pending:
            self._acknowledge(owned.pending, dict(zip(owned.tokens, owned.epochs, strict=True)))
        if (
            self.state is NodeState.JOINING
            and owned.plan_basis >= self.registration.change_counter
            and owned.incoming == 0
            and not owned.pending
        ):
            self.state = transition(self.state, NodeEvent.READY)
        if (
            self.state is NodeState.DRAINING
            and self.marked_leaving
            and not owned.tokens
            and owned.incoming == 0  # an older incarnation's fence still stands
        ):
            self.backend.deregister(self.site, self.name, inc)
            self.is_leader = False
            self.state = transition(self.state, NodeEvent.DRAINED)
            return
        self.leading.reap(now, nodes, backend_now)

    def _read_rows(self, inc: int) -> tuple[float, tuple[NodeRecord, ...], NodeRecord | None]:
        """The backend's now, the node rows read and the leader among them.

        The leader reads every row (it plans, reaps and counts the live); any
        other node reads only its own row and the leader's (``Backend.glance``),
        so a membership change costs each of N nodes a read of two rows, not of
        N.  A glance that names this node the leader is followed by the full read."""
        if not self.is_leader:
            glance = self.backend.glance(self.site, self.name)
            top = glance.leader
            if top is None or top.name != self.name or top.incarnation != inc:
                return glance.now, glance.nodes, top
        backend_now, nodes = self.backend.read_nodes(self.site)
        return backend_now, nodes, rules.oldest_live(nodes, backend_now)

    def _acknowledge(self, pending: frozenset[int], epochs: dict[int, int]) -> None:
        assert self.registration is not None
        pairs = [(t, epochs[t]) for t in sorted(pending)]
        acked = self.backend.ack_releases(
            self.site, self.name, self.registration.incarnation, pairs
        )
        self.stats["acks"] += len(acked)
        if len(acked) != len(pairs):
            self.agenda.want(REFRESH, reason="some releases were not acknowledged")

    # -- drain -------------------------------------------------------------
    def _begin_drain(self) -> None:
        if self.state in (NodeState.JOINING, NodeState.ACTIVE, NodeState.FENCED):
            self.state = transition(self.state, NodeEvent.DRAIN)
            self.publisher.fence()
        if self.state is NodeState.DRAINING and not self.marked_leaving:
            assert self.registration is not None
            self.backend.mark_leaving(self.site, self.name, self.registration.incarnation)
            self.marked_leaving = True
            self.agenda.want(REFRESH, reason="marked leaving")

    def _enforce_lease(self, now: float) -> None:
        if self.publisher.lapsed(now):
            log.warning("node %s: lease ran out before a heartbeat succeeded; fencing", self.name)
            self.membership.lapsed = True


def waiting_for(node: Node) -> str:
    """``Node.waiting_for``: what stands between ``node`` and ready, in words."""
    if node.state is NodeState.STARTING:
        return "registration with the backend"
    if node.state is NodeState.JOINING:
        if node.seen[1] < (node.registration.change_counter if node.registration else 0):
            wait = "the leader's first plan that includes this node"
            if node.config.minimum_nodes > 1:  # the leader may be waiting for more
                wait += (
                    f" (with minimum_nodes={node.config.minimum_nodes} the leader "
                    f"distributes no token until that many workers are live)"
                )
            return wait
        return "the releases of tokens into this node to be acknowledged"
    if node.state is NodeState.FENCED:
        return "a new lease after the old one expired"
    return f"nothing (state {node.state.value})"
