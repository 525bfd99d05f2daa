"""Contract: revoke, acknowledge, take an expired releaser's token by DirectAssign, evict
overdue releasers."""

from __future__ import annotations

import pytest

from jobsync.backends.base import (
    NODE_ACTIVE,
    NODE_DEAD,
    NODE_EVICTED,
    HeartbeatOutcome,
    TokenTable,
)
from jobsync.core.errors import ConflictError, NotLeader
from jobsync.testing.scene import (
    LONG_LEASE,
    SHORT_LEASE,
    Node,
    Scene,
    just_before,
    needs_clock,
)


def _three(scene: Scene, b_lease: float = LONG_LEASE) -> tuple[Node, Node, Node]:
    """a (leader) holds the even tokens, b the odd ones, c nothing."""
    a = scene.join("a")
    b = scene.join("b", b_lease)
    c = scene.join("c")
    scene.round_robin(a, [a, b])
    return a, b, c


def _holder(table: TokenTable, token: int) -> tuple[str | None, int | None, int]:
    """Who holds ``token``'s row, and at which epoch."""
    return table.owner[token], table.incarnation[token], table.epoch[token]


def _revoke(scene: Scene, leader: Node, token: int, to: Node | str | None, ack: float) -> None:
    view = scene.view()
    scene.commit(leader, view=view, revokes=[scene.revoke(view, token, to)], ack_timeout=ack)


def _deadline(scene: Scene, leader: Node, to: Node, ack: float) -> float:
    """Revoke token 1 (b's) to ``to``; the deadline of that release."""
    _revoke(scene, leader, 1, to, ack)
    deadline = scene.table().pending_deadline[1]
    assert deadline is not None
    return deadline


