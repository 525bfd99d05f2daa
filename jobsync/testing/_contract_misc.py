"""Contract: site isolation, prune, wait_for_change, statistics, closed handles,
bad input, and counters that never go backwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import attrs
import pytest

from jobsync.backends.base import (
    ClaimRequest,
    DirectAssign,
    HeartbeatOutcome,
    HistoryEntry,
    PlanCommit,
)
from jobsync.backends.capabilities import InterruptibleWait
from jobsync.core.errors import (
    BackendUnavailable,
    InvalidArgument,
    InvalidHashFunction,
    InvalidNodeName,
    InvalidTaskId,
    InvalidTokenCount,
)
from jobsync.testing._contract_locks import lock
from jobsync.testing.scene import (
    DAY,
    SHORT_LEASE,
    TOTAL_TOKENS,
    ContractHarness,
    Node,
    Scene,
    needs_clock,
)

DAY_SECONDS = 86_400.0

ENTRY = HistoryEntry(
    trigger="start", nodes_before=(), nodes_after=("a",), moved=12, unowned=0, duration_ms=1.0
)


@attrs.frozen
class BadInput:
    call: Callable[[Scene, Node], object]
    error: type[InvalidArgument]
    named: str
    """What the message must show: the bad value's repr."""


def _plan(scene: Scene, a: Node, **changes: Any) -> PlanCommit:
    view = scene.view()
    plan = PlanCommit(
        leader="a",
        leader_incarnation=a.incarnation,
        expected_generation=view.site.generation,
        basis=view.site.change_counter,
    )
    return attrs.evolve(plan, **changes)


def _assign(token: int, a: Node) -> DirectAssign:
    return DirectAssign(
        token=token,
        expected_incarnation=a.incarnation,
        expected_epoch=1,
        owner="a",
        incarnation=a.incarnation,
    )


def _claim(s: Scene, a: Node, request: ClaimRequest) -> object:
    return s.db.claim(s.site, DAY, "a", a.incarnation, [request])


def _untyped(value: object) -> Any:
    """A wrongly typed argument, passed on purpose."""
    return value


BAD_INPUTS: dict[str, BadInput] = {
    "ensure_site empty site": BadInput(
        lambda s, a: s.db.ensure_site("", 12, "xxh3"), InvalidArgument, "''"
    ),
    "ensure_site zero tokens": BadInput(
        lambda s, a: s.db.ensure_site(s.site + "-x", 0, "xxh3"), InvalidTokenCount, "0"
    ),
    "ensure_site bool tokens": BadInput(
        lambda s, a: s.db.ensure_site(s.site + "-x", True, "xxh3"), InvalidTokenCount, "True"
    ),
    "ensure_site unknown hash": BadInput(
        lambda s, a: s.db.ensure_site(s.site + "-x", 12, "crc32"), InvalidHashFunction, "'crc32'"
    ),
    "register empty name": BadInput(
        lambda s, a: s.db.register(s.site, "", 10.0), InvalidNodeName, "''"
    ),
    "register negative lease": BadInput(
        lambda s, a: s.db.register(s.site, "x", -1.5), InvalidArgument, "-1.5"
    ),
    "register nan lease": BadInput(
        lambda s, a: s.db.register(s.site, "x", float("nan")), InvalidArgument, "nan"
    ),
    "heartbeat int name": BadInput(
        lambda s, a: s.db.heartbeat(s.site, _untyped(7), a.incarnation), InvalidNodeName, "7"
    ),
    "heartbeat str incarnation": BadInput(
        lambda s, a: s.db.heartbeat(s.site, "a", _untyped("1")), InvalidArgument, "'1'"
    ),
    "mark_leaving NUL name": BadInput(
        lambda s, a: s.db.mark_leaving(s.site, "a\x00b", a.incarnation),
        InvalidNodeName,
        repr("a\x00b"),
    ),
    "commit token out of range": BadInput(
        lambda s, a: s.db.commit_plan(s.site, _plan(s, a, assigns=(_assign(99, a),))),
        InvalidArgument,
        "99",
    ),
    "commit negative ack_timeout": BadInput(
        lambda s, a: s.db.commit_plan(s.site, _plan(s, a, ack_timeout=-3.5)),
        InvalidArgument,
        "-3.5",
    ),
    "claim date as text": BadInput(
        lambda s, a: s.db.claim(s.site, _untyped("2024-01-02"), "a", a.incarnation, []),
        InvalidArgument,
        "'2024-01-02'",
    ),
    "claim token out of range": BadInput(
        lambda s, a: _claim(s, a, ClaimRequest(task_key="t", token=TOTAL_TOKENS, epoch=1)),
        InvalidArgument,
        repr(TOTAL_TOKENS),
    ),
    "claim int task key": BadInput(
        lambda s, a: _claim(s, a, ClaimRequest(task_key=_untyped(5), token=0, epoch=1)),
        InvalidTaskId,
        "5",
    ),
    "complete bare string": BadInput(
        lambda s, a: s.db.complete(s.site, DAY, a.incarnation, "abc"), InvalidArgument, "'abc'"
    ),
    "ack token out of range": BadInput(
        lambda s, a: s.db.ack_releases(s.site, "a", a.incarnation, [(50, 1)]),
        InvalidArgument,
        "50",
    ),
    "read_history zero limit": BadInput(
        lambda s, a: s.db.read_history(s.site, 0), InvalidArgument, "0"
    ),
    "prune negative age": BadInput(lambda s, a: s.db.prune(s.site, -5.5), InvalidArgument, "-5.5"),
    "wait negative timeout": BadInput(
        lambda s, a: s.db.wait_for_change(s.site, -1.5), InvalidArgument, "-1.5"
    ),
    "read_audit empty node": BadInput(
        lambda s, a: s.db.read_audit(s.site, DAY, ""), InvalidNodeName, "''"
    ),
    "clear_locks int creator": BadInput(
        lambda s, a: s.db.clear_locks(s.site, _untyped(5)), InvalidNodeName, "5"
    ),
    "replace_locks empty creator": BadInput(
        lambda s, a: s.db.replace_locks(s.site, "", [lock(s, "k")], False), InvalidNodeName, "''"
    ),
}


