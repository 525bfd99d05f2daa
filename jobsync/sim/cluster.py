"""A virtual-time cluster: real ``Node`` objects on a shared ``MemoryStore``.

The same Node class production runs is driven here by one seeded scheduler
under one virtual clock that jumps from event to event: a node's next wake-up,
a delivered notification, or a scripted action.  Nothing sleeps; a run is a
pure function of its seed and script, so a failure replays exactly.

The backend's clock is the virtual clock; each node sees its own local clock,
which may be offset, drift at a rate, or jump (a suspend), to model the clock
assumptions of DESIGN.md section 5.  After every tick the cluster checks
invariant 1: at no instant do two nodes both answer True for one token.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable

import attrs

from jobsync.backends.base import PlanCommit
from jobsync.backends.memory import MemoryBackend, MemoryStore
from jobsync.core.errors import JobSyncError
from jobsync.core.lifecycle import TERMINAL, NodeState
from jobsync.runtime.config import CoordinationConfig
from jobsync.runtime.node import Node, Signal

NOTIFY_LATENCY = 0.002
"""Virtual seconds between a commit and a listener waking on its notification."""


class InvariantViolation(AssertionError):
    """A safety invariant failed; the message names it, the instant and the nodes."""


class VirtualClock:
    """The simulation's true time; the backend reads it directly."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@attrs.define
class LocalClock:
    """A node's view of time: ``offset + rate * true``, plus suspends (jumps)."""

    offset: float = 0.0
    rate: float = 1.0

    def read(self, true_now: float) -> float:
        return self.offset + self.rate * true_now


@attrs.define
class SimNode:
    name: str
    node: Node
    handle: MemoryBackend
    clock: LocalClock
    wake: float = 0.0
    paused_until: float = 0.0
    crashed: bool = False
    signals: list[Signal] = attrs.Factory(list)


