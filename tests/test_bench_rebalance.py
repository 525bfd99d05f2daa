"""The rebalance benchmark: its --quick run, and the alternatives it compares against."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from benchmarks import rebalance
from benchmarks.alternatives import (
    BoundedLoadRing,
    HashRing,
    JumpHash,
    Maglev,
    ModuloHash,
    Rendezvous,
    Striping,
    default_schemes,
    is_prime,
    jump_hash,
    token_key,
    token_keys,
)
from tests.support.planner_oracle import balanced_lower_bound, brute_force, exact_pinned

KEYS = token_keys(2_000, b"test")
NODES = [f"node-{i:03d}" for i in range(20)]

ALL = {s.name for s in default_schemes()} | {"jobsync"}
NO_JUMP_MIDDLE = {"initial", "join", "pinned-initial", "pinned-join"}


# --------------------------------------------------------------------------
# the --quick run


@pytest.fixture(scope="module")
def quick_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    path: Path = tmp_path_factory.mktemp("bench") / "rows.json"
    assert rebalance.main(["--quick", "--quiet", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert isinstance(rows, list)
    return rows


def _one(rows: list[dict[str, Any]], **match: object) -> dict[str, Any]:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, len(found))
    return found[0]


def test_quick_rows_have_the_documented_fields(quick_rows: list[dict[str, Any]]) -> None:
    needed = {
        "scenario", "algorithm", "total_tokens", "nodes", "pinned", "moved", "lower_bound",
        "max_over_avg", "max_minus_min", "plan_ms", "plan_ms_min", "plan_ms_max",
    }  # fmt: skip
    for row in quick_rows:
        assert needed <= row.keys()
        assert row["plan_ms_min"] <= row["plan_ms"] <= row["plan_ms_max"]


def test_jobsync_reaches_the_lower_bound_with_perfect_balance(
    quick_rows: list[dict[str, Any]],
) -> None:
    ours = [r for r in quick_rows if r["algorithm"] == "jobsync"]
    assert {r["scenario"] for r in ours} == set(rebalance.SCENARIOS)
    for row in ours:
        assert row["moved"] == row["lower_bound"], row
        assert row["check"] in ("closed form", "flow"), row
        if row["pinned"]:
            assert row["pin_violations"] == 0, row
        else:
            assert row["max_minus_min"] <= 1, row
    # The movement law's numbers (docs/PROTOCOL.md section 3) at T = 10,000.
    assert _one(ours, scenario="join", total_tokens=10_000, nodes=100)["moved"] == 99
    assert _one(ours, scenario="join", total_tokens=10_000, nodes=10)["moved"] == 909
    assert _one(ours, scenario="leave", total_tokens=10_000, nodes=100)["moved"] == 100
    assert _one(ours, scenario="crash", total_tokens=10_000, nodes=10)["moved"] == 1_000
    burst = _one(ours, scenario="burst", total_tokens=10_000, nodes=100)
    assert burst["moved"] == 10 * 100  # ten victims of 100 tokens each
    # The gpu outage leaves the ['gpu-%']-only tokens (10%) unowned.
    outage = _one(ours, scenario="pinned-gpu-outage", total_tokens=1_000)
    assert outage["unowned"] == 100


def test_every_alternative_is_reported_in_every_scenario(
    quick_rows: list[dict[str, Any]],
) -> None:
    groups: dict[tuple[object, ...], set[object]] = {}
    for row in quick_rows:
        key = (row["scenario"], row["total_tokens"], row["nodes"])
        groups.setdefault(key, set()).add(row["algorithm"])
    assert len(groups) >= 20
    for (scenario, _, _), algorithms in groups.items():
        expected = ALL - {"jump-middle"} if scenario in NO_JUMP_MIDDLE else ALL
        if scenario == "pinned-messy":
            expected = {"jobsync"}
        assert algorithms == expected, scenario


def test_alternatives_lose_where_the_field_notes_say(
    quick_rows: list[dict[str, Any]],
) -> None:
    at = {"total_tokens": 10_000, "nodes": 100}
    # Renumbering Jump after a middle removal moves about half of all tokens.
    middle = _one(quick_rows, scenario="leave", algorithm="jump-middle", **at)
    assert middle["moved"] > 20 * middle["lower_bound"]
    assert 3_000 < middle["moved"] < 7_000
    # ...while removing the last bucket moves only its tokens.
    end = _one(quick_rows, scenario="leave", algorithm="jump", **at)
    assert end["moved"] == end["forced"]
    # The tooz ring is visibly unbalanced at 100 tokens per node.
    ring = _one(quick_rows, scenario="initial", algorithm="ring-32", **at)
    assert ring["max_over_avg"] > 1.1
    # Modulo and striping move nearly everything on a join.
    for algo in ("modulo", "striping"):
        assert _one(quick_rows, scenario="join", algorithm=algo, **at)["moved"] > 9_000
    # HRW and the ring move exactly the victim's tokens on a crash.
    for algo in ("hrw", "ring-32", "ring-160"):
        row = _one(quick_rows, scenario="crash", algorithm=algo, **at)
        assert row["moved"] == row["forced"], algo
    # Bounded loads keeps its promise: max/avg <= 1 + eps (up to the ceiling).
    bounded = _one(quick_rows, scenario="initial", algorithm="bounded-0.25", **at)
    assert bounded["max_over_avg"] <= 1.25
    # Naive hashing breaks pins; jobsync never does.
    for row in quick_rows:
        if row["pinned"] and row["algorithm"] != "jobsync":
            assert row["pin_violations"] > 50, row


def test_a_rolling_deploy_costs_jobsync_one_move_per_token(
    quick_rows: list[dict[str, Any]],
) -> None:
    ours = _one(quick_rows, scenario="rolling", algorithm="jobsync")
    assert ours["moved"] == ours["lower_bound"] == ours["total_tokens"]
    hrw = _one(quick_rows, scenario="rolling", algorithm="hrw")
    assert hrw["moved"] > 1.3 * ours["moved"]


def test_plot_without_matplotlib_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert rebalance.main(["--quick", "--plot", str(tmp_path / "x.png")]) == 2
    assert "pip install" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------
# lower bounds and the independent pinned check


def test_balanced_lower_bound_matches_the_field_notes() -> None:
    nodes = [f"n{i}" for i in range(100)]
    owners: list[str | None] = [nodes[t % 100] for t in range(10_000)]
    assert balanced_lower_bound(10_000, owners, [*nodes, "new"]) == 99
    assert balanced_lower_bound(10_000, owners, nodes[1:]) == 100
    # Unbalanced start: the "+1" slots go to the nodes holding the most.
    owners2: list[str | None] = ["a"] * 6 + ["b"] * 3 + [None]
    assert balanced_lower_bound(10, owners2, ["a", "b", "c"]) == 1 + 2


@pytest.mark.parametrize("seed", range(40))
def test_exact_pinned_agrees_with_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    nodes = rng.sample(["gpu-1", "gpu-2", "cpu-1", "cpu-2", "eu-1"], rng.randint(2, 4))
    total = rng.randint(3, 7)
    pool = [*nodes, "dead-1", None]
    owners = [rng.choice(pool) for _ in range(total)]
    rules = [("gpu-%",), ("gpu-%", "cpu-%"), ("eu-%",), ("cpu-_",), ("nomatch",)]
    locks = {t: rng.choice(rules) for t in range(total) if rng.random() < 0.6}
    exact = exact_pinned(total, owners, nodes, locks)
    assert exact is not None  # None would mean the answer touched its window
    best = brute_force(total, owners, nodes, locks)
    assert (exact.moves, exact.loads) == (best.moves, best.loads)


def test_exact_pinned_agrees_with_the_planner_on_a_messy_cluster() -> None:
    from jobsync.core.planner import plan

    rng = random.Random(7)
    total = 2_000
    nodes = [f"gpu-{i}" for i in range(4)] + [f"eu-{i}" for i in range(5)]
    nodes += [f"cpu-{i}" for i in range(25)]
    owners = [rng.choice([*nodes, "cpu-dead", None]) for _ in range(total)]
    locks = rebalance.pinned_locks(3, total)
    exact = exact_pinned(total, owners, nodes, locks)
    assert exact is not None
    result = plan(total, owners, nodes, locks)
    count = Counter(result.assignment)
    loads = tuple(sorted((count.get(n, 0) for n in nodes), reverse=True))
    assert (result.moved, result.lower_bound, loads) == (exact.moves, exact.moves, exact.loads)


# --------------------------------------------------------------------------
# the alternatives


def test_keys_are_deterministic_and_salted() -> None:
    assert token_key(5) == token_key(5)
    assert token_key(5) != token_key(6)
    assert token_key(5, b"a") != token_key(5, b"b")
    assert token_keys(3) == [token_key(0), token_key(1), token_key(2)]


def test_hrw_removal_moves_only_the_victims_keys() -> None:
    hrw = Rendezvous()
    before = hrw.assign(KEYS, NODES)
    victim = NODES[7]
    after = hrw.assign(KEYS, [n for n in NODES if n != victim])
    for old, new in zip(before, after, strict=True):
        assert old in (new, victim)
    assert before.count(victim) > 0


def test_hrw_join_moves_keys_only_to_the_newcomer() -> None:
    hrw = Rendezvous()
    before = hrw.assign(KEYS, NODES)
    after = hrw.assign(KEYS, [*NODES, "new"])
    moved = [new for old, new in zip(before, after, strict=True) if old != new]
    assert moved and set(moved) == {"new"}


def test_hrw_incremental_update_equals_recomputing() -> None:
    hrw = Rendezvous()
    state = hrw.initial(KEYS, NODES)
    for nodes in (
        [*NODES, "x1"],
        [n for n in NODES if n not in ("node-003", "node-011")] + ["x1"],
        ["x2", "node-000", "node-019"],
        ["y"],
        NODES,
    ):
        state = hrw.update(state, nodes)
        assert state.owners == hrw.assign(KEYS, nodes)


@pytest.mark.parametrize("vnodes", [1, 32])
def test_ring_is_monotone(vnodes: int) -> None:
    ring = HashRing(vnodes)
    before = ring.assign(KEYS, NODES)
    after = ring.assign(KEYS, [*NODES, "new"])
    assert {new for old, new in zip(before, after, strict=True) if old != new} == {"new"}
    gone = ring.assign(KEYS, NODES[1:])
    for old, new in zip(before, gone, strict=True):
        assert old in (new, NODES[0])


def test_ring_with_few_vnodes_is_less_balanced_than_with_many() -> None:
    keys = token_keys(10_000)
    nodes = [f"n{i}" for i in range(50)]

    def spread(v: int) -> int:
        c = Counter(HashRing(v).assign(keys, nodes))
        return max(c.values()) - min(c.values())

    assert spread(1) > spread(160)


def test_jump_hash_range_and_monotonicity() -> None:
    for key in KEYS[:300]:
        assert jump_hash(key, 1) == 0
        prev = 0
        for n in range(1, 60):
            b = jump_hash(key, n)
            assert 0 <= b < n
            # Adding bucket n-1 at the end moves a key only into that bucket.
            assert b == prev or b == n - 1
            prev = b
    with pytest.raises(ValueError):
        jump_hash(1, 0)


def test_jump_assign_matches_the_reference_loop() -> None:
    jump = JumpHash()
    assert jump.assign(KEYS, NODES) == [NODES[jump_hash(k, len(NODES))] for k in KEYS]


def test_jump_buckets_end_only_and_renumbering() -> None:
    end, renumber = JumpHash("end"), JumpHash("renumber")
    buckets = ("a", "b", "c", "d")
    assert end.next_buckets(buckets, ["a", "b", "c"]) == ("a", "b", "c")
    assert end.next_buckets(buckets, ["a", "x", "c", "d"]) == ("a", "x", "c", "d")  # slot reuse
    assert end.next_buckets(buckets, ["a", "b", "c", "d", "e"]) == ("a", "b", "c", "d", "e")
    with pytest.raises(ValueError, match="only remove buckets at the end"):
        end.next_buckets(buckets, ["a", "c", "d"])
    assert renumber.next_buckets(buckets, ["a", "c", "d", "e"]) == ("a", "c", "d", "e")
    # Removing the last bucket moves only its keys; removing the first moves most.
    state = end.initial(KEYS, NODES)
    last = end.update(state, NODES[:-1])
    assert sum(o != n for o, n in zip(state.owners, last.owners, strict=True)) == (
        state.owners.count(NODES[-1])
    )
    first = renumber.update(renumber.initial(KEYS, NODES), NODES[1:])
    moved = sum(o != n for o, n in zip(state.owners, first.owners, strict=True))
    assert moved > len(KEYS) // 2


@pytest.mark.parametrize(("size", "n"), [(251, 7), (65537, 10), (65537, 333)])
def test_maglev_table_is_balanced_within_one_slot(size: int, n: int) -> None:
    names = [f"b{i}" for i in range(n)]
    members, table = Maglev(size).table(names)
    assert members == sorted(names) and len(table) == size
    count = Counter(table)
    assert len(count) == n
    assert max(count.values()) - min(count.values()) <= 1


def test_maglev_needs_a_prime_and_disrupts_a_little() -> None:
    with pytest.raises(ValueError, match="prime"):
        Maglev(1000)
    assert is_prime(65537) and not is_prime(65535) and not is_prime(1)
    maglev = Maglev(65537)
    before = maglev.assign(KEYS, NODES)
    after = maglev.assign(KEYS, NODES[1:])
    orphans = before.count(NODES[0])
    moved = sum(o != n for o, n in zip(before, after, strict=True))
    assert orphans <= moved < 3 * orphans


def test_striping_and_modulo() -> None:
    striped = Striping().assign(KEYS, NODES)
    count = Counter(striped)
    assert max(count.values()) - min(count.values()) <= 1
    assert striped[:3] == sorted(NODES)[:3]
    assert ModuloHash().assign(KEYS, list(reversed(NODES))) == ModuloHash().assign(KEYS, NODES)


def test_bounded_loads_caps_every_node() -> None:
    bounded = BoundedLoadRing(0.25)
    for n in (3, 20, 300):
        nodes = [f"n{i}" for i in range(n)]
        count = Counter(bounded.assign(KEYS, nodes))
        assert max(count.values()) <= bounded.capacity(len(KEYS), n)
    # Arrival order matters: the same keys in another order land differently.
    shuffled = list(KEYS)
    random.Random(1).shuffle(shuffled)
    a = dict(zip(KEYS, bounded.assign(KEYS, NODES), strict=True))
    b = dict(zip(shuffled, bounded.assign(shuffled, NODES), strict=True))
    assert a != b


def test_schemes_refuse_bad_node_lists() -> None:
    for scheme in default_schemes():
        with pytest.raises(ValueError):
            scheme.assign(KEYS, [])
        with pytest.raises(ValueError):
            scheme.assign(KEYS, ["a", "a"])
