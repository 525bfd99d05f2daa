"""What the scenario measures for invariant 3 (time to heal) and for invariant 7's
"no node wedges" once faults stop: how many tokens are claimable, how many could be,
whether the cluster is healed (every running node active, every satisfiable token
claimable, pins honoured) and whether it has converged (healed and quiescent).  The
scenario owns the clock of faults and judges the bounds; these are its measures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobsync.core.lifecycle import NodeState
from jobsync.core.locks import resolve_locks

if TYPE_CHECKING:
    from jobsync.sim.cluster import SimNode
    from jobsync.sim.invariants import Checker


class HealMeasures:
    """Coverage, satisfiable tokens, healed and converged, read from the cluster."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.c = checker.c
        self.total = checker.total

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
                cache[patterns] = self.checker.eligible(patterns, names) is not None
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
        holder = self.checker.holder
        for token, patterns in pins.items():
            key = holder[token]
            if key is not None:
                self.checker.sync(key)
                key = holder[token]
            if key is None:
                continue
            if patterns not in cache:
                cache[patterns] = self.checker.eligible(patterns, names)
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