class VirtualCluster:
    """Nodes of one site under virtual time.  ``step`` runs one event; ``run_for`` many."""

    def __init__(
        self,
        config: CoordinationConfig,
        *,
        seed: int = 0,
        site: str = "sim",
        start: float = 1_000_000.0,
        check: bool = True,
    ) -> None:
        self.config = config
        self.site = site
        self.rng = random.Random(seed)
        self.clock = VirtualClock(start)
        self.store = MemoryStore(self.clock, sleeper=lambda _s: None)
        self.nodes: dict[str, SimNode] = {}
        self.check = check
        self.history: list[tuple[float, str, str]] = []
        self.errors: dict[str, Exception] = {}
        self._queue: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._incarnation_seq = itertools.count(1)
        self.store.before_commit = self._before_commit
        self.commit_hooks: list[Callable[[str, PlanCommit], None]] = []

    @property
    def now(self) -> float:
        return self.clock.now

    # -- membership scripting ------------------------------------------------------
    def add(self, name: str, *, clock: LocalClock | None = None) -> Node:
        """Start a node named ``name`` now (a new process, even if the name existed)."""
        handle = self.store.connect(f"{name}#{next(self._incarnation_seq)}")
        node = Node(
            handle,
            self.site,
            name,
            self.config,
            rng=random.Random(self.rng.random()),
        )
        sim = SimNode(name=name, node=node, handle=handle, clock=clock or LocalClock())
        key = self._key(name)
        self.nodes[key] = sim
        self._schedule(key, self.now)
        self.log(name, "start")
        return node

    def _key(self, name: str) -> str:
        key, n = name, 1
        while key in self.nodes and not self.nodes[key].crashed:
            n += 1
            key = f"{name}~{n}"
        return key

    def crash(self, name: str) -> None:
        """The process dies: no more ticks, no goodbye."""
        sim = self.nodes[name]
        sim.crashed = True
        self.log(name, "crash")

    def drain(self, name: str) -> None:
        """Graceful leave: the node drains and deregisters by itself."""
        self.nodes[name].signals.append(Signal.DRAIN)
        self._schedule(name, self.now)
        self.log(name, "drain")

    def pause(self, name: str, seconds: float) -> None:
        """SIGSTOP for ``seconds``: no ticks; its local clock keeps running."""
        sim = self.nodes[name]
        sim.paused_until = self.now + seconds
        self._schedule(name, sim.paused_until)
        self.log(name, f"pause {seconds:g}s")

    def node(self, name: str) -> Node:
        return self.nodes[name].node

    def live(self) -> list[SimNode]:
        return [s for s in self.nodes.values() if not s.crashed and s.node.state not in TERMINAL]

    # -- running -----------------------------------------------------------------
    def run_for(self, seconds: float) -> None:
        self.run_until_time(self.now + seconds)

    def run_until_time(self, instant: float) -> None:
        while self._queue and self._queue[0][0] <= instant:
            self.step()
        self.clock.now = max(self.clock.now, instant)
        if self.check:
            self.check_exclusive()

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Run until ``predicate()`` holds (checked after every event) or ``timeout`` passes."""
        limit = self.now + timeout
        while not predicate():
            if not self._queue or self._queue[0][0] > limit:
                self.clock.now = max(self.clock.now, limit)
                return predicate()
            self.step()
        return True

    def step(self) -> None:
        at, _, key = heapq.heappop(self._queue)
        sim = self.nodes.get(key)
        if sim is None or sim.crashed or at != sim.wake:
            return  # stale entry
        self.clock.now = max(self.clock.now, at)
        if self.now < sim.paused_until:
            self._schedule(key, sim.paused_until)
            return
        signals, sim.signals = sim.signals, []
        if self._notified(sim):
            signals.append(Signal.NOTIFIED)
        try:
            wake_local = sim.node.tick(sim.clock.read(self.now), signals)
        except Exception as exc:  # a non-transient error ends the node, as in production
            self.errors[key] = exc
            sim.crashed = True
            self.log(sim.name, f"error {exc!r}")
            return
        if sim.node.state not in TERMINAL:
            self._schedule(key, self._to_true(sim, wake_local))
        if self.check:
            self.check_exclusive()
        self._deliver_notifications()

    def _to_true(self, sim: SimNode, local: float) -> float:
        if local == float("inf"):
            return local
        true = (local - sim.clock.offset) / sim.clock.rate
        return max(true, self.now)

    def _schedule(self, key: str, at: float) -> None:
        sim = self.nodes[key]
        if at == float("inf"):
            sim.wake = at
            return
        sim.wake = at
        heapq.heappush(self._queue, (at, next(self._seq), key))

    def _deliver_notifications(self) -> None:
        soon = self.now + NOTIFY_LATENCY
        for key, sim in self.nodes.items():
            if sim.crashed or sim.node.state in TERMINAL:
                continue
            if sim.wake > soon and self._notified(sim):
                sim.signals.append(Signal.NOTIFIED)
                self._schedule(key, soon)

    def _notified(self, sim: SimNode) -> bool:
        if sim.node.registration is None:
            return False
        try:
            return sim.handle.wait_for_change(self.site, 0)
        except JobSyncError:  # cut off: a lost notification
            return False

    def _before_commit(self, client: str, commit: PlanCommit) -> None:
        for hook in self.commit_hooks:
            hook(client, commit)

    # -- invariants ---------------------------------------------------------------
    def claimable(self) -> dict[str, frozenset[int]]:
        """Every running node's claimable set at this instant, on its own clock."""
        out: dict[str, frozenset[int]] = {}
        for key, sim in self.nodes.items():
            if sim.crashed and sim.node.state is NodeState.STOPPED:
                continue
            tokens = sim.node.snapshot.claimable(sim.clock.read(self.now))
            if tokens and not sim.crashed:
                out[key] = tokens
        return out

    def check_exclusive(self) -> None:
        """Invariant 1: at most one node may claim any token at this instant."""
        owner: dict[int, str] = {}
        for key, tokens in self.claimable().items():
            for token in tokens:
                other = owner.setdefault(token, key)
                if other != key:
                    raise InvariantViolation(
                        f"t={self.now:.3f}: token {token} claimable by {other} and {key}"
                    )

    def log(self, name: str, what: str) -> None:
        self.history.append((self.now, name, what))

    def ready(self, names: Iterable[str] | None = None) -> bool:
        keys = (
            list(names)
            if names is not None
            else [s for s in self.nodes if not self.nodes[s].crashed]
        )
        return all(self.nodes[k].node.state is NodeState.ACTIVE for k in keys)
