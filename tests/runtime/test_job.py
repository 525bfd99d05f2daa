"""The Job API on real backends (memory, SQLite files, PostgreSQL): README.md's behaviours."""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path

import pytest

from jobsync import CoordinationConfig, Job, NodeNameConflict, Task, token_for
from jobsync.backends.memory import MemoryStore
from jobsync.core.lifecycle import NodeState
from jobsync.errors import ConfigMismatch, InvalidArgument, InvalidPattern

from .conftest import FAST, Backends, balanced, covered, crash, eventually, start_jobs


class ExclusivityWatch:
    """A concurrent observer: no token claimable by two jobs at one instant.

    It reads every job's snapshot twice; a token held by two jobs whose
    snapshots did not change between the reads (and whose leases held) was
    held by both over a common instant.
    """

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs
        self.violations: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ExclusivityWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            first = [(job, job._holder.snapshot) for job in self.jobs if not job._halted]
            second = [job._holder.snapshot for job, _ in first]
            owner: dict[int, str] = {}
            for (job, snap), again in zip(first, second, strict=True):
                if snap is not again or job._halted:
                    continue
                if job._now() >= snap.lease_deadline:
                    continue
                for token in snap.tokens:
                    other = owner.setdefault(token, job.name)
                    if other != job.name:
                        self.violations.append(f"token {token}: {other} and {job.name}")
            self.samples += 1
            # Let the coordination threads run: a loop that never gives the GIL
            # back starves the very heartbeats whose hand-offs it watches.
            self._stop.wait(0.0005)


def test_jobs_starting_together_are_ready_and_balanced(backends: Backends) -> None:
    jobs = start_jobs(backends, ["a", "b", "c"])
    try:
        assert all(job.am_i_healthy() for job in jobs)
        assert balanced(jobs)
        assert sum(job.am_i_leader() for job in jobs) == 1
        assert {len(job.get_active_nodes()) for job in jobs} == {3}
    finally:
        for job in jobs:
            job.__exit__(None, None, None)


def test_zero_token_node_is_ready(memory_backends: Backends) -> None:
    tiny = CoordinationConfig(
        total_tokens=2,
        heartbeat_interval_sec=0.2,
        heartbeat_timeout_sec=2.0,
        safety_margin_sec=0.5,
        settle_window_sec=0.2,
    )
    jobs = start_jobs(memory_backends, ["a", "b", "c"], config=tiny)
    try:
        assert sorted(len(job.my_tokens) for job in jobs) == [0, 1, 1]
        assert all(job.am_i_healthy() for job in jobs)
    finally:
        for job in jobs:
            job.__exit__(None, None, None)


def test_config_mismatch_fails_at_enter_and_leaves_nothing(backends: Backends) -> None:
    (first,) = start_jobs(backends, ["a"])
    other = CoordinationConfig(
        total_tokens=FAST.total_tokens + 1,
        heartbeat_interval_sec=0.2,
        heartbeat_timeout_sec=2.0,
        safety_margin_sec=0.5,
    )
    threads_before = threading.active_count()
    with pytest.raises(ConfigMismatch, match=str(FAST.total_tokens + 1)):
        Job("b", "site", backends("b"), coordination_config=other, handle_sigterm=False).__enter__()
    assert threading.active_count() == threads_before
    assert first.get_active_nodes() == ["a"]
    first.__exit__(None, None, None)


def test_enter_timeout_names_what_it_waited_for_and_leaves_nothing() -> None:
    store = MemoryStore()
    slow = CoordinationConfig(
        total_tokens=8, heartbeat_interval_sec=2.0, heartbeat_timeout_sec=6.0, settle_window_sec=5.0
    )
    threads_before = threading.active_count()
    job = Job("a", "site", store.connect("a"), coordination_config=slow, wait_on_enter=0.3)
    with pytest.raises(TimeoutError, match="leader's first plan"):
        job.__enter__()
    assert threading.active_count() == threads_before
    _, nodes = store.connect("probe").read_nodes("site")
    assert [n.name for n in nodes] == []


