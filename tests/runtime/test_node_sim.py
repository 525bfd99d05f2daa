"""The node protocol under virtual time (docs/PROTOCOL.md section 4, the hand-off protocol).

Each test drives real ``Node`` objects on a shared memory store through
``VirtualCluster``; invariant 1 (no token claimable by two nodes at any
instant) is checked after every event of every test.
"""

from __future__ import annotations

import pytest

from jobsync.core.lifecycle import NodeState
from jobsync.errors import NodeNameConflict
from jobsync.runtime.config import CoordinationConfig
from jobsync.sim import LocalClock, VirtualCluster

T = 100
CFG = CoordinationConfig(total_tokens=T, heartbeat_interval_sec=1.0, heartbeat_timeout_sec=3.5)


def cluster(names: str | list[str] = "abc", seed: int = 0, config: CoordinationConfig = CFG):
    c = VirtualCluster(config, seed=seed)
    for name in names:
        c.add(name)
    assert c.run_until(c.ready, 10)
    return c


def loads(c: VirtualCluster) -> dict[str, int]:
    return {k: len(v) for k, v in c.claimable().items()}


def covered(c: VirtualCluster, total: int = T) -> bool:
    return sum(loads(c).values()) == total


def balanced(c: VirtualCluster, total: int = T) -> bool:
    counts = loads(c)
    return sum(counts.values()) == total and max(counts.values()) - min(counts.values()) <= 1


def test_nodes_starting_together_get_one_balanced_distribution() -> None:
    c = cluster("abcde")
    assert balanced(c)
    assert sorted(loads(c)) == list("abcde")
    plans = sum(s.node.stats["plans_committed"] for s in c.nodes.values())
    assert plans == 1  # one plan, not a cascade


def test_zero_token_node_is_ready_and_healthy() -> None:
    cfg = CoordinationConfig(total_tokens=2, heartbeat_interval_sec=1.0, heartbeat_timeout_sec=3.5)
    c = cluster("abc", config=cfg)
    assert sorted(loads(c).values()) == [1, 1]
    assert all(s.node.state is NodeState.ACTIVE for s in c.nodes.values())


@pytest.mark.parametrize("victim", ["a", "c"])  # the leader, a follower
def test_crash_heals_within_timeout_plus_one_second(victim: str) -> None:
    c = cluster("abc")
    c.crash(victim)
    start = c.now
    assert c.run_until(lambda: covered(c) and victim not in loads(c), 10)
    healed = c.now - start
    assert healed <= CFG.heartbeat_timeout_sec + 1.0
    assert balanced(c)


def test_no_polling_beyond_the_heartbeat_in_steady_state() -> None:
    c = cluster("abc")
    before = {k: dict(s.handle.statistics()) for k, s in c.nodes.items()}
    c.run_for(60)
    for key, sim in c.nodes.items():
        after = sim.handle.statistics()
        heartbeats = after["heartbeat"] - before[key]["heartbeat"]
        assert 59 <= heartbeats <= 61
        for verb in ("read_cluster", "read_owned", "read_nodes", "glance", "commit_plan"):
            # at most the fallback reconciliation (one per 30 s) beyond the heartbeat
            budget = 60 // CFG.rebalance_check_interval_sec + 1
            assert after.get(verb, 0) - before[key].get(verb, 0) <= budget, (key, verb)


@pytest.mark.parametrize("leaver", ["a", "b"])  # the leader, a follower
def test_graceful_leave_hands_off_within_one_second(leaver: str) -> None:
    c = cluster("abc")
    c.drain(leaver)
    start = c.now
    assert c.run_until(lambda: c.node(leaver).state is NodeState.STOPPED and covered(c), 5)
    assert c.now - start <= 1.0
    assert leaver not in loads(c)
    assert balanced(c)
    _, nodes = c.store.connect("probe").read_nodes(c.site)
    assert leaver not in {n.name for n in nodes}


def test_join_and_leave_at_the_same_moment() -> None:
    c = cluster("abc")
    c.drain("b")
    c.add("d")
    assert c.run_until(
        lambda: c.node("b").state is NodeState.STOPPED and c.ready(["a", "c", "d"]) and balanced(c),
        5,
    )
    assert sorted(loads(c)) == ["a", "c", "d"]


def test_join_is_handled_within_one_second() -> None:
    c = cluster("ab")
    c.add("c")
    start = c.now
    assert c.run_until(lambda: c.ready() and balanced(c) and "c" in loads(c), 5)
    assert c.now - start <= 1.0 + CFG.settle_window


def test_paused_node_is_fenced_before_others_claim_and_comes_back() -> None:
    c = cluster("abc")
    c.pause("b", 10)  # longer than the 3.5 s lease
    start = c.now
    # invariant 1 is checked at every event: b answers False before a or c may claim
    assert c.run_until(lambda: covered(c) and "b" not in loads(c), 6)
    assert c.now - start <= CFG.heartbeat_timeout_sec + 1.0
    assert c.run_until(lambda: c.now >= start + 10 and c.ready() and balanced(c), 20)
    assert c.node("b").stats["reregistrations"] == 1
    assert "b" in loads(c)