def _state(scene: Scene) -> tuple[object, ...]:
    """Everything a bad call could have written (a site next to it included)."""
    return (*scene.everything(), scene.db.site_info(scene.site + "-x"))


class MaintenanceContract:
    def test_sites_are_isolated(self, harness: ContractHarness) -> None:
        one, two = Scene(harness), Scene(harness)
        try:
            b = two.join("a")
            waiter = two.connect("waiter")
            assert waiter.wait_for_change(two.site, 0.0) is False
            before = _state(two)
            a = one.join("a")
            one.round_robin(a, [a])
            key = one.key_on(0)
            assert one.claim(a, key) == {key}
            one.db.replace_locks(one.site, "admin", [lock(one, key)], False)
            assert _state(two) == before
            assert two.db.read_history(two.site) == ()
            assert waiter.wait_for_change(two.site, 0.05) is False
            assert two.heartbeat(b) is HeartbeatOutcome.RENEWED
            assert one.heartbeat(a) is HeartbeatOutcome.RENEWED
            assert two.owned(b).tokens == () and len(one.owned(a).tokens) == TOTAL_TOKENS
        finally:
            one.close()
            two.close()

    def test_list_sites_names_every_site_sorted(self, harness: ContractHarness) -> None:
        one, two = Scene(harness), Scene(harness)
        try:
            sites = one.db.list_sites()
            assert {one.site, two.site} <= set(sites)
            assert list(sites) == sorted(sites)
        finally:
            one.close()
            two.close()

    def test_prune_deletes_old_completions_and_history_only(
        self, scene: Scene, harness: ContractHarness
    ) -> None:
        needs_clock(harness)  # ages under a day are refused; the clock must jump a day
        a = scene.join("a")
        view = scene.view()
        scene.commit(
            a,
            view=view,
            assigns=[scene.assign(view, t, a) for t in range(TOTAL_TOKENS)],
            history=ENTRY,
        )
        done = [scene.key_on(0, "d"), scene.key_on(1, "d")]
        still_open = scene.key_on(0, "o")
        assert scene.claim(a, *done, still_open) == {*done, still_open}
        assert scene.db.complete(scene.site, DAY, a.incarnation, done) == set(done)
        assert dict(scene.db.prune(scene.site, DAY_SECONDS)) == {"audit": 0, "history": 0}
        harness.set_time(scene.now() + DAY_SECONDS + 1.0)
        deleted = scene.db.prune(scene.site, DAY_SECONDS, batch_size=1)
        assert dict(deleted) == {"audit": 2, "history": 1}
        assert scene.audit() == {still_open: "claimed"}
        assert scene.db.read_history(scene.site) == ()

    def test_wait_for_change_is_edge_triggered(self, scene: Scene) -> None:
        waiter = scene.connect("waiter")
        assert waiter.wait_for_change(scene.site, 0.0) is False
        a = scene.join("a")  # a change before the call is not lost
        assert waiter.wait_for_change(scene.site, 5.0) is True
        assert waiter.wait_for_change(scene.site, 0.05) is False
        scene.heartbeat(a)  # heartbeats signal nothing
        assert waiter.wait_for_change(scene.site, 0.05) is False
        scene.commit(a)  # a plan that writes nothing still wakes joiners
        assert waiter.wait_for_change(scene.site, 5.0) is True

    def test_wait_for_change_wakes_on_a_change_made_while_waiting(self, scene: Scene) -> None:
        waiter = scene.connect("waiter")
        assert waiter.wait_for_change(scene.site, 0.0) is False
        timer = threading.Timer(0.1, lambda: scene.join("a"))
        timer.start()
        started = time.monotonic()
        try:
            assert waiter.wait_for_change(scene.site, 10.0) is True
        finally:
            timer.join()
        assert time.monotonic() - started < 5.0

    def test_interrupt_wait_cuts_a_wait_short_once(self, scene: Scene) -> None:
        waiter = scene.connect("waiter")
        if not isinstance(waiter, InterruptibleWait):
            pytest.skip("optional: the runtime then looks for local requests every 50 ms")
        assert waiter.wait_for_change(scene.site, 0.0) is False
        waiter.interrupt_wait()  # before the wait: the next one returns at once
        started = time.monotonic()
        assert waiter.wait_for_change(scene.site, 30.0) is False
        timer = threading.Timer(0.1, waiter.interrupt_wait)  # while it waits
        timer.start()
        try:
            assert waiter.wait_for_change(scene.site, 30.0) is False
        finally:
            timer.join()
        assert time.monotonic() - started < 20.0  # neither waited out its 30 s
        scene.join("a")  # a change is still reported after an interruption
        assert waiter.wait_for_change(scene.site, 5.0) is True
        assert waiter.wait_for_change(scene.site, 0.05) is False  # consumed: once

    def test_statistics_count_verb_calls_and_a_heartbeat_is_one_round_trip(
        self, scene: Scene
    ) -> None:
        a = scene.join("a")
        handle = scene.connect("counted")
        before = dict(handle.statistics())
        for _ in range(3):
            handle.heartbeat(scene.site, "a", a.incarnation)
        middle = dict(handle.statistics())
        handle.read_cluster(scene.site)
        after = handle.statistics()
        assert middle["heartbeat"] - before.get("heartbeat", 0) == 3
        assert middle["round_trips"] - before.get("round_trips", 0) == 3
        assert after["read_cluster"] - middle.get("read_cluster", 0) == 1
        assert after["round_trips"] > middle["round_trips"]

    def test_a_closed_handle_is_unavailable(self, scene: Scene) -> None:
        a = scene.join("a")
        handle = scene.connect("closing")
        handle.close()
        with pytest.raises(BackendUnavailable):
            handle.heartbeat(scene.site, "a", a.incarnation)
        with pytest.raises(BackendUnavailable):
            handle.read_cluster(scene.site)

    @pytest.mark.parametrize("case", list(BAD_INPUTS))
    def test_bad_input_is_refused_naming_it_and_writes_nothing(
        self, scene: Scene, case: str
    ) -> None:
        bad = BAD_INPUTS[case]
        a = scene.join("a")
        scene.round_robin(a, [a])
        before = _state(scene)
        with pytest.raises(bad.error) as caught:
            bad.call(scene, a)
        assert bad.named in str(caught.value)
        assert _state(scene) == before

    def test_generations_epochs_and_incarnations_never_go_backwards(self, scene: Scene) -> None:
        seen: list[tuple[int, int, int, list[int]]] = []

        def snap() -> None:
            info, table = scene.info(), scene.table()
            seen.append((info.generation, info.change_counter, info.plan_basis, list(table.epoch)))

        a, b, c = scene.join("a"), scene.join("b", SHORT_LEASE), scene.join("c")
        steps: list[Callable[[], object]] = [
            lambda: scene.round_robin(a, [a, b, c]),
            lambda: scene.hand_off(a, 1, c),
            lambda: scene.expire(b),
            lambda: scene.reassign(a, b, a),
            lambda: scene.join("b"),
            lambda: scene.hand_off(a, 0, None),
            lambda: scene.db.replace_locks(scene.site, "admin", [lock(scene, "k")], True),
            lambda: scene.db.clear_locks(scene.site, None),
            lambda: scene.db.deregister(scene.site, "c", c.incarnation),
            lambda: scene.commit(a),
            lambda: scene.db.mark_leaving(scene.site, "a", a.incarnation),
        ]
        registered = [a.incarnation, b.incarnation, c.incarnation]
        snap()
        for step in steps:
            result = step()
            if isinstance(result, Node):
                registered.append(result.incarnation)
            snap()
        assert registered == sorted(set(registered))
        for earlier, later in pairwise(seen):
            assert all(x <= y for x, y in zip(earlier[:3], later[:3], strict=True)), (
                earlier,
                later,
            )
            assert all(x <= y for x, y in zip(earlier[3], later[3], strict=True)), (earlier, later)
        assert seen[-1][1] > seen[0][1] and seen[-1][0] > seen[0][0]
