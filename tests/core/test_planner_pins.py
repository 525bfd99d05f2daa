"""Plain pinned cases of the planner: regressions and worked examples.

The general laws are properties in test_planner.py (against a min-cost-flow
oracle); these pin down behaviour a reader can check by hand.  Where a case is
too large to check by hand, tests/support/planner_oracle.py checks it.
"""

from __future__ import annotations

import random

from jobsync.core.patterns import match_pattern
from jobsync.core.planner import plan
from tests.support.planner_oracle import eligibility, exact_pinned, pin_violations

GPU = ["gpu-1", "gpu-2"]
CPU = ["cpu-1", "cpu-2"]


def test_fixing_per_node_targets_first_loses_moves() -> None:
    # 7 tokens pinned to gpu-%, 3 free.  Every dec-min plan has loads
    # {4, 3} on the gpu nodes and {2, 1} on the cpu nodes, but WHICH node of
    # each pair takes the larger load is free.  Fixing the targets first
    # (say the "+1" to the first name: gpu-1=4, cpu-1=2) costs 2 moves;
    # leaving the choice to the move minimisation costs none.
    owners = ["gpu-1"] * 3 + ["gpu-2"] * 4 + ["cpu-1"] + ["cpu-2"] * 2
    locks = {t: ["gpu-%"] for t in range(7)}
    p = plan(10, owners, GPU + CPU, locks)
    fixed = {"gpu-1": 4, "gpu-2": 3, "cpu-1": 2, "cpu-2": 1}
    held = {w: owners.count(w) for w in fixed}
    assert sum(max(0, held[w] - fixed[w]) for w in fixed) == 2
    assert sorted(p.loads) == [1, 2, 3, 4]
    assert p.moved == p.lower_bound == 0
    assert dict(p.targets) == {"cpu-1": 1, "cpu-2": 2, "gpu-1": 3, "gpu-2": 4}


def test_fixing_targets_first_loses_moves_with_orphans() -> None:
    # 5 gpu-pinned tokens (one on gpu-1, two on gpu-2, two on a dead node)
    # and 5 free ones, all on cpu-2.  Every dec-min plan has loads
    # {3, 3, 2, 2}.  The two orphans move whatever happens.  If cpu-2 is one
    # of the 3s it gives up only 2 free tokens (to cpu-1): 4 moves.  Targets
    # fixed by name (gpu-1=3, cpu-1=3, gpu-2=2, cpu-2=2) make cpu-2 give 3: 5.
    owners = ["gpu-1", "gpu-2", "gpu-2", "old", "old"] + ["cpu-2"] * 5
    locks = {t: ["gpu-%"] for t in range(5)}
    fixed = {"gpu-1": 3, "cpu-1": 3, "gpu-2": 2, "cpu-2": 2}
    held = {w: owners.count(w) for w in fixed}
    assert 2 + sum(max(0, held[w] - fixed[w]) for w in fixed) == 5
    p = plan(10, owners, GPU + CPU, locks)
    assert sorted(p.loads) == [2, 2, 3, 3]
    assert p.moved == p.lower_bound == 4
    assert p.targets["cpu-2"] == 3
    assert all(p.assignment[t] in GPU for t in range(5))


def test_unsatisfiable_pin_is_reported_and_never_assigned() -> None:
    p = plan(4, ["gpu-1", "gpu-1", None, "old"], GPU, {0: ["tpu-%"], 2: ["nomatch"]})
    assert p.assignment[0] is None and p.assignment[2] is None
    assert p.unowned == {0, 2}
    assert (0, "gpu-1", None) in p.moves
    assert all(t != 2 for t, _, _ in p.moves)  # unowned before and after
    assert p.moved == p.lower_bound == 1  # only the dead node's token lands


def test_first_pattern_matching_any_live_node_decides() -> None:
    locks = {t: ["gpu-%", "cpu-%"] for t in range(6)}
    p = plan(8, [None] * 8, GPU + CPU, locks)
    assert all(p.assignment[t] in GPU for t in range(6))  # even though gpu is fuller
    assert sorted(p.loads) == [1, 1, 3, 3]
    q = plan(8, list(p.assignment), [*CPU, "eu-1"], locks)  # the gpu nodes left
    assert all(q.assignment[t] in CPU for t in range(6))
    assert q.targets == {"cpu-1": 3, "cpu-2": 3, "eu-1": 2}


