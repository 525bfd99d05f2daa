"""A node's membership: registration, heartbeats and what their answers mean.

docs/PROTOCOL.md section 4 ("Incarnations and leases"; "Processes, lost
replies and out-of-order registrations"): a heartbeat renews the lease, or
fences the node and registers a new incarnation (EXPIRED), or ends it for
good (SUPERSEDED, a newer process owns the name).  A registration whose
reply may have been lost is retried as a registration, with the process
identity and the last incarnation this node knows.  ``Node``
(``runtime/node.py``) calls ``start``, ``reregister`` and ``heartbeat`` from
its step; this class keeps what only membership needs.

Continuity (``jobsync.core.continuity``): each renewal is checked against the
highest state this node has seen (the server's timeline, when the backend
reports one, and the site's counters).  A break (a promotion, or counters
gone back after a failover that lost commits) fences the node and keeps its
lease unpublished for one heartbeat timeout, so it answers False until every
lease granted on the lost history has ended; then it claims from a fresh read.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from jobsync.backends.base import Heartbeat, HeartbeatOutcome
from jobsync.core import continuity
from jobsync.core.errors import BackendUnavailable, NodeNameConflict
from jobsync.core.lifecycle import NodeEvent, NodeState, transition
from jobsync.runtime.agenda import NEVER
from jobsync.runtime.leading import HEARTBEAT, LEAD, PEER_CHECK, REFRESH

if TYPE_CHECKING:
    from jobsync.runtime.node import Node

log = logging.getLogger("jobsync.node")


class Membership:
    """Registration and lease of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.known: int | None = None  # the latest incarnation register answered
        self.registering = False  # a registration failed transiently: retry it as one
        self.lapsed = False  # the local lease ran out before a heartbeat succeeded
        self.lineage: continuity.Lineage | None = None  # the highest state seen
        self.quarantine_until = -math.inf  # claims nothing before this (a continuity break)

    def start(self, now: float) -> None:
        node = self.node
        cfg = node.config
        site = node.backend.ensure_site(node.site, cfg.total_tokens, cfg.hash_function)
        node.generation = site.generation
        if self.register(now):
            node.state = transition(node.state, NodeEvent.REGISTERED)

    def register(self, now: float) -> bool:
        """Register a new incarnation; False if a newer process owns the name (the
        node is then superseded).  A transient failure is raised, and the next step
        registers again (its reply may have been lost after the commit)."""
        node = self.node
        self.registering = node.defences.reregister_after_lost_reply
        try:
            reg = node.backend.register(
                node.site,
                node.name,
                node.config.heartbeat_timeout_sec,
                process=node.process,
                known=self.known,
                capacity=node.capacity,
            )
        except NodeNameConflict as exc:
            self.registering = False
            self.superseded(str(exc))
            return False
        self.registering = False
        node.registration = reg
        self.known = reg.incarnation
        node.offset = reg.registered_at - now
        # A registration after a failover is checked like a renewal: the row this
        # node registers over anew may have been lost with the history it saw.
        self.check_continuity(now, reg.change_counter)
        self.renewed(now)
        node.agenda.want(REFRESH, reason="registered")
        node.agenda.want(LEAD, reason="registered")
        node.marked_leaving = False
        return True

    def reregister(self, now: float) -> None:
        """From FENCED: a new incarnation, after an expiry or a lost registration reply."""
        node = self.node
        if self.register(now):
            node.stats["reregistrations"] += 1
            node.state = transition(node.state, NodeEvent.REREGISTERED)

    def renewed(self, sent_at: float) -> None:
        node = self.node
        cfg = node.config
        node.agenda.at(HEARTBEAT, sent_at + cfg.heartbeat_interval_sec, reason="interval")
        if node.agenda.when(REFRESH) == NEVER:
            node.agenda.at(
                REFRESH, sent_at + cfg.rebalance_check_interval_sec, reason="reconciliation"
            )
        if self.lapsed:
            # The local lease ran out but the backend's had not: read our tokens again.
            self.lapsed = False
            node.agenda.want(REFRESH, reason="lease renewed after it lapsed")
        if self.quarantined(sent_at):
            return  # nothing is published: answer False until the quarantine ends
        if self.quarantine_until > -math.inf:
            self.quarantine_until = -math.inf
            node.agenda.want(REFRESH, reason="the continuity quarantine ended")
        node.publisher.renew(sent_at + cfg.heartbeat_timeout_sec - cfg.margin)

    def heartbeat(self, now: float) -> None:
        node = self.node
        assert node.registration is not None
        leading = node.is_leader
        watch = None if leading else node.leading.watching
        try:
            beat = node.backend.heartbeat(
                node.site, node.name, node.registration.incarnation, watch=watch, leading=leading
            )
        except BackendUnavailable:
            node.stats["heartbeat_failures"] += 1
            raise
        node.stats["heartbeats"] += 1
        node.offset = beat.now - now
        if beat.outcome is HeartbeatOutcome.SUPERSEDED:
            self.superseded()
        elif beat.outcome is HeartbeatOutcome.EXPIRED:
            self.expired(now)
        else:
            self.check_continuity(now, beat.change_counter, beat.plan_basis)
            self.renewed(now)
            if (beat.change_counter, beat.plan_basis) != node.seen:
                node.agenda.want(REFRESH, reason="the heartbeat saw a change")
            self.after_renewal(now, beat, watch)

    def quarantined(self, now: float) -> bool:
        return now < self.quarantine_until

    def check_continuity(self, now: float, counter: int, basis: int | None = None) -> None:
        """Keep the highest state seen; on a break, fence and quarantine (see above).
        ``basis`` None (a registration, which does not report it): not compared."""
        node = self.node
        timeline = getattr(node.backend, "timeline", None)
        if basis is None:
            basis = 0 if self.lineage is None else self.lineage.plan_basis
        observed = continuity.Lineage(
            timeline=timeline() if callable(timeline) else None,
            change_counter=counter,
            plan_basis=basis,
        )
        why = continuity.broken(self.lineage, observed)
        if why is None:
            self.lineage = continuity.advanced(self.lineage, observed)
            return
        self.lineage = observed
        cfg = node.config
        self.quarantine_until = continuity.quarantine_end(now, cfg.heartbeat_timeout_sec)
        node.publisher.fence()
        node.stats["continuity_breaks"] = node.stats.get("continuity_breaks", 0) + 1
        node.agenda.want(REFRESH, reason="the database lost or replaced history")
        node.agenda.want(LEAD, reason="the database lost or replaced history")
        log.warning(
            "node %s: %s; claiming nothing for %.1f s (one heartbeat timeout)",
            node.name,
            why,
            cfg.heartbeat_timeout_sec,
        )

    def after_renewal(self, now: float, beat: Heartbeat, watch: str | None) -> None:
        """Notice a peer's death, which bumps no counter, and schedule the next look:
        the watched leader's lease end, or for the leader the earliest of the others'."""
        node = self.node
        if watch is not None:
            if beat.watched_expiry is None:  # the leader we knew died or left: who leads now?
                node.agenda.want(REFRESH, reason=f"the leader {watch} is no longer live")
                node.agenda.want(LEAD, reason=f"the leader {watch} is no longer live")
            node.leading.schedule_peer_check(now, beat.watched_expiry)
            return
        if not node.is_leader:
            return  # no leader known: the next read says who it is
        known = len(node.live_names - {node.name})
        if beat.live_others is not None:
            if beat.live_others < known:  # read who is left, and plan if we lead
                node.agenda.want(REFRESH, reason="a peer died")
                node.agenda.want(LEAD, reason="a peer died")
            node.leading.schedule_peer_check(now, beat.earliest_other_expiry)
            return
        # Without a live count, never postpone a pending look that is due before our
        # next heartbeat: its peer may be dead already, and so no longer "other live".
        pending = node.agenda.when(PEER_CHECK)
        node.leading.schedule_peer_check(now, beat.earliest_other_expiry)
        if pending <= node.agenda.when(HEARTBEAT) and pending < node.agenda.when(PEER_CHECK):
            node.agenda.at(PEER_CHECK, pending, reason="a peer's lease end")

    def superseded(self, detail: str | None = None) -> None:
        node = self.node
        node.publisher.fence()
        node.is_leader = False
        node.state = transition(node.state, NodeEvent.SUPERSEDED)
        node.error = NodeNameConflict(
            f"node name {node.name!r} was taken over by a newer process in site {node.site!r}; "
            "this one stops claiming and will not re-register" + (f" ({detail})" if detail else "")
        )
        log.error("%s", node.error)

    def expired(self, now: float) -> None:
        node = self.node
        node.publisher.fence()
        if node.state is NodeState.DRAINING:
            # Our incarnation is over: nothing left to hand off by acknowledgement.
            assert node.registration is not None
            node.backend.deregister(node.site, node.name, node.registration.incarnation)
            node.state = transition(node.state, NodeEvent.DRAINED)
            return
        if node.state is not NodeState.FENCED:
            node.state = transition(node.state, NodeEvent.LEASE_LOST)
        log.warning("node %s: lease expired or evicted; registering anew", node.name)
        self.reregister(now)
