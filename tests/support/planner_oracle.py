"""Oracles for the planner's optimality, written independently of ``jobsync.core.planner``.

The planner promises (docs/PROTOCOL.md, README "Pins"): every token on a live
node its lock allows (the first pattern that matches any live node decides),
the lexicographically most balanced load vector among such plans, and among
those the fewest moves.  What is here computes the same answers another way:

- ``eligible_nodes`` / ``eligibility``: the lock rule itself; ``pin_violations``
  and ``must_move`` count against it;
- ``balanced_lower_bound``: the closed-form fewest moves of an unpinned
  balanced plan (orphans, plus every node's surplus over its floor/ceil
  target, the "+1" slots going to the nodes holding the most);
- ``brute_force``: every assignment, by definition (tiny instances);
- ``flow_oracle``: a general min-cost flow over single tokens (networkx
  network simplex, imported when called): token -> eligible node costs 1 unless
  the node already owns it, and the k-th unit on a node costs (2k - 1) * BIG with
  BIG > T, so the optimum is BIG * sum(load^2) + moves.  Minimal sum(load^2) is
  the dec-min (lexicographically most balanced) vector on these M-convex sets
  (Frank & Murota), which ``brute_force`` checks on small cases;
- ``exact_pinned``: the same optimum at benchmark sizes, by a min-cost flow of
  its own (``_MinCostFlow``) over token classes, windowed by ``dense_levels``.

Why in ``tests/support``: both the planner tests (tests/core/test_planner.py,
tests/core/test_planner_pins.py, tests/test_bench_rebalance.py) and the
rebalance benchmark (benchmarks/rebalance.py) use it, and both can import
``tests``: pytest puts the checkout's root on ``sys.path`` (``tests`` is a
package), and the benchmarks already import from it (benchmarks/failover.py
the fault harness, benchmarks/scale.py ``tests.support.pg``) through
``benchmarks._common.repo_on_path``.  Neither package is installed (the wheel
ships ``jobsync`` alone), so nothing outside the checkout depends on it.  It
is test code: no planner module may import it.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from heapq import heappop, heappush

from jobsync.core.patterns import match_pattern

Owners = Sequence[str | None]
Locks = Mapping[int, Sequence[str]]
"""token -> its lock: patterns, first match on a live node decides."""
FLOW_CHECK_MAX_NODES = 2_000
"""``exact_pinned`` answers for clusters of at most this many nodes."""


# -- the lock rule ------------------------------------------------------------------------
def eligible_nodes(nodes: Sequence[str], rule: Sequence[str] | None) -> frozenset[str] | None:
    """The live nodes a token with lock ``rule`` may go to: every node when unlocked,
    else those of the first pattern that matches any; None when no pattern matches."""
    if rule is None:
        return frozenset(nodes)
    for pattern in rule:
        hits = frozenset(n for n in nodes if match_pattern(pattern, n))
        if hits:
            return hits
    return None


def eligibility(
    total: int, locks: Locks | None, nodes: Sequence[str]
) -> list[frozenset[str] | None]:
    """``eligible_nodes`` of every token (None: its lock matches no live node)."""
    everyone = frozenset(nodes)
    out: list[frozenset[str] | None] = [everyone] * total
    if not locks:
        return out
    by_rule: dict[tuple[str, ...], frozenset[str] | None] = {}
    for token, rule in locks.items():
        key = tuple(rule)
        if key not in by_rule:
            by_rule[key] = eligible_nodes(nodes, key)
        out[token] = by_rule[key]
    return out


def pin_violations(owners: Owners, elig: Sequence[frozenset[str] | None]) -> int:
    """Tokens on a node their lock does not allow, or owned although no node may hold them."""
    bad = 0
    for owner, allowed in zip(owners, elig, strict=True):
        if owner is None:
            continue
        if allowed is None or owner not in allowed:
            bad += 1
    return bad


def must_move(owners: Owners, elig: Sequence[frozenset[str] | None]) -> int:
    """Tokens that have to move: assignable, but not on a live node that may keep them."""
    return sum(
        1
        for owner, allowed in zip(owners, elig, strict=True)
        if allowed is not None and (owner is None or owner not in allowed)
    )


# -- closed form and brute force -------------------------------------------------------------
def balanced_lower_bound(total: int, owners: Owners, nodes: Sequence[str]) -> int:
    """Unpinned: ``orphans + sum(max(0, c_w - t_w))``, the "+1" slots to the biggest."""
    live = set(nodes)
    count = Counter(o for o in owners if o in live)
    orphans = total - sum(count.values())
    q, r = divmod(total, len(nodes))
    held = sorted((count.get(n, 0) for n in nodes), reverse=True)
    return orphans + sum(max(0, c - (q + 1 if i < r else q)) for i, c in enumerate(held))


def brute_force(total: int, owners: Owners, nodes: Sequence[str], locks: Locks) -> FlowCheck:
    """Dec-min by its lexicographic definition, then fewest moves: every assignment."""
    elig = eligibility(total, locks, nodes)
    choices: list[Sequence[str | None]] = [sorted(e) if e else [None] for e in elig]
    best: tuple[tuple[int, ...], int] | None = None
    for pick in itertools.product(*choices):
        count = Counter(p for p in pick if p is not None)
        shape = tuple(sorted((count.get(n, 0) for n in nodes), reverse=True))
        moves = sum(1 for o, p in zip(owners, pick, strict=True) if p is not None and o != p)
        if best is None or (shape, moves) < best:
            best = (shape, moves)
    assert best is not None
    return FlowCheck(best[1], best[0])


def flow_oracle(total: int, owners: Owners, nodes: Sequence[str], locks: Locks) -> FlowCheck:
    """The optimum by network simplex over single tokens (networkx; see the module doc)."""
    import networkx as nx

    big = total + 1
    graph = nx.DiGraph()
    reach = dict.fromkeys(nodes, 0)
    assignable = 0
    for t, allowed in enumerate(eligibility(total, locks, nodes)):
        for w in sorted(allowed or ()):
            graph.add_edge(("t", t), ("n", w), capacity=1, weight=0 if owners[t] == w else 1)
            reach[w] += 1
        if ("t", t) in graph:
            graph.nodes["t", t]["demand"] = -1
            assignable += 1
    if not assignable:
        return FlowCheck(0, (0,) * len(nodes))
    for w in nodes:
        for k in range(1, reach[w] + 1):
            graph.add_edge(("n", w), ("u", w, k), capacity=1, weight=(2 * k - 1) * big)
            graph.add_edge(("u", w, k), "sink", capacity=1, weight=0)
    graph.nodes["sink"]["demand"] = assignable
    cost, flow = nx.network_simplex(graph)
    loads = sorted((sum(flow.get(("n", w), {}).values()) for w in nodes), reverse=True)
    return FlowCheck(cost % big, tuple(loads))


# -- min-cost flow at benchmark sizes ------------------------------------------------------------
class _MinCostFlow:
    """Successive shortest paths (Dijkstra with potentials); costs must start >= 0."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.adj: list[list[int]] = [[] for _ in range(size)]
        self.head: list[int] = []
        self.cap: list[int] = []
        self.cost: list[int] = []

    def add(self, u: int, v: int, cap: int, cost: int) -> int:
        if cost < 0:
            raise ValueError("negative costs are not supported")
        e = len(self.head)
        self.head += [v, u]
        self.cap += [cap, 0]
        self.cost += [cost, -cost]
        self.adj[u].append(e)
        self.adj[v].append(e + 1)
        return e

    def flow(self, e: int) -> int:
        return self.cap[e ^ 1]

    def run(self, s: int, t: int, need: int) -> int:
        """Push up to ``need`` units at minimum cost; return the amount pushed.

        Primal-dual: Dijkstra on reduced costs finds the shortest distance to
        ``t``; potentials move by ``min(dist, dist[t])`` (which keeps every
        residual reduced cost >= 0); then a blocking flow over the
        zero-reduced-cost edges pushes every shortest path of that length.
        """
        size = self.size
        potential = [0] * size
        pushed = 0
        head, cap, cost, adj = self.head, self.cap, self.cost, self.adj
        while pushed < need:
            dist = self._dijkstra(s, potential)
            reach = dist[t]
            if reach is None:
                break
            for v in range(size):
                d = dist[v]
                potential[v] += reach if d is None or d > reach else d
            # Levels over the admissible graph (residual, zero reduced cost).
            level = [-1] * size
            level[s] = 0
            queue = [s]
            for u in queue:
                pu = potential[u]
                for e in adj[u]:
                    v = head[e]
                    if cap[e] > 0 and level[v] < 0 and cost[e] + pu - potential[v] == 0:
                        level[v] = level[u] + 1
                        queue.append(v)
            if level[t] < 0:  # cannot happen with exact potentials
                raise AssertionError("no admissible path to the sink")
            arc = [0] * size
            while pushed < need:
                got = self._augment(s, t, need - pushed, level, arc, potential)
                if not got:
                    break
                pushed += got
        return pushed

    def _dijkstra(self, s: int, potential: list[int]) -> list[int | None]:
        head, cap, cost, adj = self.head, self.cap, self.cost, self.adj
        dist: list[int | None] = [None] * self.size
        dist[s] = 0
        heap: list[tuple[int, int]] = [(0, s)]
        done = [False] * self.size
        while heap:
            d, u = heappop(heap)
            if done[u]:
                continue
            done[u] = True
            pu = potential[u]
            for e in adj[u]:
                if cap[e] > 0:
                    v = head[e]
                    nd = d + cost[e] + pu - potential[v]
                    dv = dist[v]
                    if dv is None or nd < dv:
                        dist[v] = nd
                        heappush(heap, (nd, v))
        return dist

    def _augment(
        self,
        s: int,
        t: int,
        limit: int,
        level: list[int],
        arc: list[int],
        potential: list[int],
    ) -> int:
        """One augmenting path along increasing levels (Dinic with current arcs)."""
        head, cap, cost, adj = self.head, self.cap, self.cost, self.adj
        path: list[int] = []
        u = s
        while True:
            if u == t:
                amount = min([limit, *(cap[e] for e in path)])
                for e in path:
                    cap[e] -= amount
                    cap[e ^ 1] += amount
                return amount
            edges = adj[u]
            while arc[u] < len(edges):
                e = edges[arc[u]]
                v = head[e]
                if (
                    cap[e] > 0
                    and level[v] == level[u] + 1
                    and cost[e] + potential[u] - potential[v] == 0
                ):
                    break
                arc[u] += 1
            if arc[u] < len(edges):
                e = edges[arc[u]]
                path.append(e)
                u = head[e]
                continue
            if u == s:
                return 0
            level[u] = -1  # a dead end for the rest of this phase
            e = path.pop()
            u = head[e ^ 1]
            arc[u] += 1


