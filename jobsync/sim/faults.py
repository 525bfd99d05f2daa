# Law: every workload step and fault is drawn from the run's one seeded RNG
# and applied through the cluster's public verbs, and every fault is bounded:
# it ends by its own scheduled undo or, at the latest, when ``heal`` ends all
# faults ("faults stop").  After heal, fault actions still in the queue do
# nothing, and restarts still pending happen at once, so what follows is a
# cluster with no faults at all.  Clock faults stay within the assumptions of
# docs/PROTOCOL.md section 5: local clocks drift by at most ``DRIFT_SHARE`` of the
# margin over a timeout and only jump forward; the database clock's offset
# stays within +-``DB_SHARE`` of the margin, so no step exceeds it.
"""The catalogue of workloads and faults a scenario draws from, and the ``Script`` that
applies them: workloads in ``operations``; faults by kind in ``network_faults``,
``pause_faults`` and ``process_faults``; what they share in ``scriptbase``."""

from __future__ import annotations

import random
from collections.abc import Callable

from jobsync.sim.cluster import VirtualCluster
from jobsync.sim.network_faults import VERBS, WRITE_VERBS, NetworkFaults
from jobsync.sim.operations import PATTERNS, Operations
from jobsync.sim.pause_faults import LEADER_VERBS, PauseFaults
from jobsync.sim.process_faults import ProcessFaults
from jobsync.sim.scriptbase import DB_SHARE, DRIFT_SHARE

__all__ = [
    "DB_SHARE",
    "DRIFT_SHARE",
    "FAULTS",
    "LEADER_VERBS",
    "PATTERNS",
    "VERBS",
    "WORKLOADS",
    "WRITE_VERBS",
    "Script",
]

WORKLOADS = (
    "join",
    "leave",
    "rolling",
    "scale",
    "pins",
    "leader_churn",
    "restart",
    "duplicate",
    "giveup_duplicate",
)
FAULTS = (
    "crash",
    "pause",
    "suspend",
    "cut",
    "outage",
    "lose",
    "delay",
    "ack_block",
    "blip",
    "db_step",
    "stall",
    "targeted_stall",
    "slow",
    "consumer",
    "lost_reply",
    "pause_in_tick",
    "user_tx",
    "sigterm",
)


class Script(Operations, NetworkFaults, PauseFaults, ProcessFaults):
    """Applies named actions to a cluster; counts what it did (the fault mix)."""

    def __init__(self, cluster: VirtualCluster, rng: random.Random, max_nodes: int) -> None:
        super().__init__(cluster, rng, max_nodes)
        cluster.commit_hooks.append(self._on_commit)

    def act(self, kind: str) -> None:
        if self.healed and kind in FAULTS:
            return
        action: Callable[[], bool] = getattr(self, f"_{kind}")
        if action():
            self.mix[kind] += 1

    def heal(self) -> None:
        self.healed = True
        self.stalls_armed = self.targeted_armed = 0
        self.c.heal()
        restarts, self._restarts = self._restarts, []
        for name in restarts:
            self.start(name)
        if not self.running():  # the script may have stopped or superseded every process
            self.start(self.new_name())
