"""Contract: registration by process, fences kept by deregistration, lost replies,
open claims, the prune floor and the retention of dead node rows.

Every rule tested here is written in ``jobsync/backends/base.py``: the module
docstring's "Lost replies" bullet, ``Backend.register`` (``process`` and
``known``), ``Backend.deregister``, ``Backend.open_claims``, ``Backend.prune``
with ``MIN_PRUNE_AGE`` and ``Backend.reap_claims`` with ``DEAD_NODE_RETENTION``.
"""

from __future__ import annotations

import datetime
from typing import TypeVar

import pytest

from jobsync.backends.base import (
    DEAD_NODE_RETENTION,
    MIN_PRUNE_AGE,
    NODE_ACTIVE,
    NODE_DEAD,
    NODE_LEAVING,
    Backend,
    HeartbeatOutcome,
    HistoryEntry,
)
from jobsync.core.errors import ConflictError, InvalidArgument, NodeNameConflict
from jobsync.testing._contract_locks import lock
from jobsync.testing.scene import (
    DAY,
    LONG_LEASE,
    SHORT_LEASE,
    TOTAL_TOKENS,
    Node,
    Scene,
    just_before,
    needs_clock,
)

_C = TypeVar("_C", bound=type)

RENEWED, EXPIRED, SUPERSEDED = (
    HeartbeatOutcome.RENEWED,
    HeartbeatOutcome.EXPIRED,
    HeartbeatOutcome.SUPERSEDED,
)

ENTRY = HistoryEntry(
    trigger="start", nodes_before=(), nodes_after=("a",), moved=12, unowned=0, duration_ms=1.0
)


def _register(
    scene: Scene,
    name: str,
    process: str,
    lease: float = LONG_LEASE,
    *,
    known: int | None = None,
    db: Backend | None = None,
) -> Node:
    """Register ``name`` as ``process`` (which last knew incarnation ``known``)."""
    reg = (db or scene.db).register(scene.site, name, lease, process=process, known=known)
    return Node(
        name=name,
        incarnation=reg.incarnation,
        registered_at=reg.registered_at,
        fence_until=reg.fence_until,
        change_counter=reg.change_counter,
    )


def _pair(scene: Scene) -> tuple[Node, Node]:
    """a (leader, process "pa") holds the even tokens, b (process "pb") the odd ones."""
    a = _register(scene, "a", "pa")
    b = _register(scene, "b", "pb")
    scene.round_robin(a, [a, b])
    return a, b


def _held(scene: Scene, node: Node) -> list[int]:
    """The tokens whose row names ``node``'s incarnation, from read_cluster."""
    table = scene.table()
    return [t for t in range(len(table)) if table.incarnation[t] == node.incarnation]


def _selectable_as_safety(cls: _C) -> _C:
    """Let ``pytest -k Safety`` select these tests on every backend.

    A backend's test class names none of the contract's parts, but ``-k`` also
    matches the attribute names of a test function, so each gets one.
    """
    for name, value in vars(cls).items():
        if name.startswith("test_"):
            value.__dict__["safety_contract"] = True
    return cls