@dataclass(frozen=True)
class FlowCheck:
    """The optimum: fewest moves, and the load vector (sorted, descending)."""

    moves: int
    loads: tuple[int, ...]


def dense_levels(
    nodes: Sequence[str], elig: Sequence[frozenset[str] | None]
) -> dict[str, Fraction] | None:
    """Fractional dec-min load of every node, by peeling the densest union of node types.

    Nodes with the same eligibility signature form a type; the densest set
    of nodes (tokens confined to it per node) is always a union of types, so
    with few types every union can be tried.  None if there are too many types.
    """
    classes = Counter(e for e in elig if e is not None)
    sets = sorted(classes, key=sorted)
    signature: dict[str, tuple[bool, ...]] = {n: tuple(n in e for e in sets) for n in nodes}
    types = sorted(set(signature.values()))
    if len(types) > 12:
        return None
    members = {ty: [n for n in nodes if signature[n] == ty] for ty in types}
    # token groups as (count, bitmask of types they may use)
    groups = []
    for e, count in classes.items():
        mask = 0
        for i, ty in enumerate(types):
            if members[ty][0] in e:
                mask |= 1 << i
        groups.append((count, mask))
    density: dict[str, Fraction] = {}
    left = (1 << len(types)) - 1
    while left:
        best: tuple[Fraction, int, int] | None = None
        sub = left
        while sub:
            width = sum(len(members[types[i]]) for i in range(len(types)) if sub >> i & 1)
            confined = sum(c for c, m in groups if m and m & ~sub == 0)
            d = Fraction(confined, width)
            cand = (d, width, sub)
            if best is None or cand[:2] > best[:2]:
                best = cand
            sub = (sub - 1) & left
        assert best is not None
        d, _, chosen = best
        for i in range(len(types)):
            if chosen >> i & 1:
                for name in members[types[i]]:
                    density[name] = d
        groups = [(c, m & ~chosen) for c, m in groups if not (m and m & ~chosen == 0)]
        left &= ~chosen
    return density


