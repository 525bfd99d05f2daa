"""Explicit completion costs and hot tokens, end to end: Job.complete(cost=) feeds the
leader's estimate, and the hot token it finds is named by the leader's status, its
readiness body, ``jobsync status`` (a HOT line) and the dashboard's document."""

from __future__ import annotations

import math

import attrs
import pytest

from jobsync.backends.capabilities import Completion
from jobsync.cli.render import status_text
from jobsync.cli.report import hot_tokens, status_report
from jobsync.core.errors import InvalidArgument
from jobsync.dashboard import snapshot
from jobsync.runtime.health import readiness
from jobsync.runtime.loadtrack import LoadTracker

from .conftest import FAST, Backends, eventually, start_jobs
from .test_load_balance import Feed


def test_an_explicit_cost_replaces_the_duration() -> None:
    rows = [
        Completion(token=1, claimed_at=0.0, completed_at=1.0, cost=50.0),
        Completion(token=2, claimed_at=0.0, completed_at=1.0),  # one second of wall time
    ]
    tracker = LoadTracker(4, half_life=10.0, interval=1.0)
    tracker.refresh(Feed(rows), "s", 1.0)
    rates = tracker.estimate.rates(1.0)
    assert rates[1] == pytest.approx(50.0 * rates[2])


def test_a_bad_cost_is_refused_naming_it_and_nothing_is_written(
    memory_backends: Backends,
) -> None:
    (job,) = start_jobs(memory_backends, ["w1"])
    try:
        task = next(t for t in (f"t-{k}" for k in range(100)) if job.can_claim_task(t))
        assert job.add_task(task)
        for bad in (0, -2.5, math.nan, math.inf, "1", True):
            with pytest.raises(InvalidArgument, match="cost must be a positive finite number"):
                job.complete(task, cost=bad)  # type: ignore[arg-type]
        assert [r["status"] for r in job.get_audit()] == ["claimed"]
        assert job.complete(task, cost=2)
    finally:
        job.__exit__(None, None, None)


def test_the_hot_token_is_named_everywhere(backends: Backends) -> None:
    config = attrs.evolve(FAST, load_half_life_sec=60.0, rebalance_check_interval_sec=0.2)
    jobs = start_jobs(backends, ["w1", "w2"], config=config)
    try:
        hot = jobs[0].task_to_token("t-0")
        for k in range(300):  # every token does a little; one costs far more than a node's share
            task = f"t-{k}"
            for job in jobs:
                if job.can_claim_task(task) and job.add_task(task):
                    assert job.complete(
                        task, cost=1000.0 if job.task_to_token(task) == hot else 1.0
                    )
        leader = next(j for j in jobs if j.am_i_leader())
        assert eventually(lambda: leader.get_coordination_status()["hot_tokens"] == [hot])
        follower = next(j for j in jobs if j is not leader)
        assert follower.get_coordination_status()["hot_tokens"] is None
        assert readiness(leader)[1]["hot_tokens"] == [hot]
        assert "hot_tokens" not in readiness(follower)[1]
        db = backends("reader")
        # The plan giving the hot token a node of its own moved tokens: its history
        # entry records the hot list, where status and the dashboard read it.
        assert eventually(lambda: hot_tokens(db.read_history("site")) == [hot])
        view, history = db.read_cluster("site"), db.read_history("site")
        report = status_report(view, history)
        assert report["hot_tokens"] == [hot]
        line = next(x for x in status_text(report, "db").splitlines() if x.startswith("HOT:"))
        assert f"token(s) {hot} " in line and "salt" in line
        assert snapshot.build(view, history, hot=hot_tokens(history))["hot"] == [hot]
    finally:
        for job in jobs:
            job.__exit__(None, None, None)
