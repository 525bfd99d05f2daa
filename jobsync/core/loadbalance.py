# Law: `balance_load` moves tokens so that capacity-normalised MEASURED load is
# within a band, in three phases, and says which of its promises it kept.
#
# Terms: node i has capacity c_i; token t has load w_t (>= 0, an estimate);
# L is the load of every owned token, C the capacity of every live node, and
# unit = L / C is the fair load per unit of capacity (after hot tokens, below,
# take their nodes: unit = what is left over what is left).  Node i's fair
# share is c_i * unit, its TRIGGER (1 + band - margin) * c_i * unit and its
# CEILING (trigger - hysteresis) * c_i * unit (`LoadPolicy`): the band is the
# promise, the margin is room left for load to drift between plans.
# max/mean is max_i(load_i / c_i) / unit.
#
# 1. Orphans (never throttled).  A token whose owner is not live, or not
#    eligible under its pin, moves: heaviest first, to the eligible node whose
#    normalised load after it is least (ties: fewer tokens per capacity, then
#    name).  Exactly the orphans move here, the fewest any plan can.
# 2. Joins (never throttled).  A node that joined (held nothing when the
#    plan began and is not among ``known``, the previous plan's nodes: load
#    moves may empty a node, which is no join) takes tokens from the most
#    loaded nodes (the largest that fits under its ceiling) until it reaches
#    (1 - band) of its fair share or nothing fits.
#    A bounded heuristic: it stops at the band's lower edge, not at the best.
# 3. Load moves (at most `budget` of them; tokens cooling down stay put).
#    Hot tokens: a token heavier than the fair share of the largest free node
#    it may use is hot; hot tokens, heaviest first, each take a node of their
#    own (the largest capacity first, then the one needing the fewest moves),
#    and unit is recomputed over the rest (water-filling), so the hot nodes'
#    normalised load is the least any plan can give those tokens.  Every
#    other token with any load leaves a hot node.  Then, once any node is
#    above its TRIGGER (or a hot token is not yet alone), every node above
#    its CEILING sheds down to it: each step moves the smallest movable
#    token at least as heavy as what is still over, or else the heaviest,
#    onto the node whose normalised load after it is least among those it
#    keeps at or under their ceiling.  While every node is at or under its
#    trigger nothing moves (hysteresis: estimate noise moves nothing, and
#    after a plan every node has margin + hysteresis of room to drift).
#
# What is optimal (exact): once triggered, a node above its ceiling must
# lose tokens worth at least (load - ceiling), so it loses at least k_i
# tokens, k_i being how
# many of its heaviest movable tokens it takes to cover that; tokens leave
# one node each, so sum(k_i) (plus the tokens on hot nodes and the hot
# tokens not yet home) is a lower bound for any plan.  The shedding rule
# reaches k_i on every node, so when no step had to detour (`detours == 0`)
# and the budget sufficed (`finished`), `budgeted == lower_bound`: the fewest
# load moves.
#
# What is a bounded heuristic, and the bound: which node receives is
# bin packing (NP-hard), so a step may find no node with room for the token
# the rule picks; it then takes the next token that fits (a detour).  The total
# room under the ceilings is at least (ceiling - 1) * L minus one token
# per donor, so without pins, cool-downs or hot tokens a receiver ALWAYS has
# room when every token weighs at most (ceiling - 1) * L / n (n the
# number of nodes): then the plan finishes within the band with the fewest
# moves.  Otherwise a step may detour, or, when no token fits anywhere, move
# the heaviest token whose least loaded receiver ends below the donor (the
# pair's maximum falls; a detour too), or stop.
#
# Also: pins are always honoured; a token never moves twice in one plan;
# re-planning a finished plan's result with the same loads moves nothing
# (every node is at or under its ceiling, below its trigger); the same inputs
# give the same plan (ties break by token id and node name order).
"""Load-driven balancing: move the fewest tokens to keep measured load within a band."""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType

import attrs

