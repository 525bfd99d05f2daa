"""The load balancer's laws (jobsync/core/loadbalance.py), each as a property.

Optimality is checked against a brute force written here from the law's
definitions alone: every assignment of a small case, the fewest moves that
bring every node above its trigger to its ceiling without lifting any other
node above max(its ceiling, where it was).  The bounded heuristic is checked
at its bound: below it, the plan always finishes with exactly that optimum.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from jobsync.core.errors import InvalidArgument, InvalidNodeName
from jobsync.core.loadbalance import LoadPlan, balance_load
from jobsync.core.loadestimate import LoadEstimate
from jobsync.core.loadpolicy import LoadPolicy
from tests.support.planner_oracle import eligible_nodes

NAMES = ["gpu-1", "gpu-2", "cpu-1", "cpu-2", "eu-1"]
PATTERNS = ["gpu-%", "cpu-%", "%-1", "eu-%", "nomatch-%"]
EPS = 1e-9


def node_loads(
    assignment: Sequence[str | None], loads: Sequence[float], names: Sequence[str]
) -> dict[str, float]:
    out = dict.fromkeys(names, 0.0)
    for owner, w in zip(assignment, loads, strict=True):
        if owner is not None:
            out[owner] += w
    return out


def thresholds(
    loads: Sequence[float], caps: dict[str, float], policy: LoadPolicy
) -> tuple[dict[str, float], dict[str, float]]:
    """(trigger, ceiling) of every node when no token is hot."""
    unit = sum(loads) / sum(caps.values())
    trigger = {n: (1 + policy.band - policy.margin) * c * unit for n, c in caps.items()}
    ceiling = {n: (trigger[n] - policy.hysteresis * c * unit) for n, c in caps.items()}
    return trigger, ceiling


def brute_minimum(
    start: Sequence[str], loads: Sequence[float], caps: dict[str, float], policy: LoadPolicy
) -> int | None:
    """Fewest moves to a plan the law accepts (None: no plan is accepted)."""
    names = sorted(caps)
    trigger, ceiling = thresholds(loads, caps, policy)
    before = node_loads(start, loads, names)
    if all(before[n] <= trigger[n] for n in names):
        return 0  # not triggered: nothing needs to move
    limit = ceiling  # triggered: every node ends at or under its ceiling
    best: int | None = None
    for final in itertools.product(names, repeat=len(start)):
        after = node_loads(final, loads, names)
        if all(after[n] <= limit[n] + EPS for n in names):
            moved = sum(a != b for a, b in zip(start, final, strict=True))
            best = moved if best is None else min(best, moved)
    return best


@st.composite
def small_cases(draw: st.DrawFn) -> tuple[list[str], list[float], dict[str, float], LoadPolicy]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=3, unique=True))
    caps = {n: draw(st.sampled_from([1.0, 2.0, 4.0])) for n in names}
    total = draw(st.integers(len(names), 7))
    loads = draw(st.lists(st.integers(1, 30).map(float), min_size=total, max_size=total))
    start = draw(st.lists(st.sampled_from(names), min_size=total, max_size=total))
    assume(set(start) == set(names))  # no node joins: phase 2 stays out of it
    band = draw(st.sampled_from([0.1, 0.3, 0.6]))
    policy = LoadPolicy(
        band=band,
        margin=draw(st.sampled_from([0.0, band / 4])),
        hysteresis=draw(st.sampled_from([0.0, band / 2])),
        budget=1.0,
    )
    # No hot token, and no load exactly at a threshold (float sums may disagree there).
    unit = sum(loads) / sum(caps.values())
    assume(max(loads) <= unit * max(caps.values()))
    trigger, ceiling = thresholds(loads, caps, policy)
    before = node_loads(start, loads, names)
    assume(all(abs(before[n] - trigger[n]) > 1e-6 for n in names))
    assume(all(abs(before[n] - ceiling[n]) > 1e-6 for n in names))
    return start, loads, caps, policy


@given(small_cases())
def test_fewest_load_moves_against_brute_force(
    case: tuple[list[str], list[float], dict[str, float], LoadPolicy],
) -> None:
    start, loads, caps, policy = case
    p = balance_load(start, loads, caps, policy=policy)
    best = brute_minimum(start, loads, caps, policy)
    assert p.hot == () and p.forced == 0 and p.filled == 0
    if best is not None:
        assert p.lower_bound <= best  # a lower bound indeed
    if p.finished and p.detours == 0:
        assert best is not None
        assert p.budgeted == p.lower_bound == best
    _, ceiling = thresholds(loads, caps, policy)
    after = node_loads(p.assignment, loads, sorted(caps))
    before = node_loads(start, loads, sorted(caps))
    if p.detours == 0:  # receivers stay under their ceiling; a finished plan is under it
        for n in caps:
            if after[n] > before[n] + EPS or (p.finished and p.moves):
                assert after[n] <= ceiling[n] + EPS
    # Detours included, the largest normalised load never rises.
    assert max(after[n] / caps[n] for n in caps) <= max(before[n] / caps[n] for n in caps) + EPS
    # Below the bound, the heuristic always finishes at the optimum.
    if max(loads) <= (policy.band - policy.margin - policy.hysteresis) * sum(loads) / len(caps):
        assert p.finished and p.detours == 0
        assert p.budgeted == best


@given(st.integers(2, 12), st.integers(0, 2**32), st.sampled_from([1.0, 2.0, 4.0]))
def test_below_the_bound_every_node_ends_within_the_band(nodes: int, seed: int, big: float) -> None:
    rng = random.Random(seed)
    names = [f"n{i:02d}" for i in range(nodes)]
    caps = {n: (big if i % 3 == 0 else 1.0) for i, n in enumerate(names)}
    total = 60 * nodes
    loads = [rng.uniform(0.5, 1.5) for _ in range(total)]
    start = [rng.choice(names) for _ in range(total)]
    assume(set(start) == set(names))
    policy = LoadPolicy(band=0.2, margin=0.03, hysteresis=0.05, budget=1.0)
    assert max(loads) <= 0.12 * sum(loads) / nodes  # the fit condition: ceiling - 1
    p = balance_load(start, loads, caps, policy=policy)
    assert p.finished and p.detours == 0 and p.hot == ()
    assert p.budgeted == p.lower_bound
    assert p.max_over_mean <= 1.2 - 0.03 + EPS  # at most the trigger


# -- laws that need no optimum ------------------------------------------------------------


@st.composite
def cases(
    draw: st.DrawFn,
) -> tuple[
    list[str | None],
    list[float],
    dict[str, float],
    dict[int, list[str]],
    dict[int, int],
    LoadPolicy,
]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    caps = {n: draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])) for n in names}
    total = draw(st.integers(1, 80))
    who = st.sampled_from([*names, "dead-1"]) | st.none()
    start = draw(st.lists(who, min_size=total, max_size=total))
    heavy = st.floats(0, 100, allow_nan=False) | st.just(0.0) | st.integers(0, 5).map(float)
    loads = draw(st.lists(heavy, min_size=total, max_size=total))
    rule = st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=2, unique=True)
    chosen = draw(st.lists(st.none() | rule, min_size=total, max_size=total))
    locks = {t: r for t, r in enumerate(chosen) if r is not None}
    cooling = draw(st.dictionaries(st.integers(0, total - 1), st.integers(0, 4), max_size=10))
    policy = LoadPolicy(
        band=draw(st.sampled_from([0.05, 0.1, 0.5])),
        margin=0.0,
        hysteresis=0.0,
        budget=draw(st.sampled_from([0.01, 0.1, 1.0])),
        cooldown=draw(st.integers(0, 3)),
    )
    return start, loads, caps, locks, cooling, policy


@given(cases())
def test_pins_budget_cooldown_and_accounting(
    case: tuple[
        list[str | None],
        list[float],
        dict[str, float],
        dict[int, list[str]],
        dict[int, int],
        LoadPolicy,
    ],
) -> None:
    start, loads, caps, locks, cooling, policy = case
    names = sorted(caps)
    p = balance_load(start, loads, caps, locks=locks, cooling=cooling, policy=policy)
    orphans = set()
    for t, owner in enumerate(p.assignment):
        allowed = eligible_nodes(names, locks.get(t))
        if allowed is None:
            assert owner is None and t in p.unowned
            continue
        assert owner in allowed, (t, owner, allowed)  # pins are honoured
        if start[t] not in allowed:
            orphans.add(t)
    assert p.unowned == {t for t, o in enumerate(p.assignment) if o is None}
    assert p.moves == tuple((t, start[t], o) for t, o in enumerate(p.assignment) if start[t] != o)
    assert p.forced == len(orphans)  # exactly the orphans move unthrottled
    assert p.budgeted <= p.budget == max(1, int(policy.budget * len(start)))
    assert len(p.moves) == p.forced + p.filled + p.budgeted + sum(
        1 for t, a, b in p.moves if b is None
    )
    kept = {start[t] for t in range(len(start)) if t not in orphans and t not in p.unowned}
    new = set(names) - kept  # nodes that held no token they may keep
    for t, before, after in p.moves:
        if cooling.get(t, 0) and t not in orphans and after is not None:  # only joins take it
            assert after in new, (t, before, after)
    moved = {t for t, _, b in p.moves if b is not None}
    expected = {t: n - 1 for t, n in cooling.items() if n > 1}
    if policy.cooldown:
        expected.update(dict.fromkeys(moved, policy.cooldown))
    assert dict(p.cooling) == expected
    assert p.node_loads == pytest.approx(
        [node_loads(p.assignment, loads, names)[n] for n in names], abs=1e-6
    )
    # The same inputs in any order give the same plan.
    shuffled = dict(reversed(list(caps.items())))
    again = balance_load(
        dict(enumerate(start)) if None not in start else start,
        loads,
        shuffled,
        locks=locks,
        cooling=dict(reversed(list(cooling.items()))),
        policy=policy,
    )
    assert again == p


@given(cases())
def test_a_finished_plan_is_stable(
    case: tuple[
        list[str | None],
        list[float],
        dict[str, float],
        dict[int, list[str]],
        dict[int, int],
        LoadPolicy,
    ],
) -> None:
    start, loads, caps, locks, _, policy = case
    p = balance_load(start, loads, caps, locks=locks, policy=attrs.evolve(policy, budget=1.0))
    assume(p.finished and all(p.counts))
    assert p.budgeted >= p.lower_bound
    again = balance_load(list(p.assignment), loads, caps, locks=locks, policy=policy)
    assert again.moves == ()


def test_a_hot_token_gets_the_largest_node_to_itself() -> None:
    names = ["a", "b", "c", "d"]
    caps = {"a": 1.0, "b": 4.0, "c": 1.0, "d": 2.0}
    loads = [1.0] * 40
    loads[7] = 60.0  # well over any node's share of the 99 that are left over
    start = [names[t % 4] for t in range(40)]
    p = balance_load(start, loads, caps, policy=LoadPolicy(budget=1.0))
    assert p.hot == (7,) and dict(p.dedicated) == {"b": 7}
    assert [t for t, o in enumerate(p.assignment) if o == "b"] == [7]
    assert p.finished and p.budgeted == p.lower_bound == 1 + 10  # 7 goes home, b's 10 leave
    # What is left is balanced over a, c, d by capacity.
    rest = node_loads(p.assignment, loads, names)
    assert rest["d"] / 2 == pytest.approx(rest["a"], rel=0.25)
    # Paced: a budget of 2 moves per plan takes six plans, hottest work first.
    step = balance_load(start, loads, caps, policy=LoadPolicy(budget=0.05))
    assert step.budgeted == 2 and not step.finished and step.assignment[7] == "b"


def test_a_joining_node_is_filled_without_the_budget() -> None:
    names = [f"n{i}" for i in range(4)]
    loads = [1.0 + (t % 7) / 10 for t in range(400)]
    start = [names[t % 4] for t in range(400)]
    caps = {**dict.fromkeys(names, 1.0), "n4": 1.0}
    p = balance_load(start, loads, caps, policy=LoadPolicy(budget=0.001))
    share = sum(loads) / 5
    after = node_loads(p.assignment, loads, sorted(caps))
    assert after["n4"] >= 0.9 * share and p.filled > 1 and p.budget == 1
    assert p.forced == 0


@given(
    st.integers(2, 6),
    st.integers(0, 2**32),
    st.sampled_from([0.02, 0.05, 0.1]),
    st.integers(0, 3),
)
def test_load_moves_stay_within_the_budget_across_consecutive_plans(
    nodes: int, seed: int, budget: float, cooldown: int
) -> None:
    # Plans chained as the leader chains them (each hands on its cooling and
    # its nodes): with nobody joining or leaving, no plan moves more than the
    # budget, though load moves may empty a node (it is not then a join).
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(nodes)]
    caps = {n: rng.choice([1.0, 2.0, 4.0]) for n in names}
    total = rng.randint(10, 80)
    base = [rng.paretovariate(1.0) for _ in range(total)]  # skewed: some tokens are hot
    owners: list[str | None] = [rng.choice(names) for _ in range(total)]
    policy = LoadPolicy(budget=budget, cooldown=cooldown)
    cooling: dict[int, int] = {}
    known: tuple[str, ...] = tuple(names)
    for _ in range(6):
        loads = [w * rng.uniform(0.7, 1.3) for w in base]
        p = balance_load(owners, loads, caps, cooling=cooling, policy=policy, known=known)
        assert p.forced == p.filled == 0
        assert len(p.moves) == p.budgeted <= p.budget
        owners, cooling, known = list(p.assignment), dict(p.cooling), p.nodes


def test_a_node_emptied_by_load_moves_is_not_a_join() -> None:
    # Tokens 0 and 1 are hot; 0 is cooling down and stays on n0.  The plan
    # finds room for n2's only token elsewhere, and n2 ends up holding nothing.
    start = ["n0", "n0", "n1", "n3", "n2"]
    loads = [20.0, 50.0, 3.0, 1.0, 3.0]
    caps = {"n0": 2.0, "n1": 2.0, "n2": 1.0, "n3": 2.0}
    first = balance_load(start, loads, caps, cooling={0: 2}, policy=LoadPolicy(budget=1.0))
    assert first.counts[first.nodes.index("n2")] == 0
    lean = LoadPolicy(budget=0.01)  # one load move a plan
    after = list(first.assignment)
    joined = balance_load(after, loads, caps, cooling=first.cooling, policy=lean)
    assert joined.filled > joined.budget == 1  # without the nodes, n2 looks newly joined
    paced = balance_load(after, loads, caps, cooling=first.cooling, policy=lean, known=first.nodes)
    assert paced.filled == 0 and len(paced.moves) <= paced.budget


def test_orphans_go_to_the_least_loaded_node_heaviest_first() -> None:
    start: list[str | None] = ["a", "a", "b", None, "gone", "gone"]
    loads = [1.0, 1.0, 3.0, 5.0, 0.5, 2.0]
    p = balance_load(start, loads, {"a": 1.0, "b": 1.0}, policy=LoadPolicy(band=10.0))
    assert p.forced == 3 and p.budgeted == 0
    # 3 (5.0) to a (2 -> 7); 5 (2.0) to b (3 -> 5); 4 (0.5) to b (5 -> 5.5).
    assert p.assignment == ("a", "a", "b", "a", "b", "b")


def test_hysteresis_leaves_noise_alone() -> None:
    names = ["a", "b"]
    loads = [1.0] * 20
    start = [names[t % 2] for t in range(20)]
    loads[0] = 1.8  # a is 8% over the mean: inside the 10% band
    p = balance_load(start, loads, dict.fromkeys(names, 1.0))
    assert p.moves == () and p.finished


# -- the estimator -----------------------------------------------------------------------


def test_a_steady_cost_rate_is_estimated() -> None:
    est = LoadEstimate.empty(4, half_life=60.0)
    for k in range(1, 2001):  # token 1 costs 0.5 s every second, token 2 2 s every 4 s
        now = float(k)
        costs = [(1, 0.5, now)] + ([(2, 2.0, now)] if k % 4 == 0 else [])
        est = est.observe(now, costs)
    rates = est.rates(2000.0)
    assert rates[0] == 0.0 and est.measured
    assert rates[1] == pytest.approx(0.5, rel=0.02)
    assert rates[2] == pytest.approx(0.5, rel=0.05)


def test_the_estimate_halves_every_half_life_and_batches_commute() -> None:
    est = LoadEstimate.empty(3, half_life=10.0, at=100.0)
    one = est.observe(100.0, [(0, 4.0, 95.0), (1, 2.0, 100.0)])
    two = est.observe(100.0, [(1, 2.0, 100.0)]).observe(100.0, [(0, 4.0, 95.0)])
    assert one.rates() == pytest.approx(two.rates())
    assert one.sums[0] == pytest.approx(4.0 * 0.5**0.5)
    assert one.rates(110.0) == pytest.approx([r / 2 for r in one.rates()])
    assert one.observe(90.0, []).sums == one.sums  # time going backwards decays nothing
    future = one.observe(100.0, [(2, 1.0, 500.0)])  # a later date counts at now
    assert future.sums[2] == 1.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: LoadEstimate.empty(0, 10.0),
        lambda: LoadEstimate.empty(4, 0.0),
        lambda: LoadEstimate.empty(4, math.inf),
        lambda: LoadEstimate.empty(4, 1.0).observe(1.0, [(4, 1.0, 1.0)]),
        lambda: LoadEstimate.empty(4, 1.0).observe(1.0, [(0, -1.0, 1.0)]),
        lambda: LoadEstimate.empty(4, 1.0).observe(math.nan, []),
        lambda: balance_load(["a"], [-1.0], {"a": 1.0}),
        lambda: balance_load(["a"], [math.nan], {"a": 1.0}),
        lambda: balance_load(["a"], ["x"], {"a": 1.0}),  # type: ignore[list-item]
        lambda: balance_load(["a"], [1.0], {"a": 0.0}),
        lambda: balance_load(["a"], [1.0], {"a": "big"}),  # type: ignore[dict-item]
        lambda: balance_load(["a"], [1.0], None),  # type: ignore[arg-type]
        lambda: balance_load(["a"], [1.0, 2.0], {"a": 1.0}),
        lambda: balance_load(["a"], [1.0], {"a": 1.0}, cooling={3: 1}),
        lambda: balance_load(["a"], [1.0], {"a": 1.0}, cooling={0: -1}),
        lambda: balance_load(["a"], [1.0], {"a": 1.0}, locks={0: "a%"}),
        lambda: balance_load(["a"], [1.0], {"a": 1.0}, known="a"),
        lambda: balance_load(["a"], [1.0], {"a": 1.0}, known=7),  # type: ignore[arg-type]
        lambda: LoadPolicy(band=0.0),
        lambda: LoadPolicy(band=0.1, hysteresis=0.1),
        lambda: LoadPolicy(band=0.1, margin=0.05, hysteresis=0.05),
        lambda: LoadPolicy(margin=-0.01),
        lambda: LoadPolicy(budget=0.0),
        lambda: LoadPolicy(budget=1.5),
        lambda: LoadPolicy(cooldown=-1),
        lambda: LoadPolicy(cooldown=1.5),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_refused_naming_it(call: object) -> None:
    with pytest.raises(InvalidArgument):
        call()  # type: ignore[operator]


def test_a_bad_node_name_is_refused() -> None:
    with pytest.raises(InvalidNodeName):
        balance_load([None], [1.0], {"": 1.0})


def test_plan_fields() -> None:
    p = balance_load(["a", "b"], [1.0, 3.0], {"a": 1.0, "b": 3.0})
    assert isinstance(p, LoadPlan)
    assert p.counts == (1, 1) and p.max_over_mean == pytest.approx(1.0)