def test_suspend_is_a_gap_in_the_local_clock() -> None:
    c = cluster("abc")
    sim = c.nodes["c"]
    c.pause("c", 8)
    sim.clock.offset += 8  # the boot clock kept counting through the suspend
    assert c.run_until(lambda: c.now >= c.nodes["c"].paused_until and c.ready() and balanced(c), 20)


def test_database_outage_longer_than_the_timeout() -> None:
    c = cluster("abcd")
    c.store.cut_off_all()
    c.run_for(CFG.heartbeat_timeout_sec)
    assert loads(c) == {}  # every node stopped claiming on its own
    c.run_for(5)
    assert all(s.node.state not in (NodeState.STOPPED,) for s in c.nodes.values())
    c.store.restore_all()
    assert c.run_until(lambda: c.ready() and balanced(c), 10)
    # the first one back did not take the whole cluster: one plan after the outage
    assert sorted(loads(c)) == list("abcd")


def test_first_node_back_does_not_grab_the_cluster() -> None:
    c = cluster("abcd")
    c.store.cut_off_all()
    c.run_for(6)
    c.store.restore_all()
    peak = 0

    def watch() -> bool:
        nonlocal peak
        counts = loads(c)
        if counts:
            peak = max(peak, *counts.values())
        return c.ready() and balanced(c)

    assert c.run_until(watch, 10)
    assert peak <= T // 4 + 1


def test_second_process_with_the_same_name_takes_over() -> None:
    c = cluster("abc")
    old = c.nodes["b"]
    old_tokens = loads(c)["b"]
    c.add("b")  # a second process with the same name
    new_key = next(k for k in c.nodes if k.startswith("b~"))
    # the old one learns at its next heartbeat, and stops
    assert c.run_until(lambda: old.node.state is NodeState.SUPERSEDED, 3)
    assert isinstance(old.node.error, NodeNameConflict)
    assert c.run_until(lambda: c.nodes[new_key].node.state is NodeState.ACTIVE, 10)
    assert loads(c)[new_key] == old_tokens
    assert balanced(c)


def test_restart_under_the_same_name_keeps_tokens_with_zero_moves() -> None:
    c = cluster("abc")
    before = c.claimable()["b"]
    c.crash("b")
    c.run_for(0.5)
    c.add("b")
    assert c.run_until(lambda: c.nodes["b"].node.state is NodeState.ACTIVE, 10)
    assert c.claimable()["b"] == before
    assert loads(c)["a"] + loads(c)["c"] == T - len(before)


def test_pins_follow_patterns_and_fallbacks() -> None:
    c = VirtualCluster(CFG, seed=3)
    for name in ["gpu-1", "cpu-1", "cpu-2"]:
        c.add(name)
    admin = c.store.connect("admin")
    from jobsync.backends.base import LockSpec

    admin.ensure_site(c.site, T, "xxh3")
    admin.replace_locks(
        c.site,
        "admin",
        [
            LockSpec(task_key="t7", token=7, patterns=("gpu-%",)),
            LockSpec(task_key="t8", token=8, patterns=("tpu-%", "cpu-2")),
        ],
        clear_existing=False,
    )
    assert c.run_until(lambda: c.ready() and covered(c), 10)
    claim = c.claimable()
    assert 7 in claim["gpu-1"]
    assert 8 in claim["cpu-2"]
    c.crash("gpu-1")
    assert c.run_until(lambda: covered(c, T - 1) and "gpu-1" not in loads(c), 10)
    assert all(7 not in tokens for tokens in c.claimable().values())  # unowned, reported
    c.add("gpu-2")
    assert c.run_until(lambda: covered(c) and 7 in c.claimable().get("gpu-2", ()), 10)


def test_drift_and_offsets_within_the_margin_keep_exclusivity() -> None:
    c = VirtualCluster(CFG, seed=5)
    c.add("a", clock=LocalClock(offset=-500.0, rate=1.0 + 1e-4))
    c.add("b", clock=LocalClock(offset=1234.5, rate=1.0 - 1e-4))
    c.add("c")
    assert c.run_until(lambda: c.ready() and balanced(c), 10)
    c.crash("a")
    c.pause("b", 5)
    assert c.run_until(lambda: c.now > c.nodes["b"].paused_until and c.ready() and balanced(c), 30)


@pytest.mark.parametrize("victim", ["a", "b", "c", "d"])
@pytest.mark.parametrize("delay", [0.0, 2.0, 4.999, 7.0])
def test_crash_at_default_timings_heals_within_the_bound(victim: str, delay: float) -> None:
    # Regression: a heartbeat landing exactly on a dead peer's lease end used to
    # reschedule the would-be leader's look past it, and nobody ever planned.
    defaults = CoordinationConfig(total_tokens=1000)
    c = VirtualCluster(defaults, seed=11)
    for name in "abcd":
        c.add(name)
    assert c.run_until(c.ready, 60)
    c.run_for(delay)
    c.crash(victim)
    start = c.now

    def healed() -> bool:
        sets = c.claimable()
        return victim not in sets and sum(len(v) for v in sets.values()) == 1000

    assert c.run_until(healed, 60)
    assert c.now - start <= defaults.heartbeat_timeout_sec + 1.0