def exact_pinned(
    total: int,
    owners: Sequence[str | None],
    nodes: Sequence[str],
    locks: Locks | None,
    max_nodes: int = FLOW_CHECK_MAX_NODES,
) -> FlowCheck | None:
    """Fewest moves among the lexicographically most balanced plans, by min-cost flow.

    Written independently of the planner: source -> (owner, eligible set)
    classes -> the owner (cost 0) or the set's hub (cost 1) -> eligible nodes
    -> sink through convex unit "tranches" (the k-th token of a node costs
    BIG * (2k - 1), BIG > T, so balance comes first and moves second).  To
    stay small, each node's tranches only span its peeled density +- 1; the
    units below are one edge of cost BIG each, which shifts every in-window
    solution by the same constant.  None when the answer touches the window
    edge (inconclusive) or the instance is too large (more than ``max_nodes`` nodes, or
    more than 12 node types for ``dense_levels``).
    """
    if len(nodes) > max_nodes:
        return None
    elig = eligibility(total, locks, nodes)
    density = dense_levels(nodes, elig)
    if density is None:
        return None
    live = set(nodes)
    classes: Counter[tuple[str | None, frozenset[str]]] = Counter()
    for owner, allowed in zip(owners, elig, strict=True):
        if allowed is None:
            continue
        keep = owner if owner in live and owner in allowed else None
        classes[keep, allowed] += 1
    hubs = sorted({e for _, e in classes}, key=sorted)
    order = sorted(nodes)
    index = {n: 2 + i for i, n in enumerate(order)}
    hub_index = {e: 2 + len(order) + i for i, e in enumerate(hubs)}
    class_keys = sorted(classes, key=lambda k: (k[0] or "", sorted(k[1])))
    first_class = 2 + len(order) + len(hubs)
    g = _MinCostFlow(first_class + len(class_keys))
    big = total + 1
    to_hub: list[int] = []
    for j, (keep, allowed) in enumerate(class_keys):
        v = first_class + j
        g.add(0, v, classes[keep, allowed], 0)
        if keep is not None:
            g.add(v, index[keep], classes[keep, allowed], 0)
        to_hub.append(g.add(v, hub_index[allowed], classes[keep, allowed], 1))
    for e in hubs:
        for n in sorted(e):
            g.add(hub_index[e], index[n], total, 0)
    windows: dict[str, tuple[int, int]] = {}
    sink_edges: dict[str, list[int]] = {}
    for n in order:
        d = density[n]
        lo = max(0, math.floor(d) - 1)
        hi = math.ceil(d) + 1
        windows[n] = (lo, hi)
        edges = []
        if lo:
            edges.append(g.add(index[n], 1, lo, big))
        for k in range(lo + 1, hi + 1):
            edges.append(g.add(index[n], 1, 1, big * (2 * k - 1)))
        sink_edges[n] = edges
    need = sum(classes.values())
    if g.run(0, 1, need) != need:
        return None
    loads = {n: sum(g.flow(e) for e in sink_edges[n]) for n in order}
    for n, (lo, hi) in windows.items():
        if (lo > 0 and loads[n] <= lo) or loads[n] >= hi:
            return None
    moves = sum(g.flow(e) for e in to_hub)
    return FlowCheck(moves, tuple(sorted(loads.values(), reverse=True)))


