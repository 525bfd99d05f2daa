"""Contract: sites, registration, takeover, heartbeats, leaving and deregistration."""

from __future__ import annotations

import pytest

from jobsync.backends.base import NODE_ACTIVE, NODE_DEAD, NODE_LEAVING, HeartbeatOutcome, SiteInfo
from jobsync.core import rules
from jobsync.core.errors import ConfigMismatch, ConflictError, InvalidArgument
from jobsync.testing.scene import (
    LONG_LEASE,
    SHORT_LEASE,
    TOTAL_TOKENS,
    ContractHarness,
    Scene,
    just_before,
    needs_clock,
    run_threads,
    unique_site,
)

RENEWED, EXPIRED, SUPERSEDED = (
    HeartbeatOutcome.RENEWED,
    HeartbeatOutcome.EXPIRED,
    HeartbeatOutcome.SUPERSEDED,
)


class SiteContract:
    def test_new_site_has_every_token_row_unowned_at_epoch_zero(self, scene: Scene) -> None:
        info = scene.created
        assert (info.site, info.total_tokens, info.hash_function) == (
            scene.site,
            TOTAL_TOKENS,
            "xxh3",
        )
        table = scene.table()
        assert len(table) == TOTAL_TOKENS
        assert set(table.owner) == {None} and set(table.incarnation) == {None}
        assert set(table.epoch) == {0}
        assert set(table.pending_deadline) == {None}

    def test_ensure_site_again_returns_the_stored_site(self, scene: Scene) -> None:
        again = scene.connect().ensure_site(scene.site, TOTAL_TOKENS, "xxh3")
        assert again == scene.created
        assert scene.db.site_info(scene.site) == scene.created

    @pytest.mark.parametrize(("total", "hash_function"), [(13, "xxh3"), (TOTAL_TOKENS, "md5")])
    def test_ensure_site_with_other_constants_is_a_config_mismatch(
        self, scene: Scene, total: int, hash_function: str
    ) -> None:
        with pytest.raises(ConfigMismatch) as caught:
            scene.db.ensure_site(scene.site, total, hash_function)
        message = str(caught.value)
        assert str(TOTAL_TOKENS) in message and str(total) in message
        assert "xxh3" in message and hash_function in message
        assert scene.db.site_info(scene.site) == scene.created

    def test_concurrent_ensure_site_makes_one_site(self, harness: ContractHarness) -> None:
        site = unique_site()
        handles = [harness.connect(f"racer-{i}") for i in range(8)]
        try:
            infos = run_threads(8, lambda i: handles[i].ensure_site(site, 16, "sha256"))
            assert len({(i.created_at, i.total_tokens, i.hash_function) for i in infos}) == 1
            assert len(handles[0].read_cluster(site).tokens) == 16
        finally:
            for handle in handles:
                handle.close()

    def test_site_info_of_an_unknown_site_is_none(self, scene: Scene) -> None:
        assert scene.db.site_info(unique_site()) is None

    def test_reset_site_is_refused_while_a_node_is_live(self, scene: Scene) -> None:
        scene.join("a")
        with pytest.raises(ConflictError):
            scene.db.reset_site(scene.site, 20, "md5")
        info = scene.info()
        assert (info.total_tokens, info.hash_function) == (TOTAL_TOKENS, "xxh3")

    def test_reset_site_rebuilds_rows_above_every_epoch(self, scene: Scene) -> None:
        a = scene.join("a", SHORT_LEASE)
        scene.round_robin(a, [a])
        before, top = scene.info(), max(scene.table().epoch)
        scene.expire(a)
        info = scene.db.reset_site(scene.site, 20, "md5")
        assert (info.total_tokens, info.hash_function) == (20, "md5")
        assert info.generation >= before.generation and info.change_counter > before.change_counter
        table = scene.table()
        assert len(table) == 20 and set(table.owner) == {None}
        assert min(table.epoch) > top
        assert scene.db.ensure_site(scene.site, 20, "md5").total_tokens == 20
        with pytest.raises(ConfigMismatch):
            scene.db.ensure_site(scene.site, TOTAL_TOKENS, "xxh3")