def test_graceful_exit_writes_claims_then_hands_off(backends: Backends) -> None:
    jobs = start_jobs(backends, ["a", "b", "c"])
    leaver = next(job for job in jobs if job.am_i_leader())  # the leader leaves
    rest = [job for job in jobs if job is not leaver]
    claimed = [t for t in map(Task, range(200)) if leaver.can_claim_task(t) and leaver.add_task(t)]
    assert claimed
    with ExclusivityWatch(jobs) as watch:
        started = time.monotonic()
        leaver.__exit__(None, None, None)
        assert eventually(lambda: covered(rest), 5)
        handoff = time.monotonic() - started
    assert not watch.violations
    assert handoff < 1.0 + FAST.heartbeat_interval_sec
    audit = {row["task_id"]: row for row in rest[0].get_audit()}
    assert all(audit[t.key]["status"] == "done" for t in claimed)
    assert eventually(lambda: balanced(rest), 5)
    assert sorted(rest[0].get_active_nodes()) == sorted(j.name for j in rest)
    for job in rest:
        job.__exit__(None, None, None)


def test_exit_by_exception_releases_claims(memory_backends: Backends) -> None:
    jobs = start_jobs(memory_backends, ["a", "b"])
    a, b = jobs
    mine = [t for t in map(Task, range(100)) if a.can_claim_task(t) and a.add_task(t)]
    assert mine
    a.__exit__(RuntimeError, RuntimeError("boom"), None)
    assert eventually(lambda: covered([b]), 5)
    # released, not done: the new owner may claim and redo them
    assert all(b.can_claim_task(t) and b.add_task(t) for t in mine)
    b.__exit__(None, None, None)


def test_crash_heals_within_timeout_plus_a_second(backends: Backends) -> None:
    jobs = start_jobs(backends, ["a", "b", "c"])
    victim = jobs[1]
    rest = [jobs[0], jobs[2]]
    with ExclusivityWatch(rest) as watch:
        crash(victim)
        started = time.monotonic()
        assert eventually(lambda: covered(rest), FAST.heartbeat_timeout_sec + 10)
        healed = time.monotonic() - started
    assert not watch.violations
    # generous on a loaded 2-core machine; the virtual-time tests pin the exact bound
    assert healed <= FAST.heartbeat_timeout_sec + 2.0
    assert eventually(lambda: balanced(rest), 5)
    for job in rest:
        job.__exit__(None, None, None)


def test_add_task_is_the_durable_claim(backends: Backends) -> None:
    jobs = start_jobs(backends, ["a", "b"])
    a, b = jobs
    task = next(t for t in map(Task, range(1000)) if a.can_claim_task(t))
    assert not b.can_claim_task(task)
    assert not b.add_task(task)
    assert a.add_task(task)
    assert not a.add_task(task)  # already claimed
    assert a.complete(task)
    assert not a.add_task(task)  # done: never again today
    assert not a.complete(task)  # completed at most once
    batch = [t for t in map(Task, range(1000, 1100)) if a.can_claim_task(t)]
    got = a.add_tasks(batch + batch)
    assert got == set(batch)
    assert a.write_audit() == len(batch)
    for job in jobs:
        job.__exit__(None, None, None)


def test_completion_is_fenced_by_the_claim_across_a_handoff(memory_backends: Backends) -> None:
    jobs = start_jobs(memory_backends, ["a", "b"])
    a, b = jobs
    task = next(t for t in map(Task, range(1000)) if a.can_claim_task(t))
    assert a.add_task(task)
    b.register_lock(task.id, "b", reason="move it while a works on it")
    assert eventually(lambda: b.can_claim_task(task), 5)  # the token moved to b
    assert not a.can_claim_task(task)
    assert not b.add_task(task)  # a still holds the claim
    assert a.complete(task)  # a may still finish what it claimed
    assert not b.add_task(task)  # and nobody redoes it
    a.__exit__(None, None, None)
    b.__exit__(None, None, None)


def test_same_name_second_process_takes_over(memory_backends: Backends) -> None:
    (first,) = start_jobs(memory_backends, ["dup"])
    held = first.my_tokens
    second = Job(
        "dup",
        "site",
        memory_backends("dup2"),
        coordination_config=FAST,
        handle_sigterm=False,
        wait_on_enter=30,
    )
    with ExclusivityWatch([first, second]) as watch:
        second.__enter__()
        assert eventually(lambda: first._node is not None and first._node.error is not None, 5)
        with pytest.raises(NodeNameConflict):
            first.add_task(Task(1))
        assert not first.my_tokens or not first.am_i_healthy()
        assert eventually(lambda: second.my_tokens == held, 10)
    assert not watch.violations
    with pytest.raises(NodeNameConflict):
        first.__exit__(None, None, None)
    second.__exit__(None, None, None)


