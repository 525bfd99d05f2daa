"""Capacity and planned maintenance on Jobs in threads, on memory, SQLite and PostgreSQL.

Three workers of capacities 1, 1 and 2 settle at 250/250/500 of 1,000 tokens;
changing a capacity at run time, draining a worker and undraining it each
move exactly the lower bound of tokens, with no instant at which two workers
could claim one token (``ExclusivityWatch``).  Conditions are awaited with
deadlines, never slept for.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import attrs
import pytest

from jobsync import Job
from jobsync.core.errors import ConfigError, InvalidArgument
from jobsync.core.planner import lower_bound_moves
from jobsync.runtime.config import Settings
from jobsync.runtime.health import liveness, readiness
from jobsync.runtime.maintenance import DrainRefused, drain_node, undrain_node

from .conftest import FAST, Backends, eventually, start_jobs
from .test_job import ExclusivityWatch

TOTAL = 1000
CONFIG = attrs.evolve(FAST, total_tokens=TOTAL)
NAMES = ["w1", "w2", "w3"]


def counts(jobs: Sequence[Job]) -> list[int]:
    return [len(job.my_tokens) for job in jobs]


def owners(job: Job) -> tuple[str | None, ...]:
    return job._require_backend().read_cluster("site").tokens.owner


def settled(jobs: Sequence[Job], expected: list[int]) -> bool:
    """Each job claims its expected count, and the table agrees (nothing in flight)."""
    if counts(jobs) != expected:
        return False
    table = owners(jobs[0])
    return [table.count(job.name) for job in jobs] == expected


def moved_since(job: Job, generation: int) -> int:
    history = job._require_backend().read_history("site", 50)
    return sum(r.entry.moved for r in history if r.generation > generation)


def generation(job: Job) -> int:
    info = job._require_backend().site_info("site")
    assert info is not None
    return info.generation


@pytest.fixture
def weighted(backends: Backends) -> Iterator[list[Job]]:
    jobs = start_jobs_with(backends, {"w1": 1.0, "w2": 1.0, "w3": 2.0})
    yield jobs
    for job in jobs:
        job.__exit__(None, None, None)


def start_jobs_with(backends: Backends, capacities: dict[str, float]) -> list[Job]:
    jobs = start_jobs(backends, list(capacities), config=CONFIG)
    for job in jobs:  # entered with capacity 1; the row's capacity changes at run time
        job.set_capacity(capacities[job.name])
    return jobs


def test_capacities_one_one_two_settle_at_250_250_500(backends: Backends) -> None:
    made = [
        Job(n, "site", backends(n), coordination_config=CONFIG, handle_sigterm=False, capacity=c)
        for n, c in (("w1", 1.0), ("w2", 1.0), ("w3", 2.0))
    ]
    threads = [threading.Thread(target=job.__enter__) for job in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert eventually(lambda: settled(made, [250, 250, 500])), counts(made)
        _, rows = made[0]._require_backend().read_nodes("site")
        assert {r.name: r.capacity for r in rows} == {"w1": 1.0, "w2": 1.0, "w3": 2.0}
        assert [job.capacity for job in made] == [1.0, 1.0, 2.0]
    finally:
        for job in made:
            job.__exit__(None, None, None)


def test_a_capacity_change_rebalances_with_the_fewest_moves_and_no_overlap(
    weighted: list[Job],
) -> None:
    jobs = weighted
    assert eventually(lambda: settled(jobs, [250, 250, 500])), counts(jobs)
    before, gen = owners(jobs[0]), generation(jobs[0])
    bound = lower_bound_moves(TOTAL, before, NAMES, {"w1": 2.0, "w2": 1.0, "w3": 2.0})
    assert bound == 150
    with ExclusivityWatch(jobs) as watch:
        jobs[0].set_capacity(2.0)
        assert eventually(lambda: settled(jobs, [400, 200, 400])), counts(jobs)
    assert watch.violations == [] and watch.samples > 0
    after = owners(jobs[0])
    assert sum(1 for a, b in zip(before, after, strict=True) if a != b) == bound
    assert moved_since(jobs[0], gen) == bound


def test_drain_takes_a_worker_to_zero_and_undrain_gives_its_share_back(
    weighted: list[Job],
) -> None:
    jobs = weighted
    w2 = jobs[1]
    assert eventually(lambda: settled(jobs, [250, 250, 500])), counts(jobs)
    with ExclusivityWatch(jobs) as watch:
        row = w2.start_maintenance(reason="disk swap")
        assert row.drain_note == "by w2: disk swap" and row.drain_until is None
        # capacities 1 and 2 share the 1,000 tokens: 333 and 667
        assert eventually(lambda: settled(jobs, [333, 0, 667])), counts(jobs)
        assert eventually(lambda: w2.maintenance == "drained")
        assert not any(w2.can_claim_task(t) for t in range(0, TOTAL, 7))
        assert w2.am_i_healthy()
        ready, body = readiness(w2)
        live, alive = liveness(w2)
        assert ready and live and body["maintenance"] == alive["maintenance"] == "drained"
        drained, gen = owners(jobs[0]), generation(jobs[0])
        bound = lower_bound_moves(TOTAL, drained, NAMES, {"w1": 1.0, "w2": 1.0, "w3": 2.0})
        w2.end_maintenance()
        assert eventually(lambda: settled(jobs, [250, 250, 500])), counts(jobs)
    assert watch.violations == [] and watch.samples > 0
    assert w2.maintenance is None
    assert bound == 250 and moved_since(jobs[0], gen) == bound
    history = w2._require_backend().read_history("site", 10)
    assert any("drain w2 (by w2: disk swap)" in r.entry.trigger for r in history)


def test_a_drain_for_a_duration_ends_by_itself(memory_backends: Backends) -> None:
    jobs = start_jobs(memory_backends, NAMES, config=CONFIG)
    try:
        assert eventually(lambda: settled(jobs, [334, 333, 333]) or settled(jobs, [333, 334, 333]))
        drain_node(jobs[0]._require_backend(), "site", "w3", duration=1.0, by="ops")
        assert eventually(lambda: counts(jobs)[2] == 0 and jobs[2].maintenance == "drained")
        assert eventually(lambda: sum(counts(jobs)) == TOTAL and min(counts(jobs)) >= 333)
        assert jobs[2].maintenance is None
    finally:
        for job in jobs:
            job.__exit__(None, None, None)


def test_risky_drains_are_refused_unless_forced(memory_backends: Backends) -> None:
    jobs = start_jobs(memory_backends, ["a", "b"], config=CONFIG)
    try:
        db = jobs[0]._require_backend()
        jobs[0].register_lock("pinned-task", "b", "only b may run it")
        with pytest.raises(DrainRefused, match="1 pinned tokens would have no eligible worker"):
            drain_node(db, "site", "b")
        with pytest.raises(DrainRefused, match="no other undrained worker"):
            _drain_both(db)
        assert all(row.drained_at is None for row in db.read_nodes("site")[1])
        forced = drain_node(db, "site", "b", force=True, reason="forced")
        assert forced.is_drained(db.now())
        with pytest.raises(DrainRefused, match="b already drained"):
            drain_node(db, "site", "a")
        assert undrain_node(db, "site", "b").drained_at is None
        with pytest.raises(InvalidArgument, match="no node named 'ghost'"):
            drain_node(db, "site", "ghost", force=True)
        with pytest.raises(InvalidArgument, match="drain duration"):
            drain_node(db, "site", "a", duration=-1.0, force=True)
    finally:
        for job in jobs:
            job.__exit__(None, None, None)


def _drain_both(db: object) -> None:
    """Drain a with b's drain forced first: a would be the last undrained worker."""
    drain_node(db, "site", "b", force=True)  # type: ignore[arg-type]
    try:
        drain_node(db, "site", "a")  # type: ignore[arg-type]
    finally:
        undrain_node(db, "site", "b")  # type: ignore[arg-type]


def test_capacity_arguments_are_checked_before_anything_opens(memory_backends: Backends) -> None:
    for bad in (0, -1.0, float("nan"), float("inf"), "2", True):
        with pytest.raises(InvalidArgument, match="capacity"):
            Job("w", "site", memory_backends("w"), capacity=bad)  # type: ignore[arg-type]
    assert Settings({"SYNC_CAPACITY": " 2.5 "}).capacity == 2.5
    assert Settings({}).capacity == 1.0
    for raw in ("0", "big", "inf", "-2"):
        with pytest.raises(ConfigError, match=f"SYNC_CAPACITY .*{raw!r}"):
            Settings({"SYNC_CAPACITY": raw}).capacity  # noqa: B018
    job = Job("w", "site", memory_backends("w"), capacity=3)
    assert job.capacity == 3.0
    job.set_capacity(1.5)  # before entering: what it will register with
    assert job.capacity == 1.5
    with pytest.raises(InvalidArgument, match="capacity"):
        job.set_capacity(0)
    assert job.capacity == 1.5