class MembershipContract:
    def test_register_gives_increasing_incarnations_and_bumps_the_counter(
        self, scene: Scene
    ) -> None:
        start = scene.counter()
        a, b = scene.join_all("a", "b")
        assert b.incarnation > a.incarnation
        assert (a.change_counter, b.change_counter) == (start + 1, start + 2)
        assert a.fence_until == 0.0 and b.fence_until == 0.0
        assert scene.counter() == start + 2
        now, rows = scene.db.read_nodes(scene.site)
        assert [r.name for r in rows] == ["a", "b"] and now >= b.registered_at
        for row, node in zip(rows, (a, b), strict=True):
            assert (row.incarnation, row.state, row.lease_timeout) == (
                node.incarnation,
                NODE_ACTIVE,
                LONG_LEASE,
            )
            assert row.registered_at == row.last_heartbeat == node.registered_at

    def test_heartbeat_renews_without_bumping_the_counter(self, scene: Scene) -> None:
        a, _ = scene.join_all("a", "b")
        counter = scene.counter()
        beat = scene.db.heartbeat(scene.site, a.name, a.incarnation)
        assert beat.outcome is RENEWED
        assert beat.change_counter == counter == scene.counter()
        assert beat.plan_basis == scene.info().plan_basis
        row_a, row_b = scene.row("a"), scene.row("b")
        assert row_a is not None and row_b is not None
        assert row_a.last_heartbeat == beat.now
        # an ordinary heartbeat asks nothing of the other rows
        assert (beat.earliest_other_expiry, beat.live_others, beat.watched_expiry) == (
            None,
            None,
            None,
        )
        lead = scene.db.heartbeat(scene.site, a.name, a.incarnation, leading=True)
        assert lead.earliest_other_expiry == row_b.lease_expires

    def test_earliest_other_expiry_counts_only_other_live_nodes(self, scene: Scene) -> None:
        a = scene.join("a")
        beat = scene.db.heartbeat(scene.site, "a", a.incarnation, leading=True)
        assert beat.earliest_other_expiry is None
        b = scene.join("b", SHORT_LEASE)
        scene.expire(b)
        beat = scene.db.heartbeat(scene.site, "a", a.incarnation, leading=True)
        assert beat.earliest_other_expiry is None

    def test_live_others_counts_the_other_live_nodes(self, scene: Scene) -> None:
        a = scene.join("a")
        beat = scene.db.heartbeat(scene.site, "a", a.incarnation, leading=True)
        assert beat.live_others in (0, None)
        scene.join("b")
        b2 = scene.join("c", SHORT_LEASE)
        assert scene.db.heartbeat(scene.site, "a", a.incarnation).live_others is None
        beat = scene.db.heartbeat(scene.site, "a", a.incarnation, leading=True)
        if beat.live_others is None:
            return  # optional: the runtime then falls back to timers
        assert beat.live_others == 2
        scene.expire(b2)  # a death bumps no counter; the count shows it
        beat = scene.db.heartbeat(scene.site, "a", a.incarnation, leading=True)
        assert beat.live_others == 1

    def test_watched_expiry_is_the_watched_nodes_lease_end_while_it_is_live(
        self, scene: Scene
    ) -> None:
        a, _ = scene.join_all("a", "b")
        c = scene.join("c", SHORT_LEASE)
        row_b = scene.row("b")
        assert row_b is not None

        def watched(name: str) -> float | None:
            return scene.db.heartbeat(scene.site, "a", a.incarnation, watch=name).watched_expiry

        assert watched("b") == row_b.lease_expires
        assert watched("a") is None  # itself: nothing to watch
        assert watched("nobody") is None
        row_c = scene.row("c")
        assert row_c is not None and watched("c") == row_c.lease_expires
        scene.expire(c)  # a death bumps no counter; the watcher sees it
        assert watched("c") is None
        assert scene.heartbeat(a) is RENEWED

    @pytest.mark.parametrize(("ask", "named"), [({"watch": ""}, "''"), ({"leading": 1}, "1")])
    def test_heartbeat_refuses_a_bad_question(
        self, scene: Scene, ask: dict[str, object], named: str
    ) -> None:
        a = scene.join("a")
        with pytest.raises(InvalidArgument, match=named):
            scene.db.heartbeat(scene.site, "a", a.incarnation, **ask)  # type: ignore[arg-type]

    def test_heartbeat_after_the_lease_ran_out_is_expired_for_good(self, scene: Scene) -> None:
        a = scene.join("a", SHORT_LEASE)
        scene.expire(a)
        assert scene.heartbeat(a) is EXPIRED
        row = scene.row("a")
        assert row is not None and row.state == NODE_DEAD
        assert scene.heartbeat(a) is EXPIRED

    def test_heartbeat_exactly_one_lease_after_the_last_is_expired(self, scene: Scene) -> None:
        needs_clock(scene.harness)
        a = scene.join("a", 10.0)
        scene.set_time(a.registered_at + 10.0)
        assert scene.heartbeat(a) is EXPIRED

    def test_heartbeat_one_instant_before_the_lease_end_renews(self, scene: Scene) -> None:
        needs_clock(scene.harness)
        a = scene.join("a", 10.0)
        instant = just_before(a.registered_at + 10.0)
        scene.set_time(instant)
        assert scene.heartbeat(a) is RENEWED
        row = scene.row("a")
        assert row is not None and row.last_heartbeat == instant
        scene.set_time(instant + 10.0)
        assert scene.heartbeat(a) is EXPIRED

    def test_heartbeat_of_an_unknown_name_is_expired_and_writes_nothing(self, scene: Scene) -> None:
        a = scene.join("a")
        assert scene.db.heartbeat(scene.site, "ghost", a.incarnation).outcome is EXPIRED
        assert [r.name for r in scene.db.read_nodes(scene.site)[1]] == ["a"]

    def test_takeover_supersedes_the_older_incarnation(self, scene: Scene) -> None:
        a1 = scene.join("a")
        old = scene.row("a")
        a2 = scene.join("a")
        assert a2.incarnation > a1.incarnation
        assert old is not None and a2.fence_until == old.lease_expires
        assert scene.heartbeat(a1) is SUPERSEDED
        assert scene.heartbeat(a2) is RENEWED
        rows = scene.db.read_nodes(scene.site)[1]
        assert [(r.name, r.incarnation, r.fence_until) for r in rows] == [
            ("a", a2.incarnation, a2.fence_until)
        ]

    def test_takeover_of_a_dead_incarnation_has_no_fence(self, scene: Scene) -> None:
        a1 = scene.join("a", SHORT_LEASE)
        scene.expire(a1)
        assert scene.heartbeat(a1) is EXPIRED
        assert scene.join("a").fence_until == 0.0

    def test_takeover_keeps_the_later_fence(self, scene: Scene) -> None:
        scene.join("a", LONG_LEASE)
        first = scene.row("a")
        a2 = scene.join("a", SHORT_LEASE)
        a3 = scene.join("a", SHORT_LEASE)  # a2's lease ends before a1's: a1's end stays
        assert first is not None and a3.fence_until == a2.fence_until == first.lease_expires

    def test_mark_leaving_keeps_the_node_live(self, scene: Scene) -> None:
        a = scene.join("a")
        counter = scene.counter()
        assert scene.db.mark_leaving(scene.site, "a", a.incarnation) is True
        row = scene.row("a")
        assert row is not None and row.state == NODE_LEAVING
        assert scene.counter() > counter
        assert scene.heartbeat(a) is RENEWED

    def test_mark_leaving_refuses_a_stale_or_expired_incarnation(self, scene: Scene) -> None:
        a1 = scene.join("a")
        a2 = scene.join("a")
        b = scene.join("b", SHORT_LEASE)
        scene.expire(b)
        counter = scene.counter()
        assert scene.db.mark_leaving(scene.site, "a", a1.incarnation) is False
        assert scene.db.mark_leaving(scene.site, "b", b.incarnation) is False
        row = scene.row("a")
        assert row is not None and (row.incarnation, row.state) == (a2.incarnation, NODE_ACTIVE)
        assert scene.counter() == counter

    def test_deregister_frees_tokens_and_releases_claims(self, scene: Scene) -> None:
        a, b = scene.join_all("a", "b")
        scene.round_robin(a, [a, b])
        key = scene.key_on(1)
        assert scene.claim(b, key) == {key}
        view = scene.view()
        scene.commit(a, view=view, revokes=[scene.revoke(view, 3, a)])
        before, counter = scene.table(), scene.counter()
        assert scene.db.deregister(scene.site, "b", b.incarnation) is True
        after = scene.table()
        for t in range(TOTAL_TOKENS):
            if before.owner[t] == "b":
                assert (after.owner[t], after.incarnation[t]) == (None, None)
                assert after.epoch[t] == before.epoch[t] + 1 and not after.is_pending(t)
            else:
                assert after.owner[t] == "a" and after.epoch[t] == before.epoch[t]
        assert scene.row("b") is None
        assert key not in scene.audit()
        assert scene.counter() > counter

    def test_deregister_of_another_incarnation_writes_nothing(self, scene: Scene) -> None:
        a1 = scene.join("a")
        a2 = scene.join("a")
        counter = scene.counter()
        assert scene.db.deregister(scene.site, "a", a1.incarnation) is False
        row = scene.row("a")
        assert row is not None and row.incarnation == a2.incarnation
        assert scene.counter() == counter

    def test_read_nodes_lists_the_oldest_first(self, scene: Scene) -> None:
        scene.join_all("a", "b", "c")
        scene.join("b")  # a takeover registers anew, so "b" becomes the youngest
        names = [r.name for r in scene.db.read_nodes(scene.site)[1]]
        if scene.harness.controls_clock:
            assert names == ["a", "b", "c"]  # one instant: the name decides
        else:
            assert names == ["a", "c", "b"]

    def test_glance_reads_its_own_row_and_the_leader(self, scene: Scene) -> None:
        a, b, c = scene.join_all("a", "b", "c")
        glance = scene.db.glance(scene.site, "c")
        now, rows = scene.db.read_nodes(scene.site)
        assert glance.own == scene.row("c") and glance.own is not None
        assert glance.own.incarnation == c.incarnation
        assert glance.leader == rules.oldest_live(rows, now) and glance.leader is not None
        assert glance.leader.incarnation == a.incarnation
        assert glance.nodes == (glance.leader, glance.own)
        alone = scene.db.glance(scene.site, "a")
        assert alone.own == alone.leader and alone.nodes == (alone.own,)
        assert scene.db.glance(scene.site, "nobody").own is None
        assert b.incarnation != a.incarnation

    def test_glance_steps_over_rows_that_are_not_live(self, scene: Scene) -> None:
        a = scene.join("a", SHORT_LEASE)
        b = scene.join("b", SHORT_LEASE)
        c = scene.join("c")
        assert scene.db.deregister(scene.site, "a", a.incarnation)
        scene.expire(b)  # b's lease ran out: its row stays, not live
        glance = scene.db.glance(scene.site, "c")
        now, rows = scene.db.read_nodes(scene.site)
        assert [r.name for r in rows] == ["b", "c"]
        assert glance.leader == rules.oldest_live(rows, now) == glance.own
        assert glance.own is not None and glance.own.incarnation == c.incarnation

    def test_glance_refuses_bad_names_and_unknown_sites(self, scene: Scene) -> None:
        scene.join("a")
        with pytest.raises(InvalidArgument, match="no-such-site"):
            scene.db.glance("no-such-site", "a")
        with pytest.raises(InvalidArgument):
            scene.db.glance(scene.site, "")
        with pytest.raises(InvalidArgument):
            scene.db.glance(scene.site, 7)  # type: ignore[arg-type]


def site_counters(info: SiteInfo) -> tuple[int, int, int]:
    return (info.generation, info.change_counter, info.plan_basis)