@_selectable_as_safety
class SafetyContract:
    """Registration by process identity, and the fence a deregistration keeps."""

    # -- registration by process -------------------------------------------------
    def test_a_first_registration_over_another_process_is_fenced_by_its_lease(
        self, scene: Scene
    ) -> None:
        old = _register(scene, "a", "pa")
        before = scene.row("a")
        assert before is not None and (before.process, before.fence_until) == ("pa", 0.0)
        new = _register(scene, "a", "pb")
        assert new.incarnation > old.incarnation
        assert new.fence_until == before.lease_expires
        rows = scene.db.read_nodes(scene.site)[1]
        assert [(r.name, r.incarnation, r.process, r.state, r.fence_until) for r in rows] == [
            ("a", new.incarnation, "pb", NODE_ACTIVE, new.fence_until)
        ]
        assert scene.heartbeat(old) is SUPERSEDED
        assert scene.heartbeat(new) is RENEWED

    def test_a_lost_first_registration_is_taken_over_with_no_fence(self, scene: Scene) -> None:
        a = _register(scene, "a", "pa")
        lost = _register(scene, "b", "pb")  # its reply never reached process pb
        scene.round_robin(a, [a, lost])  # the leader saw it live and gave it tokens
        held = _held(scene, lost)
        assert held
        again = _register(scene, "b", "pb", known=None)  # pb still knows no incarnation
        assert again.incarnation > lost.incarnation
        assert again.fence_until == 0.0
        row = scene.row("b")
        assert row is not None
        assert (row.incarnation, row.process, row.fence_until) == (again.incarnation, "pb", 0.0)
        assert scene.heartbeat(lost) is SUPERSEDED
        owned = scene.owned(again)
        assert owned.tokens == () and owned.incoming == len(held)
        # No fence: the lost incarnation's lease has expired (its row holds a newer
        # incarnation and fence_until <= now), so its tokens move at once.
        scene.reassign(a, lost, again)
        assert list(scene.tokens_of(again)) == held

    def test_a_lost_registration_keeps_the_fence_from_another_process_unchanged(
        self, scene: Scene
    ) -> None:
        _register(scene, "a", "pa", LONG_LEASE)
        first = scene.row("a")
        assert first is not None
        # pb's incarnations outlive pa's, so a fence from pb's own lost incarnation
        # would show as a later fence_until.
        lost = _register(scene, "a", "pb", 2 * LONG_LEASE)
        assert lost.fence_until == first.lease_expires
        lost_row = scene.row("a")
        assert lost_row is not None and lost_row.lease_expires > first.lease_expires
        again = _register(scene, "a", "pb", 2 * LONG_LEASE, known=None)
        assert again.incarnation > lost.incarnation
        assert again.fence_until == first.lease_expires
        row = scene.row("a")
        assert row is not None
        assert (row.incarnation, row.process, row.fence_until) == (
            again.incarnation,
            "pb",
            first.lease_expires,
        )

    def test_known_with_the_callers_own_newer_incarnation_in_the_row_succeeds(
        self, scene: Scene
    ) -> None:
        first = _register(scene, "a", "pa")
        lost = _register(scene, "a", "pa", known=first.incarnation)  # reply lost
        assert lost.fence_until == 0.0  # its own process's incarnation adds no fence
        again = _register(scene, "a", "pa", known=first.incarnation)
        assert again.incarnation > lost.incarnation
        assert again.fence_until == 0.0
        row = scene.row("a")
        assert row is not None
        assert (row.incarnation, row.process, row.state, row.fence_until) == (
            again.incarnation,
            "pa",
            NODE_ACTIVE,
            0.0,
        )
        assert scene.heartbeat(lost) is SUPERSEDED
        assert scene.heartbeat(again) is RENEWED

    def test_a_late_registration_never_supersedes_a_newer_process(self, scene: Scene) -> None:
        mine = _register(scene, "a", "pa")
        newer = _register(scene, "a", "pb")  # pb took the name while pa was away
        before = scene.everything()
        with pytest.raises(NodeNameConflict):
            _register(scene, "a", "pa", known=mine.incarnation)
        assert scene.everything() == before
        assert scene.heartbeat(newer) is RENEWED
        assert scene.heartbeat(mine) is SUPERSEDED

    def test_an_empty_process_is_never_the_same_process(self, scene: Scene) -> None:
        first = _register(scene, "a", "")
        before = scene.row("a")
        assert before is not None
        second = _register(scene, "a", "")  # unknown process: a takeover, fenced
        assert second.fence_until == before.lease_expires
        state = scene.everything()
        with pytest.raises(NodeNameConflict):
            _register(scene, "a", "", known=first.incarnation)
        assert scene.everything() == state

    # -- deregistration keeps a fence --------------------------------------------
    def test_deregistration_after_a_takeover_keeps_the_fence(self, scene: Scene) -> None:
        a = _register(scene, "a", "pl")
        old = _register(scene, "b", "pa", SHORT_LEASE)
        scene.round_robin(a, [a, old])
        held = _held(scene, old)
        old_row = scene.row("b")
        assert held and old_row is not None
        new = _register(scene, "b", "pb")
        assert new.fence_until == old_row.lease_expires
        counter = scene.counter()
        assert scene.db.deregister(scene.site, "b", new.incarnation) is True
        assert scene.counter() > counter
        row = scene.row("b")
        assert row is not None, "the row fencing the older incarnation was deleted"
        assert (row.incarnation, row.state, row.fence_until, row.process) == (
            new.incarnation,
            NODE_DEAD,
            new.fence_until,
            "pb",
        )
        view = scene.view()
        assert _held(scene, old) == held and {view.tokens.owner[t] for t in held} == {"b"}
        assert scene.heartbeat(old) is SUPERSEDED
        assert scene.heartbeat(new) is EXPIRED
        with pytest.raises(ConflictError):
            scene.commit(a, view=view, assigns=[scene.assign(view, held[0], a)])
        assert scene.table() == view.tokens
        scene.wait_until(new.fence_until)
        scene.reassign(a, old, a)
        assert set(scene.tokens_of(a)) == set(range(TOTAL_TOKENS))

    def test_a_kept_fence_ends_exactly_at_its_instant(self, scene: Scene) -> None:
        needs_clock(scene.harness)
        a = _register(scene, "a", "pl")
        old = _register(scene, "b", "pa", 10.0)
        scene.round_robin(a, [a, old])
        held = _held(scene, old)
        new = _register(scene, "b", "pb")
        assert new.fence_until == old.registered_at + 10.0
        assert scene.db.deregister(scene.site, "b", new.incarnation) is True
        scene.set_time(just_before(new.fence_until))
        view = scene.view()
        with pytest.raises(ConflictError):
            scene.commit(a, view=view, assigns=[scene.assign(view, held[0], a)])
        scene.set_time(new.fence_until)
        view = scene.view()
        scene.commit(a, view=view, assigns=[scene.assign(view, held[0], a)])
        assert scene.table().owner[held[0]] == "a"

    def test_deregistration_when_the_fence_is_over_deletes_the_row(self, scene: Scene) -> None:
        needs_clock(scene.harness)
        _register(scene, "b", "pa", 10.0)
        new = _register(scene, "b", "pb")
        scene.set_time(new.fence_until)  # fence_until is not after the statement clock
        assert scene.db.deregister(scene.site, "b", new.incarnation) is True
        assert scene.row("b") is None

    def test_deregistration_of_an_unfenced_row_deletes_it_and_a_repeat_is_false(
        self, scene: Scene
    ) -> None:
        c = _register(scene, "c", "pc")
        assert scene.db.deregister(scene.site, "c", c.incarnation) is True
        assert scene.row("c") is None
        before = scene.everything()
        assert scene.connect("retry").deregister(scene.site, "c", c.incarnation) is False
        assert scene.everything() == before

    def test_a_repeated_deregistration_of_a_fencing_row_is_false_and_writes_nothing(
        self, scene: Scene
    ) -> None:
        a = _register(scene, "a", "pl")
        old = _register(scene, "b", "pa")
        scene.round_robin(a, [a, old])
        new = _register(scene, "b", "pb")
        assert scene.db.deregister(scene.site, "b", new.incarnation) is True
        before = scene.everything()
        # The dead row still holds this incarnation, but a repeat finds nothing left
        # to do ("Lost replies" in base.py): it writes nothing and so answers False.
        assert scene.connect("retry").deregister(scene.site, "b", new.incarnation) is False
        assert scene.everything() == before


