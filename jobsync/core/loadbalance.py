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

from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType

import attrs

from jobsync.core.capacity import validate_capacities
from jobsync.core.errors import InvalidArgument
from jobsync.core.hashing import validate_total_tokens
from jobsync.core.loadestimate import check_load
from jobsync.core.loadpolicy import LoadPolicy, check_cooling
from jobsync.core.loadstate import LoadState
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
    state = LoadState(names, caps, weights, current, masks=masks, cooling=cool)
    if known is not None:
        state.new = [new and name not in known for new, name in zip(state.new, names, strict=True)]
    state.place_orphans()
    state.fill_new(policy)
    state.shed(policy, load_moves)
    return _plan_of(state, policy, current)


def _plan_of(state: LoadState, policy: LoadPolicy, current: list[str | None]) -> LoadPlan:
    """The plan ``state`` reached from ``current``, with the cooling for the next plan."""
    names = state.names
    assignment = tuple(names[i] if i >= 0 else None for i in state.owner)
    moves = tuple(
        (t, current[t], assignment[t]) for t in range(len(current)) if current[t] != assignment[t]
    )
    cooling = {t: left - 1 for t, left in state.cooling.items() if left > 1}
    if policy.cooldown:
        cooling.update(dict.fromkeys(state.moved, policy.cooldown))
    unit = state.unit
    if not unit and sum(state.load) > 0:
        unit = sum(state.load) / sum(state.caps)
    return LoadPlan(
        nodes=names,
        capacities=tuple(state.caps),
        assignment=assignment,
        moves=moves,
        unowned=state.unowned,
        node_loads=tuple(state.load),
        unit=unit,
        forced=state.forced,
        filled=state.filled,
        budgeted=state.budgeted,
        budget=state.budget,
        lower_bound=state.lower,
        detours=state.detours,
        finished=state.finished,
        hot=tuple(state.hot),
        dedicated=MappingProxyType({names[i]: t for i, t in state.dedicated.items()}),
        cooling=MappingProxyType(cooling),
    )
