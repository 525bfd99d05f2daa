"""Balancing by measured load: jobsync against four other ways of placing weighted tokens.

    python -m benchmarks.balance [--quick] [--json PATH] [--svg PATH] [--seed N] [--quiet]

Every scenario runs rounds over 10,000 tokens.  In round r each algorithm
plans from what it measured in the rounds before (a decayed estimate,
half-life one round, `jobsync.core.loadestimate`), membership changes of
round r (a join, a crash) apply first, and the round's TRUE costs are then
measured on the new assignment.  Round 0 is the starting table (the count
planner's, or each hashing scheme's own placement) before any measurement.

Algorithms (each written here from its published description):

- ``jobsync``: `jobsync.core.loadbalance.balance_load` with the default
  policy (band 10%, hysteresis 5%, budget 2% of tokens a plan, cool-down 3);
  the count planner until something is measured.
- ``count``: `jobsync.core.planner.plan` with capacities, every round:
  capacity-proportional token counts, blind to load (jobsync today).
- ``slicer``: a Slicer-style greedy weighted mover: move the token that best
  evens the most and the least loaded node, again, while it helps, within
  the same 2% budget a round.
- ``bounded-ring``: consistent hashing with bounded loads, weighted: tokens
  in id order walk a ring (32 points per unit of capacity) to the first
  node whose measured load stays within 1.10 of its share; recomputed each
  round.
- ``two-choices``: the power of two choices, weighted: heaviest first, each
  token goes to the less loaded (per capacity) of its nodes on two
  independent rings; recomputed each round.

Per row (one per scenario, algorithm, node count and round):
``max_over_mean_load`` is max(load_i / c_i) / (L / C) on the round's true
costs; ``moved`` every token whose owner changed; ``load_moves`` those not
forced by a crash or a join; ``hottest_over_share`` the heaviest token over
an average node's share (L / n); ``floor`` the least max/mean any placement
can reach (the heaviest token alone on the largest node).  Targets (checked
by tests/test_bench_smoke.py): from round 3 on, jobsync's max/mean <= 1.10
wherever ``hottest_over_share`` < 0.10, and its load moves never exceed
``budget``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.alternatives import HashRing, token_keys
from benchmarks.svgplot import Panel, write_svg
from jobsync.core.loadbalance import balance_load, max_over_mean
from jobsync.core.loadestimate import LoadEstimate
from jobsync.core.loadpolicy import LoadPolicy
from jobsync.core.planner import plan

TOKENS = 10_000
RAMP = 4
DRIFT = 5
"""Hot-drift: rounds a token takes to heat up or cool down, and tokens that start to, a round."""
TARGET = 1.10
FROM_ROUND = 3
APPLIES_BELOW = 0.10
POLICY = LoadPolicy()
ALGORITHMS = ("jobsync", "count", "slicer", "bounded-ring", "two-choices")
Owners = list[str | None]


# -- scenarios -----------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    caps: dict[str, float]
    rounds: int
    costs: Callable[[int], list[float]]
    """The true cost of every token in round r."""
    joins: dict[int, tuple[str, float]] = field(default_factory=dict)
    crashes: dict[int, str] = field(default_factory=dict)


def _names(n: int) -> list[str]:
    return [f"node-{i:03d}" for i in range(n)]


def _noisy(base: list[float], seed: int, sigma: float = 0.05) -> Callable[[int], list[float]]:
    def costs(r: int) -> list[float]:
        rng = random.Random(seed * 1_000 + r)
        return [w * math.exp(rng.gauss(0.0, sigma)) for w in base]

    return costs


def zipf(s: float, n: int, seed: int, rounds: int, caps: Sequence[float] = (1.0,)) -> Scenario:
    rng = random.Random(seed)
    ranks = list(range(1, TOKENS + 1))
    rng.shuffle(ranks)
    base = [r**-s for r in ranks]
    mix = "" if len(caps) == 1 else "-caps"
    nodes = {name: caps[i % len(caps)] for i, name in enumerate(_names(n))}
    return Scenario(f"zipf-{s:g}{mix}", nodes, rounds, _noisy(base, seed))


def lognormal(n: int, seed: int, rounds: int, caps: Sequence[float], name: str) -> Scenario:
    rng = random.Random(seed)
    base = [math.exp(rng.gauss(0.0, 0.5)) for _ in range(TOKENS)]
    nodes = {node: caps[i % len(caps)] for i, node in enumerate(_names(n))}
    return Scenario(name, nodes, rounds, _noisy(base, seed))


def drift(n: int, seed: int, rounds: int, hot: int = 100, heat: float = 10.0) -> Scenario:
    """A hot set of ``hot`` tokens costing up to ``heat`` times the rest drifts: each round a
    few of its tokens start cooling and as many others start heating, over ``RAMP`` rounds."""
    rng = random.Random(seed)
    start = rng.sample(range(TOKENS), hot)
    since = dict.fromkeys(start, -RAMP)  # token -> round its heat began to rise
    ends: dict[int, int] = {}  # token -> round its heat began to fall
    for r in range(1, rounds + 1):
        for t in rng.sample(sorted(set(since) - set(ends)), DRIFT):
            ends[t] = r
        for _ in range(DRIFT):
            since.setdefault(rng.randrange(TOKENS), r)

    def costs(r: int) -> list[float]:
        out = [1.0] * TOKENS
        for t, up in since.items():
            level = min(1.0, max(0.0, (r - up) / RAMP))
            if t in ends:
                level = min(level, max(0.0, 1 - (r - ends[t]) / RAMP))
            out[t] += (heat - 1) * level
        return _noisy(out, seed)(r)

    return Scenario("hot-drift", dict.fromkeys(_names(n), 1.0), rounds, costs)


def join_crash(n: int, seed: int, rounds: int) -> Scenario:
    sc = lognormal(n, seed, rounds, (1.0,), "join-crash")
    sc.joins = {rounds // 3: ("node-new", 1.0)}
    sc.crashes = {2 * rounds // 3: _names(n)[n // 2]}
    return sc


def scenarios(quick: bool, seed: int) -> list[Scenario]:
    if quick:
        return [
            zipf(0.8, 10, seed, 6),
            zipf(1.2, 50, seed, 6),
            lognormal(50, seed, 6, (1.0, 2.0, 4.0), "mixed-caps"),
            drift(10, seed, 12),
            drift(50, seed, 12),
            join_crash(50, seed, 12),
        ]
    out = [zipf(s, n, seed, 10) for s in (0.8, 1.0, 1.2) for n in (10, 50, 200)]
    out += [zipf(1.0, 50, seed, 10, (1.0, 2.0, 4.0))]
    out += [lognormal(n, seed, 10, (1.0, 2.0, 4.0), "mixed-caps") for n in (10, 50)]
    out += [drift(n, seed, 20) for n in (10, 50, 200)]
    out += [join_crash(n, seed, 15) for n in (10, 50)]
    return out


# -- algorithms ----------------------------------------------------------------------------


class Algorithm:
    """One way of placing tokens, kept across rounds."""

    name = ""

    def step(self, owners: Owners, measured: list[float] | None, caps: dict[str, float]) -> Owners:
        raise NotImplementedError


class Jobsync(Algorithm):
    name = "jobsync"

    def __init__(self) -> None:
        self.cooling: dict[int, int] = {}
        self.known: set[str] | None = None  # the previous plan's nodes: the rest joined

    def step(self, owners: Owners, measured: list[float] | None, caps: dict[str, float]) -> Owners:
        known, self.known = self.known, set(caps)
        if measured is None or not any(measured):
            return list(plan(TOKENS, owners, list(caps), capacities=caps).assignment)
        p = balance_load(owners, measured, caps, cooling=self.cooling, policy=POLICY, known=known)
        self.cooling = dict(p.cooling)
        return list(p.assignment)


class Count(Algorithm):
    name = "count"

    def step(self, owners: Owners, measured: list[float] | None, caps: dict[str, float]) -> Owners:
        return list(plan(TOKENS, owners, list(caps), capacities=caps).assignment)


class Slicer(Algorithm):
    name = "slicer"

    def step(self, owners: Owners, measured: list[float] | None, caps: dict[str, float]) -> Owners:
        out = list(Count().step(owners, None, caps))  # crashes and joins first
        if measured is None:
            return out
        names = sorted(caps)
        held: dict[str, set[int]] = {n: set() for n in names}
        load = dict.fromkeys(names, 0.0)
        for t, o in enumerate(out):
            if o is not None:
                held[o].add(t)
                load[o] += measured[t]
        for _ in range(POLICY.moves_allowed(TOKENS)):
            hi = max(names, key=lambda n: load[n] / caps[n])
            lo = min(names, key=lambda n: load[n] / caps[n])
            top = load[hi] / caps[hi]
            best = min(
                held[hi],
                key=lambda t: max(
                    (load[hi] - measured[t]) / caps[hi], (load[lo] + measured[t]) / caps[lo]
                ),
                default=None,
            )
            if best is None:
                break
            w = measured[best]
            if max((load[hi] - w) / caps[hi], (load[lo] + w) / caps[lo]) >= top * (1 - 1e-9):
                break
            held[hi].discard(best)
            held[lo].add(best)
            load[hi] -= w
            load[lo] += w
            out[best] = lo
        return out


def _ring(caps: dict[str, float], purpose: int) -> tuple[list[int], list[str]]:
    ring = HashRing(128)
    pts = sorted(
        (p + purpose * 0x9E3779B97F4A7C15 & (1 << 64) - 1, n)
        for n, c in caps.items()
        for p, _ in ring.node_points(n)[: max(1, round(32 * c))]
    )
    return [p for p, _ in pts], [n for _, n in pts]


class BoundedRing(Algorithm):
    name = "bounded-ring"
    keys = token_keys(TOKENS)

    def step(self, owners: Owners, measured: list[float] | None, caps: dict[str, float]) -> Owners:
        weights = measured if measured is not None and any(measured) else [1.0] * TOKENS
        positions, point_owner = _ring(caps, 0)
        unit = sum(weights) / sum(caps.values())
        bound = {n: TARGET * c * unit for n, c in caps.items()}
        load = dict.fromkeys(caps, 0.0)
        out: Owners = []
        for t, k in enumerate(self.keys):
            w, i = weights[t], bisect_right(positions, k) % len(positions)
            for step in range(len(positions)):
                node = point_owner[(i + step) % len(positions)]
                if load[node] + w <= bound[node]:
                    break
            else:
                node = min(caps, key=lambda n: (load[n] + w) / caps[n])
            load[node] += w
            out.append(node)
        return out


class TwoChoices(Algorithm):
    name = "two-choices"
    keys = token_keys(TOKENS)

    def step(self, owners: Owners, measured: list[float] | None, caps: dict[str, float]) -> Owners:
        weights = measured if measured is not None and any(measured) else [1.0] * TOKENS
        rings = [_ring(caps, 1), _ring(caps, 2)]
        load = dict.fromkeys(caps, 0.0)
        out: Owners = [None] * TOKENS
        for t in sorted(range(TOKENS), key=lambda t: -weights[t]):
            first, second = (own[bisect_right(pos, self.keys[t]) % len(pos)] for pos, own in rings)
            node = min((first, second), key=lambda n: ((load[n] + weights[t]) / caps[n], n))
            load[node] += weights[t]
            out[t] = node
        return out


# -- running -------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    algorithm: str
    nodes: int
    round: int
    max_over_mean_load: float
    moved: int
    load_moves: int
    forced: int
    budget: int
    hottest_over_share: float
    floor: float
    target_applies: bool


def _node_loads(owners: Owners, costs: list[float], caps: dict[str, float]) -> list[float]:
    load = dict.fromkeys(caps, 0.0)
    for o, w in zip(owners, costs, strict=True):
        if o is not None:
            load[o] += w
    return [load[n] for n in sorted(caps)]


def run_one(sc: Scenario, algo: Algorithm, trace: list[list[float]] | None = None) -> list[Row]:
    caps = dict(sc.caps)
    owners: Owners = algo.step([None] * TOKENS, None, caps)
    estimate = LoadEstimate.empty(TOKENS, half_life=1.0)
    rows: list[Row] = []
    for r in range(sc.rounds + 1):
        moved = load_moves = forced = 0
        if r:
            joiner = sc.joins[r][0] if r in sc.joins else None
            if joiner is not None:
                caps[joiner] = sc.joins[r][1]
            if r in sc.crashes:
                del caps[sc.crashes[r]]
            new = algo.step(owners, list(estimate.rates(float(r))), caps)
            changed = [(a, b) for a, b in zip(owners, new, strict=True) if a != b]
            # Forced: a crashed node's tokens, and what a joining node takes.
            forced = sum(1 for a, b in changed if a not in caps or b == joiner)
            moved, load_moves = len(changed), len(changed) - forced
            owners = new
        costs = sc.costs(r)
        node_loads = _node_loads(owners, costs, caps)
        if trace is not None:
            unit = sum(node_loads) / sum(caps.values())
            trace.append(
                [x / (caps[n] * unit) for x, n in zip(node_loads, sorted(caps), strict=True)]
            )
        hottest, total = max(costs), sum(costs)
        rows.append(
            Row(
                scenario=sc.name,
                algorithm=algo.name,
                nodes=len(sc.caps),
                round=r,
                max_over_mean_load=round(
                    max_over_mean(node_loads, [caps[n] for n in sorted(caps)]), 4
                ),
                moved=moved,
                load_moves=load_moves,
                forced=forced,
                budget=POLICY.moves_allowed(TOKENS),
                hottest_over_share=round(hottest / (total / len(caps)), 4),
                floor=round(
                    max(1.0, hottest / (max(caps.values()) * total / sum(caps.values()))), 4
                ),
                target_applies=hottest / (total / len(caps)) < APPLIES_BELOW,
            )
        )
        estimate = estimate.observe(
            float(r + 1), [(t, w, float(r + 1)) for t, w in enumerate(costs) if w]
        )
    return rows


def make(name: str) -> Algorithm:
    return {
        "jobsync": Jobsync,
        "count": Count,
        "slicer": Slicer,
        "bounded-ring": BoundedRing,
        "two-choices": TwoChoices,
    }[name]()


def run(
    quick: bool, seed: int = 1, log: Callable[[str], None] | None = None
) -> tuple[list[Row], dict[str, list[list[float]]]]:
    """Every row, and per-node load traces of the plotted scenario (hot-drift, 50 nodes)."""
    rows: list[Row] = []
    traces: dict[str, list[list[float]]] = {}
    for sc in scenarios(quick, seed):
        for name in ALGORITHMS:
            started = time.perf_counter()
            plotted = sc.name == "hot-drift" and len(sc.caps) == 50 and name in ("jobsync", "count")
            trace: list[list[float]] | None = [] if plotted else None
            rows += run_one(sc, make(name), trace)
            if trace is not None:
                traces[name] = trace
            if log:
                log(f"{sc.name} n={len(sc.caps)} {name}: {time.perf_counter() - started:.1f} s")
    return rows, traces


# -- reporting -----------------------------------------------------------------------------


def summary(rows: Sequence[Row]) -> list[dict[str, object]]:
    """One line per scenario, node count and algorithm."""
    groups: dict[tuple[str, int, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.scenario, r.nodes, r.algorithm), []).append(r)
    out = []
    for (scenario, nodes, algo), rs in groups.items():
        late = [r for r in rs if r.round >= FROM_ROUND]
        level = [TARGET * max(1.0, r.floor) for r in rs]
        converged = next(
            (
                r.round
                for k, r in enumerate(rs)
                if all(x.max_over_mean_load <= level[k + j] for j, x in enumerate(rs[k:]))
            ),
            None,
        )
        out.append(
            {
                "scenario": scenario,
                "nodes": nodes,
                "algorithm": algo,
                "round0": rs[0].max_over_mean_load,
                "worst_from_3": max((r.max_over_mean_load for r in late), default=math.nan),
                "final": rs[-1].max_over_mean_load,
                "floor": rs[-1].floor,
                "moved_total": sum(r.moved for r in rs),
                "load_moves_max": max(r.load_moves for r in rs),
                "converged_round": converged,
                "target_applies": all(r.target_applies for r in late),
            }
        )
    return out


def table(rows: Sequence[Row]) -> str:
    cols = ("scenario", "N", "algorithm", "r0", "worst>=3", "final", "floor", "moved", "max/rnd")
    widths = (14, 4, 13, 6, 9, 6, 6, 7, 7, 4)
    lines = [" ".join(f"{c:>{w}}" for c, w in zip((*cols, "conv"), widths, strict=True))]
    last = None
    for s in summary(rows):
        if last is not None and (s["scenario"], s["nodes"]) != last:
            lines.append("")
        last = (s["scenario"], s["nodes"])
        conv = "-" if s["converged_round"] is None else s["converged_round"]
        cells = (
            f"{s['scenario']:<14}",
            f"{s['nodes']:>4}",
            f"{s['algorithm']:<13}",
            f"{s['round0']:>6.2f}",
            f"{s['worst_from_3']:>8.2f}{'*' if s['target_applies'] else ' '}",
            f"{s['final']:>6.2f}",
            f"{s['floor']:>6.2f}",
            f"{s['moved_total']:>7}",
            f"{s['load_moves_max']:>7}",
            f"{conv:>4}",
        )
        lines.append(" ".join(cells))
    return "\n".join(lines)


LEGEND = (
    "worst>=3: the worst max/mean from round {start} on (* where the hottest token is below "
    "{applies:.0%} of a node's share: target <= {target}); floor: the least any placement can "
    "reach; conv: the round from which max/mean stays within {target} x max(1, floor); "
    "max/rnd: the most load moves in a round (jobsync's budget: {budget})."
)


def plot(traces: dict[str, list[list[float]]], path: Path) -> None:
    panels = [
        Panel(
            title=f"{name}: load per node / its share, hot-drift, 50 nodes",
            series=[[row[k] for row in trace] for k in range(len(trace[0]))],
            guide=TARGET,
        )
        for name, trace in traces.items()
    ]
    write_svg(path, panels, xlabel="round", ylabel="load / share")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.balance", description=__doc__.splitlines()[0]
    )
    p.add_argument("--quick", action="store_true", help="fewer scenarios and rounds (seconds)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="rows as JSON (to stdout without PATH)"
    )
    p.add_argument("--svg", type=Path, metavar="PATH", help="write the load-per-node plot")
    p.add_argument("--quiet", action="store_true", help="no table")
    args = p.parse_args(argv)
    started = time.perf_counter()
    rows, traces = run(
        args.quick, args.seed, log=None if args.quiet else lambda m: print(m, file=sys.stderr)
    )
    payload = [asdict(r) for r in rows]
    if args.json == "-":
        print(json.dumps(payload))
    elif args.json:
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
    if not args.quiet and args.json != "-":
        print(table(rows))
        print(f"\n{len(rows)} rows in {time.perf_counter() - started:.1f} s.")
        print(
            LEGEND.format(
                start=FROM_ROUND,
                applies=APPLIES_BELOW,
                target=TARGET,
                budget=POLICY.moves_allowed(TOKENS),
            )
        )
    if args.svg is not None and traces:
        plot(traces, args.svg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
