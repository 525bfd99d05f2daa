"""Errors the node survives and errors that end it, lost registration replies, and
how often the leader reaps (virtual time on a memory store, ``Node.tick`` driven
directly; the Driver's own pacing is tested with real time and a tick count)."""

from __future__ import annotations

import datetime
import math
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from jobsync.backends.base import ClaimRequest, LockSpec
from jobsync.backends.capabilities import TransactionalCompletion
from jobsync.backends.memory import MemoryBackend, MemoryStore
from jobsync.core.defences import Defences
from jobsync.core.errors import (
    BackendError,
    BackendUnavailable,
    ConflictError,
    JobSyncError,
    LockTimeout,
    NodeNameConflict,
    NotLeader,
    SchemaError,
)
from jobsync.core.lifecycle import NodeState
from jobsync.runtime.clock import SystemClock
from jobsync.runtime.config import CoordinationConfig
from jobsync.runtime.loop import Driver
from jobsync.runtime.node import Node, Signal

CFG = CoordinationConfig(total_tokens=60, heartbeat_interval_sec=1.0, heartbeat_timeout_sec=3.5)
SITE = "site"


class VirtualClock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


class LostReplies(MemoryStore):
    """A store whose next ``register`` of an armed client commits, then loses its reply."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.lose: set[str] = set()

    def _committed(self, client: str, verb: str) -> None:
        if verb == "register" and client in self.lose:
            self.lose.discard(client)
            raise BackendUnavailable(f"connection reset after {verb} of {client!r} committed")


class Faulty:
    """A handle whose armed verbs raise once, before reaching the store."""

    def __init__(self, inner: MemoryBackend) -> None:
        self.inner = inner
        self.armed: dict[str, JobSyncError] = {}

    def __getattr__(self, verb: str) -> Any:
        real = getattr(self.inner, verb)
        if verb not in self.armed:
            return real

        def fail(*args: object, **kwargs: object) -> object:
            raise self.armed.pop(verb)

        return fail


def drive(
    nodes: list[Node],
    clock: VirtualClock,
    seconds: float,
    until: Callable[[], bool] | None = None,
    step: float = 0.01,
) -> bool:
    """Tick every node every ``step`` virtual seconds (earlier than asked is allowed)."""
    end = clock.t + seconds
    while clock.t < end:
        for node in nodes:
            node.tick(clock.t)
        if until is not None and until():
            return True
        clock.t += step
    return until() if until is not None else True


def make(store: MemoryStore, name: str, **kwargs: Any) -> Node:
    return Node(store.connect(name), SITE, name, CFG, rng=random.Random(7), **kwargs)


def ghost(store: MemoryStore, clock: VirtualClock) -> None:
    """A node that registered and died: its dead row makes the next leader reap."""
    handle = store.connect("ghost")
    handle.ensure_site(SITE, CFG.total_tokens, CFG.hash_function)
    handle.register(SITE, "ghost", CFG.heartbeat_timeout_sec, process="ghost")
    clock.t += CFG.heartbeat_timeout_sec


# -- defect 2: errors that are not final never end a node ---------------------------------


@pytest.mark.parametrize(
    "error",
    [
        NotLeader("the leader's lease ended between its read and this write"),
        ConflictError("a compare-and-set lost"),
        BackendError("a server error that is not a lost connection"),
        LockTimeout("a row stayed locked"),
    ],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("verb", ["reap_claims", "read_cluster", "read_owned", "evict_overdue"])
def test_an_error_that_is_not_final_is_retried_and_the_node_carries_on(
    error: JobSyncError, verb: str
) -> None:
    clock = VirtualClock()
    store = MemoryStore(clock)
    handle = Faulty(store.connect("a"))
    node = Node(handle, SITE, "a", CFG, rng=random.Random(1))  # type: ignore[arg-type]
    peer = make(store, "b")
    assert drive([node, peer], clock, 10, lambda: node.ready and peer.ready)
    if verb == "evict_overdue":
        # the leader calls it only for a revoke past its deadline: b ignores its revokes
        store.cut_off("b")
    handle.armed[verb] = error
    late, doomed = make(store, "c"), make(store, "d")
    doomed.tick(clock.t)  # d registers and dies: a death for the leader to reap
    assert drive([node, late], clock, 30, lambda: verb not in handle.armed)
    assert node.state not in (NodeState.STOPPED, NodeState.SUPERSEDED) and node.error is None
    assert node.stats["retried_errors"] == (0 if isinstance(error, BackendUnavailable) else 1)
    store.restore("b")
    assert drive([node, peer, late], clock, 30, lambda: node.ready and late.ready)
    assert node.is_leader


def test_without_the_defence_a_leader_error_ends_the_node() -> None:
    clock = VirtualClock()
    store = MemoryStore(clock)
    handle = Faulty(store.connect("a"))
    off = Defences.without("retry_leader_errors")
    node = Node(handle, SITE, "a", CFG, rng=random.Random(1), defences=off)  # type: ignore[arg-type]
    ghost(store, clock)
    handle.armed["reap_claims"] = NotLeader("lease ended mid-pass")
    with pytest.raises(NotLeader):
        drive([node], clock, 10, lambda: node.ready)


@pytest.mark.parametrize("verb", ["read_nodes", "reap_claims"])
def test_a_final_error_from_the_store_still_ends_the_node(verb: str) -> None:
    clock = VirtualClock()
    store = MemoryStore(clock)
    handle = Faulty(store.connect("a"))
    node = Node(handle, SITE, "a", CFG, rng=random.Random(1))  # type: ignore[arg-type]
    ghost(store, clock)
    handle.armed[verb] = SchemaError("the schema is newer than this library")
    with pytest.raises(SchemaError):
        drive([node], clock, 10, lambda: node.ready)


# -- defect 3: a lost registration reply ----------------------------------------------------


def test_a_lost_reregistration_reply_is_retried_as_a_registration() -> None:
    clock = VirtualClock()
    store = LostReplies(clock)
    a, b = make(store, "a"), make(store, "b")
    assert drive([a, b], clock, 10, lambda: a.ready and b.ready)
    first = a.incarnation
    clock.t += CFG.heartbeat_timeout_sec + 1  # a was paused past its lease
    store.lose.add("a")
    assert drive([a, b], clock, 15, lambda: a.ready and b.ready and a.incarnation != first)
    assert a.error is None and a.state is NodeState.ACTIVE
    assert a.stats["reregistrations"] == 1
    _, rows = store.connect("probe").read_nodes(SITE)
    assert [(r.name, r.incarnation) for r in rows if r.name == "a"] == [("a", a.incarnation)]


def test_without_the_defence_a_lost_reregistration_reply_ends_the_node() -> None:
    clock = VirtualClock()
    store = LostReplies(clock)
    off = Defences.without("reregister_after_lost_reply")
    a, b = make(store, "a", defences=off), make(store, "b")
    assert drive([a, b], clock, 10, lambda: a.ready and b.ready)
    clock.t += CFG.heartbeat_timeout_sec + 1
    store.lose.add("a")
    assert drive([a, b], clock, 15, lambda: a.state is NodeState.SUPERSEDED)
    assert isinstance(a.error, NodeNameConflict)


def test_a_lost_first_registration_reply_takes_its_own_row_over() -> None:
    clock = VirtualClock()
    store = LostReplies(clock)
    store.lose.add("a")
    a = make(store, "a")
    assert drive([a], clock, 10, lambda: a.ready)
    assert a.stats["transient_errors"] == 1 and a.error is None
    _, rows = store.connect("probe").read_nodes(SITE)
    assert [(r.name, r.incarnation) for r in rows] == [("a", a.incarnation)]


def test_a_newer_process_found_by_register_ends_the_node_as_superseded() -> None:
    clock = VirtualClock()
    store = LostReplies(clock)
    a, b = make(store, "a"), make(store, "b")
    assert drive([a, b], clock, 10, lambda: a.ready and b.ready)
    clock.t += CFG.heartbeat_timeout_sec + 1
    store.lose.add("a")
    a.tick(clock.t)  # heartbeat: expired; registers again, and the reply is lost
    assert a.state is NodeState.FENCED
    newer = make(store, "a")  # meanwhile a new process took the name
    newer.tick(clock.t)
    assert newer.registration is not None
    clock.t += 1
    a.tick(clock.t)  # registers again, knowing only its first incarnation: refused
    assert a.state is NodeState.SUPERSEDED
    assert isinstance(a.error, NodeNameConflict)
    assert drive([newer, b], clock, 15, lambda: newer.ready)


def test_every_registration_names_the_process_and_what_it_knew() -> None:
    clock = VirtualClock()
    store = MemoryStore(clock)
    seen: list[tuple[str, int | None]] = []
    handle = store.connect("a")
    real = handle.register

    def register(*args: Any, process: str, known: int | None, **more: Any) -> Any:
        seen.append((process, known))
        return real(*args, process=process, known=known, **more)

    handle.register = register  # type: ignore[method-assign]
    node = Node(handle, SITE, "a", CFG, process="proc-1")
    assert drive([node], clock, 10, lambda: node.ready)
    first = node.incarnation
    clock.t += CFG.heartbeat_timeout_sec + 1
    assert drive([node], clock, 10, lambda: node.ready and node.incarnation != first)
    assert seen == [("proc-1", None), ("proc-1", first)]
    assert len(Node(handle, SITE, "x", CFG).process) == 32  # a fresh identity by default


# -- hygiene: reaping only when a node died ---------------------------------------------


def test_the_leader_reaps_when_a_node_dies_not_on_every_pass() -> None:
    clock = VirtualClock()
    store = MemoryStore(clock)
    nodes = [make(store, name) for name in "abc"]
    a, b, _ = nodes
    assert drive(nodes, clock, 10, lambda: all(n.ready for n in nodes))
    assert a.is_leader
    drive([a, b], clock, CFG.heartbeat_timeout_sec + 2)  # c crashed: it never ticks again
    assert len(a.snapshot.tokens) + len(b.snapshot.tokens) == CFG.total_tokens
    reaped = a.backend.statistics
    reaps = reaped()["reap_claims"]
    passes = a.backend.statistics()["read_cluster"]
    admin = store.connect("admin")
    for i in range(6):  # every lock change makes the leader pass (plan) again
        admin.replace_locks(
            SITE, "admin", [LockSpec(task_key=f"t{i}", token=i, patterns=("a", "b"))], False
        )
        drive([a, b], clock, 1.0)
    assert a.backend.statistics()["read_cluster"] >= passes + 6  # it passed, c's row dead
    assert reaped()["reap_claims"] == reaps  # and reaped nothing more: no new death
    drive([a], clock, CFG.heartbeat_timeout_sec + 2)  # b crashed too
    assert reaped()["reap_claims"] == reaps + 1 == a.stats["reaps"]
    drive([a], clock, CFG.rebalance_check_interval_sec + 1)
    assert reaped()["reap_claims"] <= reaps + 2  # at most once more per reconciliation interval


DAY = datetime.date(2024, 1, 1)


def _completed_in_open_transaction(store: MemoryStore, b: Node) -> Any:
    """``b`` claims task "t" and completes it inside a user transaction left open,
    which holds the claim row; returns the transaction."""
    token = min(b.snapshot.tokens)
    request = ClaimRequest(task_key="t", token=token, epoch=b.snapshot.epochs[token])
    assert b.backend.claim(SITE, DAY, "b", b.incarnation or 0, [request]) == {"t"}
    tx = store.transaction("b's user")
    transactional = b.backend
    assert isinstance(transactional, TransactionalCompletion)
    assert transactional.complete_in(tx, SITE, DAY, b.incarnation or 0, ["t"]) == {"t"}
    return tx


def test_a_claim_skipped_while_locked_is_reaped_once_more_on_a_quiet_site() -> None:
    clock = VirtualClock()
    store = MemoryStore(clock)
    a, b = make(store, "a"), make(store, "b")
    assert drive([a, b], clock, 10, lambda: a.ready and b.ready)
    drive([a, b], clock, 2 * CFG.rebalance_check_interval_sec)
    assert a.stats["reaps"] == 0  # nobody died: a quiet site reaps nothing
    day, tx = DAY, _completed_in_open_transaction(store, b)
    b.tick(clock.t, [Signal.DRAIN])  # b leaves while its user's transaction holds the row
    assert drive([a, b], clock, 5, lambda: b.state is NodeState.STOPPED)
    assert drive([a], clock, 2, lambda: a.stats["reaps"] > 0)
    assert a.stats["reaps"] == 1  # b's departure: the locked row was skipped
    tx.rollback()  # b's process ends, and its transaction with it
    probe = store.connect("probe")
    assert [r.status for r in probe.read_audit(SITE, day)] == ["claimed"]  # stranded, for now
    drive([a], clock, CFG.rebalance_check_interval_sec + 1)  # nothing else happens
    assert probe.read_audit(SITE, day) == ()  # reaped the second time
    assert a.stats["reaps"] == 2
    drive([a], clock, 3 * CFG.rebalance_check_interval_sec)
    assert a.stats["reaps"] == 2


def test_a_claim_locked_past_the_second_reap_is_reaped_once_its_transaction_ends() -> None:
    """A dead worker's transaction may stay open on the server longer than one
    reconciliation interval (its connection black-holed): the leader keeps looking
    while a reap skips claims, and stops once none is left."""
    clock = VirtualClock()
    store = MemoryStore(clock)
    a, b = make(store, "a"), make(store, "b")
    assert drive([a, b], clock, 10, lambda: a.ready and b.ready)
    day, tx = DAY, _completed_in_open_transaction(store, b)
    drive([a], clock, CFG.heartbeat_timeout_sec + 1)  # b crashed, its transaction open
    assert a.stats["reaps"] == 1
    drive([a], clock, 2 * CFG.rebalance_check_interval_sec + 1)  # still open
    assert a.stats["reaps"] == 3  # once a reconciliation interval while it skips
    probe = store.connect("probe")
    assert [r.status for r in probe.read_audit(SITE, day)] == ["claimed"]
    tx.rollback()  # the server sees b's connection end at last
    drive([a], clock, CFG.rebalance_check_interval_sec + 1)
    assert probe.read_audit(SITE, day) == ()  # reaped, not stranded
    assert a.stats["reaps"] == 4
    drive([a], clock, 3 * CFG.rebalance_check_interval_sec)
    assert a.stats["reaps"] == 4  # nothing skipped any more: quiet again


def test_a_clean_departure_is_reaped_once_a_reconciliation_interval_later() -> None:
    clock = VirtualClock()
    store = MemoryStore(clock)
    nodes = a, b, c = [make(store, name) for name in "abc"]
    assert drive(list(nodes), clock, 10, lambda: all(n.ready for n in nodes))
    c.tick(clock.t, [Signal.DRAIN])
    assert drive(list(nodes), clock, 5, lambda: c.state is NodeState.STOPPED)
    drive([a, b], clock, 2)
    assert [r.name for r in store.connect("probe").read_nodes(SITE)[1]] == ["a", "b"]
    assert a.stats["reaps"] == 0  # its deregistration released all it could
    drive([a, b], clock, CFG.rebalance_check_interval_sec)
    assert a.stats["reaps"] == 1  # one look for rows a transaction kept locked
    drive([a, b], clock, 3 * CFG.rebalance_check_interval_sec)
    assert a.stats["reaps"] == 1


# -- hygiene: the driver never spins while registration fails ---------------------------


class CountingNode(Node):
    ticks = 0

    def tick(self, now: float, events: Any = ()) -> float:
        self.ticks += 1
        return super().tick(now, events)


def test_failing_registration_does_not_spin_the_coordination_thread() -> None:
    store = MemoryStore()
    store.cut_off_all()
    node = CountingNode(store.connect("a"), SITE, "a", CFG)
    driver = Driver(node, SystemClock(), lambda events: None)
    driver.start()
    threading.Event().wait(1.0)  # measure a rate over one second
    assert driver.stop(timeout=5)
    assert node.registration is None and driver.error is None
    # the node's backoff (0.1 s, doubling) paces it, not a busy loop: a few ticks
    assert 2 <= node.ticks <= 20, node.ticks
    assert node.stats["transient_errors"] >= 2  # retried, at that pace
    assert not math.isnan(node.stats["transient_errors"])
