"""The leader's pass of a node: plan, evict, commit, reap, and when to look again.

``Node`` (``runtime/node.py``) calls ``Leading.lead`` when its agenda's
``lead`` slot is due and it believes it leads, ``Leading.reap`` after every
read of the node rows, and ``Leading.schedule_peer_check`` whenever it learns
the earliest lease end among its peers.  What to write comes from
``leader.decide`` (pure); this module sends it and keeps the leader-only
state: what was reported, which ended incarnations were reaped.  The laws
are docs/PROTOCOL.md section 4 ("Leadership and plans", "Hand-off: revoke,
then assign", "Claims and completion").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from jobsync.backends.base import NodeRecord
from jobsync.core import rules
from jobsync.core.errors import ConflictError, NotLeader
from jobsync.core.locks import LockConflict
from jobsync.runtime import leader as leadership
from jobsync.runtime.loadtrack import LoadInputs, LoadTracker

if TYPE_CHECKING:
    from jobsync.runtime.node import Node

log = logging.getLogger("jobsync.node")

REFRESH = "refresh"
"""Read the node rows and this node's tokens (wanted, or the reconciliation timer)."""
LEAD = "lead"
"""The leader's pass (wanted: plan now; timer: look again; gate: the settle window)."""
HEARTBEAT = "heartbeat"
PEER_CHECK = "peer-check"
"""A peer's lease end, after which this node would lead."""
REAP = "reap"
"""Quiet: reap once more, a reconciliation interval after an incarnation ended."""

EXPIRY_SLACK = 0.001
"""Seconds after a peer's lease end at which the would-be leader looks (strict expiry)."""
MIN_RECHECK = 0.005
"""A peer check never fires sooner than this after the read that scheduled it."""
CONFLICT_RETRY = 0.02


