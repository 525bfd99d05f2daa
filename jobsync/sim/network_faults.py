"""Faults between the processes and the database: partitions, outages, lost and
delayed notifications, transient failures, replies lost after a commit, and steps of
the database clock."""

from __future__ import annotations

from jobsync.sim.cluster import SimNode
from jobsync.sim.scriptbase import ScriptBase, on_a_node

VERBS = (
    "heartbeat",
    "read_nodes",
    "read_owned",
    "ack_releases",
    "read_cluster",
    "evict_overdue",
    "reap_claims",
    "commit_plan",
    "mark_leaving",
    "deregister",
    "register",
)
"""Node verbs a targeted transient failure may hit."""
WRITE_VERBS = (
    "register",
    "heartbeat",
    "mark_leaving",
    "deregister",
    "commit_plan",
    "ack_releases",
    "evict_overdue",
    "reap_claims",
    "claim",
    "complete",
    "release",
)
"""Verbs whose reply may be lost after they committed."""


class NetworkFaults(ScriptBase):
    """Partitions, outages, notification faults, blips, lost replies, database clock steps."""

    @on_a_node(spare=0)
    def _cut(self, sim: SimNode) -> None:
        self.c.cut_off(sim.key)
        self.later(self._span(0.1, 3.0), lambda: self.c.restore(sim.key))

    def _outage(self) -> bool:
        self._database_outage(self._span(0.1, 2.5))
        return True

    def _lose(self) -> bool:
        targets = self.running() if self.rng.random() < 0.3 else [self.pick(spare=0)]
        for sim in targets:
            if sim is not None:
                self.c.store.lose_notifications(sim.client, self.rng.randint(1, 3))
        return bool(targets)

    @on_a_node(spare=0)
    def _delay(self, sim: SimNode) -> None:
        self.c.delay_notifications(
            sim.key, self.c.config.heartbeat_interval_sec * 2 * self.rng.random()
        )
        self.later(self._span(0.2, 3.0), lambda: self.c.delay_notifications(sim.key, 0.0))

    @on_a_node(spare=0)
    def _blip(self, sim: SimNode) -> None:
        if self.rng.random() < 0.5:
            self.c.store.fail_next(sim.client, self.rng.randint(1, 4))
        else:
            self.c.store.fail_verb(sim.client, self.rng.choice(VERBS), self.rng.randint(1, 2))

    @on_a_node(spare=0, leader_bias=0.3)
    def _lost_reply(self, sim: SimNode) -> None:
        key = (sim.client, self.rng.choice(WRITE_VERBS))
        self.c.store.lose_reply[key] = self.c.store.lose_reply.get(key, 0) + 1

    def _db_step(self) -> bool:
        target = self.rng.uniform(-self.db_bound, self.db_bound)
        self.c.step_db_clock(target - self.c.clock.db_offset)
        return True
