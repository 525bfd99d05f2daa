# Law: every invariant of docs/PROTOCOL.md section 7 is checked where it can first break, at a
# cost proportional to what changed, and the first breach raises
# InvariantViolation naming it.
#
# 1. Exclusivity.  ``holder[t]`` names the one node whose published claimable
#    set contains token t.  A node's set changes only when it ticks (a new
#    snapshot) or when its lease deadline passes (only removals), so syncing
#    the node that ticked is enough; a stale holder found in the way is
#    re-synced before a conflict is declared.  Paused nodes count: on resume
#    their user thread may answer before their coordination thread runs.
# 2. Fencing.  A DirectAssign is accepted only from an incarnation whose
#    process no longer claims the token (judged at the commit instant), an
#    acknowledgement only from one that dropped it, a buried incarnation never
#    publishes again, a claim is accepted only at the token's current
#    incarnation and epoch, and the user loop's side effect (applied in the
#    same "transaction" as the completion) lands at most once per task.
# 4/5. Every accepted plan is judged on the token table, nodes and locks it
#    was computed from (captured as the commit is sent) and the nodes it
#    judged live (``HistoryEntry.nodes_after``).  The plan is recomputed from
#    those inputs (the planner is deterministic); unpinned, it must be
#    floor/ceil balanced and move exactly the closed-form lower bound (an
#    independent oracle); pinned or not, every pinned token sits where its
#    first live-matching pattern allows and unsatisfiable ones are reported
#    as unowned; and the commit must carry the plan out for every token
#    except those whose holder can be neither revoked nor taken from yet.
#    A leader balancing measured load is judged by ``loadlaws`` instead.
# 6. Store counters, node incarnations and generations, and the epochs under
#    which a token is published never go backwards.
# 7. A node stops only when drained or superseded by a newer process of its
#    name (with NodeNameConflict); a tick never schedules its next one later
#    than a heartbeat interval; consumed rebalance events describe exactly the
#    claimable set.
# Invariant 3 (time to heal) is measured by the scenario, which owns the clock
# of faults; ``coverage`` and ``converged`` here are what it measures.
"""Incremental invariant checks over a VirtualCluster: the ``Checker`` the cluster
calls, composed of one judge per family of invariants: ``ownership`` (1, 2 at
claims and acknowledgements, 6 on published epochs), ``processlaws`` (6 per
process, 7), ``planlaws`` (2, 4, 5, 6 on every accepted plan) and ``healing`` (what
invariant 3 measures)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobsync.backends.base import PlanCommit
from jobsync.core.patterns import match_pattern
from jobsync.runtime.node import RebalanceEvent
from jobsync.sim.errors import InvariantViolation
from jobsync.sim.healing import HealMeasures
from jobsync.sim.ownership import EMPTY, Ownership
from jobsync.sim.planlaws import PlanLaws
from jobsync.sim.processlaws import ProcessLaws

if TYPE_CHECKING:
    from jobsync.sim.cluster import SimNode, VirtualCluster

__all__ = ["EMPTY", "Checker", "eligible"]


def eligible(patterns: Sequence[str], names: Sequence[str]) -> frozenset[str] | None:
    """Nodes the first pattern matching any of ``names`` allows; None if none matches."""
    for pattern in patterns:
        hits = frozenset(n for n in names if match_pattern(pattern, n))
        if hits:
            return hits
    return None


class Checker:
    """Watches one VirtualCluster; raises InvariantViolation at the first breach.

    What every judge shares lives here (the cluster, ``fail``, ``stats``, memoised
    ``eligible``); each hook the cluster calls is handed to the judges concerned."""

    def __init__(self, cluster: VirtualCluster) -> None:
        self.c = cluster
        self.total = cluster.config.total_tokens
        self.store_marks = (0, 0, 0, 0)
        self.stats: Counter[str] = Counter()
        self._eligible: dict[tuple[tuple[str, ...], tuple[str, ...]], frozenset[str] | None] = {}
        self.ownership = Ownership(self)
        """Invariants 1, 2 at claims and acknowledgements, 6 on epochs (``ownership``)."""
        self.processes = ProcessLaws(self)
        """Invariants 6 and 7 on each process over its life (``processlaws``)."""
        self.plans = PlanLaws(self)
        """Invariants 2, 4, 5 and 6 on every accepted plan (``planlaws``)."""
        self.heal = HealMeasures(self)
        """What invariant 3 measures (``healing``)."""

    def eligible(self, patterns: tuple[str, ...], names: Sequence[str]) -> frozenset[str] | None:
        """``eligible``, memoised: the same pins are judged against the same nodes often."""
        key = (patterns, tuple(names))
        if key not in self._eligible:
            if len(self._eligible) > 4096:
                self._eligible.clear()
            self._eligible[key] = eligible(patterns, names)
        return self._eligible[key]

    def fail(self, invariant: int, message: str) -> None:
        raise InvariantViolation(f"t={self.c.now:.3f}: {message}", invariant=invariant)

    @property
    def holder(self) -> list[str | None]:
        """The one process whose published claimable set holds each token, if any."""
        return self.ownership.holder

    @property
    def by_incarnation(self) -> dict[int, SimNode]:
        return self.ownership.by_incarnation

    @property
    def buried(self) -> set[int]:
        return self.ownership.buried

    # -- hooks the cluster calls ---------------------------------------------------
    def sync(self, key: str) -> None:
        """Bring ``holder`` up to date with node ``key``'s claimable set now."""
        self.ownership.sync(key)

    def forget(self, sim: SimNode) -> None:
        """A process died: it answers nothing any more."""
        self.ownership.forget(sim)
        self.processes.forget(sim)

    def after_tick(self, sim: SimNode, local: float, wake: float) -> None:
        self.ownership.sync(sim.key)
        self.ownership.note(sim)
        self.processes.after_tick(sim, local, wake)

    def on_events(self, sim: SimNode, events: list[RebalanceEvent]) -> None:
        self.processes.on_events(sim, events)

    def on_ack(self, name: str, incarnation: int, acked: frozenset[int]) -> None:
        self.ownership.on_ack(incarnation, acked)

    def on_claim(self, sim: SimNode, token: int, epoch: int, incarnation: int) -> None:
        self.ownership.on_claim(sim, token, epoch, incarnation)

    def after_event(self) -> None:
        """Store counters never go backwards (6); then judge the plans sent."""
        state = self.c.store.site_state(self.c.site)
        if state is None:
            return
        marks = (state.generation, state.change_counter, state.plan_basis, state.next_incarnation)
        if any(new < old for new, old in zip(marks, self.store_marks, strict=True)):
            self.fail(6, f"store counters went backwards: {self.store_marks} -> {marks}")
        self.store_marks = marks
        self.plans.settle_sent()

    def commit_begins(self, client: str, commit: PlanCommit) -> None:
        self.plans.begins(client, commit)

    def commit_sent(self, client: str, commit: PlanCommit) -> None:
        self.plans.sent(commit)

    # -- what the scenario measures (``healing``) ------------------------------------
    def coverage(self) -> int:
        """How many tokens some running node may claim now."""
        return self.heal.coverage()

    def satisfiable(self) -> int:
        """Tokens whose pins (if any) match a running, active node."""
        return self.heal.satisfiable()

    def healed(self) -> bool:
        """Every running node active, every satisfiable token claimable, pins honoured."""
        return self.heal.healed()

    def converged(self) -> bool:
        """Healed and quiescent (nothing in flight, the store's live nodes the running)."""
        return self.heal.converged()
