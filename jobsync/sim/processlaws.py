"""The simulator's judgement of each process over its life, after every tick and
every batch of consumed events: invariants 6 (a process's incarnation and generation
never go backwards) and 7 (a process stops only when drained or superseded by a
newer process of its name, a tick never schedules its next one later than a
heartbeat interval, consumed rebalance events describe exactly the claimable set).
The laws are stated at the top of ``invariants.py``; invariant 7's SIGTERM deadline
and invariant 8 (bounded lock waits) are judged where the cluster ends and blocks
processes, in ``exits.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from jobsync.core.errors import NodeNameConflict
from jobsync.core.lifecycle import TERMINAL, NodeState
from jobsync.runtime.node import RebalanceEvent
from jobsync.sim.ownership import EMPTY

if TYPE_CHECKING:
    from jobsync.sim.cluster import SimNode
    from jobsync.sim.invariants import Checker


@attrs.define
class _Marks:
    incarnation: int | None
    generation: int
    state: NodeState
    leader: bool


class ProcessLaws:
    """What each process was at its last tick, and the events it has consumed."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.c = checker.c
        self.marks: dict[str, _Marks] = {}
        self.folded: dict[str, tuple[frozenset[int], int]] = {}

    def fail(self, invariant: int, message: str) -> None:
        self.checker.fail(invariant, message)

    def forget(self, sim: SimNode) -> None:
        """A process died: its marks and events go."""
        self.folded.pop(sim.key, None)
        self.marks.pop(sim.key, None)

    def after_tick(self, sim: SimNode, local: float, wake: float) -> None:
        """Judge the process after a tick that ended at ``local`` (its own clock) and
        asked to wake at ``wake``; log the changes of its state."""
        node = sim.node
        inc = node.incarnation
        mark = self.marks.get(sim.key)
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
                for inc, o in self.checker.by_incarnation.items()
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