@_selectable_as_safety
class LostReplyContract:
    """Each write verb repeated after its commit (its reply lost), open claims,
    the prune floor and dead node rows."""

    # -- lost replies: each write verb repeated after its commit ------------------
    def test_a_repeated_claim_finds_its_own_open_claim(self, scene: Scene) -> None:
        a, _ = _pair(scene)
        key = scene.key_on(0)
        assert scene.claim(a, key) == {key}
        (first,) = scene.db.read_audit(scene.site, DAY)
        assert scene.claim(a, key, db=scene.connect("retry")) == {key}
        assert scene.db.read_audit(scene.site, DAY) == (first,)

    @pytest.mark.parametrize(("verb", "left"), [("complete", "done"), ("release", None)])
    def test_a_repeated_completion_or_release_settles_nothing(
        self, scene: Scene, verb: str, left: str | None
    ) -> None:
        """A completion is not reported again and stays done; a release releases nothing."""
        a, _ = _pair(scene)
        key = scene.key_on(0)
        assert scene.claim(a, key) == {key}
        settle = getattr(scene.db, verb)
        assert settle(scene.site, DAY, a.incarnation, [key]) == {key}
        before = scene.everything()
        retry = getattr(scene.connect("retry"), verb)
        assert retry(scene.site, DAY, a.incarnation, [key]) == frozenset()
        assert scene.everything() == before
        assert scene.audit() == ({} if left is None else {key: left})

    def test_a_repeated_acknowledgement_acknowledges_nothing(self, scene: Scene) -> None:
        a, b = _pair(scene)
        view = scene.view()
        scene.commit(a, view=view, revokes=[scene.revoke(view, 1, a)])
        pair = [(1, view.tokens.epoch[1])]
        assert scene.db.ack_releases(scene.site, "b", b.incarnation, pair) == {1}
        before = scene.everything()
        retry = scene.connect("retry")
        assert retry.ack_releases(scene.site, "b", b.incarnation, pair) == frozenset()
        assert scene.everything() == before
        assert scene.table().owner[1] == "a"

    def test_a_repeated_plan_conflicts_and_writes_nothing(self, scene: Scene) -> None:
        a = _register(scene, "a", "pa")
        view = scene.view()
        assigns = [scene.assign(view, 0, a)]
        generation = scene.commit(a, view=view, assigns=assigns)
        assert generation == view.site.generation + 1
        before = scene.everything()
        with pytest.raises(ConflictError):  # the same plan, sent again
            scene.commit(a, view=view, assigns=assigns, db=scene.connect("retry"))
        assert scene.everything() == before
        assert scene.info().generation == generation

    def test_a_repeated_leave_answers_true_and_bumps_the_counter_once(self, scene: Scene) -> None:
        a = _register(scene, "a", "pa")
        counter = scene.counter()
        assert scene.db.mark_leaving(scene.site, "a", a.incarnation) is True
        assert scene.counter() == counter + 1
        assert scene.connect("retry").mark_leaving(scene.site, "a", a.incarnation) is True
        assert scene.counter() == counter + 1
        row = scene.row("a")
        assert row is not None and row.state == NODE_LEAVING
        assert scene.heartbeat(a) is RENEWED

    def test_repeated_replace_locks_leaves_the_same_locks(self, scene: Scene) -> None:
        specs = [lock(scene, "k1", ("a%",), "why"), lock(scene, "k2", ("b_",))]
        assert scene.db.replace_locks(scene.site, "admin", specs, True) == 2
        first = scene.db.list_locks(scene.site)
        scene.wait_until(scene.now() + 0.05)
        assert scene.connect("retry").replace_locks(scene.site, "admin", specs, True) == 2
        assert scene.db.list_locks(scene.site) == first

    # -- open claims ---------------------------------------------------------------
    def test_open_claims_are_this_incarnations_still_open_claims_among_the_keys(
        self, scene: Scene
    ) -> None:
        a, b = _pair(scene)
        open_, done, released, unasked = (scene.key_on(0, p) for p in ("o", "d", "r", "u"))
        theirs = scene.key_on(1)
        assert scene.claim(a, open_, done, released, unasked) == {open_, done, released, unasked}
        assert scene.claim(b, theirs) == {theirs}
        db, site = scene.db, scene.site
        assert db.complete(site, DAY, a.incarnation, [done]) == {done}
        assert db.release(site, DAY, a.incarnation, [released]) == {released}
        before = scene.everything()
        asked = [open_, done, released, theirs, "never-claimed"]
        assert db.open_claims(site, DAY, a.incarnation, asked) == {open_}
        assert db.open_claims(site, DAY, b.incarnation, asked) == {theirs}
        assert db.open_claims(site, DAY, a.incarnation, []) == frozenset()
        other_day = DAY + datetime.timedelta(days=1)
        assert db.open_claims(site, other_day, a.incarnation, asked) == frozenset()
        assert scene.everything() == before

    # -- prune floor -----------------------------------------------------------------
    @pytest.mark.parametrize("age", [0.1, 3_600.0, just_before(MIN_PRUNE_AGE)])
    def test_prune_below_one_day_is_refused_naming_the_age(self, scene: Scene, age: float) -> None:
        a = _register(scene, "a", "pa")
        scene.round_robin(a, [a])
        key = scene.key_on(0)
        assert scene.claim(a, key) == {key}
        assert scene.db.complete(scene.site, DAY, a.incarnation, [key]) == {key}
        before = scene.everything()
        with pytest.raises(InvalidArgument) as caught:
            scene.db.prune(scene.site, age)
        assert repr(age) in str(caught.value)
        assert scene.everything() == before
        assert dict(scene.db.prune(scene.site, MIN_PRUNE_AGE)) == {"audit": 0, "history": 0}
        assert scene.audit() == {key: "done"}

    def test_prune_below_one_day_deletes_nothing_even_when_rows_are_older(
        self, scene: Scene
    ) -> None:
        needs_clock(scene.harness)
        a = _register(scene, "a", "pa")
        view = scene.view()
        assigns = [scene.assign(view, t, a) for t in range(TOTAL_TOKENS)]
        scene.commit(a, view=view, assigns=assigns, history=ENTRY)
        done, still_open = [scene.key_on(0, "d"), scene.key_on(1, "d")], scene.key_on(0, "o")
        assert scene.claim(a, *done, still_open) == {*done, still_open}
        assert scene.db.complete(scene.site, DAY, a.incarnation, done) == set(done)
        scene.set_time(scene.now() + 2 * MIN_PRUNE_AGE)
        before = scene.everything(), scene.db.read_history(scene.site)
        for age in (60.0, just_before(MIN_PRUNE_AGE)):
            with pytest.raises(InvalidArgument):
                scene.db.prune(scene.site, age)
            assert (scene.everything(), scene.db.read_history(scene.site)) == before
        assert dict(scene.db.prune(scene.site, MIN_PRUNE_AGE)) == {"audit": 2, "history": 1}
        assert scene.audit() == {still_open: "claimed"}
        assert scene.db.read_history(scene.site) == ()

    # -- dead node rows ----------------------------------------------------------------
    def test_reap_deletes_a_dead_row_only_after_the_retention(self, scene: Scene) -> None:
        needs_clock(scene.harness)
        scene.set_time(float(int(scene.now()) + 1))  # whole seconds: exact sums below
        a = _register(scene, "a", "pl", 1_000_000.0)
        d = _register(scene, "d", "pd", 10.0)
        ended = d.registered_at + 10.0
        scene.set_time(ended + DEAD_NODE_RETENTION)  # ended exactly the retention ago
        assert scene.db.reap_claims(scene.site).released == 0
        assert scene.row("d") is not None
        scene.set_time(ended + DEAD_NODE_RETENTION + 1.0)
        assert scene.db.reap_claims(scene.site).released == 0
        assert scene.row("d") is None
        assert scene.row("a") is not None and scene.heartbeat(a) is RENEWED

    def test_reap_keeps_a_dead_row_a_token_row_names(self, scene: Scene) -> None:
        needs_clock(scene.harness)
        a = _register(scene, "a", "pl", 1_000_000.0)
        t = _register(scene, "t", "pt", 10.0)
        view = scene.view()
        scene.commit(a, view=view, assigns=[scene.assign(view, 1, t)])
        scene.set_time(t.registered_at + 10.0 + DEAD_NODE_RETENTION + 1.0)
        assert scene.db.reap_claims(scene.site).released == 0
        assert scene.row("t") is not None, "deleted while token 1 still names it"
        scene.reassign(a, t, a)
        assert scene.db.reap_claims(scene.site).released == 0
        assert scene.row("t") is None

    def test_reap_keeps_a_dead_row_whose_fence_is_not_over(self, scene: Scene) -> None:
        needs_clock(scene.harness)
        a = _register(scene, "a", "pl", 1_000_000.0)
        _register(scene, "f", "p1", 5_000.0)
        f = _register(scene, "f", "p2", 10.0)
        assert f.fence_until == f.registered_at + 5_000.0
        scene.set_time(f.registered_at + 10.0 + DEAD_NODE_RETENTION + 1.0)
        assert scene.db.reap_claims(scene.site).released == 0
        assert scene.row("f") is not None, "deleted while its fence still runs"
        scene.set_time(just_before(f.fence_until))
        assert scene.db.reap_claims(scene.site).released == 0
        assert scene.row("f") is not None, "deleted while its fence still runs"
        scene.set_time(f.fence_until + 1.0)
        assert scene.db.reap_claims(scene.site).released == 0
        assert scene.row("f") is None
        assert scene.heartbeat(a) is RENEWED
