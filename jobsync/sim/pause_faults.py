"""Faults that stop a process or a verb for a while: pauses, suspends (the clock jumps
on waking), a pause right at a verb (before it, inside it holding its locks, after its
commit), slow verbs, and plan commits stalled between their read and their write, with
the commit nemesis that aims the targeted stall at the worst moment."""

from __future__ import annotations

from jobsync.backends.base import PlanCommit
from jobsync.sim.cluster import SimNode
from jobsync.sim.network_faults import VERBS
from jobsync.sim.scriptbase import ScriptBase, on_a_node

LEADER_VERBS = ("read_cluster", "evict_overdue", "reap_claims", "commit_plan")
"""What a leader's pass calls between its read and its write: where a pause hurts most."""


class PauseFaults(ScriptBase):
    """Pauses, suspends, pauses at a verb, slow verbs and stalled plan commits."""

    @on_a_node(spare=0)
    def _pause(self, sim: SimNode) -> None:
        self.c.pause(sim.key, self._span(0.05, 3.0))

    @on_a_node(spare=0)
    def _suspend(self, sim: SimNode) -> None:
        seconds = self._span(0.1, 2.0)
        self.c.suspend(sim.key, seconds, jump=seconds * self.rng.uniform(1.0, 1.5))

    @on_a_node(spare=0, leader_bias=0.5)
    def _pause_in_tick(self, sim: SimNode) -> None:
        """Stop the process right before a verb, inside it (holding its locks) or right
        after its commit, before it reads the answer."""
        seconds = self._span(0.05, 1.5)
        if sim is self.c.leader() and self.rng.random() < 0.5:
            # whoever leads when it happens stops right before a leader-only step
            self.c.store.slow_any[self.rng.choice(LEADER_VERBS)] = seconds
            return
        verbs = LEADER_VERBS if sim is self.c.leader() else VERBS
        key = (sim.client, self.rng.choice(verbs))
        where = self.rng.choice(("before", "inside", "after"))
        store = self.c.store
        {"before": store.slow_verbs, "inside": store.pause_inside, "after": store.pause_after}[
            where
        ][key] = seconds

    @on_a_node(spare=0)
    def _slow(self, sim: SimNode) -> None:
        verb = self.rng.choice(("heartbeat", "heartbeat", "read_owned", "ack_releases", "register"))
        self.c.store.slow_verbs[sim.client, verb] = self._span(0.02, 0.9)

    def _stall(self) -> bool:
        self.stalls_armed += 1
        return True

    def _targeted_stall(self) -> bool:
        self.targeted_armed += 1
        return True

    def _on_commit(self, client: str, commit: PlanCommit) -> None:
        """Stall a plan between its read and its commit; the targeted kind also ends the
        partition or pause of a holder the plan takes tokens from, and steps the database
        clock back as far as the margin allows, so the holder's late heartbeat lands in
        the window the commit-time expiry re-check exists for."""
        if self.healed:
            return
        troubled = self._holders_in_trouble(commit) if self.targeted_armed else []
        if troubled:
            self.targeted_armed -= 1
            self.mix["targeted_stall_fired"] += 1
            for sim in troubled:
                self.c.restore(sim.key)
                self.c.resume(sim.key)
            self.c.step_db_clock(-self.db_bound - self.c.clock.db_offset)
            self.c.stall(client, self.c.config.heartbeat_interval_sec * self.rng.uniform(0.6, 1.5))
        elif self.stalls_armed:
            self.stalls_armed -= 1
            self.c.stall(client, self._span(0.01, 0.8))

    def _holders_in_trouble(self, commit: PlanCommit) -> list[SimNode]:
        found = []
        for assign in commit.assigns:
            for sim in self.c.nodes.values():
                if (
                    sim.running
                    and sim.node.incarnation == assign.expected_incarnation
                    and (self.c.store.unreachable(sim.client) or sim.paused_until > self.c.now)
                    and sim not in found
                ):
                    found.append(sim)
        return found
