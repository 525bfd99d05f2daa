# Law: `levels` returns the structure shared by EVERY lexicographically most
# balanced (decreasingly minimal) load vector: an ordered partition of the
# node types into levels with integers beta_1 > beta_2 > ..., such that a
# load vector x is dec-min iff
#   (a) every token is placed on a node of the LAST level its eligible set
#       reaches (earlier levels are tight: they hold only tokens that cannot
#       go anywhere later), and
#   (b) every node of level i holds beta_i - 1 or beta_i tokens.
# The totals per level are then forced, so every such x has the same sorted
# shape; by (a)/(b) the planner may pick ANY of them, which is what leaves it
# free to minimise moves.
#
# Why: let p(X) be the number of tokens whose eligible set lies inside the
# node set X.  Loads are feasible iff x(X) >= p(X) for all X (Hall).  The
# least possible maximum load is beta = ceil(max_X p(X)/|X|), and at least
# max_X (p(X) - (beta-1)|X|) nodes must hold beta; for any maximiser X* every
# dec-min x therefore has x(X*) = p(X*) with all of X* in {beta-1, beta} and
# every other node below beta; recurse on the rest with X* contracted away.
# The maximisers of p(X) - mu|X| for every mu are unions of the top levels of
# the principal partition (the densest-subset decomposition, Fujishige 1980),
# so we compute that partition once, by the classic divide step: at the mean
# density lambda, the minimal maximiser of p(X) - lambda|X| (one min cut)
# splits the problem into a denser restriction and a sparser contraction.
# Nodes with the same eligibility signature ("types") are interchangeable for
# balance, so all of this runs on types x token classes, which is small.
"""Dec-min level structure of a pinned assignment (stage 1 of the planner)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from jobsync.core.flow import INFINITE, FlowGraph

# (token count, eligible type ids): one class of interchangeable tokens.
TokenClass = tuple[int, tuple[int, ...]]


def levels(sizes: Sequence[int], classes: Sequence[TokenClass]) -> list[tuple[int, list[int]]]:
    """Integer dec-min levels, densest first, as ``(beta, type ids)``.

    ``sizes[k]`` is the number of nodes of type ``k``; every type appears in
    exactly one level.
    """
    result: list[tuple[int, list[int]]] = []
    for density, types in _partition(list(range(len(sizes))), list(classes), sizes):
        beta = -(-density.numerator // density.denominator)
        if result and density >= result[-1][0] - 1:
            result[-1][1].extend(types)
        else:
            result.append((beta, list(types)))
    return result


def densities(sizes: Sequence[int], classes: Sequence[TokenClass]) -> list[Fraction]:
    """The density of every type's part of the principal partition, by type id.

    With ``sizes`` as the total capacity weight of each type, a node of
    weight w then has the fractional share ``density * w``: the
    lexicographically optimal base with respect to the weights (see
    ``jobsync.core.capacity``).
    """
    out = [Fraction(0)] * len(sizes)
    for density, types in _partition(list(range(len(sizes))), list(classes), sizes):
        for k in types:
            out[k] = density
    return out


def _partition(
    types: list[int], classes: list[TokenClass], sizes: Sequence[int]
) -> list[tuple[Fraction, list[int]]]:
    # Principal partition, densest part first, as (density, types).
    out: list[tuple[Fraction, list[int]]] = []
    work = [(types, classes)]  # a stack; the denser half is pushed last
    while work:
        types, classes = work.pop()
        upper = _densest_split(types, classes, sizes)
        if upper is None:
            count = sum(n for n, _ in classes)
            out.append((Fraction(count, sum(sizes[k] for k in types)), types))
            continue
        lower = [k for k in types if k not in upper]
        inner = [(n, ts) for n, ts in classes if all(k in upper for k in ts)]
        outer = [
            (n, tuple(k for k in ts if k not in upper))
            for n, ts in classes
            if not all(k in upper for k in ts)
        ]
        work.append((lower, outer))
        work.append(([k for k in types if k in upper], inner))
    return out


def _densest_split(
    types: list[int], classes: list[TokenClass], sizes: Sequence[int]
) -> set[int] | None:
    """The minimal maximiser X of p(X) - mean * |X|, or None if it is empty."""
    count = sum(n for n, _ in classes)
    if count == 0 or len(types) == 1:
        return None
    width = sum(sizes[k] for k in types)
    # Scaled by `width` so that the mean density count/width is an integer.
    where = {k: 2 + len(classes) + i for i, k in enumerate(types)}
    graph = FlowGraph(2 + len(classes) + len(types))
    for i, (n, ts) in enumerate(classes):
        graph.add_edge(0, 2 + i, n * width)
        for k in ts:
            graph.add_edge(2 + i, where[k], INFINITE)
    for k in types:
        graph.add_edge(where[k], 1, count * sizes[k])
    graph.max_flow(0, 1)
    seen = graph.reachable(0)
    upper = {k for k in types if seen[where[k]]}
    return upper or None
