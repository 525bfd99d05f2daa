"""Runtime bugs the simulator found, each as a plain test and as the seeds that found it.

1. A plan lost to a transient error was never retried.  ``Node._lead`` cleared
   its intent to plan before committing; when the commit (or the evict/reap
   before it) failed with BackendUnavailable, nothing re-armed it, and since
   the node had already read the change counter, neither the next heartbeat
   nor the fallback reconciliation did: the site stayed unplanned (a joining
   node never got tokens) until some other change happened.  First found by
   a teeth scenario (a commit stalled, then the leader was cut off); the
   seeds below fail without the fix.
2. A write that failed transiently inside a refresh was not retried.
   ``_refresh`` marks the node clean before it acknowledges releases or
   deregisters a drained node; when that write failed with
   BackendUnavailable the node stayed clean, so after its backoff it had no
   reason to look again.  A failed acknowledgement waited for its deadline:
   the leader evicted a healthy node, which re-registered with its own tokens
   unclaimable until its old lease ran out.  A failed deregistration left a
   drained node "draining" until the next change or reconciliation, holding
   ``job.drain()`` up to its bound.  Fix: a transient error marks the node
   dirty, so the next successful step re-reads and retries.

The directed tests are the stable regressions; the seeds name scenarios of
the current generator (``jobsync.sim.scenario.GENERATOR``) that found them.
"""

from __future__ import annotations

import logging

import pytest

from jobsync.core.lifecycle import NodeState
from jobsync.runtime.config import CoordinationConfig
from jobsync.sim import LocalClock, VirtualCluster, make_spec, run_scenario

CFG = CoordinationConfig(total_tokens=30, heartbeat_interval_sec=1.0, heartbeat_timeout_sec=3.5)


def cluster(names: str = "abc") -> VirtualCluster:
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)
    c = VirtualCluster(CFG, seed=1)
    for name in names:
        c.add(name)
    assert c.run_until(c.ready, 10)
    c.run_for(0.3)
    return c


def loads(c: VirtualCluster) -> dict[str, int]:
    return {k: len(v) for k, v in c.claimable().items()}


@pytest.mark.parametrize("verb", ["commit_plan", "read_cluster", "reap_claims"])
def test_a_plan_lost_to_a_transient_error_is_retried(verb: str) -> None:
    c = cluster()
    leader = c.leader()
    assert leader is not None
    if verb == "reap_claims":  # a reap is due when a node dies: that one fails once
        c.store.fail_verb(leader.client, verb)
        c.crash("c")
        start = c.now
        bound = CFG.heartbeat_timeout_sec + 1.0 + 0.5
        assert c.run_until(lambda: "c" not in loads(c) and sum(loads(c).values()) == 30, bound)
        assert c.node(leader.key).stats["transient_errors"] >= 1
        return
    c.store.fail_verb(leader.client, verb)
    c.add("d")
    start = c.now
    assert c.run_until(lambda: c.ready(["a", "b", "d"]) and loads(c).get("d", 0) >= 7, 10)
    assert c.now - start <= 1.0 + 0.5, f"joiner ready after {c.now - start:.2f}s"
    assert c.node(leader.key).stats["transient_errors"] >= 1


def test_a_failed_acknowledgement_is_retried_not_left_to_eviction() -> None:
    c = cluster()
    c.block_acks("b")  # for 100 ms: every notification of the hand-off lands inside it
    c.at(c.now + 0.1, lambda: c.unblock_acks("b"))
    c.add("d")
    start = c.now
    assert c.run_until(lambda: c.ready() and loads(c).get("d", 0) >= 7, 10)
    assert c.now - start <= 1.0 + 0.5, f"joiner ready after {c.now - start:.2f}s"
    c.run_for(2 * CFG.heartbeat_timeout_sec)
    b = c.node("b")
    assert (b.stats["reregistrations"], b.state) == (0, NodeState.ACTIVE)
    assert sum(loads(c).values()) == 30


def test_a_failed_deregistration_is_retried() -> None:
    c = cluster()
    c.store.fail_verb(c.nodes["b"].client, "deregister")
    c.drain("b")
    start = c.now
    assert c.run_until(lambda: c.node("b").state is NodeState.STOPPED, 10)
    assert c.now - start <= 1.0 + 0.5, f"stopped after {c.now - start:.2f}s"
    _, rows = c.store.connect("probe").read_nodes(c.site)
    assert "b" not in {r.name for r in rows}


# (seed, profile) under GENERATOR 1 of jobsync.sim.scenario; each fails without its fix.
SEEDS = [(108, "ci"), (151, "ci"), (16, "teeth"), (27, "teeth")]  # bug 1
SEEDS += [(90, "ci"), (394, "ci"), (403, "ci"), (509, "ci")]  # bug 2


@pytest.mark.parametrize(("seed", "profile"), SEEDS)
def test_seeds_that_found_runtime_bugs(seed: int, profile: str) -> None:
    logging.getLogger("jobsync").setLevel(logging.CRITICAL)
    result = run_scenario(make_spec(seed, profile))
    assert result.ok, f"{result.violation}\n" + "\n".join(result.history[-30:])


def test_a_local_deadline_maps_to_a_true_instant_that_reaches_it() -> None:
    # Simulator regression: rounding woke a node a hair before its deadline, forever.
    clock = LocalClock(offset=-7538.1934516705805, rate=1.0 + 3e-5)
    for local in (1007553.3121496572, 1007555.8121496572, 1e6 + 0.1, 12345.678):
        assert clock.read(clock.to_true(local)) >= local
