"""The node: one worker's protocol logic as a tick-driven state machine.

``Node.tick(now, events)`` reads the backend, asks the core and writes back,
then returns the local instant by which it wants to be ticked again.  It
never reads a clock, sleeps or starts a thread: the production loop
(``runtime/loop.py``) and the simulator (``jobsync.sim``) both drive this
same class, so what the simulator proves is what production runs.

How the rules of DESIGN.md section 5 land here:

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
- Failover.  The heartbeat returns the earliest lease expiry among the other
  nodes; if this node would lead once that node is gone, it schedules one
  look at exactly that instant.
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
  exactly one defect.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import uuid
from collections.abc import Callable, Iterable

import attrs

from jobsync.backends.base import Backend, Heartbeat, HeartbeatOutcome, NodeRecord, Registration
from jobsync.core import rules
from jobsync.core.defences import PRODUCTION, Defences
from jobsync.core.errors import (
    BackendUnavailable,
    ConfigError,
    ConflictError,
    IllegalTransition,
    InvalidArgument,
    JobSyncError,
    NodeNameConflict,
    NotLeader,
    SchemaError,
)
from jobsync.core.lifecycle import CLAIMING, TERMINAL, NodeEvent, NodeState, transition
from jobsync.core.locks import LockConflict
from jobsync.runtime import leader as leadership
from jobsync.runtime.config import CoordinationConfig
from jobsync.runtime.snapshot import ClaimSnapshot, diff

log = logging.getLogger("jobsync.node")

NEVER = math.inf
EXPIRY_SLACK = 0.001
"""Seconds after a peer's lease end at which the would-be leader looks (strict expiry)."""
MIN_RECHECK = 0.005
"""A peer check never fires sooner than this after the read that scheduled it."""
CONFLICT_RETRY = 0.02
FINAL_ERRORS: tuple[type[JobSyncError], ...] = (
    NodeNameConflict,
    ConfigError,
    SchemaError,
    InvalidArgument,
    IllegalTransition,
)
"""Errors that end a node: retrying cannot help (see the module docstring)."""


class Signal(enum.Enum):
    """Events a driver hands to ``tick``."""

    NOTIFIED = "notified"
    DRAIN = "drain"