def test_restart_under_the_same_name_keeps_its_tokens(memory_backends: Backends) -> None:
    jobs = start_jobs(memory_backends, ["a", "b", "c"])
    before = jobs[1].my_tokens
    crash(jobs[1])
    (again,) = start_jobs(memory_backends, ["b"])
    assert eventually(lambda: again.my_tokens == before, 10)
    assert len(jobs[0].my_tokens) + len(jobs[2].my_tokens) == FAST.total_tokens - len(before)
    for job in (jobs[0], jobs[2], again):
        job.__exit__(None, None, None)


def test_transient_errors_never_raise_from_the_hot_path(memory_backends: Backends) -> None:
    store = MemoryStore()
    a = Job("a", "site", store.connect("a"), coordination_config=FAST, handle_sigterm=False)
    with a:
        task = next(t for t in map(Task, range(1000)) if a.can_claim_task(t))
        other = next(t for t in map(Task, range(1000, 2000)) if a.can_claim_task(t))
        assert a.add_task(task)
        store.cut_off("a")  # a blip shorter than the lease
        assert a.can_claim_task(other)  # still within its lease
        assert a.add_task(other) is False  # never raises
        assert a.complete(task) is False  # queued
        assert a.statistics()["completions_queued"] == 1
        store.restore("a")
        assert eventually(lambda: a.statistics()["completions"] == 1, 5)
        assert a.am_i_healthy()
    rows = {r.task_key: r.status for r in store.connect("probe").read_audit("site", a.date)}
    assert rows == {task.key: "done"}


