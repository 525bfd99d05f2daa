"""Contract: epoch-fenced claims, claim-fenced completion, release, audit and reaping."""

from __future__ import annotations

import datetime
import math
import random
import re

import pytest

from jobsync.backends.base import ClaimRequest, Reaped
from jobsync.backends.capabilities import CompletionFeed
from jobsync.core.errors import InvalidArgument, JobSyncError
from jobsync.core.hashing import canonical
from jobsync.testing.scene import DAY, SHORT_LEASE, Node, Scene, run_threads


def _pair(scene: Scene, b_lease: float | None = None) -> tuple[Node, Node]:
    """a (leader) holds the even tokens, b the odd ones."""
    a = scene.join("a")
    b = scene.join("b") if b_lease is None else scene.join("b", b_lease)
    scene.round_robin(a, [a, b])
    return a, b


class ClaimContract:
    def test_a_claim_at_the_current_epoch_is_recorded(self, scene: Scene) -> None:
        a, _ = _pair(scene)
        key = scene.key_on(0)
        assert scene.claim(a, key) == {key}
        (record,) = scene.db.read_audit(scene.site, DAY)
        epoch = scene.table().epoch[0]
        assert (record.task_key, record.date, record.node, record.incarnation) == (
            key,
            DAY,
            "a",
            a.incarnation,
        )
        assert (record.token, record.epoch, record.status) == (0, epoch, "claimed")
        assert record.claimed_at <= scene.now() and record.completed_at is None

    def test_claims_are_refused_without_the_current_epoch_for_this_incarnation(
        self, scene: Scene
    ) -> None:
        a, b = _pair(scene)
        key = scene.key_on(0)
        stale = scene.request(key, epoch=scene.table().epoch[0] - 1)
        assert scene.db.claim(scene.site, DAY, "a", a.incarnation, [stale]) == frozenset()
        assert scene.claim(b, key) == frozenset()  # b does not hold token 0
        a_again = scene.join("a")  # a newer incarnation of the same name does not hold it either
        assert scene.claim(a_again, key) == frozenset()
        assert scene.audit() == {}

    def test_a_claim_on_a_token_with_a_release_pending_is_refused(self, scene: Scene) -> None:
        a, b = _pair(scene)
        view = scene.view()
        scene.commit(a, view=view, revokes=[scene.revoke(view, 1, a)])
        assert scene.claim(b, scene.key_on(1)) == frozenset()
        other = scene.key_on(3)  # b's token without a release pending
        assert scene.claim(b, other) == {other}

    def test_a_task_is_claimed_once_per_date_until_released(self, scene: Scene) -> None:
        a, _ = _pair(scene)
        key = scene.key_on(0)
        assert scene.claim(a, key, key) == {key}  # duplicate keys count once
        # A retry by the same incarnation finds its own open claim (its first answer may
        # have been lost on the wire): claimed, not stranded, and still one row.
        assert scene.claim(a, key) == {key}
        assert scene.audit() == {key: "claimed"}
        assert scene.db.complete(scene.site, DAY, a.incarnation, [key]) == {key}
        assert scene.claim(a, key) == frozenset()  # done
        other_day = DAY + datetime.timedelta(days=1)
        assert scene.claim(a, key, date=other_day) == {key}
        assert scene.audit() == {key: "done"} and scene.audit(other_day) == {key: "claimed"}

    def test_one_and_the_string_one_are_one_task(self, scene: Scene) -> None:
        a, b = _pair(scene)
        holder = (a, b)[scene.token_of(canonical(1)) % 2]
        assert scene.claim(holder, canonical(1)) == {"1"}
        assert scene.db.complete(scene.site, DAY, holder.incarnation, ["1"]) == {"1"}
        assert scene.claim(holder, "1") == frozenset()  # one task: done already

    def test_completion_is_fenced_by_the_claim_across_a_hand_off(self, scene: Scene) -> None:
        a, b = _pair(scene)
        key = scene.key_on(1)
        assert scene.claim(b, key) == {key}
        scene.hand_off(a, 1, a)
        assert 1 in scene.tokens_of(a)
        assert scene.claim(a, key) == frozenset()  # b's claim is still open
        assert scene.db.complete(scene.site, DAY, b.incarnation, [key]) == {key}
        assert scene.claim(a, key) == frozenset()  # and now it is done
        (record,) = scene.db.read_audit(scene.site, DAY)
        assert (record.node, record.status) == ("b", "done") and record.completed_at is not None

    def test_the_new_owner_claims_once_the_old_claim_is_released(self, scene: Scene) -> None:
        a, b = _pair(scene)
        key = scene.key_on(1)
        assert scene.claim(b, key) == {key}
        scene.hand_off(a, 1, a)
        assert scene.db.release(scene.site, DAY, b.incarnation, [key]) == {key}
        assert scene.claim(a, key) == {key}

    def test_the_new_owner_claims_once_the_claimer_died(self, scene: Scene) -> None:
        a, b = _pair(scene, SHORT_LEASE)
        key = scene.key_on(1)
        assert scene.claim(b, key) == {key}
        scene.expire(b)
        view = scene.view()
        scene.commit(a, view=view, assigns=[scene.assign(view, 1, a)])
        assert scene.claim(a, key) == {key}

    def test_complete_and_release_touch_only_this_incarnations_open_claims(
        self, scene: Scene
    ) -> None:
        a, b = _pair(scene)
        mine, theirs = scene.key_on(0), scene.key_on(1)
        assert scene.claim(a, mine) == {mine} and scene.claim(b, theirs) == {theirs}
        db, site = scene.db, scene.site
        assert db.complete(site, DAY, a.incarnation, [theirs, "never-claimed"]) == frozenset()
        assert db.release(site, DAY, a.incarnation, [theirs]) == frozenset()
        assert (
            db.complete(site, DAY + datetime.timedelta(days=1), a.incarnation, [mine])
            == frozenset()
        )
        assert db.complete(site, DAY, a.incarnation, [mine]) == {mine}
        assert db.release(site, DAY, a.incarnation, [mine]) == frozenset()  # done is not open
        assert db.complete(site, DAY, a.incarnation, [mine]) == frozenset()  # done once
        assert scene.audit() == {mine: "done", theirs: "claimed"}

    def test_read_audit_filters_by_node_and_orders_by_key(self, scene: Scene) -> None:
        a, b = _pair(scene)
        keys_a = sorted({scene.key_on(0, p) for p in ("x", "y", "z")})
        key_b = scene.key_on(1)
        assert scene.claim(a, *reversed(keys_a)) == set(keys_a)
        assert scene.claim(b, key_b) == {key_b}
        assert [r.task_key for r in scene.db.read_audit(scene.site, DAY, "a")] == keys_a
        assert [r.task_key for r in scene.db.read_audit(scene.site, DAY, "b")] == [key_b]
        assert [r.task_key for r in scene.db.read_audit(scene.site, DAY)] == sorted(
            [*keys_a, key_b]
        )

    def test_completions_are_read_in_bounded_batches_in_the_order_they_finished(
        self, scene: Scene
    ) -> None:
        if not isinstance(scene.db, CompletionFeed):
            return  # an optional capability
        a, b = _pair(scene)
        keys = [scene.key_on(t, p) for p in ("x", "y") for t in (0, 1)]
        assert scene.claim(a, keys[0], keys[2]) == {keys[0], keys[2]}
        assert scene.claim(b, keys[1], keys[3]) == {keys[1], keys[3]}
        open_ = scene.key_on(0, "open")
        assert scene.claim(a, open_) == {open_}  # never completed: never read
        finished = []
        for key, node in zip(keys, (a, b, a, b), strict=True):
            assert scene.db.complete(scene.site, DAY, node.incarnation, [key]) == {key}
            finished.append(scene.token_of(key))
            scene.wait_until(scene.now() + 0.01)
        every = scene.db.read_completions(scene.site, 0.0, 100)
        assert [c.token for c in every] == finished
        assert all(c.claimed_at <= c.completed_at <= scene.now() for c in every)
        first = scene.db.read_completions(scene.site, 0.0, 3)
        assert first == every[:3]
        rest = scene.db.read_completions(scene.site, first[-1].completed_at, 3)
        assert rest == every[3:]
        assert scene.db.read_completions(scene.site, every[-1].completed_at, 3) == ()
        for bad in ((math.nan, 3), (0.0, 0), (0.0, 100_001), (0.0, True)):
            with pytest.raises(InvalidArgument):
                scene.db.read_completions(scene.site, *bad)
        with pytest.raises(JobSyncError):
            scene.db.read_completions("no-such-site", 0.0, 3)

    def test_a_completion_keeps_its_explicit_cost(self, scene: Scene) -> None:
        if not isinstance(scene.db, CompletionFeed):
            return  # an optional capability
        a, _ = _pair(scene)
        priced, timed, bad = (scene.key_on(0, p) for p in ("priced", "timed", "bad"))
        assert scene.claim(a, priced, timed, bad) == {priced, timed, bad}
        assert scene.db.complete(scene.site, DAY, a.incarnation, [priced], cost=2.5) == {priced}
        scene.wait_until(scene.now() + 0.01)
        assert scene.db.complete(scene.site, DAY, a.incarnation, [timed]) == {timed}
        for value in (0, -1.0, math.nan, math.inf, True, "3"):
            with pytest.raises(InvalidArgument, match=re.escape(repr(value))):
                scene.db.complete(scene.site, DAY, a.incarnation, [bad], cost=value)  # type: ignore[arg-type]
        assert scene.audit()[bad] == "claimed"  # nothing written
        costs = [c.cost for c in scene.db.read_completions(scene.site, 0.0, 10)]
        assert costs == [2.5, None]

    def test_reap_releases_open_claims_of_dead_incarnations_only(self, scene: Scene) -> None:
        a, b = _pair(scene, SHORT_LEASE)
        done, open_, alive = scene.key_on(1, "d"), scene.key_on(1, "o"), scene.key_on(0)
        assert scene.claim(b, done, open_) == {done, open_} and scene.claim(a, alive) == {alive}
        assert scene.db.complete(scene.site, DAY, b.incarnation, [done]) == {done}
        assert scene.db.reap_claims(scene.site).released == 0
        scene.expire(b)
        assert scene.db.reap_claims(scene.site) == Reaped(released=1, skipped=0)
        assert scene.audit() == {done: "done", alive: "claimed"}
        assert scene.db.reap_claims(scene.site).released == 0

    def test_reap_waits_for_a_superseded_incarnations_fence(self, scene: Scene) -> None:
        _, b1 = _pair(scene, SHORT_LEASE)
        key = scene.key_on(1)
        assert scene.claim(b1, key) == {key}
        b2 = scene.join("b")
        assert scene.db.reap_claims(scene.site).released == 0
        scene.wait_until(b2.fence_until)
        assert scene.db.reap_claims(scene.site).released == 1
        assert scene.audit() == {}

    def test_concurrent_claims_take_each_task_once(self, scene: Scene) -> None:
        a = scene.join("a")
        scene.round_robin(a, [a])
        keys = [f"job-{i}" for i in range(40)]
        epochs = scene.table().epoch
        requests = [
            ClaimRequest(task_key=k, token=scene.token_of(k), epoch=epochs[scene.token_of(k)])
            for k in keys
        ]
        handles = [scene.connect(f"worker-{i}") for i in range(6)]

        def claim_all(i: int) -> frozenset[str]:
            mine = random.Random(i).sample(requests, len(requests))
            got: set[str] = set()
            for start in range(0, len(mine), 5):
                got |= handles[i].claim(
                    scene.site, DAY, "a", a.incarnation, mine[start : start + 5]
                )
            return frozenset(got)

        results = run_threads(len(handles), claim_all)
        # One incarnation claiming through many handles: every handle is told "yours"
        # (a claim is idempotent for its incarnation), but each task has one row.
        assert scene.audit() == dict.fromkeys(keys, "claimed")
        union: set[str] = set()
        for got in results:
            union |= got
        assert union == set(keys)
        assert len(scene.db.read_audit(scene.site, DAY)) == len(keys)
