"""The protocol's rules (jobsync.core.rules), each at its boundaries."""

from __future__ import annotations

import math
from array import array

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobsync.core import rules
from jobsync.core.errors import ConflictError, NodeNameConflict, NotLeader
from jobsync.core.model import (
    DEAD_NODE_RETENTION,
    DirectAssign,
    HeartbeatOutcome,
    Joining,
    NodeRecord,
    PlanCommit,
    Revoke,
    TokenTable,
)
from jobsync.core.rules import Hold

NOW = 1_000.0


def row(name: str = "a", inc: int = 1, *, beat: float = NOW, lease: float = 10.0, **kw: object):
    fields: dict[str, object] = {
        "name": name,
        "incarnation": inc,
        "registered_at": beat - 1,
        "last_heartbeat": beat,
        "lease_timeout": lease,
        "state": "active",
    }
    fields.update(kw)
    return NodeRecord(**fields)  # type: ignore[arg-type]


def before(t: float) -> float:
    return math.nextafter(t, -math.inf)


def test_live_is_strict_at_the_lease_end_and_needs_a_running_state() -> None:
    r = row(beat=NOW, lease=10.0)
    assert rules.is_live(r, before(NOW + 10.0))
    assert not rules.is_live(r, NOW + 10.0)
    assert rules.is_live(attrs.evolve(r, state="leaving"), NOW)
    assert not rules.is_live(attrs.evolve(r, state="evicted"), NOW)
    assert not rules.is_live(attrs.evolve(r, state="dead"), NOW)


def test_the_leader_is_the_oldest_live_node_then_the_name() -> None:
    a, b = row("a", 1, registered_at=5.0), row("b", 2, registered_at=5.0)
    old_dead = row("c", 3, registered_at=1.0, state="dead")
    assert rules.oldest_live([b, old_dead, a], NOW) == a
    assert rules.oldest_live([old_dead], NOW) is None


def test_heartbeat_outcomes() -> None:
    r = row(beat=NOW, lease=10.0)
    outcome, renewed = rules.heartbeat(r, 1, before(NOW + 10.0))
    assert outcome is HeartbeatOutcome.RENEWED and renewed == attrs.evolve(
        r, last_heartbeat=before(NOW + 10.0)
    )
    outcome, dead = rules.heartbeat(r, 1, NOW + 10.0)  # exactly one lease: expired, and final
    assert outcome is HeartbeatOutcome.EXPIRED and dead is not None and dead.state == "dead"
    assert rules.heartbeat(dead, 1, NOW)[0] is HeartbeatOutcome.EXPIRED
    assert rules.heartbeat(r, 0, NOW)[0] is HeartbeatOutcome.SUPERSEDED
    assert rules.heartbeat(None, 1, NOW) == (HeartbeatOutcome.EXPIRED, None)
    assert rules.heartbeat(attrs.evolve(r, state="evicted"), 1, NOW) == (
        HeartbeatOutcome.EXPIRED,
        attrs.evolve(r, state="evicted"),
    )


def take(
    old: NodeRecord | None, inc: int, now: float, process: str = "", known: int | None = None
) -> NodeRecord:
    """``rules.takeover`` of name "a" on site "s" with a 10 s lease."""
    joining = Joining(site="s", name="a", lease_timeout=10, process=process, known=known)
    return rules.takeover(old, joining, inc, now)


def test_takeover_fences_another_processs_live_incarnation_only() -> None:
    old = row(beat=NOW, lease=10.0, process="p1", fence_until=3.0)
    new = take(old, 2, NOW + 1, process="p2")
    assert (new.incarnation, new.fence_until, new.process, new.state) == (
        2,
        NOW + 10,
        "p2",
        "active",
    )
    mine = take(old, 2, NOW, process="p1")
    assert mine.fence_until == 3.0  # the stored fence stays; its own incarnation adds none
    dead = attrs.evolve(old, state="dead")
    assert take(dead, 2, NOW).fence_until == 3.0
    anonymous = attrs.evolve(old, process="")
    assert (
        take(anonymous, 2, NOW).fence_until == NOW + 10
    )  # an empty identity is nobody's, not the caller's


def test_a_late_reregistration_is_refused_by_a_newer_process_only() -> None:
    newer = row(inc=7, process="p2")
    with pytest.raises(NodeNameConflict, match="7"):
        take(newer, 8, NOW, process="p1", known=5)
    own = attrs.evolve(newer, process="p1")  # its own lost registration
    assert take(own, 8, NOW, process="p1", known=5)
    assert take(newer, 8, NOW, process="p1")


