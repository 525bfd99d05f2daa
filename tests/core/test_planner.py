"""The planner's laws (docs/PROTOCOL.md section 3), each against an independent oracle.

The oracles are tests/support/planner_oracle.py's: a general min-cost flow
over single tokens (networkx network simplex) whose optimum is
BIG * sum(load^2) + moves, and, on tiny cases, a brute force that checks
that equivalence against the lexicographic definition itself.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobsync.core.errors import (
    DuplicateNodeName,
    InvalidArgument,
    InvalidLock,
    InvalidNodeName,
    InvalidPattern,
    InvalidTokenCount,
    JobSyncError,
)
from jobsync.core.planner import Plan, lower_bound_moves, plan
from tests.support.planner_oracle import brute_force, eligible_nodes, flow_oracle

NAMES = ["gpu-1", "gpu-2", "cpu-1", "cpu-2", "eu-1", "a_b", "a%b", "a\\b"]
DEAD = ["old-1", "old-2"]
PATTERNS = [
    "gpu-%",
    "cpu-%",
    "eu-%",
    "%-1",
    "gpu-2",
    "_pu-%",
    "a\\_b",
    "a\\%%",
    "a\\\\b",
    "a%",
    "nomatch-%",
    "%",
]

Owners = Sequence[str | None]
Locks = dict[int, list[str]]


# -- the independent oracles (tests/support/planner_oracle.py) ------------------------


def eligible(names: Sequence[str], patterns: Sequence[str] | None) -> list[str]:
    return sorted(eligible_nodes(names, patterns) or ())


def oracle(total: int, owners: Owners, names: Sequence[str], locks: Locks) -> tuple[list[int], int]:
    """(sorted load vector, fewest moves) of a balanced plan, by network simplex."""
    best = flow_oracle(total, owners, names, locks)
    return sorted(best.loads), best.moves


def brute(total: int, owners: Owners, names: Sequence[str], locks: Locks) -> tuple[list[int], int]:
    """Dec-min by its lexicographic definition, then fewest moves: every assignment."""
    best = brute_force(total, owners, names, locks)
    return sorted(best.loads), best.moves


# -- strategies ------------------------------------------------------------------


@st.composite
def scenarios(
    draw: st.DrawFn, max_tokens: int = 40, max_nodes: int = 6, pins: bool = True
) -> tuple[int, list[str | None], list[str], Locks]:
    total = draw(st.integers(1, max_tokens))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=max_nodes, unique=True))
    who = st.sampled_from([*NAMES, *DEAD]) | st.none()
    owners = draw(st.lists(who, min_size=total, max_size=total))
    locks: Locks = {}
    if pins:
        # A few rules shared by many tokens, so pins often force dense levels.
        rule = st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=2, unique=True)
        palette = draw(st.lists(rule, min_size=1, max_size=3))
        chosen = draw(
            st.lists(st.none() | st.sampled_from(palette), min_size=total, max_size=total)
        )
        locks = {t: r for t, r in enumerate(chosen) if r is not None}
    return total, owners, names, locks


def check_plan(p: Plan, total: int, owners: Owners, names: Sequence[str], locks: Locks) -> None:
    """Everything a plan promises that needs no optimum to check."""
    assert p.nodes == tuple(sorted(names))
    assert len(p.assignment) == total
    rules: dict[tuple[str, ...] | None, list[str]] = {}
    for t in range(total):
        rule = locks.get(t)
        key = None if rule is None else tuple(rule)
        if key not in rules:
            rules[key] = eligible(names, rule)
        allowed = rules[key]
        if allowed:
            assert p.assignment[t] in allowed, (t, p.assignment[t], allowed)
        else:
            assert p.assignment[t] is None and t in p.unowned
    assert p.unowned == {t for t, w in enumerate(p.assignment) if w is None}
    expected = tuple((t, owners[t], w) for t, w in enumerate(p.assignment) if owners[t] != w)
    assert p.moves == expected
    assert dict(p.targets) == {w: p.assignment.count(w) for w in names}
    assert p.moved == p.lower_bound
    assert all(p.owned_by(w) == {t for t, o in enumerate(p.assignment) if o == w} for w in names)


# -- balance and movement, against the oracles -----------------------------------------


@given(scenarios())
def test_plan_matches_the_flow_oracle(case: tuple[int, list[str | None], list[str], Locks]) -> None:
    total, owners, names, locks = case
    p = plan(total, owners, names, locks)
    check_plan(p, total, owners, names, locks)
    loads, moves = oracle(total, owners, names, locks)
    assert sorted(p.loads) == loads
    assert p.moved == moves


@given(scenarios(), st.sampled_from(NAMES), st.booleans())
def test_replanning_after_a_join_or_leave_matches_the_flow_oracle(
    case: tuple[int, list[str | None], list[str], Locks], other: str, join: bool
) -> None:
    # From a balanced plan, one membership change: several nodes then sit at
    # the top of their box and the flow must pick which of them step down.
    total, owners, names, locks = case
    before = list(plan(total, owners, names, locks).assignment)
    if join or len(names) == 1:
        after = sorted({*names, other})
    else:
        after = [w for w in names if w != other] or names[1:]
    p = plan(total, before, after, locks)
    check_plan(p, total, before, after, locks)
    assert (sorted(p.loads), p.moved) == oracle(total, before, after, locks)


@given(scenarios(max_tokens=6, max_nodes=3))
def test_plan_matches_brute_force(case: tuple[int, list[str | None], list[str], Locks]) -> None:
    total, owners, names, locks = case
    p = plan(total, owners, names, locks)
    loads, moves = brute(total, owners, names, locks)
    assert sorted(p.loads) == loads
    assert p.moved == moves


@given(
    st.integers(1, 3000),
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=8, unique=True),
    st.randoms(use_true_random=False),
)
def test_unpinned_plan_is_floor_ceil_at_the_closed_form_bound(
    total: int, names: list[str], rnd: random.Random
) -> None:
    # Large T, so owners come from a seeded generator rather than a list
    # hypothesis would have to build element by element.
    pools: list[list[str | None]] = [[*NAMES, *DEAD, None], [*names[:1] * 5, None], [*names]]
    skew = rnd.choice(pools)
    owners = [rnd.choice(skew) for _ in range(total)]
    p = plan(total, owners, names)
    q = total // len(names)
    assert set(p.loads) <= {q, q + 1}
    assert p.moved == p.lower_bound == lower_bound_moves(total, owners, names)
    assert not p.unowned
    check_plan(p, total, owners, names, {})


@given(scenarios(), st.randoms(use_true_random=False))
def test_replanning_moves_nothing_and_inputs_order_does_not_matter(
    case: tuple[int, list[str | None], list[str], Locks], rnd: random.Random
) -> None:
    total, owners, names, locks = case
    p = plan(total, owners, names, locks)
    again = plan(total, list(p.assignment), names, locks)
    assert again.moves == () and again.assignment == p.assignment
    # Same inputs spelled differently: shuffled nodes, locks in another
    # order, owners as a mapping.
    shuffled = list(names)
    rnd.shuffle(shuffled)
    relocked = dict(reversed(list(locks.items())))
    as_map = {t: w for t, w in enumerate(owners) if w is not None}
    assert plan(total, as_map, shuffled, relocked) == p


@given(st.integers(1, 3000), st.integers(1, 40), st.data())
def test_one_join_or_one_leave_from_balance_moves_the_minimum(
    total: int, n: int, data: st.DataObject
) -> None:
    names = [f"w{i:02d}" for i in range(n)]
    base = plan(total, [None] * total, names)
    joined = plan(total, list(base.assignment), [*names, "new"])
    assert joined.moved == total // (n + 1)
    assert all(new == "new" for _, _, new in joined.moves)
    if n > 1:
        leaver = data.draw(st.sampled_from(names))
        left = plan(total, list(base.assignment), [w for w in names if w != leaver])
        assert {t for t, _, _ in left.moves} == base.owned_by(leaver)


EVENTS = st.one_of(
    st.tuples(st.just("join"), st.sampled_from(NAMES)),
    st.tuples(st.just("leave"), st.sampled_from(NAMES)),
    st.tuples(st.just("crash"), st.sampled_from(NAMES)),
    st.tuples(
        st.just("pin"),
        st.integers(0, 23),
        st.none() | st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=2, unique=True),
    ),
)


@given(st.integers(1, 24), st.lists(EVENTS, min_size=1, max_size=6))
def test_histories_never_move_a_token_that_need_not_move(
    total: int, events: list[tuple[object, ...]]
) -> None:
    # Joins, graceful leaves, crashes (the node vanishes without handing
    # anything back; the planner sees the same thing) and pin changes, each
    # step planned from the previous step's assignment.
    live = ["gpu-1", "cpu-1"]
    locks: Locks = {}
    owners: list[str | None] = [None] * total
    for event in events:
        kind, arg = event[0], event[1]
        if kind == "join" and arg not in live:
            live.append(str(arg))
        elif kind in ("leave", "crash") and arg in live and len(live) > 1:
            live.remove(str(arg))
        elif kind == "pin" and isinstance(arg, int) and arg < total:
            rule = event[2]
            if rule is None:
                locks.pop(arg, None)
            else:
                assert isinstance(rule, list)
                locks[arg] = rule
        p = plan(total, owners, live, locks)
        check_plan(p, total, owners, live, locks)
        loads, moves = oracle(total, owners, live, locks)
        assert (sorted(p.loads), p.moved) == (loads, moves)
        owners = list(p.assignment)


def test_plan_is_the_same_in_processes_with_different_string_hashes() -> None:
    script = (
        "from jobsync.core.planner import plan\n"
        "names = [f'n{i}' for i in range(30)] + ['gpu-1', 'gpu-2', 'eu-1']\n"
        "owners = [names[(t * 7) % 25] if t % 5 else 'dead' for t in range(500)]\n"
        "locks = {t: ['gpu-%', 'eu-%'] if t % 3 else ['eu-%'] for t in range(0, 500, 4)}\n"
        "p = plan(500, owners, reversed(names), locks)\n"
        "print(repr((p.assignment, p.moves, p.loads)))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(run.stdout)
    assert len(outputs) == 1


# -- plain cases ---------------------------------------------------------------------


def test_no_live_nodes_leaves_every_token_unowned() -> None:
    p = plan(3, ["a", None, "b"], [])
    assert p.assignment == (None, None, None)
    assert p.unowned == {0, 1, 2}
    assert p.moves == ((0, "a", None), (2, "b", None))
    assert p.moved == p.lower_bound == 0
    assert dict(p.targets) == {}
    assert lower_bound_moves(3, ["a", None, "b"], []) == 0


def test_surplus_leaves_from_the_highest_ids_and_fills_nodes_in_name_order() -> None:
    # a holds 0..5 (target 2), c and b are empty: a keeps 0 and 1, tokens
    # 2, 3 go to b and 4, 5 go to c.
    p = plan(6, ["a"] * 6, ["c", "a", "b"])
    assert p.assignment == ("a", "a", "b", "b", "c", "c")
    assert p.lower_bound == lower_bound_moves(6, ["a"] * 6, ["a", "b", "c"]) == 4


def test_plus_one_slots_go_to_the_nodes_holding_the_most() -> None:
    # T=7 over 3 nodes: one "+1" slot, which b keeps, so only 2 tokens move.
    owners = ["a", "a", "b", "b", "b", "b", "b"]
    p = plan(7, owners, ["a", "b", "c"])
    assert dict(p.targets) == {"a": 2, "b": 3, "c": 2}
    assert p.moved == 2


def test_regression_a_full_node_must_step_down_for_a_pinned_token() -> None:
    # Found by fuzzing a mutant: T=7 over 6 nodes leaves one "+1" slot, two
    # nodes already hold 2, and the pins decide which of them steps down.
    owners = ["gpu-1", None, "gpu-1", "gpu-2", "dead-1", "a", "a"]
    names = ["eu-1", "cpu-1", "cpu-2", "a", "gpu-2", "gpu-1"]
    locks = {0: ["%-1", "a"], 6: ["a", "eu-%"]}
    p = plan(7, owners, names, locks)
    assert (sorted(p.loads), p.moved) == oracle(7, owners, names, locks) == ([1] * 5 + [2], 3)


def test_owner_mapping_and_sequence_agree() -> None:
    owners = {0: "a", 3: "b", 4: "gone"}
    as_list = ["a", None, None, "b", "gone"]
    assert plan(5, owners, ["a", "b"]) == plan(5, as_list, ["a", "b"])


def test_plan_is_frozen() -> None:
    p = plan(2, [None, None], ["a"])
    with pytest.raises(AttributeError):
        p.lower_bound = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.targets["a"] = 1  # type: ignore[index]


# -- bad input: every error names the bad value ------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"total_tokens": 0}, InvalidTokenCount, "0"),
        ({"total_tokens": -3}, InvalidTokenCount, "-3"),
        ({"total_tokens": True}, InvalidTokenCount, "True"),
        ({"total_tokens": 2.0}, InvalidTokenCount, "2.0"),
        ({"nodes": ["a", "b", "a"]}, DuplicateNodeName, "'a'"),
        ({"nodes": ["a", 7]}, InvalidNodeName, "7"),
        ({"nodes": ["a", ""]}, InvalidNodeName, "''"),
        ({"nodes": "ab"}, InvalidNodeName, "'ab'"),
        ({"nodes": 12}, InvalidNodeName, "12"),
        ({"owners": ["a", 5, None, None]}, InvalidNodeName, "5"),
        ({"owners": [["x"], None, None, None]}, InvalidNodeName, "['x']"),
        ({"owners": ["a", None]}, InvalidArgument, "2 entries"),
        ({"owners": {9: "a"}}, InvalidArgument, "9"),
        ({"owners": 42}, InvalidArgument, "42"),
        ({"locks": {4: ["a"]}}, InvalidLock, "4"),
        ({"locks": {-1: ["a"]}}, InvalidLock, "-1"),
        ({"locks": {"1": ["a"]}}, InvalidLock, "'1'"),
        ({"locks": {1: []}}, InvalidLock, "[]"),
        ({"locks": {1: "gpu-%"}}, InvalidLock, "'gpu-%'"),
        ({"locks": {1: None}}, InvalidLock, "None"),
        ({"locks": [["a"]]}, InvalidLock, "[['a']]"),
        ({"locks": {1: ["a", 3]}}, InvalidPattern, "3"),
        ({"locks": {1: [["a"]]}}, InvalidPattern, "['a']"),
        ({"locks": {1: ["ab\\"]}}, InvalidPattern, "'ab\\\\'"),
    ],
)
def test_bad_input_is_refused_and_named(
    kwargs: dict[str, object], error: type[JobSyncError], named: str
) -> None:
    args: dict[str, object] = {
        "total_tokens": 4,
        "owners": ["a", None, "b", None],
        "nodes": ["a", "b"],
        "locks": None,
    }
    args.update(kwargs)
    with pytest.raises(error) as info:
        plan(**args)  # type: ignore[arg-type]
    assert named in str(info.value)


def test_validation_happens_before_any_work() -> None:
    # A bad lock is refused even though the token counts would be fine.
    with pytest.raises(InvalidLock):
        plan(4, ["a"] * 4, ["a"], {0: ["a"], 7: ["a"]})
    with pytest.raises(InvalidTokenCount):
        lower_bound_moves(0, [], ["a"])


def test_lower_bound_moves_closed_form() -> None:
    owners: Mapping[int, str] = {0: "a", 1: "a", 2: "a", 3: "a", 4: "dead", 5: "b"}
    # T=6 over a, b, c: targets 2 each; a gives 2, the orphan moves: 3.
    assert lower_bound_moves(6, owners, ["a", "b", "c"]) == 3
    assert plan(6, owners, ["a", "b", "c"]).moved == 3
