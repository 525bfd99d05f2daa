"""live_nodes and elect_leader: the boundary instant is dead; oldest live node leads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobsync.core import Member, elect_leader, live_nodes
from jobsync.errors import DuplicateNodeName, InvalidArgument, InvalidNodeName


def m(name: str, registered: float, heartbeat: float) -> Member:
    return Member(name=name, registered_at=registered, last_heartbeat=heartbeat)


def test_heartbeat_exactly_timeout_old_is_dead() -> None:
    nodes = [m("a", 0.0, 100.0)]
    assert live_nodes(nodes, now=114.999, timeout=15.0) == (nodes[0],)
    assert live_nodes(nodes, now=115.0, timeout=15.0) == ()


def test_leader_is_oldest_live_then_name() -> None:
    nodes = [m("c", 5.0, 100.0), m("b", 1.0, 100.0), m("a", 1.0, 100.0), m("old", 0.0, 80.0)]
    assert elect_leader(nodes, now=100.0, timeout=15.0) == "a"
    assert [n.name for n in live_nodes(nodes, 100.0, 15.0)] == ["a", "b", "c"]
    assert elect_leader(nodes, now=94.9, timeout=15.0) == "old"


def test_no_live_node_means_no_leader() -> None:
    assert elect_leader([m("a", 0.0, 0.0)], now=100.0, timeout=15.0) is None
    assert elect_leader([], now=0.0, timeout=1.0) is None


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(DuplicateNodeName, match="'a'"):
        live_nodes([m("a", 0, 0), m("a", 1, 1)], 0.0, 1.0)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "15", True])
def test_bad_timeout_is_named(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="timeout"):
        live_nodes([], 0.0, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", None, 7, "a\x00b"])
def test_bad_member_name_is_refused(bad: object) -> None:
    with pytest.raises(InvalidNodeName):
        Member(name=bad, registered_at=0.0, last_heartbeat=0.0)  # type: ignore[arg-type]


members = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 20)), max_size=8
).map(lambda rows: [m(f"n{i}", float(r), float(h)) for i, (r, h) in enumerate(rows)])


@given(members, st.integers(0, 30), st.integers(1, 10))
def test_leader_matches_brute_force(nodes: list[Member], now: int, timeout: int) -> None:
    live = [n for n in nodes if n.last_heartbeat > now - timeout]
    expected = min(live, key=lambda n: (n.registered_at, n.name)).name if live else None
    assert elect_leader(nodes, float(now), float(timeout)) == expected
