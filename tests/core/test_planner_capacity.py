"""The planner's laws with capacities, against the independent oracles of
tests/support/planner_oracle.py (exact Fractions of the capacities as written).

- Unpinned: the largest-remainder targets exactly (each node within one token
  of its quota), at the fewest moves for those targets.
- Pinned, capacities not all equal: every node within one token of its share of
  the weighted optimal base, pins honoured, and no assignment inside those
  bounds moves fewer tokens (every assignment tried on tiny cases).
- Equal capacities are the count-balanced planner exactly; capacities scale
  freely; re-planning a plan's own result moves nothing.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobsync.core.errors import InvalidArgument
from jobsync.core.planner import lower_bound_moves, plan
from tests.core.test_planner import NAMES, Locks, check_plan, scenarios
from tests.support.planner_oracle import (
    brute_force_weighted,
    eligibility,
    proportional_lower_bound,
    proportional_targets,
)

CAPACITIES = st.sampled_from([0.5, 1.0, 1.0, 1.5, 2.0, 3.0, 4.0])

Case = tuple[int, list[str | None], list[str], Locks]


def capacities_for(draw: st.DrawFn, names: list[str]) -> dict[str, float]:
    return {n: draw(CAPACITIES) for n in names}


@given(scenarios(max_tokens=300, max_nodes=8, pins=False), st.data())
def test_unpinned_plan_is_the_largest_remainder_split_at_the_fewest_moves(
    case: Case, data: st.DataObject
) -> None:
    total, owners, names, locks = case
    caps = capacities_for(data.draw, names)
    p = plan(total, owners, names, capacities=caps)
    check_plan(p, total, owners, names, locks)
    assert dict(p.targets) == proportional_targets(total, owners, names, caps)
    whole = sum(Fraction(repr(caps[n])) for n in names)
    for n, load in p.targets.items():
        assert abs(load - total * Fraction(repr(caps[n])) / whole) < 1
    bound = proportional_lower_bound(total, owners, names, caps)
    assert p.moved == bound == lower_bound_moves(total, owners, names, caps)


@given(scenarios(max_tokens=6, max_nodes=3), st.data())
def test_pinned_plan_is_within_one_of_the_weighted_shares_at_the_fewest_moves(
    case: Case, data: st.DataObject
) -> None:
    total, owners, names, locks = case
    caps = capacities_for(data.draw, names)
    if len(set(caps.values())) == 1:
        caps[names[0]] = caps[names[0]] * 2  # equal capacities are the unweighted planner
    p = plan(total, owners, names, locks, caps)
    check_plan(p, total, owners, names, locks)
    if all(e is None or e == set(names) for e in eligibility(total, locks, names)):
        return  # no effective pin: the largest-remainder law (the test above)
    box, fewest = brute_force_weighted(total, owners, names, locks, caps)
    for n, load in p.targets.items():
        lo, hi = box[n]
        assert lo <= load <= hi, (n, load, box[n])
    assert p.moved == fewest


@given(scenarios(max_tokens=40, max_nodes=6), CAPACITIES)
def test_equal_capacities_are_the_count_balanced_plan(case: Case, capacity: float) -> None:
    total, owners, names, locks = case
    caps = dict.fromkeys(names, capacity)
    assert plan(total, owners, names, locks, caps) == plan(total, owners, names, locks)


@given(scenarios(max_tokens=60, max_nodes=6), st.data())
def test_capacities_scale_freely_and_replanning_moves_nothing(
    case: Case, data: st.DataObject
) -> None:
    total, owners, names, locks = case
    caps = capacities_for(data.draw, names)
    p = plan(total, owners, names, locks, caps)
    halved = plan(total, owners, list(reversed(names)), locks, {n: c / 2 for n, c in caps.items()})
    assert halved == p
    again = plan(total, p.assignment, names, locks, caps)
    assert again.moved == 0 and again.assignment == p.assignment


def test_three_workers_one_one_two_over_a_thousand_tokens() -> None:
    names = ["w1", "w2", "w3"]
    caps = {"w1": 1.0, "w2": 1.0, "w3": 2.0}
    p = plan(1000, [None] * 1000, names, capacities=caps)
    assert dict(p.targets) == {"w1": 250, "w2": 250, "w3": 500}
    # w2 doubles: the fewest moves onto 200/400/400 are w1's and w3's surplus
    q = plan(1000, p.assignment, names, capacities={**caps, "w2": 2.0})
    assert dict(q.targets) == {"w1": 200, "w2": 400, "w3": 400}
    assert q.moved == q.lower_bound == 150
    assert all(new == "w2" for _, _, new in q.moves)


def test_remainder_ties_go_to_the_node_holding_the_most_beyond_its_floor() -> None:
    # 3 tokens over capacities 1, 1, 2: quotas 0.75, 0.75, 1.5; floors 0, 0, 1;
    # remainders 3/4, 3/4, 1/2: the two "+1" slots go to a and b, w3 keeps 1.
    p = plan(3, [None] * 3, ["a", "b", "c"], capacities={"a": 1, "b": 1, "c": 2})
    assert dict(p.targets) == {"a": 1, "b": 1, "c": 1}
    # 5 tokens over 1, 1, 1, 2 (quotas 1, 1, 1, 2): exact, nothing left to break.
    q = plan(5, [None] * 5, ["a", "b", "c", "d"], capacities={"a": 1, "b": 1, "c": 1, "d": 2})
    assert dict(q.targets) == {"a": 1, "b": 1, "c": 1, "d": 2}
    # 2 tokens over 1, 1, 2 (quotas 0.5, 0.5, 1): a tie of remainders between a and b,
    # and b already holds one: b keeps it.
    r = plan(2, [None, "b"], ["a", "b", "c"], capacities={"a": 1, "b": 1, "c": 2})
    assert dict(r.targets) == {"a": 0, "b": 1, "c": 1} and r.moved == 1
    # Regression: 10 tokens over capacities 1 and 3 (quotas 2.5 and 7.5, a tie).
    # From all on a, a keeps the "+1" (3 and 7); re-planning that keeps it too,
    # although b then holds more: the slot goes to the node above its floor.
    first = plan(10, ["a"] * 10, ["a", "b"], capacities={"a": 1, "b": 3})
    assert dict(first.targets) == {"a": 3, "b": 7} and first.moved == 7
    again = plan(10, first.assignment, ["a", "b"], capacities={"a": 1, "b": 3})
    assert again.moved == 0


def test_pins_with_capacities_follow_the_weighted_shares() -> None:
    # 10 tokens, 9 pinned to gpu-%; capacities gpu-1 1, gpu-2 3, cpu-1 1.  The
    # gpus are the dense part: 9 tokens over 4 units of capacity (2.25 a unit,
    # more than the 2 of the whole), shares 2.25 and 6.75; cpu-1 takes the free one.
    names = ["gpu-1", "gpu-2", "cpu-1"]
    caps = {"gpu-1": 1.0, "gpu-2": 3.0, "cpu-1": 1.0}
    locks = {t: ["gpu-%"] for t in range(9)}
    p = plan(10, [None] * 10, names, locks, caps)
    assert p.targets["cpu-1"] == 1
    assert (p.targets["gpu-1"], p.targets["gpu-2"]) in ((2, 7), (3, 6))
    assert all(p.assignment[t] in ("gpu-1", "gpu-2") for t in range(9))
    # Without the pins the same capacities split 2, 6, 2.
    free = plan(10, [None] * 10, names, capacities=caps)
    assert dict(free.targets) == {"gpu-1": 2, "gpu-2": 6, "cpu-1": 2}


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, "2", True, None, 0.0001, 2e6])
def test_a_bad_capacity_is_refused_naming_the_node_and_value(bad: object) -> None:
    with pytest.raises(InvalidArgument, match=r"capacity of 'b'.*" + repr(bad)[:3]):
        plan(4, [None] * 4, ["a", "b"], capacities={"a": 1.0, "b": bad})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match="capacities must be a mapping"):
        plan(4, [None] * 4, ["a"], capacities=[1.0])  # type: ignore[arg-type]


def test_capacities_of_names_that_are_not_live_are_ignored() -> None:
    p = plan(4, [None] * 4, ["a", "b"], capacities={"gone": 9.0})
    assert dict(p.targets) == {"a": 2, "b": 2}


@given(st.lists(st.sampled_from(NAMES), min_size=2, max_size=8, unique=True), st.data())
def test_a_thousand_tokens_are_split_within_one_of_every_quota(
    names: list[str], data: st.DataObject
) -> None:
    caps = capacities_for(data.draw, names)
    p = plan(1000, [None] * 1000, names, capacities=caps)
    whole = sum(caps.values())
    assert all(abs(p.targets[n] - 1000 * caps[n] / whole) < 1 for n in names)