# -- capacities ------------------------------------------------------------------------------
#
# The planner's law with capacities (jobsync/core/capacity.py), computed here another
# way: exact Fractions of the capacities as written (decimal), never the planner's
# integer weights.
#
# - Unpinned: node i's quota is A * c_i / C for the A assignable tokens; each node gets
#   the floor, and the "+1" slots go to the largest remainders (ties: the node holding
#   the most beyond its floor, then by name).  Fewest moves: orphans + sum(max(0, held - target)).
# - Pinned: each node's fractional share is its capacity times the density of its part
#   of the weighted principal partition (peeled here by trying every union of node
#   types, densest by tokens confined per unit of capacity); every node holds the
#   floor or the ceiling of its share, and among all such assignments the fewest moves.


def _exact(capacity: float) -> Fraction:
    return Fraction(repr(float(capacity)))


def proportional_targets(
    total: int, owners: Owners, nodes: Sequence[str], capacities: Mapping[str, float]
) -> dict[str, int]:
    """Largest-remainder targets of an unpinned plan, by node name."""
    live = set(nodes)
    count = Counter(o for o in owners if o in live)
    order = sorted(nodes)
    caps = {n: _exact(capacities.get(n, 1.0)) for n in order}
    whole = sum(caps.values())
    quota = {n: total * caps[n] / whole for n in order}
    target = {n: math.floor(quota[n]) for n in order}
    extra = total - sum(target.values())
    ranked = sorted(order, key=lambda n: (-(quota[n] - target[n]), target[n] - count.get(n, 0), n))
    for n in ranked[:extra]:
        target[n] += 1
    return target


