"""Contract: snapshots, plan commits, leadership, generations, DirectAssign and history."""

from __future__ import annotations

import pytest

from jobsync.backends.base import NODE_DEAD, HeartbeatOutcome, HistoryEntry, LockSpec
from jobsync.core.errors import ConflictError, NotLeader
from jobsync.testing.scene import (
    SHORT_LEASE,
    TOTAL_TOKENS,
    Node,
    Scene,
    just_before,
    needs_clock,
    run_threads,
)

ENTRY = HistoryEntry(
    trigger="join", nodes_before=("a",), nodes_after=("a", "b"), moved=6, unowned=0, duration_ms=1.5
)


def _even_odd(scene: Scene, a: Node, b: Node) -> None:
    """a holds the even tokens, b the odd ones."""
    scene.round_robin(a, [a, b])


class PlanContract:
    def test_read_cluster_is_one_snapshot(self, scene: Scene) -> None:
        a, b = scene.join_all("a", "b")
        _even_odd(scene, a, b)
        key = scene.key_on(0)
        lock = LockSpec(task_key=key, token=0, patterns=("b%",))
        scene.db.replace_locks(scene.site, "admin", [lock], False)
        view = scene.view()
        assert view.site == scene.info()
        assert [n.name for n in view.nodes] == ["a", "b"]
        assert view.tokens.owner == tuple("ab"[t % 2] for t in range(TOTAL_TOKENS))
        assert [(lk.task_key, lk.patterns) for lk in view.locks] == [(key, ("b%",))]
        assert view.now >= b.registered_at

    def test_a_plan_moves_tokens_and_bumps_generation_counter_and_epochs(
        self, scene: Scene
    ) -> None:
        a, b = scene.join_all("a", "b")
        view = scene.view()
        generation = scene.round_robin(a, [a, b], view=view)
        info = scene.info()
        assert generation == info.generation == view.site.generation + 1
        assert info.change_counter == view.site.change_counter + 1
        assert info.plan_basis == view.site.change_counter
        table = scene.table()
        for t in range(TOTAL_TOKENS):
            holder = (a, b)[t % 2]
            assert (table.owner[t], table.incarnation[t]) == (holder.name, holder.incarnation)
            assert table.epoch[t] == view.tokens.epoch[t] + 1
        owned = scene.owned(b)
        assert owned.tokens == tuple(range(1, TOTAL_TOKENS, 2))
        assert owned.epochs == tuple(table.epoch[t] for t in owned.tokens)
        assert owned.pending == frozenset() and owned.incoming == 0

    def test_two_plans_from_one_read_one_wins(self, scene: Scene) -> None:
        a, b = scene.join_all("a", "b")
        view = scene.view()
        scene.commit(a, view=view, assigns=[scene.assign(view, 0, b)])
        with pytest.raises(ConflictError):
            scene.commit(a, view=view, assigns=[scene.assign(view, 1, b)])
        table = scene.table()
        assert table.owner[0] == "b" and table.owner[1] is None

    def test_concurrent_plans_one_wins(self, scene: Scene) -> None:
        a, b = scene.join_all("a", "b")
        view = scene.view()
        handles = [scene.connect(f"leader-{i}") for i in range(2)]
        targets = (a, b)

        def attempt(i: int) -> str:
            try:
                scene.commit(
                    a, view=view, assigns=[scene.assign(view, 0, targets[i])], db=handles[i]
                )
            except ConflictError:
                return "lost"
            return targets[i].name

        outcomes = run_threads(2, attempt)
        assert sorted(outcomes) in (["a", "lost"], ["b", "lost"])
        winner = next(o for o in outcomes if o != "lost")
        assert scene.table().owner[0] == winner
        assert scene.info().generation == view.site.generation + 1

    def test_a_node_that_is_not_the_oldest_is_not_leader(self, scene: Scene) -> None:
        _, b = scene.join_all("a", "b")
        before = scene.info()
        view = scene.view()
        with pytest.raises(NotLeader):
            scene.commit(b, view=view, assigns=[scene.assign(view, 0, b)])
        assert scene.info() == before and scene.table().owner[0] is None

    def test_a_superseded_incarnation_of_the_leader_is_not_leader(self, scene: Scene) -> None:
        a1, _ = scene.join_all("a", "b")
        scene.join("a")
        view = scene.view()
        with pytest.raises(NotLeader):
            scene.commit(a1, view=view, assigns=[scene.assign(view, 0, a1)])
        assert scene.table() == view.tokens

    def test_leadership_passes_when_the_oldest_lease_runs_out(self, scene: Scene) -> None:
        a = scene.join("a", SHORT_LEASE)
        b = scene.join("b")
        with pytest.raises(NotLeader):
            scene.commit(b, assigns=[])
        scene.expire(a)
        view = scene.view()
        scene.commit(b, view=view, assigns=[scene.assign(view, 0, b)])
        with pytest.raises(NotLeader):
            scene.commit(a)

    def test_a_plan_that_writes_nothing_only_raises_plan_basis(self, scene: Scene) -> None:
        a = scene.join("a")
        scene.join("b")
        view = scene.view()
        generation = scene.commit(a, view=view, history=ENTRY)
        info = scene.info()
        assert generation == info.generation == view.site.generation
        assert info.change_counter == view.site.change_counter
        assert info.plan_basis == view.site.change_counter
        assert scene.db.read_history(scene.site) == ()

    def test_history_is_written_by_token_writing_plans(self, scene: Scene) -> None:
        a, b = scene.join_all("a", "b")
        view = scene.view()
        first = scene.commit(a, view=view, assigns=[scene.assign(view, 0, b)], history=ENTRY)
        scene.commit(a, history=ENTRY)  # moves nothing: no record
        view = scene.view()
        later = HistoryEntry(
            trigger="leave", nodes_before=("a", "b"), nodes_after=("a",), moved=1, unowned=0,
            duration_ms=0.5, hot=(3, 1),
        )  # fmt: skip
        second = scene.commit(a, view=view, assigns=[scene.assign(view, 1, b)], history=later)
        records = scene.db.read_history(scene.site)
        assert [(r.generation, r.leader, r.entry) for r in records] == [
            (second, "a", later),
            (first, "a", ENTRY),
        ]
        assert records[0].at >= records[1].at
        assert scene.db.read_history(scene.site, limit=1) == records[:1]

    def test_direct_assign_from_a_live_incarnation_is_refused(self, scene: Scene) -> None:
        a, b = scene.join_all("a", "b")
        _even_odd(scene, a, b)
        view = scene.view()
        with pytest.raises(ConflictError):
            scene.commit(a, view=view, assigns=[scene.assign(view, 1, a)])
        assert scene.table() == view.tokens
        assert scene.heartbeat(b) is HeartbeatOutcome.RENEWED

    def test_direct_assign_from_an_expired_incarnation_buries_it(self, scene: Scene) -> None:
        a = scene.join("a")
        b = scene.join("b", SHORT_LEASE)
        _even_odd(scene, a, b)
        key = scene.key_on(1)
        assert scene.claim(b, key) == {key}
        scene.expire(b)
        view = scene.view()
        odd = range(1, TOTAL_TOKENS, 2)
        scene.commit(a, view=view, assigns=[scene.assign(view, t, a) for t in odd])
        table = scene.table()
        assert all(
            table.owner[t] == "a" and table.epoch[t] == view.tokens.epoch[t] + 1 for t in odd
        )
        row = scene.row("b")
        assert row is not None and row.state == NODE_DEAD
        assert scene.heartbeat(b) is HeartbeatOutcome.EXPIRED
        assert key not in scene.audit()

    @pytest.mark.parametrize("in_flight", [False, True])
    def test_direct_assign_exactly_at_the_lease_end(self, scene: Scene, in_flight: bool) -> None:
        """``in_flight``: the token has a release pending, which changes nothing."""
        needs_clock(scene.harness)
        a = scene.join("a")
        b = scene.join("b", 10.0)
        _even_odd(scene, a, b)
        if in_flight:
            view = scene.view()
            scene.commit(a, view=view, revokes=[scene.revoke(view, 1, a)])
        scene.set_time(just_before(b.registered_at + 10.0))
        view = scene.view()
        with pytest.raises(ConflictError):
            scene.commit(a, view=view, assigns=[scene.assign(view, 1, a)])
        scene.set_time(b.registered_at + 10.0)
        scene.commit(a, view=view, assigns=[scene.assign(view, 1, a)])
        assert scene.table().owner[1] == "a"

    def test_direct_assign_from_an_older_incarnation_waits_for_the_fence(
        self, scene: Scene
    ) -> None:
        a = scene.join("a")
        b1 = scene.join("b", SHORT_LEASE)
        _even_odd(scene, a, b1)
        old = scene.row("b")
        b2 = scene.join("b")
        assert old is not None and b2.fence_until == old.lease_expires
        assert scene.owned(b2).incoming == TOTAL_TOKENS // 2
        view = scene.view()
        odd = range(1, TOTAL_TOKENS, 2)
        with pytest.raises(ConflictError):
            scene.commit(a, view=view, assigns=[scene.assign(view, t, b2) for t in odd])
        scene.wait_until(b2.fence_until)
        view = scene.view()
        scene.commit(a, view=view, assigns=[scene.assign(view, t, b2) for t in odd])
        owned = scene.owned(b2)
        assert owned.tokens == tuple(odd) and owned.incoming == 0
        assert scene.heartbeat(b1) is HeartbeatOutcome.SUPERSEDED

    def test_direct_assign_exactly_at_the_fence(self, scene: Scene) -> None:
        needs_clock(scene.harness)
        a = scene.join("a")
        b1 = scene.join("b", 10.0)
        _even_odd(scene, a, b1)
        b2 = scene.join("b")
        scene.set_time(just_before(b2.fence_until))
        view = scene.view()
        with pytest.raises(ConflictError):
            scene.commit(a, view=view, assigns=[scene.assign(view, 1, b2)])
        scene.set_time(b2.fence_until)
        scene.commit(a, view=view, assigns=[scene.assign(view, 1, b2)])
        assert scene.owned(b2).tokens == (1,)

    def test_a_heartbeat_that_renews_after_the_read_makes_the_commit_conflict(
        self, scene: Scene
    ) -> None:
        needs_clock(scene.harness)
        a = scene.join("a")
        b = scene.join("b", 10.0)
        _even_odd(scene, a, b)
        scene.set_time(just_before(b.registered_at + 10.0))
        view = scene.view()  # the leader plans for b's lease end ...
        assert scene.heartbeat(b) is HeartbeatOutcome.RENEWED  # ... b renews in between
        scene.set_time(b.registered_at + 10.0)
        with pytest.raises(ConflictError):
            scene.commit(a, view=view, assigns=[scene.assign(view, 1, a)])
        assert scene.table().owner[1] == "b"
        assert scene.heartbeat(b) is HeartbeatOutcome.RENEWED

    @pytest.mark.parametrize("heartbeat_first", [True, False])
    def test_a_late_heartbeat_never_wins_with_the_commit(
        self, scene: Scene, heartbeat_first: bool
    ) -> None:
        a = scene.join("a")
        b = scene.join("b", SHORT_LEASE)
        _even_odd(scene, a, b)
        scene.expire(b)
        view = scene.view()
        if heartbeat_first:
            assert scene.heartbeat(b) is HeartbeatOutcome.EXPIRED
        scene.commit(a, view=view, assigns=[scene.assign(view, 1, a)])
        assert scene.heartbeat(b) is HeartbeatOutcome.EXPIRED
        assert scene.table().owner[1] == "a"
