# Law (docs/PROTOCOL.md section 3): the plan's load vector is the lexicographically
# most balanced one the pins allow (floor/ceil of T/N without pins); among all
# such plans it makes the fewest moves; pins are always honoured and a token
# whose patterns match no live node is left unowned and reported; the same
# inputs give the same plan in every process, and re-planning a plan's own
# result moves nothing.
#
# Why the algorithm meets it:
# - Without effective pins (every assignable token may go anywhere) the
#   closed form is exact: the r = T mod N "+1" slots go to the nodes holding
#   the most, so moves = orphans + sum(max(0, held - target)), which is a
#   lower bound for any balanced plan and is reached by moving only surplus.
# - With pins, tokens with the same eligible set form a class and nodes with
#   the same classes form a type.  `balance.levels` computes the level
#   structure shared by every dec-min load vector (each class goes to one
#   level; each node of level i holds beta_i - 1 or beta_i).  Minimising
#   moves over exactly that set is a min-cost flow per level: keeping a
#   token costs 0, releasing it into its class's hub costs 1, a hub feeds
#   every eligible node of the level for free, and the box [beta-1, beta]
#   becomes mandatory edges (cost -BIG, BIG > T) plus one optional unit.
#   The flow is free to choose WHICH nodes take the +1 slots, so no per-node
#   target is fixed before moves are minimised (the pitfall docs/PROTOCOL.md section 3 warns of).
#
# Deterministic choice of tokens: nodes are indexed in name order, classes in
# order of their eligibility bitmask.  A node giving up k tokens of a class
# gives its k HIGHEST token ids; each class's released and orphaned tokens,
# in ascending id order, fill the receiving nodes in name order.  Nothing
# depends on set or dict iteration order of strings.
"""The pure planner: who should own each token next."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from itertools import compress
from types import MappingProxyType

import attrs

from jobsync.core import capacity
from jobsync.core.balance import densities, levels
from jobsync.core.errors import InvalidArgument
from jobsync.core.hashing import validate_total_tokens
from jobsync.core.minmove import level_moves
from jobsync.core.patterns import match_pattern
from jobsync.core.plan_inputs import lock_rules as _lock_rules
from jobsync.core.plan_inputs import node_names as _node_names
from jobsync.core.plan_inputs import owner_list as _owner_list

Move = tuple[int, str | None, str | None]


@attrs.frozen(kw_only=True)
class Plan:
    """Who should own each token next, and what changes to get there.

    ``assignment[t]`` is token ``t``'s new owner (None: unowned).  ``moves``
    lists ``(token, old owner, new owner)`` for every token whose owner
    changes, by token; it includes tokens that become unowned.  ``loads[k]``
    is the final token count of ``nodes[k]`` (``targets`` maps it by name).
    ``lower_bound`` is the fewest moves onto a node that any balanced plan
    could make; this plan makes exactly that many (``moved``).
    """

    total_tokens: int
    nodes: tuple[str, ...]
    assignment: tuple[str | None, ...]
    moves: tuple[Move, ...]
    unowned: frozenset[int]
    loads: tuple[int, ...]
    lower_bound: int

    def __attrs_post_init__(self) -> None:
        if len(self.assignment) != self.total_tokens or len(self.loads) != len(self.nodes):
            raise InvalidArgument(
                f"plan for {self.total_tokens} tokens and {len(self.nodes)} nodes has "
                f"{len(self.assignment)} assignments and {len(self.loads)} loads"
            )

    @property
    def targets(self) -> Mapping[str, int]:
        """Final token count of every live node, by name (read-only)."""
        return MappingProxyType(dict(zip(self.nodes, self.loads, strict=True)))

    @property
    def moved(self) -> int:
        """Number of moves that place a token on a node."""
        return sum(1 for move in self.moves if move[2] is not None)

    def owned_by(self, name: str) -> frozenset[int]:
        """The tokens ``name`` owns in this plan."""
        return frozenset(t for t, owner in enumerate(self.assignment) if owner == name)


def plan(
    total_tokens: int,
    owners: Mapping[int, str] | Sequence[str | None],
    nodes: Iterable[str],
    locks: Mapping[int, Sequence[str]] | None = None,
    capacities: Mapping[str, float] | None = None,
) -> Plan:
    """The balanced, minimum-move plan for ``total_tokens`` tokens over ``nodes``.

    ``owners`` maps token -> current owner (or is a sequence of owners, one
    per token, None for none); owners not in ``nodes`` are dead.  ``locks``
    maps token -> ordered LIKE patterns; the first pattern matching any live
    node decides the token's eligible nodes.  ``capacities`` maps node name
    -> capacity (default 1; names that are not in ``nodes`` are ignored):
    tokens are split in proportion to it (``jobsync.core.capacity``).  Every
    input is validated before any work; errors name the bad value.
    """
    total = validate_total_tokens(total_tokens)
    names = _node_names(nodes)
    current = _owner_list(total, owners)
    rules = _lock_rules(total, locks)
    weight = capacity.weights(names, capacity.validate_capacities(capacities))
    if not names:
        gone = [t for t, owner in enumerate(current) if owner is not None]
        return _finish(total, names, current, ([None] * total, gone, [], 0), set(range(total)))
    masks = _token_masks(names, rules)
    full = (1 << len(names)) - 1
    unowned = {t for t, mask in masks.items() if mask == 0}
    if all(mask in (0, full) for mask in masks.values()):
        outcome = _even(names, current, unowned, weight)
    else:
        outcome = _pinned(names, current, masks, weight)
    return _finish(total, names, current, outcome, unowned)


def lower_bound_moves(
    total_tokens: int,
    owners: Mapping[int, str] | Sequence[str | None],
    nodes: Iterable[str],
    capacities: Mapping[str, float] | None = None,
) -> int:
    """Fewest moves any balanced unpinned plan can make (docs/PROTOCOL.md section 3).

    ``orphans + sum(max(0, held - target))`` with the ``T mod N`` "+1" slots
    on the nodes holding the most (with ``capacities``, the largest-remainder
    targets of ``jobsync.core.capacity``).  With no live node nothing can
    move: 0.
    """
    total = validate_total_tokens(total_tokens)
    names = _node_names(nodes)
    current = _owner_list(total, owners)
    weight = capacity.weights(names, capacity.validate_capacities(capacities))
    if not names:
        return 0
    count = Counter(current)
    held = [count.get(name, 0) for name in names]
    target = _even_targets(held, total, weight)
    return total - sum(held) + sum(max(0, h - t) for h, t in zip(held, target, strict=True))


# -- eligibility ---------------------------------------------------------------


def _token_masks(names: tuple[str, ...], rules: dict[int, tuple[str, ...]]) -> dict[int, int]:
    """Eligible node set of each locked token, as a bitmask over ``names``."""
    by_pattern: dict[str, int] = {}
    by_rule: dict[tuple[str, ...], int] = {}
    for rule in rules.values():
        if rule in by_rule:
            continue
        mask = 0
        for pattern in rule:
            if pattern not in by_pattern:
                by_pattern[pattern] = _pattern_mask(pattern, names)
            mask = by_pattern[pattern]
            if mask:
                break
        by_rule[rule] = mask
    return {token: by_rule[rule] for token, rule in rules.items()}


def _pattern_mask(pattern: str, names: tuple[str, ...]) -> int:
    # Only names that start with the pattern's literal prefix can match, and
    # in code-point order (``names`` is sorted) they are contiguous.
    prefix: list[str] = []
    chars = iter(pattern)
    for ch in chars:
        if ch in "%_":
            break
        prefix.append(next(chars) if ch == "\\" else ch)
    head = "".join(prefix)
    mask = 0
    i = bisect_left(names, head)
    while i < len(names) and names[i].startswith(head):
        if match_pattern(pattern, names[i]):
            mask |= 1 << i
        i += 1
    return mask


def _members(mask: int) -> list[int]:
    """Indices of the set bits of ``mask``, ascending."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


