"""The leader's measured load (runtime/loadtrack.py): bounded reads, pacing, and a live site."""

from __future__ import annotations

import logging

import attrs
import pytest

from jobsync.backends.base import DirectAssign, PlanCommit
from jobsync.backends.capabilities import Completion
from jobsync.backends.memory import MemoryBackend, MemoryStore
from jobsync.core.loadbalance import balance_load
from jobsync.runtime.leader import decide
from jobsync.runtime.loadtrack import BATCH, LoadTracker

from .conftest import FAST, Backends, eventually, start_jobs


class Feed:
    """A CompletionFeed that hands out ``rows`` in order and counts its reads."""

    def __init__(self, rows: list[Completion]) -> None:
        self.rows = rows
        self.reads: list[tuple[float, int]] = []

    def read_completions(self, site: str, after: float, limit: int) -> tuple[Completion, ...]:
        self.reads.append((after, limit))
        return tuple(r for r in self.rows if r.completed_at > after)[:limit]


def test_reads_are_bounded_and_paced_and_feed_the_estimate() -> None:
    feed = Feed([Completion(token=3, claimed_at=t - 2.0, completed_at=t) for t in (98.0, 99.0)])
    tracker = LoadTracker(8, half_life=10.0, interval=60.0)
    assert tracker.inputs(100.0) is None  # nothing measured: the count planner plans
    tracker.refresh(feed, "site", 100.0)
    assert feed.reads == [(100.0 - 4 * 10.0, BATCH)]  # a new leader reads four half-lives back
    inputs = tracker.inputs(100.0)
    assert inputs is not None and inputs.load_moves == 1  # 2% of 8 tokens, at least one
    rates = inputs.rates
    assert rates[3] > 0 and sum(rates) == rates[3]
    tracker.refresh(feed, "site", 130.0)  # not due: no request
    assert len(feed.reads) == 1
    tracker.refresh(feed, "site", 160.0)
    assert feed.reads[-1] == (99.0, BATCH)  # on from the last completion read


def test_load_moves_are_paced_to_one_plan_an_interval() -> None:
    tracker = LoadTracker(100, half_life=10.0, interval=60.0)
    tracker.refresh(Feed([Completion(token=1, claimed_at=0.0, completed_at=1.0)]), "s", 2.0)
    first = tracker.inputs(2.0)
    assert first is not None and first.load_moves == 2
    owners = ["a"] * 100
    result = balance_load(owners, first.rates, {"a": 1.0, "b": 1.0}, load_moves=first.load_moves)
    tracker.planned(result, first, 2.0, "s")
    later = tracker.inputs(30.0)
    assert later is not None and later.load_moves == 0  # orphans and joins only until 62
    assert tracker.inputs(62.0).load_moves == 2  # type: ignore[union-attr]
    assert tracker.cooling == dict(result.cooling)


def test_a_hot_token_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    tracker = LoadTracker(10, half_life=10.0, interval=1.0)
    rows = [Completion(token=7, claimed_at=0.0, completed_at=5.0)]
    rows += [Completion(token=t, claimed_at=0.0, completed_at=0.1) for t in range(4)]
    tracker.refresh(Feed(rows), "s", 5.0)
    inputs = tracker.inputs(5.0)
    assert inputs is not None
    result = balance_load(["a", "b", "c"] * 3 + ["a"], inputs.rates, dict.fromkeys("abc", 1.0))
    with caplog.at_level(logging.WARNING, logger="jobsync.node"):
        tracker.planned(result, inputs, 5.0, "s")
        tracker.planned(result, attrs.evolve(inputs, load_moves=1), 6.0, "s")
    assert tracker.hot == (7,)
    assert [r.getMessage() for r in caplog.records] == [
        "site s: hot token(s) 7 each carry more than a node's share of the measured load; "
        "spread their tasks (add a salt to the task id)"
    ]