from jobsync.core.capacity import validate_capacities
from jobsync.core.errors import InvalidArgument
from jobsync.core.hashing import validate_total_tokens
from jobsync.core.loadestimate import check_load
from jobsync.core.loadpolicy import LoadPolicy, check_cooling
from jobsync.core.plan_inputs import lock_rules, node_names, owner_list
from jobsync.core.planner import Move, _token_masks


@attrs.frozen(kw_only=True)
class LoadPlan:
    """The outcome of `balance_load` (see the module's law for each count).

    ``moves`` are ``(token, old owner, new owner)`` by token, as in
    `jobsync.core.planner.Plan`.  ``forced`` moves placed orphans, ``filled``
    moves filled nodes that held nothing, ``budgeted`` are load moves (at
    most ``budget``), of which ``detours`` could not take the token the
    shedding rule picks first (no node had room for it).  ``lower_bound``
    is the fewest load moves any plan needs for the same ceilings;
    ``finished`` says every node that had to shed got to its ceiling and
    every hot token is alone on its node.  ``hot`` lists the hot tokens, heaviest first, and
    ``dedicated`` maps a node to the hot token it is given.  ``cooling`` is
    what to pass as ``cooling`` to the next plan.
    """

    nodes: tuple[str, ...]
    capacities: tuple[float, ...]
    assignment: tuple[str | None, ...]
    moves: tuple[Move, ...]
    unowned: frozenset[int]
    node_loads: tuple[float, ...]
    unit: float
    forced: int
    filled: int
    budgeted: int
    budget: int
    lower_bound: int
    detours: int
    finished: bool
    hot: tuple[int, ...]
    dedicated: Mapping[str, int]
    cooling: Mapping[int, int]

    @property
    def counts(self) -> tuple[int, ...]:
        """Tokens per node, in ``nodes`` order."""
        where = {name: i for i, name in enumerate(self.nodes)}
        out = [0] * len(self.nodes)
        for owner in self.assignment:
            if owner is not None:
                out[where[owner]] += 1
        return tuple(out)

    @property
    def max_over_mean(self) -> float:
        """Largest capacity-normalised load over the mean (1.0: perfectly even)."""
        return max_over_mean(self.node_loads, self.capacities)


def max_over_mean(node_loads: Sequence[float], capacities: Sequence[float]) -> float:
    """``max_i(load_i / c_i) / (sum(load) / sum(c))``; 1.0 when there is no load."""
    total = sum(node_loads)
    if total <= 0 or not node_loads:
        return 1.0
    unit = total / sum(capacities)
    return max(x / c for x, c in zip(node_loads, capacities, strict=True)) / unit


def balance_load(
    assignment: Mapping[int, str] | Sequence[str | None],
    loads: Sequence[float],
    capacities: Mapping[str, float],
    *,
    locks: Mapping[int, Sequence[str]] | None = None,
    cooling: Mapping[int, int] | None = None,
    policy: LoadPolicy | None = None,
    load_moves: int | None = None,
    known: Collection[str] | None = None,
) -> LoadPlan:
    """Move tokens of ``assignment`` so that measured load is within the band.

    ``loads[t]`` is token ``t``'s load estimate (finite, >= 0), one per
    token; ``capacities`` maps every live node to its capacity (finite,
    > 0); ``locks`` are pins as `jobsync.core.planner.plan` takes them;
    ``cooling`` maps a token to the plans it still sits out (the previous
    plan's ``cooling``).  ``load_moves`` caps this plan's load moves (default:
    the policy's budget; 0 keeps to orphans and joins, for a caller pacing
    load moves by time).  ``known`` are the previous plan's ``nodes``: a
    node among them holding nothing was emptied by load moves and is filled
    only within the budget (None: every node holding nothing joined).  Every
    input is validated before any work.
    """
    policy = LoadPolicy() if policy is None else policy
    if isinstance(loads, (str, bytes)) or not isinstance(loads, Sequence):
        raise InvalidArgument(f"loads must be a sequence of numbers, got {loads!r}")
    total = validate_total_tokens(len(loads))
    weights = [check_load(t, w) for t, w in enumerate(loads)]
    if capacities is None:
        raise InvalidArgument("capacities must be a mapping of node -> capacity, got None")
    checked = validate_capacities(capacities)
    names = node_names(checked)
    caps = [checked[name] for name in names]
    current = owner_list(total, assignment)
    masks = _token_masks(names, lock_rules(total, locks)) if names else {}
    cool = check_cooling(total, cooling)
    if load_moves is None:
        load_moves = policy.moves_allowed(total)
    elif isinstance(load_moves, bool) or not isinstance(load_moves, int) or load_moves < 0:
        raise InvalidArgument(f"load_moves must be an integer >= 0, got {load_moves!r}")
    if known is not None and (isinstance(known, (str, bytes)) or not isinstance(known, Collection)):
        raise InvalidArgument(f"known must be a collection of node names, got {known!r}")
    state = _State(names, caps, weights, current, masks=masks, cooling=cool)
    if known is not None:
        state.new = [new and name not in known for new, name in zip(state.new, names, strict=True)]
    state.place_orphans()
    state.fill_new(policy)
    state.shed(policy, load_moves)
    return state.result(policy, current)