# -- the closed form (no effective pins) -----------------------------------------


def _even_targets(held: list[int], assignable: int, weight: list[int] | None) -> list[int]:
    if weight is not None:
        return capacity.proportional_targets(held, assignable, weight)
    # The r "+1" slots go to the nodes holding the most; ties by name (the
    # sort is stable and `held` is in name order).
    q, r = divmod(assignable, len(held))
    target = [q] * len(held)
    for i in sorted(range(len(held)), key=lambda i: -held[i])[:r]:
        target[i] += 1
    return target


# (new owners, tokens whose owner changes, final load per node, lower bound)
Outcome = tuple[list[str | None], list[int], list[int], int]


def _even(
    names: tuple[str, ...], current: list[str | None], unowned: set[int], weight: list[int] | None
) -> Outcome:
    count = Counter(current)
    for t in unowned:
        count[current[t]] -= 1
    held = [count.get(name, 0) for name in names]
    target = _even_targets(held, len(current) - len(unowned), weight)
    live = set(names)
    dead = {owner for owner in count if owner not in live}  # with None
    movers = [t for t in _where(current, dead) if t not in unowned] if dead else []
    surplus: dict[str | None, int] = {
        w: h - t for w, h, t in zip(names, held, target, strict=True) if h > t
    }
    movers += _surplus(current, surplus, unowned)
    movers.sort()
    new = list(current)
    for t in unowned:
        new[t] = None
    it = iter(movers)  # orphans and surplus, ascending, fill short nodes in name order
    for name, h, t in zip(names, held, target, strict=True):
        for _ in range(t - h):
            new[next(it)] = name
    changed = movers + [t for t in unowned if current[t] is not None]
    return new, changed, target, len(movers)


