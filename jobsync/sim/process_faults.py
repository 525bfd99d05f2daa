"""Faults in a process itself: crashes (with the reap they make due paused in the teeth
profile), SIGTERM (sometimes during an outage longer than the drain), user
transactions held open, releases left unacknowledged, and slow or lagging event
consumers."""

from __future__ import annotations

from jobsync.sim.cluster import CONSUMERS, SimNode
from jobsync.sim.scriptbase import ScriptBase, on_a_node


class ProcessFaults(ScriptBase):
    """Crashes, SIGTERM, user transactions, blocked acknowledgements, consumers."""

    @on_a_node(leader_bias=0.3)
    def _crash(self, sim: SimNode) -> None:
        self.c.crash(sim.key)
        if self.nemesis and self.rng.random() < 0.5:
            # The reap this death makes due: its leader pauses inside it.
            self.c.store.pause_inside_any["reap_claims"] = self._span(0.5, 1.5)
        if self.rng.random() < 0.5:
            self._restart_later(sim.name)

    @on_a_node()
    def _sigterm(self, sim: SimNode) -> None:
        """SIGTERM at any moment; sometimes during a database outage longer than the drain."""
        if self.rng.random() < 0.4:
            cfg = self.c.config
            self._database_outage((cfg.drain_timeout_sec + 1.0) * self.rng.uniform(1.0, 2.0))
        self.c.sigterm(sim.key)

    def _user_tx(self) -> bool:
        """The user's next completion runs in its own transaction, held open."""
        sim = self.pick(spare=0)
        if sim is None or not hasattr(sim.user, "hold_next"):
            return False
        sim.user.hold_next = (self._span(0.2, 3.0), self.rng.random() < 0.3)  # type: ignore[union-attr]
        return True

    @on_a_node(spare=0)
    def _ack_block(self, sim: SimNode) -> None:
        self.c.block_acks(sim.key)
        if self.rng.random() < 0.6:  # otherwise it never acknowledges until faults stop
            ack = self.c.config.ack_timeout
            self.later(ack * self.rng.uniform(0.2, 3.0), lambda: self.c.unblock_acks(sim.key))
        if self.nemesis:
            # The eviction this makes due is where a leader's pause hurts: its lease may
            # end between its read and the eviction.  A join makes a release to miss.
            self.c.store.slow_any["evict_overdue"] = self._span(0.5, 1.5)
            if self.rng.random() < 0.5:
                self._join()

    @on_a_node(spare=0)
    def _consumer(self, sim: SimNode) -> None:
        sim.consumer = self.rng.choice(CONSUMERS)
