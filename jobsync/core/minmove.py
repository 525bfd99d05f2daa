# Law: `level_moves` returns the fewest moves that bring one dec-min level
# into its boxes (node i of the level holds lo_i..hi_i tokens, hi_i - lo_i <= 1;
# one box for the whole level without capacities, one per node with them),
# keeping pins: a token only ever lands on a node of its class.  Which nodes
# end at hi is NOT fixed in advance; the flow picks them (docs/PROTOCOL.md section 3).
#
# Why: tokens of one class on one node are interchangeable, so a plan is
# fully described by how many tokens of each class each node releases and
# receives.  That is a flow: releasing costs 1 (one move), a class hub hands
# tokens to any eligible node for free, orphans (already counted as moves)
# start in their hub, and the box becomes source/sink edges.  Box edges that
# MUST carry flow (surplus above hi, shortfall below lo, orphans) cost -big
# with big greater than any possible number of moves, so a minimum-cost flow
# saturates all of them first (the dec-min theory guarantees it can) and
# then has the fewest releases.  Minimum-cost flows on integer capacities
# are integral (total unimodularity), so the counts are exact.  The graph is
# O(nodes x classes), not O(tokens).
"""Minimum-move flow inside one dec-min level (stage 2 of the planner)."""

from __future__ import annotations

from jobsync.core.flow import INFINITE, FlowGraph


def level_moves(
    nodes: list[int],
    boxes: dict[int, tuple[int, int]],
    *,
    classes: list[int],
    keeps: dict[tuple[int, int], int],
    orphans: list[list[int]],
    elig: list[list[int]],
) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], int], int]:
    """Fewest moves that leave every node ``i`` of the level within ``boxes[i]``.

    Vertices: 0 source, 1 sink, one hub per class, one per node.  A node
    releases a kept token into its class's hub at cost 1; a hub feeds any
    eligible node at cost 0; orphans start in their hub.  Surplus over the
    box and orphans must leave the source, shortfall must reach the sink
    (cost -big, big > any move count, so they always saturate); one more
    unit either way is optional (cost 0).  Returns tokens released and
    received per (class, node), and the moves (orphans + released).
    """
    spare = sum(len(orphans[c]) for c in classes)
    big = sum(keeps.values()) + spare + 1
    hub = {c: 2 + j for j, c in enumerate(classes)}
    vertex = {i: 2 + len(classes) + p for p, i in enumerate(nodes)}
    g = FlowGraph(2 + len(classes) + len(nodes))
    must = [g.add_edge(0, hub[c], len(orphans[c]), -big) for c in classes if orphans[c]]
    load = dict.fromkeys(nodes, 0)
    out: dict[tuple[int, int], int] = {}
    for (c, i), h in sorted(keeps.items()):
        out[c, i] = g.add_edge(vertex[i], hub[c], h, 1)
        load[i] += h
    into = {(c, i): g.add_edge(hub[c], vertex[i], INFINITE) for c in classes for i in elig[c]}
    for i in nodes:
        v, held = vertex[i], load[i]
        lo, hi = boxes[i]
        if held > hi:
            must.append(g.add_edge(0, v, held - hi, -big))
        if held < lo:
            must.append(g.add_edge(v, 1, lo - held, -big))
        if lo < hi and held >= hi:
            g.add_edge(0, v, 1)
        if lo < hi and held <= lo:
            g.add_edge(v, 1, 1)
    # Potentials making every initial reduced cost non-negative.
    potential = [-big] * g.size
    potential[0], potential[1] = 0, -2 * big
    g.min_cost_flow(0, 1, potential)
    if any(g.cap[e] for e in must):
        raise AssertionError("planner bug: the dec-min box of a level is infeasible")
    release = {key: f for key, e in out.items() if (f := g.flow(e))}
    receive = {key: f for key, e in into.items() if (f := g.flow(e))}
    return release, receive, spare + sum(release.values())