def _surplus(
    current: list[str | None], surplus: dict[str | None, int], unowned: set[int]
) -> list[int]:
    """The ``surplus[w]`` HIGHEST token ids of each node ``w`` (skipping unowned ones)."""
    left = sum(surplus.values())
    out: list[int] = []
    for t in reversed(_where(current, surplus) if left else ()):
        owner = current[t]
        if surplus[owner] and t not in unowned:
            surplus[owner] -= 1
            out.append(t)
            left -= 1
            if not left:
                break
    return out


def _where(current: list[str | None], owners: Container[str | None]) -> list[int]:
    """Ids of the tokens whose owner is in ``owners``, ascending (a C-speed scan)."""
    return list(compress(range(len(current)), map(owners.__contains__, current)))


# -- pinned: dec-min levels, then a min-cost flow per level ------------------------


# One flow problem: (its nodes, its classes, each node's box).
Part = tuple[list[int], list[int], dict[int, tuple[int, int]]]


def _pinned(
    names: tuple[str, ...],
    current: list[str | None],
    masks: dict[int, int],
    weight: list[int] | None,
) -> Outcome:
    cls, class_masks, counts = _classes(len(names), len(current), masks)
    elig = [_members(m) for m in class_masks]
    node_type, classes_by_type, sizes = _types(len(names), elig, counts)
    parts: list[Part] = []
    if weight is None:
        node_level, class_level, betas = _structure(node_type, classes_by_type, sizes)
        # Each class may only use the nodes of its own level (the others are tight).
        elig = [[i for i in e if node_level[i] == class_level[c]] for c, e in enumerate(elig)]
        for j, beta in enumerate(betas):
            classes = [c for c, lv in enumerate(class_level) if lv == j]
            nodes = [i for i, lv in enumerate(node_level) if lv == j]
            box = _box(beta, len(nodes), sum(counts[c] for c in classes))
            parts.append((nodes, classes, dict.fromkeys(nodes, box)))
    else:
        # Capacities: one flow over every node, each within one token of its
        # share of the weighted optimal base (jobsync.core.capacity).
        type_weight = [0] * len(sizes)
        for i, k in enumerate(node_type):
            type_weight[k] += weight[i]
        density = densities(type_weight, classes_by_type)
        shares = [density[k] * w for k, w in zip(node_type, weight, strict=True)]
        parts.append(
            (list(range(len(names))), list(range(len(elig))), capacity.share_boxes(shares))
        )
    held, orphans = _group(names, current, cls, elig)
    new = [None if c < 0 else owner for c, owner in zip(cls, current, strict=True)]
    changed = [t for t, c in enumerate(cls) if c < 0 and current[t] is not None]
    lower = 0
    for nodes, classes, boxes in parts:
        if classes:
            chosen = set(classes)
            keeps = {key: len(toks) for key, toks in held.items() if key[0] in chosen}
            release, receive, moves = level_moves(
                nodes, boxes, classes=classes, keeps=keeps, orphans=orphans, elig=elig
            )
            lower += moves
            for c in classes:
                pool = _pool(c, elig[c], held, orphans[c], release)
                _deal(names, new, pool, [(i, receive.get((c, i), 0)) for i in elig[c]])
                changed += pool
    count = Counter(new)
    return new, changed, [count[name] for name in names], lower


