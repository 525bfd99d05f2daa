"""``minimum_nodes``: the leader distributes no token until that many workers are live.

The rule is ``jobsync.core.plan_inputs.forming`` (pure, tested on its own);
the gate is the leader's (``runtime/leader.py``), driven here on real ``Node``
objects under the simulator's virtual time (invariant 1 checked after every
event), and on Jobs that enter on a memory store.
"""

from __future__ import annotations

import threading
import uuid

import attrs
import pytest

from jobsync import CoordinationConfig, Job
from jobsync.core.lifecycle import NodeState
from jobsync.core.plan_inputs import forming
from jobsync.sim import VirtualCluster

from .conftest import FAST, eventually

T = 60
CFG = CoordinationConfig(
    total_tokens=T, heartbeat_interval_sec=1.0, heartbeat_timeout_sec=3.5, minimum_nodes=3
)


# -- the rule ---------------------------------------------------------------------------------
def test_a_site_forms_while_too_few_nodes_are_eligible_and_no_live_node_holds_a_token() -> None:
    unowned: tuple[str | None, ...] = (None, None, None)
    none = (None, None, None)
    both = {"a": 1, "b": 1}
    assert forming(3, ["a", "b"], both, unowned, none) is True
    assert forming(2, ["a", "b"], both, unowned, none) is False  # enough
    assert forming(1, [], {}, unowned, none) is False  # minimum 1: never forms
    assert forming(2, [], {}, unowned, none) is True  # nobody at all
    # a live node holds a token: the site is serving, however few remain
    assert forming(3, ["a"], {"a": 1}, ("a", None, "dead"), (1, None, 4)) is False
    # ... down to the last one leaving (live, not eligible): it hands its tokens off
    assert forming(3, [], {"a": 1}, ("a", "a", None), (1, 1, None)) is False
    # tokens held only by ended incarnations (a whole fleet restarting) still form
    assert forming(3, ["a"], {"a": 2}, ("a", "dead", "dead"), (1, 4, 4)) is True


# -- the leader, under virtual time -------------------------------------------------------------
def owned(c: VirtualCluster) -> int:
    return sum(len(tokens) for tokens in c.claimable().values())


def test_no_token_is_distributed_until_minimum_nodes_are_live() -> None:
    c = VirtualCluster(CFG, seed=1)
    c.add("a")
    c.add("b")
    c.run_for(30)  # many settle windows and heartbeats: the leader has looked, and waited
    assert not c.ready() and owned(c) == 0
    assert all(s.node.stats["plans_committed"] == 0 for s in c.nodes.values())
    assert "minimum_nodes=3" in c.node("a").waiting_for
    c.add("c")
    assert c.run_until(c.ready, 10)
    counts = sorted(len(tokens) for tokens in c.claimable().values())
    assert counts == [20, 20, 20]


def test_once_serving_the_site_keeps_serving_with_fewer_nodes() -> None:
    c = VirtualCluster(CFG, seed=2)
    for name in "abc":
        c.add(name)
    assert c.run_until(c.ready, 10)
    c.crash("a")
    c.crash("b")
    assert c.run_until(lambda: len(c.claimable().get("c", ())) == T, 10)  # c takes them all
    c.add("d")  # a newcomer still gets its share, though only two are live
    assert c.run_until(lambda: c.ready() and len(c.claimable().get("d", ())) == T // 2, 10)


def test_a_fleet_restarting_from_nothing_waits_for_minimum_nodes_again() -> None:
    c = VirtualCluster(CFG, seed=3)
    for name in "abc":
        c.add(name)
    assert c.run_until(c.ready, 10)
    for name in "abc":
        c.crash(name)
    c.add("a")  # a new process of a: the tokens are still held by the ended ones
    c.run_for(30)
    assert owned(c) == 0 and not c.ready()
    c.add("b")
    c.add("c")
    assert c.run_until(c.ready, 15)
    assert owned(c) == T


@pytest.mark.parametrize("minimum", [1, 3])
def test_the_last_workers_leave_at_once_whatever_minimum_nodes(minimum: int) -> None:
    c = VirtualCluster(attrs.evolve(CFG, minimum_nodes=minimum), seed=4)
    for name in "abc":
        c.add(name)
    assert c.run_until(c.ready, 10)
    for name in "abc":
        c.drain(name)
        # each hands its tokens off within a heartbeat, the last one too (to nobody)
        stopped = lambda n=name: c.node(n).state is NodeState.STOPPED  # noqa: E731
        assert c.run_until(stopped, CFG.heartbeat_interval_sec)
    assert owned(c) == 0


# -- Jobs ------------------------------------------------------------------------------------
def test_a_job_waits_to_enter_until_minimum_nodes_are_live() -> None:
    url = f"memory://minimum-{uuid.uuid4().hex[:8]}"
    cfg = CoordinationConfig(
        total_tokens=FAST.total_tokens,
        heartbeat_interval_sec=FAST.heartbeat_interval_sec,
        heartbeat_timeout_sec=FAST.heartbeat_timeout_sec,
        settle_window_sec=FAST.settle_window_sec,
        minimum_nodes=2,
    )
    entered = threading.Event()
    leave = threading.Event()
    first = Job("worker-01", None, url, coordination_config=cfg, handle_sigterm=False)

    def run_first() -> None:
        with first:
            entered.set()
            leave.wait(30)

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        # worker-01 leads, and has heartbeat five times past its settle window: no plan
        assert eventually(lambda: first._node is not None and first._node.stats["heartbeats"] >= 5)
        assert not entered.is_set() and first._node.stats["plans_committed"] == 0
        with Job("checker", "default", url, observer=True, handle_sigterm=False) as seen:
            assert seen.get_active_nodes() == ["worker-01"]
            owners = seen._require_backend().read_cluster("default").tokens.owner
            assert set(owners) == {None}
        with Job("worker-02", None, url, coordination_config=cfg, handle_sigterm=False) as second:
            assert entered.wait(10)
            assert len(second.my_tokens) + len(first.my_tokens) == cfg.total_tokens
            assert len(second.my_tokens) == cfg.total_tokens // 2
    finally:
        leave.set()
        thread.join(30)


def test_a_job_alone_below_minimum_nodes_times_out_saying_why() -> None:
    url = f"memory://minimum-{uuid.uuid4().hex[:8]}"
    cfg = CoordinationConfig(
        total_tokens=8, heartbeat_interval_sec=0.2, heartbeat_timeout_sec=2.0, minimum_nodes=2
    )
    job = Job("worker-01", None, url, coordination_config=cfg, wait_on_enter=1.5)
    with pytest.raises(TimeoutError, match="with minimum_nodes=2 the leader distributes no token"):
        job.__enter__()