def test_a_site_balancing_measured_load_stays_exclusive(memory_backends: Backends) -> None:
    config = attrs.evolve(FAST, load_half_life_sec=1.0, rebalance_check_interval_sec=0.2)
    jobs = start_jobs(memory_backends, ["w1", "w2"], config=config)
    try:
        worker = jobs[0]
        done = 0
        for k in range(400):  # complete what this worker may claim: the leader measures it
            task = f"task-{k}"
            if worker.can_claim_task(task) and worker.add_task(task):
                done += worker.complete(task)
        assert done > 0
        trackers = [j._node.leading.load for j in jobs if j._node and j._node.is_leader]  # type: ignore[attr-defined]
        assert eventually(lambda: any(t is not None and t.estimate.measured for t in trackers))
        total = config.total_tokens
        assert eventually(lambda: sum(len(j.my_tokens) for j in jobs) == total)
        mine = [set(j.my_tokens) for j in jobs]
        assert not mine[0] & mine[1]
    finally:
        for job in jobs:
            job.__exit__(None, None, None)


def _uneven_site() -> tuple[MemoryBackend, dict[str, int]]:
    """A memory site of 40 tokens that load balancing left uneven: a holds 30, b 10."""
    db = MemoryStore().connect("test")
    db.ensure_site("s", 40, "xxh3")
    incs = {n: db.register("s", n, 30.0).incarnation for n in ("a", "b")}
    view = db.read_cluster("s")
    assigns = tuple(
        DirectAssign(
            token=t,
            expected_incarnation=None,
            expected_epoch=view.tokens.epoch[t],
            owner="a" if t < 30 else "b",
            incarnation=incs["a" if t < 30 else "b"],
        )
        for t in range(40)
    )
    db.commit_plan(
        "s",
        PlanCommit(
            leader="a",
            leader_incarnation=incs["a"],
            expected_generation=view.site.generation,
            basis=view.site.change_counter,
            assigns=assigns,
        ),
    )
    return db, incs


def test_a_new_leader_with_nothing_measured_keeps_the_table() -> None:
    db, incs = _uneven_site()
    view = db.read_cluster("s")
    tracker = LoadTracker(40, half_life=10.0, interval=1.0)
    tracker.refresh(db, "s", view.now)  # no completion in four half-lives
    warming = tracker.inputs(view.now)
    assert warming is not None and warming.load_moves == 0
    kept = decide(view, "a", incs["a"], 10.0, "leader-change", load=warming)
    assert kept.is_leader and kept.plan is not None and kept.plan.moves == ()
    # The count planner would have evened the counts at once: 10 of a's tokens to b.
    evened = decide(view, "a", incs["a"], 10.0, "leader-change")
    assert evened.commit is not None and len(evened.commit.revokes) == 10
    # A node joining is still filled, and only it receives (never throttled)...
    db.register("s", "c", 30.0)
    joined = decide(db.read_cluster("s"), "a", incs["a"], 10.0, "membership", load=warming)
    assert joined.plan is not None
    assert {new for _, _, new in joined.plan.moves} == {"c"} and len(joined.plan.moves) >= 11
    assert joined.commit is not None and joined.load_plan is not None
    db.commit_plan("s", joined.commit)
    tracker.planned(joined.load_plan, warming, view.now, "s")  # c is known from now on
    # Re-planned before the holders acknowledge: the moves in flight are kept.
    again = decide(
        db.read_cluster("s"), "a", incs["a"], 10.0, "timer", load=tracker.inputs(view.now)
    )
    assert again.plan is not None and again.plan.moves == ()
    assert again.commit is None or not (again.commit.revokes or again.commit.assigns)
    # ...and a leaving node's tokens go (b drains: its 10 are orphans).
    db.set_drain("s", "b", True, note="maintenance")
    drained = decide(db.read_cluster("s"), "a", incs["a"], 10.0, "drain", load=warming)
    assert drained.plan is not None and "b" not in drained.plan.assignment
    # Nothing measured for four half-lives of reading: the count planner again.
    assert tracker.inputs(view.now + 4 * 10.0) is None