def test_a_few_pinned_nodes_carry_their_forced_load() -> None:
    # A GPU fleet scaled down: 150 tokens pinned to 10 gpu nodes force 15
    # each; the other 250 spread over 30 nodes as 8 or 9.
    names = [f"gpu-{i}" for i in range(10)] + [f"cpu-{i}" for i in range(30)]
    locks = {t: ["gpu-%"] for t in range(0, 400, 400 // 150)[:150]}
    p = plan(400, [None] * 400, names, locks)
    gpu = [n for w, n in p.targets.items() if w.startswith("gpu")]
    cpu = [n for w, n in p.targets.items() if w.startswith("cpu")]
    assert gpu == [15] * 10
    assert sorted(cpu) == [8] * 20 + [9] * 10
    assert p.moved == 400


def test_nested_pins_make_nested_levels() -> None:
    # 6 tokens only gpu-1 may hold, 4 for any gpu, 2 free: gpu-1 keeps 6
    # (it must), gpu-2 takes the 4 gpu tokens, cpu-1 the 2 free ones.
    locks = {t: ["gpu-1"] for t in range(6)} | {t: ["gpu-%"] for t in range(6, 10)}
    p = plan(12, ["gpu-2"] * 12, ["gpu-1", "gpu-2", "cpu-1"], locks)
    assert dict(p.targets) == {"cpu-1": 2, "gpu-1": 6, "gpu-2": 4}
    assert p.moved == 8  # 6 to gpu-1 and 2 to cpu-1; gpu-2 keeps its 4 gpu tokens
    assert {t for t in range(6, 10) if p.assignment[t] == "gpu-2"} == set(range(6, 10))


def test_patterns_with_escapes_select_the_right_nodes() -> None:
    names = ["a%b", "a_b", "ab", "a\\b", "axb"]
    for pattern, expected in [
        ("a\\%%", {"a%b"}),
        ("a\\_b", {"a_b"}),
        ("a_b", {"a%b", "a_b", "a\\b", "axb"}),
        ("a\\\\b", {"a\\b"}),
        ("a%", set(names)),
        ("%b", set(names)),
    ]:
        p = plan(3, [None] * 3, names, {t: [pattern] for t in range(3)})
        assert {p.assignment[t] for t in range(3)} <= expected, pattern
        assert expected == {w for w in names if match_pattern(pattern, w)}


def test_large_messy_pinned_start_keeps_every_promise() -> None:
    # The benchmark's shape, smaller: pins, optimality bookkeeping,
    # idempotence and determinism, and the optimum against the benchmark's
    # min-cost flow (which, unlike the networkx oracle, is fast at this size).
    rng = random.Random(7)
    names = [f"gpu-{i:02d}" for i in range(12)] + [f"eu-{i:02d}" for i in range(20)]
    names += [f"node-{i}" for i in range(150)]
    rules = [["gpu-%"], ["eu-%"], ["node-1%"], ["gpu-%", "cpu-%"], ["node-2_"], ["tpu-%"]]
    owners = [rng.choice([*names, "old-1", "old-2", None]) for _ in range(2000)]
    locks = {t: rules[t % len(rules)] for t in rng.sample(range(2000), 600)}
    p = plan(2000, owners, names, locks)
    for t, rule in locks.items():
        if rule == ["tpu-%"]:
            assert p.assignment[t] is None
        else:
            assert any(match_pattern(pattern, p.assignment[t] or "") for pattern in rule)
    assert p.unowned == {t for t, rule in locks.items() if rule == ["tpu-%"]}
    assert p.moved == p.lower_bound
    assert sum(p.loads) == 2000 - len(p.unowned)
    assert pin_violations(p.assignment, eligibility(2000, locks, names)) == 0
    exact = exact_pinned(2000, owners, names, locks)
    assert exact is not None  # None would mean the check was inconclusive
    assert (p.moved, tuple(sorted(p.loads, reverse=True))) == (exact.moves, exact.loads)
    again = plan(2000, list(p.assignment), list(reversed(names)), locks)
    assert again.moves == ()
    assert plan(2000, owners, list(reversed(names)), dict(sorted(locks.items()))) == p