class HandoffContract:
    def test_a_revoke_records_a_pending_release(self, scene: Scene) -> None:
        a, b, c = _three(scene)
        view = scene.view()
        scene.commit(a, view=view, revokes=[scene.revoke(view, 1, c)], ack_timeout=30.0)
        later = scene.now()
        table = scene.table()
        row = (*_holder(table, 1), table.pending_to[1])
        assert row == ("b", b.incarnation, view.tokens.epoch[1], "c")
        deadline = table.pending_deadline[1]
        assert deadline is not None and view.now + 30.0 <= deadline <= later + 30.0
        owned = scene.owned(b)
        assert 1 in owned.tokens and owned.pending == {1}
        assert scene.owned(c).incoming == 1
        assert scene.claim(b, scene.key_on(1)) == frozenset()

    def test_later_plans_only_change_the_destination(self, scene: Scene) -> None:
        a, _, c = _three(scene)
        _revoke(scene, a, 1, c, 30.0)
        first = scene.table()
        scene.wait_until(scene.now() + 0.05)
        for destination in (a, "b", None):  # another node, the releaser itself, unowned
            _revoke(scene, a, 1, destination, 100.0)
            table = scene.table()
            assert table.pending_to[1] == (
                destination.name if isinstance(destination, Node) else destination
            )
            assert table.pending_deadline[1] == first.pending_deadline[1]
            assert _holder(table, 1) == _holder(first, 1)
        _revoke(scene, a, 2, c, 30.0)  # a plan about other rows leaves the release alone
        table = scene.table()
        assert (
            table.pending_to[1] is None and table.pending_deadline[1] == first.pending_deadline[1]
        )

    def test_a_live_releasers_release_cannot_be_cleared_by_a_plan(self, scene: Scene) -> None:
        a, _, c = _three(scene)
        _revoke(scene, a, 1, c, 30.0)
        view = scene.view()
        with pytest.raises(ConflictError):
            scene.commit(a, view=view, assigns=[scene.assign(view, 1, c)])
        assert scene.table() == view.tokens

    def test_ack_hands_the_token_to_the_destinations_current_incarnation(
        self, scene: Scene
    ) -> None:
        a, b, _ = _three(scene)
        _revoke(scene, a, 1, "c", 30.0)
        epoch = scene.table().epoch[1]
        c2 = scene.join("c")
        counter = scene.counter()
        assert scene.db.ack_releases(scene.site, "b", b.incarnation, [(1, epoch)]) == {1}
        table = scene.table()
        assert _holder(table, 1) == ("c", c2.incarnation, epoch + 1)
        assert not table.is_pending(1)
        assert scene.counter() > counter
        assert scene.owned(c2).tokens == (1,) and 1 not in scene.tokens_of(b)

    def test_an_ack_between_a_plans_read_and_its_commit_makes_it_conflict(
        self, scene: Scene
    ) -> None:
        a, b, c = _three(scene)
        _revoke(scene, a, 1, c, 30.0)
        view = scene.view()
        acked = scene.db.ack_releases(scene.site, "b", b.incarnation, [(1, view.tokens.epoch[1])])
        assert acked == {1}
        moved = scene.table()
        revokes = [scene.revoke(view, 3, c), scene.revoke(view, 1, a)]  # 1 changed since the read
        with pytest.raises(ConflictError):
            scene.commit(a, view=view, revokes=revokes)
        assert scene.table() == moved and not moved.is_pending(3)

    def test_ack_skips_pairs_that_do_not_match(self, scene: Scene) -> None:
        a, b, c = _three(scene)
        _revoke(scene, a, 1, c, 30.0)
        before, counter = scene.table(), scene.counter()
        wrong = [(1, before.epoch[1] + 1), (3, before.epoch[3]), (0, before.epoch[0])]
        assert scene.db.ack_releases(scene.site, "b", b.incarnation, wrong) == frozenset()
        assert (
            scene.db.ack_releases(scene.site, "a", a.incarnation, [(1, before.epoch[1])])
            == frozenset()
        )
        assert scene.table() == before and scene.counter() == counter

    def test_ack_to_a_destination_that_is_not_live_leaves_the_token_unowned(
        self, scene: Scene
    ) -> None:
        a, b, _ = _three(scene)
        c = scene.join("d", SHORT_LEASE)
        view = scene.view()
        revokes = [scene.revoke(view, 1, c), scene.revoke(view, 3, None)]
        scene.commit(a, view=view, revokes=revokes)
        scene.expire(c)
        pairs = [(1, view.tokens.epoch[1]), (3, view.tokens.epoch[3])]
        assert scene.db.ack_releases(scene.site, "b", b.incarnation, pairs) == {1, 3}
        table = scene.table()
        for t in (1, 3):
            assert _holder(table, t) == (None, None, view.tokens.epoch[t] + 1)
            assert not table.is_pending(t)

    def test_a_release_back_to_the_releaser_returns_at_a_new_epoch(self, scene: Scene) -> None:
        a, b, _ = _three(scene)
        _revoke(scene, a, 1, b, 30.0)
        epoch = scene.table().epoch[1]
        assert scene.db.ack_releases(scene.site, "b", b.incarnation, [(1, epoch)]) == {1}
        table = scene.table()
        assert _holder(table, 1) == ("b", b.incarnation, epoch + 1)
        key = scene.key_on(1)
        assert scene.claim(b, key) == {key}

    def test_an_expired_releasers_token_moves_without_its_acknowledgement(
        self, scene: Scene
    ) -> None:
        a, b, c = _three(scene, SHORT_LEASE)
        key = scene.key_on(1)
        assert scene.claim(b, key) == {key}
        _revoke(scene, a, 1, c, LONG_LEASE)
        view = scene.view()
        epoch = view.tokens.epoch[1]
        to_c = [scene.assign(view, 1, c)]  # where the pending release was headed
        with pytest.raises(ConflictError):  # b is live: only its acknowledgement moves it
            scene.commit(a, view=view, assigns=to_c)
        scene.expire(b)
        counter = scene.counter()
        scene.commit(a, view=view, assigns=to_c)
        table = scene.table()
        assert _holder(table, 1) == ("c", c.incarnation, epoch + 1)
        assert not table.is_pending(1)
        row = scene.row("b")
        assert row is not None and row.state == NODE_DEAD
        assert key not in scene.audit()
        assert scene.counter() > counter
        with pytest.raises(ConflictError):  # the same plan again writes nothing
            scene.commit(a, view=view, assigns=to_c)
        assert scene.table() == table

    def test_eviction_at_the_deadline_keeps_tokens_until_the_lease_ends(self, scene: Scene) -> None:
        a, b, c = _three(scene)
        deadline = _deadline(scene, a, c, SHORT_LEASE)
        scene.wait_until(deadline)
        counter = scene.counter()
        assert scene.db.evict_overdue(scene.site, "a", a.incarnation) == ("b",)
        row = scene.row("b")
        assert row is not None and (row.incarnation, row.state) == (b.incarnation, NODE_EVICTED)
        assert scene.counter() > counter
        assert scene.heartbeat(b) is HeartbeatOutcome.EXPIRED
        assert scene.db.evict_overdue(scene.site, "a", a.incarnation) == ()
        assert scene.table().owner[1] == "b"
        view = scene.view()
        for token, to in ((1, c), (3, a)):  # the token in flight, and one it just holds
            with pytest.raises(ConflictError):
                scene.commit(a, view=view, assigns=[scene.assign(view, token, to)])
        assert scene.table() == view.tokens

    def test_no_eviction_one_instant_before_the_deadline(self, scene: Scene) -> None:
        needs_clock(scene.harness)
        a, _, c = _three(scene)
        deadline = _deadline(scene, a, c, 10.0)
        scene.set_time(just_before(deadline))
        assert scene.db.evict_overdue(scene.site, "a", a.incarnation) == ()
        scene.set_time(deadline)
        assert scene.db.evict_overdue(scene.site, "a", a.incarnation) == ("b",)

    def test_evict_overdue_is_for_the_leader_only(self, scene: Scene) -> None:
        a, _, c = _three(scene)
        deadline = _deadline(scene, a, c, SHORT_LEASE)
        scene.wait_until(deadline)
        with pytest.raises(NotLeader):
            scene.db.evict_overdue(scene.site, "c", c.incarnation)
        row = scene.row("b")
        assert row is not None and row.state == NODE_ACTIVE

    def test_an_evicted_releasers_tokens_move_once_its_lease_runs_out(self, scene: Scene) -> None:
        a, b, c = _three(scene, 2 * SHORT_LEASE)
        deadline = _deadline(scene, a, c, SHORT_LEASE / 2)
        scene.wait_until(deadline)
        assert scene.db.evict_overdue(scene.site, "a", a.incarnation) == ("b",)
        scene.expire(b)
        view = scene.view()
        scene.commit(a, view=view, assigns=[scene.assign(view, 1, c), scene.assign(view, 3, a)])
        table = scene.table()
        assert (table.owner[1], table.owner[3]) == ("c", "a")