def test_callbacks_that_raise_or_hang_never_stop_coordination() -> None:
    store = MemoryStore()
    calls: list[int] = []
    release = threading.Event()

    def bad(event: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("callback bug")
        release.wait(30)  # hangs

    with Job(
        "a",
        "site",
        store.connect("a"),
        coordination_config=FAST,
        on_rebalance=bad,
        handle_sigterm=False,
    ) as a:
        assert eventually(lambda: len(calls) >= 1, 5)
        b = Job("b", "site", store.connect("b"), coordination_config=FAST, handle_sigterm=False)
        with b:
            assert eventually(lambda: balanced([a, b]), 5)
            beats = a.statistics()["heartbeats"]
            assert eventually(lambda: a.statistics()["heartbeats"] > beats + 2, 5)
        assert eventually(lambda: covered([a]), 5)
        assert a.statistics()["callback_errors"] == 1
        release.set()


def test_zero_argument_callback_and_event_contents(memory_backends: Backends) -> None:
    seen: list[object] = []
    ticks: list[int] = []
    store = MemoryStore()
    with (
        Job(
            "a",
            "site",
            store.connect("a"),
            coordination_config=FAST,
            handle_sigterm=False,
            on_rebalance=seen.append,
        ) as a,
        Job(
            "z",
            "site",
            store.connect("z"),
            coordination_config=FAST,
            handle_sigterm=False,
            on_rebalance=lambda: ticks.append(1),
        ),
    ):
        assert eventually(lambda: len(ticks) >= 1 and len(seen) >= 1, 5)
        first = seen[0]
        assert first.first and first.added  # type: ignore[attr-defined]
        assert eventually(lambda: seen[-1].tokens == a.my_tokens, 5)  # type: ignore[attr-defined]


def test_claim_date_is_the_backends_utc_date() -> None:
    store = MemoryStore(clock=lambda: 86_400.0 * 20_000 + 30.0)  # 2024-10-04 00:00:30 UTC
    job = Job(
        "a",
        "site",
        store.connect("a"),
        coordination_config=FAST,
        handle_sigterm=False,
        observer=True,
    )
    with job:
        assert job.date == datetime.date(2024, 10, 4)
    given = datetime.date(2020, 1, 2)
    with Job(
        "b",
        "site",
        store.connect("b"),
        coordination_config=FAST,
        handle_sigterm=False,
        observer=True,
        date=given,
    ) as b:
        assert b.date == given


def test_lock_provider_replaces_this_nodes_locks_in_one_transaction() -> None:
    store = MemoryStore()
    admin = store.connect("admin")
    with Job("gpu-1", "site", store.connect("g"), coordination_config=FAST, handle_sigterm=False):
        pass
    provided = [("t1", "gpu-%", "needs a GPU"), ("t2", ["tpu-%", "gpu-%"], None)]

    def provider(job: Job) -> list[tuple[object, object, object]]:
        job.register_lock("t3", "gpu-1", reason="direct")
        return provided  # type: ignore[return-value]

    seen_counts: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen_counts.append(len(admin.list_locks("site")))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(3):
            with Job(
                "gpu-1",
                "site",
                store.connect("g1"),
                coordination_config=FAST,
                handle_sigterm=False,
                lock_provider=provider,
                clear_existing_locks=True,
            ) as job:
                locks = {row["task_id"]: row for row in job.list_locks()}
    finally:
        stop.set()
        watcher.join()
    assert set(locks) == {"t1", "t2", "t3"}
    assert locks["t2"]["node_patterns"] == ["tpu-%", "gpu-%"]
    assert locks["t2"]["node_pattern"] == "tpu-%"
    assert all(count in (0, 3) for count in seen_counts)  # never seen half-replaced


def test_pins_route_tasks_to_matching_nodes(memory_backends: Backends) -> None:
    jobs = start_jobs(memory_backends, ["gpu-1", "cpu-1", "cpu-2"])
    gpu, cpu1, cpu2 = jobs
    cpu1.register_task_locks_bulk(
        [("render-7", "gpu-%", "gpu"), ("etl-1", ["tpu-%", "cpu-2"], None)]
    )
    assert eventually(lambda: gpu.can_claim_task("render-7") and cpu2.can_claim_task("etl-1"), 5)
    crash(gpu)
    assert eventually(lambda: covered([cpu1, cpu2], FAST.total_tokens - 1), 10)
    assert not cpu1.can_claim_task("render-7") and not cpu2.can_claim_task("render-7")
    assert cpu1.clear_locks_by_creator("cpu-1") == 2
    assert eventually(lambda: covered([cpu1, cpu2]), 5)
    for job in (cpu1, cpu2):
        job.__exit__(None, None, None)


def test_bad_input_is_refused_with_the_value_named() -> None:
    store = MemoryStore()
    with pytest.raises(InvalidArgument, match="''"):
        Job("", "site", store.connect("x"))
    with pytest.raises(InvalidArgument, match="site"):
        Job("a", "", store.connect("x"))
    with pytest.raises(InvalidArgument, match="wait_on_enter"):
        Job("a", "site", store.connect("x"), wait_on_enter=0)
    with pytest.raises(InvalidArgument, match="on_rebalance"):
        Job("a", "site", store.connect("x"), on_rebalance=42)  # type: ignore[arg-type]
    with Job(
        "a", "site", store.connect("a"), coordination_config=FAST, handle_sigterm=False
    ) as job:
        with pytest.raises(InvalidPattern, match="unescaped backslash"):
            job.register_lock("t", "gpu\\")
        with pytest.raises(InvalidPattern):
            job.register_task_locks_bulk([("t1", "ok-%", None), ("t2", 7, None)])
        assert job.list_locks() == []  # nothing half-written


def test_coordination_disabled_runs_standalone() -> None:
    off = CoordinationConfig(total_tokens=16, enabled=False)
    with Job("solo", "site", "memory://unused", coordination_config=off) as job:
        assert job.can_claim_task(Task(5)) and job.add_task(Task(5))
        assert not job.add_task(5)
        assert len(job.my_tokens) == 16


def test_task_identity_is_the_canonical_string() -> None:
    assert Task(1) == Task("1") and hash(Task(1)) == hash(Task("1"))
    assert Task(1) != Task(2) and Task(1) < Task(2)
    assert {Task(1), Task("1")} == {Task(1)}
    assert repr(Task(3, "x")) == "Task(3, 'x')"


def test_drained_job_reports_nothing_claimable(memory_backends: Backends) -> None:
    jobs = start_jobs(memory_backends, ["a", "b"])
    a, b = jobs
    assert a.drain()
    assert a.draining and a.my_tokens == frozenset()
    assert not any(a.can_claim_task(t) for t in map(Task, range(200)))
    assert a._node is not None and a._node.state is NodeState.STOPPED
    assert eventually(lambda: covered([b]), 5)
    a.__exit__(None, None, None)
    b.__exit__(None, None, None)


def test_observer_hashes_with_the_sites_constants_and_may_pin_before_any_worker() -> None:
    store = MemoryStore()
    legacy = CoordinationConfig(
        total_tokens=100,
        hash_function="md5",
        heartbeat_interval_sec=0.2,
        heartbeat_timeout_sec=2.0,
        safety_margin_sec=0.5,
    )
    with Job(
        "admin", "fresh", store.connect("admin"), observer=True, coordination_config=legacy
    ) as admin:
        admin.register_lock("x", "gpu-%")  # the site does not exist yet: created
    with Job("w", "fresh", store.connect("w"), coordination_config=legacy, handle_sigterm=False):
        pass
    # A second observer with default settings still computes the site's token.
    with Job(
        "admin2", "fresh", store.connect("admin2"), observer=True, coordination_config=FAST
    ) as other:
        assert other.task_to_token("x") == token_for("x", 100, "md5")
        (lock,) = other.list_locks()
        assert lock["token_id"] == token_for("x", 100, "md5")


def test_a_job_not_entered_or_observing_answers_false_and_is_entered_once() -> None:
    store = MemoryStore()
    job = Job("a", "site", store.connect("a"), coordination_config=FAST, handle_sigterm=False)
    assert job.can_claim_task("x") is False and job.my_tokens == frozenset()
    with job:
        pass
    with pytest.raises(InvalidArgument, match="entered once"):
        job.__enter__()
    with Job("o", "site", store.connect("o"), observer=True, coordination_config=FAST) as obs:
        assert obs.can_claim_task("x") is False


def test_a_rolled_back_transactional_completion_is_released_at_exit(tmp_path: Path) -> None:
    import sqlite3

    from jobsync.backends.sqlite import SQLiteBackend

    db = tmp_path / "app.db"
    with Job(
        "a", "site", SQLiteBackend(db, client="a"), coordination_config=FAST, handle_sigterm=False
    ) as a:
        task = next(t for t in map(Task, range(1000)) if a.can_claim_task(t))
        assert a.add_task(task)
        mine = sqlite3.connect(db, isolation_level=None)
        mine.execute("BEGIN IMMEDIATE")
        assert a.complete(task, connection=mine)
        mine.execute("ROLLBACK")  # the side effect failed after all
        mine.close()
    with Job(
        "b", "site", SQLiteBackend(db, client="b"), coordination_config=FAST, handle_sigterm=False
    ) as b:
        assert b.add_task(task)  # released, so someone redoes it


@pytest.mark.postgres
def test_postgres_refuses_an_autocommit_connection_for_completion(
    pg_dsn: str, pg_schema: str
) -> None:
    import psycopg

    from jobsync.backends.postgres import PostgresBackend

    with Job(
        "a",
        "site",
        PostgresBackend(pg_dsn, client="a", schema=pg_schema),
        coordination_config=FAST,
        handle_sigterm=False,
    ) as a:
        task = next(t for t in map(Task, range(1000)) if a.can_claim_task(t))
        assert a.add_task(task)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            with pytest.raises(InvalidArgument, match="autocommit"):
                a.complete(task, connection=conn)
            with conn.transaction():
                assert a.complete(task, connection=conn)


def test_a_claim_whose_answer_was_lost_is_not_stranded() -> None:
    # The claim committed but the reply never came (a reset connection): add_task
    # said False; the retry finds its own open claim instead of a stranded task.
    store = MemoryStore()
    with Job("a", "site", store.connect("a"), coordination_config=FAST, handle_sigterm=False) as a:
        task = next(t for t in map(Task, range(1000)) if a.can_claim_task(t))
        handle = store.connect("a-lost-reply")
        snap = a._holder.snapshot
        from jobsync.backends.base import ClaimRequest

        token = a.task_to_token(task)
        request = ClaimRequest(task_key=task.key, token=token, epoch=snap.epochs[token])
        assert handle.claim("site", a.date, "a", snap.incarnation, [request]) == {task.key}
        assert a.add_task(task)  # the retry: yours
        assert not a.add_task(task)  # and only once per Job
        assert a.complete(task)
