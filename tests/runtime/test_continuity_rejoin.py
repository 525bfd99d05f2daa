"""A node whose row a failover lost registers anew, and that registration is checked
for continuity like a renewal: the site's counter below what the node had seen means
the history it claimed on is gone, so it claims nothing for one heartbeat timeout
(virtual time on a memory store whose state is rolled back, as an asynchronous
replica's promotion rolls a PostgreSQL site back)."""

from __future__ import annotations

import copy

from jobsync.backends.memory import MemoryStore
from jobsync.core.lifecycle import NodeState
from jobsync.runtime.node import Node
from tests.runtime.test_node_errors import CFG, VirtualClock, drive, make


def claimable(node: Node, clock: VirtualClock) -> bool:
    return bool(node.snapshot.tokens) and node.lease_valid(clock.t)


def test_a_registration_over_lost_history_is_quarantined() -> None:
    clock = VirtualClock()
    store = MemoryStore(clock)
    a, b = make(store, "a"), make(store, "b")
    assert drive([a, b], clock, 10, lambda: a.ready and b.ready)
    before = copy.deepcopy(store._sites)  # what the promoted replica will hold
    late = make(store, "late")
    assert drive([a, b, late], clock, 10, lambda: late.ready and claimable(late, clock))
    store._sites = before  # the failover: late's row and every change since are gone
    assert drive([late], clock, 1.1, lambda: late.stats["reregistrations"] == 1)
    assert late.state is not NodeState.STOPPED and late.error is None
    assert late.stats.get("continuity_breaks") == 1  # noticed at the registration itself
    assert late.membership.quarantined(clock.t)
    assert (
        drive([a, b, late], clock, CFG.heartbeat_timeout_sec - 0.5, lambda: claimable(late, clock))
        is False
    )
    assert drive([a, b, late], clock, 5, lambda: claimable(late, clock))
    assert not late.membership.quarantined(clock.t)