def test_holding_classes_and_their_boundaries() -> None:
    r = row(beat=NOW, lease=10.0)
    assert rules.holding(r, None, NOW) == (Hold.NONE, None)
    assert rules.holding(None, 1, NOW) == (Hold.EXPIRED, None)
    assert rules.holding(r, 1, NOW) == (Hold.LIVE, None)
    evicted = attrs.evolve(r, state="evicted")
    assert rules.holding(evicted, 1, before(NOW + 10)) == (Hold.WAITING, NOW + 10)
    assert rules.holding(evicted, 1, NOW + 10) == (Hold.EXPIRED, None)
    assert rules.holding(attrs.evolve(r, state="dead"), 1, NOW) == (Hold.EXPIRED, None)
    fenced = row(inc=2, fence_until=NOW + 5)
    assert rules.holding(fenced, 1, before(NOW + 5)) == (Hold.WAITING, NOW + 5)
    assert rules.holding(fenced, 1, NOW + 5) == (Hold.EXPIRED, None)
    assert rules.lease_expired(fenced, 1, NOW + 5) and not rules.lease_expired(r, 1, NOW)


def test_a_released_token_goes_to_a_live_destination_or_nowhere() -> None:
    assert rules.destination(row("b", 4), NOW) == ("b", 4)
    assert rules.destination(row("b", 4, state="dead"), NOW) is None
    assert rules.destination(None, NOW) is None


def _table(owner: list[str | None], incs: list[int | None], epochs: list[int]) -> TokenTable:
    n = len(owner)
    return TokenTable(
        owner=tuple(owner),
        incarnation=tuple(incs),
        epoch=array("q", epochs),
        pending_to=(None,) * n,
        pending_deadline=(None,) * n,
    )


def _commit(**kw: object) -> PlanCommit:
    fields: dict[str, object] = {
        "leader": "a",
        "leader_incarnation": 1,
        "expected_generation": 3,
        "basis": 0,
    }
    fields.update(kw)
    return PlanCommit(**fields)  # type: ignore[arg-type]


def test_a_plan_fits_only_the_rows_it_read() -> None:
    nodes = {"a": row("a", 1, registered_at=0.0), "b": row("b", 2, beat=NOW - 20)}
    tokens = _table(["a", "b"], [1, 2], [5, 6])
    fits = _commit(
        assigns=(
            DirectAssign(
                token=1, expected_incarnation=2, expected_epoch=6, owner="a", incarnation=1
            ),
        ),
        revokes=(Revoke(token=0, expected_incarnation=1, expected_epoch=5, destination=None),),
    )
    rules.plan_misfit(fits, site="s", generation=3, tokens=tokens, nodes=nodes, now=NOW)
    with pytest.raises(ConflictError, match="generation 4"):
        rules.plan_misfit(fits, site="s", generation=4, tokens=tokens, nodes=nodes, now=NOW)
    with pytest.raises(NotLeader):
        rules.plan_misfit(
            _commit(leader="b", leader_incarnation=2),
            site="s",
            generation=3,
            tokens=tokens,
            nodes=nodes,
            now=NOW,
        )
    moved = _table(["a", "b"], [1, 2], [5, 7])
    with pytest.raises(ConflictError, match="epoch 7"):
        rules.plan_misfit(fits, site="s", generation=3, tokens=moved, nodes=nodes, now=NOW)
    alive = {**nodes, "b": row("b", 2)}
    with pytest.raises(ConflictError, match="still holds its lease"):
        rules.plan_misfit(fits, site="s", generation=3, tokens=tokens, nodes=alive, now=NOW)
    rules.plan_misfit(
        fits, site="s", generation=3, tokens=tokens, nodes=alive, now=NOW, expiry_recheck=False
    )  # the test-only defect trusts the earlier read


def test_tombstones_and_purges() -> None:
    r = row(beat=NOW, lease=10.0, fence_until=NOW + 1)
    assert rules.leaves_tombstone(r, NOW, claims_left=False)
    assert not rules.leaves_tombstone(r, NOW + 1, claims_left=False)
    assert rules.leaves_tombstone(r, NOW + 1, claims_left=True)
    assert not rules.leaves_tombstone(r, NOW, claims_left=False, keeps_fence=False)
    dead = attrs.evolve(r, state="dead")
    ended = NOW + 10.0 + DEAD_NODE_RETENTION
    assert not rules.purgeable(dead, ended, named_by_tokens=False)  # exactly the retention: kept
    assert rules.purgeable(dead, ended + 1, named_by_tokens=False)
    assert not rules.purgeable(dead, ended + 1, named_by_tokens=True)
    assert not rules.purgeable(
        attrs.evolve(dead, fence_until=ended + 2), ended + 1, named_by_tokens=False
    )


def test_overdue_counts_the_deadline_itself() -> None:
    assert rules.overdue(NOW, NOW) and not rules.overdue(NOW, before(NOW))
    assert not rules.overdue(None, NOW)


@given(
    beat=st.floats(0, 100), lease=st.floats(0.1, 50), now=st.floats(0, 200),
    state=st.sampled_from(["active", "leaving", "dead", "evicted"]),
)  # fmt: skip
def test_expired_and_live_never_hold_together(
    beat: float, lease: float, now: float, state: str
) -> None:
    r = row(beat=beat, lease=lease, state=state)
    kind, until = rules.holding(r, 1, now)
    assert not (rules.is_live(r, now) and rules.lease_expired(r, 1, now))
    assert (kind is Hold.LIVE) == rules.is_live(r, now)
    if kind is Hold.WAITING:
        assert until is not None and until > now