@attrs.frozen(kw_only=True)
class RebalanceEvent:
    """A change of this node's claimable set (self-fencing included)."""

    added: frozenset[int]
    removed: frozenset[int]
    tokens: frozenset[int]
    version: int
    first: bool


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
    ) -> None:
        """``process`` identifies the process this node runs in for ``register``
        (default: a fresh random identity, one per Node); the simulator passes
        one per simulated process.  ``defences`` is for the simulator only."""
        self.backend = backend
        self.defences = defences
        self.process = uuid.uuid4().hex if process is None else process
        self.site = site
        self.name = name
        self.config = config
        self.state = NodeState.STARTING
        self.snapshot = ClaimSnapshot.empty(config.total_tokens)
        self.registration: Registration | None = None
        self.error: JobSyncError | None = None
        self.events: list[RebalanceEvent] = []
        self.is_leader = False
        self.nodes: tuple[NodeRecord, ...] = ()
        self.generation = 0
        self.unowned: frozenset[int] = frozenset()
        self.conflicts: tuple[LockConflict, ...] = ()
        self.stats: dict[str, int] = {
            "heartbeats": 0,
            "heartbeat_failures": 0,
            "transient_errors": 0,
            "retried_errors": 0,
            "plans_committed": 0,
            "plan_conflicts": 0,
            "acks": 0,
            "reregistrations": 0,
            "evictions": 0,
            "reaps": 0,
        }
        self._rng = rng or random.Random()
        self._plan_timer = plan_timer
        self._version = 0
        self._lease_deadline = -math.inf
        self._offset = 0.0  # backend time - local time, from the latest response
        self._next_heartbeat = -math.inf
        self._retry_at = -math.inf
        self._failures = 0
        self._dirty = True
        self._seen = (-1, -1)  # (change counter, plan basis) last read
        self._next_reconcile = NEVER
        self._peer_check_at = NEVER
        self._leader_check_at = NEVER
        self._plan_not_before = -math.inf
        self._plan_wanted = False
        self._drain_requested = False
        self._marked_leaving = False
        self._lapsed = False
        self._live: frozenset[str] = frozenset()
        self._known: int | None = None  # the latest incarnation register answered
        self._registering = False  # a registration failed transiently: retry it as one
        self._members: frozenset[tuple[str, int]] = frozenset()  # live at the last read
        self._reaped: frozenset[tuple[str, int]] = frozenset()
        self._reap_again_at = NEVER

    # -- public view ------------------------------------------------------
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
    def waiting_for(self) -> str:
        """What stands between this node and ready, in words (for timeouts and status)."""
        if self.state is NodeState.STARTING:
            return "registration with the backend"
        if self.state is NodeState.JOINING:
            if self._seen[1] < (self.registration.change_counter if self.registration else 0):
                return "the leader's first plan that includes this node"
            return "the releases of tokens into this node to be acknowledged"
        if self.state is NodeState.FENCED:
            return "a new lease after the old one expired"
        return f"nothing (state {self.state.value})"

    def lease_valid(self, now: float) -> bool:
        return now < self._lease_deadline

    def backend_time(self, now: float) -> float:
        """The backend's clock estimated from the latest response."""
        return now + self._offset

    # -- the step ---------------------------------------------------------
    def tick(self, now: float, events: Iterable[Signal] = ()) -> float:
        """Advance the protocol at local instant ``now``; return when to tick next."""
        for event in events:
            if event is Signal.NOTIFIED:
                self._dirty = True
            elif event is Signal.DRAIN:
                self._drain_requested = True
        if self.state in TERMINAL:
            return NEVER
        if now >= self._retry_at:
            self._retry_at = -math.inf  # a step may set it (a plan that lost its race)
            try:
                self._step(now)
                self._failures = 0
            except JobSyncError as exc:
                if not self._retryable(exc):
                    raise
                self._on_transient(now, exc)
        self._enforce_lease(now)
        return self._next_wakeup(now)

    def _step(self, now: float) -> None:
        if self.state is NodeState.STARTING:
            self._start(now)
        elif self._registering:
            self._reregister(now)
        if self.state in TERMINAL:
            return
        if self._drain_requested:
            self._begin_drain()
        if now >= self._peer_check_at:  # before a heartbeat can move it
            self._dirty = True
            self._plan_wanted = True
        if now >= self._next_heartbeat:
            self._heartbeat(now)
            if self.state in TERMINAL:
                return
        if now >= self._next_reconcile:
            self._dirty = True
        if self._dirty:
            self._refresh(now)
            if self.state in TERMINAL:
                return
        if (
            self.is_leader
            and now >= self._plan_not_before
            and (self._plan_wanted or now >= self._leader_check_at)
        ):
            self._lead(now)

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
        self._dirty = True
        base = min(self.config.heartbeat_interval_sec / 2, 0.05 * 2 ** min(self._failures, 10))
        self._retry_at = now + base * (0.8 + 0.4 * self._rng.random())
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

    # -- membership -------------------------------------------------------
    def _start(self, now: float) -> None:
        cfg = self.config
        site = self.backend.ensure_site(self.site, cfg.total_tokens, cfg.hash_function)
        self.generation = site.generation
        if self._register(now):
            self.state = transition(self.state, NodeEvent.REGISTERED)

    def _register(self, now: float) -> bool:
        """Register a new incarnation; False if a newer process owns the name (the
        node is then superseded).  A transient failure is raised, and the next step
        registers again (its reply may have been lost after the commit)."""
        self._registering = self.defences.reregister_after_lost_reply
        try:
            reg = self.backend.register(
                self.site,
                self.name,
                self.config.heartbeat_timeout_sec,
                process=self.process,
                known=self._known,
            )
        except NodeNameConflict as exc:
            self._registering = False
            self._superseded(str(exc))
            return False
        self._registering = False
        self.registration = reg
        self._known = reg.incarnation
        self._offset = reg.registered_at - now
        self._renewed(now)
        self._dirty = True
        self._plan_wanted = True
        self._marked_leaving = False
        return True

    def _reregister(self, now: float) -> None:
        """From FENCED: a new incarnation, after an expiry or a lost registration reply."""
        if self._register(now):
            self.stats["reregistrations"] += 1
            self.state = transition(self.state, NodeEvent.REREGISTERED)

    def _renewed(self, sent_at: float) -> None:
        cfg = self.config
        self._lease_deadline = sent_at + cfg.heartbeat_timeout_sec - cfg.margin
        self._next_heartbeat = sent_at + cfg.heartbeat_interval_sec
        if self._next_reconcile == NEVER:
            self._next_reconcile = sent_at + cfg.rebalance_check_interval_sec
        if self._lapsed:
            # The local lease ran out but the backend's had not: read our tokens again.
            self._lapsed = False
            self._dirty = True
        if self.snapshot.incarnation is not None:
            self._publish(self._with_lease(self.snapshot), quiet=True)

    def _heartbeat(self, now: float) -> None:
        assert self.registration is not None
        try:
            beat = self.backend.heartbeat(self.site, self.name, self.registration.incarnation)
        except BackendUnavailable:
            self.stats["heartbeat_failures"] += 1
            raise
        self.stats["heartbeats"] += 1
        self._offset = beat.now - now
        if beat.outcome is HeartbeatOutcome.SUPERSEDED:
            self._superseded()
        elif beat.outcome is HeartbeatOutcome.EXPIRED:
            self._expired(now)
        else:
            self._renewed(now)
            if (beat.change_counter, beat.plan_basis) != self._seen:
                self._dirty = True
            self._after_renewal(now, beat)

    def _after_renewal(self, now: float, beat: Heartbeat) -> None:
        """Notice a peer's death, which bumps no counter, and schedule the next look."""
        known = len(self._live - {self.name})
        if beat.live_others is not None:
            if beat.live_others < known:
                self._dirty = True  # a peer died: read who is left, and plan if we lead
                self._plan_wanted = True
            self._schedule_peer_check(now, beat.earliest_other_expiry)
            return
        # Without a live count, never postpone a pending look that is due before our
        # next heartbeat: its peer may be dead already, and so no longer "other live".
        pending = self._peer_check_at
        self._schedule_peer_check(now, beat.earliest_other_expiry)
        if pending <= self._next_heartbeat:
            self._peer_check_at = min(pending, self._peer_check_at)

    def _superseded(self, detail: str | None = None) -> None:
        self._fence()
        self.is_leader = False
        self.state = transition(self.state, NodeEvent.SUPERSEDED)
        self.error = NodeNameConflict(
            f"node name {self.name!r} was taken over by a newer process in site {self.site!r}; "
            "this one stops claiming and will not re-register" + (f" ({detail})" if detail else "")
        )
        log.error("%s", self.error)

    def _expired(self, now: float) -> None:
        self._fence()
        if self.state is NodeState.DRAINING:
            # Our incarnation is over: nothing left to hand off by acknowledgement.
            assert self.registration is not None
            self.backend.deregister(self.site, self.name, self.registration.incarnation)
            self.state = transition(self.state, NodeEvent.DRAINED)
            return
        if self.state is not NodeState.FENCED:
            self.state = transition(self.state, NodeEvent.LEASE_LOST)
        log.warning("node %s: lease expired or evicted; registering anew", self.name)
        self._reregister(now)

    def _schedule_peer_check(self, now: float, expiry: float | None) -> None:
        """Look at exactly ``expiry`` (a peer's lease end) if we would lead once it is over."""
        if expiry is None or not self._would_lead_after(expiry):
            self._peer_check_at = NEVER
            return
        self._peer_check_at = max(expiry - self._offset + EXPIRY_SLACK, now + MIN_RECHECK)

    def _would_lead_after(self, instant: float) -> bool:
        """Would this node be the oldest live one once every lease ending by ``instant`` ends?"""
        me = self.incarnation
        survivors = [
            n
            for n in self.nodes
            if rules.is_live(n, instant) or (n.name == self.name and n.state in rules.RUNNING)
        ]
        if not survivors:
            return True
        oldest = min(survivors, key=rules.seniority)
        return oldest.name == self.name and oldest.incarnation == me

    # -- reading what concerns us -----------------------------------------
    def _refresh(self, now: float) -> None:
        assert self.registration is not None
        inc = self.registration.incarnation
        backend_now, nodes = self.backend.read_nodes(self.site)
        self._offset = backend_now - now
        self.nodes = nodes
        previous_leader = self.is_leader
        top = rules.oldest_live(nodes, backend_now)
        self.is_leader = top is not None and top.name == self.name and top.incarnation == inc
        live = frozenset(n.name for n in nodes if rules.is_live(n, backend_now))
        if self.is_leader and (not previous_leader or live != self._live):
            self._plan_wanted = True  # a peer died since the last read: no counter says so
        self._live = live
        owned = self.backend.read_owned(self.site, self.name, inc)
        self._dirty = False
        self._next_reconcile = now + self.config.rebalance_check_interval_sec
        others = [
            n.lease_expires for n in nodes if rules.is_live(n, backend_now) and n.name != self.name
        ]
        self._schedule_peer_check(now, min(others) if others else None)
        if (owned.change_counter, owned.plan_basis) != self._seen and self.is_leader:
            self._plan_wanted = owned.plan_basis < owned.change_counter or self._plan_wanted
        self._seen = (owned.change_counter, owned.plan_basis)
        claimable = {
            t: e for t, e in zip(owned.tokens, owned.epochs, strict=True) if t not in owned.pending
        }
        if self.state in CLAIMING and not self._drain_requested:
            self._publish_tokens(claimable)
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
            and self._marked_leaving
            and not owned.tokens
            and owned.incoming == 0  # an older incarnation's fence still stands
        ):
            self.backend.deregister(self.site, self.name, inc)
            self.is_leader = False
            self.state = transition(self.state, NodeEvent.DRAINED)
            return
        self._reap(now, nodes, backend_now)

    def _acknowledge(self, pending: frozenset[int], epochs: dict[int, int]) -> None:
        assert self.registration is not None
        pairs = [(t, epochs[t]) for t in sorted(pending)]
        acked = self.backend.ack_releases(
            self.site, self.name, self.registration.incarnation, pairs
        )
        self.stats["acks"] += len(acked)
        self._dirty = self._dirty or len(acked) != len(pairs)

    # -- leading ------------------------------------------------------------
    def _lead(self, now: float) -> None:
        assert self.registration is not None
        reg = self.registration
        # A leader younger than the settle window waits until it is that old, so
        # nodes starting (or coming back) together are planned together.
        settle_end = reg.registered_at + self.config.settle_window
        if self.backend_time(now) < settle_end:
            self._plan_not_before = settle_end - self._offset
            return
        started = self._plan_timer() if self._plan_timer else 0.0
        view = self.backend.read_cluster(self.site)
        self._offset = view.now - now
        self.generation = view.site.generation
        if view.now < settle_end:
            self._plan_not_before = settle_end - self._offset
            return
        decision = leadership.decide(
            view, self.name, reg.incarnation, self.config.ack_timeout, self._trigger()
        )
        # The intent to plan is kept until a plan commits: a transient error below
        # (evict, reap, the commit itself) retries it rather than forgetting it.
        self._plan_wanted = decision.is_leader and decision.commit is not None
        if not decision.is_leader:
            self.is_leader = False
            self._leader_check_at = NEVER
            return
        self._report(decision)
        if decision.evict:
            evicted = self.backend.evict_overdue(self.site, self.name, reg.incarnation)
            self.stats["evictions"] += len(evicted)
        self._leader_check_at = (
            NEVER if decision.next_check is None else decision.next_check - self._offset
        )
        if decision.commit is None:
            return
        commit = decision.commit
        if commit.history is not None and self._plan_timer is not None:
            elapsed = (self._plan_timer() - started) * 1e3
            commit = attrs.evolve(commit, history=attrs.evolve(commit.history, duration_ms=elapsed))
        try:
            self.generation = self.backend.commit_plan(self.site, commit)
        except (ConflictError, NotLeader) as exc:
            self.stats["plan_conflicts"] += 1
            log.info("node %s: plan not committed (%s); re-planning", self.name, exc)
            self._plan_wanted = True
            self._dirty = True
            self._retry_at = now + CONFLICT_RETRY * (1 + self._rng.random())
            return
        self._plan_wanted = False
        if commit.assigns or commit.revokes:
            self.stats["plans_committed"] += 1
        if commit.revokes and not self.defences.revoke_before_assign:  # test only
            for r in commit.revokes:  # hand over without the live holder letting go
                holder, pair = view.tokens.owner[r.token] or "", (r.token, r.expected_epoch)
                self.backend.ack_releases(self.site, holder, r.expected_incarnation, [pair])
        self._dirty = True

    def _reap(self, now: float, nodes: tuple[NodeRecord, ...], backend_now: float) -> None:
        """Leader only: release the claims of incarnations that ended.

        Reaps at once when an incarnation it has not reaped yet has a row that is
        no longer live, and once more a reconciliation interval after any
        incarnation ended (a dead row, or a row live at the previous read and now
        gone: it deregistered, releasing what it could), for claim rows that a
        transaction held locked at the time (they are skipped, not waited on).
        Nothing else: a quiet site reaps nothing."""
        live = frozenset((n.name, n.incarnation) for n in nodes if rules.is_live(n, backend_now))
        dead = frozenset((n.name, n.incarnation) for n in nodes) - live
        died = dead - self._reaped
        left = self._members - live - dead
        self._members = live
        if not self.is_leader:
            return
        if died or left:
            later = now + self.config.rebalance_check_interval_sec
            self._reap_again_at = min(self._reap_again_at, later)
        if not died and now < self._reap_again_at:
            return
        self.backend.reap_claims(self.site)  # raising, it is retried: the deaths stay new
        self.stats["reaps"] += 1
        self._reaped = dead  # deleted rows drop out: the set stays small
        if not died:
            self._reap_again_at = NEVER

    def _report(self, decision: leadership.Decision) -> None:
        """Warn, once per change, about tokens left unowned and conflicting locks."""
        unowned = decision.plan.unowned if decision.plan is not None else frozenset()
        if unowned != self.unowned:
            self.unowned = unowned
            if unowned and decision.plan is not None and not decision.plan.nodes:
                log.info(
                    "site %s: no eligible node left; %d token(s) unowned", self.site, len(unowned)
                )
            elif unowned:
                sample = ", ".join(str(t) for t in sorted(unowned)[:10])
                log.warning(
                    "site %s: %d token(s) unowned: their pins match no live node (%s%s)",
                    self.site,
                    len(unowned),
                    sample,
                    ", ..." if len(unowned) > 10 else "",
                )
        if decision.conflicts != self.conflicts:
            self.conflicts = decision.conflicts
            for conflict in decision.conflicts:
                log.warning(
                    "site %s: locks with different patterns on token %d: %s decides, %s ignored",
                    self.site,
                    conflict.token,
                    conflict.winner,
                    ", ".join(conflict.losers),
                )

    def _trigger(self) -> str:
        return "leader-change" if self.generation == 0 else "membership-or-locks"

    # -- drain -------------------------------------------------------------
    def _begin_drain(self) -> None:
        if self.state in (NodeState.JOINING, NodeState.ACTIVE, NodeState.FENCED):
            self.state = transition(self.state, NodeEvent.DRAIN)
            self._fence()
        if self.state is NodeState.DRAINING and not self._marked_leaving:
            assert self.registration is not None
            self.backend.mark_leaving(self.site, self.name, self.registration.incarnation)
            self._marked_leaving = True
            self._dirty = True

    # -- the snapshot -------------------------------------------------------
    def _publish_tokens(self, epochs: dict[int, int]) -> None:
        assert self.registration is not None
        current = self.snapshot
        if current.incarnation == self.registration.incarnation and current.epochs == epochs:
            renewed = self._with_lease(current)
            if current.lease_deadline != renewed.lease_deadline:
                self._publish(renewed, quiet=True)
            return
        snap = ClaimSnapshot.build(
            self.config.total_tokens,
            epochs,
            self._lease_deadline,
            self.registration.incarnation,
            self._version + 1,
            self_fencing=self.defences.self_fencing,
        )
        self._publish(snap)

    def _with_lease(self, snap: ClaimSnapshot) -> ClaimSnapshot:
        return snap.with_lease(self._lease_deadline, self_fencing=self.defences.self_fencing)

    def _fence(self) -> None:
        if self.snapshot.tokens or self.snapshot.incarnation is not None:
            self._publish(ClaimSnapshot.empty(self.config.total_tokens, self._version + 1))

    def _enforce_lease(self, now: float) -> None:
        if self.snapshot.tokens and now >= self.snapshot.lease_deadline:
            log.warning("node %s: lease ran out before a heartbeat succeeded; fencing", self.name)
            self._lapsed = True
            self._fence()

    def _publish(self, snap: ClaimSnapshot, quiet: bool = False) -> None:
        old = self.snapshot
        self.snapshot = snap
        if quiet or snap.tokens == old.tokens:
            return
        self._version += 1
        added, removed = diff(old.tokens, snap.tokens)
        self.events.append(
            RebalanceEvent(
                added=added,
                removed=removed,
                tokens=snap.tokens,
                version=self._version,
                first=self._version == 1,
            )
        )

    def take_events(self) -> list[RebalanceEvent]:
        events, self.events = self.events, []
        return events

    @property
    def token_version(self) -> int:
        return self._version

    # -- scheduling ---------------------------------------------------------
    def _next_wakeup(self, now: float) -> float:
        if self.state in TERMINAL:
            return NEVER
        if self._retry_at > now:
            return self._retry_at
        if self._dirty:
            return now
        candidates = [self._next_heartbeat, self._next_reconcile, self._peer_check_at]
        if self.is_leader:
            check = now if self._plan_wanted else self._leader_check_at
            candidates.append(max(check, self._plan_not_before))
        if self.snapshot.tokens:
            candidates.append(self.snapshot.lease_deadline)
        return min(candidates)
