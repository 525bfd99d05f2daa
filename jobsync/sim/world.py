# Law: one World is one run's state: the virtual clock, the store, the simulated
# processes and the event queue, plus the few primitives every part of a
# cluster uses (local clocks, scheduling, logging, a process dying).  The parts
# that act on it are layered on top: ``Events`` runs the queue (ticks, user
# steps, notifications, stalls), ``Exits`` adds blocking on row locks and the
# ways a process ends (giving up, SIGTERM), and ``VirtualCluster`` (cluster.py)
# is the scripting surface tests and scenarios use.
"""The state of one simulated run and its primitives."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from jobsync.backends.base import PlanCommit
from jobsync.backends.memory import MemoryTransaction
from jobsync.core.defences import PRODUCTION, Defences
from jobsync.runtime.config import CoordinationConfig
from jobsync.sim.errors import InvariantViolation
from jobsync.sim.process import SimNode
from jobsync.sim.store import SimStore, VirtualClock

if TYPE_CHECKING:
    from jobsync.sim.invariants import Checker
    from jobsync.sim.workload import TaskBoard, User

HISTORY = 400
"""Events kept for the report printed around a violation."""
TICK, USER, NOTIFY, ACTION = 0, 1, 2, 3


class World:
    """One run's state and primitives (see the module law)."""

    def __init__(
        self,
        config: CoordinationConfig,
        *,
        seed: int = 0,
        site: str = "sim",
        start: float = 1_000_000.0,
        check: bool = True,
        board: TaskBoard | None = None,
        user: Callable[[World, SimNode], User] | None = None,
        defences: Defences = PRODUCTION,
        capacity: Callable[[str], float] | None = None,
        cost: Callable[[int], float] | None = None,
    ) -> None:
        self.config = config
        self.capacity = capacity
        """Each node name's capacity (None: every node 1)."""
        self.cost = cost
        """What a task on each token costs, given to ``complete`` (None: no cost given)."""
        self.site = site
        self.defences = defences
        self.rng = random.Random(seed)
        self.clock = VirtualClock(start)
        self.store = SimStore(self.clock, defences)
        self.lock_bound = 1.0 + self.store.lock_timeout
        """Invariant 8: the longest a process may stay blocked behind one lock holder."""
        self._blocked: dict[tuple[str, int], tuple[float, float]] = {}
        self._tx_end: dict[int, float] = {}
        self._txs: dict[str, list[MemoryTransaction]] = {}
        self.terminated: dict[str, float] = {}
        """Processes sent SIGTERM: key -> the true instant by which each must have ended."""
        self.nodes: dict[str, SimNode] = {}
        self.check = check
        self.history: deque[tuple[float, str, str]] = deque(maxlen=HISTORY)
        self.errors: dict[str, Exception] = {}
        self.commit_hooks: list[Callable[[str, PlanCommit], None]] = []
        self.board = board
        self.user_factory = user
        self.events = 0
        self._queue: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self._births = itertools.count(1)
        self._actions: dict[str, Callable[[], object]] = {}
        self._clients: dict[str, str] = {}
        self._signals_seen = 0
        self._broadcast_pending = False
        self._stalled: set[SimNode] = set()
        self._ticking: SimNode | None = None
        self.checker: Checker | None = None  # set by VirtualCluster when check is on
        self._wire(check)

    def _wire(self, check: bool) -> None:
        """Connect the store's hooks and the checker: the cluster's part of building."""

    @property
    def now(self) -> float:
        return self.clock.now

    def local(self, sim: SimNode) -> float:
        return sim.clock.read(self.clock.now)

    def log(self, name: str, what: str) -> None:
        self.history.append((self.now, name, what))

    def _to_true(self, sim: SimNode, local: float) -> float:
        if local == math.inf:
            return local
        return max(sim.clock.to_true(local), self.now)

    def _push(self, at: float, kind: int, key: str) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), kind, key))

    def _schedule(self, key: str, at: float) -> None:
        sim = self.nodes[key]
        sim.wake = at
        if at < math.inf:
            self._push(at, TICK, key)

    def at(self, instant: float, action: Callable[[], object]) -> None:
        """Run ``action`` at virtual ``instant`` (a workload step or a fault)."""
        ident = f"a{next(self._seq)}"
        self._actions[ident] = action
        self._push(max(instant, self.now), ACTION, ident)

    def crash(self, name: str, why: str = "crash") -> None:
        """The process dies: no more ticks, no goodbye; its open transactions roll back
        (the database drops its connections)."""
        sim = self.nodes[name]
        if sim.crashed:
            return
        sim.crashed = True
        for tx in self._txs.pop(sim.client, []):
            if tx.open:
                tx.rollback()
        if self.checker is not None:
            self.checker.forget(sim)
        self.log(name, why)

    def _violation(self, invariant: int, message: str) -> None:
        if self.checker is not None:
            self.checker.fail(invariant, message)

    def claimable(self) -> dict[str, frozenset[int]]:
        """Every running node's claimable set at this instant, on its own clock."""
        out: dict[str, frozenset[int]] = {}
        for key, sim in self.nodes.items():
            if sim.crashed:
                continue
            tokens = sim.node.snapshot.claimable(self.local(sim))
            if tokens:
                out[key] = tokens
        return out

    def check_exclusive(self) -> None:
        """Invariant 1, recomputed in full: at most one node may claim any token now."""
        owner: dict[int, str] = {}
        for key, tokens in self.claimable().items():
            for token in tokens:
                other = owner.setdefault(token, key)
                if other != key:
                    raise InvariantViolation(
                        f"t={self.now:.3f}: token {token} claimable by {other} and {key}",
                        invariant=1,
                    )
