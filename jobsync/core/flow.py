# Law: `max_flow` returns a maximum s-t flow and `min_cost_flow` a flow of
# minimum total cost among ALL s-t flows of any value (it stops as soon as the
# cheapest augmenting path stops being negative).  Both are exact on integers.
#
# Why: `max_flow` is Dinic's algorithm (blocking flows on BFS level graphs).
# `min_cost_flow` is the primal-dual method: node potentials keep every
# residual reduced cost >= 0, Dijkstra finds the shortest augmenting distance,
# and a Dinic max flow over the zero-reduced-cost ("admissible") edges pushes
# every shortest path of that length at once.  Successive shortest paths keep
# the flow cost-optimal for its value, path lengths never decrease, so the
# first non-negative length marks the optimum over all values.  The caller
# supplies initial potentials that make every reduced cost non-negative.
#
# The graph is flat parallel lists (edge e and its reverse e ^ 1), because the
# planner calls this on graphs of tens of thousands of edges in pure Python.
"""Small exact flow solvers over a flat residual graph."""

from __future__ import annotations

from heapq import heappop, heappush

INFINITE = 1 << 62


class FlowGraph:
    """A residual graph over vertices ``0 .. size - 1``."""

    __slots__ = ("adj", "cap", "cost", "size", "to")

    def __init__(self, size: int) -> None:
        self.size = size
        self.adj: list[list[int]] = [[] for _ in range(size)]
        self.to: list[int] = []
        self.cap: list[int] = []
        self.cost: list[int] = []

    def add_edge(self, u: int, v: int, cap: int, cost: int = 0) -> int:
        """Add ``u -> v``; return its edge id (the reverse edge is ``id ^ 1``)."""
        e = len(self.to)
        self.to += (v, u)
        self.cap += (cap, 0)
        self.cost += (cost, -cost)
        self.adj[u].append(e)
        self.adj[v].append(e + 1)
        return e

    def flow(self, e: int) -> int:
        """Flow currently on edge ``e`` (the residual capacity of its reverse)."""
        return self.cap[e ^ 1]

    def reachable(self, s: int) -> list[bool]:
        """Vertices reachable from ``s`` along edges with residual capacity."""
        seen = [False] * self.size
        seen[s] = True
        stack = [s]
        to, cap, adj = self.to, self.cap, self.adj
        while stack:
            for e in adj[stack.pop()]:
                v = to[e]
                if cap[e] > 0 and not seen[v]:
                    seen[v] = True
                    stack.append(v)
        return seen

    def max_flow(self, s: int, t: int) -> int:
        """Augment a maximum flow from ``s`` to ``t``; return its value."""
        return _dinic(self, s, t, self.adj)

    def min_cost_flow(self, s: int, t: int, potential: list[int]) -> int:
        """Augment a minimum-cost ``s``-``t`` flow; return the cost added.

        ``potential`` must make every residual edge's reduced cost
        ``cost + potential[u] - potential[v]`` non-negative; it is updated
        in place.
        """
        total = 0
        while True:
            length = self._shortest(s, t, potential)
            if length >= 0:
                return total
            admissible = self._admissible(potential)
            total += length * _dinic(self, s, t, admissible)

    def _shortest(self, s: int, t: int, pot: list[int]) -> int:
        # Dijkstra on reduced costs, stopped when t is settled; potentials are
        # raised by min(dist, dist[t]), which keeps reduced costs non-negative.
        to, cap, cost, adj = self.to, self.cap, self.cost, self.adj
        dist = [INFINITE] * self.size
        dist[s] = 0
        heap = [(0, s)]
        while heap:
            d, u = heappop(heap)
            if d > dist[u]:
                continue
            if u == t:
                break
            base = d + pot[u]
            for e in adj[u]:
                if cap[e] > 0:
                    v = to[e]
                    nd = base + cost[e] - pot[v]
                    if nd < dist[v]:
                        dist[v] = nd
                        heappush(heap, (nd, v))
        dt = dist[t]
        if dt == INFINITE:
            return 0
        for v, dv in enumerate(dist):
            pot[v] += dv if dv < dt else dt
        return pot[t] - pot[s]

    def _admissible(self, pot: list[int]) -> list[list[int]]:
        to, cost = self.to, self.cost
        return [
            [e for e in edges if cost[e] + pu == pot[to[e]]]
            for edges, pu in zip(self.adj, pot, strict=True)
        ]


def _dinic(g: FlowGraph, s: int, t: int, adj: list[list[int]]) -> int:
    total = 0
    while True:
        level = _levels(g, s, t, adj)
        if level[t] < 0:
            return total
        total += _blocking(g, s, t, adj, level)


def _levels(g: FlowGraph, s: int, t: int, adj: list[list[int]]) -> list[int]:
    to, cap = g.to, g.cap
    level = [-1] * g.size
    level[s] = 0
    frontier = [s]
    while frontier and level[t] < 0:
        nxt = []
        for u in frontier:
            lv = level[u] + 1
            for e in adj[u]:
                v = to[e]
                if cap[e] > 0 and level[v] < 0:
                    level[v] = lv
                    nxt.append(v)
        frontier = nxt
    return level


def _blocking(g: FlowGraph, s: int, t: int, adj: list[list[int]], level: list[int]) -> int:
    # Iterative DFS with current-arc pointers; a dead end is cut off by
    # setting its level to -1.
    to, cap = g.to, g.cap
    arc = [0] * g.size
    path: list[int] = []
    total = 0
    u = s
    while True:
        if u == t:
            pushed = min(cap[e] for e in path)
            for e in path:
                cap[e] -= pushed
                cap[e ^ 1] += pushed
            total += pushed
            cut = next(i for i, e in enumerate(path) if cap[e] == 0)
            del path[cut:]
            u = to[path[-1]] if path else s
            continue
        edges = adj[u]
        i = arc[u]
        want = level[u] + 1
        while i < len(edges):
            e = edges[i]
            if cap[e] > 0 and level[to[e]] == want:
                break
            i += 1
        arc[u] = i
        if i < len(edges):
            e = edges[i]
            path.append(e)
            u = to[e]
        elif u == s:
            return total
        else:
            level[u] = -1
            u = to[path.pop() ^ 1]