def proportional_lower_bound(
    total: int, owners: Owners, nodes: Sequence[str], capacities: Mapping[str, float]
) -> int:
    """Fewest moves onto the largest-remainder targets (no pins)."""
    live = set(nodes)
    count = Counter(o for o in owners if o in live)
    orphans = total - sum(count.values())
    target = proportional_targets(total, owners, nodes, capacities)
    return orphans + sum(max(0, count.get(n, 0) - t) for n, t in target.items())


def weighted_shares(
    nodes: Sequence[str], elig: Sequence[frozenset[str] | None], capacities: Mapping[str, float]
) -> dict[str, Fraction]:
    """Each node's share of the weighted lexicographically optimal base (few node types)."""
    caps = {n: _exact(capacities.get(n, 1.0)) for n in nodes}
    classes = Counter(e for e in elig if e is not None)
    sets = sorted(classes, key=sorted)
    signature = {n: tuple(n in e for e in sets) for n in nodes}
    types = sorted(set(signature.values()))
    members = {ty: [n for n in nodes if signature[n] == ty] for ty in types}
    groups = []
    for e, count in classes.items():
        mask = sum(1 << i for i, ty in enumerate(types) if members[ty][0] in e)
        groups.append((count, mask))
    share: dict[str, Fraction] = {}
    left = (1 << len(types)) - 1
    while left:
        best: tuple[Fraction, int] | None = None
        sub = left
        while sub:
            width = sum(caps[n] for i, ty in enumerate(types) if sub >> i & 1 for n in members[ty])
            confined = sum(c for c, m in groups if m and m & ~sub == 0)
            density = confined / width
            if best is None or density > best[0] or (density == best[0] and sub > best[1]):
                best = (density, sub)
            sub = (sub - 1) & left
        assert best is not None
        density, chosen = best
        for i, ty in enumerate(types):
            if chosen >> i & 1:
                for n in members[ty]:
                    share[n] = density * caps[n]
        groups = [(c, m & ~chosen) for c, m in groups if not (m and m & ~chosen == 0)]
        left &= ~chosen
    return share


def brute_force_weighted(
    total: int,
    owners: Owners,
    nodes: Sequence[str],
    locks: Locks,
    capacities: Mapping[str, float],
) -> tuple[dict[str, tuple[int, int]], int]:
    """Every node's (floor, ceiling) of its share, and the fewest moves of any assignment
    honouring the pins with every load inside those bounds (tiny instances)."""
    elig = eligibility(total, locks, nodes)
    share = weighted_shares(nodes, elig, capacities)
    box = {n: (math.floor(s), math.ceil(s)) for n, s in share.items()}
    choices: list[Sequence[str | None]] = [sorted(e) if e else [None] for e in elig]
    best: int | None = None
    for pick in itertools.product(*choices):
        count = Counter(p for p in pick if p is not None)
        if all(lo <= count.get(n, 0) <= hi for n, (lo, hi) in box.items()):
            moves = sum(1 for o, p in zip(owners, pick, strict=True) if p is not None and o != p)
            best = moves if best is None else min(best, moves)
    assert best is not None, "the shares' floor/ceiling box admits no assignment"
    return box, best