class _State:
    """The assignment being changed, with per-node loads and token sets."""

    def __init__(
        self,
        names: tuple[str, ...],
        caps: list[float],
        weights: list[float],
        current: list[str | None],
        *,
        masks: dict[int, int],
        cooling: dict[int, int],
    ) -> None:
        self.names, self.caps, self.w, self.masks = names, caps, weights, masks
        self.full = (1 << len(names)) - 1
        where = {name: i for i, name in enumerate(names)}
        self.owner = [where.get(o, -1) if o is not None else -1 for o in current]
        self.unowned = frozenset(t for t, m in masks.items() if m == 0)
        self.held: list[set[int]] = [set() for _ in names]
        self.load = [0.0] * len(names)
        self.orphans: list[int] = []
        for t, i in enumerate(self.owner):
            if t in self.unowned:
                self.owner[t] = -1
            elif i < 0 or not self.eligible(t, i):
                self.owner[t] = -1
                self.orphans.append(t)
            else:
                self.held[i].add(t)
                self.load[i] += weights[t]
        self.new = [not h for h in self.held]
        self.orphan_set = frozenset(self.orphans)
        self.cooling = cooling
        self.moved: set[int] = set()
        self.forced = self.filled = self.budgeted = self.detours = self.lower = 0
        self.finished = True
        self.hot: list[int] = []
        self.dedicated: dict[int, int] = {}
        self.unit = 0.0
        self.budget = 0
        self.ceiling: list[float] = []
        self.triggered = False
        self.last = -1  # the token of the latest load move

    def eligible(self, t: int, i: int) -> bool:
        return bool(self.masks.get(t, self.full) >> i & 1)

    def _move(self, t: int, to: int) -> None:
        i = self.owner[t]
        if i >= 0:
            self.held[i].discard(t)
            self.load[i] -= self.w[t]
        self.owner[t] = to
        self.held[to].add(t)
        self.load[to] += self.w[t]
        self.moved.add(t)

    def _norm_after(self, i: int, w: float) -> float:
        return (self.load[i] + w) / self.caps[i]

    # -- phase 1: orphans ------------------------------------------------------------
    def place_orphans(self) -> None:
        for t in sorted(self.orphans, key=lambda t: (-self.w[t], t)):
            best = min(
                (i for i in range(len(self.names)) if self.eligible(t, i)),
                key=lambda i: (self._norm_after(i, self.w[t]), len(self.held[i]) / self.caps[i], i),
            )
            self._move(t, best)
            self.forced += 1

    # -- phase 2: joins ----------------------------------------------------------------
    def fill_new(self, policy: LoadPolicy) -> None:
        total = sum(self.load)
        if total <= 0:
            return
        unit = total / sum(self.caps)
        for j in (j for j, new in enumerate(self.new) if new):
            while self.load[j] < (1 - policy.band) * self.caps[j] * unit:
                room = self.caps[j] * unit - self.load[j]
                pick = self._fill_pick(j, room)
                if pick is None:
                    break
                self._move(pick, j)
                self.filled += 1

    def _fill_pick(self, j: int, room: float) -> int | None:
        donors = sorted(
            (i for i in range(len(self.names)) if not self.new[i] and self.load[i] > 0),
            key=lambda i: (-self.load[i] / self.caps[i], i),
        )
        for i in donors:
            fits = [
                t
                for t in self.held[i]
                if 0 < self.w[t] <= room and t not in self.moved and self.eligible(t, j)
            ]
            if fits:
                return max(fits, key=lambda t: (self.w[t], t))
        return None

    # -- phase 3: hot tokens and load moves --------------------------------------------
    def _movable(self, t: int) -> bool:
        # An orphan placed by this plan may be placed again (it is one move either way).
        if t in self.orphan_set:
            return self.w[t] > 0
        return self.w[t] > 0 and t not in self.moved and t not in self.cooling

    def _load_move(self, t: int, to: int) -> int:
        """Move ``t`` for load; what it costs the budget (an orphan's move is forced)."""
        self._move(t, to)
        self.last = t
        cost = 0 if t in self.orphan_set else 1
        self.budgeted += cost
        return cost

    def _find_hot(self) -> None:
        """Water-filling: hot tokens, heaviest first, and the node each is given."""
        rest_load, rest_cap = sum(self.load), sum(self.caps)
        free = set(range(len(self.names)))
        for t in sorted(
            (t for t in range(len(self.w)) if self.owner[t] >= 0), key=lambda t: (-self.w[t], t)
        ):
            if len(free) <= 1 or rest_load <= 0:
                break
            spots = [i for i in free if self.eligible(t, i)]
            if not spots:
                continue
            if self.w[t] <= rest_load / rest_cap * max(self.caps[i] for i in spots):
                break
            self.hot.append(t)
            node = min(
                spots,
                key=lambda i: (
                    -self.caps[i],
                    self._loaded(i, t) + (self.owner[t] != i),
                    i,
                ),
            )
            self.dedicated[node] = t
            free.discard(node)
            rest_load -= self.w[t]
            rest_cap -= self.caps[node]
        self.unit = rest_load / rest_cap if rest_cap > 0 else 0.0

    def _loaded(self, i: int, t: int) -> int:
        """Tokens with any load on node ``i`` besides ``t`` (what giving ``i`` to ``t`` moves)."""
        return sum(1 for u in self.held[i] if u != t and self.w[u] > 0)

    def shed(self, policy: LoadPolicy, budget: int) -> None:
        self.budget = budget
        if sum(self.load) <= 0 or not budget:
            return
        self._find_hot()
        trigger = [policy.trigger * c * self.unit for c in self.caps]
        self.ceiling = [policy.ceiling * c * self.unit for c in self.caps]
        self.triggered = any(
            self._loaded(j, t) or self.owner[t] != j for j, t in self.dedicated.items()
        ) or any(
            self.load[i] > trigger[i] for i in range(len(self.names)) if i not in self.dedicated
        )
        if not self.triggered:
            return
        self.lower = self._lower_bound()
        left = budget
        for j, t in sorted(self.dedicated.items(), key=lambda item: (-self.w[item[1]], item[1])):
            if self.owner[t] != j:
                if not left or not self._movable(t):
                    self.finished = False
                    continue
                left -= self._load_move(t, j)
        heap = [(-self.load[i] / self.caps[i], i) for i in range(len(self.names))]
        heapq.heapify(heap)
        while heap:
            _, i = heapq.heappop(heap)
            over = self._excess(i)
            if over is None:
                continue
            if not left:
                self.finished = False
                break
            cost = self._shed_one(i, over)
            if cost is None:
                self.finished = False
                continue
            left -= cost
            # The donor, and a receiver a detour may have lifted over its trigger.
            for k in (i, self.owner[self.last]):
                heapq.heappush(heap, (-self.load[k] / self.caps[k], k))

    def _excess(self, i: int) -> float | None:
        """What node ``i`` must still lose (None: nothing)."""
        if i in self.dedicated:
            return math.inf if self._loaded(i, self.dedicated[i]) else None
        if self.load[i] > self.ceiling[i]:
            return self.load[i] - self.ceiling[i]
        return None

    def _receiver(self, t: int, i: int, strict: bool) -> int | None:
        w = self.w[t]
        best: tuple[float, int] | None = None
        for j in range(len(self.names)):
            if j == i or j in self.dedicated or not self.eligible(t, j):
                continue
            after = self._norm_after(j, w)
            if strict and self.load[j] + w > self.ceiling[j]:
                continue
            if best is None or (after, j) < best:
                best = (after, j)
        if best is None:
            return None
        if not strict and best[0] >= self.load[i] / self.caps[i]:
            return None
        return best[1]

    def _shed_one(self, i: int, over: float) -> int | None:
        hot = self.dedicated.get(i)
        tokens = sorted(
            (t for t in self.held[i] if t != hot and self._movable(t)),
            key=lambda t: (self.w[t], t),
        )
        if not tokens:
            return None
        # Orphans placed by this plan first (they cost no budget), then the
        # others; in each group the smallest token covering what is over,
        # else the heaviest first.
        order: list[int] = []
        for group in (
            [t for t in tokens if t in self.orphan_set],
            [t for t in tokens if t not in self.orphan_set],
        ):
            order += [t for t in group if self.w[t] >= over]
            order += [t for t in reversed(group) if self.w[t] < over]
        for k, t in enumerate(order):
            j = self._receiver(t, i, strict=True)
            if j is not None:
                self.detours += k > 0
                return self._load_move(t, j)
        for t in reversed(tokens):
            j = self._receiver(t, i, strict=False)
            if j is not None:
                self.detours += 1
                return self._load_move(t, j)
        return None

    def _lower_bound(self) -> int:
        """Fewest load moves any plan needs for these ceilings (the module's law)."""
        load = list(self.load)
        count = 0
        free = self.orphan_set
        for j, t in self.dedicated.items():
            if self.owner[t] != j and self._movable(t):
                count += t not in free
                load[self.owner[t]] -= self.w[t]
                load[j] += self.w[t]
        going = set(self.dedicated.values())  # hot tokens are counted once, above
        for i in range(len(self.names)):
            mine = [t for t in self.held[i] if t not in going and self._movable(t)]
            if i in self.dedicated:
                count += sum(1 for t in mine if t not in free)
                continue
            if load[i] <= self.ceiling[i]:
                continue
            need = load[i] - self.ceiling[i] - sum(self.w[t] for t in mine if t in free)
            mine = [t for t in mine if t not in free]
            for w in sorted((self.w[t] for t in mine), reverse=True):
                if need <= 0:
                    break
                need -= w
                count += 1
        return count

    def result(self, policy: LoadPolicy, current: list[str | None]) -> LoadPlan:
        names = self.names
        assignment = tuple(names[i] if i >= 0 else None for i in self.owner)
        moves = tuple(
            (t, current[t], assignment[t])
            for t in range(len(current))
            if current[t] != assignment[t]
        )
        cooling = {t: left - 1 for t, left in self.cooling.items() if left > 1}
        if policy.cooldown:
            cooling.update(dict.fromkeys(self.moved, policy.cooldown))
        if not self.unit and sum(self.load) > 0:
            self.unit = sum(self.load) / sum(self.caps)
        return LoadPlan(
            nodes=names,
            capacities=tuple(self.caps),
            assignment=assignment,
            moves=moves,
            unowned=self.unowned,
            node_loads=tuple(self.load),
            unit=self.unit,
            forced=self.forced,
            filled=self.filled,
            budgeted=self.budgeted,
            budget=self.budget,
            lower_bound=self.lower,
            detours=self.detours,
            finished=self.finished,
            hot=tuple(self.hot),
            dedicated=MappingProxyType({names[i]: t for i, t in self.dedicated.items()}),
            cooling=MappingProxyType(cooling),
        )
