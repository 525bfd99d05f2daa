"""The coordination thread sleeps until the node's next deadline, not in 50 ms slices,
and a local request (a drain, a stop) still wakes it at once (``runtime/loop.py``)."""

from __future__ import annotations

import time

import attrs

from jobsync import CoordinationConfig
from jobsync.runtime.loop import LOCAL_POLL, Driver
from jobsync.runtime.node import Node
from tests.runtime.conftest import FAST, Backends, eventually, start_jobs

SLOW = attrs.evolve(
    FAST,
    heartbeat_interval_sec=20.0,
    heartbeat_timeout_sec=60.0,
    safety_margin_sec=5.0,
    rebalance_check_interval_sec=60.0,
)


def _count_ticks(node: Node) -> list[float]:
    ticks: list[float] = []
    tick = node.tick

    def counted(now: float, events: object = ()) -> float:
        ticks.append(now)
        return tick(now, events)  # type: ignore[arg-type]

    node.tick = counted  # type: ignore[method-assign]
    return ticks


def test_an_idle_worker_ticks_at_its_deadlines_only(backends: Backends) -> None:
    config = attrs.evolve(FAST, heartbeat_interval_sec=0.5, heartbeat_timeout_sec=3.0)
    (job,) = start_jobs(backends, ["a"], config=config)
    try:
        node = job._node
        assert node is not None and isinstance(config, CoordinationConfig)
        ticks = _count_ticks(node)
        beats = node.stats["heartbeats"]
        assert eventually(lambda: node.stats["heartbeats"] >= beats + 4, timeout=20.0)
        made = node.stats["heartbeats"] - beats
        # 50 ms slices would be some 10 ticks per heartbeat; deadlines are one or two
        assert len(ticks) <= 3 * made + 3, (len(ticks), made)
        spent = max(ticks) - min(ticks)
        assert len(ticks) < spent / LOCAL_POLL / 2
    finally:
        job.__exit__(None, None, None)


def test_a_drain_wakes_a_worker_that_sleeps_until_its_next_heartbeat(
    backends: Backends,
) -> None:
    (job,) = start_jobs(backends, ["a"], config=SLOW)
    node, driver = job._node, job._driver
    assert node is not None and isinstance(driver, Driver)
    started = time.monotonic()
    try:
        assert job.drain() is True
        # the next heartbeat is 20 s away: only the poke got the drain seen this soon
        assert time.monotonic() - started < 10.0
    finally:
        job.__exit__(None, None, None)
    assert driver.stop(timeout=5.0) is True
