# Law: a run is a pure function of its seed and its script.  Real ``Node``
# objects (the class production runs) share one MemoryStore under one virtual
# clock that jumps from event to event; nothing sleeps and nothing reads the
# host's time, so a failure replays exactly.
#
# Events, ordered by (virtual time, insertion sequence): TICK (a node's own
# wake-up, which its ``tick`` returns), USER (its simulated user thread),
# NOTIFY (one broadcast per burst of changes; per node when delayed), ACTION
# (a scripted workload step or fault).
# The store's clock is ``true + db_offset``; each node reads its own local
# clock (offset, rate, forward jumps for suspends), which is how the clock
# assumptions of docs/PROTOCOL.md section 5 are exercised.  A plan commit may be
# *stalled*: the committing node's tick is suspended inside its commit while
# every other event runs, which is how "a leader paused between its read and
# its commit" is modelled without threads.
#
# With ``check=True`` an ``invariants.Checker`` sees every tick, plan commit,
# acknowledgement and claim, and raises InvariantViolation at the first
# breach; invariant 1 is kept incrementally, so a check costs what changed.
#
# The parts: world.py (state and primitives), events.py (the event loop),
# exits.py (blocking on row locks, giving up, SIGTERM), this module (the
# scripting surface: processes, faults, the exclusivity check).
"""A virtual-time cluster of real Nodes on one MemoryStore, with fault injection."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

from jobsync.core.lifecycle import NodeState
from jobsync.runtime.node import Node, Signal
from jobsync.sim.errors import InvariantViolation
from jobsync.sim.events import NOTIFY_LATENCY
from jobsync.sim.exits import Exits
from jobsync.sim.process import CONSUMERS, LocalClock, SimNode
from jobsync.sim.store import VirtualClock
from jobsync.sim.world import HISTORY

if TYPE_CHECKING:
    pass

__all__ = [
    "CONSUMERS",
    "HISTORY",
    "NOTIFY_LATENCY",
    "InvariantViolation",
    "LocalClock",
    "SimNode",
    "VirtualClock",
]


class VirtualCluster(Exits):
    """Nodes of one site under virtual time.  ``step`` runs one event; ``run_for`` many.

    ``add`` processes, then script faults at virtual instants (``at(t, fn)``):
    ``crash``, ``pause``/``resume``, ``suspend``, ``cut_off``/``restore``,
    ``store.cut_off_all``, ``store.fail_next``/``fail_verb``/``slow_verbs``,
    ``store.lose_notifications``, ``delay_notifications``, ``block_acks``,
    ``step_db_clock``, ``stall`` (from ``commit_hooks``), ``add`` again for a
    second process of a name, ``heal``; ``run_until(pred, timeout)``.  With
    ``user=factory`` each process also runs your worker logic (workload.SimJob).
    """

    def _wire(self, check: bool) -> None:
        if check:
            from jobsync.sim.invariants import Checker

            self.checker = Checker(self)
            self.store.on_ack = self.checker.on_ack
        self.store.before_commit = self._before_commit
        self.store.on_slow = self._slow
        self.store.on_pause = self._pause_in_verb
        self.store.on_contend = self._contend

    def add(self, name: str, *, clock: LocalClock | None = None, consumer: str = "fast") -> Node:
        """Start a process named ``name`` now (a new process, even if the name exists)."""
        return self.spawn(name, clock=clock, consumer=consumer).node

    def spawn(
        self, name: str, *, clock: LocalClock | None = None, consumer: str = "fast"
    ) -> SimNode:
        """``add``, returning the simulated process (its key may be ``name~2`` while
        an older process of that name still runs)."""
        born = next(self._births)
        handle = self.store.connect(f"{name}#{born}")
        node = Node(
            handle,
            self.site,
            name,
            self.config,
            rng=random.Random(self.rng.random()),
            defences=self.defences,
            process=handle.client,
            capacity=1.0 if self.capacity is None else self.capacity(name),
        )
        key = self._key(name)
        sim = SimNode(
            name=name,
            key=key,
            node=node,
            handle=handle,
            clock=clock or LocalClock(),
            born=born,
            consumer=consumer,
        )
        old = self.nodes.get(key)
        if old is not None and self.checker is not None:
            self.checker.forget(old)
        self.nodes[key] = sim
        self._clients[handle.client] = key
        self._schedule(key, self.now)
        if self.user_factory is not None:
            sim.user = self.user_factory(self, sim)
        elif self.board is not None:
            from jobsync.sim.workload import UserLoop

            sim.user = UserLoop(self, sim, random.Random(self.rng.random()))
        if sim.user is not None:
            self._push_user(sim, self.now + 0.05 + 0.2 * self.rng.random())
        self.log(key, f"start {handle.client}")
        return sim

    def _key(self, name: str) -> str:
        key, n = name, 1
        while key in self.nodes and not self.nodes[key].crashed:
            n += 1
            key = f"{name}~{n}"
        return key

    def drain(self, name: str, *, release: bool = False) -> None:
        """Graceful leave: the user loop settles its claims, then the node drains."""
        sim = self.nodes[name]
        sim.leaving = True
        if sim.user is not None:
            sim.user.finish(release=release)
        sim.signals.append(Signal.DRAIN)
        self._schedule(name, max(self.now, sim.paused_until))
        self.log(name, "drain (releasing claims)" if release else "drain")

    def pause(self, name: str, seconds: float) -> None:
        """SIGSTOP for ``seconds``: no ticks, no user loop; its local clock keeps running."""
        sim = self.nodes[name]
        sim.paused_until = max(sim.paused_until, self.now + seconds)
        self._schedule(name, sim.paused_until)
        self.log(name, f"pause {seconds:.3f}s")

    def resume(self, name: str) -> None:
        """End a pause now."""
        sim = self.nodes[name]
        if sim.paused_until > self.now:
            sim.paused_until = self.now
            self._schedule(name, self.now)
            if sim.user is not None:
                self._push_user(sim, self.now)
            self.log(name, "resumed")

    def suspend(self, name: str, seconds: float, jump: float | None = None) -> None:
        """A suspend: paused, and on resume its boot clock reads ``jump`` (default
        ``seconds``) more than true time has advanced (the clock only ever jumps forward)."""
        self.pause(name, seconds)
        self.nodes[name].clock.offset += seconds if jump is None else jump
        self.log(name, "suspended (local clock jumps forward)")

    def node(self, name: str) -> Node:
        return self.nodes[name].node

    def live(self) -> list[SimNode]:
        return [s for s in self.nodes.values() if s.running]

    def cut_off(self, name: str) -> None:
        self.store.cut_off(self.nodes[name].client)
        self.log(name, "cut off from the backend")

    def restore(self, name: str) -> None:
        self.store.restore(self.nodes[name].client)
        self.log(name, "reachable again")

    def block_acks(self, name: str) -> None:
        """This process's acknowledgements fail (a releaser that never acknowledges)."""
        self.store.blocked_acks.add(self.nodes[name].client)
        self.log(name, "acknowledgements blocked")

    def unblock_acks(self, name: str) -> None:
        self.store.blocked_acks.discard(self.nodes[name].client)

    def delay_notifications(self, name: str, seconds: float) -> None:
        self.nodes[name].notify_delay = seconds
        self.log(name, f"notifications delayed {seconds:.3f}s")

    def step_db_clock(self, delta: float) -> None:
        self.clock.db_offset += delta
        self.log("db", f"clock steps {delta:+.4f}s (offset {self.clock.db_offset:+.4f})")

    def heal(self) -> None:
        """Faults stop: partitions, outages, blips, blocked acks, notification faults."""
        self.store.clear_faults()
        for sim in self.nodes.values():
            sim.notify_delay = 0.0
        self.log("sim", "faults stop")

    def ready(self, names: Iterable[str] | None = None) -> bool:
        keys = names if names is not None else [k for k, s in self.nodes.items() if not s.crashed]
        return all(self.nodes[k].node.state is NodeState.ACTIVE for k in keys)

    def leader(self) -> SimNode | None:
        """The process whose incarnation the store counts as the oldest live node."""
        state = self.store.site_state(self.site)
        top = state.leader(self.clock()) if state is not None else None
        if top is None:
            return None
        for sim in self.nodes.values():
            if sim.running and sim.node.incarnation == top.incarnation:
                return sim
        return None