class Leading:
    """Leader-only state and writes of one node."""

    def __init__(self, node: Node, plan_timer: Callable[[], float] | None) -> None:
        self.node = node
        self.plan_timer = plan_timer
        self.unowned: frozenset[int] = frozenset()
        self.conflicts: tuple[LockConflict, ...] = ()
        self._members: frozenset[tuple[str, int]] = frozenset()  # live at the last read
        self._reaped: frozenset[tuple[str, int]] = frozenset()
        self.watching: str | None = None
        """The leader of the latest read, whose lease end a heartbeat asks for (None
        while this node leads or knows no leader)."""
        half_life = node.config.load_half_life_sec
        interval = 2 * node.config.rebalance_check_interval_sec
        self.load = (
            None
            if half_life is None
            else LoadTracker(node.config.total_tokens, half_life, interval)
        )
        """Measured load (``runtime/loadtrack.py``), when ``load_half_life_sec`` is set."""

    # -- when to look ----------------------------------------------------------
    def watch(
        self, now: float, nodes: Sequence[NodeRecord], backend_now: float, top: NodeRecord | None
    ) -> None:
        """After a read of the node rows (``top``: the leader they show): the node an
        ordinary heartbeat watches (that leader, unless this node leads) and the look
        at the lease end that matters (the leader's: the earliest among the others)."""
        node = self.node
        if node.is_leader:
            self.watching = None
            others = [
                n.lease_expires
                for n in nodes
                if rules.is_live(n, backend_now) and n.name != node.name
            ]
            self.schedule_peer_check(now, min(others, default=None))
            return
        mine = top is None or top.name == node.name
        self.watching = None if mine or top is None else top.name
        self.schedule_peer_check(now, None if mine or top is None else top.lease_expires)

    def schedule_peer_check(self, now: float, expiry: float | None) -> None:
        """Look at exactly ``expiry`` (a peer's lease end) if we would lead once it is over."""
        agenda = self.node.agenda
        if expiry is None or not self._would_lead_after(expiry):
            agenda.cancel(PEER_CHECK)
            return
        when = max(expiry - self.node.offset + EXPIRY_SLACK, now + MIN_RECHECK)
        agenda.at(PEER_CHECK, when, reason="a peer's lease end")

    def _would_lead_after(self, instant: float) -> bool:
        """Would this node be the oldest live one once every lease ending by ``instant`` ends?"""
        node = self.node
        survivors = [
            n
            for n in node.nodes
            if rules.is_live(n, instant) or (n.name == node.name and n.state in rules.RUNNING)
        ]
        if not survivors:
            return True
        oldest = min(survivors, key=rules.seniority)
        return oldest.name == node.name and oldest.incarnation == node.incarnation

    # -- the pass ---------------------------------------------------------------
    def lead(self, now: float) -> None:
        node, agenda = self.node, self.node.agenda
        assert node.registration is not None
        reg = node.registration
        # A leader younger than the settle window waits until it is that old, so
        # nodes starting (or coming back) together are planned together.
        settle_end = reg.registered_at + node.config.settle_window
        if node.backend_time(now) < settle_end:
            agenda.not_before(LEAD, settle_end - node.offset, reason="settle window")
            return
        started = self.plan_timer() if self.plan_timer else 0.0
        view = node.backend.read_cluster(node.site)
        node.offset = view.now - now
        node.generation = view.site.generation
        if view.now < settle_end:
            agenda.not_before(LEAD, settle_end - node.offset, reason="settle window")
            return
        inputs = None
        if self.load is not None:
            self.load.refresh(node.backend, node.site, view.now)
            inputs = self.load.inputs(view.now)
        decision = leadership.decide(
            view,
            node.name,
            reg.incarnation,
            node.config.ack_timeout,
            self._trigger(),
            load=inputs,
            minimum_nodes=node.config.minimum_nodes,
        )
        # The intent to plan is kept until a plan commits: a transient error below
        # (evict, reap, the commit itself) retries it rather than forgetting it.
        if decision.is_leader and decision.commit is not None:
            agenda.want(LEAD, reason="a plan to commit")
        else:
            agenda.met(LEAD)
        if not decision.is_leader:
            node.is_leader = False
            agenda.cancel(LEAD)
            return
        self._report(decision)
        if decision.evict:
            evicted = node.backend.evict_overdue(node.site, node.name, reg.incarnation)
            node.stats["evictions"] += len(evicted)
        if decision.next_check is None:
            agenda.cancel(LEAD)
        else:
            when = decision.next_check - node.offset
            agenda.at(LEAD, when, reason="a deadline, fence or lease end in the plan")
        if self.load is not None:
            due = self.load.due() - node.offset
            if due < agenda.when(LEAD):
                agenda.at(LEAD, max(due, now + MIN_RECHECK), reason="measured load")
        if decision.commit is None:
            self._loaded(decision, inputs, view.now)
            return
        commit = decision.commit
        if commit.history is not None and self.plan_timer is not None:
            elapsed = (self.plan_timer() - started) * 1e3
            commit = attrs.evolve(commit, history=attrs.evolve(commit.history, duration_ms=elapsed))
        try:
            node.generation = node.backend.commit_plan(node.site, commit)
        except (ConflictError, NotLeader) as exc:
            node.stats["plan_conflicts"] += 1
            log.info("node %s: plan not committed (%s); re-planning", node.name, exc)
            agenda.want(LEAD, reason="the plan lost its race")
            agenda.want(REFRESH, reason="the plan lost its race")
            until = now + CONFLICT_RETRY * (1 + node.rng.random())
            agenda.defer(until, reason="the plan lost its race")
            return
        agenda.met(LEAD)
        self._loaded(decision, inputs, view.now)
        if commit.assigns or commit.revokes:
            node.stats["plans_committed"] += 1
        if commit.revokes and not node.defences.revoke_before_assign:  # test only
            for r in commit.revokes:  # hand over without the live holder letting go
                holder, pair = view.tokens.owner[r.token] or "", (r.token, r.expected_epoch)
                node.backend.ack_releases(node.site, holder, r.expected_incarnation, [pair])
        agenda.want(REFRESH, reason="a plan committed")

    def reap(self, now: float, nodes: tuple[NodeRecord, ...], backend_now: float) -> None:
        """Leader only: release the claims of incarnations that ended.

        Reaps at once when an incarnation it has not reaped yet has a row that is
        no longer live, and once more a reconciliation interval after any
        incarnation ended (a dead row, or a row live at the previous read and now
        gone: it deregistered, releasing what it could), for claim rows that a
        transaction held locked at the time (they are skipped, not waited on);
        again every reconciliation interval while a reap says it skipped some.
        Nothing else: a quiet site reaps nothing."""
        node, agenda = self.node, self.node.agenda
        live = frozenset((n.name, n.incarnation) for n in nodes if rules.is_live(n, backend_now))
        dead = frozenset((n.name, n.incarnation) for n in nodes) - live
        died = dead - self._reaped
        left = self._members - live - dead
        self._members = live
        if not node.is_leader:
            return
        if died or left:
            later = now + node.config.rebalance_check_interval_sec
            if later < agenda.when(REAP):
                agenda.at(REAP, later, reason="an incarnation ended", wakes=False)
        if not died and now < agenda.when(REAP):
            return
        # Raising, it is retried: the deaths stay new.
        skipped = node.backend.reap_claims(node.site).skipped
        node.stats["reaps"] += 1
        self._reaped = dead  # deleted rows drop out: the set stays small
        if skipped:
            # Claims of ended incarnations an open transaction still holds (a dead
            # worker's, until the server sees its connection end): look again.
            later = now + node.config.rebalance_check_interval_sec
            agenda.at(REAP, later, reason="claims skipped while locked", wakes=False)
        elif not died:
            agenda.cancel(REAP)

    def _report(self, decision: leadership.Decision) -> None:
        """Warn, once per change, about tokens left unowned and conflicting locks."""
        site = self.node.site
        unowned = decision.plan.unowned if decision.plan is not None else frozenset()
        if unowned != self.unowned:
            self.unowned = unowned
            if unowned and decision.plan is not None and not decision.plan.nodes:
                log.info("site %s: no eligible node left; %d token(s) unowned", site, len(unowned))
            elif unowned:
                sample = ", ".join(str(t) for t in sorted(unowned)[:10])
                log.warning(
                    "site %s: %d token(s) unowned: their pins match no live node (%s%s)",
                    site,
                    len(unowned),
                    sample,
                    ", ..." if len(unowned) > 10 else "",
                )
        if decision.conflicts != self.conflicts:
            self.conflicts = decision.conflicts
            for conflict in decision.conflicts:
                log.warning(
                    "site %s: locks with different patterns on token %d: %s decides, %s ignored",
                    site,
                    conflict.token,
                    conflict.winner,
                    ", ".join(conflict.losers),
                )

    def _loaded(self, decision: leadership.Decision, inputs: LoadInputs | None, now: float) -> None:
        if self.load is not None and inputs is not None and decision.load_plan is not None:
            self.load.planned(decision.load_plan, inputs, now, self.node.site)

    def _trigger(self) -> str:
        return "leader-change" if self.node.generation == 0 else "membership-or-locks"
