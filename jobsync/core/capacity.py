# Law: a node of capacity c holds a share of the tokens proportional to c.
#
# - Capacities are read at a resolution of 1/1000 (``weights``): capacity
#   2.0 is weight 2000, and the weights are divided by their greatest common
#   divisor, so 1, 1, 2 and 0.5, 0.5, 1 are the same split.  Every node with
#   the same capacity (the default, 1) is the plain count-balanced case, and
#   ``weights`` then answers None: the planner takes exactly its unweighted
#   path, so capacities change nothing until they differ.
# - Without effective pins the target is the largest-remainder split of the
#   assignable tokens A (Hamilton's method): node i's exact quota is
#   A * w_i / W; it gets the floor, and the A - sum(floors) "+1" slots go to
#   the largest remainders, ties to the node holding the most beyond its
#   floor (a "+1" there saves a move; and re-planning a plan's own result
#   keeps its slots, so it moves nothing), then by name.  Every node ends
#   within one token of its exact quota, and the moves are orphans +
#   sum(max(0, held - target)), the fewest for that target.  With equal
#   weights every remainder and every floor tie, which is exactly the
#   unweighted rule (the "+1" slots to the nodes holding the most).
# - With pins, the fractional shares are the lexicographically optimal base
#   with respect to the weights (Fujishige 1980): the principal partition by
#   density p(X) / w(X) (tokens confined to the node set X per unit of
#   capacity, ``balance.partition``), and node i of a part of density d gets
#   d * w_i.  Each node then holds the floor or the ceiling of its share
#   (``share_boxes``), which the integrality of flows makes feasible, and the
#   planner's flow picks, among all such plans, one with the fewest moves.
#
# Integers throughout (weights, remainders, Fractions), so the same inputs
# give the same split in every process.
"""Capacities: validation, integer weights, the proportional (largest remainder) split."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

from jobsync.core.errors import InvalidArgument

DEFAULT_CAPACITY = 1.0
MIN_CAPACITY = 0.001
"""The finest capacity, and the resolution capacities are compared at."""
MAX_CAPACITY = 1_000_000.0
_SCALE = 1000


def validate_capacity(capacity: object, what: str = "capacity") -> float:
    """Return ``capacity`` as a float if it is a finite number in [0.001, 1e6].

    Raises InvalidArgument naming the value otherwise (booleans, strings,
    NaN, infinities, zero and negatives included).
    """
    if isinstance(capacity, bool) or not isinstance(capacity, (int, float)):
        raise InvalidArgument(f"{what} must be a number, got {capacity!r}")
    value = float(capacity)
    if not math.isfinite(value) or not MIN_CAPACITY <= value <= MAX_CAPACITY:
        raise InvalidArgument(
            f"{what} must be a finite number from {MIN_CAPACITY} to {MAX_CAPACITY:g}, "
            f"got {capacity!r}"
        )
    return value


def validate_capacities(capacities: object) -> dict[str, float]:
    """A mapping of node name -> capacity, every value validated (naming the node)."""
    if capacities is None:
        return {}
    if not isinstance(capacities, Mapping):
        raise InvalidArgument(
            f"capacities must be a mapping of name -> capacity, got {capacities!r}"
        )
    return {
        name: validate_capacity(value, f"capacity of {name!r}")
        for name, value in capacities.items()
    }


def weights(names: Sequence[str], capacities: Mapping[str, float]) -> list[int] | None:
    """Integer weights of ``names`` (missing names: the default), or None if all are equal."""
    raw = [round(capacities.get(n, DEFAULT_CAPACITY) * _SCALE) for n in names]
    if len(set(raw)) <= 1:
        return None
    common = math.gcd(*raw)
    return [w // common for w in raw]


def proportional_targets(held: Sequence[int], assignable: int, weight: Sequence[int]) -> list[int]:
    """Largest-remainder split of ``assignable`` tokens by ``weight``.

    Ties of remainder go to the node holding the most beyond its floor, then
    to the first in order (``held`` and ``weight`` are in name order).
    """
    total = sum(weight)
    target = [assignable * w // total for w in weight]
    remainder = [assignable * w % total for w in weight]
    extra = assignable - sum(target)
    order = sorted(range(len(weight)), key=lambda i: (-remainder[i], target[i] - held[i]))
    for i in order[:extra]:
        target[i] += 1
    return target


def share_boxes(shares: Sequence[Fraction]) -> dict[int, tuple[int, int]]:
    """The floor and ceiling of every node's fractional share, by node index."""
    return {i: (math.floor(s), math.ceil(s)) for i, s in enumerate(shares)}
