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
"""Incremental invariant checks over a VirtualCluster."""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from jobsync.backends.base import PlanCommit
from jobsync.core.errors import NodeNameConflict
from jobsync.core.lifecycle import TERMINAL, NodeState
from jobsync.core.locks import resolve_locks
from jobsync.core.patterns import match_pattern
from jobsync.runtime.node import RebalanceEvent
from jobsync.sim.errors import InvariantViolation
from jobsync.sim.planlaws import PlanLaws

if TYPE_CHECKING:
    from jobsync.sim.cluster import SimNode, VirtualCluster

EMPTY: frozenset[int] = frozenset()


@attrs.define
class _Marks:
    incarnation: int | None
    generation: int
    state: NodeState
    leader: bool


def eligible(patterns: Sequence[str], names: Sequence[str]) -> frozenset[str] | None:
    """Nodes the first pattern matching any of ``names`` allows; None if none matches."""
    for pattern in patterns:
        hits = frozenset(n for n in names if match_pattern(pattern, n))
        if hits:
            return hits
    return None


class Checker:
    """Watches one VirtualCluster; raises InvariantViolation at the first breach."""

    def __init__(self, cluster: VirtualCluster) -> None:
        self.c = cluster
        total = cluster.config.total_tokens
        self.total = total
        self.holder: list[str | None] = [None] * total
        self.epoch_seen = array("q", [-1]) * total
        self.epoch_inc: list[int | None] = [None] * total
        self.counted: dict[str, frozenset[int]] = {}
        self.by_incarnation: dict[int, SimNode] = {}
        self.buried: set[int] = set()
        self.marks: dict[str, _Marks] = {}
        self.folded: dict[str, tuple[frozenset[int], int]] = {}
        self.store_marks = (0, 0, 0, 0)
        self.stats: Counter[str] = Counter()
        self._eligible: dict[tuple[tuple[str, ...], tuple[str, ...]], frozenset[str] | None] = {}
        self.plans = PlanLaws(self)
        """Invariants 2, 4, 5 and 6 on every accepted plan (``planlaws``)."""

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

    # -- invariant 1 ------------------------------------------------------------
    def sync(self, key: str) -> None:
        """Bring ``holder`` up to date with node ``key``'s claimable set now."""
        sim = self.c.nodes.get(key)
        tokens = EMPTY
        snap = None
        if sim is not None and not sim.crashed:
            snap = sim.node.snapshot
            if snap.tokens and snap.claimable(self.c.local(sim)):
                tokens = snap.tokens
        old = self.counted.get(key, EMPTY)
        if tokens is old:
            return
        holder = self.holder
        if old:
            for t in old - tokens if tokens else old:
                if holder[t] == key:
                    holder[t] = None
        self.counted[key] = tokens
        if not tokens or snap is None:
            return
        inc = snap.incarnation
        fresh = tokens - old if old else tokens
        if fresh and inc in self.buried:
            self.fail(2, f"{key}: incarnation {inc} claims {_few(fresh)} after it was buried")
        for t in fresh:
            other = holder[t]
            if other is not None and other != key:
                self.sync(other)
                other = holder[t]
                if other is not None and other != key:
                    self.fail(1, f"token {t} claimable by {other} and {key}")
            holder[t] = key
            self._epoch(key, t, snap.epochs[t], inc)

    def _epoch(self, key: str, token: int, epoch: int, inc: int | None) -> None:
        seen = self.epoch_seen[token]
        if epoch < seen or (epoch == seen and inc != self.epoch_inc[token]):
            self.fail(
                6,
                f"{key} publishes token {token} at epoch {epoch} (incarnation {inc}); "
                f"epoch {seen} was already published by incarnation {self.epoch_inc[token]}",
            )
        self.epoch_seen[token] = epoch
        self.epoch_inc[token] = inc

    def forget(self, sim: SimNode) -> None:
        """A process died: it answers nothing any more."""
        if self.c.nodes.get(sim.key) is sim:
            old = self.counted.pop(sim.key, EMPTY)
            for t in old:
                if self.holder[t] == sim.key:
                    self.holder[t] = None
        self.folded.pop(sim.key, None)
        self.marks.pop(sim.key, None)

    # -- per tick: 1, 6, 7 ------------------------------------------------------
    def after_tick(self, sim: SimNode, local: float, wake: float) -> None:
        self.sync(sim.key)
        node = sim.node
        inc = node.incarnation
        mark = self.marks.get(sim.key)
        if inc is not None and inc not in self.by_incarnation:
            self.by_incarnation[inc] = sim
        if mark is not None:
            if inc is not None and mark.incarnation is not None and inc < mark.incarnation:
                self.fail(6, f"{sim.key}: incarnation {mark.incarnation} -> {inc}")
            if node.generation < mark.generation:
                self.fail(6, f"{sim.key}: generation {mark.generation} -> {node.generation}")
        if mark is None or (mark.incarnation, mark.state, mark.leader) != (
            inc,
            node.state,
            node.is_leader,
        ):
            lead = " leader" if node.is_leader else ""
            self.c.log(
                sim.key, f"{node.state.value} inc={inc}{lead} tokens={len(node.snapshot.tokens)}"
            )
        self.marks[sim.key] = _Marks(inc, node.generation, node.state, node.is_leader)
        if node.state in TERMINAL:
            self._check_exit(sim)
        elif wake > local + self.c.config.heartbeat_interval_sec + 1e-6:
            self.fail(7, f"{sim.key}: next tick {wake - local:.3f}s away, beyond one heartbeat")

    def _check_exit(self, sim: SimNode) -> None:
        node = sim.node
        if node.state is NodeState.STOPPED and not node.draining:
            self.fail(7, f"{sim.key} stopped without being asked to drain")
        if node.state is NodeState.SUPERSEDED:  # by a newer incarnation of its name
            mine = node.incarnation or 0
            newer = any(
                inc > mine and o.name == sim.name and o is not sim
                for inc, o in self.by_incarnation.items()
            )
            if not newer or not isinstance(node.error, NodeNameConflict):
                self.fail(7, f"{sim.key} superseded ({node.error!r}) with no newer process")

    def on_events(self, sim: SimNode, events: list[RebalanceEvent]) -> None:
        """Consumed rebalance events must fold into exactly the published claimable set."""
        tokens, version = self.folded.get(sim.key, (EMPTY, 0))
        for e in events:
            ok = (
                e.version > version
                and not (e.added & tokens)
                and e.removed <= tokens
                and (tokens | e.added) - e.removed == e.tokens
            )
            if not ok:
                self.fail(7, f"{sim.key}: rebalance event v{e.version} does not follow v{version}")
            tokens, version = e.tokens, e.version
        if tokens != sim.node.snapshot.tokens:
            self.fail(7, f"{sim.key}: rebalance events disagree with the claimable set")
        self.folded[sim.key] = (tokens, version)

    # -- invariant 2 --------------------------------------------------------------
    def on_ack(self, name: str, incarnation: int, acked: frozenset[int]) -> None:
        sim = self.by_incarnation.get(incarnation)
        if sim is None or sim.crashed or sim.node.snapshot.incarnation != incarnation:
            return
        still = sim.node.snapshot.claimable(self.c.local(sim)) & acked
        if still:
            self.fail(2, f"{sim.key} handed over {_few(still)} while it still claims them")

    def on_claim(self, sim: SimNode, token: int, epoch: int, incarnation: int) -> None:
        state = self.c.store.site_state(self.c.site)
        assert state is not None
        rows = state.tokens
        current = (rows.incarnation[token], rows.epoch[token], token in rows.pending)
        if current != (incarnation, epoch, False):
            self.fail(
                2,
                f"{sim.key}: claim on token {token} at ({incarnation}, {epoch}) accepted; "
                f"the row holds {current}",
            )
        self.stats["claims"] += 1

    def after_event(self) -> None:
        state = self.c.store.site_state(self.c.site)
        if state is None:
            return
        marks = (state.generation, state.change_counter, state.plan_basis, state.next_incarnation)
        if any(new < old for new, old in zip(marks, self.store_marks, strict=True)):
            self.fail(6, f"store counters went backwards: {self.store_marks} -> {marks}")
        self.store_marks = marks
        self.plans.settle_sent()

    # -- plans: 2, 4, 5, 6 (``planlaws``) ------------------------------------------
    def commit_begins(self, client: str, commit: PlanCommit) -> None:
        self.plans.begins(client, commit)

    def commit_sent(self, client: str, commit: PlanCommit) -> None:
        self.plans.sent(commit)

    # -- what invariant 3 measures ---------------------------------------------------
    def coverage(self) -> int:
        """How many tokens some running node may claim now."""
        c = self.c
        return sum(
            len(s.node.snapshot.claimable(c.local(s))) for s in c.nodes.values() if s.running
        )

    def satisfiable(self) -> int:
        """Tokens whose pins (if any) match a running, active node."""
        c = self.c
        state = c.store.site_state(c.site)
        if state is None:
            return self.total
        names = sorted(s.name for s in c.nodes.values() if s.running and not s.node.draining)
        pins = resolve_locks(state.locks.visible(c.clock()), c.clock()).pins
        cache: dict[tuple[str, ...], bool] = {}
        lost = 0
        for patterns in pins.values():
            if patterns not in cache:
                cache[patterns] = self.eligible(patterns, names) is not None
            lost += not cache[patterns]
        return self.total - lost

    def healed(self) -> bool:
        """Guarantee 2's condition: every running node active (none paused or leaving),
        every satisfiable token claimable, and every claimable pinned token on a node
        its pins allow."""
        c = self.c
        running = [s for s in c.nodes.values() if s.running]
        if not running or any(
            s.node.state is not NodeState.ACTIVE or s.leaving or s.paused_until > c.now
            for s in running
        ):
            return False
        return self.coverage() == self.satisfiable() and self._pins_honoured(running)

    def _pins_honoured(self, running: list[SimNode]) -> bool:
        c = self.c
        state = c.store.site_state(c.site)
        if state is None:
            return True
        names = sorted(s.name for s in running)
        by_key = {s.key: s.name for s in running}
        pins = resolve_locks(state.locks.visible(c.clock()), c.clock()).pins
        cache: dict[tuple[str, ...], frozenset[str] | None] = {}
        for token, patterns in pins.items():
            key = self.holder[token]
            if key is not None:
                self.sync(key)
                key = self.holder[token]
            if key is None:
                continue
            if patterns not in cache:
                cache[patterns] = self.eligible(patterns, names)
            allowed = cache[patterns]
            if allowed is None or by_key.get(key) not in allowed:
                return False
        return True

    def converged(self) -> bool:
        """Quiescent: healed, every change planned for, nothing in flight, and the store
        counts exactly the running processes as live."""
        c = self.c
        state = c.store.site_state(c.site)
        if state is None or state.tokens.pending or state.plan_basis < state.change_counter:
            return False  # in flight, or a change the leader has not planned for yet
        now = c.clock()
        live = {(r.name, r.incarnation) for r in state.nodes.values() if r.is_live(now)}
        running = {(s.name, s.node.incarnation) for s in c.nodes.values() if s.running}
        return live == running and self.healed()


def _few(tokens: frozenset[int]) -> str:
    shown = sorted(tokens)[:5]
    return f"{shown}{'...' if len(tokens) > 5 else ''}"