def _classes(n: int, total: int, masks: dict[int, int]) -> tuple[list[int], list[int], list[int]]:
    """Class of each token (-1: unowned), class masks in order, class sizes."""
    full = (1 << n) - 1
    count = Counter(masks.values())
    count[full] += total - len(masks)
    class_masks = sorted(m for m in count if m and count[m])
    index = {m: c for c, m in enumerate(class_masks)}
    cls = [index.get(full, -1)] * total
    for t, m in masks.items():
        cls[t] = index.get(m, -1)
    return cls, class_masks, [count[m] for m in class_masks]


def _types(
    n: int, elig: list[list[int]], counts: list[int]
) -> tuple[list[int], list[tuple[int, tuple[int, ...]]], list[int]]:
    """Type of each node, each class as (count, eligible types), and nodes per type."""
    sig: list[list[int]] = [[] for _ in range(n)]
    for c, nodes in enumerate(elig):
        for i in nodes:
            sig[i].append(c)
    type_ids: dict[tuple[int, ...], int] = {}
    node_type = [type_ids.setdefault(tuple(s), len(type_ids)) for s in sig]
    sizes = [0] * len(type_ids)
    for k in node_type:
        sizes[k] += 1
    classes = [
        (counts[c], tuple(sorted({node_type[i] for i in nodes}))) for c, nodes in enumerate(elig)
    ]
    return node_type, classes, sizes


def _structure(
    node_type: list[int], classes: list[tuple[int, tuple[int, ...]]], sizes: list[int]
) -> tuple[list[int], list[int], list[int]]:
    """Level of each node and class, and beta of each level (densest first)."""
    type_level = [0] * len(sizes)
    betas = []
    for j, (beta, types) in enumerate(levels(sizes, classes)):
        betas.append(beta)
        for k in types:
            type_level[k] = j
    class_level = [max(type_level[k] for k in ts) for _, ts in classes]
    return [type_level[k] for k in node_type], class_level, betas


def _box(beta: int, nodes: int, load: int) -> tuple[int, int]:
    # Every node holds beta - 1 or beta; a total that forces one of the two
    # everywhere narrows the box (fewer optional edges in the flow).
    if load == (beta - 1) * nodes:
        return beta - 1, beta - 1
    if load == beta * nodes:
        return beta, beta
    return beta - 1, beta


def _group(
    names: tuple[str, ...], current: list[str | None], cls: list[int], elig: list[list[int]]
) -> tuple[dict[tuple[int, int], list[int]], list[list[int]]]:
    """Tokens each node may keep, per (class, node), and each class's orphans."""
    where: dict[str | None, int] = {name: i for i, name in enumerate(names)}
    ok = [bytearray(len(names)) for _ in elig]
    for c, nodes in enumerate(elig):
        for i in nodes:
            ok[c][i] = 1
    held: dict[tuple[int, int], list[int]] = {}
    orphans: list[list[int]] = [[] for _ in elig]
    for t, (c, owner) in enumerate(zip(cls, current, strict=True)):
        if c < 0:
            continue
        i = where.get(owner, -1)
        if i >= 0 and ok[c][i]:
            held.setdefault((c, i), []).append(t)
        else:
            orphans[c].append(t)
    return held, orphans


def _pool(
    c: int,
    elig: list[int],
    held: dict[tuple[int, int], list[int]],
    orphans: list[int],
    release: dict[tuple[int, int], int],
) -> list[int]:
    """Class ``c``'s tokens to place, ascending: orphans plus each node's HIGHEST ids."""
    pool = list(orphans)
    for i in elig:
        r = release.get((c, i), 0)
        if r:
            pool.extend(held[c, i][-r:])
    pool.sort()
    return pool


def _deal(
    names: tuple[str, ...], new: list[str | None], pool: list[int], gets: list[tuple[int, int]]
) -> None:
    """Hand ``pool`` out in order: node ``i`` takes the next ``a``, for each (i, a)."""
    pos = 0
    for i, a in gets:
        for t in pool[pos : pos + a]:
            new[t] = names[i]
        pos += a


def _finish(
    total: int,
    names: tuple[str, ...],
    current: list[str | None],
    outcome: Outcome,
    unowned: set[int],
) -> Plan:
    new, changed, loads, lower = outcome
    return Plan(
        total_tokens=total,
        nodes=names,
        assignment=tuple(new),
        moves=tuple((t, current[t], new[t]) for t in sorted(changed) if current[t] != new[t]),
        unowned=frozenset(unowned),
        loads=tuple(loads),
        lower_bound=lower,
    )
