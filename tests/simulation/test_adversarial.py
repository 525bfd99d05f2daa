"""The six defects of the hostile review, each as a directed scenario in virtual time.

Each scenario is run twice: with every defence on it must keep its promise,
and with the one defence that closes its defect switched off (passed in
explicitly as ``Defences``) the simulator's invariants must catch the
defect.  The seeded hunts for the same defects are in test_teeth.py.

1. A duplicate that gives up must not hand the older process's tokens on.
2. A leader whose lease ends between its read and an eviction survives.
3. A registration whose reply was lost is retried as a registration.
4. A user transaction held open hangs nothing and stalls no one.
5. A SIGTERMed worker ends within its deadline during an outage.
6. A leader paused inside its reap stalls nobody's heartbeat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from jobsync.core.defences import Defences
from jobsync.core.lifecycle import NodeState
from jobsync.runtime.config import CoordinationConfig
from jobsync.sim import VirtualCluster
from jobsync.sim.errors import InvariantViolation
from jobsync.sim.workload import TaskBoard, UserLoop

CFG = CoordinationConfig(
    total_tokens=30,
    heartbeat_interval_sec=1.0,
    heartbeat_timeout_sec=3.5,
    drain_timeout_sec=3.0,
)
Scenario = Callable[[VirtualCluster], None]


def cluster(defences: Defences, names: str = "abc", *, board: bool = False) -> VirtualCluster:
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)
    tasks = TaskBoard(CFG.total_tokens, CFG.hash_function, 300) if board else None
    c = VirtualCluster(CFG, seed=1, defences=defences, board=tasks)
    for name in names:
        c.add(name)
    assert c.run_until(c.ready, 10)
    c.run_for(0.3)
    return c


def outcome(scenario: Scenario, defences: Defences, *, board: bool = False) -> int | None:
    """The invariant the scenario broke, or None."""
    c = cluster(defences, board=board)
    try:
        scenario(c)
        c.run_for(2 * CFG.heartbeat_timeout_sec)
    except InvariantViolation as violation:
        return violation.invariant
    return None


def duplicate_gives_up(c: VirtualCluster) -> None:
    c.cut_off("b")  # b is inside its lease, holding tokens, and cannot hear anything
    duplicate = c.spawn("b")
    c.run_for(0.2)  # the duplicate registered: the row fences b's tokens
    assert duplicate.node.incarnation is not None
    c.give_up(duplicate.key)  # its enter timed out: it deregisters and exits
    c.run_for(CFG.heartbeat_timeout_sec + 1.0)
    c.restore("b")


def leader_paused_before_eviction(c: VirtualCluster) -> None:
    leader = c.leader()
    assert leader is not None
    c.block_acks("c")  # c never acknowledges: an eviction comes due
    c.store.slow_any["evict_overdue"] = 5.0  # and the leader stops right before it
    c.add("d")
    c.run_for(12.0)
    assert leader.node.state is not NodeState.STOPPED or leader.node.draining


def lost_registration_reply(c: VirtualCluster) -> None:
    sim = c.nodes["b"]
    c.pause("b", CFG.heartbeat_timeout_sec + 1.0)  # its lease runs out: it must register anew
    c.store.lose_reply[sim.client, "register"] = 1  # and that registration's reply is lost
    c.run_for(CFG.heartbeat_timeout_sec + 4.0)
    assert sim.node.state is NodeState.ACTIVE, sim.node.state


def user_transaction_held_open(c: VirtualCluster) -> None:
    sim = c.nodes["b"]
    user = sim.user
    assert isinstance(user, UserLoop)
    user.hold_next = (10.0, True)  # complete in a transaction held 10 s, release inside it
    c.crash("c")  # a plan and a reap must run meanwhile
    c.run_for(12.0)


def sigterm_during_outage(c: VirtualCluster) -> None:
    c.store.cut_off_all()
    c.sigterm("b")
    c.run_for(CFG.drain_timeout_sec + 3.0)
    c.store.restore_all()
    assert c.nodes["b"].exited


def leader_paused_inside_reap(c: VirtualCluster) -> None:
    for sim in c.nodes.values():  # long work: every worker holds open claims throughout
        assert isinstance(sim.user, UserLoop)
        sim.user.slow_work = True
        sim.user.batch = 6
    c.run_for(3.0)
    c.store.pause_inside_any["reap_claims"] = 5.0
    c.crash("c")  # its death makes a reap due; the others hold open claims meanwhile
    c.run_for(10.0)


CASES = [
    ("deregister_keeps_fence", duplicate_gives_up, (1, 2), False),
    ("retry_leader_errors", leader_paused_before_eviction, (7,), False),
    ("reregister_after_lost_reply", lost_registration_reply, (7,), False),
    ("bounded_lock_waits", user_transaction_held_open, (8,), True),
    ("sigterm_deadline", sigterm_during_outage, (7,), False),
    ("short_reap_locks", leader_paused_inside_reap, (8,), True),
]


@pytest.mark.parametrize(("defence", "scenario", "invariants", "board"), CASES)
def test_the_defect_is_closed_and_the_simulator_sees_it_reopened(
    defence: str, scenario: Scenario, invariants: tuple[int, ...], board: bool
) -> None:
    assert outcome(scenario, Defences(), board=board) is None
    assert outcome(scenario, Defences.without(defence), board=board) in invariants
