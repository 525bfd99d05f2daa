"""The memory backend's fault hooks, interleavings through ``before_commit``, and
thread safety.  (The Backend contract itself runs in test_contract_memory.py.)"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator

import pytest

from jobsync.backends.base import ClaimRequest, HeartbeatOutcome, PlanCommit
from jobsync.backends.memory import MemoryBackend, MemoryStore
from jobsync.core.errors import BackendUnavailable, ConflictError, InvalidArgument
from jobsync.testing.clock import ManualClock
from jobsync.testing.scene import DAY, SHORT_LEASE, Node, Scene, run_threads

RENEWED, EXPIRED = HeartbeatOutcome.RENEWED, HeartbeatOutcome.EXPIRED


class Harness:
    controls_clock = True

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.pauses: list[float] = []
        self.store = MemoryStore(clock=self.clock, sleeper=self.pauses.append)

    def connect(self, client: str) -> MemoryBackend:
        return self.store.connect(client)

    def set_time(self, instant: float) -> None:
        self.clock.set(instant)

    def wait_until(self, instant: float) -> None:
        if self.clock() < instant:
            self.clock.set(instant)


@pytest.fixture
def harness() -> Harness:
    return Harness()


@pytest.fixture
def scene(harness: Harness) -> Iterator[Scene]:
    made = Scene(harness)
    yield made
    made.close()


def _pair(scene: Scene, b_lease: float = 60.0) -> tuple[Node, Node]:
    a, b = scene.join("a"), scene.join("b", b_lease)
    scene.round_robin(a, [a, b])
    return a, b


# -- faults ----------------------------------------------------------------------
def test_fail_next_fails_that_many_calls_of_that_client_without_effect(
    harness: Harness, scene: Scene
) -> None:
    flaky, steady = harness.store.connect("flaky"), harness.store.connect("steady")
    harness.store.fail_next("flaky", 2)
    for _ in range(2):
        with pytest.raises(BackendUnavailable, match="flaky"):
            flaky.register(scene.site, "x", 10.0)
    assert steady.read_nodes(scene.site)[1] == ()
    assert flaky.register(scene.site, "x", 10.0).incarnation == 1


def test_faults_apply_before_arguments_are_checked(harness: Harness, scene: Scene) -> None:
    handle = harness.store.connect("flaky")
    harness.store.fail_next("flaky")
    with pytest.raises(BackendUnavailable):
        handle.register(scene.site, "", -1.0)
    with pytest.raises(InvalidArgument):
        handle.register(scene.site, "", -1.0)


def test_cut_off_and_restore_one_client(harness: Harness, scene: Scene) -> None:
    a = scene.join("a")
    cut = harness.store.connect("cut")
    harness.store.cut_off("cut")
    for _ in range(3):
        with pytest.raises(BackendUnavailable, match="cut off"):
            cut.heartbeat(scene.site, "a", a.incarnation)
    with pytest.raises(BackendUnavailable):
        cut.wait_for_change(scene.site, 0.0)
    assert scene.heartbeat(a) is RENEWED  # other clients are unaffected
    harness.store.restore("cut")
    assert cut.heartbeat(scene.site, "a", a.incarnation).outcome is RENEWED


def test_an_outage_cuts_everyone_and_restore_all_keeps_partitions(
    harness: Harness, scene: Scene
) -> None:
    a = scene.join("a")
    one, two = harness.store.connect("one"), harness.store.connect("two")
    harness.store.cut_off("two")
    harness.store.cut_off_all()
    for handle in (one, two, scene.db):
        with pytest.raises(BackendUnavailable, match="outage"):
            handle.heartbeat(scene.site, "a", a.incarnation)
    harness.store.restore_all()
    assert one.heartbeat(scene.site, "a", a.incarnation).outcome is RENEWED
    with pytest.raises(BackendUnavailable, match="cut off"):
        two.heartbeat(scene.site, "a", a.incarnation)


def test_delay_sleeps_through_the_injected_sleeper_before_each_call(
    harness: Harness, scene: Scene
) -> None:
    slow = harness.store.connect("slow")
    harness.store.delay("slow", 0.25)
    slow.now()
    slow.site_info(scene.site)
    scene.db.now()  # another client: no delay
    assert harness.pauses == [0.25, 0.25]
    harness.store.delay("slow", 0)
    slow.now()
    assert harness.pauses == [0.25, 0.25]


def test_lost_notifications_are_missed_but_later_ones_arrive(
    harness: Harness, scene: Scene
) -> None:
    waiter = harness.store.connect("waiter")
    assert waiter.wait_for_change(scene.site, 0.0) is False
    harness.store.lose_notifications("waiter", 1)
    scene.join("a")
    assert waiter.wait_for_change(scene.site, 0.0) is False  # lost
    scene.join("b")
    assert waiter.wait_for_change(scene.site, 0.0) is True
    harness.store.lose_notifications("waiter", 1)
    scene.join("c")
    scene.join("d")  # two changes, one lost: still woken
    assert waiter.wait_for_change(scene.site, 0.0) is True


def test_a_lost_notification_does_not_wake_a_waiter(harness: Harness, scene: Scene) -> None:
    waiter = harness.store.connect("waiter")
    waiter.wait_for_change(scene.site, 0.0)
    harness.store.lose_notifications("waiter", 1)
    timer = threading.Timer(0.05, lambda: scene.join("a"))
    timer.start()
    try:
        assert waiter.wait_for_change(scene.site, 0.3) is False
    finally:
        timer.join()


def test_a_closed_handle_raises_but_still_reports_statistics(
    harness: Harness, scene: Scene
) -> None:
    handle = harness.store.connect("h")
    handle.now()
    handle.site_info("nowhere")
    handle.close()
    with pytest.raises(BackendUnavailable, match="closed"):
        handle.now()
    handle.close()
    # now() is local, like a LISTEN wait: no round trip
    assert handle.statistics() == {"round_trips": 1, "now": 1, "site_info": 1}


def test_statistics_count_failed_calls_too(harness: Harness, scene: Scene) -> None:
    handle = harness.store.connect("h")
    harness.store.fail_next("h")
    with pytest.raises(BackendUnavailable):
        handle.site_info("nowhere")
    handle.site_info("nowhere")
    assert handle.statistics() == {"round_trips": 2, "site_info": 2}


def test_a_verb_on_an_unknown_site_names_it(scene: Scene) -> None:
    with pytest.raises(InvalidArgument, match="'nowhere'"):
        scene.db.register("nowhere", "a", 10.0)


def test_completion_cannot_join_a_callers_connection(scene: Scene) -> None:
    a, _ = _pair(scene)
    key = scene.key_on(0)
    scene.claim(a, key)
    with pytest.raises(InvalidArgument, match="connection"):
        scene.db.complete_in(object(), scene.site, DAY, a.incarnation, [key])
    assert scene.audit() == {key: "claimed"}


def test_connect_needs_a_client_name(harness: Harness) -> None:
    with pytest.raises(InvalidArgument):
        harness.store.connect("")


# -- interleavings between a plan's read and its commit ------------------------------
def _hook(harness: Harness, action: object) -> list[tuple[str, PlanCommit]]:
    """Run ``action`` on another thread inside before_commit (proving the lock is free)."""
    calls: list[tuple[str, PlanCommit]] = []

    def hook(client: str, commit: PlanCommit) -> None:
        calls.append((client, commit))
        worker = threading.Thread(target=action)  # type: ignore[arg-type]
        worker.start()
        worker.join(timeout=5)
        assert not worker.is_alive(), "before_commit ran inside the store's lock"

    harness.store.before_commit = hook
    return calls


def test_a_heartbeat_landing_in_before_commit_makes_the_reassignment_conflict(
    harness: Harness, scene: Scene
) -> None:
    a, b = _pair(scene, 10.0)
    harness.set_time(b.registered_at + 9.0)
    view = scene.view()  # the leader plans for b's lease end at +10 ...
    outcomes: list[HeartbeatOutcome] = []

    def renew_then_expire() -> None:
        outcomes.append(scene.heartbeat(b))  # ... b renews at +9 ...
        harness.set_time(b.registered_at + 10.0)  # ... and the commit runs at +10

    leader = harness.store.connect("leader")
    calls = _hook(harness, renew_then_expire)
    with pytest.raises(ConflictError):
        scene.commit(a, view=view, assigns=[scene.assign(view, 1, a)], db=leader)
    assert outcomes == [RENEWED] and [c for c, _ in calls] == ["leader"]
    assert scene.table().owner[1] == "b"
    harness.store.before_commit = None
    scene.commit(a, view=scene.view(), assigns=[])  # the hook is gone; b is still live
    assert scene.heartbeat(b) is RENEWED


def test_a_late_heartbeat_in_before_commit_finds_the_lease_expired(
    harness: Harness, scene: Scene
) -> None:
    a, b = _pair(scene, SHORT_LEASE)
    scene.expire(b)
    view = scene.view()
    outcomes: list[HeartbeatOutcome] = []
    _hook(harness, lambda: outcomes.append(scene.heartbeat(b)))
    scene.commit(a, view=view, assigns=[scene.assign(view, 1, a)])
    assert outcomes == [EXPIRED] and scene.table().owner[1] == "a"
    assert scene.heartbeat(b) is EXPIRED


def test_an_acknowledgement_in_before_commit_makes_the_plan_conflict(
    harness: Harness, scene: Scene
) -> None:
    a, b = _pair(scene)
    c = scene.join("c")
    view = scene.view()
    scene.commit(a, view=view, revokes=[scene.revoke(view, 1, c)])
    view = scene.view()
    epoch = view.tokens.epoch[1]
    _hook(harness, lambda: scene.db.ack_releases(scene.site, "b", b.incarnation, [(1, epoch)]))
    with pytest.raises(ConflictError):
        scene.commit(a, view=view, revokes=[scene.revoke(view, 1, a), scene.revoke(view, 3, c)])
    table = scene.table()
    assert table.owner[1] == "c" and not table.is_pending(3)


def test_a_registration_in_before_commit_leaves_the_plan_valid_but_stale(
    harness: Harness, scene: Scene
) -> None:
    a, _ = _pair(scene)
    view = scene.view()
    _hook(harness, lambda: scene.join("d"))
    scene.commit(a, view=view, revokes=[scene.revoke(view, 1, a)])
    info = scene.info()
    assert info.plan_basis == view.site.change_counter < info.change_counter - 1


# -- thread safety -------------------------------------------------------------------
def test_concurrent_claims_from_many_threads_take_each_task_exactly_once(
    harness: Harness, scene: Scene
) -> None:
    a = scene.join("a")
    scene.round_robin(a, [a])
    epochs = scene.table().epoch
    keys = [f"task-{i}" for i in range(300)]
    requests = [
        ClaimRequest(task_key=k, token=scene.token_of(k), epoch=epochs[scene.token_of(k)])
        for k in keys
    ]
    handles = [harness.store.connect(f"t{i}") for i in range(16)]

    def work(i: int) -> list[str]:
        # claim, then complete: a claim is idempotent for its incarnation, a completion
        # happens once, so each task is "processed" by exactly one thread.
        got: list[str] = []
        order = requests[i:] + requests[:i]
        for request in order:
            mine = handles[i].claim(scene.site, DAY, "a", a.incarnation, [request])
            got.extend(handles[i].complete(scene.site, DAY, a.incarnation, sorted(mine)))
        return got

    claimed = [key for got in run_threads(len(handles), work) for key in got]
    assert sorted(claimed) == sorted(keys)
    assert len(scene.db.read_audit(scene.site, DAY)) == len(keys)


def test_concurrent_registrations_get_distinct_incarnations(harness: Harness, scene: Scene) -> None:
    handles = [harness.store.connect(f"r{i}") for i in range(12)]
    incarnations = run_threads(
        12, lambda i: handles[i].register(scene.site, f"n{i % 4}", 10.0).incarnation
    )
    assert len(set(incarnations)) == 12
    rows = scene.db.read_nodes(scene.site)[1]
    assert len(rows) == 4 and all(r.incarnation in incarnations for r in rows)


def test_the_store_serves_many_days_of_claims_independently(harness: Harness, scene: Scene) -> None:
    a = scene.join("a")
    scene.round_robin(a, [a])
    key = scene.key_on(0)
    days = [DAY + datetime.timedelta(days=n) for n in range(5)]
    handles = [harness.store.connect(f"d{i}") for i in range(5)]
    results = run_threads(5, lambda i: scene.claim(a, key, date=days[i], db=handles[i]))
    assert results == [{key}] * 5
